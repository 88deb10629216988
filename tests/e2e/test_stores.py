"""Mailbox stores end to end: deliver into a real Dovecot over LMTP (TCP and unix
socket), Spam by plus-addressing, per-recipient replies with one recipient over
quota, a user moved between stores while mail flows, and fan-out to Maildir plus
Dovecot with Dovecot stopped and restarted: nothing lost, nothing duplicated.

Dovecot runs as a throwaway process (tests/e2e/dovecot.py); Cyrus is tested the same
way in test_stores_cyrus.py. lmtp.rs's unit tests drive the client against a scripted
peer with mixed per-recipient replies.
"""

from __future__ import annotations

import json

import pytest

from conftest import make_message, send_message, wait_for
from dovecot import dovecot_available, start_dovecot

pytestmark = pytest.mark.skipif(not dovecot_available(), reason="dovecot (dovecot-core, dovecot-lmtpd) is not installed")

SPAM_PHRASE = "cheap replica watches stores test"
SENDER = "sender@remote.test"


def stores_pampa(harness, tmp_path, **deliver):
    """A pampa with a rule that makes SPAM_PHRASE score 8 (Spam at the normal level),
    fast retries, and the given [deliver] settings."""
    p = harness.pampa(bus={"retry_backoff": "200ms"})
    (tmp_path / "stores.cf").write_text(f"body STORES_TEST_SPAM /{SPAM_PHRASE}/i\nscore STORES_TEST_SPAM 8\n")
    settings = "\n".join(f"{k} = {json.dumps(v)}" for k, v in deliver.items())
    p.add_toml(f"""
        [stages.score]
        rules = ["{tmp_path / 'stores.cf'}"]
        [deliver]
        {settings}
    """)
    return p


def deliveries(p, marker_id: str) -> list[dict]:
    """Every delivery record of one message, across its tries."""
    out = []
    for e in json.loads(p.cli("events", "mail.delivered", "--json").stdout):
        if e["payload"]["message_id"] == marker_id:
            out.extend(e["payload"]["deliveries"])
    return out


def queue_id(p, marker: str) -> str:
    """pampa's id of the message whose Message-ID has the marker."""
    return json.loads(p.cli("trace", f"<{marker}@e2e.test>", "--json").stdout)["message_id"]


def with_marker(messages: list[bytes], marker: str) -> list[bytes]:
    return [m for m in messages if marker.encode() in m]


def settled(p, message_id: str) -> bool:
    """Whether deliver is done with a message: its last record has no copy waiting.
    Counting copies before that could miss a late duplicate from a retry."""
    records = [e["payload"]["deliveries"] for e in json.loads(p.cli("events", "mail.delivered", "--json").stdout)
               if e["payload"]["message_id"] == message_id]
    return bool(records) and all(d["outcome"]["kind"] != "deferred" for d in records[-1])


