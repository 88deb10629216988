"""What every benchmark driver here needs: free ports, waiting for a condition or a
listener, and progress on stderr. Imported by the `*_bench.py` scripts, which run from
this folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

LOCALHOST = "127.0.0.1"
# Loopback requests must not go through an http_proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that was free a moment ago (TCP unless `kind` says UDP)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def free_udp_tcp_port() -> int:
    """A port free for UDP and TCP both (DNS binds both; RADIUS ports are UDP)."""
    while True:
        port = free_port(socket.SOCK_DGRAM)
        try:
            with socket.socket() as s:
                s.bind((LOCALHOST, port))
            return port
        except OSError:
            continue


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Polls `predicate` until it returns something true, which is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def wait_port(port: int, timeout: float = 30) -> None:
    """Waits until something accepts TCP connections on 127.0.0.1:`port`."""

    def accepts() -> bool:
        try:
            socket.create_connection((LOCALHOST, port), timeout=1).close()
            return True
        except OSError:
            return False

    wait_for(accepts, timeout, f"something to listen on port {port}", 0.2)


class PampaProcess:
    """One `pampa run ROLE` under a benchmark. Subclasses set `dir` (its work folder),
    `config` (its TOML file) and `metrics_port` before calling `start_role`."""

    dir: Path
    config: Path
    metrics_port: int
    proc: subprocess.Popen | None = None

    def http(self, path: str) -> tuple[int, str]:
        """GET on the metrics listener: (status, body), status 0 when nothing answers."""
        try:
            with _NO_PROXY.open(f"http://{LOCALHOST}:{self.metrics_port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, ""
        except OSError:
            return 0, ""

    def tail(self) -> str:
        return (self.dir / "pampa.log").read_text(errors="replace")[-3000:]

    def start_role(self, binary: Path, role: str, timeout: float) -> None:
        """Starts `pampa run ROLE` (logging at warn) and waits for `/readyz`."""
        self.log = open(self.dir / "pampa.log", "wb")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        self.proc = subprocess.Popen(
            [str(binary), "--config", str(self.config), "run", role],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise SystemExit(f"pampa exited with {self.proc.returncode}:\n{self.tail()}")
            return self.http("/readyz")[0] == 200

        wait_for(ready, timeout, "pampa /readyz")

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include `labels`."""
        total = 0.0
        for line in self.http("/metrics")[1].splitlines():
            if not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            if head != name and not head.startswith(name + "{"):
                continue
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total


def version(cmd: list[str]) -> str:
    """What a command prints of its version (for the results' record), or "" if it is missing."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""
