"""DNS queries per second: pampa against rbldnsd and Unbound (Debian's packages), side by side.

Every server runs on loopback, one at a time, and is driven by the same load generator
(dnsperf, Debian's package) with the same clients, outstanding queries, length and query
files. pampa runs as `pampa run dns` with its defaults, so every query becomes a
`dns.query` event in the embedded log (SQLite): the query log is on.

Scenarios:
- dnsbl: an rbldnsd ip4set dataset of ENTRIES generated entries (99% single addresses, 1%
  /24s; deterministic), queried as reversed IPv4 A queries, half listed and half not.
  pampa (`[[dns.dnsbl]] format = "ip4set"`) against rbldnsd on the same file. Extra rows,
  for the diagnosis only: pampa with `query_log = false`, and rbldnsd with its own query
  log (`-l`).
- auth: a zone of NAMES hosts (A for all, AAAA for half, MX for a third), queried with A,
  AAAA and MX (one query in ten for a name that does not exist). pampa (`[[dns.zones]]`)
  against Unbound's `auth-zone:` on the same master file.
- cache: recursive queries forwarded to a local upstream (rbldnsd with the DNSBL dataset)
  after one warm-up pass over the CACHE_NAMES distinct names, so every timed query is a
  cache hit. pampa (`forwarders`, 127.0.0.1 in `recursion_allowed`) against Unbound with a
  `forward-zone` to the same upstream.

Each run is one dnsperf process for LENGTH seconds; RUNS runs, median (min-max). QPS,
lost queries and average latency are dnsperf's; the server's CPU is read from /proc.
For pampa the metrics say how many `dns.query` events were dropped (the queue is bounded
by design), and after the server stops the events in the log are counted.
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from benchlib import free_udp_tcp_port as free_port
from benchlib import PampaProcess, stop_process, log, thread_cpu, version, wait_for

REPO = Path(__file__).resolve().parents[2]
PAMPA = REPO / "target/release/pampa"
DNSPERF = shutil.which("dnsperf") or "/usr/bin/dnsperf"
RBLDNSD = shutil.which("rbldnsd") or "/usr/sbin/rbldnsd"
UNBOUND = shutil.which("unbound") or "/usr/sbin/unbound"
LOCALHOST = "127.0.0.1"
BL_ZONE = "bl.bench.test"
AUTH_ZONE = "bench.test"
SEED = 20261127

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def query_rcode(port: int, name: str, qtype: int = 1) -> int | None:
    """The rcode of one UDP query, or None when nothing answers."""
    header = struct.pack(">HHHHHH", 0x5A5A, 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.sendto(header + qname + struct.pack(">HH", qtype, 1), (LOCALHOST, port))
            data = sock.recv(4096)
        except OSError:
            return None
    return data[3] & 0x0F


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ the data --


def ip_str(n: int) -> str:
    return ".".join(str((n >> s) & 255) for s in (24, 16, 8, 0))


def reversed_name(n: int, zone: str) -> str:
    return ".".join(str((n >> s) & 255) for s in (0, 8, 16, 24)) + "." + zone


def public_ip(rng: random.Random) -> int:
    while True:
        n = rng.randrange(1 << 24, 224 << 24)
        if n >> 24 not in (10, 127):
            return n


def make_dnsbl(work: Path, entries: int, queries: int) -> tuple[Path, Path, list[str]]:
    """The ip4set dataset and a query file, half listed and half unlisted names, shuffled."""
    rng = random.Random(SEED)
    singles: set[int] = set()
    nets: set[int] = set()
    n_nets = entries // 100
    while len(nets) < n_nets:
        nets.add(public_ip(rng) >> 8)
    while len(singles) < entries - n_nets:
        n = public_ip(rng)
        if n >> 8 not in nets:
            singles.add(n)
    dataset = work / "dnsbl.ip4set"
    with dataset.open("w") as f:
        f.write(f"$SOA 3600 ns1.{AUTH_ZONE}. hostmaster.{AUTH_ZONE}. 1 3600 600 86400 3600\n")
        f.write(f"$NS 3600 ns1.{AUTH_ZONE}.\n$TTL 3600\n")
        f.write(":127.0.0.2:Listed by the bench list, see https://bl.bench.test/?$\n")
        f.write("127.0.0.2\n")  # RFC 5782's test entry, the servers' readiness probe
        for n in sorted(singles):
            f.write(ip_str(n) + "\n")
        for net in sorted(nets):
            f.write(ip_str(net << 8) + "/24\n")
    os.chmod(dataset, 0o644)
    listed = sorted(singles)
    nets_list = sorted(nets)
    names = []
    for i in range(queries // 2):
        if i % 50 == 0:
            n = (rng.choice(nets_list) << 8) | rng.randrange(256)
        else:
            n = rng.choice(listed)
        names.append(reversed_name(n, BL_ZONE))
    while len(names) < queries:
        n = public_ip(rng)
        if n not in singles and n >> 8 not in nets:
            names.append(reversed_name(n, BL_ZONE))
    rng.shuffle(names)
    qfile = work / "dnsbl.queries"
    qfile.write_text("".join(f"{name} A\n" for name in names))
    return dataset, qfile, names


def make_zone(work: Path, names: int, queries: int) -> tuple[Path, Path]:
    """A master file of `names` hosts and a query file of A, AAAA and MX queries."""
    rng = random.Random(SEED + 1)
    zone = work / "bench.test.zone"
    lines = [
        "$TTL 3600",
        f"$ORIGIN {AUTH_ZONE}.",
        f"@ IN SOA ns1.{AUTH_ZONE}. hostmaster.{AUTH_ZONE}. ( 2026112701 3600 600 86400 300 )",
        "@ IN NS ns1",
        "@ IN MX 10 mx1",
        "ns1 IN A 192.0.2.53",
        "mx1 IN A 192.0.2.25",
        "mx2 IN A 192.0.2.26",
    ]
    for i in range(names):
        host = f"host{i:05d}"
        lines.append(f"{host} IN A 10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}")
        if i % 2 == 0:
            lines.append(f"{host} IN AAAA 2001:db8::{i >> 16:x}:{i & 0xFFFF:x}")
        if i % 3 == 0:
            lines.append(f"{host} IN MX 10 mx{1 + i % 2}.{AUTH_ZONE}.")
    zone.write_text("\n".join(lines) + "\n")
    os.chmod(zone, 0o644)
    out = []
    for _ in range(queries):
        r = rng.random()
        i = rng.randrange(names)
        if r < 0.1:
            out.append(f"nohost{i:05d}.{AUTH_ZONE} A")
        elif r < 0.5:
            out.append(f"host{i:05d}.{AUTH_ZONE} A")
        elif r < 0.8:
            out.append(f"host{i:05d}.{AUTH_ZONE} AAAA")
        else:
            out.append(f"host{i:05d}.{AUTH_ZONE} MX")
    qfile = work / "auth.queries"
    qfile.write_text("\n".join(out) + "\n")
    return zone, qfile


# ------------------------------------------------------------------- dnsperf --


def dnsperf(port: int, qfile: Path, cfg: dict, length: float | None = None, once: bool = False) -> dict:
    cmd = [DNSPERF, "-s", LOCALHOST, "-p", str(port), "-d", str(qfile), "-c", str(cfg["clients"]),
           "-T", str(cfg["threads"]), "-q", str(cfg["outstanding"]), "-t", "2"]
    cmd += ["-n", "1"] if once else ["-l", str(length or cfg["length"])]
    if cfg["max_qps"]:
        cmd += ["-Q", str(cfg["max_qps"])]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cp = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = cp.stdout + cp.stderr

    def grab(pattern: str, cast=float):
        m = re.search(pattern, out)
        return cast(m.group(1)) if m else None

    r = {
        "sent": grab(r"Queries sent:\s+(\d+)", int),
        "completed": grab(r"Queries completed:\s+(\d+)", int),
        "lost": grab(r"Queries lost:\s+(\d+)", int),
        "qps": grab(r"Queries per second:\s+([\d.]+)"),
        "latency_avg_s": grab(r"Average Latency \(s\):\s+([\d.]+)"),
        "latency_max_s": grab(r"Average Latency \(s\):\s+[\d.]+ \(min [\d.]+, max ([\d.]+)\)"),
        "response_size": grab(r"Average packet size:\s+request \d+, response (\d+)", int),
        "rcodes": dict((k, int(v)) for k, v in re.findall(r"([A-Z]+) (\d+) \(", grab(r"Response codes:\s+(.*)", str) or "")),
        "client_cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
    }
    if r["qps"] is None:
        raise SystemExit(f"dnsperf printed no summary (exit {cp.returncode}):\n{out[-2000:]}")
    return r


# ------------------------------------------------------------------- servers --


class Server:
    name = "server"
    proc: subprocess.Popen | None = None
    port: int

    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop_process(self.proc, 60)

    def _wait_answers(self, probe: str, qtype: int = 1) -> None:
        """Waits for an answer to `probe`, which must exist: NOERROR, not some default."""
        def up() -> bool:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            return query_rcode(self.port, probe, qtype) is not None

        wait_for(up, 120, f"{self.name} to answer")
        rcode = query_rcode(self.port, probe, qtype)
        if rcode != 0:
            raise SystemExit(f"{self.name} answers {probe} with rcode {rcode}, not NOERROR: {self.tail()}")

    def tail(self) -> str:
        return ""


class Rbldnsd(Server):
    """rbldnsd as nobody (it refuses root), chrooted in a world-readable directory."""

    def __init__(self, work: Path, dataset: Path, name: str = "rbldnsd", query_log: bool = False):
        self.name = name
        self.dir = work / name
        self.dir.mkdir()
        os.chmod(self.dir, 0o777)
        shutil.copy(dataset, self.dir / "data.ip4set")
        os.chmod(self.dir / "data.ip4set", 0o644)
        self.port = free_port()
        self.args = [RBLDNSD, "-n", "-f", "-u", "nobody", "-b", f"{LOCALHOST}/{self.port}", "-r", str(self.dir)]
        if query_log:
            self.args += ["-l", "queries.log"]
        self.args.append(f"{BL_ZONE}:ip4set:data.ip4set")

    def start(self) -> None:
        self.out = open(self.dir.parent / f"{self.name}.out", "wb")
        self.proc = subprocess.Popen(self.args, stdout=self.out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_answers(f"2.0.0.127.{BL_ZONE}")

    def tail(self) -> str:
        return (self.dir.parent / f"{self.name}.out").read_text(errors="replace")[-2000:]


class Unbound(Server):
    """Unbound from a config of its own: no daemon, no chroot, no privilege drop, no DNSSEC
    validation (module-config iterator), NUM_THREADS threads."""

    def __init__(self, work: Path, name: str, body: str, threads: int):
        self.name = name
        self.dir = work / name
        self.dir.mkdir()
        self.port = free_port()
        self.conf = self.dir / "unbound.conf"
        self.conf.write_text(
            "server:\n"
            f"  interface: {LOCALHOST}\n  port: {self.port}\n"
            "  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n"
            f"  directory: \"{self.dir}\"\n  pidfile: \"\"\n"
            "  use-syslog: no\n  logfile: \"\"\n  verbosity: 0\n  log-queries: no\n"
            f"  num-threads: {threads}\n"
            "  do-ip6: no\n  access-control: 127.0.0.0/8 allow\n"
            "  module-config: \"iterator\"\n  do-not-query-localhost: no\n"
            "  qname-minimisation: no\n"
            # test. is one of Unbound's default local zones (RFC 6761): it would answer
            # NXDOMAIN for every bench name without looking at the auth-zone or upstream.
            "  local-zone: \"test.\" nodefault\n"
            "  msg-cache-size: 64m\n  rrset-cache-size: 128m\n"
            + body
            + "remote-control:\n  control-enable: no\n"
        )

    def start(self, probe: str) -> None:
        cp = subprocess.run(["unbound-checkconf", str(self.conf)], capture_output=True, text=True)
        if cp.returncode != 0:
            raise SystemExit(f"unbound-checkconf: {cp.stdout}{cp.stderr}")
        self.out = open(self.dir / "unbound.out", "wb")
        self.proc = subprocess.Popen([UNBOUND, "-d", "-c", str(self.conf)],
                                     stdout=self.out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_answers(probe)

    def tail(self) -> str:
        return (self.dir / "unbound.out").read_text(errors="replace")[-2000:]


class Pampa(PampaProcess, Server):
    def __init__(self, work: Path, name: str, dns_toml: str, query_log: bool = True):
        self.make_dir(work, name)
        self.config.write_text(
            f'data_dir = "{self.dir / "data"}"\n'
            f'[smtp]\nlisten = "{LOCALHOST}:{free_port()}"\n'
            f'[metrics]\nlisten = "{LOCALHOST}:{self.metrics_port}"\n'
            f'[dns]\nlisten = "{LOCALHOST}:{self.port}"\n'
            + ("" if query_log else "query_log = false\n")
            + dns_toml
        )

    def start(self, probe: str, qtype: int = 1) -> None:
        self.start_role(PAMPA, "dns", 180)
        self._wait_answers(probe, qtype)

    def events_stored(self) -> int:
        """Queries stored in the embedded log's `dns.query` events (each event holds a batch;
        read after the server stopped), as `pampa dns top` counts them."""
        if not (self.dir / "data" / "log" / "events.db").exists():
            return 0
        cp = subprocess.run([str(PAMPA), "--config", str(self.config), "dns", "top", "--since", "36500d",
                             "--json"], capture_output=True, text=True, timeout=600)
        if cp.returncode != 0:
            raise SystemExit(f"pampa dns top failed:\n{cp.stdout}{cp.stderr}")
        return int(json.loads(cp.stdout)["queries"])


# ------------------------------------------------------------------ measuring --


def dropped(server: Server) -> int:
    """`dns.query` events pampa dropped so far (0 for the peers)."""
    if not isinstance(server, Pampa):
        return 0
    return int(server.metric("pampa_dns_query_log_dropped_total"))


def wait_idle(servers: list[Server], timeout: float = 60.0) -> None:
    """Waits until no server burns CPU: pampa keeps writing its queued `dns.query` events
    after a run, which would otherwise be counted in the next run (of any server)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = sum(proc_cpu(s.pid()) for s in servers)
        time.sleep(0.5)
        if sum(proc_cpu(s.pid()) for s in servers) - before < 0.03:
            return
    log(f"servers still busy after {timeout:g} s; measuring anyway")


