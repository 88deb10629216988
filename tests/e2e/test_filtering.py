"""The filtering stages between ingest and deliver: DNSBL, lists and the address book,
ClamAV, and each recipient's own spam level, on both backends."""

from __future__ import annotations

import json
import re
import smtplib

import pytest

from conftest import LOCALHOST, make_message, wait_for

SENDER = "sender@remote.test"
ZONE = "bl.pampa.test"
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def send_from(port: int, source_ip: str, sender: str, recipients: list[str], msg: bytes) -> str:
    """Sends one message from `source_ip` (127.0.0.2 is the RFC 5782 test entry that every
    DNSBL lists); returns pampa's message id from the 250 reply."""
    with smtplib.SMTP(LOCALHOST, port, timeout=30, source_address=(source_ip, 0)) as s:
        s.ehlo("client.e2e.test")
        assert s.mail(sender)[0] == 250
        for rcpt in recipients:
            code, text = s.rcpt(rcpt)
            assert code == 250, (rcpt, code, text)
        code, text = s.data(msg)
        assert code == 250, (code, text)
    m = re.search(rb"queued as (\S+)", text)
    assert m, text
    return m.group(1).decode()


def folder_copies(p, address: str, folder: str, marker: str) -> list:
    """Copies holding `marker` in a Maildir++ folder ("" is the inbox)."""
    base = p.maildir(address) / (f".{folder}" if folder else "")
    new = base / "new"
    if not new.is_dir():
        return []
    return [f for f in new.iterdir() if marker.encode() in f.read_bytes()]


def wait_in_folder(p, address: str, folder: str, marker: str):
    found = wait_for(
        lambda: folder_copies(p, address, folder, marker), 30, f"{marker} in {address}'s {folder or 'inbox'}"
    )
    assert len(found) == 1, found
    return found[0].read_bytes()


def all_copies(p, address: str, marker: str) -> list:
    return [f for f in p.maildir(address).rglob("*") if f.is_file() and marker.encode() in f.read_bytes()]


def trace(p, message_id: str) -> list[dict]:
    report = json.loads(p.cli("trace", message_id, "--json").stdout)
    assert report["message_id"] == message_id
    return report["events"]


def wait_delivered_event(p, message_id: str) -> dict:
    def delivered():
        cp = p.cli("trace", message_id, "--json", check=False)
        if cp.returncode != 0:
            return None
        events = json.loads(cp.stdout)["events"]
        return next((e for e in events if e["event_type"] == "mail.delivered"), None)

    return wait_for(delivered, 30, f"mail.delivered for {message_id}", 0.2)


@pytest.fixture
def dnsbl(harness):
    return harness.rbldnsd(
        {
            ZONE: (
                "ip4set",
                """\
                :127.0.0.2:Listed by the pampa test list
                127.0.0.2
                """,
            )
        }
    )


def filtering(harness, stack: str, dnsbl, antivirus=None):
    p = harness.stack(stack)
    stages = '"rbl", "whitelist", "antivirus", "score"' if antivirus else '"rbl", "whitelist", "score"'
    p.add_toml(
        f"""
        [pipeline]
        stages = [{stages}]
        [stages.rbl]
        resolver = "{dnsbl.address}"
        timeout_ms = 1000
        [[stages.rbl.lists]]
        zone = "{ZONE}"
        kind = "ip"
        weights = {{ "127.0.0.2" = 4.0 }}
        tag = "RBL_PAMPA_TEST"
        """
    )
    if antivirus:
        p.add_toml(f'[stages.antivirus]\nclamd = "{antivirus.url}"\n')
    p.cli("domain", "add", "example.org")
    for user, level in [("strict", "strict"), ("off", "off"), ("alice", "normal"), ("carol", "strict")]:
        p.cli("user", "add", f"{user}@example.org", "--password", "secret", "--level", level)
    return p


BACKENDS = ["embedded", "nats"]


