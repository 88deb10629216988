"""SMTP ingest, messages accepted per second: pampa against Postfix and smtp-sink, side by side.

Every server listens on loopback and is driven by the same load generator, Debian's
`smtp-source` (postfix package), with the same messages (`-l BYTES` of body below
smtp-source's own headers, one recipient, a fixed sender), the same number of concurrent
sessions (`-s`) and the same number of messages per run (`-m`). smtp-source opens a new
connection for every message, as most senders do at an MX (REUSE=1 passes `-d`: every
session sends all its messages over one connection).

Servers:
- pampa-embedded: `pampa run ingest` on the embedded log (SQLite in data_dir). The body
  (up to 256 KiB; larger ones are files) and the `mail.received` event are committed in
  one transaction and its WAL fsynced (group commit), and only then is 250 sent.
- pampa-js-default / pampa-js-always: `pampa run ingest` on a throwaway single-node
  nats-server (bodies in the JetStream object store), 250 on the publish acks. With NATS's
  default sync_interval the server acks before it fsyncs (fsync every 2 minutes: survives a
  crash of nats-server, not a power loss); with `sync_interval: always` it fsyncs first.
- postfix: master, smtpd and cleanup from Debian's package, from a throwaway config
  directory (its own queue_directory and data_directory under the work dir, chroot off, a
  non-standard port). It accepts mail for the bench domain's one user (relay_domains and
  relay_recipient_maps) and puts it on hold (`check_recipient_access` answering HOLD), so
  no delivery runs. cleanup fsyncs the queue file before smtpd answers 250.
- smtp-sink: Postfix's test server, answers 250 and stores nothing: the protocol ceiling.

Each server answers only mail for the user at the bench domain, the others get a 5xx.
Rate = messages / wall time of the smtp-source process. Every run is checked: smtp-source
must exit 0 with no error on its output, and the messages must be where the server keeps
them (pampa: its `pampa_smtp_messages_total{result="accepted"}` counter for the run, and
all `mail.received` events counted in the log at the end; Postfix: the files in its hold
queue; smtp-sink: its counter of completed DATA). The servers take turns run by run, so a
slower stretch of the machine hits them alike. Server CPU is read from /proc (Postfix: all
its processes, those that exited included, via master's reaped children; pampa on
JetStream: pampa and nats-server).
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
import sys
import tempfile
import time
from pathlib import Path

from benchlib import PampaProcess, stop_process, free_port, log, start_nats, thread_cpu, version, wait_for, wait_port

REPO = Path(__file__).resolve().parents[2]
PAMPA = REPO / "target/release/pampa"
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTSUPER = shutil.which("postsuper") or "/usr/sbin/postsuper"
POSTFIX_DAEMONS = Path("/usr/lib/postfix/sbin")
LOCALHOST = "127.0.0.1"
DOMAIN = "bench.test"
RECIPIENT = f"user@{DOMAIN}"
SENDER = "sender@example.net"
CLIENT_NAME = "client.example.net"
GOAL_POSTFIX = 3.0
GOAL_SINK = 0.5

GUARANTEE = {
    "smtp-sink": "stores nothing: the protocol ceiling",
    "postfix": "250 after cleanup wrote the queue file and fsynced it (hold queue): survives a power loss",
    "pampa-embedded": "250 after the body and the mail.received event are committed in one SQLite "
                      "transaction and its WAL fsynced (group commit): survives a power loss",
    "pampa-js-always": "250 after JetStream acked the body and the event; nats-server with sync_interval: "
                       "always fsyncs before each ack: survives a power loss",
    "pampa-js-default": "250 after JetStream acked the body and the event; NATS's default sync_interval acks "
                        "once written and fsyncs every 2 minutes: survives a crash of nats-server, not a "
                        "power loss of a single node",
}
POWER_LOSS_DURABLE = {"postfix", "pampa-embedded", "pampa-js-always"}


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def proc_stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    f = proc_stat(pid)
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def group_cpu(pgid: int) -> float:
    """CPU seconds of every live process in a process group, plus what the group's leader
    reaped from children that already exited (Postfix's smtpd and cleanup processes come
    and go; master collects their times when it waits for them)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            f = proc_stat(int(entry))
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(f[2]) != pgid:  # field 5 of stat: the process group
            continue
        total += int(f[11]) + int(f[12])
        if int(entry) == pgid:
            total += int(f[13]) + int(f[14])  # cutime, cstime
    return total / tick


