"""The test client's MS-CHAPv2 against RFC 2759 §9.2's published vectors, so that the
e2e tests in test_radius.py check the server with a client that is itself proven.
Needs no pampa binary."""

from __future__ import annotations

import pytest

import radius_client as rc

# RFC 2759 §9.2.
USER = "User"
PASSWORD = "clientPass"
AUTHENTICATOR_CHALLENGE = bytes.fromhex("5B 5D 7C 7D 7B 3F 2F 3E 3C 2C 60 21 32 26 26 28")
PEER_CHALLENGE = bytes.fromhex("21 40 23 24 25 5E 26 2A 28 29 5F 2B 3A 33 7C 7E")
CHALLENGE = bytes.fromhex("D0 2E 43 86 BC E9 12 26")
PASSWORD_HASH = bytes.fromhex("44 EB BA 8D 53 12 B8 D6 11 47 44 11 F5 69 89 AE")
NT_RESPONSE = bytes.fromhex("82 30 9E CD 8D 70 8B 5E A0 8F AA 39 81 CD 83 54 42 33 11 4A 3D 85 D6 DF")
PASSWORD_HASH_HASH = bytes.fromhex("41 C0 0C 58 4B D2 D9 1C 40 17 A2 A1 2F A5 9F 3F")
AUTHENTICATOR_RESPONSE = "S=407A5589115FD0D6209F510FE9C04566932CDA56"


def test_rfc_2759_vectors_step_by_step():
    assert rc.challenge_hash(PEER_CHALLENGE, AUTHENTICATOR_CHALLENGE, USER) == CHALLENGE
    assert rc.nt_password_hash(PASSWORD) == PASSWORD_HASH
    assert rc.challenge_response(CHALLENGE, PASSWORD_HASH) == NT_RESPONSE
    assert rc.generate_nt_response(AUTHENTICATOR_CHALLENGE, PEER_CHALLENGE, USER, PASSWORD) == NT_RESPONSE
    assert rc.hash_nt_password_hash(PASSWORD_HASH) == PASSWORD_HASH_HASH
    assert rc.generate_authenticator_response(
        PASSWORD, NT_RESPONSE, PEER_CHALLENGE, AUTHENTICATOR_CHALLENGE, USER
    ) == AUTHENTICATOR_RESPONSE


def test_an_attempt_with_the_rfc_vectors_and_its_attributes():
    attempt = rc.MsChapV2.compute(USER, PASSWORD, ident=7, authenticator_challenge=AUTHENTICATOR_CHALLENGE,
                                  peer_challenge=PEER_CHALLENGE)
    assert attempt.nt_response == NT_RESPONSE
    assert attempt.authenticator_response == AUTHENTICATOR_RESPONSE

    # RFC 2548 §2.3.2 and §2.1.2: both inside Vendor-Specific (26) of vendor 311.
    attrs = attempt.attributes()
    reply = rc.parse(b"\x02\x00" + (20 + len(attrs)).to_bytes(2, "big") + b"\0" * 16 + attrs)
    assert [k for k, _ in reply.attributes] == [rc.VENDOR_SPECIFIC, rc.VENDOR_SPECIFIC]
    assert all(v[:4] == (311).to_bytes(4, "big") for _, v in reply.attributes)
    assert reply.vendor(rc.VENDOR_MICROSOFT, rc.MS_CHAP_CHALLENGE) == AUTHENTICATOR_CHALLENGE
    response = reply.vendor(rc.VENDOR_MICROSOFT, rc.MS_CHAP2_RESPONSE)
    assert response == bytes([7, 0]) + PEER_CHALLENGE + b"\0" * 8 + NT_RESPONSE
    assert len(response) == 50
    assert reply.vendor(rc.VENDOR_MICROSOFT, rc.MS_CHAP2_SUCCESS) is None
    assert reply.vendor(9, rc.MS_CHAP_CHALLENGE) is None

    # The MS-CHAP2-Success check: right ident and Authenticator Response, nothing else.
    attempt.check_success(bytes([7]) + AUTHENTICATOR_RESPONSE.encode())
    for wrong in (bytes([8]) + AUTHENTICATOR_RESPONSE.encode(),
                  bytes([7]) + AUTHENTICATOR_RESPONSE.lower().encode(),
                  bytes([7]) + b"S=" + b"0" * 40,
                  None):
        with pytest.raises(AssertionError):
            attempt.check_success(wrong)


def test_a_windows_domain_prefix_is_not_hashed():
    """RFC 2759 §8.2: the user name "excluding any prepended domain name"."""
    assert rc.challenge_hash(PEER_CHALLENGE, AUTHENTICATOR_CHALLENGE, "CORP\\User") == CHALLENGE
    assert rc.generate_nt_response(AUTHENTICATOR_CHALLENGE, PEER_CHALLENGE, "CORP\\User", PASSWORD) == NT_RESPONSE
    # Anything else in the name counts, so a different name gives a different response.
    assert rc.challenge_hash(PEER_CHALLENGE, AUTHENTICATOR_CHALLENGE, "User@example.org") != CHALLENGE


def test_a_wrong_password_gives_another_nt_response():
    assert rc.generate_nt_response(AUTHENTICATOR_CHALLENGE, PEER_CHALLENGE, USER, "clientPasS") != NT_RESPONSE
