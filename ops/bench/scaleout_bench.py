"""Scale-out: the score stage's throughput with 1, then 2 `pampa run score` processes
sharing one durable consumer on one NATS JetStream.

Every measurement starts from nothing: a throwaway single-node nats-server (benchlib's
start_nats), a fresh SQLite directory with the bench domain and user (`pampa domain add`,
`pampa user add`), and one configuration file shared by every process, each given its own
metrics port with `--metrics-listen`. `[pipeline] stages = ["whitelist", "score"]`: rbl is
left out (it would ask DNS) and deliver is not run (score is the last thing measured).

Phases of one measurement:
1. ingest: `pampa run ingest` alone; smtp-source (smtp_bench's `smtp_source`) sends
   MESSAGES messages of SIZE_KIB KiB over SESSIONS sessions, a new connection per message.
   Every one must be accepted.
2. whitelist: `pampa run whitelist` is started and works through the backlog of
   `mail.received` (one process); it must process every message, none dead-lettered.
3. score, what is measured: K `pampa run score` processes are launched at once on the
   backlog of `mail.whitelist` (the durable consumer `score` is created by the first and
   shared by the others; it delivers from the start of the stream). The clock runs from
   the launch to the moment the sum over the K processes of
   `pampa_stage_processed_total{stage="score",outcome="ok"}` reaches MESSAGES (polled every
   POLL seconds), so each process's start-up (rules compiled, connections) is counted.
   Also kept: the rate between 10% and 90% of the messages (start-up and tail excluded).
   Then it must stay exactly MESSAGES (no input done twice) with no `dead` or `retry`
   outcome and no dead letter.

nats-server runs with its own defaults (NATS_DEFAULT_MAX_CONSUMERS=server). Before f7dd872
every body read left an ordered consumer on the body bucket's stream for 30 s, so under
nats-server 2.15's default cap of 1,000 consumers per stream the stages failed beyond
1,000 body reads in 30 s; NATS_DEFAULT_MAX_CONSUMERS=-1 lifts the cap, to measure such a
build.

CPU from /proc over each phase: nats-server, each pampa process, and the whole machine's
busy time (/proc/stat), so it shows whether the 2 cores were the limit. K takes the values
of SCORERS (default "1,2") in turn within each of RUNS (default 3) rounds, so a slower
stretch of the machine hits both alike. Median (min-max) over the runs; the ratio is the
median rate of the largest K over that of K=1.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchlib import LOCALHOST, PampaProcess, log, start_nats, stop_process, thread_cpu, version, wait_for
from smtp_bench import DOMAIN, PAMPA, RECIPIENT, Pampa, fs_type, proc_cpu, smtp_source, stop_group

REPO = Path(__file__).resolve().parents[2]


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already in user
    tick = os.sysconf("SC_CLK_TCK")
    return (total - idle) / tick, total / tick


class Role(PampaProcess):
    """`pampa run ROLE` with the shared configuration file and a metrics port of its own."""

    def __init__(self, work: Path, name: str, config: Path):
        self.make_dir(work, name)
        self.config = config

    def launch_role(self, role: str) -> None:
        self.launch(PAMPA, role, "--metrics-listen", f"{LOCALHOST}:{self.metrics_port}")

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid) if self.proc else 0.0

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise SystemExit(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def outcomes(self, stage: str) -> dict[str, int]:
        return {o: int(self.metric("pampa_stage_processed_total", stage=stage, outcome=o))
                for o in ("ok", "retry", "dead")}


def settle(cpu, timeout: float = 30.0) -> None:
    """Waits until `cpu()` grows by under 2% of a core over half a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu()
        time.sleep(0.5)
        if cpu() - before < 0.01:
            return
    log(f"still busy after {timeout:g} s; measuring anyway")


class Phase:
    """CPU of nats-server, of given processes and of the machine over a stretch of time."""

    def __init__(self, nats_pid: int, procs: list):
        self.nats_pid, self.procs = nats_pid, procs
        self.start = time.monotonic()
        self.nats0 = proc_cpu(nats_pid)
        self.procs0 = [p.cpu() for p in procs]
        self.machine0 = machine_busy()

    def end(self, messages: int) -> dict:
        seconds = time.monotonic() - self.start
        nats = proc_cpu(self.nats_pid) - self.nats0
        procs = sum(p.cpu() for p in self.procs) - sum(self.procs0)
        busy, total = (a - b for a, b in zip(machine_busy(), self.machine0))
        return {"seconds": round(seconds, 3), "per_second": round(messages / seconds, 1),
                "nats_cpu_s": round(nats, 3), "pampa_cpu_s": round(procs, 3),
                "nats_us_per_message": round(1e6 * nats / messages, 1),
                "pampa_us_per_message": round(1e6 * procs / messages, 1),
                "machine_busy_cores": round(busy / seconds, 2),
                "machine_busy_fraction": round(busy / total, 3) if total else None}


