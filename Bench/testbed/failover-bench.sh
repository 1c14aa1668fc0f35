#!/usr/bin/env bash
# `fulcrum-bench failover`: the outage a client sees when the active LB of a pair is killed
# (SIGKILL) or loses its link, for Fulcrum and for keepalived (VRRPv3 moving the same VIP,
# nftables NAT behind it) on the same pair testbed, in one run.
#
#   failover-bench.sh ROOT RUNS KA_FAST
# RUNS kills, RUNS link cuts and RUNS planned switchovers per system (Fulcrum's
# `fulcrumctl failover`; keepalived's SIGTERM, its graceful hand-over: it sends priority 0
# as it leaves); KA_FAST is keepalived's fastest advert_int
# (its default, 1 s, is measured too). The client sends a UDP request to the VIP every 2 ms
# (failover-probe.py); the outage is its longest run of unanswered requests. Prints one
# JSON line per measurement: {"system", "fault", "outage_ms", "sent", "answered"}.
# Only 198.18.0.0/15, only in the namespaces it creates; removes them on exit.
# Environment: FULCRUM_BENCH_ONLY=fulcrum|keepalived runs only that system's section (both
# when unset); FULCRUM_BENCH_KEEP=1 keeps the log directory (its path goes to stderr).
# Before every fault the testbed is checked (the MAT servers up, and for keepalived: the VIP
# on the active LB only, a backup running, NAT on both LBs); after it, the servers again. A
# measurement through dead servers would read as 100 % lost, so the run stops instead.
set -euo pipefail
set +m
root=${1:?root}; runs=${2:-10}; ka_fast=${3:-0.1}
P=flcfo$$
DIR=$(mktemp -d /tmp/fulcrum-failover.XXXXXX)
FULCRUM=$root/.build/debug/fulcrum
[ -x "$root/.build/release/fulcrum" ] && FULCRUM=$root/.build/release/fulcrum
CTL=$(dirname "$FULCRUM")/fulcrumctl
PROBE=$root/Bench/testbed/failover-probe.py
VIP=198.18.1.10
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    "$root/Bench/testbed/testbed.sh" down "$P"
    if [ -n "${FULCRUM_BENCH_KEEP:-}" ]; then echo "logs kept in $DIR" >&2; else rm -rf "$DIR"; fi
}
trap cleanup EXIT
PAIR=1 PAIR_INTERVAL=0.025 PAIR_TIMEOUT=0.1 "$root/Bench/testbed/testbed.sh" up "$P" "$DIR" >/dev/null
host() { [ "$1" = 1 ] && echo lb || echo lb2; }
other() { [ "$1" = 1 ] && echo 2 || echo 1; }
# The MAT servers m1..m3 (testbed.sh started them). PIDs are not per network namespace, so
# a `pkill -f "serve --name m1 "` run by a concurrent test (PairTests does) kills these too,
# and every request after it goes unanswered. Restart them with --name last, a command line
# such a pattern does not match, and check them around every measurement.
PEER=${FULCRUM_TESTPEER:-$root/.build/debug/fulcrum-testpeer}
start_servers() {
    for i in 1 2 3; do
        [ -z "$(ip netns pids "$P-m$i")" ] || kill -9 $(ip netns pids "$P-m$i") 2>/dev/null || true
        ip netns exec "$P-m$i" "$PEER" serve --udp 53 --tcp 80,443 --name "m$i" </dev/null >>"$DIR/m$i.log" 2>&1 &
        pids+=("$!")
    done
    sleep 0.2
}
servers_up() { for i in 1 2 3; do [ -n "$(ip netns pids "$P-m$i")" ] || { echo "m$i: no server running" >&2; return 1; }; done; }
start_servers

# measure SYSTEM FAULT SECONDS COMMAND...: the probe runs SECONDS; the fault 1 s in.
measure() {
    local system=$1 fault=$2 seconds=$3; shift 3
    servers_up || { echo "MAT servers down before $system $fault" >&2; exit 1; }
    ip netns exec "$P-client" python3 "$PROBE" "$VIP" 53 "$seconds" >"$DIR/probe.out" &
    local probe=$!
    sleep 1
    "$@"
    wait "$probe"
    servers_up || { echo "MAT servers died during $system $fault: its figures are void" >&2; exit 1; }
    python3 -c "import json,sys; r=json.loads(open(sys.argv[1]).read().split('\n')[1]); r.update(system=sys.argv[2], fault=sys.argv[3]); print(json.dumps(r))" \
        "$DIR/probe.out" "$system" "$fault"
}

