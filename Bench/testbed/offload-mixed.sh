#!/usr/bin/env bash
# The offload's mixed run: established traffic through the worker's path and through the
# XDP program, each alone and under a SYN flood the worker cannot take, in one invocation
# on the namespace testbed (testbed.sh):
#
#   offload-mixed.sh ROOT [RUNS]
#
# (FULCRUM_BIN: where fulcrum and fulcrum-bench are.)
# For dataplane.offload off, then established (no admission budget, so that nothing but
# the offload shields the established flows): a daemon (ROOT/.build/release/fulcrum if
# built, else debug) serving the testbed's groups and bulk-nat (198.18.1.20:9000 to
# n1..n3:9000, Bench/testbed/bulk-transfer.py on each); RUNS (3) transfers of 20 MB each
# way from the client without a flood, then RUNS with a SYN flood from the flood host
# (fulcrum-bench flood, as fast as it goes, on CPU 1, the worker's) running through the
# transfer. The worker and the flood generator run on CPU 1, the client and the servers on
# CPU 0 (taskset), so that the flood takes no CPU from them: what changes under the flood
# is the LB's path (on veth the XDP program runs on the sending CPU: the offloaded frames'
# on CPU 0, the flood's on CPU 1). Prints one JSON line per transfer:
#   {"offload": …, "flood": true|false, "ok": …, "mbit_s": both directions' bytes × 8 / s,
#    "flood_offered": SYNs sent during it}
# and a summary line per offload setting: the median Mbit/s without and with the flood and
# their ratio. Only 198.18.0.0/15, only in the namespaces it creates; removes them and
# every process it started on exit. Needs root.
set -euo pipefail
ROOT=$(cd "${1:?usage: offload-mixed.sh ROOT [RUNS]}" && pwd)
RUNS=${2:-3}
SIZE=20000000
P=flm$$
DIR=$(mktemp -d /tmp/flm.XXXXXX)
BIN=${FULCRUM_BIN:-$ROOT/.build/release}
[ -x "$BIN/fulcrum" ] || BIN=$ROOT/.build/debug
DAEMON=
cleanup() {
    [ -n "$DAEMON" ] && kill -9 "$DAEMON" 2>/dev/null || true
    "$ROOT/Bench/testbed/testbed.sh" down "$P" >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap cleanup EXIT
"$ROOT/Bench/testbed/testbed.sh" up "$P" "$DIR" >/dev/null
x() { ip netns exec "$P-$1" "${@:2}"; }
for i in 1 2 3; do
    x n$i taskset -c 0 python3 "$ROOT/Bench/testbed/bulk-transfer.py" serve 9000 </dev/null >/dev/null 2>&1 &
done
base=$(sed 's/^  flow_table_size: 65536$/  flow_table_size: 65536\n  cores: [1]\n  admission:\n    new_connections_per_second: 0/' "$DIR/lb.yaml")
bulk_group='  - name: bulk-nat
    vip: "198.18.1.20"
    protocol: tcp
    ports: [9000]
    method: nat
    scheduler: wrr
    interface: eth-n
    nodes:
      - address: "198.18.2.11"
        port: 9000
      - address: "198.18.2.12"
        port: 9000
      - address: "198.18.2.13"
        port: 9000'
LBMAC=$(x lb cat /sys/class/net/eth-f/address)

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

for offload in off established; do
    printf '%s\n' "$base" | sed "s/^  flow_table_size: 65536$/  flow_table_size: 65536\n  offload: $offload/" >"$DIR/mixed.yaml"
    printf '%s\n' "$bulk_group" >>"$DIR/mixed.yaml"
    rm -f "$DIR/mixed-status.json"
    ip netns exec "$P-lb" "$BIN/fulcrum" run --config "$DIR/mixed.yaml" --status-file "$DIR/mixed-status.json" \
        </dev/null >"$DIR/mixed-$offload.log" 2>&1 &
    DAEMON=$!
    # Up when a small transfer goes through (the servers and the node MACs too).
    for _ in $(seq 100); do
        if x client python3 "$ROOT/Bench/testbed/bulk-transfer.py" send 198.18.1.20 9000 1000 2>/dev/null | grep -q '"ok": true'; then
            break
        fi
        sleep 0.2
    done
    : >"$DIR/without" ; : >"$DIR/with"
    for flood in false true; do
        for run in $(seq "$RUNS"); do
            FLOOD=
            if [ "$flood" = true ]; then
                x flood "$BIN/fulcrum-bench" flood --interface eth0 --destination-mac "$LBMAC" --target 198.18.1.10 \
                    --port 80 --rate 0 --seconds 8 --root "$ROOT" --cpu 1 >"$DIR/flood.json" 2>/dev/null &
                FLOOD=$!
                sleep 1
            fi
            line=$(x client timeout 70 taskset -c 0 python3 "$ROOT/Bench/testbed/bulk-transfer.py" send 198.18.1.20 9000 "$SIZE" --seed "$run")
            offered=0
            if [ -n "$FLOOD" ]; then
                wait "$FLOOD" || true
                offered=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])["offered"])' "$DIR/flood.json" 2>/dev/null || echo 0)
            fi
            mbit=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(round(2*int(sys.argv[2])*8/r["seconds"]/1e6, 1) if r["ok"] else 0)' "$line" "$SIZE")
            ok=$(python3 -c 'import json,sys; print(str(json.loads(sys.argv[1])["ok"]).lower())' "$line")
            echo "{\"offload\": \"$offload\", \"flood\": $flood, \"run\": $run, \"ok\": $ok, \"mbit_s\": $mbit, \"flood_offered\": $offered}"
            if [ "$flood" = true ]; then echo "$mbit" >>"$DIR/with"; else echo "$mbit" >>"$DIR/without"; fi
        done
    done
    kill -9 "$DAEMON" 2>/dev/null || true
    wait "$DAEMON" 2>/dev/null || true
    DAEMON=
    a=$(median <"$DIR/without"); b=$(median <"$DIR/with")
    echo "{\"offload\": \"$offload\", \"summary\": true, \"median_mbit_s_alone\": $a, \"median_mbit_s_under_flood\": $b, \"ratio\": $(python3 -c "print(round($b / $a, 2) if $a else 0)")}"
done
