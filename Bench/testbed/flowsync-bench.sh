#!/usr/bin/env bash
# `fulcrum-bench sync`, its survival part: held TCP connections across a SIGKILL of the
# active LB of a pair, Fulcrum's flow sync beside the operators' anchor, in one run on the
# same pair testbed (testbed.sh, PAIR=1), the same VIP (198.18.1.10:80) and the same servers
# (m1..m3):
#   fulcrum     the pair with flow sync on, wrr (weights 3:2:1) on the MAT VIP, heartbeats
#               25 ms / 100 ms: a standby without the active's flows would choose anew.
#   conntrackd  nftables DNAT (numgen random over the three servers: the choice cannot be
#               made again by the peer) + SNAT to a floating address, keepalived (VRRPv3,
#               advert_int 0.1) moving the VIP and the floating address, conntrackd (FTFW,
#               unicast UDP on the `ic` interconnect, Debian's primary-backup.sh run by
#               keepalived's notify scripts: commit the external cache on becoming master).
#
#   flowsync-bench.sh ROOT
#
# The fault: Fulcrum's active SIGKILLed (its data path dies with it); the conntrackd
# pair's active box dies: keepalived and conntrackd SIGKILLed, all its IP traffic dropped
# (one nft transaction), its addresses removed.
# Four conditions per system, 200 held connections each (FLOWSYNC_HELD), each exchanging a
# message every 100 ms (fulcrum-testpeer chat; a connection reset, timed out or answered by
# another server counts as broken):
#   idle   connections 3 s old at the kill
#   fresh  the kill 30 ms after the last of them opened (chat prints ready; it opens them
#          one after the other, so the first is some 0.3 s old: its log line says)
#   rate   new connections opened as fast as FLOWSYNC_RATE_PROCS client processes can
#          (one connection per request) from before the held ones open until the end
#          (at most 10 s)
#   loss   one datagram in fifty dropped on the sync port at both LBs (nft numgen; 65011
#          for Fulcrum, 3780 for conntrackd) from before the held ones open
# Prints one JSON line per measurement:
#   {"system": "fulcrum"|"conntrackd", "condition": …, "held": N, "survived": M, "broken": B,
#    "max_gap_ms": the longest wait any held connection saw for an answer (the outage)}
# and, to stderr, what the sync reported (Fulcrum's status counters; conntrackd's external
# cache and the time its commit took) and the new-connection rate reached.
# Before every fault the testbed is checked (servers up, the right LB active and the other
# ready: Fulcrum's standby `cluster.flow_sync.ready`; keepalived's VIP on the active only,
# both conntrackd answering); the killed LB is started again (as a rebooted box: empty
# conntrack table) and the roles alternate.
# Only 198.18.0.0/15, only in the namespaces it creates; removes them and every process it
# started on exit. Environment: FULCRUM_BENCH_ONLY=fulcrum|conntrackd runs one system;
# FULCRUM_BENCH_KEEP=1 keeps the log directory (its path goes to stderr);
# FULCRUM_BENCH_BUILD=release takes that build's daemon (debug by default).
set -euo pipefail
set +m
root=${1:?root}
P=flcfs$$
DIR=$(mktemp -d /tmp/fulcrum-flowsync.XXXXXX)
HELD=${FLOWSYNC_HELD:-200}
RATE_PROCS=${FLOWSYNC_RATE_PROCS:-4}
VIP=198.18.1.10
SNAT=198.18.0.5          # the conntrackd pair's floating source address toward the servers
servers_ip=(198.18.0.11 198.18.0.12 198.18.0.13)
only=${FULCRUM_BENCH_ONLY:-}
case "$only" in ""|fulcrum|conntrackd) ;; *) echo "FULCRUM_BENCH_ONLY: fulcrum or conntrackd" >&2; exit 2 ;; esac

