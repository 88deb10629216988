"""kill -9 of single stage processes mid-stream, against NATS JetStream: the killed
stage's unacked inputs are handed out again when it comes back, and every accepted
message ends in exactly one terminal state (`pampa audit`)."""

from __future__ import annotations

import threading

from conftest import make_message, send_message, wait_for
from test_durability import assert_audit_clean

SENDER = "sender@remote.test"
USERS = ["alice@example.org", "bob@example.org"]
MESSAGES = 60


def test_kill9_of_score_and_deliver_mid_stream_loses_and_doubles_nothing(harness):
    nats = harness.nats()
    db = harness.mysql_url()
    rbl = harness.rbldnsd({"bl.pampa.test": ("ip4set", ":127.0.0.2:listed\n127.0.0.2\n")})
    pipeline = f"""
        [pipeline]
        stages = ["rbl", "whitelist", "score"]
        [stages.rbl]
        resolver = "{rbl.address}"
        timeout_ms = 1000
        [[stages.rbl.lists]]
        zone = "bl.pampa.test"
        kind = "ip"
        tag = "RBL_PAMPA_TEST"
        """
    roles = {}
    for role in ("ingest", "rbl", "whitelist", "score", "deliver"):
        # A short ack wait, so a killed stage's inputs come back within seconds.
        p = harness.pampa(bus_url=nats.url, db_url=db, bus={"ack_wait": "3s"})
        if roles:
            p.data_dir = roles["ingest"].data_dir  # one mail store, set before the file is written
        p.add_toml(pipeline)
        roles[role] = p
    ingest = roles["ingest"]
    ingest.setup_users("example.org", "alice", "bob")
    for role, p in roles.items():
        p.start("run", role)

    markers: list[str] = []
    errors: list[BaseException] = []

    def load() -> None:
        try:
            for i in range(MESSAGES):
                marker, msg = make_message(SENDER, USERS, f"stage kill {i}")
                send_message(ingest.smtp_port, SENDER, USERS, msg)
                markers.append(marker)
        except BaseException as e:  # surfaced below
            errors.append(e)

    sender = threading.Thread(target=load)
    sender.start()
    # Kill score and deliver while mail flows, and bring them back after a pause.
    wait_for(lambda: len(markers) >= 10, 60, "the first ten messages")
    roles["score"].kill9()
    wait_for(lambda: len(markers) >= 25, 60, "more messages while score is down")
    roles["deliver"].kill9()
    wait_for(lambda: len(markers) >= 40, 60, "more messages while deliver is down")
    roles["score"].start("run", "score")
    roles["deliver"].start("run", "deliver")
    sender.join(120)
    assert not errors, errors
    assert len(markers) == MESSAGES

    for marker in markers:
        for user in USERS:
            ingest.wait_delivered(user, marker, timeout=120)
    report = assert_audit_clean(ingest)
    assert report["messages"] == MESSAGES and report["inbox"] == MESSAGES * len(USERS), report