def one_run(server: Server, qfile: Path, cfg: dict, scenario: str, label: str, max_qps: int = 0,
            idle: list[Server] | None = None) -> dict:
    wait_idle(idle or [server])
    pid = server.pid()
    cpu, drops = proc_cpu(pid), dropped(server)
    r = dnsperf(server.port, qfile, {**cfg, "max_qps": max_qps or cfg["max_qps"]})
    r["server_cpu"] = proc_cpu(pid) - cpu
    r["log_dropped"] = dropped(server) - drops
    log(f"{scenario}/{server.name}: {label}: {r['qps']:,.0f} qps, {r['lost']} lost, "
        f"avg latency {1e3 * r['latency_avg_s']:.3f} ms, server CPU {r['server_cpu']:.2f} s, "
        f"dnsperf CPU {r['client_cpu']:.2f} s, {r['rcodes']}"
        + (f", dns.query dropped {r['log_dropped']}" if isinstance(server, Pampa) else ""))
    return r


def bench(servers: list[Server], qfile: Path, cfg: dict, scenario: str, results: list,
          warm: bool = False) -> list[dict]:
    """RUNS rounds, each server once per round (so a change of load on the machine hits
    all of them alike), then one run of each at FIXED_QPS."""
    for server in servers:
        if warm:
            w = dnsperf(server.port, qfile, cfg, once=True)
            log(f"{scenario}/{server.name}: warm-up pass, {w['completed']} answered, {w['lost']} lost, {w['rcodes']}")
    runs: dict[str, list[dict]] = {s.name: [] for s in servers}
    before = {s.name: thread_cpu(s.pid()) for s in servers}
    for i in range(cfg["runs"]):
        for server in servers:
            runs[server.name].append(one_run(server, qfile, cfg, scenario, f"run {i + 1}", idle=servers))
    after = {s.name: thread_cpu(s.pid()) for s in servers}
    fixed = {}
    if cfg["fixed_qps"]:
        for server in servers:
            fixed[server.name] = one_run(server, qfile, cfg, scenario, f"at {cfg['fixed_qps']} qps",
                                         cfg["fixed_qps"], idle=servers)
    rows = []
    for server in servers:
        rs = runs[server.name]
        qps = [r["qps"] for r in rs]
        completed = statistics.median(r["completed"] for r in rs)
        cpu = statistics.median(r["server_cpu"] for r in rs)
        row = {
            "scenario": scenario,
            "server": server.name,
            "runs": len(rs),
            "qps_median": round(statistics.median(qps)),
            "qps_min": round(min(qps)),
            "qps_max": round(max(qps)),
            "qps": [round(q) for q in qps],
            "sent": sum(r["sent"] for r in rs),
            "completed": sum(r["completed"] for r in rs),
            "lost": sum(r["lost"] for r in rs),
            "latency_avg_ms": round(1e3 * statistics.median(r["latency_avg_s"] for r in rs), 3),
            "response_size": rs[0]["response_size"],
            "rcodes": rs[-1]["rcodes"],
            "server_cpu_us_per_query": round(1e6 * cpu / completed, 2),
            "server_cpu_cores": round(cpu / cfg["length"], 2),
            "dnsperf_cpu_cores": round(statistics.median(r["client_cpu"] for r in rs) / cfg["length"], 2),
            "server_threads_cpu_s": {k: round(v - before[server.name].get(k, 0.0), 2)
                                     for k, v in sorted(after[server.name].items())
                                     if v - before[server.name].get(k, 0.0) >= 0.05},
        }
        if isinstance(server, Pampa):
            row["query_log_dropped_in_runs"] = sum(r["log_dropped"] for r in rs)
        f = fixed.get(server.name)
        if f:
            row["fixed"] = {
                "max_qps": cfg["fixed_qps"],
                "qps": round(f["qps"]),
                "lost": f["lost"],
                "latency_avg_ms": round(1e3 * f["latency_avg_s"], 3),
                "server_cpu_cores": round(f["server_cpu"] / cfg["length"], 2),
                "server_cpu_us_per_query": round(1e6 * f["server_cpu"] / max(1, f["completed"]), 1),
            }
            if isinstance(server, Pampa):
                row["fixed"]["query_log_dropped"] = f["log_dropped"]
        results.append(row)
        rows.append(row)
    return rows


