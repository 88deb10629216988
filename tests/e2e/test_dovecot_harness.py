"""Self-test of tests/e2e/dovecot.py: a throwaway Dovecot LMTP server, driven with smtplib.LMTP."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from conftest import LOCALHOST, make_message
from dovecot import Dovecot, dovecot_available

pytestmark = pytest.mark.skipif(not dovecot_available(), reason="/usr/sbin/dovecot is not installed")

ALICE = "alice@example.org"
BOB = "bob@example.org"
CAROL = "carol@example.org"  # 1000-byte quota


@pytest.fixture
def dovecots(tmp_path: Path):
    started: list[Dovecot] = []

    def make(name: str, **kwargs) -> Dovecot:
        dc = Dovecot(tmp_path / name, {ALICE: None, BOB: None, CAROL: 1000}, **kwargs)
        started.append(dc)
        dc.start()
        return dc

    try:
        yield make
    finally:
        for dc in reversed(started):
            dc.close()
            print(f"--- dovecot log ({dc.log_path}) ---\n{dc.log}")


def lmtp_send(target: Dovecot | str, rcpt: str, msg: bytes, sender: str = "sender@test.example") -> None:
    """One recipient per transaction: smtplib.LMTP reads only one reply after DATA."""
    if isinstance(target, Dovecot):
        conn = smtplib.LMTP(LOCALHOST, target.lmtp_port, timeout=15)
    else:
        conn = smtplib.LMTP(target, timeout=15)
    with conn as s:
        refused = s.sendmail(sender, [rcpt], msg)
        assert not refused, refused


def has(msgs: list[bytes], marker: str) -> bool:
    return any(marker.encode() in m for m in msgs)


def test_inbox_detail_unknown_user_and_restart(dovecots):
    dc = dovecots("dc")

    marker, msg = make_message("sender@test.example", [ALICE])
    lmtp_send(dc, ALICE, msg)
    assert has(dc.messages(ALICE), marker), dc.log
    assert dc.messages(ALICE, "Spam") == []

    marker, msg = make_message("sender@test.example", ["bob+Spam@example.org"])
    lmtp_send(dc, "bob+Spam@example.org", msg)
    assert has(dc.messages(BOB, "Spam"), marker), dc.log
    assert not has(dc.messages(BOB), marker)
    assert (dc.maildir(BOB) / ".Spam").is_dir()

    # the unix socket speaks LMTP too, and is open to everyone
    assert dc.lmtp_socket.is_socket() and dc.lmtp_socket.stat().st_mode & 0o777 == 0o666
    marker, msg = make_message("sender@test.example", [BOB])
    lmtp_send(str(dc.lmtp_socket), BOB, msg)
    assert has(dc.messages(BOB), marker), dc.log

    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        lmtp_send(dc, "nobody@example.org", msg)
    code, text = e.value.recipients["nobody@example.org"]
    assert (code, text[:5]) == (550, b"5.1.1"), text

    dc.stop()
    with pytest.raises(OSError):
        smtplib.LMTP(LOCALHOST, dc.lmtp_port, timeout=5)
    dc.start()
    marker2, msg2 = make_message("sender@test.example", [ALICE])
    lmtp_send(dc, ALICE, msg2)
    inbox = dc.messages(ALICE)
    assert has(inbox, marker2) and len(inbox) == 2, dc.log


def test_over_quota_is_a_tempfail_at_data_then_at_rcpt(dovecots):
    dc = dovecots("dc")
    big = b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 72  # ~5 KB

    # carol's 1000 bytes are not used up: RCPT is accepted, the save after DATA fails
    with pytest.raises(smtplib.SMTPDataError) as e:
        lmtp_send(dc, CAROL, big)
    assert e.value.smtp_code == 452 and e.value.smtp_error.startswith(b"4.2.2 <carol@example.org> Quota exceeded"), e.value
    assert dc.messages(CAROL) == []

    # a small one fits
    marker, msg = make_message("sender@test.example", [CAROL])
    lmtp_send(dc, CAROL, msg)
    assert has(dc.messages(CAROL), marker)

    # once she is over her (lowered) quota, RCPT itself is refused
    dc.set_quota(CAROL, 100)
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        lmtp_send(dc, CAROL, msg)
    code, text = e.value.recipients[CAROL]
    assert code == 452 and text.startswith(b"4.2.2"), text

    # and lifting it lets the big one in
    dc.set_quota(CAROL, None)
    lmtp_send(dc, CAROL, big)
    assert len(dc.messages(CAROL)) == 2, dc.log


def test_permanent_quota_reply_and_two_instances(dovecots):
    temp = dovecots("temp")
    perm = dovecots("perm", tempfail=False)
    assert temp.lmtp_port != perm.lmtp_port and temp.base_dir != perm.base_dir
    big = b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 72
    with pytest.raises(smtplib.SMTPDataError) as e:
        lmtp_send(perm, CAROL, big)
    assert e.value.smtp_code == 552 and e.value.smtp_error.startswith(b"5.2.2"), e.value
    with pytest.raises(smtplib.SMTPDataError) as e:
        lmtp_send(temp, CAROL, big)
    assert e.value.smtp_code == 452