def fs_type(path: Path) -> str:
    """The file system type holding `path` (fsync costs differ a lot: tmpfs has none)."""
    cp = subprocess.run(["df", "--output=fstype", str(path)], capture_output=True, text=True)
    lines = cp.stdout.split()
    return lines[-1] if cp.returncode == 0 and lines else "?"


def stop_group(proc: subprocess.Popen | None, grace: float = 20) -> None:
    """SIGTERM, then SIGKILL after `grace`, to a server started in a session of its own
    (so its process group holds only it and its children)."""
    if not proc:
        return
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group, if any
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait()


# ----------------------------------------------------------------- servers --


class Server:
    name = "server"
    port: int
    proc: subprocess.Popen | None = None

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid)

    def stored(self) -> int:
        """Messages the server holds (or counted) so far."""
        raise NotImplementedError

    def stop(self) -> None:
        stop_group(self.proc)

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise SystemExit(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def tail(self) -> str:
        return ""


class SmtpSink(Server):
    """`smtp-sink -c 127.0.0.1:PORT 1000`: one event-driven process, answers 250 to
    everything, keeps nothing; `-c` prints a running count of completed DATA commands,
    read from its output. As root it must drop privileges (`-u nobody`)."""

    name = "smtp-sink"

    def __init__(self, work: Path):
        self.dir = work / "smtp-sink"
        self.dir.mkdir()
        self.port = free_port()

    def start(self) -> None:
        self.out_path = self.dir / "out"
        self.out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(
            [SMTP_SINK, "-c", "-u", "nobody", f"{LOCALHOST}:{self.port}", "1000"],
            stdout=self.out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        wait_port(self.port)
        self.alive()

    def stored(self) -> int:
        # The counter is rewritten in place with \r; the last number is the total.
        numbers = re.findall(rb"(\d+)", self.out_path.read_bytes()[-200:])
        return int(numbers[-1]) if numbers else 0

    def tail(self) -> str:
        return self.out_path.read_text(errors="replace")[-2000:]


MAIN_CF = """\
# Throwaway Postfix for ops/bench/smtp_bench.py: Debian's defaults but for what is below.
compatibility_level = 3.6
queue_directory = {spool}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.{domain}
mydestination =
inet_interfaces = {localhost}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
biff = no
maillog_file = {maillog}
maillog_file_prefixes = {maillog}
# Mail for the bench domain's user is accepted (any other recipient is refused) and put
# on hold, so no delivery work runs: what is measured is receiving into the queue.
relay_domains = {domain}
relay_recipient_maps = inline:{{ {recipient}=ok }}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = check_recipient_access inline:{{ {domain}=HOLD }}, permit_auth_destination, reject
# Every session comes from 127.0.0.1: no per-client limits (pampa's are off too).
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
"""

# Debian's master.cf, chroot off (the bench dir holds no chroot copy of /etc), smtpd on a
# port of its own with maxproc SMTPD_PROCS (default 100, Postfix's default_process_limit),
# no pipe transports, no tlsmgr (no TLS here).
MASTER_CF = """\
{localhost}:{port} inet n - n - {smtpd_procs} smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix(Server):
    """Postfix's master in the foreground (`master -d -c DIR`, in a session of its own so
    its SIGTERM reaches every daemon it started), from a config directory under the work
    dir; `postfix -c DIR check` creates the queue directories with their owners first."""

    name = "postfix"

    def __init__(self, work: Path, smtpd_procs: int):
        self.dir = work / "postfix"
        self.etc = self.dir / "etc"
        self.spool = self.dir / "spool"
        self.etc.mkdir(parents=True)
        self.spool.mkdir()
        (self.dir / "data").mkdir()
        shutil.chown(self.dir / "data", "postfix")
        self.port = free_port()
        values = dict(spool=self.spool, data=self.dir / "data", maillog=self.dir / "maillog",
                      domain=DOMAIN, recipient=RECIPIENT, localhost=LOCALHOST, port=self.port,
                      smtpd_procs=smtpd_procs)
        (self.etc / "main.cf").write_text(MAIN_CF.format(**values))
        (self.etc / "master.cf").write_text(MASTER_CF.format(**values))
        self.env = {**os.environ, "MAIL_CONFIG": str(self.etc)}

    def postfix(self, *args: str) -> str:
        cp = subprocess.run([POSTFIX, "-c", str(self.etc), *args], capture_output=True, text=True,
                            env=self.env, timeout=120)
        if cp.returncode != 0:
            raise SystemExit(f"postfix {' '.join(args)} failed:\n{cp.stdout}{cp.stderr}")
        return cp.stdout + cp.stderr

    def start(self) -> None:
        out = self.postfix("check")
        if out.strip():
            log(f"postfix check: {out.strip()}")
        self.out_path = self.dir / "master.out"
        self.out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(
            [str(POSTFIX_DAEMONS / "master"), "-d", "-c", str(self.etc)],
            stdout=self.out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env,
            start_new_session=True,
        )

        def up() -> bool:
            self.alive()
            return smtp_greets(self.port)

        wait_for(up, 60, "postfix to greet", 0.2)

    def cpu(self) -> float:
        return group_cpu(self.proc.pid)

    def hold(self) -> Path:
        return self.spool / "hold"

    def stored(self) -> int:
        """Queue files in the hold queue (hash_queue_names does not hash hold)."""
        total = 0
        for _root, _dirs, files in os.walk(self.hold()):
            total += len(files)
        return total

    def clear(self) -> None:
        """Empties the hold queue between runs, so every run starts from the same queue."""
        cp = subprocess.run([POSTSUPER, "-c", str(self.etc), "-d", "ALL", "hold"], capture_output=True,
                            text=True, env=self.env, timeout=300)
        if cp.returncode != 0:
            raise SystemExit(f"postsuper -d ALL hold failed:\n{cp.stdout}{cp.stderr}")

    def tail(self) -> str:
        text = ""
        for p in (self.out_path, self.dir / "maillog"):
            if p.exists():
                text += p.read_text(errors="replace")[-2000:]
        return text


class Pampa(PampaProcess, Server):
    """`pampa run ingest`, data_dir under the work dir; one directory database (SQLite)
    shared by every pampa of the bench, so the domain and user are added once."""

    def __init__(self, work: Path, name: str, db_url: str, bus_url: str | None):
        self.make_dir(work, name)
        bus = f'[bus]\nurl = "{bus_url}"\n' if bus_url else ""
        # Every session comes from 127.0.0.1: the per-address caps (20 sessions, 600 new
        # connections a minute by default) would refuse the load generator itself.
        self.config.write_text(
            f'data_dir = "{self.dir / "data"}"\n'
            f"{bus}"
            f'[db]\nurl = "{db_url}"\n'
            f'[smtp]\nlisten = "{LOCALHOST}:{self.port}"\nhostname = "pampa.{DOMAIN}"\n'
            "max_connections_per_ip = 2000\nmax_connection_rate_per_ip = 0\n"
            f'[metrics]\nlisten = "{LOCALHOST}:{self.metrics_port}"\n'
        )

    def cli(self, *args: str) -> str:
        return super().cli(PAMPA, *args)

    def start(self) -> None:
        self.start_role(PAMPA, "ingest", 120)
        wait_port(self.port)

    # The nats-server a JetStream pampa publishes to: its CPU counts as the server's.
    nats_pid: int | None = None

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid) + (proc_cpu(self.nats_pid) if self.nats_pid else 0.0)

    def stored(self) -> int:
        return int(self.metric("pampa_smtp_messages_total", result="accepted"))

    def refused(self) -> int:
        return int(self.metric("pampa_smtp_messages_total", result="rejected")
                   + self.metric("pampa_smtp_messages_total", result="tempfail"))

    def stop(self) -> None:
        stop_process(self.proc, 30)

    def events(self, expected: int) -> int:
        """mail.received events in the log (after the runs)."""
        out = self.cli("events", "mail.received", "--json", "--limit", str(expected + 1000))
        return len(json.loads(out))


def smtp_greets(port: int) -> bool:
    try:
        with socket.create_connection((LOCALHOST, port), timeout=2) as s:
            s.settimeout(5)
            return s.recv(512).startswith(b"220")
    except OSError:
        return False


# ------------------------------------------------------------------ measuring --


def smtp_source(port: int, size: int, sessions: int, messages: int, reuse: bool) -> dict:
    """One smtp-source process; its wall time and CPU."""
    cmd = [SMTP_SOURCE, "-4", "-s", str(sessions), "-m", str(messages), "-l", str(size),
           "-f", SENDER, "-t", RECIPIENT, "-M", CLIENT_NAME, "-S", "bench"]
    if reuse:
        cmd.append("-d")
    cmd.append(f"{LOCALHOST}:{port}")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    cp = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = (cp.stdout + cp.stderr).strip()
    return {"seconds": seconds, "exit": cp.returncode, "output": out[-2000:],
            "client_cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}


def settle(server: Server, timeout: float = 60.0) -> None:
    """Waits until the server is idle (under 2% of a core over half a second)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = server.cpu()
        time.sleep(0.5)
        if server.cpu() - before < 0.01:
            return
    log(f"{server.name} was still busy after {timeout:g} s; measuring anyway")


def one_run(server: Server, size: int, sessions: int, messages: int, cfg: dict) -> dict:
    if isinstance(server, Postfix):
        server.clear()
    settle(server)
    server.alive()
    stored0, cpu0 = server.stored(), server.cpu()
    refused0 = server.refused() if isinstance(server, Pampa) else 0
    threads0 = thread_cpu(server.proc.pid) if isinstance(server, Pampa) else {}
    r = smtp_source(server.port, size, sessions, messages, cfg["reuse"])
    r["server_cpu"] = server.cpu() - cpu0
    if isinstance(server, Pampa):
        r["threads"] = {k: v - threads0.get(k, 0.0) for k, v in thread_cpu(server.proc.pid).items()}
    if isinstance(server, Postfix):
        # Accepted means in the hold queue: cleanup renamed the fsynced file there
        # before smtpd answered 250, so nothing should be pending now.
        r["stored"] = server.stored() - stored0
    elif isinstance(server, SmtpSink):
        # smtp-sink prints its counter when it gets to it; give it a moment.
        deadline = time.monotonic() + 5
        while server.stored() - stored0 < messages and time.monotonic() < deadline:
            time.sleep(0.1)
        r["stored"] = server.stored() - stored0
    else:
        r["stored"] = server.stored() - stored0
        r["refused"] = server.refused() - refused0
    server.alive()
    problems = []
    if r["exit"] != 0:
        problems.append(f"smtp-source exited with {r['exit']}")
    if r["output"]:
        problems.append(f"smtp-source printed: {r['output'][-500:]}")
    if r["stored"] != messages:
        problems.append(f"{r['stored']} of {messages} messages stored")
    r["ok"] = not problems
    r["problems"] = problems
    log(f"{server.name}: {size // 1024} KiB x {plural(sessions, 'session')}: {messages / r['seconds']:,.0f} msg/s "
        f"({messages} in {r['seconds']:.2f} s, {r['stored']} stored; server CPU {r['server_cpu']:.2f} s, "
        f"smtp-source CPU {r['client_cpu']:.2f} s)" + ("" if r["ok"] else f"  PROBLEM: {'; '.join(problems)}"))
    return r


def summarize(name: str, size: int, sessions: int, messages: int, runs: list[dict]) -> dict:
    rates = [messages / r["seconds"] for r in runs]
    row = {
        "server": name,
        "size_bytes": size,
        "sessions": sessions,
        "messages_per_run": messages,
        "runs": len(runs),
        "per_second_median": round(statistics.median(rates), 1),
        "per_second_min": round(min(rates), 1),
        "per_second_max": round(max(rates), 1),
        "seconds": [round(r["seconds"], 3) for r in runs],
        "stored": sum(r["stored"] for r in runs),
        "sent": messages * len(runs),
        "all_accepted": all(r["ok"] for r in runs),
        "problems": [p for r in runs for p in r["problems"]],
        "server_cpu_us_per_message": round(1e6 * statistics.median(r["server_cpu"] for r in runs) / messages),
        "smtp_source_cpu_us_per_message": round(1e6 * statistics.median(r["client_cpu"] for r in runs) / messages),
    }
    if all("threads" in r for r in runs):
        # pampa: CPU per message of each kind of thread (runtime workers and blocking
        # pool, SQLite writer, the log's fsync thread), over all runs of the cell.
        names = sorted({k for r in runs for k in r["threads"]})
        row["server_threads_cpu_us_per_message"] = {
            k: round(1e6 * sum(r["threads"].get(k, 0.0) for r in runs) / (messages * len(runs)))
            for k in names if sum(r["threads"].get(k, 0.0) for r in runs) > 0}
        row["refused"] = sum(r["refused"] for r in runs)
    return row


def bench_cells(servers: list[Server], cfg: dict, results: list) -> None:
    """For each (size, sessions) cell: RUNS rounds, each server once per round in turn."""
    for size in cfg["sizes"]:
        for sessions in cfg["sessions"]:
            messages = cfg["messages_one"] if sessions == 1 else cfg["messages"]
            runs: dict[str, list] = {s.name: [] for s in servers}
            for _ in range(cfg["runs"]):
                for s in servers:
                    runs[s.name].append(one_run(s, size, sessions, messages, cfg))
            for s in servers:
                results.append(summarize(s.name, size, sessions, messages, runs[s.name]))


def main() -> None:
    # SIGTERM (and SIGINT, which a shell may have ignored for a background job) ends the
    # bench through its `finally` blocks, so every server it started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    cfg = {
        # Body sizes in KiB (smtp-source -l), concurrent sessions (-s), messages per run
        # (-m; MESSAGES_ONE for the runs with one session, which are the slowest).
        "sizes": [int(x) * 1024 for x in os.environ.get("SIZES", "4,50").split(",") if x],
        "sessions": [int(x) for x in os.environ.get("SESSIONS", "1,20,100").split(",") if x],
        "messages": int(os.environ.get("MESSAGES", "5000")),
        "messages_one": int(os.environ.get("MESSAGES_ONE", "1000")),
        "runs": int(os.environ.get("RUNS", "3")),
        "reuse": os.environ.get("REUSE", "0") == "1",
        "servers": [s for s in os.environ.get("SERVERS", "smtp-sink,postfix,pampa-embedded").split(",") if s],
        "nats": os.environ.get("NATS", "1") != "0",
        "nats_sync": [m for m in os.environ.get("NATS_SYNC", "default,always").split(",") if m],
        "smtpd_procs": int(os.environ.get("SMTPD_PROCS", "100")),
        "workdir": os.environ.get("WORKDIR", ""),
    }
    load_at_start = os.getloadavg()
    versions = {
        "pampa": version(["git", "-C", str(REPO), "describe", "--always", "--dirty"]),
        "postfix": version(["dpkg-query", "-W", "-f", "${Version}", "postfix"]),
    }
    if cfg["nats"]:
        versions["nats-server"] = version([os.environ.get("PAMPA_NATS_SERVER", "nats-server"), "--version"])
    results: list[dict] = []
    durability: dict = {}
    with tempfile.TemporaryDirectory(prefix="pampa-smtp-bench-", dir=cfg["workdir"] or None) as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # Postfix's daemons run as postfix and must reach their queue
        filesystem = fs_type(work)
        log(f"work dir {work} ({filesystem})")
        db_url = f"sqlite://{work / 'directory.db'}"
        servers: list[Server] = []
        started: list[Server] = []
        pampas: list[Pampa] = []
        try:
            for name in cfg["servers"]:
                if name == "smtp-sink":
                    s: Server = SmtpSink(work)
                elif name == "postfix":
                    s = Postfix(work, cfg["smtpd_procs"])
                elif name == "pampa-embedded":
                    s = Pampa(work, name, db_url, None)
                    if not pampas:
                        s.cli("domain", "add", DOMAIN)
                        s.cli("user", "add", RECIPIENT, "--password", "bench-secret")
                    pampas.append(s)
                else:
                    raise SystemExit(f"unknown server {name!r} in SERVERS")
                s.start()
                started.append(s)
                servers.append(s)
            bench_cells(servers, cfg, results)
        finally:
            for s in started:
                s.stop()
        for s in servers:
            rows = [r for r in results if r["server"] == s.name]
            sent = sum(r["sent"] for r in rows)
            counted = sum(r["stored"] for r in rows)
            durability[s.name] = {"sent": sent, "stored": counted, "guarantee": GUARANTEE[s.name]}
            if isinstance(s, Pampa):
                durability[s.name]["events_in_log"] = s.events(sent)
                log(f"{s.name}: {durability[s.name]['events_in_log']} mail.received events in the log, "
                    f"{sent} sent")

        if cfg["nats"]:
            for sync in cfg["nats_sync"]:
                name = f"pampa-js-{sync}"
                nats, url = start_nats(work / f"nats-{sync}", sync)
                try:
                    p = Pampa(work, name, db_url, url)
                    p.nats_pid = nats.pid
                    if not pampas:
                        p.cli("domain", "add", DOMAIN)
                        p.cli("user", "add", RECIPIENT, "--password", "bench-secret")
                    pampas.append(p)
                    p.start()
                    try:
                        bench_cells([p], cfg, results)
                    finally:
                        p.stop()
                    rows = [r for r in results if r["server"] == name]
                    sent = sum(r["sent"] for r in rows)
                    durability[name] = {"sent": sent, "stored": sum(r["stored"] for r in rows),
                                        "guarantee": GUARANTEE.get(name, "250 after JetStream acked"),
                                        "events_in_log": p.events(sent)}
                    log(f"{name}: {durability[name]['events_in_log']} mail.received events in the log, "
                        f"{sent} sent")
                finally:
                    stop_group(nats)

    def peer(r: dict, name: str) -> dict | None:
        return next((x for x in results if x["server"] == name and x["size_bytes"] == r["size_bytes"]
                     and x["sessions"] == r["sessions"]), None)

    how = "one connection per session" if cfg["reuse"] else "a new connection per message"
    print(f"\nSMTP ingest, smtp-source ({how}), messages accepted per second, median of {cfg['runs']} runs "
          f"(min-max); load average at start {load_at_start[0]:.2f}; work dir on {filesystem}\n")
    print(f"{'size':>6} {'sess':>4} {'server':<17} {'msgs':>5} {'messages/s':>24} {'srv us/msg':>10} "
          f"{'src us/msg':>10} {'ok':>3} {'vs postfix':>10} {'vs sink':>8}")
    for r in results:
        pf, sk = peer(r, "postfix"), peer(r, "smtp-sink")
        r["ratio_vs_postfix"] = round(r["per_second_median"] / pf["per_second_median"], 3) if pf else None
        r["ratio_vs_sink"] = round(r["per_second_median"] / sk["per_second_median"], 3) if sk else None
        spread = f"{r['per_second_median']:,.0f} ({r['per_second_min']:,.0f}-{r['per_second_max']:,.0f})"
        vs_pf = f"{r['ratio_vs_postfix']:.2f}x" if pf else "-"
        vs_sk = f"{r['ratio_vs_sink']:.2f}x" if sk else "-"
        print(f"{r['size_bytes'] // 1024:>4}Ki {r['sessions']:>4} {r['server']:<17} {r['messages_per_run']:>5} "
              f"{spread:>24} {r['server_cpu_us_per_message']:>10,} {r['smtp_source_cpu_us_per_message']:>10,} "
              f"{'yes' if r['all_accepted'] else 'NO':>3} {vs_pf:>10} {vs_sk:>8}")
    print("\nmessages stored / sent, and what a 250 guarantees:")
    for name, d in durability.items():
        extra = f", {d['events_in_log']} mail.received events in the log" if "events_in_log" in d else ""
        print(f"  {name:<17} {d['stored']} / {d['sent']}{extra}: {d['guarantee']}")

    # The goals of issue 9 are pampa's on the embedded log (power-loss durable, one box);
    # the JetStream rows are in the table for comparison.
    goals: dict = {}
    backend = "pampa-embedded"
    if backend in durability:
        print()
        all_stored = durability[backend]["events_in_log"] >= durability[backend]["sent"]
        for r in [x for x in results if x["server"] == backend]:
            cell = f"{r['size_bytes'] // 1024} KiB, {plural(r['sessions'], 'session')}"
            ok = r["all_accepted"] and all_stored
            if r["ratio_vs_postfix"] is not None:
                met = ok and r["ratio_vs_postfix"] >= GOAL_POSTFIX
                goals[f">= {GOAL_POSTFIX:g}x postfix, {cell}"] = met
                print(f"goal {backend} >= {GOAL_POSTFIX:g}x Postfix's durable rate, {cell}: "
                      f"{'met' if met else 'NOT met'} ({r['ratio_vs_postfix']:.2f}x)")
            if r["ratio_vs_sink"] is not None and r["size_bytes"] == 4096:
                met = ok and r["ratio_vs_sink"] >= GOAL_SINK
                goals[f">= {GOAL_SINK:g}x smtp-sink, {cell}"] = met
                print(f"goal {backend} >= {GOAL_SINK:g}x smtp-sink's rate, {cell}: "
                      f"{'met' if met else 'NOT met'} ({r['ratio_vs_sink']:.2f}x)")
        if goals:
            print(f"goals of issue 9 on the embedded log: met in {sum(goals.values())} of {len(goals)} cells")
    out = REPO / "ops/bench/results/smtp.json"
    out.write_text(json.dumps({"config": cfg, "versions": versions, "cpus": os.cpu_count(),
                               "filesystem": filesystem, "load_at_start": load_at_start,
                               "load_at_end": os.getloadavg(), "results": results,
                               "durability": durability, "goals": goals}, indent=2) + "\n")
    print(f"\nwritten to {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
