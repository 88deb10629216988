#!/usr/bin/env bash
# Fuzzes pampa's hostile-input paths with cargo-fuzz (issue 8).
#
#   ops/fuzz.sh                      # every target, FUZZ_SECONDS (60) each
#   FUZZ_SECONDS=600 ops/fuzz.sh dns_message smtp_session
#
# Targets (fuzz/fuzz_targets/):
#   smtp_session   a whole SMTP session of pampa-ingest on loopback, from client bytes
#   radius_packet  the RADIUS decoder, attributes, accounting records, authenticators
#   dns_message    DNS wire queries to a live pampa-dns on loopback; dataset and zone text
#   rule_file      the SpamAssassin-style .cf loader and compiler of pampa-stages
#   mime_message   the MIME path of the score and rbl stages (rules, tokenizer, links)
#   relay_session  the relay's SMTP client against a hostile remote MX on loopback
#
# The seed corpus is committed in fuzz/corpus/<target>/; inputs found during a run go to
# fuzz/target/corpus/<target>/ (not committed: add the good ones with `cargo fuzz cmin`).
# A crash, leak or timeout leaves its input in fuzz/artifacts/<target>/ (crash-*, oom-*,
# timeout-*), and this script exits non-zero after the remaining targets have run.
# Reproduce one with:
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/crash-…
#
# Environment:
#   FUZZ_SECONDS   time per target (default 60), libFuzzer's -max_total_time
#   FUZZ_SANITIZER address (default) or none; `none` builds faster and runs ~2x faster
#   FUZZ_NICE      niceness of builds and runs (default 10)
#   FUZZ_ARGS      extra libFuzzer flags, e.g. "-max_len=8192"
#   FUZZ_BUILD     extra cargo-fuzz build flags, e.g. "--release" (no debug assertions)
#
# Found so far: a debug_assert! inside mail-parser 0.11.9 (parsers/message.rs:485,
# "Invalid part ID, could not find multipart"), reached by mime_message with the input in
# fuzz/crashes/. The stages now parse through pampa_stages::mime::parse, which catches it
# and reads the message as text; stages/src/mime.rs holds the regression test.
#
# cargo-fuzz needs nightly flags; on the stable toolchain RUSTC_BOOTSTRAP=1 allows them.
# One libFuzzer process at a time (no -jobs/-workers): the machine is shared.
set -euo pipefail

cd "$(dirname "$0")/.."
ALL=(smtp_session radius_packet dns_message rule_file mime_message relay_session)
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=("${ALL[@]}")
SECONDS_EACH="${FUZZ_SECONDS:-60}"
SANITIZER="${FUZZ_SANITIZER:-address}"
NICE="${FUZZ_NICE:-10}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    nice -n 15 cargo install cargo-fuzz --locked
fi

for t in "${TARGETS[@]}"; do
    case " ${ALL[*]} " in
        *" $t "*) ;;
        *) echo "fuzz.sh: unknown target $t (known: ${ALL[*]})" >&2; exit 2 ;;
    esac
done

cd fuzz
failed=()
for t in "${TARGETS[@]}"; do
    # shellcheck disable=SC2086
    echo "== $t: building (sanitizer: $SANITIZER)" >&2
    nice -n "$NICE" cargo fuzz build --sanitizer "$SANITIZER" ${FUZZ_BUILD:-} "$t"
    work="target/corpus/$t"
    mkdir -p "$work" "artifacts/$t"
    echo "== $t: fuzzing for ${SECONDS_EACH}s" >&2
    # Found inputs go to the work corpus; the committed seeds are read only.
    # shellcheck disable=SC2086
    if ! nice -n "$NICE" cargo fuzz run --sanitizer "$SANITIZER" ${FUZZ_BUILD:-} "$t" "$work" "corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -timeout=20 -rss_limit_mb=4096 \
        -print_final_stats=1 ${FUZZ_ARGS:-}; then
        echo "== $t: FAILED; the input is in fuzz/artifacts/$t/" >&2
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz.sh: no crash in ${TARGETS[*]} (${SECONDS_EACH}s each)" >&2