only=${FULCRUM_BENCH_ONLY:-}
case "$only" in ""|fulcrum|keepalived) ;; *) echo "FULCRUM_BENCH_ONLY: fulcrum or keepalived" >&2; exit 2 ;; esac

# --- Fulcrum: heartbeats 25 ms / 100 ms, Maglev MAT groups --------------------------------
if [ "$only" != keepalived ]; then
declare -A fpid
start_fulcrum() {
    ip netns exec "$P-$(host "$1")" "$FULCRUM" run --config "$DIR/pair-lb$1.yaml" --status-file "$DIR/status-lb$1.json" \
        >>"$DIR/lb$1.log" 2>&1 &
    fpid[$1]=$!
    pids+=("$!")
}
role_of() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['cluster']['role'])" "$DIR/status-lb$1.json" 2>/dev/null || echo none; }
wait_role() {  # LB ROLE
    for _ in $(seq 1 200); do [ "$(role_of "$1")" = "$2" ] && return 0; sleep 0.05; done
    echo "lb$1 never became $2" >&2; return 1
}
start_fulcrum 1; wait_role 1 active
start_fulcrum 2; wait_role 2 standby
sleep 1
active=1
fkill() { kill -9 "${fpid[$active]}"; wait "${fpid[$active]}" 2>/dev/null || true; }
for _ in $(seq 1 "$runs"); do
    measure fulcrum sigkill 3 fkill
    start_fulcrum "$active"; wait_role "$active" standby
    active=$(other "$active"); wait_role "$active" active; sleep 0.5
done
fcut() { ip -n "$P-sw" link set "p-$(host "$active")-eth-c" down; }
for _ in $(seq 1 "$runs"); do
    measure fulcrum link_cut 3 fcut
    ip -n "$P-sw" link set "p-$(host "$active")-eth-c" up
    wait_role "$active" standby
    active=$(other "$active"); wait_role "$active" active; sleep 0.5
done
# A planned switchover: make before break, so no request should go unanswered.
fswitch() {
    ip netns exec "$P-$(host "$active")" "$CTL" failover --api "unix:$DIR/lb$active-api.sock" --token-file "$DIR/api.token" >/dev/null
}
for _ in $(seq 1 "$runs"); do
    measure fulcrum planned 3 fswitch
    active=$(other "$active"); wait_role "$active" active; wait_role "$(other "$active")" standby; sleep 0.5
done
for n in 1 2; do kill "${fpid[$n]}" 2>/dev/null || true; wait "${fpid[$n]}" 2>/dev/null || true; done
fi
[ "$only" = fulcrum ] && exit 0

