#!/usr/bin/env bash
# Renders node.conf.template into the three node configs of a JetStream cluster.
#
#   ops/nats/render.sh OUTDIR HOST1 HOST2 HOST3
#       three machines; each node uses the standard ports (client 4222, cluster 6222,
#       monitoring 8222) on its own address.
#   ops/nats/render.sh --loopback OUTDIR
#       three nodes on 127.0.0.1 of one machine (to try a cluster, or for tests):
#       n1, n2, n3 on client ports 4222-4224, cluster 6222-6224, monitoring 8222-8224.
#
# NATS_CLIENT_PORT, NATS_CLUSTER_PORT and NATS_MONITOR_PORT change the first port of
# each kind (defaults 4222, 6222, 8222); on loopback n2 and n3 take the next two.
# Writes OUTDIR/n1.conf, n2.conf and n3.conf. Each node keeps its JetStream store in
# ${NATS_STORE_ROOT:-/var/lib/nats}/NAME (the StateDirectory of
# ops/systemd/nats-server@.service). Check a file with `nats-server -t -c FILE`;
# nats-server 2.10 or later is needed (sync_interval).
set -euo pipefail

here=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
template=$here/node.conf.template
store_root=${NATS_STORE_ROOT:-/var/lib/nats}
client_port=${NATS_CLIENT_PORT:-4222}
cluster_port=${NATS_CLUSTER_PORT:-6222}
monitor_port=${NATS_MONITOR_PORT:-8222}

usage() {
    sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

loopback=0
if [[ "${1:-}" == "--loopback" ]]; then
    loopback=1
    shift
    [[ $# -eq 1 ]] || usage
    outdir=$1
    hosts=(127.0.0.1 127.0.0.1 127.0.0.1)
else
    [[ $# -eq 4 ]] || usage
    outdir=$1
    hosts=("$2" "$3" "$4")
fi

# port BASE I: the node's port; on loopback the three nodes need different ones.
port() { if ((loopback)); then echo $(($1 + $2)); else echo "$1"; fi; }

mkdir -p "$outdir"
for i in 0 1 2; do
    name=n$((i + 1))
    routes=()
    for j in 0 1 2; do
        ((j == i)) || routes+=("nats-route://${hosts[j]}:$(port "$cluster_port" "$j")")
    done
    route_text=$(printf '%s,\n        ' "${routes[@]}")
    route_text=${route_text%,$'\n'        }
    # The values hold no sed metacharacters but "/", so "|" delimits.
    sed -e "s|@NAME@|$name|g" \
        -e "s|@HOST@|${hosts[i]}|g" \
        -e "s|@CLIENT_PORT@|$(port "$client_port" "$i")|g" \
        -e "s|@CLUSTER_PORT@|$(port "$cluster_port" "$i")|g" \
        -e "s|@MONITOR_PORT@|$(port "$monitor_port" "$i")|g" \
        -e "s|@STORE_DIR@|$store_root/$name|g" \
        "$template" |
        awk -v routes="$route_text" '{ sub(/@ROUTES@/, routes); print }' >"$outdir/$name.conf"
done
echo "wrote $outdir/n1.conf $outdir/n2.conf $outdir/n3.conf" >&2
