"""A tiny RADIUS client for the e2e tests, for what radclient cannot do: resend the very
same packet (to test the retransmission cache), send from a chosen socket, check a
reply's authenticators byte for byte, and MS-CHAPv2 (radclient's MS-CHAP-Password makes
MS-CHAPv1). Written from RFC 2865, 2866, 3579, 2759 and 2548.

MS-CHAPv2 needs MD4 and DES, which neither hashlib (under OpenSSL 3) nor the stdlib
offer, so it uses pycryptodome (ops/test.sh installs it)."""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct
from dataclasses import dataclass, field

from Crypto.Cipher import DES
from Crypto.Hash import MD4

ACCESS_REQUEST, ACCESS_ACCEPT, ACCESS_REJECT = 1, 2, 3
ACCOUNTING_REQUEST, ACCOUNTING_RESPONSE = 4, 5

USER_NAME, USER_PASSWORD, NAS_IP_ADDRESS, NAS_PORT = 1, 2, 4, 5
FRAMED_IP_ADDRESS, REPLY_MESSAGE, CLASS, SESSION_TIMEOUT, IDLE_TIMEOUT = 8, 18, 25, 27, 28
ACCT_STATUS_TYPE, ACCT_DELAY_TIME, ACCT_INPUT_OCTETS, ACCT_OUTPUT_OCTETS = 40, 41, 42, 43
ACCT_SESSION_ID, ACCT_SESSION_TIME, ACCT_INPUT_GIGAWORDS, ACCT_OUTPUT_GIGAWORDS = 44, 46, 52, 53
EVENT_TIMESTAMP, MESSAGE_AUTHENTICATOR = 55, 80
VENDOR_SPECIFIC = 26

# RFC 2548: Microsoft's vendor id and the MS-CHAP attributes inside Vendor-Specific.
VENDOR_MICROSOFT = 311
MS_CHAP_ERROR, MS_CHAP_CHALLENGE, MS_CHAP2_RESPONSE, MS_CHAP2_SUCCESS = 2, 11, 25, 26

START, STOP, INTERIM, ACCOUNTING_ON, ACCOUNTING_OFF = 1, 2, 3, 7, 8


def attr(kind: int, value: bytes) -> bytes:
    return bytes([kind, len(value) + 2]) + value


def u32(value: int) -> bytes:
    return struct.pack("!I", value)


def vendor_attr(vendor: int, kind: int, value: bytes) -> bytes:
    """A Vendor-Specific attribute holding one sub-attribute (RFC 2865 §5.26)."""
    return attr(VENDOR_SPECIFIC, u32(vendor) + bytes([kind, len(value) + 2]) + value)


def hide_password(password: bytes, secret: bytes, authenticator: bytes) -> bytes:
    """RFC 2865 §5.2."""
    padded = password + b"\0" * (-len(password) % 16 or (16 if not password else 0))
    out, last = b"", authenticator
    for i in range(0, len(padded), 16):
        key = hashlib.md5(secret + last).digest()
        block = bytes(a ^ b for a, b in zip(padded[i : i + 16], key))
        out += block
        last = block
    return out


# ------------------------------------------------------------------ MS-CHAPv2 --
# RFC 2759 §8, function by function, so that test_radius_client.py can check each one
# against §9.2's vectors.


def nt_password_hash(password: str) -> bytes:
    """NtPasswordHash (§8.3): MD4 of the password in UTF-16LE (what Unicode means there)."""
    return MD4.new(password.encode("utf-16-le")).digest()


def hash_nt_password_hash(password_hash: bytes) -> bytes:
    """HashNtPasswordHash (§8.4)."""
    return MD4.new(password_hash).digest()


def challenge_hash(peer_challenge: bytes, authenticator_challenge: bytes, user_name: str) -> bytes:
    """ChallengeHash (§8.2). The name is the one the peer sends, without any Windows
    "DOMAIN\\" prefix ("excluding any prepended domain name")."""
    name = user_name.rsplit("\\", 1)[-1]
    return hashlib.sha1(peer_challenge + authenticator_challenge + name.encode()).digest()[:8]


def _des_key(key7: bytes) -> bytes:
    """Spreads 7 key bytes over DES's 8, 7 bits each; the low (parity) bit stays 0,
    which DES ignores."""
    bits = int.from_bytes(key7, "big")
    return bytes(((bits >> (49 - 7 * i)) & 0x7F) << 1 for i in range(8))


def challenge_response(challenge: bytes, password_hash: bytes) -> bytes:
    """ChallengeResponse (§8.5): the challenge DES-encrypted under three keys cut from
    the password hash zero-padded to 21 bytes."""
    z = password_hash + b"\0" * (21 - len(password_hash))
    return b"".join(DES.new(_des_key(z[i : i + 7]), DES.MODE_ECB).encrypt(challenge) for i in (0, 7, 14))