# --- keepalived: VRRPv3, the VIP on the master's eth-c, nftables NAT to the MAT nodes ------
# The NAT behind keepalived: the VIP's UDP/53 to the MAT nodes, replies back through it.
nat_on() {
    local h; h=$(host "$1")
    ip netns exec "$P-$h" sysctl -qw net.ipv4.ip_forward=1
    ip netns exec "$P-$h" nft delete table ip ka 2>/dev/null || true
    ip netns exec "$P-$h" nft -f - <<NFT
table ip ka {
    chain pre {
        type nat hook prerouting priority dstnat;
        ip daddr $VIP udp dport 53 dnat to numgen inc mod 3 map { 0 : 198.18.0.11, 1 : 198.18.0.12, 2 : 198.18.0.13 }
    }
    chain post {
        type nat hook postrouting priority srcnat;
        ip daddr 198.18.0.0/24 udp dport 53 masquerade
    }
}
NFT
}
# ka_stop LB: keepalived of LB killed, both its processes gone, its pid files removed.
# Stopped first: the VRRP child has PR_SET_PDEATHSIG = SIGTERM, so a child that outlives
# its parent by a moment (pkill signals one after the other) shuts down gracefully and
# sends priority 0, a planned hand-over in a row that claims a crash.
ka_stop() {
    pkill -STOP -f "$DIR/ka$1/keepalived.conf" || true
    pkill -9 -f "$DIR/ka$1/keepalived.conf" || true
    for _ in $(seq 1 100); do pgrep -f "$DIR/ka$1/keepalived.conf" >/dev/null || break; sleep 0.02; done
    rm -f "$DIR/ka$1/main.pid" "$DIR/ka$1/vrrp.pid"
}
declare -A kpid
start_keepalived() {  # LB ADVERT
    local h; h=$(host "$1")
    mkdir -p "$DIR/ka$1"
    ka_stop "$1"
    cat >"$DIR/ka$1/keepalived.conf" <<KA
global_defs { vrrp_version 3
    script_user root }
vrrp_instance fulcrum_bench {
    state BACKUP
    nopreempt
    interface eth-c
    virtual_router_id 51
    priority $((200 - $1))
    advert_int $2
    virtual_ipaddress { $VIP/32 dev eth-c }
}
KA
    ip -n "$P-$h" addr del "$VIP/32" dev eth-c 2>/dev/null || true
    nat_on "$1"
    ip netns exec "$P-$h" keepalived --dont-fork --vrrp --log-console -f "$DIR/ka$1/keepalived.conf" \
        -p "$DIR/ka$1/main.pid" -r "$DIR/ka$1/vrrp.pid" >>"$DIR/ka$1.log" 2>&1 &
    kpid[$1]=$!
    pids+=("$!")
}
has_vip() { ip -n "$P-$(host "$1")" addr show dev eth-c | grep -q "$VIP/32"; }
# ka_ready ACTIVE: before a fault, the VIP on ACTIVE only, both keepalived running, NAT on both.
ka_ready() {
    local b; b=$(other "$1")
    for _ in $(seq 1 100); do
        if has_vip "$1" && ! has_vip "$b" && pgrep -f "$DIR/ka$1/keepalived.conf" >/dev/null \
            && pgrep -f "$DIR/ka$b/keepalived.conf" >/dev/null \
            && ip netns exec "$P-lb" nft list table ip ka >/dev/null 2>&1 \
            && ip netns exec "$P-lb2" nft list table ip ka >/dev/null 2>&1; then return 0; fi
        sleep 0.05
    done
    echo "keepalived pair not ready (lb$1 active, lb$b backup)" >&2; tail -n 20 "$DIR/ka1.log" "$DIR/ka2.log" >&2; return 1
}
wait_vip() {
    for _ in $(seq 1 400); do has_vip "$1" && return 0; sleep 0.05; done
    echo "lb$1 never took $VIP" >&2; tail -n 20 "$DIR/ka1.log" "$DIR/ka2.log" >&2; return 1
}
for advert in 1 "$ka_fast"; do
    span=$(python3 -c "print(max(3, 1 + 5 * $advert))")
    start_keepalived 1 "$advert"; wait_vip 1
    start_keepalived 2 "$advert"
    sleep "$(python3 -c "print(3 * $advert + 1)")"
    active=1
    # The box dies with its daemon, as a Fulcrum LB's data path does with its: keepalived
    # killed and the VIP gone from its kernel in the same instant.
    kkill() {
        ka_stop "$active"
        ip -n "$P-$(host "$active")" addr del "$VIP/32" dev eth-c 2>/dev/null || true
        ip netns exec "$P-$(host "$active")" nft delete table ip ka
    }
    for _ in $(seq 1 "$runs"); do
        ka_ready "$active"
        measure "keepalived_advert_$advert" sigkill "$span" kkill
        wait "${kpid[$active]}" 2>/dev/null || true
        wait_vip "$(other "$active")"
        start_keepalived "$active" "$advert"; sleep "$(python3 -c "print(3 * $advert + 0.5)")"
        active=$(other "$active")
    done
    kcut() { ip -n "$P-sw" link set "p-$(host "$active")-eth-c" down; }
    for _ in $(seq 1 "$runs"); do
        ka_ready "$active"
        measure "keepalived_advert_$advert" link_cut "$span" kcut
        wait_vip "$(other "$active")"
        # The cut LB went to FAULT (its link down; it dropped the VIP): restart it, link
        # back, as a backup.
        ka_stop "$active"
        wait "${kpid[$active]}" 2>/dev/null || true
        ip -n "$P-sw" link set "p-$(host "$active")-eth-c" up
        start_keepalived "$active" "$advert"; sleep "$(python3 -c "print(3 * $advert + 0.5)")"
        active=$(other "$active")
    done
    # keepalived's graceful hand-over: SIGTERM, it sends priority 0 and drops the VIP.
    kterm() { pkill -TERM -f "$DIR/ka$active/keepalived.conf"; }
    for _ in $(seq 1 "$runs"); do
        ka_ready "$active"
        measure "keepalived_advert_$advert" planned "$span" kterm
        wait "${kpid[$active]}" 2>/dev/null || true
        wait_vip "$(other "$active")"
        ka_stop "$active"
        start_keepalived "$active" "$advert"; sleep "$(python3 -c "print(3 * $advert + 0.5)")"
        active=$(other "$active")
    done
    for n in 1 2; do ka_stop "$n"; wait "${kpid[$n]}" 2>/dev/null || true; done
    for n in 1 2; do ip -n "$P-$(host "$n")" addr del "$VIP/32" dev eth-c 2>/dev/null || true; done
done
