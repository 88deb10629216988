#!/usr/bin/env bash
# The full pipeline, end to end, side by side on this machine: messages per second and
# p50/p99 latency from SMTP's 250 to the file in the recipient's Maildir new/, for
# `pampa up` (rbl against pampa's own DNSBL zone -> whitelist -> score -> deliver; then
# with the antivirus stage and clamd, when ClamAV signatures are present), Postfix +
# SpamAssassin (spamd -L via spamc in a delivering pipe) and Postfix + rspamd (milter).
# Prints a table with the ratios pampa/peer and writes results/pipeline.json.
#
#   SKIP_BUILD=1 ops/bench/pipeline.sh
#
# Environment: MESSAGES (default 2000; MESSAGES_SA for Postfix + SpamAssassin, default
# 200), SESSIONS (concurrent senders, default 20), SIZE_KIB (body, default 4), SYSTEMS
# (default "pampa,pampa-clamd,postfix-spamassassin,postfix-rspamd"), TIMEOUT (seconds to
# wait for the last delivery, default 300), SMTPD_PROCS (100), PIPE_PROCS (spamc pipes,
# 20), WORKDIR (a real disk), SKIP_BUILD=1 to use target/release/pampa as it is.
# Installs postfix (debconf "No configuration"), spamd, spamc and rspamd from Debian
# when missing; never starts the system's services: every server runs from a throwaway
# config on free loopback ports and is stopped at the end.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.."

source ops/bench/lib.sh
install_missing postfix spamd spamc rspamd
build_release
exec python3 ops/bench/pipeline_bench.py
