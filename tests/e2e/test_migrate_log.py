"""`pampa migrate-log`: a single node's embedded log moves into NATS JetStream with its
events, its bodies and its consumers' positions, so the node goes on from NATS without
redoing any work, and a second copy into the same streams is refused."""

from __future__ import annotations

import json

from conftest import wait_for

SENDER = "sender@remote.test"
ALICE = "alice@example.org"


def test_migrate_log_moves_history_bodies_and_positions_to_jetstream(harness):
    nats = harness.nats()
    p = harness.pampa()
    p.setup_users("example.org", "alice")
    p.start()
    old = []
    for i in range(3):
        marker, _ = p.send(SENDER, [ALICE], f"before the move {i}")
        p.wait_delivered(ALICE, marker)
        old.append(marker)
    embedded_events = json.loads(p.cli("events", "mail.>", "--json").stdout)
    p.stop()

    out = p.cli("migrate-log", "--to", nats.url).stdout
    assert "3 bodies" in out, out
    assert f"Copied {len(embedded_events)} events" in out, out
    assert "consumer deliver" in out, out

    # A second copy would duplicate everything: refused, saying why.
    again = p.cli("migrate-log", "--to", nats.url, check=False)
    assert again.returncode != 0 and "already holds" in again.stderr, again.stderr

    p.configure(bus={"url": nats.url})
    p.start()
    moved = json.loads(p.cli("events", "mail.>", "--json").stdout)
    assert [e["id"] for e in moved] == [e["id"] for e in embedded_events]
    assert p.cli("streams", "check").returncode == 0

    # The stages start after what they had done: nothing is delivered again...
    new, _ = p.send(SENDER, [ALICE], "after the move")
    p.wait_delivered(ALICE, new)

    def settled():
        report = json.loads(p.cli("audit", "--json", check=False).stdout or "{}")
        return report if report.get("in_flight") == 0 else None

    report = wait_for(settled, 30, "every copy to reach a terminal state")
    assert report["missing"] == 0 and report["duplicated"] == 0, report
    for marker in old + [new]:
        assert len(p.copies(ALICE, marker)) == 1, marker
    # ...and the moved history still answers for an old message.
    trace = p.cli("trace", f"<{old[0]}@e2e.test>").stdout
    assert "mail.received" in trace and "mail.delivered" in trace, trace
    wait_for(lambda: p.http_status("/readyz") == 200, 10, "pampa on NATS to be ready")