def pampa_stop_and_count(p: Pampa, row: dict) -> None:
    """Stops pampa (which flushes the query log), then counts what the log holds."""
    row["pampa_queries_total"] = int(p.metric("pampa_dns_queries_total"))
    row["query_log_dropped"] = {
        reason: int(p.metric("pampa_dns_query_log_dropped_total", reason=reason))
        for reason in ("queue_full", "publish_failed")
    }
    p.stop()
    row["events_stored"] = p.events_stored()
    log(f"{row['scenario']}/{p.name}: {row['pampa_queries_total']} queries answered (warm-up and probes "
        f"included), {row['events_stored']} queries stored in dns.query events, dropped {row['query_log_dropped']}")


def run_scenario(servers: list[Server], qfile: Path, cfg: dict, scenario: str, results: list,
                 warm: bool = False) -> None:
    try:
        rows = bench(servers, qfile, cfg, scenario, results, warm)
        for server, row in zip(servers, rows):
            if isinstance(server, Pampa):
                if "cache" == scenario:
                    row["cache_hits"] = int(server.metric("pampa_dns_cache_total", result="hit"))
                    row["cache_misses"] = int(server.metric("pampa_dns_cache_total", result="miss"))
                pampa_stop_and_count(server, row)
    finally:
        for server in servers:
            server.stop()