@pytest.mark.parametrize("stack", BACKENDS)
def test_listed_ip_goes_to_spam_for_strict_and_inbox_for_off(harness, stack, dnsbl):
    p = filtering(harness, stack, dnsbl)
    p.start()
    strict, off = "strict@example.org", "off@example.org"
    marker, msg = make_message(SENDER, [strict, off], "from a listed ip")
    send_from(p.smtp_port, "127.0.0.2", SENDER, [strict, off], msg)
    spam = wait_in_folder(p, strict, "Spam", marker)
    inbox = wait_in_folder(p, off, "", marker)
    assert b"X-Spam-Flag: YES\n" in spam
    assert b"X-Spam-Status: Yes, score=4.0 required=3.0 tests=RBL_PAMPA_TEST" in spam
    assert b"X-Spam-Flag: NO\n" in inbox
    assert b"X-Spam-Level: ****\n" in inbox
    assert all_copies(p, strict, marker) == folder_copies(p, strict, "Spam", marker)

    # The same mail from an unlisted address reaches the strict user's inbox.
    clean, msg = make_message(SENDER, [strict], "from a clean ip")
    send_from(p.smtp_port, "127.0.0.1", SENDER, [strict], msg)
    assert b"X-Spam-Status: No, score=0.0" in wait_in_folder(p, strict, "", clean)


@pytest.mark.parametrize("stack", BACKENDS)
def test_allowed_and_address_book_senders_reach_the_inbox(harness, stack, dnsbl):
    p = filtering(harness, stack, dnsbl)
    p.cli("addressbook", "add", "--user", "strict@example.org", "friend@remote.test")
    p.cli("list", "allow", "add", "--user", "carol@example.org", "partner.test")
    p.start()
    m1, msg = make_message("friend@remote.test", ["strict@example.org"], "address book")
    send_from(p.smtp_port, "127.0.0.2", "friend@remote.test", ["strict@example.org"], msg)
    copy = wait_in_folder(p, "strict@example.org", "", m1)
    assert b"WL_ADDRESS_BOOK" in copy
    m2, msg = make_message("billing@partner.test", ["carol@example.org"], "allowed domain")
    send_from(p.smtp_port, "127.0.0.2", "billing@partner.test", ["carol@example.org"], msg)
    assert b"WL_USER" in wait_in_folder(p, "carol@example.org", "", m2)


@pytest.mark.parametrize("stack", BACKENDS)
def test_blocked_sender_is_discarded_with_the_reason_recorded(harness, stack, dnsbl):
    p = filtering(harness, stack, dnsbl)
    p.cli("list", "block", "add", "--user", "alice@example.org", "spammer@remote.test")
    p.start()
    marker, msg = make_message("spammer@remote.test", ["alice@example.org", "off@example.org"], "blocked")
    message_id = send_from(p.smtp_port, "127.0.0.1", "spammer@remote.test", ["alice@example.org", "off@example.org"], msg)
    delivered = wait_delivered_event(p, message_id)
    by_rcpt = {d["recipient"]: d for d in delivered["payload"]["deliveries"]}
    assert by_rcpt["alice@example.org"]["outcome"]["kind"] == "discarded", by_rcpt
    assert "BL_USER" in by_rcpt["alice@example.org"]["outcome"]["reason"]
    assert by_rcpt["off@example.org"]["outcome"]["kind"] == "delivered"
    assert all_copies(p, "alice@example.org", marker) == []
    assert len(all_copies(p, "off@example.org", marker)) == 1
    # The whole history is in the log: received, each stage, delivered; the Message-ID
    # header finds it too.
    types = [e["event_type"] for e in trace(p, message_id)]
    by_header = json.loads(p.cli("trace", f"<{marker}@e2e.test>", "--json").stdout)
    assert by_header["message_id"] == message_id
    assert types == ["mail.received", "mail.rbl", "mail.whitelist", "mail.scored", "mail.delivered"], types


