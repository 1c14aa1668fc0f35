#!/usr/bin/env bash
# The offload's mixed run: established traffic through the worker's path and through the
# XDP program, each alone and under a SYN flood the worker cannot take, in one invocation
# on the namespace testbed (testbed.sh):
#
#   offload-mixed.sh ROOT [RUNS] [same|apart]
#
# same (the default): the flood aims at the MAT VIP, whose nodes are on the client's
# side, so the SYNs the worker forwards leave by eth-c, as the transfer's replies do.
# apart: it aims at a MAT service of its own (198.18.1.30:80) whose one node is the flood
# host, so they leave by eth-f. On veth the frames a link sends share its peer's one
# 256-frame ring (a NIC's XDP transmit rings are the driver's own, apart from the
# socket's queue); "veth_lost" below shows what that ring lost.
# (FULCRUM_BIN: where fulcrum and fulcrum-bench are.)
# For dataplane.offload off, then established (no admission budget, so that nothing but
# the offload shields the established flows): a daemon (ROOT/.build/release/fulcrum if
# built, else debug) serving the testbed's groups and bulk-nat (198.18.1.20:9000 to
# n1..n3:9000, Bench/testbed/bulk-transfer.py on each); RUNS (3) transfers of 120 MB each
# way from the client without a flood, then RUNS with CPU 1 only kept busy (stress-ng, no
# frames: the control), then RUNS with a SYN flood from the flood host (fulcrum-bench
# flood, as fast as it goes, on CPU 1, the worker's) running through the transfer. The
# load starts once the transfer's connection is established (offloaded, with offload on),
# so what is measured is established flows under the flood. The
# worker and the flood generator run on CPU 1, the client and the servers on CPU 0
# (taskset), so that the flood takes no CPU from them: what changes under the flood is the
# LB's path. (On veth a receive queue's frames are processed by whichever CPU scheduled
# its NAPI first: mostly CPU 0 for the transfer's, CPU 1 for the flood's, but they share
# queues.) The control shows what a busy CPU 1 alone costs the hosts on CPU 0 (a VM's
# vCPUs may share a physical core). The transfer's time includes the part before the
# load started (up to about 0.3 s of 4–5 s). Prints one JSON line per transfer:
#   {"offload": …, "flood": true|false|"busy", "ok": …, "established_first": whether the
#    connection was seen established (offloaded) before the load started (a run where it
#    was not is left out of the medians), "mbit_s": both directions' bytes × 8 / s,
#    "flood_offered": SYNs the flood sent (it and the busy load run 15 s, past the transfer),
#    "veth_lost": frames the LB's veths lost during the transfer (XDP_TX and redirect
#    failures, full receive rings), "veth_lost_by_counter": which counters moved,
#    "retransmitted": TCP segments the client and the nodes retransmitted during it}
# and a summary line per offload setting: the median Mbit/s alone, with CPU 1 busy and
# under the flood, and the flood's ratios to both. Only 198.18.0.0/15, only in the
# namespaces it creates; removes them and every process it started on exit. Needs root.
set -euo pipefail
ROOT=$(cd "${1:?usage: offload-mixed.sh ROOT [RUNS] [same|apart]}" && pwd)
RUNS=${2:-3}
AIM=${3:-same}
case $AIM in
    same) FLOOD_VIP=198.18.1.10 ;;
    apart) FLOOD_VIP=198.18.1.30 ;;
    *) echo "offload-mixed: aim the flood 'same' or 'apart', not '$AIM'" >&2; exit 2 ;;
esac
SIZE=120000000
command -v stress-ng >/dev/null || { echo "offload-mixed: stress-ng is missing (make setup)" >&2; exit 1; }
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
# syn: 1: the flood's half-open entries fill the flow table; they expire a second after
# each flood, so that the next run's connection finds room (a connection the table cannot
# hold is decided statelessly, and never offloaded).
base=$(sed 's/^  flow_table_size: 65536$/  flow_table_size: 65536\n  cores: [1]\n  admission:\n    new_connections_per_second: 0\n  timeouts:\n    syn: 1/' "$DIR/lb.yaml")
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
# apart: the flood's own service, out of eth-f to the flood host (which does not hold the
# VIP, so its kernel drops what it is sent; no health check, so the node is up).
[ "$AIM" = apart ] && bulk_group="$bulk_group
  - name: flood-sink
    vip: \"$FLOOD_VIP\"
    protocol: tcp
    ports: [80]
    method: mat
    scheduler: wrr
    interface: eth-f
    nodes:
      - address: \"198.18.3.2\""
LBMAC=$(x lb cat /sys/class/net/eth-f/address)

# The daemon's status file (rewritten every 0.2 s): with no argument, prints the bulk-nat
# group's new flows so far; with OFFLOAD BEFORE, waits (up to 3 s) until that count passed
# BEFORE (this run's connection) and, with offload on, a flow is offloaded.
status() {
    python3 - "$DIR/mixed-status.json" "$@" <<'PY'
import json, sys, time
def counts():
    try:
        s = json.load(open(sys.argv[1]))
        new = sum(n.get("new_flows", 0) for g in s["groups"] if g["name"] == "bulk-nat" for n in g["nodes"])
        return new, ((s.get("dataplane") or {}).get("offload") or {}).get("flows", 0)
    except Exception:
        return 0, 0
if len(sys.argv) == 2:
    print(counts()[0])
    sys.exit(0)
offload, before = sys.argv[2], int(sys.argv[3])
deadline = time.time() + 3
while time.time() < deadline:
    new, offloaded = counts()
    if new > before and (offload == "off" or offloaded >= 1):
        sys.exit(0)
    time.sleep(0.05)
print("offload-mixed: the transfer was not seen established in 3 s", file=sys.stderr)
sys.exit(1)
PY
}