def test_lmtp_delivers_to_the_inbox_and_spam_by_plus_addressing(harness, tmp_path):
    dc = start_dovecot(harness, {"alice@example.org": None, "bob@example.org": None})
    p = stores_pampa(harness, tmp_path)
    p.setup_users("example.org", "alice", "bob")
    p.cli("user", "move", "alice@example.org", "--to", f"lmtp://127.0.0.1:{dc.lmtp_port}")
    p.cli("user", "move", "bob@example.org", "--to", f"lmtp+unix://{dc.lmtp_socket}")
    p.start()
    ham, msg = make_message(SENDER, ["alice@example.org", "bob@example.org"], "ham")
    send_message(p.smtp_port, SENDER, ["alice@example.org", "bob@example.org"], msg)
    spam, msg = make_message(SENDER, ["alice@example.org"], "spam")
    send_message(p.smtp_port, SENDER, ["alice@example.org"], msg.replace(b"the end", SPAM_PHRASE.encode()))
    wait_for(lambda: with_marker(dc.messages("alice@example.org"), ham), 30, "ham in alice's Dovecot INBOX")
    wait_for(lambda: with_marker(dc.messages("bob@example.org"), ham), 30, "ham in bob's INBOX (unix socket)")
    copy = wait_for(lambda: with_marker(dc.messages("alice@example.org", "Spam"), spam), 30, "spam in alice's Spam")
    assert b"X-Spam-Status: Yes" in copy[0] and b"X-Pampa-Delivery-Id:" in copy[0]
    assert not with_marker(dc.messages("alice@example.org"), spam), "spam also in the INBOX"
    # Nothing of pampa's own Maildir was written for them.
    assert not p.maildir("alice@example.org").exists()
    metrics = p.http_get("/metrics")[1]
    assert 'pampa_deliver_copies_total{store="lmtp",folder="Spam",outcome="delivered"} 1' in metrics, metrics
    assert "pampa_deliver_lmtp_duration_seconds_count" in metrics
    # A user Dovecot does not know: 550 at RCPT, recorded as failed for good; the
    # pooled connection is reset, and the next message goes through it as usual.
    p.cli("user", "add", "zed@example.org", "--password", "secret")
    p.cli("user", "move", "zed@example.org", "--to", f"lmtp://127.0.0.1:{dc.lmtp_port}")
    lost, msg = make_message(SENDER, ["zed@example.org"], "unknown there")
    send_message(p.smtp_port, SENDER, ["zed@example.org"], msg)
    failed = wait_for(lambda: [d for d in deliveries(p, queue_id(p, lost)) if d["outcome"]["kind"] == "failed"], 30,
                      "zed's copy failed")
    assert failed[0]["outcome"]["reason"].startswith("550 5.1.1"), failed
    after, msg = make_message(SENDER, ["alice@example.org"], "after a refusal")
    send_message(p.smtp_port, SENDER, ["alice@example.org"], msg)
    wait_for(lambda: with_marker(dc.messages("alice@example.org"), after), 30, "the next message on the pooled connection")


def test_one_recipient_over_quota_waits_while_the_others_are_delivered(harness, tmp_path):
    dc = start_dovecot(harness, {"alice@example.org": None, "carol@example.org": 2000})
    p = stores_pampa(harness, tmp_path)
    p.setup_users("example.org", "alice", "carol")
    for user in ("alice", "carol"):
        p.cli("user", "move", f"{user}@example.org", "--to", f"lmtp://127.0.0.1:{dc.lmtp_port}")
    p.start()
    marker, msg = make_message(SENDER, ["alice@example.org", "carol@example.org"], "quota")
    msg = msg.replace(b"the end", b"x" * 6000)
    send_message(p.smtp_port, SENDER, ["alice@example.org", "carol@example.org"], msg)
    wait_for(lambda: with_marker(dc.messages("alice@example.org"), marker), 30, "alice's copy")
    mid = queue_id(p, marker)
    deferred = wait_for(
        lambda: [d for d in deliveries(p, mid) if d["recipient"] == "carol@example.org"
                 and d["outcome"]["kind"] == "deferred"],
        30, "carol's copy deferred",
    )
    assert "4.2.2" in deferred[0]["outcome"]["reason"], deferred
    assert not with_marker(dc.messages("carol@example.org"), marker)
    # Room is made: the next try delivers carol's copy, and alice's is not sent again.
    dc.set_quota("carol@example.org", None)
    wait_for(lambda: with_marker(dc.messages("carol@example.org"), marker), 60, "carol's copy after the quota was raised")
    wait_for(lambda: settled(p, mid), 30, "deliver done with the message")
    assert len(with_marker(dc.messages("alice@example.org"), marker)) == 1
    assert len(with_marker(dc.messages("carol@example.org"), marker)) == 1
    final = [d for d in deliveries(p, mid) if d["outcome"]["kind"] in ("delivered", "already_delivered")]
    assert {d["recipient"] for d in final} == {"alice@example.org", "carol@example.org"}
    assert 'pampa_deliver_over_quota_total{store="lmtp",result="deferred"}' in p.http_get("/metrics")[1]


