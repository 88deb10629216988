#!/usr/bin/env bash
# Scoring speed, side by side on this machine: `pampa score` against spamd (via spamc)
# and rspamd (via rspamc), over the same messages. Prints a table with the ratio
# pampa/peer in messages per CPU-second and writes results/score.json.
#
#   ops/bench/score.sh [CORPUS_DIR]      (default: ../shared/corpus, with ham/ and spam/)
#
# Environment: N (messages, default 400; spamd is slow), RUNS (default 3).
# Installs spamd, spamc and rspamd from Debian when missing, and builds pampa in release.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.."

missing=()
for pkg in spamd spamc rspamd; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]} > 0)); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
cargo build --release --bin pampa
exec python3 ops/bench/score_bench.py "${1:-../shared/corpus}"
