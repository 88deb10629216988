"""Mail in over SMTP, out into Maildirs: the happy path, recipient checks and STARTTLS."""

from __future__ import annotations

import shutil
import smtplib
import ssl
import subprocess

import pytest

from conftest import RawSmtp, assert_delivered_verbatim, make_message, send_message, smtp_connect

SENDER = "sender@remote.test"


@pytest.mark.parametrize("stack", ["embedded", "nats-mariadb", "embedded-postgres"])
def test_send_and_find_byte_for_byte(harness, stack):
    p = harness.stack(stack)
    p.setup_users("example.org", "alice", "bob")
    p.start()

    alice, bob = "alice@example.org", "bob@example.org"
    marker, msg = make_message(SENDER, [alice, bob])
    send_message(p.smtp_port, SENDER, [alice, bob], msg)

    for rcpt in (alice, bob):
        path = p.wait_delivered(rcpt, marker)
        assert p.inbox(rcpt) == [path], f"{rcpt} should have exactly one message: {p.inbox(rcpt)}"
        assert_delivered_verbatim(path, msg)
        tmp = p.maildir(rcpt) / "tmp"
        if tmp.is_dir():
            assert list(tmp.iterdir()) == [], f"{tmp} still holds files after delivery"


def test_unknown_user_is_550(harness):
    p = harness.pampa()
    p.setup_users("example.org", "alice")
    p.start()
    with smtp_connect(p.smtp_port) as s:
        assert s.mail(SENDER)[0] == 250
        code, text = s.rcpt("nobody@example.org")
        assert code == 550, (code, text)
        assert b"5.1.1" in text, text
        # The session goes on: a known user is still accepted.
        assert s.rcpt("alice@example.org")[0] == 250


def test_relay_is_denied_with_554(harness):
    p = harness.pampa()
    p.setup_users("example.org", "alice")
    p.start()
    with smtp_connect(p.smtp_port) as s:
        assert s.mail(SENDER)[0] == 250
        code, text = s.rcpt("someone@elsewhere.test")
        assert code == 554, (code, text)
        assert b"5.7.1" in text, text
    p.assert_works("alice@example.org")


def test_dictionary_attack_is_cut_off(harness):
    limit = 3
    # Its own instance: the block must not leak into other tests.
    p = harness.pampa(
        smtp={
            "unknown_recipient_limit": limit,
            "unknown_recipient_window": "10m",
            "unknown_recipient_block": "10m",
        }
    )
    p.setup_users("example.org", "alice")
    p.start()

    with RawSmtp(p.smtp_port) as c:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO attacker.test")[0] == 250
        assert c.cmd("MAIL FROM:<guess@attacker.test>")[0] == 250
        codes = []
        for i in range(limit + 1):
            code, text = c.cmd(f"RCPT TO:<guess{i}@example.org>")
            codes.append(code)
            if code == 421:
                break
            assert code == 550, f"unknown recipient #{i + 1} got {code} {text!r}"
        assert codes[-1] == 421, f"no 421 after {limit} unknown recipients: {codes}"
        assert len(codes) >= limit, f"cut off too early, after {len(codes)} recipients: {codes}"
        assert c.closed_by_peer(10), "the server did not close the connection after 421"

    # A new connection from the same IP is refused at the greeting.
    with RawSmtp(p.smtp_port) as c:
        code, text = c.reply()
        assert code == 421, f"greeting of a blocked IP: {code} {text!r}"
    p.check_alive()


def test_starttls(harness):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl CLI is not installed")
    p = harness.pampa()
    cert, key = p.dir / "cert.pem", p.dir / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=mx.test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    p.configure(smtp={"tls_cert": str(cert), "tls_key": str(key)})
    p.setup_users("example.org", "alice")
    p.start()

    alice = "alice@example.org"
    marker, msg = make_message(SENDER, [alice], "over tls")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", p.smtp_port, timeout=30) as s:
        s.ehlo("client.e2e.test")
        assert s.has_extn("starttls"), "STARTTLS is not offered although a cert is configured"
        code, text = s.starttls(context=ctx)
        assert code == 220, (code, text)
        s.ehlo("client.e2e.test")
        assert not s.has_extn("starttls"), "STARTTLS is offered again inside TLS"
        assert s.sendmail(SENDER, [alice], msg) == {}
    assert_delivered_verbatim(p.wait_delivered(alice, marker), msg)
