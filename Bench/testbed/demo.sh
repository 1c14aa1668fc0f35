#!/usr/bin/env bash
# `make demo`: Fulcrum forwarding real TCP and UDP through MAT and NAT groups, IPv4 and
# IPv6, on a namespace testbed; then a live drain by reload, changes through the control
# API with fulcrumctl, health checks and the sorry server; last, an active/standby pair
# whose active is killed mid-traffic. Cleans up on exit.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
P=flcdemo$$
DIR=$(mktemp -d /tmp/fulcrum-demo.XXXXXX)
FULCRUM=$root/.build/debug/fulcrum
PEER=$root/.build/debug/fulcrum-testpeer
daemon=
PP=flcpair$$
PDIR=$DIR/pair
cleanup() {
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
    "$root/Bench/testbed/testbed.sh" down "$P"
    "$root/Bench/testbed/testbed.sh" down "$PP"
    rm -rf "$DIR"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Testbed: client + 3 MAT nodes on the front segment, 3 NAT nodes behind the LB"
"$root/Bench/testbed/testbed.sh" up "$P" "$DIR"
# Health checks on web-nat (TCP, every 0.5 s), and an event log.
python3 - "$DIR/lb.yaml" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
group = "  - name: web-nat\n"
head, rest = text.split(group, 1)
rest = rest.replace("    nodes:\n", "    health_check:\n      type: tcp\n      interval: 0.5\n      timeout: 0.25\n"
                    "      rise: 2\n      fall: 2\n    nodes:\n", 1)
open(path, "w").write(head + group + rest + "events:\n  file: " + path.rsplit("/", 1)[0] + "/events.jsonl\n")
PY
ip netns exec "$P-lb" "$FULCRUM" check --config "$DIR/lb.yaml"   # where it will run: interfaces, queues, cores

step "Starting fulcrum in the LB namespace (log: $DIR/lb.log)"
ip netns exec "$P-lb" "$FULCRUM" run --config "$DIR/lb.yaml" --status-file "$DIR/status.json" >"$DIR/lb.log" 2>&1 &
daemon=$!
for _ in $(seq 1 100); do
    [ -f "$DIR/status.json" ] && ! grep -q '"mac" : null' "$DIR/status.json" && grep -q '"mac"' "$DIR/status.json" && break
    kill -0 "$daemon" 2>/dev/null || { cat "$DIR/lb.log"; exit 1; }
    sleep 0.2
done
sed 's/^/  /' "$DIR/lb.log" | head -8

step "Traffic from the client: 300 requests per service, each answered by a node's server"
client() { ip netns exec "$P-client" "$PEER" client --text --target "$1" --port "$2" --proto "$3" --count 300; }
client 198.18.1.10 80 tcp      # MAT, weights 3:2:1 → m1 m2 m3
client 198.18.1.10 443 tcp
client 198.18.1.10 53 udp
client 198.18.1.20 80 tcp      # NAT → n1..n3 port 8080, replies back through the LB
client 198.18.1.20 53 udp      # NAT → n1..n3 port 5353
client 2001:2:1::10 80 tcp     # MAT over IPv6
client 2001:2:1::20 80 tcp     # NAT over IPv6
client 2001:2:1::20 53 udp
sleep 0.5
step "What the LB counted"
"$FULCRUM" status --status-file "$DIR/status.json"

step "Drain n1 in web-nat (weight 0) and reload with SIGHUP: no new flows reach n1"
sed -i '/name: web-nat/,/name: dns-nat/ s/        weight: 3/        weight: 0/' "$DIR/lb.yaml"
kill -HUP "$daemon"
for _ in $(seq 1 50); do grep -q '"version" : 2' "$DIR/status.json" && break; sleep 0.2; done
client 198.18.1.20 80 tcp

step "The control API: fulcrumctl sets m1's weight to 1 and drains m3 in web-mat, under no reload"
export FULCRUM_API="unix:$DIR/api.sock" FULCRUM_TOKEN_FILE="$DIR/api.token"
CTL=$root/.build/debug/fulcrumctl
"$CTL" node set-weight web-mat 198.18.0.11 1 | sed 's/^/  /'
"$CTL" node drain web-mat 198.18.0.13 | sed 's/^/  /'
client 198.18.1.10 80 tcp      # m1:m2 = 1:2 now, m3 drained
"$CTL" status | sed -n '1,8p' | sed 's/^/  /'
"$CTL" events --severity notice | tail -n 3 | sed 's/^/  /'

# wait_status TEXT: until the status file says TEXT (at most 10 s)
wait_status() { for _ in $(seq 1 50); do grep -q "$1" "$DIR/status.json" && return 0; sleep 0.2; done; return 1; }

step "Health: n2's server is killed; its checks fail twice and it is taken out"
kill $(ip netns pids "$P-n2")
wait_status '"health_detail" : "refused"'
"$FULCRUM" events --file "$DIR/events.jsonl" --severity warning | tail -n 1 | sed 's/^/  /'
client 198.18.1.20 80 tcp      # n1 drained, n2 down: every new connection to n3, none fails

step "Every node down: the sorry server answers"
kill $(ip netns pids "$P-n1") $(ip netns pids "$P-n3")
for _ in $(seq 1 50); do [ "$(grep -c '"state" : "down"' "$DIR/status.json")" -ge 3 ] && break; sleep 0.2; done
"$FULCRUM" events --file "$DIR/events.jsonl" --severity error | sed 's/^/  /'
client 198.18.1.20 80 tcp

step "Stopping (SIGTERM): XDP detached, the interfaces are plain again"
kill "$daemon"; wait "$daemon" || true; daemon=
tail -n 2 "$DIR/lb.log" | sed 's/^/  /'
ip -n "$P-lb" link show eth-c | grep -q prog/xdp && echo "  XDP still attached!" || echo "  eth-c: no XDP program"

step "The active/standby pair: lb1 (master) and lb2 (slave), heartbeats every 50 ms on two interconnects"
PAIR=1 "$root/Bench/testbed/testbed.sh" up "$PP" "$PDIR" >/dev/null
ip netns exec "$PP-lb" "$FULCRUM" run --config "$PDIR/pair-lb1.yaml" --status-file "$PDIR/s1.json" >"$PDIR/lb1.log" 2>&1 &
lb1=$!
for _ in $(seq 1 100); do grep -q '"role" : "active"' "$PDIR/s1.json" 2>/dev/null && break; sleep 0.1; done
ip netns exec "$PP-lb2" "$FULCRUM" run --config "$PDIR/pair-lb2.yaml" --status-file "$PDIR/s2.json" >"$PDIR/lb2.log" 2>&1 &
lb2=$!
for _ in $(seq 1 100); do grep -q '"role" : "standby"' "$PDIR/s2.json" 2>/dev/null && break; sleep 0.1; done
CTL=$root/.build/debug/fulcrumctl
"$CTL" status --api "unix:$PDIR/lb1-api.sock" --token-file "$PDIR/api.token" | sed -n '3,7p' | sed 's/^/  /'
mac1=$(ip netns exec "$PP-lb" cat /sys/class/net/eth-c/address)
mac2=$(ip netns exec "$PP-lb2" cat /sys/class/net/eth-c/address)

step "Kill -9 the active mid-traffic: 20 held connections and a new one every 10 ms"
ip netns exec "$PP-client" "$PEER" chat --target 198.18.1.10 --port 80 --held 20 --seconds 3 --interval 0.05 --new-every 0.01 \
    >"$PDIR/chat.out" &
chat=$!
sleep 1
kill -9 "$lb1"
{ wait "$lb1"; } 2>/dev/null || true
wait "$chat" || true
python3 - "$PDIR/chat.out" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().split("\n")[-1])
print(f"  the client saw: {r['broken']} broken of {r['opened']} connections, {r['failedNew']} failed new ones, "
      f"the longest wait for an answer {r['maxGapMs']} ms, the longest a new one took to open {r['maxOpenMs']} ms")
PY
owner=$(ip -n "$PP-client" neigh show 198.18.1.10 | awk '{print $5}')
[ "$owner" = "$mac2" ] && echo "  the VIP 198.18.1.10 is now answered by lb2 ($owner)" || echo "  the VIP's neighbour entry: $owner (lb1 $mac1, lb2 $mac2)"
"$FULCRUM" events --file "$PDIR/lb2-events.jsonl" --severity warning | grep -v priority | tail -n 4 | sed 's/^/  /'
kill "$lb2"; wait "$lb2" 2>/dev/null || true

