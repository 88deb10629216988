"""The roles as separate processes against NATS JetStream and MariaDB share the work."""

from __future__ import annotations

import re

from conftest import assert_delivered_verbatim

SENDER = "sender@remote.test"
ALICE = "alice@example.org"
BOB = "bob@example.org"


def metric_sum(p, name: str, **labels: str) -> float:
    """Sums the samples of a Prometheus counter whose labels include `labels`."""
    status, body = p.http_get("/metrics")
    assert status == 200, status
    total = 0.0
    for line in body.splitlines():
        m = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if not m:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def test_one_ingest_and_two_delivers_share_one_consumer(harness):
    nats = harness.nats()
    db = harness.mysql_url()
    ingest = harness.pampa(bus_url=nats.url, db_url=db)
    # No stages: deliver reads mail.received itself (test_filtering covers the stages).
    ingest.add_toml("[pipeline]\nstages = []\n")
    ingest.setup_users("example.org", "alice", "bob")
    deliverers = []
    for _ in range(2):
        d = harness.pampa(bus_url=nats.url, db_url=db)
        d.data_dir = ingest.data_dir  # the mail store is shared, as NFS or one host would be
        d.add_toml("[pipeline]\nstages = []\n")
        deliverers.append(d)

    ingest.start("run", "ingest")
    for d in deliverers:
        d.start("run", "deliver")

    sent = [ingest.send(SENDER, [ALICE, BOB], f"scale out {i}") for i in range(20)]
    for marker, msg in sent:
        assert_delivered_verbatim(ingest.wait_delivered(ALICE, marker), msg)
        assert_delivered_verbatim(ingest.wait_delivered(BOB, marker), msg)

    # Every message was handled by exactly one of the two processes, once.
    processed = [metric_sum(d, "pampa_stage_processed_total", stage="deliver", outcome="ok") for d in deliverers]
    assert sum(processed) == len(sent), processed
    written = [metric_sum(d, "pampa_deliver_copies_total", outcome="delivered") for d in deliverers]
    assert sum(written) == 2 * len(sent), written
    for marker, _ in sent:
        assert len(ingest.copies(ALICE, marker)) == 1
        assert len(ingest.copies(BOB, marker)) == 1