def main() -> None:
    cfg = {
        "entries": int(os.environ.get("ENTRIES", "500000")),
        "dnsbl_queries": int(os.environ.get("DNSBL_QUERIES", "200000")),
        "names": int(os.environ.get("NAMES", "5000")),
        "auth_queries": int(os.environ.get("AUTH_QUERIES", "100000")),
        "cache_names": int(os.environ.get("CACHE_NAMES", "20000")),
        "clients": int(os.environ.get("CLIENTS", "4")),
        "threads": int(os.environ.get("THREADS", "1")),
        "outstanding": int(os.environ.get("OUTSTANDING", "100")),
        "length": float(os.environ.get("LENGTH", "10")),
        "max_qps": int(os.environ.get("MAX_QPS", "0")),
        "runs": int(os.environ.get("RUNS", "3")),
        "fixed_qps": int(os.environ.get("FIXED_QPS", "10000")),
        "unbound_threads": int(os.environ.get("UNBOUND_THREADS", str(os.cpu_count() or 1))),
        "scenarios": [s for s in os.environ.get("SCENARIOS", "dnsbl,auth,cache").split(",") if s],
        "extra_rows": os.environ.get("EXTRA", "1") != "0",
    }
    load_at_start = os.getloadavg()
    versions = {
        "pampa": version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "rbldnsd": version(["dpkg-query", "-W", "-f", "${Version}", "rbldnsd"]),
        "unbound": version(["dpkg-query", "-W", "-f", "${Version}", "unbound"]),
        "dnsperf": version(["dpkg-query", "-W", "-f", "${Version}", "dnsperf"]),
    }
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="pampa-dns-bench-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        dataset, bl_queries, bl_names = make_dnsbl(work, cfg["entries"], cfg["dnsbl_queries"])
        log(f"dataset: {cfg['entries']} ip4set entries, {cfg['dnsbl_queries']} queries")
        dnsbl_toml = f'[[dns.dnsbl]]\nname = "{BL_ZONE}"\nfile = "{dataset}"\nformat = "ip4set"\n'
        probe_bl = f"2.0.0.127.{BL_ZONE}"

        if "dnsbl" in cfg["scenarios"]:
            servers: list[Server] = []
            try:
                p = Pampa(work, "pampa-dnsbl", dnsbl_toml)
                p.name = "pampa"
                servers.append(p)
                p.start(probe_bl)
                r = Rbldnsd(work, dataset)
                servers.append(r)
                r.start()
                if cfg["extra_rows"]:
                    p = Pampa(work, "pampa-dnsbl-nolog", dnsbl_toml, query_log=False)
                    p.name = "pampa, query_log = false"
                    servers.append(p)
                    p.start(probe_bl)
                    r = Rbldnsd(work, dataset, name="rbldnsd-l", query_log=True)
                    servers.append(r)
                    r.start()
                    r.name = "rbldnsd -l (query log)"
            except BaseException:
                for s in servers:
                    s.stop()
                raise
            run_scenario(servers, bl_queries, cfg, "dnsbl", results)

        if "auth" in cfg["scenarios"]:
            zone, auth_queries = make_zone(work, cfg["names"], cfg["auth_queries"])
            probe = f"host00000.{AUTH_ZONE}"
            p = Pampa(work, "pampa-auth", f'[[dns.zones]]\nname = "{AUTH_ZONE}"\nfile = "{zone}"\n')
            p.name = "pampa"
            u = Unbound(work, "unbound-auth",
                        f"auth-zone:\n  name: \"{AUTH_ZONE}.\"\n  zonefile: \"{zone}\"\n"
                        "  for-downstream: yes\n  for-upstream: no\n  fallback-enabled: no\n",
                        cfg["unbound_threads"])
            try:
                p.start(probe)
                u.start(probe)
            except BaseException:
                p.stop()
                u.stop()
                raise
            u.name = f"unbound auth-zone ({cfg['unbound_threads']} threads)"
            run_scenario([p, u], auth_queries, cfg, "auth", results)

        if "cache" in cfg["scenarios"]:
            rng = random.Random(SEED + 2)
            names = rng.sample(bl_names, min(cfg["cache_names"], len(bl_names)))
            cache_queries = work / "cache.queries"
            cache_queries.write_text("".join(f"{n} A\n" for n in names))
            upstream = Rbldnsd(work, dataset, name="rbldnsd-upstream")
            upstream.start()
            try:
                p = Pampa(work, "pampa-cache", f'recursion_allowed = ["127.0.0.0/8"]\n'
                                               f'forwarders = ["{LOCALHOST}:{upstream.port}"]\n')
                p.name = "pampa"
                u = Unbound(work, "unbound-cache",
                            f"forward-zone:\n  name: \".\"\n  forward-addr: {LOCALHOST}@{upstream.port}\n",
                            cfg["unbound_threads"])
                try:
                    p.start(probe_bl)
                    u.start(probe_bl)
                except BaseException:
                    p.stop()
                    u.stop()
                    raise
                u.name = f"unbound forward-zone ({cfg['unbound_threads']} threads)"
                run_scenario([p, u], cache_queries, cfg, "cache", results, warm=True)
            finally:
                upstream.stop()

    peers = {"dnsbl": "rbldnsd", "auth": "unbound", "cache": "unbound"}
    print(f"\nDNS, dnsperf -c {cfg['clients']} -T {cfg['threads']} -q {cfg['outstanding']} -l {cfg['length']:g}"
          f"{' -Q ' + str(cfg['max_qps']) if cfg['max_qps'] else ''}, median of {cfg['runs']} runs (min-max); "
          f"load average at start {load_at_start[0]:.2f}\n")
    print(f"{'scenario':<8} {'server':<34} {'QPS':>24} {'lost':>5} {'avg ms':>7} {'srv us/q':>8} "
          f"{'srv cores':>9} {'perf cores':>10} {'vs peer':>8}")
    for r in results:
        peer = next((x for x in results if x["scenario"] == r["scenario"]
                     and x["server"].startswith(peers[r["scenario"]]) and "-l" not in x["server"]), None)
        ratio = r["qps_median"] / peer["qps_median"] if peer else 0
        r["ratio_vs_peer"] = round(ratio, 3)
        spread = f"{r['qps_median']:,} ({r['qps_min']:,}-{r['qps_max']:,})"
        print(f"{r['scenario']:<8} {r['server']:<34} {spread:>24} {r['lost']:>5} {r['latency_avg_ms']:>7.3f} "
              f"{r['server_cpu_us_per_query']:>8.2f} {r['server_cpu_cores']:>9.2f} {r['dnsperf_cpu_cores']:>10.2f} "
              f"{ratio:>7.2f}x")
    if cfg["fixed_qps"]:
        print(f"\nat a fixed rate, dnsperf -Q {cfg['fixed_qps']} (one run each): the CPU a query costs when "
              "the server is not saturated\n")
        print(f"{'scenario':<8} {'server':<34} {'QPS':>8} {'lost':>5} {'avg ms':>7} {'srv cores':>9} "
              f"{'srv us/q':>8} {'log dropped':>11}")
        for r in results:
            f = r.get("fixed")
            if f:
                print(f"{r['scenario']:<8} {r['server']:<34} {f['qps']:>8,} {f['lost']:>5} {f['latency_avg_ms']:>7.3f} "
                      f"{f['server_cpu_cores']:>9.2f} {f['server_cpu_us_per_query']:>8.1f} "
                      f"{f.get('query_log_dropped', ''):>11}")
    print("\npampa query log (dns.query events), over all runs of the scenario:")
    for r in results:
        if "query_log_dropped" in r:
            print(f"  {r['scenario']:<6} {r['server']:<28} answered {r['pampa_queries_total']:>9,}  stored "
                  f"{r['events_stored']:>9,}  dropped {sum(r['query_log_dropped'].values()):>9,} "
                  f"{r['query_log_dropped']}")
    goals = {}
    dnsbl = {r["server"]: r for r in results if r["scenario"] == "dnsbl"}
    if "pampa" in dnsbl and "rbldnsd" in dnsbl:
        goals["dnsbl_at_least_rbldnsd_with_logging"] = dnsbl["pampa"]["qps_median"] >= dnsbl["rbldnsd"]["qps_median"]
        print(f"\ngoal (issue 7): DNSBL QPS with logging on >= rbldnsd: "
              f"{'met' if goals['dnsbl_at_least_rbldnsd_with_logging'] else 'NOT met'} "
              f"({dnsbl['pampa']['ratio_vs_peer']:.2f}x)")
    out = REPO / "ops/bench/results/dns.json"
    out.write_text(json.dumps({"config": cfg, "versions": versions, "cpus": os.cpu_count(),
                               "load_at_start": load_at_start, "load_at_end": os.getloadavg(),
                               "results": results, "goals": goals}, indent=2) + "\n")
    print(f"\nwritten to {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