pids=()
cleanup() {
    set +e
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
    "$root/Bench/testbed/testbed.sh" down "$P"
    if [ -n "${FULCRUM_BENCH_KEEP:-}" ]; then echo "logs kept in $DIR" >&2; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

# The binaries of this run, copied: a build running beside it may replace the originals.
mkdir -p "$DIR/bin"
cp "$root/.build/${FULCRUM_BENCH_BUILD:-debug}/fulcrum" "$root/.build/debug/fulcrum-testpeer" "$DIR/bin/"
cp "$root/.build/bpf/fulcrum.bpf.o" "$DIR/bin/"
FULCRUM=$DIR/bin/fulcrum
PEER=$DIR/bin/fulcrum-testpeer
export FULCRUM_BPF_OBJECT=$DIR/bin/fulcrum.bpf.o FULCRUM_TESTPEER=$PEER
if [ "$only" != fulcrum ]; then
    for tool in keepalived conntrackd conntrack nft; do
        command -v "$tool" >/dev/null || { echo "$tool missing (make setup: DEB_PACKAGES)" >&2; exit 1; }
    done
fi

PAIR=1 PAIR_SCHEDULER=wrr PAIR_NAT_SCHEDULER=lc PAIR_FLOW_SYNC=true PAIR_INTERVAL=0.025 PAIR_TIMEOUT=0.1 \
    "$root/Bench/testbed/testbed.sh" up "$P" "$DIR" >/dev/null
# (Only for commands waited for: a function run in the background is a subshell, so its $!
# would not be the process; what runs in the background is started by `ip netns exec`
# directly, which execs it under the same PID.)
x() { ip netns exec "$@"; }
host() { [ "$1" = 1 ] && echo lb || echo lb2; }
other() { [ "$1" = 1 ] && echo 2 || echo 1; }
log() { echo "flowsync-bench: $*" >&2; }
# The rate's clients close first: their TIME_WAIT ports must not run out over a run.
x "$P-client" sysctl -qw net.ipv4.ip_local_port_range="10000 65000" net.ipv4.tcp_tw_reuse=1

# The MAT servers, restarted with --name last (as failover-bench.sh does): a concurrent
# test's `pkill -f "serve --name m1 "` then cannot match them. Checked around every fault.
start_servers() {
    for i in 1 2 3; do
        [ -z "$(ip netns pids "$P-m$i")" ] || kill -9 $(ip netns pids "$P-m$i") 2>/dev/null || true
        ip netns exec "$P-m$i" "$PEER" serve --tcp 80,443 --udp 53 --name "m$i" </dev/null >>"$DIR/m$i.log" 2>&1 &
        pids+=("$!")
    done
    sleep 0.3
}
servers_up() { for i in 1 2 3; do [ -n "$(ip netns pids "$P-m$i")" ] || { log "m$i: no server running"; return 1; }; done; }
start_servers

# A loss rule at both LBs: one datagram in fifty to PORT dropped on input (both directions
# of the stream, since each side receives on it).
loss_on() {
    for h in lb lb2; do
        x "$P-$h" nft -f - <<NFT
table inet flc_loss {
    chain input { type filter hook input priority 0; udp dport $1 numgen random mod 50 0 counter drop; }
}
NFT
    done
}
loss_off() { for h in lb lb2; do x "$P-$h" nft delete table inet flc_loss 2>/dev/null || true; done; }
loss_drops() {
    local h c
    for h in lb lb2; do
        c=$(x "$P-$h" nft list table inet flc_loss 2>/dev/null | sed -n 's/.*counter packets \([0-9]*\).*/\1/p' | head -1)
        printf '%s %s ' "$h" "${c:-0}"
    done
}

# New connections as fast as RATE_PROCS client processes open them (one request each),
# until rate_stop or 10 s; their totals go to $DIR/rate*.out.
rate_pids=()
rate_start() {
    rm -f "$DIR/rate.stop" "$DIR"/rate*.out
    rate_t0=$EPOCHREALTIME
    rate_pids=()
    for i in $(seq 1 "$RATE_PROCS"); do
        ip netns exec "$P-client" timeout 10 bash -c 'while [ ! -e "$1" ]; do "$2" client --target "$3" --port 80 --count 200 || true; done' \
            _ "$DIR/rate.stop" "$PEER" "$VIP" >"$DIR/rate$i.out" 2>/dev/null &
        rate_pids+=("$!"); pids+=("$!")
    done
}
rate_stop() {
    touch "$DIR/rate.stop"
    for p in "${rate_pids[@]}"; do wait "$p" 2>/dev/null || true; done
    python3 - "$rate_t0" "$EPOCHREALTIME" "$DIR"/rate*.out <<'PY' >&2
import json, sys
t0, t1 = float(sys.argv[1]), float(sys.argv[2])
ok = failed = 0
for path in sys.argv[3:]:
    for line in open(path):
        if line.startswith("{"):
            r = json.loads(line); ok += r.get("ok", 0); failed += r.get("failed", 0)
print(f"flowsync-bench:   rate: {ok} new connections in {t1 - t0:.1f} s ({ok / (t1 - t0):.0f}/s), {failed} failed")
PY
}

# measure SYSTEM CONDITION DELAY AFTER FAULT...: HELD connections opened (chat); DELAY
# seconds after the last opened, FAULT runs; the chat goes on AFTER seconds more. Prints
# the row. A hook `before_fault` (set per system) logs the sync's state 0.8 s before.
before_fault() { :; }
sleep_until() {  # T0 SECONDS: until SECONDS after T0 (an $EPOCHREALTIME)
    python3 -c "import sys, time; time.sleep(max(0.0, float(sys.argv[1]) + float(sys.argv[2]) - time.time()))" "$1" "$2"
}
measure() {
    local system=$1 condition=$2 delay=$3 after=$4; shift 4
    servers_up || { log "servers down before $system $condition"; exit 1; }
    local fifo=$DIR/chat.fifo fd line t0 tready tkill
    rm -f "$fifo"; mkfifo "$fifo"
    t0=$EPOCHREALTIME
    ip netns exec "$P-client" timeout 60 "$PEER" chat --target "$VIP" --port 80 --held "$HELD" \
        --seconds "$(python3 -c "print($delay + $after)")" --interval 0.1 --new-every 0 >"$fifo" 2>>"$DIR/chat.err" &
    local chat=$!
    pids+=("$chat")
    exec {fd}<"$fifo"
    if ! read -r -t 60 -u "$fd" line || [[ "$line" != *ready* ]]; then
        log "$system $condition: the chat never got its connections open ($line)"; exit 1
    fi
    tready=$EPOCHREALTIME
    # An old connection's fault: the sync's state logged half a second before it. A fresh
    # one's: nothing between ready and the fault but the delay.
    if [ "${delay%%.*}" -ge 1 ]; then
        sleep "$(python3 -c "print($delay - 0.8)")"; before_fault; sleep_until "$tready" "$delay"
    else
        sleep "$delay"
    fi
    tkill=$EPOCHREALTIME
    "$@"
    cat <&"$fd" >"$DIR/chat.out"
    exec {fd}<&-
    wait "$chat" 2>/dev/null || true
    servers_up || { log "servers died during $system $condition: its figures are void"; exit 1; }
    python3 - "$DIR/chat.out" "$system" "$condition" "$line" "$t0" "$tready" "$tkill" <<'PY'
import json, sys
out, system, condition, ready = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])["ready"]
t0, tready, tkill = map(float, sys.argv[5:8])
lines = [l for l in open(out) if l.startswith("{")]
if not lines:
    sys.exit(f"{system} {condition}: the chat printed no result")
