"""Measures recipient decisions per second of `pampa replay` on both event logs.

The log is filled once per backend by the `replay_fill` example (synthetic mail.scored
events shaped like the live pipeline's), then `pampa replay --json` runs RUNS times with
a levels file that moves the normal level's cut. Wall time of the whole command counts:
opening the log, reading, decoding, deciding and printing.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchlib import free_port, wait_port

REPO = Path(__file__).resolve().parents[2]
PAMPA = REPO / "target/release/pampa"
FILL = REPO / "target/release/examples/replay_fill"
GOAL = 200_000


def measure(name: str, config: Path, target: str, n: int, runs: int, work: Path) -> dict:
    filled = subprocess.run([str(FILL), target, str(n)], check=True, capture_output=True, text=True)
    expected = int(filled.stdout.strip())
    levels = work / "levels.toml"
    levels.write_text("[levels.normal]\ncut = 4.5\ndiscard = 12.0\n")
    rates, seconds = [], []
    for _ in range(runs):
        start = time.monotonic()
        out = subprocess.run(
            [str(PAMPA), "--config", str(config), "replay", "--since", "1d", "--levels", str(levels), "--json"],
            check=True,
            capture_output=True,
            text=True,
        )
        elapsed = time.monotonic() - start
        decisions = json.loads(out.stdout)["decisions"]
        if decisions != expected:
            raise SystemExit(f"{name}: replay saw {decisions} decisions, the log holds {expected}")
        seconds.append(elapsed)
        rates.append(decisions / elapsed)
    return {
        "backend": name,
        "messages": n,
        "decisions": expected,
        "seconds_median": statistics.median(seconds),
        "per_second_median": statistics.median(rates),
        "per_second_min": min(rates),
        "per_second_max": max(rates),
    }


def main() -> None:
    n = int(os.environ.get("N", "200000"))
    runs = int(os.environ.get("RUNS", "3"))
    results = []
    with tempfile.TemporaryDirectory(prefix="pampa-replay-bench-") as tmp:
        work = Path(tmp)
        data = work / "embedded"
        config = work / "embedded.toml"
        config.write_text(f'data_dir = "{data}"\n')
        results.append(measure("embedded", config, str(data), n, runs, work))

        port = free_port()
        nats = subprocess.Popen(
            [os.environ.get("PAMPA_NATS_SERVER", "nats-server"), "-js", "-a", "127.0.0.1",
             "-p", str(port), "-sd", str(work / "nats")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(port)
            url = f"nats://127.0.0.1:{port}"
            config = work / "nats.toml"
            config.write_text(f'data_dir = "{work / "nats-data"}"\n[bus]\nurl = "{url}"\n')
            results.append(measure("jetstream", config, url, n, runs, work))
        finally:
            nats.terminate()
            nats.wait()

    print(f"pampa replay, {n} messages, median of {runs} runs (min-max), goal {GOAL:,} decisions/s\n")
    print(f"{'log':<10} {'decisions':>10} {'seconds':>8} {'decisions per second':>30} {'vs goal':>8}")
    for r in results:
        spread = f"{r['per_second_median']:,.0f} ({r['per_second_min']:,.0f}-{r['per_second_max']:,.0f})"
        print(
            f"{r['backend']:<10} {r['decisions']:>10} {r['seconds_median']:>8.2f} {spread:>30} "
            f"{r['per_second_median'] / GOAL:>7.1f}x"
        )
    out = REPO / "ops/bench/results/replay.json"
    out.write_text(json.dumps({"goal": GOAL, "runs": runs, "results": results}, indent=2) + "\n")
    print(f"\nwritten to {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