def generate_nt_response(authenticator_challenge: bytes, peer_challenge: bytes, user_name: str,
                         password: str) -> bytes:
    """GenerateNTResponse (§8.1)."""
    challenge = challenge_hash(peer_challenge, authenticator_challenge, user_name)
    return challenge_response(challenge, nt_password_hash(password))


MAGIC1 = b"Magic server to client signing constant"
MAGIC2 = b"Pad to make it do more than one iteration"


def generate_authenticator_response(password: str, nt_response: bytes, peer_challenge: bytes,
                                    authenticator_challenge: bytes, user_name: str) -> str:
    """GenerateAuthenticatorResponse (§8.7): "S=" and 40 upper-case hex digits."""
    digest = hashlib.sha1(hash_nt_password_hash(nt_password_hash(password)) + nt_response + MAGIC1).digest()
    challenge = challenge_hash(peer_challenge, authenticator_challenge, user_name)
    return "S=" + hashlib.sha1(digest + challenge + MAGIC2).hexdigest().upper()


@dataclass
class MsChapV2:
    """One MS-CHAPv2 attempt as a NAS relays it (RFC 2548 §2.3.2): what goes in the
    request, and the Authenticator Response the server must send back."""
    ident: int
    authenticator_challenge: bytes
    peer_challenge: bytes
    nt_response: bytes
    authenticator_response: str

    @classmethod
    def compute(cls, user_name: str, password: str, ident: int = 1,
                authenticator_challenge: bytes | None = None,
                peer_challenge: bytes | None = None) -> "MsChapV2":
        auth_c = authenticator_challenge if authenticator_challenge is not None else os.urandom(16)
        peer_c = peer_challenge if peer_challenge is not None else os.urandom(16)
        nt = generate_nt_response(auth_c, peer_c, user_name, password)
        s = generate_authenticator_response(password, nt, peer_c, auth_c, user_name)
        return cls(ident, auth_c, peer_c, nt, s)

    def attributes(self) -> bytes:
        """MS-CHAP-Challenge and MS-CHAP2-Response (ident, flags 0, peer challenge,
        8 reserved zeros, NT-Response: 50 bytes)."""
        response = bytes([self.ident, 0]) + self.peer_challenge + b"\0" * 8 + self.nt_response
        return (vendor_attr(VENDOR_MICROSOFT, MS_CHAP_CHALLENGE, self.authenticator_challenge)
                + vendor_attr(VENDOR_MICROSOFT, MS_CHAP2_RESPONSE, response))

    def check_success(self, value: bytes | None) -> None:
        """An MS-CHAP2-Success value is our ident and the Authenticator Response we
        expect: the peer's proof that the server knows the password (RFC 2759 §5)."""
        assert value is not None, "the Access-Accept has no MS-CHAP2-Success"
        assert value[0] == self.ident, f"MS-CHAP2-Success ident {value[0]}, want {self.ident}"
        got = value[1:].decode("ascii", "replace")
        assert got == self.authenticator_response, f"authenticator response {got!r}, want {self.authenticator_response!r}"


@dataclass
class Reply:
    code: int
    identifier: int
    attributes: list[tuple[int, bytes]] = field(default_factory=list)
    raw: bytes = b""

    def get(self, kind: int) -> bytes | None:
        return next((v for k, v in self.attributes if k == kind), None)

    def vendor(self, vendor: int, kind: int) -> bytes | None:
        """The value of the first `kind` sub-attribute of `vendor`'s Vendor-Specific
        attributes (RFC 2865 §5.26's suggested format)."""
        for value in (v for k, v in self.attributes if k == VENDOR_SPECIFIC):
            if len(value) < 4 or struct.unpack("!I", value[:4])[0] != vendor:
                continue
            i = 4
            while i + 2 <= len(value):
                sub, size = value[i], value[i + 1]
                assert size >= 2 and i + size <= len(value), f"bad vendor sub-attribute in {value.hex()}"
                if sub == kind:
                    return value[i + 2 : i + size]
                i += size
        return None


def parse(raw: bytes) -> Reply:
    code, identifier, length = struct.unpack("!BBH", raw[:4])
    attributes, i = [], 20
    while i < length:
        kind, size = raw[i], raw[i + 1]
        attributes.append((kind, raw[i + 2 : i + size]))
        i += size
    return Reply(code, identifier, attributes, raw)