def test_a_full_mailbox_fails_for_good_after_the_grace_period(harness, tmp_path):
    p = stores_pampa(harness, tmp_path, quota_grace="2s")
    p.setup_users("example.org", "dan")
    p.cli("user", "quota", "dan@example.org", "3K")
    p.start()
    marker, msg = make_message(SENDER, ["dan@example.org"], "too big")
    send_message(p.smtp_port, SENDER, ["dan@example.org"], msg.replace(b"the end", b"y" * 8000))
    mid = wait_for(lambda: queue_id(p, marker), 30, "the message in the log")
    failed = wait_for(
        lambda: [d for d in deliveries(p, mid) if d["outcome"]["kind"] == "failed"], 60,
        "the copy failed after the grace period",
    )
    assert "still full" in failed[0]["outcome"]["reason"], failed
    assert any(d["outcome"]["kind"] == "deferred" for d in deliveries(p, mid)), "no deferral came first"
    assert not p.copies("dan@example.org", marker)
    # A small one still fits.
    small, msg = make_message(SENDER, ["dan@example.org"], "small")
    send_message(p.smtp_port, SENDER, ["dan@example.org"], msg)
    p.wait_delivered("dan@example.org", small)


def test_a_user_moved_mid_stream_gets_new_mail_in_the_new_store(harness, tmp_path):
    dc = start_dovecot(harness, {"erin@example.org": None})
    p = stores_pampa(harness, tmp_path)
    p.setup_users("example.org", "erin")
    p.start()
    before, msg = make_message(SENDER, ["erin@example.org"], "before the move")
    send_message(p.smtp_port, SENDER, ["erin@example.org"], msg)
    p.wait_delivered("erin@example.org", before)
    p.cli("user", "move", "erin@example.org", "--to", f"lmtp://127.0.0.1:{dc.lmtp_port}")
    after, msg = make_message(SENDER, ["erin@example.org"], "after the move")
    send_message(p.smtp_port, SENDER, ["erin@example.org"], msg)
    wait_for(lambda: with_marker(dc.messages("erin@example.org"), after), 30, "new mail in Dovecot")
    assert not p.copies("erin@example.org", after), "new mail also in the old Maildir"
    assert not with_marker(dc.messages("erin@example.org"), before)
    listed = p.cli("user", "list").stdout
    assert f"lmtp://127.0.0.1:{dc.lmtp_port}" in listed, listed


def test_fan_out_survives_one_store_down_without_loss_or_duplicates(harness, tmp_path):
    dc = start_dovecot(harness, {"fay@example.org": None})
    p = stores_pampa(harness, tmp_path)
    p.setup_users("example.org", "fay")
    p.cli("user", "move", "fay@example.org", "--to", f"lmtp://127.0.0.1:{dc.lmtp_port}", "--also", "maildir:")
    p.start()
    first, msg = make_message(SENDER, ["fay@example.org"], "both up")
    send_message(p.smtp_port, SENDER, ["fay@example.org"], msg)
    p.wait_delivered("fay@example.org", first)
    wait_for(lambda: with_marker(dc.messages("fay@example.org"), first), 30, "the first copy in Dovecot")

    dc.stop()
    markers = []
    for i in range(3):
        marker, msg = make_message(SENDER, ["fay@example.org"], f"while dovecot is down {i}")
        send_message(p.smtp_port, SENDER, ["fay@example.org"], msg)
        markers.append(marker)
    # The Maildir side does not wait for Dovecot.
    for marker in markers:
        p.wait_delivered("fay@example.org", marker)
    mid = queue_id(p, markers[0])
    wait_for(lambda: [d for d in deliveries(p, mid) if d["outcome"]["kind"] == "deferred"
                      and d["store"].startswith("lmtp")], 30, "the LMTP copy deferred")
    dc.start()
    for marker in markers:
        wait_for(lambda: with_marker(dc.messages("fay@example.org"), marker), 90, f"copy {marker} in Dovecot")
        wait_for(lambda: settled(p, queue_id(p, marker)), 30, f"deliver done with {marker}")
    for marker in [first, *markers]:
        assert len(p.copies("fay@example.org", marker)) == 1, f"{marker}: Maildir copies"
        assert len(with_marker(dc.messages("fay@example.org"), marker)) == 1, f"{marker}: Dovecot copies"
    trace = p.cli("trace", mid).stdout
    assert "deferred" in trace and "lmtp://" in trace and "maildir:" in trace, trace
    audit = json.loads(p.cli("audit", "--json").stdout)
    assert audit["missing"] == 0 and audit["duplicated"] == 0, audit


EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def test_a_quarantined_copy_recovered_reaches_the_lmtp_inbox(harness, tmp_path):
    """The copy in Quarantine and its recovery into the inbox are two copies: the
    recovery is neither taken for "already delivered" nor dropped as a duplicate."""
    clamd = harness.clamd()
    dc = start_dovecot(harness, {"gus@example.org": None})
    p = stores_pampa(harness, tmp_path)
    p.add_toml(f"""
        [pipeline]
        stages = ["antivirus", "score"]
        [stages.antivirus]
        clamd = "{clamd.url}"
    """)
    p.setup_users("example.org", "gus")
    p.cli("user", "move", "gus@example.org", "--to", f"lmtp://127.0.0.1:{dc.lmtp_port}")
    p.start()
    marker, msg = make_message(SENDER, ["gus@example.org"], "infected")
    send_message(p.smtp_port, SENDER, ["gus@example.org"], msg.replace(b"the end", EICAR))
    quarantined = wait_for(lambda: with_marker(dc.messages("gus@example.org", "Quarantine"), marker), 30,
                           "the copy in Dovecot's Quarantine")
    assert not with_marker(dc.messages("gus@example.org"), marker)
    p.cli("recover", queue_id(p, marker), "--to", "gus@example.org")
    inbox = wait_for(lambda: with_marker(dc.messages("gus@example.org"), marker), 30, "the recovered copy in the INBOX")
    ids = [next(line for line in m.split(b"\n") if line.startswith(b"X-Pampa-Delivery-Id:")) for m in (quarantined[0], inbox[0])]
    assert ids[0] != ids[1], "the recovered copy has the quarantined copy's delivery id"


def test_header_mode_marks_the_folder_for_sieve(harness, tmp_path):
    """folder_delivery = "header": the Spam copy goes to the plain address with
    X-Pampa-Folder for the server's Sieve; a forged X-Pampa-Folder from the sender is
    removed, so a spammer cannot file mail anywhere."""
    dc = start_dovecot(harness, {"hal@example.org": None})
    p = stores_pampa(harness, tmp_path, folder_delivery="header")
    p.setup_users("example.org", "hal")
    p.cli("user", "move", "hal@example.org", "--to", f"lmtp://127.0.0.1:{dc.lmtp_port}")
    p.start()
    spam, msg = make_message(SENDER, ["hal@example.org"], "spam in header mode")
    msg = b"X-Pampa-Folder: INBOX\r\n" + msg.replace(b"the end", SPAM_PHRASE.encode())
    send_message(p.smtp_port, SENDER, ["hal@example.org"], msg)
    # No Sieve in this Dovecot: the copy stays in the INBOX, marked for it.
    copy = wait_for(lambda: with_marker(dc.messages("hal@example.org"), spam), 30, "the spam copy")[0]
    assert copy.count(b"X-Pampa-Folder:") == 1 and b"X-Pampa-Folder: Spam" in copy, copy[:600]
    assert not dc.messages("hal@example.org", "Spam")
