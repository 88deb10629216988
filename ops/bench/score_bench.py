"""Measures messages per CPU-second of pampa score, spamd and rspamd on the same files.

CPU time, not wall time, is what is compared: the peers are servers that wait on sockets
(and rspamd on DNS), and the question is how much of a core each message costs. For the
servers, the CPU of every server process is read from /proc before and after the run.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import free_port, wait_port

REPO = Path(__file__).resolve().parents[2]
PAMPA = REPO / "target/release/pampa"
TICKS = os.sysconf("SC_CLK_TCK")


def sample(corpus: Path, n: int) -> list[Path]:
    files = sorted(p for d in ("ham", "spam") for p in (corpus / d).iterdir() if p.is_file())
    step = max(1, len(files) // n)
    return files[::step][:n]


def cpu_of(names: tuple[str, ...]) -> float:
    """CPU seconds (user + system, including reaped children) of processes by name."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        if not any(name.startswith(n) for n in names):
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return total / TICKS


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_pampa(files: list[Path], config: Path) -> float:
    before = child_cpu()
    subprocess.run([str(PAMPA), "--config", str(config), "score", "--json", *map(str, files)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return child_cpu() - before


def run_client(cmd: list[str], files: list[Path], server: tuple[str, ...]) -> float:
    before = cpu_of(server)
    for f in files:
        with open(f, "rb") as data:
            subprocess.run(cmd, stdin=data, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return cpu_of(server) - before


def main() -> None:
    corpus = Path(sys.argv[1]).resolve()
    n, runs = int(os.environ.get("N", "400")), int(os.environ.get("RUNS", "3"))
    files = sample(corpus, n)
    work = Path(tempfile.mkdtemp(prefix="pampa-bench-"))
    os.chmod(work, 0o755)
    model = work / "model.bayes"
    subprocess.run([str(PAMPA), "train", "--ham", str(corpus / "ham"), "--spam", str(corpus / "spam"),
                    "--out", str(model)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = work / "pampa.toml"
    config.write_text(f'[stages.score]\nclassifier = "{model}"\n')

    results: dict[str, list[float]] = {"pampa": [], "spamd": [], "rspamd": []}
    for _ in range(runs):
        results["pampa"].append(run_pampa(files, config))
    # The same comparison with SpamAssassin's own stock rules loaded into pampa too, so the
    # rule work is as close to spamd's as the engine allows.
    stock = Path("/usr/share/spamassassin")
    if stock.is_dir():
        stock_config = work / "pampa-stock.toml"
        stock_config.write_text(f'[stages.score]\nclassifier = "{model}"\nrules = ["{stock}/*.cf"]\n')
        results["pampa+stock"] = [run_pampa(files, stock_config) for _ in range(runs)]

    spamd_port = free_port()
    spamd = subprocess.Popen(["spamd", "-L", "--listen", f"127.0.0.1:{spamd_port}", "-m", "1",
                              "--min-children", "1", "--max-spare", "1", "-u", "nobody",
                              "--pidfile", str(work / "spamd.pid")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(spamd_port, 120)
        run_client(["spamc", "-d", "127.0.0.1", "-p", str(spamd_port)], files[:5], ("spamd",))  # warm up
        for _ in range(runs):
            results["spamd"].append(run_client(["spamc", "-d", "127.0.0.1", "-p", str(spamd_port)], files, ("spamd",)))
    finally:
        spamd.terminate()
        spamd.wait()

    rspamd_dir = work / "rspamd"
    rspamd_dir.mkdir()
    shutil.chown(rspamd_dir, "_rspamd", "_rspamd")
    rspamd = subprocess.Popen(["rspamd", "-f", "-u", "_rspamd", "-g", "_rspamd",
                               "--var", f"DBDIR={rspamd_dir}", "--var", f"RUNDIR={rspamd_dir}",
                               "--var", f"LOGDIR={rspamd_dir}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(11333, 120)
        run_client(["rspamc", "-h", "127.0.0.1:11333"], files[:5], ("rspamd",))
        for _ in range(runs):
            results["rspamd"].append(run_client(["rspamc", "-h", "127.0.0.1:11333"], files, ("rspamd",)))
    finally:
        rspamd.terminate()
        rspamd.wait()

    rate = {k: len(files) / max(statistics.median(v), 1e-9) for k, v in results.items()}
    rows = []
    for name, cpu in results.items():
        rows.append({
            "tool": name,
            "messages": len(files),
            "cpu_seconds_median": statistics.median(cpu),
            "cpu_seconds_min": min(cpu),
            "cpu_seconds_max": max(cpu),
            "messages_per_cpu_second": rate[name],
            "pampa_ratio": rate["pampa"] / rate[name],
        })
    print(f"{'tool':12} {'msgs':>5} {'cpu s (median, min-max)':>26} {'msg/cpu-s':>10} {'pampa/peer':>10}")
    for r in rows:
        spread = f"{r['cpu_seconds_median']:.2f} ({r['cpu_seconds_min']:.2f}-{r['cpu_seconds_max']:.2f})"
        print(f"{r['tool']:12} {r['messages']:>5} {spread:>26} {r['messages_per_cpu_second']:>10.1f} {r['pampa_ratio']:>10.1f}x")
    out = REPO / "ops/bench/results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "score.json").write_text(json.dumps({"runs": runs, "results": rows}, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