# The LB's veths' loss counters (`ethtool -S` on eth-c and eth-n: XDP_TX and redirect
# failures, drops at a full receive ring), one "interface:counter value" line each, and
# "retransmitted N": the TCP segments the client and the nodes retransmitted so far.
losses() {
    for i in eth-c eth-n; do
        # (not rx_queue_N_xdp_drops: those are the XDP program's own XDP_DROP verdicts)
        x lb ethtool -S "$i" | awk -v i="$i" '/xdp_tx_errors:|xdp_xmit_errors:|rx_queue_[0-9]+_drops:/ {sub(":", "", $1); print i ":" $1, $2}'
    done
    local re=0 n
    for h in client n1 n2 n3; do
        n=$(x "$h" nstat -az TcpRetransSegs | awk '$1 == "TcpRetransSegs" {print $2}')
        re=$((re + ${n:-0}))
    done
    echo "retransmitted $re"
}

# What moved between two `losses`: the veths' counters that did, as a JSON object, and
# the retransmissions.
lost_between() {
    python3 - "$1" "$2" <<'PY'
import json, sys
def read(path):
    return {k: int(v) for k, v in (l.split() for l in open(path) if l.strip())}
a, b = read(sys.argv[1]), read(sys.argv[2])
moved = {k: b[k] - a.get(k, 0) for k in sorted(b) if k != "retransmitted" and b[k] != a.get(k, 0)}
print('"veth_lost": %d, "veth_lost_by_counter": %s, "retransmitted": %d'
      % (sum(moved.values()), json.dumps(moved), b["retransmitted"] - a["retransmitted"]))
PY
}

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
    : >"$DIR/without" ; : >"$DIR/with" ; : >"$DIR/busy"
    for flood in false busy true; do
        for run in $(seq "$RUNS"); do
            # The transfer first, and established (offloaded, with offload on) before the
            # flood or the load starts: the flows under test are established ones, whose
            # handshake did not have to get through a flooded worker.
            before=$(status)
            losses >"$DIR/losses-before"
            x client taskset -c 0 timeout 70 python3 "$ROOT/Bench/testbed/bulk-transfer.py" send 198.18.1.20 9000 "$SIZE" \
                --seed "$run" >"$DIR/transfer.json" &
            TRANSFER=$!
            seen=true
            status "$offload" "$before" || seen=false
            LOAD=
            case $flood in
                busy)
                    taskset -c 1 stress-ng --cpu 1 --timeout 15 --quiet </dev/null >/dev/null 2>&1 &
                    LOAD=$! ;;
                true)
                    x flood "$BIN/fulcrum-bench" flood --interface eth0 --destination-mac "$LBMAC" --target "$FLOOD_VIP" \
                        --port 80 --rate 0 --seconds 15 --root "$ROOT" --cpu 1 >"$DIR/flood.json" 2>/dev/null &
                    LOAD=$! ;;
            esac
            wait "$TRANSFER" || true
            losses >"$DIR/losses-after"
            line=$(cat "$DIR/transfer.json")
            offered=0
            [ -n "$LOAD" ] && { wait "$LOAD" || true; }  # to its end: the next run starts without it
            sleep 2  # the flood's half-open entries expire (syn: 1)
            if [ "$flood" = true ]; then
                offered=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])["offered"])' "$DIR/flood.json" 2>/dev/null || echo 0)
            fi
            mbit=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(round(2*int(sys.argv[2])*8/r["seconds"]/1e6, 1) if r["ok"] else 0)' "$line" "$SIZE" 2>/dev/null || echo 0)
            ok=$(python3 -c 'import json,sys; print(str(json.loads(sys.argv[1])["ok"]).lower())' "$line" 2>/dev/null || echo false)
            label=$flood; [ "$flood" = busy ] && label='"busy"'
            moved=$(lost_between "$DIR/losses-before" "$DIR/losses-after")
            echo "{\"offload\": \"$offload\", \"flood\": $label, \"run\": $run, \"ok\": $ok, \"established_first\": $seen, \"mbit_s\": $mbit, \"flood_offered\": $offered, $moved}"
            # Not a run of an established flow, or a failed transfer: not in the medians.
            [ "$seen" = true ] && [ "$ok" = true ] || continue
            case $flood in
                true) echo "$mbit" >>"$DIR/with" ;;
                busy) echo "$mbit" >>"$DIR/busy" ;;
                *) echo "$mbit" >>"$DIR/without" ;;
            esac
        done
    done
    kill -9 "$DAEMON" 2>/dev/null || true
    wait "$DAEMON" 2>/dev/null || true
    DAEMON=
    a=$(median <"$DIR/without"); c=$(median <"$DIR/busy"); b=$(median <"$DIR/with")
    echo "{\"offload\": \"$offload\", \"summary\": true, \"flood_aimed\": \"$AIM\", \"median_mbit_s_alone\": $a, \"median_mbit_s_cpu1_busy\": $c, \"median_mbit_s_under_flood\": $b, \"ratio\": $(python3 -c "print(round($b / $a, 2) if $a else 0)"), \"ratio_to_busy\": $(python3 -c "print(round($b / $c, 2) if $c else 0)")}"
done
