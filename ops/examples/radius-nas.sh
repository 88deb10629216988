#!/usr/bin/env bash
# The NAS clients (BNGs, Wi-Fi controllers ...) pampa's RADIUS role answers. They live
# in the SQL directory, not in a config file, so this is a list of `pampa nas add`
# commands: edit the table below, then run
#
#   runuser -u pampa -- env PAMPA_CONFIG=/etc/pampa/pampa.toml ./radius-nas.sh
#
# against any config of the deployment (they share [db]). Packets from a source that no
# entry covers are dropped (and counted in pampa_radius_dropped_total{reason="unknown_nas"}).
# A network already registered is kept as it is: to change its secret, run
# `pampa nas remove NETWORK` first. `pampa nas list` shows the result.
#
# Secrets: one per NAS or site, 16 bytes or more, the same as configured on the NAS:
# `openssl rand -base64 24`. The script refuses to run while a CHANGE-ME is left.
set -euo pipefail

PAMPA=${PAMPA:-/usr/bin/pampa}
PAMPA_CONFIG=${PAMPA_CONFIG:-/etc/pampa/pampa.toml}

# NETWORK              SECRET                         OPTIONS / DESCRIPTION
nas_table() {
    cat <<'TABLE'
198.51.100.0/28       CHANGE-ME-bng-site-a-secret     BNG routers, site A (PPPoE)
2001:db8:100::/64     CHANGE-ME-bng-v6-secret         BNG routers, IPv6 management network
203.0.113.10/32       CHANGE-ME-wifi-controller       Wi-Fi controller, hotspots
203.0.113.20/32       CHANGE-ME-old-dslam-secret      --no-message-authenticator Legacy DSLAM without Message-Authenticator (BlastRADIUS risk: replace it)
127.0.0.1/32          CHANGE-ME-local-monitoring      radclient health checks from this machine
TABLE
}

pampa() { "$PAMPA" --config "$PAMPA_CONFIG" "$@"; }

if nas_table | grep -q 'CHANGE-ME'; then
    echo "radius-nas.sh: replace every CHANGE-ME secret in $0 first" >&2
    exit 1
fi

registered=$(pampa nas list --json)
while read -r network secret rest; do
    [[ -n "$network" ]] || continue
    options=()
    if [[ "$rest" == --no-message-authenticator* ]]; then
        options+=(--no-message-authenticator)
        rest=${rest#--no-message-authenticator}
        rest=${rest# }
    fi
    if grep -q "\"network\": \"$network\"" <<<"$registered"; then
        echo "NAS $network is registered already; kept."
        continue
    fi
    pampa nas add "$network" --secret "$secret" "${options[@]}" --description "$rest"
done < <(nas_table)
