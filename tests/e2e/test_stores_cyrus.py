"""Mailbox stores end to end against a real Cyrus IMAP (tests/e2e/cyrus.py): LMTP over
the unix socket and over TCP, Spam by plus-addressing into the user's Spam folder,
per-recipient replies with one recipient unknown to Cyrus (fails, the other is
delivered) and one over quota (waits, then is delivered once room is made).

Cyrus runs as a throwaway master process; these are skipped without cyrus-imapd.
"""

from __future__ import annotations

import json

import pytest

from conftest import make_message, send_message, wait_for
from cyrus import cyrus_available, start_cyrus
from test_stores import SENDER, SPAM_PHRASE, deliveries, queue_id, settled, stores_pampa, with_marker

pytestmark = pytest.mark.skipif(not cyrus_available(), reason="cyrus-imapd (master, lmtpd, imapd) is not installed")


def test_cyrus_harness_answers_lmtp_like_cyrus(harness):
    """The harness itself: users known, unknown, over quota, and user+Spam, without pampa."""
    import smtplib

    cy = start_cyrus(harness, {"alice@example.org": None, "bob@example.org": 1})
    msg = b"Subject: probe\r\nMessage-ID: <probe-1@e2e.test>\r\n\r\nprobe-1 " + b"z" * 3000 + b"\r\n"
    with smtplib.LMTP(str(cy.lmtp_socket)) as lmtp:
        lmtp.ehlo_or_helo_if_needed()
        lmtp.mail(SENDER)
        assert lmtp.rcpt("nobody@example.org")[0] == 550
        assert lmtp.rcpt("alice+spam@example.org")[0] == 250
        lmtp.data(msg)
    assert with_marker(cy.messages("alice@example.org", "Spam"), "probe-1")
    assert not with_marker(cy.messages("alice@example.org"), "probe-1")
    assert len(cy.spool_files("probe-1")) == 1
    # bob's 1 KiB quota: a 3 KB message still goes in (not already over), the next is refused.
    with smtplib.LMTP("127.0.0.1", cy.lmtp_port) as lmtp:
        lmtp.sendmail(SENDER, ["bob@example.org"], msg.replace(b"probe-1", b"probe-2"))
        lmtp.ehlo_or_helo_if_needed()
        lmtp.mail(SENDER)
        code, text = lmtp.rcpt("bob@example.org")
        assert (code, text[:19]) == (452, b"4.2.2 Over quota SE"), (code, text)
        lmtp.rset()
    assert with_marker(cy.messages("bob@example.org"), "probe-2")


def test_lmtp_delivers_to_cyrus_inbox_and_spam_by_plus_addressing(harness, tmp_path):
    cy = start_cyrus(harness, {"alice@example.org": None, "bob@example.org": None})
    p = stores_pampa(harness, tmp_path)
    p.setup_users("example.org", "alice", "bob")
    p.cli("user", "move", "alice@example.org", "--to", f"lmtp+unix://{cy.lmtp_socket}")
    p.cli("user", "move", "bob@example.org", "--to", f"lmtp://127.0.0.1:{cy.lmtp_port}")
    p.start()
    ham, msg = make_message(SENDER, ["alice@example.org", "bob@example.org"], "ham")
    send_message(p.smtp_port, SENDER, ["alice@example.org", "bob@example.org"], msg)
    spam, msg = make_message(SENDER, ["alice@example.org"], "spam")
    send_message(p.smtp_port, SENDER, ["alice@example.org"], msg.replace(b"the end", SPAM_PHRASE.encode()))

    copy = wait_for(lambda: with_marker(cy.messages("alice@example.org"), ham), 30, "ham in alice's Cyrus INBOX (unix socket)")
    assert b"X-Pampa-Delivery-Id:" in copy[0]
    wait_for(lambda: with_marker(cy.messages("bob@example.org"), ham), 30, "ham in bob's Cyrus INBOX (TCP)")
    copy = wait_for(lambda: with_marker(cy.messages("alice@example.org", "Spam"), spam), 30, "spam in alice's Spam folder")
    assert b"X-Spam-Status: Yes" in copy[0] and b"X-Pampa-Delivery-Id:" in copy[0]
    assert not with_marker(cy.messages("alice@example.org"), spam), "spam also in the INBOX"
    # The message files in Cyrus's partition: one per copy.
    assert len(cy.spool_files(ham)) == 2, cy.spool_files(ham)
    assert len(cy.spool_files(spam)) == 1, cy.spool_files(spam)
    assert not p.maildir("alice@example.org").exists()
    metrics = p.http_get("/metrics")[1]
    assert 'pampa_deliver_copies_total{store="lmtp",folder="Spam",outcome="delivered"} 1' in metrics, metrics


