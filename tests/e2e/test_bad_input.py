"""Bad input is answered with reply codes, never crashed on.

Each case ends by checking that a normal session still works (a fresh message is
accepted and delivered). All cases share one pampa instance, to stay fast; its
dictionary-attack limit is high so that refused addresses here don't block 127.0.0.1.
"""

from __future__ import annotations

import smtplib

import pytest

from conftest import RawSmtp, make_message, smtp_connect, wait_for

MAX_BYTES = 64 * 1024
MAX_RCPTS = 3
SENDER = "sender@remote.test"
ALICE = "alice@example.org"


@pytest.fixture(scope="module")
def mx_instance(module_harness):
    p = module_harness.pampa(
        smtp={
            "max_message_bytes": MAX_BYTES,
            "max_recipients": MAX_RCPTS,
            "unknown_recipient_limit": 1000,
        }
    )
    p.setup_users("example.org", "alice", "bob", "carol", "dave")
    p.start()
    return p


@pytest.fixture
def mx(mx_instance):
    """The shared instance, checked to be alive before each case (a crash names itself)."""
    mx_instance.check_alive()
    return mx_instance


def is_5xx(code: int) -> bool:
    return 500 <= code < 600


def test_greeting_and_ehlo(mx):
    with RawSmtp(mx.smtp_port) as c:
        code, text = c.reply()
        assert code == 220 and b"mx.test" in text, (code, text)
        code, text = c.cmd("EHLO client.e2e.test")
        assert code == 250, (code, text)
        assert c.cmd("QUIT")[0] == 221
    mx.assert_works(ALICE)


def test_vrfy_is_252(mx):
    with RawSmtp(mx.smtp_port) as c:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.e2e.test")[0] == 250
        # 252: neither confirmed nor denied, for known and unknown users alike.
        assert c.cmd("VRFY alice@example.org")[0] == 252
        assert c.cmd("VRFY nobody@example.org")[0] == 252
    mx.assert_works(ALICE)


def test_garbage_commands_get_5xx(mx):
    with RawSmtp(mx.smtp_port) as c:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.e2e.test")[0] == 250
        code, text = c.cmd("FOOBAR baz")
        assert code in (500, 502), (code, text)
        code, text = c.cmd(b"\x01\x02\x03 \xff\xfe\x7f")
        assert is_5xx(code), (code, text)
        code, text = c.cmd(b"NOOP\x00with a NUL")
        assert is_5xx(code) or code == 250, (code, text)
        code, text = c.cmd("RCPT TO:<alice@example.org>")  # before MAIL
        assert code == 503, (code, text)
        code, text = c.cmd("DATA")  # before MAIL
        assert code == 503, (code, text)
        code, text = c.cmd("MAIL FROM")
        assert is_5xx(code), (code, text)
        # The session itself survives its errors.
        assert c.cmd("NOOP")[0] == 250
        assert c.cmd("QUIT")[0] == 221
    mx.assert_works(ALICE)


def test_overlong_command_line_is_500(mx):
    with RawSmtp(mx.smtp_port) as c:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.e2e.test")[0] == 250
        code, text = c.cmd("NOOP " + "x" * 2000)
        assert code == 500, (code, text)
    mx.assert_works(ALICE)


