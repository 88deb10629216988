"""A three-node NATS JetStream cluster (ops/nats/node.conf.template) with R3 streams:
one node down changes nothing; two down and ingest answers 451 rather than accept what
it cannot store; every accepted message is delivered once (`pampa audit`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port, log_tail, make_message, port_accepts, send_message, wait_for
from test_durability import assert_audit_clean

TEMPLATE = Path(__file__).resolve().parents[2] / "ops/nats/node.conf.template"
SENDER = "sender@remote.test"
ALICE = "alice@example.org"


class Node:
    def __init__(self, binary: str, workdir: Path, name: str):
        self.binary, self.name = binary, name
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port, self.cluster_port, self.monitor_port = free_port(), free_port(), free_port()
        self.conf = self.dir / "nats.conf"
        self.log = self.dir / "nats.log"
        self.proc: subprocess.Popen | None = None

    def configure(self, peers: list["Node"]) -> None:
        routes = ",\n        ".join(f"nats-route://127.0.0.1:{p.cluster_port}" for p in peers if p is not self)
        text = TEMPLATE.read_text()
        for key, value in {
            "@NAME@": self.name, "@HOST@": "127.0.0.1", "@CLIENT_PORT@": self.port,
            "@MONITOR_PORT@": self.monitor_port, "@CLUSTER_PORT@": self.cluster_port,
            "@STORE_DIR@": self.dir / "store", "@ROUTES@": routes,
        }.items():
            text = text.replace(key, str(value))
        self.conf.write_text(text)

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: port_accepts(self.port), 30, f"{self.name} to listen")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def jetstream_ready(self) -> bool:
        """JetStream is up on this node and the cluster has a meta leader, so streams
        can be created."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/jsz", timeout=2) as r:
                info = json.loads(r.read())
        except Exception:
            return False
        return bool((info.get("meta_cluster") or {}).get("leader"))


@pytest.fixture
def cluster(tmp_path):
    binary = os.environ.get("PAMPA_NATS_SERVER")
    if not binary:
        pytest.skip("PAMPA_NATS_SERVER is not set")
    nodes = [Node(binary, tmp_path / "nats", f"n{i}") for i in (1, 2, 3)]
    for node in nodes:
        node.configure(nodes)
    for node in nodes:
        node.start()
    try:
        wait_for(lambda: all(n.jetstream_ready() for n in nodes), 60, "the JetStream cluster to form")
        yield nodes
    finally:
        for node in nodes:
            if node.proc is not None:
                node.proc.terminate()
                node.proc.wait(10)
        for node in nodes:
            print(f"--- {node.name} ---\n{log_tail(node.log)}")


def send(p, note: str) -> tuple[str, int]:
    marker, msg = make_message(SENDER, [ALICE], note)
    try:
        send_message(p.smtp_port, SENDER, [ALICE], msg)
        return marker, 250
    except Exception as e:  # smtplib raises on 4xx/5xx
        return marker, getattr(e, "smtp_code", 0)


def test_r3_cluster_survives_one_node_and_refuses_without_quorum(harness, cluster):
    url = ",".join(f"nats://127.0.0.1:{n.port}" for n in cluster)
    p = harness.pampa(bus_url=url, bus={"replicas": 3, "publish_timeout": "3s"})
    p.setup_users("example.org", "alice")
    p.start()
    accepted = []
    for i in range(5):
        marker, code = send(p, f"all up {i}")
        assert code == 250
        accepted.append(marker)

    # One node down: quorum holds, mail flows.
    cluster[2].kill9()
    for i in range(5):
        marker, code = wait_for(lambda: (lambda r: r if r[1] == 250 else None)(send(p, f"one down {i}")), 60, "250 with one node down")
        accepted.append(marker)
    cluster[2].start()
    wait_for(lambda: cluster[2].jetstream_ready(), 60, "n3 to rejoin")

    # Two down: no quorum, so nothing can be stored and nothing is accepted.
    cluster[1].kill9()
    cluster[2].kill9()
    codes = [send(p, f"no quorum {i}")[1] for i in range(3)]
    assert all(400 <= c < 500 for c in codes), codes

    cluster[1].start()
    cluster[2].start()
    wait_for(lambda: all(n.jetstream_ready() for n in cluster), 60, "the cluster to recover")
    marker, code = wait_for(lambda: (lambda r: r if r[1] == 250 else None)(send(p, "recovered")), 90, "250 after recovery")
    accepted.append(marker)
    for m in accepted:
        p.wait_delivered(ALICE, m, timeout=90)
    report = assert_audit_clean(p)
    assert report["inbox"] == len(accepted), report