def one_measurement(work: Path, scorers: int, cfg: dict) -> dict:
    n = cfg["messages"]
    limit = cfg["nats_default_max_consumers"]
    nats, url = start_nats(work / "nats", cfg["nats_sync"],
                           "" if limit == "server" else f"limits {{ default_max_consumers: {limit} }}")
    procs: list[PampaProcess] = []
    try:
        ingest = Pampa(work, "ingest", f"sqlite://{work / 'directory.db'}", url)
        ingest.nats_pid = None  # its cpu() is its own; nats-server is counted apart
        procs.append(ingest)
        with open(ingest.config, "a") as f:
            f.write('[pipeline]\nstages = ["whitelist", "score"]\n')
        ingest.cli("domain", "add", DOMAIN)
        ingest.cli("user", "add", RECIPIENT, "--password", "bench-secret")
        ingest.start()

        # 1. ingest
        phase = Phase(nats.pid, [ingest])
        sent = smtp_source(ingest.port, cfg["size"], cfg["sessions"], n, False)
        accepted = ingest.stored()
        ingest_phase = phase.end(n)
        problems = []
        if sent["exit"] != 0 or sent["output"]:
            problems.append(f"smtp-source exited {sent['exit']}: {sent['output'][-300:]}")
        if accepted != n:
            problems.append(f"ingest accepted {accepted} of {n}")
        if problems:
            raise SystemExit(f"{scorers} scorer(s): " + "; ".join(problems))

        # 2. whitelist, one process, over the backlog
        wl = Role(work, "whitelist", ingest.config)
        procs.append(wl)
        phase = Phase(nats.pid, [wl])
        wl.launch_role("whitelist")
        wl.wait_ready(120)

        def whitelisted() -> bool:
            wl.alive()
            o = wl.outcomes("whitelist")
            if o["dead"]:
                raise SystemExit(f"whitelist dead-lettered {o['dead']} inputs:\n{wl.tail()}")
            return o["ok"] >= n

        try:
            wait_for(whitelisted, cfg["timeout"], f"whitelist to process {n} messages", 0.1)
        except SystemExit as e:
            if not str(e).startswith("timed out"):
                raise
            raise SystemExit(f"{e}; whitelist {wl.outcomes('whitelist')}:\n{wl.tail()}") from None
        whitelist_phase = phase.end(n)
        wl_outcomes = wl.outcomes("whitelist")
        settle(lambda: proc_cpu(nats.pid) + wl.cpu() + ingest.cpu())

        # 3. score: K processes launched at once on the backlog
        scorers_ = [Role(work, f"score{i + 1}", ingest.config) for i in range(scorers)]
        idle = [ingest, wl]
        idle0 = sum(p.cpu() for p in idle)
        phase = Phase(nats.pid, [])  # score processes do not exist yet: their CPU is all theirs
        t0 = time.monotonic()
        for s in scorers_:
            s.launch_role("score")
            procs.append(s)
        ready_at = []
        for s in scorers_:
            s.wait_ready(120)
            ready_at.append(time.monotonic() - t0)
        samples: list[tuple[float, int]] = []
        deadline = t0 + cfg["timeout"]
        while True:
            for s in scorers_:
                s.alive()
            done = sum(s.outcomes("score")["ok"] for s in scorers_)
            now = time.monotonic()
            samples.append((now - t0, done))
            if done >= n:
                break
            if now > deadline:
                raise SystemExit(f"{scorers} scorer(s): {done} of {n} scored after {cfg['timeout']:g} s")
            time.sleep(cfg["poll"])
        seconds = samples[-1][0]
        score_cpu = sum(s.cpu() for s in scorers_)
        threads: dict[str, float] = {}
        for s in scorers_:
            for k, v in thread_cpu(s.proc.pid).items():
                threads[k] = threads.get(k, 0.0) + v
        score_phase = phase.end(n)
        rest_cpu = sum(p.cpu() for p in idle) - idle0
        per_process = [s.outcomes("score")["ok"] for s in scorers_]

        # Checks: no input done twice, none retried or dead-lettered.
        time.sleep(1.0)
        outcomes = {o: sum(s.outcomes("score")[o] for s in scorers_) for o in ("ok", "retry", "dead")}
        dead_letters = sum(int(s.metric("pampa_stage_dead_letters_total")) for s in scorers_ + [wl])
        problems = []
        if outcomes["ok"] != n:
            problems.append(f"{outcomes['ok']} scored ok, {n} expected")
        if outcomes["retry"] or outcomes["dead"]:
            problems.append(f"score outcomes {outcomes}")
        if wl_outcomes["retry"] or wl_outcomes["dead"] or wl_outcomes["ok"] != n:
            problems.append(f"whitelist outcomes {wl_outcomes}")
        if dead_letters:
            problems.append(f"{dead_letters} dead letters")

        def crossing(frac: float) -> float:
            """Time (interpolated between polls) at which `frac` of the messages were scored."""
            target = frac * n
            prev = (0.0, 0)
            for t, c in samples:
                if c >= target:
                    if c == prev[1]:
                        return t
                    return prev[0] + (t - prev[0]) * (target - prev[1]) / (c - prev[1])
                prev = (t, c)
            return samples[-1][0]

        t10, t90 = crossing(0.1), crossing(0.9)
        r = {
            "scorers": scorers,
            "seconds": round(seconds, 3),
            "per_second": round(n / seconds, 1),
            "per_second_10_90": round(0.8 * n / (t90 - t10), 1) if t90 > t10 else None,
            "ready_after_s": [round(x, 3) for x in ready_at],
            "first_scored_after_s": round(next((t for t, c in samples if c > 0), seconds), 3),
            "scored_per_process": per_process,
            "score_cpu_s": round(score_cpu, 3),
            "score_us_per_message": round(1e6 * score_cpu / n, 1),
            "score_threads_us_per_message": {k: round(1e6 * v / n, 1) for k, v in sorted(threads.items())
                                             if v > 0},
            "nats_us_per_message": score_phase["nats_us_per_message"],
            "rest_us_per_message": round(1e6 * rest_cpu / n, 1),
            "machine_busy_cores": score_phase["machine_busy_cores"],
            # Cores busy with anything else than this measurement's processes (another
            # job on the machine, the bench's own polling): what the measurement lacked.
            "other_cores": round(score_phase["machine_busy_cores"]
                                 - (score_cpu + score_phase["nats_cpu_s"] + rest_cpu) / seconds, 2),
            "phases": {"ingest": ingest_phase, "whitelist": whitelist_phase, "score": score_phase},
            "smtp_source_cpu_s": round(sent["client_cpu"], 3),
            "outcomes": outcomes,
            "whitelist_outcomes": wl_outcomes,
            "dead_letters": dead_letters,
            "problems": problems,
            "ok": not problems,
        }
        log(f"{scorers} scorer(s): {n} scored in {seconds:.2f} s: {r['per_second']:,.0f} msg/s "
            f"(10-90%: {r['per_second_10_90'] or 0:,.0f}/s; per process {per_process}); CPU/msg score "
            f"{r['score_us_per_message']} us, nats-server {r['nats_us_per_message']} us; machine "
            f"{r['machine_busy_cores']} cores busy ({r['other_cores']} by others); whitelist phase {whitelist_phase['per_second']:,.0f}/s, "
            f"ingest {ingest_phase['per_second']:,.0f}/s"
            + ("" if r["ok"] else f"  PROBLEM: {'; '.join(problems)}"))
        return r
    finally:
        for p in reversed(procs):
            stop_process(p.proc, 30)
        stop_group(nats)


