"""Disk full in the Maildir (a tiny tmpfs over the user's mailbox, filled up): deliver
retries and acknowledges nothing it has not written; once space is back the message
arrives exactly once."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import wait_for
from test_durability import assert_audit_clean

SENDER = "sender@remote.test"
ALICE = "alice@example.org"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def test_full_maildir_delays_delivery_and_loses_nothing(harness):
    p = harness.pampa(bus={"retry_backoff": "200ms", "max_deliver": 1000})
    p.setup_users("example.org", "alice")
    mailbox = p.maildir(ALICE)
    mailbox.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mailbox)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        filler = mailbox / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k", "count=1000"], capture_output=True)
        p.start()
        marker, _ = p.send(SENDER, [ALICE], "to a full disk")
        # deliver fails and retries; nothing is recorded as delivered meanwhile.
        wait_for(
            lambda: 'pampa_stage_processed_total{stage="deliver",outcome="retry"}' in p.http_get("/metrics")[1],
            30,
            "deliver to retry",
        )
        report = json.loads(p.cli("audit", "--json").stdout)
        assert report["in_flight"] == 1 and report["inbox"] == 0, report
        assert p.copies(ALICE, marker) == []

        filler.unlink()
        p.wait_delivered(ALICE, marker, timeout=60)
        assert_audit_clean(p)
    finally:
        if p.proc is not None:
            p.stop()
        subprocess.run(["umount", str(mailbox)])
