"""Nothing accepted is lost, nothing is delivered twice, and an unreachable log gets 451."""

from __future__ import annotations

import json
import shutil
import smtplib
import time

import pytest

from conftest import assert_delivered_verbatim, make_message, send_message, smtp_connect, wait_for

SENDER = "sender@remote.test"
ALICE = "alice@example.org"


def assert_exactly_once_after_marker(p, markers: list[str]) -> None:
    """Every marker has exactly one copy, checked after a later message has landed too.

    Waiting for a fresh message first means any late duplicate of the earlier ones
    would have had its chance to land, without sleeping for a fixed time.
    """
    later, _ = p.send(SENDER, [ALICE], "later marker")
    p.wait_delivered(ALICE, later)
    for m in markers:
        copies = p.copies(ALICE, m)
        assert len(copies) == 1, f"message {m} has {len(copies)} copies: {copies}"


@pytest.mark.parametrize("stack", ["embedded", "nats"])
def test_kill9_right_after_250_loses_nothing(harness, stack):
    p = harness.stack(stack)
    p.setup_users("example.org", "alice")
    p.start()

    sent = []
    s = smtp_connect(p.smtp_port)
    try:
        for i in range(5):
            marker, msg = make_message(SENDER, [ALICE], f"before crash {i}")
            assert s.sendmail(SENDER, [ALICE], msg) == {}  # 250: the log has it
            sent.append((marker, msg))
        p.kill9()  # mid-session, no chance to flush anything
    finally:
        s.close()

    p.start()
    for marker, msg in sent:
        assert_delivered_verbatim(p.wait_delivered(ALICE, marker), msg)
    assert_exactly_once_after_marker(p, [m for m, _ in sent])
    audit = assert_audit_clean(p)
    assert audit["inbox"] == audit["copies"] == len(sent) + 1, audit


def assert_audit_clean(p) -> dict:
    """`pampa audit`: every accepted copy in one terminal state, none missing or doubled."""
    def settled():
        report = json.loads(p.cli("audit", "--json", check=False).stdout or "{}")
        return report if report.get("in_flight") == 0 else None

    report = wait_for(settled, 30, "every copy to reach a terminal state")
    assert report["missing"] == 0 and report["duplicated"] == 0, report
    terminal = sum(report[k] for k in ("inbox", "spam", "quarantine", "other_folders", "discarded", "failed", "dead_lettered"))
    assert terminal == report["copies"], report
    return report


def test_audit_finds_missing_and_duplicated_copies(harness):
    p = harness.pampa()
    p.setup_users("example.org", "alice", "bob")
    p.start()
    markers = []
    for i in range(3):
        marker, _ = p.send(SENDER, [ALICE, "bob@example.org"], f"audit {i}")
        p.wait_delivered(ALICE, marker)
        p.wait_delivered("bob@example.org", marker)
        markers.append(marker)
    report = assert_audit_clean(p)
    assert report["messages"] == 3 and report["copies"] == 6 and report["inbox"] == 6, report

    # A copy that vanished is missing; a second file of one copy is a duplicate.
    p.copies(ALICE, markers[0])[0].unlink()
    kept = p.copies("bob@example.org", markers[1])[0]
    secs, rest = kept.name.split(".", 1)
    shutil.copy(kept, kept.with_name(f"{int(secs) + 1}.{rest}"))
    cp = p.cli("audit", "--json", check=False)
    assert cp.returncode != 0, cp
    report = json.loads(cp.stdout)
    assert report["missing"] == 1 and report["duplicated"] == 1, report
    assert report["missing_samples"][0].endswith(ALICE), report
    assert "1 copies missing and 1 duplicated" in cp.stderr, cp.stderr


def test_nats_down_gives_451_then_retry_delivers_once(harness):
    nats = harness.nats()
    p = harness.pampa(bus_url=nats.url, bus={"publish_timeout": "2s"})
    p.setup_users("example.org", "alice")
    p.start()

    # Warm up: the pipeline works end to end before NATS goes away.
    warm, _ = p.send(SENDER, [ALICE], "warm up")
    p.wait_delivered(ALICE, warm)

    nats.stop()
    marker, msg = make_message(SENDER, [ALICE], "while nats is down")
    started = time.monotonic()
    try:
        with smtp_connect(p.smtp_port) as s:
            assert s.mail(SENDER)[0] == 250
            assert s.rcpt(ALICE)[0] == 250
            try:
                # smtplib raises only when DATA itself is refused; the reply after the "." is returned.
                code, text = s.data(msg)
            except smtplib.SMTPDataError as e:
                code, text = e.smtp_code, e.smtp_error
    except smtplib.SMTPConnectError as e:
        # Once the client has seen the connection drop, the greeting itself says 421.
        code, text = e.smtp_code, e.smtp_error
        assert code == 421, f"greeting with NATS down: {code} {text!r}"
    elapsed = time.monotonic() - started
    assert code in (421, 451), f"with NATS down: {code} {text!r}"
    assert elapsed < 12, f"the 451 took {elapsed:.1f} s"
    p.check_alive()
    # Not ready: the MX says so in its greeting, before any mail is sent.
    wait_for(lambda: p.http_status("/readyz") == 503, 15, "/readyz to say the log is down")
    try:
        with smtp_connect(p.smtp_port):
            raise AssertionError("a session was greeted with 220 while the log was down")
    except smtplib.SMTPConnectError as e:
        assert e.smtp_code == 421 and b"4.3.0" in e.smtp_error, (e.smtp_code, e.smtp_error)

    nats.start()  # same port, same store dir

    # Retry as an MTA would: on a 4xx or a connection error, try again, for up to 60 s.
    deadline = time.monotonic() + 60
    attempts = []
    while True:
        try:
            send_message(p.smtp_port, SENDER, [ALICE], msg)
            break
        except smtplib.SMTPRecipientsRefused as err:
            codes = [c for c, _ in err.recipients.values()]
            if not all(400 <= c < 500 for c in codes):
                raise
            attempts.append(f"RCPT {codes}")
        except smtplib.SMTPResponseException as err:
            if not 400 <= err.smtp_code < 500:
                raise
            attempts.append(f"{err.smtp_code} {err.smtp_error!r}")
        except (smtplib.SMTPServerDisconnected, OSError) as err:
            attempts.append(repr(err))
        if time.monotonic() >= deadline:
            raise AssertionError(f"no 250 within 60 s of NATS coming back; attempts: {attempts}")
        time.sleep(0.5)  # retry back-off, as an MTA's queue would

    assert_delivered_verbatim(p.wait_delivered(ALICE, marker, timeout=60), msg)
    # The 451 attempt left no half-state behind: still one copy after a later message.
    assert_exactly_once_after_marker(p, [warm, marker])