def test_forged_spam_headers_are_replaced(harness, dnsbl):
    p = filtering(harness, "embedded", dnsbl)
    p.start()
    marker, msg = make_message(SENDER, ["alice@example.org"], "forged headers")
    msg = b"X-Spam-Flag: NO\r\nX-Spam-Status: No, score=-100 FAKE\r\n\tcontinued-FAKE\r\n" + msg
    send_from(p.smtp_port, "127.0.0.2", SENDER, ["alice@example.org"], msg)
    copy = wait_in_folder(p, "alice@example.org", "", marker)
    assert copy.count(b"X-Spam-Flag:") == 1
    assert b"FAKE" not in copy
    assert b"X-Spam-Status: No, score=4.0 required=5.0 tests=RBL_PAMPA_TEST" in copy


@pytest.mark.parametrize("stack", BACKENDS)
def test_eicar_is_quarantined_and_clamd_outage_loses_nothing(harness, stack, dnsbl):
    clamd = harness.clamd()
    p = filtering(harness, stack, dnsbl, antivirus=clamd)
    p.configure(bus={"max_deliver": 100, "retry_backoff": "100ms"})
    p.start()
    alice = "alice@example.org"
    marker, msg = make_message(SENDER, [alice], "eicar")
    msg = msg.replace(b"the end", EICAR)
    send_from(p.smtp_port, "127.0.0.1", SENDER, [alice], msg)
    copy = wait_in_folder(p, alice, "Quarantine", marker)
    assert b"VIRUS:" in copy
    assert folder_copies(p, alice, "", marker) == []

    # clamd goes away: mail is still accepted, waits, and nothing is lost.
    clamd.stop()
    waiting = []
    for i in range(3):
        m, body = make_message(SENDER, [alice], f"while clamd is down {i}")
        send_from(p.smtp_port, "127.0.0.1", SENDER, [alice], body)
        waiting.append(m)
    wait_for(lambda: p.http_status("/readyz") == 503, 30, "/readyz to report clamd down")
    assert all(all_copies(p, alice, m) == [] for m in waiting)
    clamd.start()
    for m in waiting:
        wait_in_folder(p, alice, "", m)
    assert all(len(all_copies(p, alice, m)) == 1 for m in waiting)


def test_two_score_processes_share_the_work(harness):
    nats = harness.nats()
    common = {"bus_url": nats.url}
    ingest = harness.pampa(**common)
    ingest.add_toml('[pipeline]\nstages = ["score"]\n')
    ingest.setup_users("example.org", "alice")
    roles = [ingest]
    for role in ["score", "score", "deliver"]:
        r = harness.pampa(**common)
        r.data_dir = ingest.data_dir
        r.add_toml('[pipeline]\nstages = ["score"]\n')
        r.db_conf = ingest.db_conf
        r.configure()
        r.role = role
        roles.append(r)
    ingest.start("run", "ingest")
    for r in roles[1:]:
        r.start("run", r.role)
    sent = [ingest.send(SENDER, ["alice@example.org"], f"score scale {i}") for i in range(20)]
    for marker, _ in sent:
        ingest.wait_delivered("alice@example.org", marker)
    from test_scale_out import metric_sum

    scored = [metric_sum(r, "pampa_stage_processed_total", stage="score", outcome="ok") for r in roles[1:3]]
    assert sum(scored) == len(sent), scored


def test_forged_verdict_headers_are_removed(harness):
    p = harness.pampa()  # hostname mx.test: pampa's authserv-id
    p.setup_users("example.org", "alice")
    p.start()
    marker, msg = make_message(SENDER, ["alice@example.org"], "forged verdicts")
    head, body = msg.split(b"\r\n\r\n", 1)
    forged = (
        b"X-Spam-Flag: NO\r\nX-Spam-Status: No, score=-100\r\n"
        b"Authentication-Results: mx.test; spf=pass smtp.mailfrom=paypal.example\r\n"
        b"Authentication-Results: other.example; dkim=pass\r\n"
    )
    send_from(p.smtp_port, "127.0.0.1", SENDER, ["alice@example.org"], forged + head + b"\r\n\r\n" + body)
    copy = wait_in_folder(p, "alice@example.org", "", marker)
    header = copy.split(b"\n\n", 1)[0]
    assert b"score=-100" not in header and b"paypal.example" not in header, header
    assert b"Authentication-Results: other.example; dkim=pass" in header, header
    assert b"X-Spam-Status: No, score=" in header  # pampa's own verdict