r = json.loads(lines[-1])
print(f"flowsync-bench:   {system} {condition}: opened in {tready - t0:.2f} s, fault {tkill - tready:.3f} s after ready; "
      f"chat {json.dumps(r)}", file=sys.stderr)
print(json.dumps({"system": system, "condition": condition, "held": ready,
                  "survived": ready - r["broken"], "broken": r["broken"], "max_gap_ms": r["maxGapMs"]}), flush=True)
PY
}

# --- Fulcrum: the pair with the flow sync, wrr on the MAT VIP --------------------------------
if [ "$only" != conntrackd ]; then
declare -A fpid
start_fulcrum() {
    ip netns exec "$P-$(host "$1")" "$FULCRUM" run --config "$DIR/pair-lb$1.yaml" --status-file "$DIR/status-lb$1.json" \
        >>"$DIR/lb$1.log" 2>&1 &
    fpid[$1]=$!
    pids+=("$!")
}
# status LB EXPR: a Python expression over the status file's `c` (its cluster) and `f`
# (its flow_sync); "none" when unreadable.
status() {
    python3 -c "import json,sys
c = json.load(open(sys.argv[1]))['cluster']; f = c.get('flow_sync') or {}
print($2)" "$DIR/status-lb$1.json" 2>/dev/null || echo none
}
wait_status() {  # LB EXPR WANT WHAT
    for _ in $(seq 1 400); do [ "$(status "$1" "$2")" = "$3" ] && return 0; sleep 0.05; done
    log "lb$1 never $4 ($(status "$1" "c"))"; tail -n 20 "$DIR/lb$1.log" >&2; return 1
}
wait_role() { wait_status "$1" "c['role']" "$2" "became $2"; }
# The pair ready for a fault: ACTIVE active, the other standby holding its flows.
pair_ready() {
    local s; s=$(other "$1")
    wait_role "$1" active; wait_role "$s" standby
    wait_status "$s" "f.get('ready')" True "held the active's flows (flow_sync.ready)"
    wait_status "$1" "f.get('peer_ready')" True "saw its standby ready (flow_sync.peer_ready)"
}
start_fulcrum 1; wait_role 1 active
start_fulcrum 2; wait_role 2 standby
active=1
before_fault() {
    log "  lb$active: $(status "$active" "{k: f.get(k) for k in ('records_sent','datagrams_resent','pending','in_flight','lag_p50_ms','lag_p99_ms','lagging')}")"
    log "  lb$(other "$active"): $(status "$(other "$active")" "{k: f.get(k) for k in ('ready','records_received','records_held','duplicates','not_held')}")"
}
fkill() { kill -9 "${fpid[$active]}"; }
# After a fault: the standby took over; the killed LB starts again as the new standby.
frestore() {
    wait "${fpid[$active]}" 2>/dev/null || true
    ! kill -0 "${fpid[$active]}" 2>/dev/null || { log "lb$active survived its SIGKILL"; exit 1; }
    wait_role "$(other "$active")" active
    start_fulcrum "$active"
    active=$(other "$active")
}
for condition in idle fresh rate loss; do
    pair_ready "$active"
    case $condition in
        idle)  measure fulcrum idle 3 3 fkill ;;
        fresh) measure fulcrum fresh 0.03 3 fkill ;;
        rate)  rate_start; sleep 0.5; measure fulcrum rate 2 3 fkill; rate_stop ;;
        loss)  loss_on 65011; measure fulcrum loss 3 3 fkill; log "  loss: sync datagrams dropped on input at $(loss_drops)"; loss_off ;;
    esac
    log "  lb$active's last status before the kill: $(status "$active" "{k: f.get(k) for k in ('records_sent','datagrams_sent','datagrams_resent','pending','in_flight')}")"
    frestore