def test_a_recipient_unknown_to_cyrus_fails_while_the_other_is_delivered(harness, tmp_path):
    # ghost is a pampa user whose store is Cyrus, but Cyrus has no mailbox for it.
    cy = start_cyrus(harness, {"alice@example.org": None})
    p = stores_pampa(harness, tmp_path)
    p.setup_users("example.org", "alice", "ghost")
    for user in ("alice", "ghost"):
        p.cli("user", "move", f"{user}@example.org", "--to", f"lmtp+unix://{cy.lmtp_socket}")
    p.start()
    rcpts = ["alice@example.org", "ghost@example.org"]
    marker, msg = make_message(SENDER, rcpts, "one unknown")
    send_message(p.smtp_port, SENDER, rcpts, msg)
    wait_for(lambda: with_marker(cy.messages("alice@example.org"), marker), 30, "alice's copy")
    mid = queue_id(p, marker)
    failed = wait_for(
        lambda: [d for d in deliveries(p, mid) if d["recipient"] == "ghost@example.org"
                 and d["outcome"]["kind"] == "failed"],
        30, "ghost's copy failed",
    )
    assert "5.1.1" in failed[0]["outcome"]["reason"], failed
    by_rcpt = {d["recipient"]: d["outcome"]["kind"] for d in deliveries(p, mid)}
    assert by_rcpt["alice@example.org"] == "delivered", deliveries(p, mid)
    assert len(cy.spool_files(marker)) == 1


def test_one_recipient_over_cyrus_quota_waits_while_the_other_is_delivered(harness, tmp_path):
    # carol is already over her 1 KiB quota (Cyrus refuses only once a user is over).
    cy = start_cyrus(harness, {"alice@example.org": None, "carol@example.org": 1})
    p = stores_pampa(harness, tmp_path)
    p.setup_users("example.org", "alice", "carol")
    for user in ("alice", "carol"):
        p.cli("user", "move", f"{user}@example.org", "--to", f"lmtp://127.0.0.1:{cy.lmtp_port}")
    p.start()
    filler, msg = make_message(SENDER, ["carol@example.org"], "filler")
    send_message(p.smtp_port, SENDER, ["carol@example.org"], msg.replace(b"the end", b"f" * 4000))
    wait_for(lambda: with_marker(cy.messages("carol@example.org"), filler), 30, "carol's filler")

    rcpts = ["alice@example.org", "carol@example.org"]
    marker, msg = make_message(SENDER, rcpts, "quota")
    send_message(p.smtp_port, SENDER, rcpts, msg)
    wait_for(lambda: with_marker(cy.messages("alice@example.org"), marker), 30, "alice's copy")
    mid = queue_id(p, marker)
    deferred = wait_for(
        lambda: [d for d in deliveries(p, mid) if d["recipient"] == "carol@example.org"
                 and d["outcome"]["kind"] == "deferred"],
        30, "carol's copy deferred",
    )
    assert "4.2.2" in deferred[0]["outcome"]["reason"], deferred
    assert not with_marker(cy.messages("carol@example.org"), marker)
    cy.set_quota("carol@example.org", None)
    wait_for(lambda: with_marker(cy.messages("carol@example.org"), marker), 60, "carol's copy after the quota was lifted")
    wait_for(lambda: settled(p, mid), 30, "deliver done with the message")
    assert len(with_marker(cy.messages("alice@example.org"), marker)) == 1
    assert len(with_marker(cy.messages("carol@example.org"), marker)) == 1
    final = [d for d in deliveries(p, mid) if d["outcome"]["kind"] in ("delivered", "already_delivered")]
    assert {d["recipient"] for d in final} == {"alice@example.org", "carol@example.org"}
