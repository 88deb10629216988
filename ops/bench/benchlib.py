"""What every benchmark driver here needs: free ports, waiting for a condition or a
listener, and progress on stderr. Imported by the `*_bench.py` scripts, which run from
this folder."""

from __future__ import annotations

import os
import signal
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


def stop_process(proc: subprocess.Popen | None, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited after `timeout` seconds."""
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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

    def make_dir(self, work: Path, name: str) -> None:
        """Sets `name`, its folder `work/name` (created), a port for the role (free for
        UDP and TCP: DNS binds both), a metrics port and the config file's path (which
        the subclass writes)."""
        self.name = name
        self.dir = work / name
        self.dir.mkdir()
        self.port = free_udp_tcp_port()
        self.metrics_port = free_port()
        self.config = self.dir / "pampa.toml"

    def cli(self, binary: Path, *args: str) -> str:
        """`pampa --config FILE ARGS...`'s output; a failure ends the benchmark."""
        cp = subprocess.run([str(binary), "--config", str(self.config), *args],
                            capture_output=True, text=True, timeout=600)
        if cp.returncode != 0:
            raise SystemExit(f"pampa {' '.join(args)} failed:\n{cp.stdout}{cp.stderr}")
        return cp.stdout

    def tail(self) -> str:
        return (self.dir / "pampa.log").read_text(errors="replace")[-3000:]

    def start_role(self, binary: Path, role: str, timeout: float, *args: str) -> None:
        """Starts `pampa run ROLE` (logging at warn) and waits for `/readyz`; ROLE "up"
        starts `pampa up` (every role and the configured stages in one process). ARGS
        follow the role (`--metrics-listen ADDR`)."""
        self.launch(binary, role, *args)
        self.wait_ready(timeout)

    def launch(self, binary: Path, role: str, *args: str) -> None:
        """`start_role` without the wait: several processes can be started at once, then
        waited for with `wait_ready`."""
        self.log = open(self.dir / "pampa.log", "wb")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        self.proc = subprocess.Popen(
            [str(binary), "--config", str(self.config), *(["up"] if role == "up" else ["run", role]), *args],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )

    def wait_ready(self, timeout: float) -> None:
        """Waits for `/readyz`; the process exiting first ends the benchmark."""

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


def start_nats(work: Path, sync: str, jetstream_extra: str = "") -> tuple[subprocess.Popen, str]:
    """A throwaway single-node nats-server with JetStream, `sync_interval: SYNC` unless
    SYNC is "default" (NATS's own: fsync every 2 minutes); `jetstream_extra` is added to
    the `jetstream` block as it is (e.g. `limits { default_max_consumers: -1 }`)."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = work / "nats.conf"
    line = f"  sync_interval: {sync}\n" if sync != "default" else ""
    line += f"  {jetstream_extra}\n" if jetstream_extra else ""
    conf.write_text(f"listen: {LOCALHOST}:{port}\njetstream {{\n  store_dir: \"{work / 'nats'}\"\n{line}}}\n")
    proc = subprocess.Popen([os.environ.get("PAMPA_NATS_SERVER", "nats-server"), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def up() -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"nats-server exited with {proc.returncode}")
        try:
            socket.create_connection((LOCALHOST, port), timeout=1).close()
            return True
        except OSError:
            return False

    wait_for(up, 30, "nats-server")
    return proc, f"nats://{LOCALHOST}:{port}"


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name of a process (threads of one name summed)."""
    out: dict[str, float] = {}
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def version(cmd: list[str]) -> str:
    """What a command prints of its version (for the results' record), or "" if it is missing."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""