done
pair_ready "$active"
for n in 1 2; do kill "${fpid[$n]}" 2>/dev/null || true; wait "${fpid[$n]}" 2>/dev/null || true; done
# Their XDP programs gone with them (the kernel's path is the next system's data path).
for h in lb lb2; do for i in eth-c eth-n eth-f; do
    x "$P-$h" ip link set dev "$i" xdpdrv off 2>/dev/null || true
    x "$P-$h" ip link set dev "$i" xdpgeneric off 2>/dev/null || true
done; done
before_fault() { :; }
fi
[ "$only" = fulcrum ] && exit 0

# --- nftables DNAT + keepalived + conntrackd (FTFW) ------------------------------------------
# The kernel's path on each LB: DNAT to a server chosen at random (numgen random), SNAT to
# the floating address so that replies come back through the LB that holds it. Configured
# as conntrackd's manual asks for a primary-backup pair: no TCP pickup (a mid-stream packet
# on the new master before the commit must not create a fresh entry that sends it to
# another server) and invalid packets dropped (so that neither the VIP's nor the floating
# address's local stack answers them with a reset: the client retransmits after the commit).
nat_on() {
    local h; h=$(host "$1")
    x "$P-$h" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.eth-c.send_redirects=0 \
        net.netfilter.nf_conntrack_tcp_loose=0 net.netfilter.nf_conntrack_tcp_be_liberal=1
    x "$P-$h" nft delete table ip ka 2>/dev/null || true
    x "$P-$h" nft -f - <<NFT
table ip ka {
    chain invalid {
        type filter hook prerouting priority mangle;
        ct state invalid drop
    }
    chain pre {
        type nat hook prerouting priority dstnat;
        ip daddr $VIP tcp dport 80 dnat to numgen random mod 3 map { 0 : ${servers_ip[0]}, 1 : ${servers_ip[1]}, 2 : ${servers_ip[2]} }
    }
    chain post {
        type nat hook postrouting priority srcnat;
        ip daddr 198.18.0.0/24 tcp dport 80 ct status dnat snat to $SNAT
    }
}
NFT
}
# ct_config LB: conntrackd's configuration (FTFW over unicast UDP on ic, only TCP, only
# the states worth keeping, as Debian's example suggests).
ct_config() {
    local me peer; if [ "$1" = 1 ]; then me=198.18.9.1; peer=198.18.9.2; else me=198.18.9.2; peer=198.18.9.1; fi
    mkdir -p "$DIR/ct$1"
    cat >"$DIR/ct$1/conntrackd.conf" <<CT
Sync {
    Mode FTFW {
        DisableExternalCache Off
    }
    UDP {
        IPv4_address $me
        IPv4_Destination_Address $peer
        Port 3780
        Interface ic
        SndSocketBuffer 1249280
        RcvSocketBuffer 1249280
        Checksum on
    }
}
General {
    Systemd off
    HashSize 32768
    HashLimit 262144
    LogFile $DIR/ct$1/conntrackd.log
    LockFile $DIR/ct$1/conntrackd.lock
    UNIX {
        Path $DIR/ct$1/conntrackd.ctl
    }
    NetlinkBufferSize 2097152
    NetlinkBufferSizeMaxGrowth 8388608
    Filter From Userspace {
        Protocol Accept {
            TCP
        }
        Address Ignore {
            IPv4_address 127.0.0.1
            IPv4_address 198.18.9.0/30
        }
        State Accept {
            ESTABLISHED CLOSED TIME_WAIT CLOSE_WAIT for TCP
        }
    }
}
CT
    # keepalived's notify script: Debian's primary-backup.sh (conntrackd's examples), for
    # this LB's conntrackd, with the commit timed. The daemon itself is started here.
    cat >"$DIR/ct$1/notify.sh" <<SH
#!/bin/sh
C="conntrackd -C $DIR/ct$1/conntrackd.conf"
L=$DIR/ct$1/notify.log
case "\$1" in
  primary)
    t0=\$(date +%s.%N)
    \$C -c; rc=\$?
    echo "primary: commit rc=\$rc \$t0 \$(date +%s.%N)" >>\$L
    \$C -f; \$C -R; \$C -B
    ;;
  backup)
    \$C -s >/dev/null || { echo "backup: conntrackd not running" >>\$L; exit 1; }
    \$C -t; \$C -n
    echo "backup \$(date +%s.%N)" >>\$L
    ;;
  fault)
    \$C -t
    ;;