class Client:
    def __init__(self, port: int, secret: bytes, host: str = "127.0.0.1"):
        self.addr = (host, port)
        self.secret = secret
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.identifier = 0

    def close(self) -> None:
        self.sock.close()

    def next_id(self) -> int:
        self.identifier = (self.identifier + 1) % 256
        return self.identifier

    def access_request(self, user: str, password: str, message_authenticator: bool = True,
                       extra: bytes = b"") -> bytes:
        """A PAP Access-Request."""
        authenticator = os.urandom(16)
        hidden = attr(USER_PASSWORD, hide_password(password.encode(), self.secret, authenticator))
        return self._access_request(user, hidden + extra, authenticator, message_authenticator)

    def mschapv2_request(self, user: str, password: str, ident: int = 1,
                         message_authenticator: bool = True) -> tuple[bytes, MsChapV2]:
        """An MS-CHAPv2 Access-Request, as a NAS sends it after the PPP exchange, and
        the attempt (to check the reply's MS-CHAP2-Success against)."""
        attempt = MsChapV2.compute(user, password, ident)
        packet = self._access_request(user, attempt.attributes(), os.urandom(16), message_authenticator)
        return packet, attempt

    def _access_request(self, user: str, credentials: bytes, authenticator: bytes,
                        message_authenticator: bool) -> bytes:
        identifier = self.next_id()
        attrs = attr(USER_NAME, user.encode()) + credentials + attr(NAS_IP_ADDRESS, socket.inet_aton("127.0.0.1"))
        if message_authenticator:
            attrs += attr(MESSAGE_AUTHENTICATOR, b"\0" * 16)
        length = 20 + len(attrs)
        packet = struct.pack("!BBH", ACCESS_REQUEST, identifier, length) + authenticator + attrs
        if message_authenticator:
            mac = hmac.new(self.secret, packet, hashlib.md5).digest()
            packet = packet[:-16] + mac
        return packet

    def accounting_request(self, status: int, session_id: str, user: str | None = None,
                           delay: int = 0, session_time: int | None = None,
                           octets_in: int | None = None, octets_out: int | None = None) -> bytes:
        identifier = self.next_id()
        attrs = attr(ACCT_STATUS_TYPE, u32(status)) + attr(NAS_IP_ADDRESS, socket.inet_aton("127.0.0.1"))
        if user is not None:
            attrs += attr(USER_NAME, user.encode())
        if status not in (ACCOUNTING_ON, ACCOUNTING_OFF):
            attrs += attr(ACCT_SESSION_ID, session_id.encode())
        attrs += attr(ACCT_DELAY_TIME, u32(delay))
        if session_time is not None:
            attrs += attr(ACCT_SESSION_TIME, u32(session_time))
        for value, low, high in ((octets_in, ACCT_INPUT_OCTETS, ACCT_INPUT_GIGAWORDS),
                                 (octets_out, ACCT_OUTPUT_OCTETS, ACCT_OUTPUT_GIGAWORDS)):
            if value is not None:
                attrs += attr(low, u32(value & 0xFFFFFFFF)) + attr(high, u32(value >> 32))
        length = 20 + len(attrs)
        header = struct.pack("!BBH", ACCOUNTING_REQUEST, identifier, length)
        # RFC 2866 §3: MD5(Code+Identifier+Length+16 zero octets+Attributes+Secret).
        authenticator = hashlib.md5(header + b"\0" * 16 + attrs + self.secret).digest()
        return header + authenticator + attrs

    def send(self, packet: bytes, timeout: float = 2.0) -> Reply | None:
        self.sock.settimeout(timeout)
        self.sock.sendto(packet, self.addr)
        try:
            raw, _ = self.sock.recvfrom(4096)
        except socket.timeout:
            return None
        reply = parse(raw)
        self.check(packet, reply)
        return reply

    def check(self, request: bytes, reply: Reply) -> None:
        """The Response Authenticator (RFC 2865 §3) and, on access replies, the
        Message-Authenticator (RFC 3579 §3.2) are right."""
        raw = reply.raw
        expected = hashlib.md5(raw[:4] + request[4:20] + raw[20:] + self.secret).digest()
        assert raw[4:20] == expected, "bad Response Authenticator"
        if reply.code in (ACCESS_ACCEPT, ACCESS_REJECT):
            mac = reply.get(MESSAGE_AUTHENTICATOR)
            assert mac is not None, "the reply has no Message-Authenticator"
            i = raw.index(bytes([MESSAGE_AUTHENTICATOR, 18]) + mac, 20)
            zeroed = raw[:4] + request[4:20] + raw[20 : i + 2] + b"\0" * 16 + raw[i + 18 :]
            assert hmac.new(self.secret, zeroed, hashlib.md5).digest() == mac, "bad Message-Authenticator"
