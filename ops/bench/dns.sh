#!/usr/bin/env bash
# DNS speed, side by side on this machine: queries per second of pampa (`pampa run dns`,
# query log on: every query a dns.query event in the embedded log) against rbldnsd on a
# DNSBL dataset, and against Unbound on an authoritative zone and as a warm forwarding
# cache, all driven by dnsperf with the same settings. Prints a table with the ratio
# pampa/peer and writes results/dns.json.
#
#   ops/bench/dns.sh
#
# Environment: ENTRIES (ip4set entries, default 500000), DNSBL_QUERIES (distinct DNSBL
# queries in the file, default 200000, half listed), NAMES (hosts in the zone, default
# 5000), AUTH_QUERIES (default 100000), CACHE_NAMES (distinct names of the cache
# scenario, default 20000), CLIENTS (dnsperf -c, default 4), THREADS (dnsperf -T,
# default 1), OUTSTANDING (dnsperf -q, default 100), LENGTH (dnsperf -l seconds, default
# 10), MAX_QPS (dnsperf -Q, default 0: as fast as answered), RUNS (default 3),
# UNBOUND_THREADS (default: the number of CPUs), SCENARIOS (default "dnsbl,auth,cache"),
# EXTRA=0 to skip the diagnostic rows (pampa without query log, rbldnsd with -l).
# Installs dnsperf, unbound and rbldnsd from Debian when missing (never starts the
# system's Unbound service: it runs its own from a throwaway config), and builds pampa
# in release.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.."

missing=()
for pkg in dnsperf unbound rbldnsd; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]} > 0)); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
cargo build --release --bin pampa
exec python3 ops/bench/dns_bench.py
