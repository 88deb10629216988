#!/usr/bin/env bash
# start-clamd.sh DBDIR PORT WORKDIR
#
# Runs a throwaway clamd in the foreground for tests: it loads the signatures in
# DBDIR, listens on 127.0.0.1:PORT only (no unix socket), and keeps its config,
# log, pid file and temporary files in WORKDIR. The script execs clamd, so the
# caller's child process *is* clamd: killing it kills clamd.
#
# clamd needs a few seconds to load even a tiny database and only then opens its
# port; callers wait for `zPING` to answer `PONG` rather than sleeping.
#
# The binary is $PAMPA_CLAMD if set, else /usr/sbin/clamd (Debian's
# clamav-daemon), else clamd from PATH.
set -euo pipefail

if [[ $# -ne 3 ]]; then
    echo "usage: $0 DBDIR PORT WORKDIR" >&2
    exit 2
fi
dbdir=$(readlink -f "$1")
port=$2
workdir=$(readlink -f "$3")

clamd=${PAMPA_CLAMD:-}
if [[ -z "$clamd" ]]; then
    if [[ -x /usr/sbin/clamd ]]; then
        clamd=/usr/sbin/clamd
    else
        clamd=$(command -v clamd || true)
    fi
fi
if [[ -z "$clamd" || ! -x "$clamd" ]]; then
    echo "$0: clamd not found (install clamav-daemon or set PAMPA_CLAMD)" >&2
    exit 127
fi
[[ -d "$dbdir" ]] || { echo "$0: no database directory $dbdir" >&2; exit 2; }
[[ "$port" =~ ^[0-9]+$ ]] || { echo "$0: bad port $port" >&2; exit 2; }

mkdir -p "$workdir/tmp"
conf=$workdir/clamd.conf
# - No LocalSocket line: clamd opens no unix socket, so parallel test runs
#   never fight over /run/clamav/clamd.ctl.
# - User is whoever runs the tests. clamd only switches users when started as
#   root, and then it must stay able to read DBDIR and write WORKDIR.
# - StreamMaxLength matches pampa's default max_scan_bytes (25 MiB): clamd
#   accepts a stream of exactly that size and refuses one byte more.
cat >"$conf" <<EOF
Foreground yes
TCPSocket $port
TCPAddr 127.0.0.1
DatabaseDirectory $dbdir
TemporaryDirectory $workdir/tmp
LogFile $workdir/clamd.log
LogTime yes
PidFile $workdir/clamd.pid
User $(id -un)
StreamMaxLength 25M
EOF

exec "$clamd" -c "$conf"