esac
exit 0
SH
    chmod 700 "$DIR/ct$1/notify.sh"
}
declare -A kpid kkids cpid
# The LB booted: an empty conntrack table, its NAT, conntrackd, then keepalived (backup).
ct_start() {
    local h; h=$(host "$1")
    x "$P-$h" nft delete table ip dead 2>/dev/null || true
    x "$P-$h" conntrack -F 2>/dev/null || true
    nat_on "$1"
    ct_config "$1"
    rm -f "$DIR/ct$1/conntrackd.lock" "$DIR/ct$1/conntrackd.ctl"
    ip netns exec "$P-$h" conntrackd -C "$DIR/ct$1/conntrackd.conf" >>"$DIR/ct$1/stdout.log" 2>&1 &
    cpid[$1]=$!
    pids+=("$!")
    for _ in $(seq 1 100); do x "$P-$h" conntrackd -C "$DIR/ct$1/conntrackd.conf" -s >/dev/null 2>&1 && break; sleep 0.05; done
    mkdir -p "$DIR/ka$1"
    cat >"$DIR/ka$1/keepalived.conf" <<KA
global_defs {
    vrrp_version 3
    script_user root
}
vrrp_instance fulcrum_flowsync {
    state BACKUP
    nopreempt
    interface eth-c
    virtual_router_id 52
    priority $((200 - $1))
    advert_int 0.1
    virtual_ipaddress {
        $VIP/32 dev eth-c
        $SNAT/24 dev eth-c
    }
    notify_master "$DIR/ct$1/notify.sh primary"
    notify_backup "$DIR/ct$1/notify.sh backup"
    notify_fault "$DIR/ct$1/notify.sh fault"
}
KA
    ip netns exec "$P-$h" keepalived --dont-fork --vrrp --log-console -f "$DIR/ka$1/keepalived.conf" \
        -p "$DIR/ka$1/main.pid" -r "$DIR/ka$1/vrrp.pid" >>"$DIR/ka$1.log" 2>&1 &
    kpid[$1]=$!
    pids+=("$!")
    # Its VRRP child, known before any fault, so that the kill signals both at once.
    kkids[$1]=""
    for _ in $(seq 1 100); do kkids[$1]=$(pgrep -P "${kpid[$1]}" || true); [ -n "${kkids[$1]}" ] && break; sleep 0.02; done
}
# The box dies: keepalived (both its processes, stopped first: its VRRP child would leave
# gracefully on its parent's death) and conntrackd killed, its IP traffic gone in one nft
# transaction, then its addresses.
ct_kill() {
    local n=$active h; h=$(host "$active")
    local kids=${kkids[$n]}
    kill -STOP "${kpid[$n]}" $kids 2>/dev/null || true
    kill -9 "${cpid[$n]}" 2>/dev/null || true
    x "$P-$h" nft -f - <<NFT
table ip dead {
    chain in { type filter hook prerouting priority -400; policy drop; }
    chain out { type filter hook output priority -400; policy drop; }
}
NFT
    kill -9 "${kpid[$n]}" $kids 2>/dev/null || true
    x "$P-$h" sysctl -qw net.ipv4.ip_forward=0
    x "$P-$h" ip addr del "$VIP/32" dev eth-c 2>/dev/null || true
    x "$P-$h" ip addr del "$SNAT/24" dev eth-c 2>/dev/null || true
    x "$P-$h" nft delete table ip ka 2>/dev/null || true
}
has_addr() { x "$P-$(host "$1")" ip -4 addr show dev eth-c | grep -q " $2/"; }
ct_alive() { x "$P-$(host "$1")" conntrackd -C "$DIR/ct$1/conntrackd.conf" -s >/dev/null 2>&1; }
# Before a fault: the VIP and the floating address on ACTIVE only, both keepalived and both
# conntrackd running, NAT on both.
ct_ready() {
    local b; b=$(other "$1")
    for _ in $(seq 1 200); do
        if has_addr "$1" "$VIP" && has_addr "$1" "$SNAT" && ! has_addr "$b" "$VIP" && ! has_addr "$b" "$SNAT" \
            && kill -0 "${kpid[1]}" 2>/dev/null && kill -0 "${kpid[2]}" 2>/dev/null \
            && ct_alive 1 && ct_alive 2 \
            && x "$P-lb" nft list table ip ka >/dev/null 2>&1 && x "$P-lb2" nft list table ip ka >/dev/null 2>&1 \
            && grep -q backup "$DIR/ct$b/notify.log" 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    log "keepalived + conntrackd pair not ready (lb$1 master, lb$b backup)"
    tail -n 20 "$DIR/ka1.log" "$DIR/ka2.log" "$DIR"/ct*/notify.log >&2 || true
    return 1
}
wait_vip() {
    for _ in $(seq 1 200); do has_addr "$1" "$VIP" && return 0; sleep 0.05; done
    log "lb$1 never took $VIP"; tail -n 20 "$DIR/ka1.log" "$DIR/ka2.log" >&2; return 1
}
# The sync's state just before a fault: the flows of the VIP in the master's kernel and in
# the backup's external cache.
before_fault() {
    local b; b=$(other "$active")
    local k e
    k=$(x "$P-$(host "$active")" conntrack -L -p tcp --dport 80 --orig-dst "$VIP" --state ESTABLISHED 2>/dev/null | wc -l)
    x "$P-$(host "$b")" conntrackd -C "$DIR/ct$b/conntrackd.conf" -e >"$DIR/ct$b/external.txt" 2>/dev/null || true
    e=$(grep ESTABLISHED "$DIR/ct$b/external.txt" | grep -c "dst=$VIP sport=[0-9]* dport=80 " || true)
    log "  lb$active kernel: $k established to the VIP; lb$b external cache: $e established to the VIP, $(wc -l <"$DIR/ct$b/external.txt") entries"
    local n
    for n in 1 2; do
        x "$P-$(host "$n")" conntrackd -C "$DIR/ct$n/conntrackd.conf" -s network >"$DIR/ct$n/stats-$condition.txt" 2>&1 || true
    done
    # FTFW's own count of the sequence gaps it saw on the backup (since it started).
    log "  lb$b conntrackd: $(grep -h 'Packets lost' "$DIR/ct$b/stats-$condition.txt" | tr -s ' \t' ' ')"
}
ct_start 1; wait_vip 1
ct_start 2
active=1
# After a fault: the backup took over and committed; the killed box boots as the backup.
ct_restore() {
    local n=$active
    wait "${kpid[$n]}" 2>/dev/null || true
    wait "${cpid[$n]}" 2>/dev/null || true
    wait_vip "$(other "$n")"
    log "  lb$(other "$n") notify: $(tail -n 1 "$DIR/ct$(other "$n")/notify.log" 2>/dev/null \
        | awk '/commit/ {split($3,a,"="); printf "commit rc %s in %.0f ms", a[2], ($5-$4)*1000; next} {print}')"
    rm -f "$DIR/ct$n/notify.log"
    ct_start "$n"
    active=$(other "$n")
}
for condition in idle fresh rate loss; do
    ct_ready "$active"
    sleep 0.5   # the backup's resync (-n) done
    case $condition in
        idle)  measure conntrackd idle 3 3 ct_kill ;;
        fresh) measure conntrackd fresh 0.03 3 ct_kill ;;
        rate)  rate_start; sleep 0.5; measure conntrackd rate 2 3 ct_kill; rate_stop ;;
        loss)  loss_on 3780; measure conntrackd loss 3 3 ct_kill; log "  loss: sync datagrams dropped on input at $(loss_drops)"; loss_off ;;
    esac
    ct_restore
done
ct_ready "$active"