def summarize(scorers: int, runs: list[dict], n: int) -> dict:
    def stat(key: str) -> dict:
        xs = [r[key] for r in runs if r.get(key) is not None]
        return {"median": round(statistics.median(xs), 2), "min": round(min(xs), 2), "max": round(max(xs), 2)} if xs else {}

    return {
        "scorers": scorers,
        "messages_per_run": n,
        "runs": len(runs),
        "per_second": stat("per_second"),
        "per_second_10_90": stat("per_second_10_90"),
        "score_us_per_message": stat("score_us_per_message"),
        "nats_us_per_message": stat("nats_us_per_message"),
        "machine_busy_cores": stat("machine_busy_cores"),
        "other_cores": stat("other_cores"),
        "whitelist_per_second": round(statistics.median(r["phases"]["whitelist"]["per_second"] for r in runs), 1),
        "whitelist_pampa_us_per_message": round(statistics.median(
            r["phases"]["whitelist"]["pampa_us_per_message"] for r in runs), 1),
        "whitelist_nats_us_per_message": round(statistics.median(
            r["phases"]["whitelist"]["nats_us_per_message"] for r in runs), 1),
        "ingest_nats_us_per_message": round(statistics.median(
            r["phases"]["ingest"]["nats_us_per_message"] for r in runs), 1),
        "all_ok": all(r["ok"] for r in runs),
        "problems": [p for r in runs for p in r["problems"]],
    }


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    cfg = {
        "messages": int(os.environ.get("MESSAGES", "5000")),
        "size": int(os.environ.get("SIZE_KIB", "4")) * 1024,
        "sessions": int(os.environ.get("SESSIONS", "20")),
        "scorers": [int(x) for x in os.environ.get("SCORERS", "1,2").split(",") if x],
        "runs": int(os.environ.get("RUNS", "3")),
        "nats_sync": os.environ.get("NATS_SYNC", "default"),
        # nats-server 2.15 caps a stream at 1,000 consumers unless it sets its own limit;
        # every body read leaves an ordered consumer on the body bucket for 30 s, so with
        # that cap a stage fails beyond 1,000 bodies in 30 s (see README). -1 lifts it (the
        # behaviour before 2.15); "server" keeps the server's default.
        "nats_default_max_consumers": os.environ.get("NATS_DEFAULT_MAX_CONSUMERS", "server"),
        "timeout": float(os.environ.get("TIMEOUT", "300")),
        "poll": float(os.environ.get("POLL", "0.05")),
        "workdir": os.environ.get("WORKDIR", ""),
    }
    versions = {
        "pampa": version(["git", "-C", str(REPO), "describe", "--always", "--dirty"]),
        "nats-server": version([os.environ.get("PAMPA_NATS_SERVER", "nats-server"), "--version"]),
    }
    load_at_start = os.getloadavg()
    measurements: dict[int, list[dict]] = {k: [] for k in cfg["scorers"]}
    with tempfile.TemporaryDirectory(prefix="pampa-scaleout-bench-", dir=cfg["workdir"] or None) as tmp:
        work = Path(tmp)
        filesystem = fs_type(work)
        log(f"work dir {work} ({filesystem})")
        for run in range(cfg["runs"]):
            for k in cfg["scorers"]:
                d = work / f"run{run + 1}-k{k}"
                d.mkdir()
                measurements[k].append(one_measurement(d, k, cfg))

    n = cfg["messages"]
    rows = [summarize(k, measurements[k], n) for k in cfg["scorers"]]
    base = rows[0] if rows and rows[0]["scorers"] == 1 else None
    for r in rows:
        r["ratio"] = round(r["per_second"]["median"] / base["per_second"]["median"], 2) if base else None
        r["ratio_10_90"] = (round(r["per_second_10_90"]["median"] / base["per_second_10_90"]["median"], 2)
                            if base and r["per_second_10_90"] and base["per_second_10_90"] else None)

    def spread(s: dict, fmt: str = ",.0f") -> str:
        return f"{s['median']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})" if s else "-"

    print(f"\nScale-out of the score stage on one NATS JetStream ({cfg['nats_sync']} sync), {n} messages of "
          f"{cfg['size'] // 1024} KiB per run, median (min-max) of {cfg['runs']} runs; {os.cpu_count()} cores, "
          f"load average at start {load_at_start[0]:.2f}\n")
    print(f"{'score procs':>11} {'msg/s (launch->all)':>22} {'msg/s (10-90%)':>22} {'ratio':>6} "
          f"{'score us/msg':>20} {'nats us/msg':>18} {'busy cores':>16} {'other cores':>16} {'ok':>3}")
    for r in rows:
        print(f"{r['scorers']:>11} {spread(r['per_second']):>22} {spread(r['per_second_10_90']):>22} "
              f"{(str(r['ratio']) + 'x') if r['ratio'] else '-':>6} {spread(r['score_us_per_message']):>20} "
              f"{spread(r['nats_us_per_message']):>18} {spread(r['machine_busy_cores'], '.2f'):>16} "
              f"{spread(r['other_cores'], '.2f'):>16} "
              f"{'yes' if r['all_ok'] else 'NO':>3}")
    if rows:
        r = rows[0]
        print(f"\nbefore score (one process each, medians): whitelist {r['whitelist_per_second']:,.0f} msg/s at "
              f"{r['whitelist_pampa_us_per_message']} us/msg of pampa and {r['whitelist_nats_us_per_message']} us "
              f"of nats-server; ingest cost nats-server {r['ingest_nats_us_per_message']} us/msg")
    out = REPO / "ops/bench/results/scaleout.json"
    out.write_text(json.dumps({"config": cfg, "versions": versions, "cpus": os.cpu_count(),
                               "filesystem": filesystem, "load_at_start": load_at_start,
                               "load_at_end": os.getloadavg(), "results": rows,
                               "measurements": {str(k): v for k, v in measurements.items()}}, indent=2) + "\n")
    print(f"\nwritten to {out.relative_to(REPO)}")
    if not all(r["all_ok"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
