"""A tiny RADIUS client for the e2e tests, for what radclient cannot do: resend the very
same packet (to test the retransmission cache), send from a chosen socket, and check a
reply's authenticators byte for byte. Written from RFC 2865, 2866 and 3579."""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct
from dataclasses import dataclass, field

ACCESS_REQUEST, ACCESS_ACCEPT, ACCESS_REJECT = 1, 2, 3
ACCOUNTING_REQUEST, ACCOUNTING_RESPONSE = 4, 5

USER_NAME, USER_PASSWORD, NAS_IP_ADDRESS, NAS_PORT = 1, 2, 4, 5
FRAMED_IP_ADDRESS, REPLY_MESSAGE, CLASS, SESSION_TIMEOUT, IDLE_TIMEOUT = 8, 18, 25, 27, 28
ACCT_STATUS_TYPE, ACCT_DELAY_TIME, ACCT_INPUT_OCTETS, ACCT_OUTPUT_OCTETS = 40, 41, 42, 43
ACCT_SESSION_ID, ACCT_SESSION_TIME, ACCT_INPUT_GIGAWORDS, ACCT_OUTPUT_GIGAWORDS = 44, 46, 52, 53
EVENT_TIMESTAMP, MESSAGE_AUTHENTICATOR = 55, 80

START, STOP, INTERIM, ACCOUNTING_ON, ACCOUNTING_OFF = 1, 2, 3, 7, 8


def attr(kind: int, value: bytes) -> bytes:
    return bytes([kind, len(value) + 2]) + value


def u32(value: int) -> bytes:
    return struct.pack("!I", value)


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


@dataclass
class Reply:
    code: int
    identifier: int
    attributes: list[tuple[int, bytes]] = field(default_factory=list)
    raw: bytes = b""

    def get(self, kind: int) -> bytes | None:
        return next((v for k, v in self.attributes if k == kind), None)


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
        identifier = self.next_id()
        authenticator = os.urandom(16)
        attrs = attr(USER_NAME, user.encode()) + attr(
            USER_PASSWORD, hide_password(password.encode(), self.secret, authenticator)
        ) + attr(NAS_IP_ADDRESS, socket.inet_aton("127.0.0.1")) + extra
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