def test_disconnect_before_data_terminator_delivers_nothing(mx):
    marker, msg = make_message(SENDER, [ALICE], "cut short")
    with RawSmtp(mx.smtp_port) as c:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.e2e.test")[0] == 250
        assert c.cmd(f"MAIL FROM:<{SENDER}>")[0] == 250
        assert c.cmd(f"RCPT TO:<{ALICE}>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(msg)  # the whole message, but never the final "."
    mx.assert_works(ALICE)  # a later message landed ...
    assert mx.copies(ALICE, marker) == []  # ... and the cut one never will


def test_8bit_bytes_in_addresses_get_5xx(mx):
    with RawSmtp(mx.smtp_port) as c:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.e2e.test")[0] == 250
        code, text = c.cmd(b"MAIL FROM:<j\xf6rg@remote.test>")
        assert is_5xx(code), (code, text)
    with RawSmtp(mx.smtp_port) as c:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.e2e.test")[0] == 250
        assert c.cmd(f"MAIL FROM:<{SENDER}>")[0] == 250
        code, text = c.cmd(b"RCPT TO:<\xe4lice@example.org>")
        assert is_5xx(code), (code, text)
    mx.assert_works(ALICE)


def test_nul_bytes_in_data_are_rejected_with_554(mx):
    marker, msg = make_message(SENDER, [ALICE], "with a NUL")
    msg = msg.replace(b"the end", b"the\x00end")
    with smtp_connect(mx.smtp_port) as s:
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail(SENDER, [ALICE], msg)
        assert e.value.smtp_code == 554, (e.value.smtp_code, e.value.smtp_error)
    mx.assert_works(ALICE)
    assert mx.copies(ALICE, marker) == []


def test_size_is_advertised_and_enforced_in_mail_from(mx):
    with smtp_connect(mx.smtp_port) as s:
        assert s.has_extn("size"), "SIZE is not advertised in EHLO"
        assert s.esmtp_features["size"].strip() == str(MAX_BYTES), s.esmtp_features["size"]
        code, text = s.mail(SENDER, [f"SIZE={MAX_BYTES + 1}"])
        assert code == 552, (code, text)
        assert s.rset()[0] == 250
        assert s.mail(SENDER, ["SIZE=1000"])[0] == 250
    mx.assert_works(ALICE)


def test_oversize_message_is_552(mx):
    marker, msg = make_message(SENDER, [ALICE], "too big")
    filler = (b"x" * 76 + b"\r\n") * (3 * MAX_BYTES // 78)
    msg = msg + filler
    assert len(msg) > MAX_BYTES
    # Declared with SIZE= (smtplib does this itself): refused at MAIL FROM.
    with smtp_connect(mx.smtp_port) as s:
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            s.sendmail(SENDER, [ALICE], msg)
        assert e.value.smtp_code == 552, (e.value.smtp_code, e.value.smtp_error)
    # Not declared: read to the terminator, then refused with 552; the session goes on.
    with smtp_connect(mx.smtp_port) as s:
        s.ehlo("client.test")
        assert s.mail(SENDER)[0] == 250
        assert s.rcpt(ALICE)[0] == 250
        code, text = s.data(msg)
        assert code == 552, (code, text)
        assert s.noop()[0] == 250
    mx.assert_works(ALICE)
    assert mx.copies(ALICE, marker) == []


def test_too_many_recipients_is_452(mx):
    with smtp_connect(mx.smtp_port) as s:
        assert s.mail(SENDER)[0] == 250
        users = ["alice", "bob", "carol", "dave"]
        for u in users[:MAX_RCPTS]:
            assert s.rcpt(f"{u}@example.org")[0] == 250, u
        code, text = s.rcpt(f"{users[MAX_RCPTS]}@example.org")
        assert code == 452, (code, text)
        assert s.rset()[0] == 250
    mx.assert_works(ALICE)


def test_bare_lf_is_normalised_and_never_ends_data(mx):
    """Only CRLF.CRLF ends DATA: a bare-LF dot line is content, so nobody can smuggle a
    second message past a filter (the SMTP smuggling attacks of 2023). Bare LFs are
    stored as line ends, as Postfix's cleanup does."""
    marker, _ = make_message(SENDER, [ALICE], "bare lf")
    smuggled = "smuggled-" + marker
    body = (
        f"Subject: {marker}\n"
        f"\n"
        f"line one\n"
        f".\n"
        f"MAIL FROM:<evil@remote.test>\n"
        f"RCPT TO:<{ALICE}>\n"
        f"DATA\n"
        f"Subject: {smuggled}\n"
        f"\r\n.\r\n"
    ).encode()
    with RawSmtp(mx.smtp_port) as c:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.e2e.test")[0] == 250
        assert c.cmd(f"MAIL FROM:<{SENDER}>")[0] == 250
        assert c.cmd(f"RCPT TO:<{ALICE}>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(body)
        code, text = c.reply()
        assert code == 250, (code, text)
        assert c.cmd("QUIT")[0] == 221
    stored = mx.wait_delivered(ALICE, marker).read_bytes()
    assert b"line one\n.\nMAIL FROM:<evil@remote.test>\n" in stored, stored
    assert b"\r" not in stored
    mx.assert_works(ALICE)
    # The smuggled subject exists only inside the first message.
    holders = mx.copies(ALICE, smuggled)
    assert len(holders) == 1 and marker.encode() in holders[0].read_bytes()


def test_pipelined_commands_are_answered_in_order(mx):
    marker, msg = make_message(SENDER, [ALICE], "pipelined")
    with RawSmtp(mx.smtp_port) as c:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.e2e.test")[0] == 250
        c.send(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{ALICE}>\r\nRCPT TO:<nobody@example.org>\r\nDATA\r\n".encode())
        assert [c.reply()[0] for _ in range(4)] == [250, 250, 550, 354]
        c.send(msg + b".\r\nQUIT\r\n")
        assert c.reply()[0] == 250
        assert c.reply()[0] == 221
    mx.wait_delivered(ALICE, marker)


def test_connections_are_capped_per_ip_and_in_all(harness):
    p = harness.pampa(smtp={"max_connections_per_ip": 2, "max_connections": 3})
    p.setup_users("example.org", "alice")
    p.start()
    held = [RawSmtp(p.smtp_port), RawSmtp(p.smtp_port)]
    try:
        for s in held:
            assert s.reply()[0] == 220  # two slow clients hold their sessions
        with RawSmtp(p.smtp_port) as third:
            code, text = third.reply()
            assert code == 421 and b"4.7.0" in text, (code, text)
            assert third.closed_by_peer()
    finally:
        for s in held:
            s.close()
    # Their slots come back when they leave.
    wait_for(lambda: RawSmtp(p.smtp_port).reply()[0] == 220, 10, "a new session to be served")
    metrics = p.http_get("/metrics")[1]
    assert 'pampa_smtp_sessions_total{result="refused_per_ip"}' in metrics, metrics


def test_connection_rate_is_limited_per_ip(harness):
    """A client reconnecting in a loop is turned away (governor, per IP), whatever it holds."""
    p = harness.pampa(smtp={"max_connection_rate_per_ip": 5})
    p.setup_users("example.org", "alice")
    p.start()
    for _ in range(5):
        with RawSmtp(p.smtp_port) as c:
            assert c.reply()[0] == 220
            assert c.cmd("QUIT")[0] == 221
    with RawSmtp(p.smtp_port) as sixth:
        code, text = sixth.reply()
        assert code == 421 and b"4.7.0" in text, (code, text)
        assert sixth.closed_by_peer()
    metrics = p.http_get("/metrics")[1]
    assert 'pampa_smtp_sessions_total{result="refused_rate"}' in metrics, metrics


def test_auth_is_never_offered_on_the_mx(mx):
    """The MX authenticates nobody: no AUTH in EHLO, and an AUTH in clear text is refused
    without looking at the credentials (submission is a separate role)."""
    with RawSmtp(mx.smtp_port) as c:
        assert c.reply()[0] == 220
        code, text = c.cmd("EHLO client.e2e.test")
        assert code == 250 and b"AUTH" not in text.upper(), text
        code, text = c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==")
        assert is_5xx(code), (code, text)
        code, text = c.cmd("AUTH LOGIN")
        assert is_5xx(code), (code, text)
        assert c.cmd("QUIT")[0] == 221
