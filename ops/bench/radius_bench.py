"""RADIUS requests per second: pampa against FreeRADIUS (Debian's package), side by side.

Both servers run on loopback with the same NAS secret, the same N users and the same
load generator, with the same requests and the same window of P requests in flight:
`radius_load` (the cargo example `ops/bench/radius_load.rs`: requests prepared before
the clock starts, replies matched by socket and identifier in O(1), one thread), or
with LOADGEN=radclient `radclient -p P/CLIENTS -f FILE` from freeradius-utils over
request files of CHUNK requests (radclient walks its whole request list after every
reply and spins while it waits, so on 2 cores it caps the measurable rate near 20k/s).

- PAP auth: Access-Requests with Message-Authenticator for N distinct users (each user
  several times per run). One warm-up pass logs every user in once first; for pampa that
  pass is the argon2 path (first login of each user) and is reported on its own row, the
  timed runs after it hit pampa's cache of successful checks. FreeRADIUS compares
  `Cleartext-Password` from its `users` file, as its users typically have it.
- Accounting: Start, Interim-Update and Stop records of distinct sessions (fresh session
  ids every run, so no record is a retransmission). FreeRADIUS writes them to its
  `detail` file (Debian's default `accounting` section); pampa answers each one only
  after its `access.acct` event is durable in the event log. After the runs the events
  are counted in the log and must equal the records sent.

Each run is timed by radius_load from its first send to its last answer (with
radclient: the wall time of the radclient processes); RUNS runs, median (min-max).
FreeRADIUS runs from a throwaway copy of /etc/freeradius/3.0 (Debian's defaults, its
thread pool included), edited only for: ports and loopback, the client, the users,
log and accounting paths in the work dir, no privilege drop, no EAP (the package ships
no certificates) and no inner-tunnel listener.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchlib import PampaProcess, stop_process, free_port, log, start_nats, version, wait_for
from benchlib import free_udp_tcp_port as free_udp_port

REPO = Path(__file__).resolve().parents[2]
PAMPA = REPO / "target/release/pampa"
RADCLIENT = shutil.which("radclient") or "/usr/bin/radclient"
RADIUS_LOAD = REPO / "target/release/examples/radius_load"
FREERADIUS = shutil.which("freeradius") or "/usr/sbin/freeradius"
RADDB = Path("/etc/freeradius/3.0")
LOCALHOST = "127.0.0.1"
SECRET = "bench-secret-1234"
DOMAIN = "example.org"
GOAL_AUTH = 1.5
GOAL_ACCT = 1.0

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# The users, as radius_load builds them (`user{i}@DOMAIN`, `--password PASSWORD`).
PASSWORD = "pw-{i}-x"


def user(i: int) -> tuple[str, str]:
    return f"user{i}@{DOMAIN}", PASSWORD.replace("{i}", str(i))


# ------------------------------------------------------------ request files --


def auth_file(path: Path, users: int, requests: int, first: int = 0) -> None:
    with path.open("w") as f:
        for k in range(first, first + requests):
            name, password = user(k % users)
            f.write(f'User-Name = "{name}"\nUser-Password = "{password}"\n'
                    f"NAS-IP-Address = 127.0.0.1\nNAS-Port = {k % 4096}\n"
                    "Message-Authenticator = 0x00\n\n")


def auth_files(work: Path, tag: str, users: int, requests: int, chunk: int) -> list[Path]:
    """`requests` Access-Requests cycling over the users, in files of `chunk` requests."""
    out = []
    for first in range(0, requests, chunk):
        path = work / f"auth-{tag}-{first // chunk:04d}.txt"
        auth_file(path, users, min(chunk, requests - first), first)
        out.append(path)
    return out


def acct_file(path: Path, users: int, sessions: range, tag: str) -> int:
    """Start, then Interim-Update, then Stop of the sessions (in three phases, so the
    records of one session are never in flight at once). Returns the number of records."""
    n = 0
    with path.open("w") as f:
        for status in ("Start", "Interim-Update", "Stop"):
            for s in sessions:
                name, _ = user(s % users)
                ip = s + 1
                lines = [
                    f"Acct-Status-Type = {status}",
                    f'Acct-Session-Id = "{tag}-{s:07d}"',
                    f'User-Name = "{name}"',
                    "NAS-IP-Address = 127.0.0.1",
                    f"NAS-Port = {s % 4096}",
                    f"Framed-IP-Address = 10.{(ip >> 16) & 255}.{(ip >> 8) & 255}.{ip & 255}",
                    "Acct-Delay-Time = 0",
                ]
                if status != "Start":
                    t = 60 if status == "Interim-Update" else 120
                    lines += [f"Acct-Session-Time = {t}", f"Acct-Input-Octets = {1000 * t + s}",
                              f"Acct-Output-Octets = {5000 * t + s}"]
                if status == "Stop":
                    lines.append("Acct-Terminate-Cause = User-Request")
                f.write("\n".join(lines) + "\n\n")
                n += 1
    return n


def acct_files(work: Path, tag: str, users: int, sessions: int, chunk: int) -> list[Path]:
    """Files of about `chunk` records, each holding whole sessions (fresh ids per tag)."""
    per = max(1, chunk // 3)
    out = []
    for first in range(0, sessions, per):
        path = work / f"acct-{tag}-{first // per:04d}.txt"
        acct_file(path, users, range(first, min(first + per, sessions)), tag)
        out.append(path)
    return out


# ----------------------------------------------------------------- radclient --


def radclient(port: int, kind: str, path: Path, parallel: int, timeout: float = 5.0) -> dict:
    """One radclient process over one file: answers and losses from its summary."""
    cp = subprocess.run(
        [RADCLIENT, "-q", "-s", "-p", str(parallel), "-t", str(timeout), "-r", "1", "-f", str(path),
         f"{LOCALHOST}:{port}", kind, SECRET],
        capture_output=True, text=True, timeout=600,
    )
    out = cp.stdout + cp.stderr
    summary = {}
    for key, label in (("accepted", "Accepted"), ("rejected", "Rejected"), ("lost", "Lost")):
        m = re.search(rf"{label}\s*:\s*(\d+)", out)
        summary[key] = int(m.group(1)) if m else None
    if summary["accepted"] is None:
        raise SystemExit(f"radclient printed no summary (exit {cp.returncode}):\n{out[-2000:]}")
    return summary


def load(port: int, kind: str, paths: list[Path], parallel: int, clients: int, timeout: float = 5.0) -> dict:
    """Sends the files with `clients` radclient processes at once (each `-p parallel /
    clients`, one file after the other), and returns the totals, the wall time and the
    CPU the radclients used.

    radclient walks its whole request list after every reply, so its CPU per request
    grows with the file (about 50 us at 2,000 requests, 200 us at 20,000): the load is
    cut into files of CHUNK requests so the generator stays cheap and linear."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    each = max(1, parallel // clients)
    with ThreadPoolExecutor(max_workers=clients) as pool:
        parts = list(pool.map(lambda p: radclient(port, kind, p, each, timeout), paths))
    elapsed = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = {k: sum(p[k] or 0 for p in parts) for k in ("accepted", "rejected", "lost")}
    total["seconds"] = elapsed
    total["client_cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return total


# ---------------------------------------------------------------- radius_load --


def radius_load(port: int, job: dict, cfg: dict, timeout: float = 5.0) -> dict:
    """One radius_load process: `job` is {"kind": "auth", "requests", "first"} or
    {"kind": "acct", "sessions", "tag"}. Its own clock (first send to last answer) and its
    own CPU over that span are used, so building the requests is not counted."""
    args = [str(RADIUS_LOAD), job["kind"], f"{LOCALHOST}:{port}", SECRET,
            "--users", str(cfg["users"]), "--domain", DOMAIN, "--password", PASSWORD,
            "--window", str(cfg["parallel"]), "--timeout", str(timeout), "--retries", "2"]
    if cfg["sockets"]:
        args += ["--sockets", str(cfg["sockets"])]
    if job["kind"] == "auth":
        args += ["--requests", str(job["requests"]), "--first", str(job.get("first", 0))]
    else:
        args += ["--sessions", str(job["sessions"]), "--tag", job["tag"]]
    cp = subprocess.run(args, capture_output=True, text=True, timeout=900)
    if cp.returncode != 0:
        raise SystemExit(f"radius_load failed (exit {cp.returncode}):\n{cp.stderr[-2000:]}")
    r = json.loads(cp.stdout)
    return {"accepted": r["responses"] - r["rejects"], "rejected": r["rejects"], "lost": r["lost"],
            "retransmits": r["retransmits"], "seconds": r["seconds"], "client_cpu": r["cpu_seconds"]}


def send(port: int, job, cfg: dict, timeout: float = 5.0) -> dict:
    """Sends one job with the configured load generator."""
    if cfg["loadgen"] == "radclient":
        return load(port, job["kind"], job["files"], cfg["parallel"], cfg["clients"], timeout)
    return radius_load(port, job, cfg, timeout)


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def context_switches(pid: int) -> int:
    """Voluntary and involuntary context switches of all the process's threads so far
    (threads that already exited are not counted)."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            for line in status.read_text().splitlines():
                if line.endswith("ctxt_switches:") or "ctxt_switches:" in line:
                    total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


# ---------------------------------------------------------------- FreeRADIUS --


class FreeRadius:
    def __init__(self, work: Path, users: int):
        self.dir = work / "raddb"
        self.logdir = work / "freeradius-log"
        self.auth_port = free_udp_port()
        self.acct_port = free_udp_port()
        self.proc: subprocess.Popen | None = None
        self._configure(users)

    def _configure(self, users: int) -> None:
        d = self.dir
        shutil.copytree(RADDB, d, symlinks=True)
        self.logdir.mkdir()
        (self.logdir / "radacct").mkdir()
        (d / "run").mkdir()
        # No TLS certificates ship with the package, so EAP (and its inner tunnel) cannot
        # load; neither is on the PAP or accounting path.
        for link in ("sites-enabled/inner-tunnel", "mods-enabled/eap"):
            (d / link).unlink()
        conf = (d / "radiusd.conf").read_text()
        conf = re.sub(r"^logdir = .*$", f"logdir = {self.logdir}", conf, flags=re.M)
        conf = re.sub(r"^raddbdir = .*$", f"raddbdir = {d}", conf, flags=re.M)
        conf = re.sub(r"^run_dir = .*$", f"run_dir = {d / 'run'}", conf, flags=re.M)
        conf = re.sub(r"^(\s*)(user|group) = freerad", r"\1# \2 = freerad", conf, flags=re.M)
        (d / "radiusd.conf").write_text(conf)

        site = d / "sites-available/default"
        text = site.read_text()
        out, block = [], None
        for line in text.splitlines(keepends=True):
            if block is None:
                if re.match(r"\s*listen\s*\{", line):
                    block, depth = [line], 1
                else:
                    out.append(line)
                continue
            block.append(line)
            code = line.split("#", 1)[0]
            depth += code.count("{") - code.count("}")
            if depth == 0:
                body = "".join(block)
                block = None
                if re.search(r"(?m)^\s*ipv6addr\s*=", body):
                    continue
                kind = re.search(r"(?m)^\s*type = (\w+)", body).group(1)
                port = self.auth_port if kind == "auth" else self.acct_port
                body = re.sub(r"(?m)^(\s*)ipaddr = \*", rf"\1ipaddr = {LOCALHOST}", body)
                body = re.sub(r"(?m)^(\s*)port = 0", rf"\1port = {port}", body)
                out.append(body)
        text = "".join(out)
        text = re.sub(r"(?m)^\s*eap \{[^}]*\}\n", "", text)
        text = re.sub(r"(?m)^(\s*)eap\s*$", r"\1-eap", text)
        site.unlink()  # sites-enabled/default links to it; write a file, not through a link
        site.write_text(text)

        (d / "clients.conf").write_text(
            "client bench {\n"
            f"\tipaddr = {LOCALHOST}\n"
            f"\tsecret = {SECRET}\n"
            "\trequire_message_authenticator = yes\n"
            "\tnas_type = other\n"
            "}\n"
        )
        authorize = d / "mods-config/files/authorize"
        authorize.unlink()
        with authorize.open("w") as f:
            for i in range(users):
                name, password = user(i)
                f.write(f'"{name}"\tCleartext-Password := "{password}"\n')
        # radacctdir is ${logdir}/radacct, so the detail files land in the work dir.

    def start(self) -> None:
        self.stderr = open(self.logdir / "stderr.log", "wb")
        self.proc = subprocess.Popen(
            [FREERADIUS, "-f", "-d", str(self.dir)],
            stdout=self.stderr, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )

        def answers() -> bool:
            if self.proc.poll() is not None:
                logs = [(self.logdir / f) for f in ("stderr.log", "radius.log")]
                text = "".join(p.read_text(errors="replace")[-3000:] for p in logs if p.exists())
                raise SystemExit(f"freeradius exited with {self.proc.returncode}:\n{text}")
            name, password = user(0)
            cp = subprocess.run(
                [RADCLIENT, "-q", "-t", "1", "-r", "1", f"{LOCALHOST}:{self.auth_port}", "auth", SECRET],
                input=f'User-Name = "{name}"\nUser-Password = "{password}"\nMessage-Authenticator = 0x00\n',
                capture_output=True, text=True,
            )
            return cp.returncode == 0

        wait_for(answers, 60, "freeradius to answer")

    def records(self) -> int:
        """Accounting records in the detail files."""
        n = 0
        for f in (self.logdir / "radacct").rglob("detail-*"):
            n += sum(1 for line in f.open(errors="replace") if line.lstrip().startswith("Acct-Status-Type"))
        return n

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------- pampa --


class Pampa(PampaProcess):
    def __init__(self, work: Path, name: str, db_url: str, bus_url: str | None):
        self.dir = work / name
        self.dir.mkdir(exist_ok=True)
        self.config = self.dir / "pampa.toml"
        self.auth_port = free_udp_port()
        self.acct_port = free_udp_port()
        self.metrics_port = free_port()
        bus = f'[bus]\nurl = "{bus_url}"\n' if bus_url else ""
        self.config.write_text(
            f'data_dir = "{self.dir / "data"}"\n'
            f"{bus}"
            f'[db]\nurl = "{db_url}"\n'
            f'[smtp]\nlisten = "{LOCALHOST}:{free_port()}"\n'
            f'[metrics]\nlisten = "{LOCALHOST}:{self.metrics_port}"\n'
            f'[radius]\nauth_listen = "{LOCALHOST}:{self.auth_port}"\n'
            f'acct_listen = "{LOCALHOST}:{self.acct_port}"\n'
            f'default_realm = "{DOMAIN}"\n'
        )
        self.proc: subprocess.Popen | None = None

    def cli(self, *args: str) -> str:
        return super().cli(PAMPA, *args)

    def start(self) -> None:
        self.start_role(PAMPA, "radius", 60)

    def stop(self) -> None:
        stop_process(self.proc, 30)


# ------------------------------------------------------------------ measuring --


def summarize(name: str, kind: str, runs: list[dict], requests: int) -> dict:
    rates = [requests / r["seconds"] for r in runs]
    cpu = statistics.median(r["server_cpu"] for r in runs)
    return {
        "server": name,
        "kind": kind,
        "requests_per_run": requests,
        "runs": len(runs),
        "per_second_median": round(statistics.median(rates)),
        "per_second_min": round(min(rates)),
        "per_second_max": round(max(rates)),
        "seconds": [round(r["seconds"], 3) for r in runs],
        "answered": sum(r["accepted"] + r["rejected"] for r in runs),
        "rejected": sum(r["rejected"] for r in runs),
        "lost": sum(r["lost"] for r in runs),
        "retransmits": sum(r.get("retransmits", 0) for r in runs),
        "server_cpu_us_per_request": round(1e6 * cpu / requests, 1),
        "server_cpu_after_us_per_request": round(
            1e6 * statistics.median(r["server_cpu_after"] for r in runs) / requests, 1),
        "server_context_switches_per_request": round(
            statistics.median(r["server_switches"] for r in runs) / requests, 2),
        "loadgen_cpu_us_per_request": round(1e6 * statistics.median(r["client_cpu"] for r in runs) / requests, 1),
    }


def settle(pid: int, timeout: float = 60.0) -> None:
    """Waits until the server is idle (under 2% of a core over half a second): pampa
    publishes `access.auth` audit events after the replies, so an accounting run right
    after the auth runs would otherwise share the log's writer with that backlog."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = proc_cpu(pid)
        time.sleep(0.5)
        if proc_cpu(pid) - before < 0.01:
            return
    log(f"the server (pid {pid}) was still busy after {timeout:g} s; measuring anyway")


def timed(server_pid: int, fn) -> dict:
    settle(server_pid)
    cpu, switches = proc_cpu(server_pid), context_switches(server_pid)
    r = fn()
    end = proc_cpu(server_pid)
    r["server_cpu"] = end - cpu
    r["server_switches"] = context_switches(server_pid) - switches
    # What the server still does after the last answer (pampa's audit events queued
    # during the run): measured here, so the next run starts on an idle server.
    settle(server_pid)
    r["server_cpu_after"] = proc_cpu(server_pid) - end
    return r


def bench_servers(servers: list[dict], cfg: dict, results: list) -> None:
    """A warm-up pass (every user once) of each server, then RUNS rounds of auth runs and
    RUNS rounds of accounting runs, each round running every server once in turn: a
    machine that slows down for a while slows every server alike, instead of whichever
    one ran then. A server is a dict of name, pid, auth_port, acct_port, jobs and
    first_login_row."""
    for s in servers:
        warm = timed(s["pid"], lambda: send(s["auth_port"], s["jobs"]["warm"], cfg, timeout=30))
        log(f"{s['name']}: first login of {cfg['users']} users: {warm['seconds']:.2f} s, "
            f"{warm['accepted']} accepted, {warm['rejected']} rejected, {warm['lost']} lost")
        if s["first_login_row"]:
            results.append(summarize(s["name"], "auth_first_login", [warm], cfg["users"]))
    for kind, n in (("auth", cfg["auth"]), ("acct", cfg["acct"])):
        runs: dict[str, list] = {s["name"]: [] for s in servers}
        for i in range(cfg["runs"]):
            for s in servers:
                job = s["jobs"]["auth"] if kind == "auth" else s["jobs"]["acct"][i]
                port = s["auth_port"] if kind == "auth" else s["acct_port"]
                r = timed(s["pid"], lambda: send(port, job, cfg))
                log(f"{s['name']}: {kind} run {i + 1}: {n / r['seconds']:,.0f}/s ({r['accepted']} answered, "
                    f"{r['rejected']} rejected, {r['lost']} lost, {r.get('retransmits', 0)} retransmitted; "
                    f"server CPU {r['server_cpu']:.2f} s, {cfg['loadgen']} CPU {r['client_cpu']:.2f} s)")
                runs[s["name"]].append(r)
        for s in servers:
            results.append(summarize(s["name"], kind, runs[s["name"]], n))


def add_users(pampa: Pampa, users: int) -> None:
    pampa.cli("domain", "add", DOMAIN)
    pampa.cli("nas", "add", f"{LOCALHOST}/32", "--secret", SECRET)
    start = time.monotonic()
    # One CLI process per user, as an operator would (each hashes with argon2); one at a
    # time per core.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(lambda i: pampa.cli("user", "add", user(i)[0], "--password", user(i)[1]), range(users)))
    log(f"pampa: added {users} users in {time.monotonic() - start:.1f} s")


def count_acct_events(pampa: Pampa, expected: int) -> int:
    out = pampa.cli("events", "access.acct", "--json", "--limit", str(expected + 1000))
    return len(json.loads(out))


GUARANTEE = {
    "freeradius": "answered once the record is written to the detail file (write(2), no fsync): "
                  "survives a crash of radiusd, not a power loss",
    "pampa-embedded": "answered once the SQLite transaction holding the event is committed and an "
                      "fdatasync of the WAL begun after that commit returned: survives a power loss",
    "pampa-js-always": "answered once JetStream acks the publish; nats-server with sync_interval: always "
                       "fsyncs before the ack: survives a power loss",
    "pampa-js-default": "answered once JetStream acks the publish; nats-server's default sync_interval "
                        "acks once written and fsyncs every 2 minutes: survives a crash of nats-server, "
                        "not a power loss (R3 clustering is the usual answer)",
}


POWER_LOSS_DURABLE = {"pampa-embedded", "pampa-js-always"}


def main() -> None:
    cfg = {
        "users": int(os.environ.get("USERS", "1000")),
        "auth": int(os.environ.get("AUTH", "50000")),
        "sessions": int(os.environ.get("SESSIONS", "8000")),
        "parallel": int(os.environ.get("P", "64")),
        # radius_load (default) or radclient.
        "loadgen": os.environ.get("LOADGEN", "radius_load"),
        # radius_load: UDP sockets sharing the window (0: one per 128 in flight).
        "sockets": int(os.environ.get("SOCKETS", "0")),
        # radclient only: processes sharing the window, and requests per file.
        "clients": int(os.environ.get("CLIENTS", "2")),
        "chunk": int(os.environ.get("CHUNK", "2000")),
        "runs": int(os.environ.get("RUNS", "3")),
        "nats": os.environ.get("NATS", "1") != "0",
        # JetStream runs, one per sync_interval: "always" (fsync before the ack) and
        # "default" (NATS's own: ack once written, fsync every 2 minutes).
        "nats_sync": [m for m in os.environ.get("NATS_SYNC", "always,default").split(",") if m],
    }
    cfg["acct"] = 3 * cfg["sessions"]
    load_at_start = os.getloadavg()
    versions = {
        "freeradius": version(["dpkg-query", "-W", "-f", "${Version}", "freeradius"]),
        "radclient": version(["dpkg-query", "-W", "-f", "${Version}", "freeradius-utils"]),
        "loadgen": cfg["loadgen"],
        "pampa": version(["git", "-C", str(REPO), "describe", "--always", "--dirty"]),
    }
    if cfg["nats"]:
        versions["nats-server"] = version([os.environ.get("PAMPA_NATS_SERVER", "nats-server"), "--version"])
    results: list[dict] = []
    durability: dict = {}
    with tempfile.TemporaryDirectory(prefix="pampa-radius-bench-") as tmp:
        work = Path(tmp)
        radclient_files = cfg["loadgen"] == "radclient"

        def auth_job(tag: str, requests: int) -> dict:
            job = {"kind": "auth", "requests": requests, "first": 0}
            if radclient_files:
                job["files"] = auth_files(work, tag, cfg["users"], requests, cfg["chunk"])
            return job

        files = {"warm": auth_job("warm", cfg["users"]), "auth": auth_job("run", cfg["auth"])}

        def jobs_for(tag: str) -> dict:
            """The server's jobs, with fresh session ids for each of its accounting runs, so
            no record is a retransmission of another run's."""
            acct = []
            for i in range(cfg["runs"]):
                job = {"kind": "acct", "sessions": cfg["sessions"], "tag": f"{tag}{i}"}
                if radclient_files:
                    job["files"] = acct_files(work, f"{tag}{i}", cfg["users"], cfg["sessions"], cfg["chunk"])
                acct.append(job)
            return {**files, "acct": acct}

        def server(name: str, proc, first_login_row: bool) -> dict:
            return {"name": name, "pid": proc.proc.pid, "auth_port": proc.auth_port,
                    "acct_port": proc.acct_port, "jobs": jobs_for(name), "first_login_row": first_login_row}

        def record(name: str, p: Pampa, recorded: float, audit_lost: float, dropped: float) -> None:
            events = count_acct_events(p, sent)
            log(f"{name}: {events} access.acct events in the log, {int(recorded)} recorded, {sent} sent; "
                f"audit decisions lost {int(audit_lost)}, packets dropped {int(dropped)}")
            durability[name] = {"sent": sent, "stored": events, "recorded_metric": int(recorded),
                                "audit_lost": int(audit_lost), "dropped": int(dropped),
                                "guarantee": GUARANTEE.get(name, "answered once JetStream acks the publish")}

        def counters(p: Pampa) -> tuple[float, float, float]:
            return (p.metric("pampa_radius_requests_total", kind="accounting", result="recorded"),
                    p.metric("pampa_radius_audit_lost_total"), p.metric("pampa_radius_dropped_total"))

        sent = cfg["acct"] * cfg["runs"]
        # FreeRADIUS and pampa on the embedded log run side by side, in alternating runs;
        # pampa's JetStream variants follow, each against FreeRADIUS's median. One
        # directory database for every pampa, so the users are added once.
        db_url = f"sqlite://{work / 'directory.db'}"
        fr = FreeRadius(work, cfg["users"])
        p = Pampa(work, "pampa-embedded", db_url, None)
        add_users(p, cfg["users"])
        fr.start()
        try:
            p.start()
            try:
                bench_servers([server("freeradius", fr, False), server("pampa-embedded", p, True)], cfg, results)
                embedded_counters = counters(p)
            finally:
                p.stop()
        finally:
            fr.stop()
        stored = fr.records()
        log(f"freeradius: {stored} records in the detail files, {sent} sent")
        durability["freeradius"] = {"sent": sent, "stored": stored, "guarantee": GUARANTEE["freeradius"]}
        record("pampa-embedded", p, *embedded_counters)

        backends = ["pampa-embedded"] + [f"pampa-js-{m}" for m in cfg["nats_sync"] if cfg["nats"]]
        for name in backends[1:]:
            nats, url = start_nats(work / name, name.removeprefix("pampa-js-"))
            try:
                p = Pampa(work, name, db_url, url)
                p.start()
                try:
                    bench_servers([server(name, p, True)], cfg, results)
                    js_counters = counters(p)
                finally:
                    p.stop()
                record(name, p, *js_counters)
            finally:
                nats.terminate()
                nats.wait()

    by = {(r["server"], r["kind"]): r for r in results}
    if cfg["loadgen"] == "radclient":
        how = (f"{cfg['clients']} radclient processes x -p {cfg['parallel'] // cfg['clients']}, "
               f"files of {cfg['chunk']} requests")
    else:
        how = f"radius_load, {cfg['parallel']} in flight"
    print(f"\nRADIUS, {cfg['users']} users, {how}, median of {cfg['runs']} runs (min-max)\n")
    print(f"{'server':<16} {'kind':<17} {'per run':>7} {'requests/s':>24} {'lost':>5} {'srv CPU us/req':>14} "
          f"{'+after':>6} {'ctxsw/req':>9} {'gen us/req':>10} {'vs FreeRADIUS':>13}")
    for r in results:
        peer = by.get(("freeradius", "auth" if r["kind"] == "auth_first_login" else r["kind"]))
        ratio = r["per_second_median"] / peer["per_second_median"] if peer else 0
        r["ratio_vs_freeradius"] = round(ratio, 3)
        spread = f"{r['per_second_median']:,} ({r['per_second_min']:,}-{r['per_second_max']:,})"
        print(f"{r['server']:<16} {r['kind']:<17} {r['requests_per_run']:>7} {spread:>24} {r['lost']:>5} "
              f"{r['server_cpu_us_per_request']:>14.1f} {r['server_cpu_after_us_per_request']:>6.1f} "
              f"{r['server_context_switches_per_request']:>9.2f} "
              f"{r['loadgen_cpu_us_per_request']:>10.1f} {ratio:>12.2f}x")
    print("\naccounting records stored / sent, and what an answer guarantees:")
    for name, d in durability.items():
        print(f"  {name:<16} {d['stored']} / {d['sent']}: {d['guarantee']}")
    goals = {}
    for name in backends:
        auth, acct = by[(name, "auth")], by[(name, "acct")]
        goals[name] = {
            "auth_at_least_1.5x": auth["ratio_vs_freeradius"] >= GOAL_AUTH and auth["lost"] == 0,
            "acct_at_least_1x_every_record_durable": acct["ratio_vs_freeradius"] >= GOAL_ACCT
            and acct["lost"] == 0 and durability[name]["stored"] == durability[name]["sent"]
            and name in POWER_LOSS_DURABLE,
        }
        print(f"goals {name}: auth >= {GOAL_AUTH}x: {'met' if goals[name]['auth_at_least_1.5x'] else 'NOT met'}; "
              f"acct >= {GOAL_ACCT}x with every record durable: "
              f"{'met' if goals[name]['acct_at_least_1x_every_record_durable'] else 'NOT met'}")
    out = REPO / "ops/bench/results/radius.json"
    out.write_text(json.dumps({"config": cfg, "versions": versions, "cpus": os.cpu_count(),
                               "load_at_start": load_at_start, "load_at_end": os.getloadavg(),
                               "results": results, "durability": durability, "goals": goals}, indent=2) + "\n")
    print(f"\nwritten to {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
