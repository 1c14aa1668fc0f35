#!/usr/bin/env bash
# The namespace testbed (Docs/ARCHITECTURE.md draws it). Used by `make demo`, the
# integration tests and the forwarding benchmark.
#
#   testbed.sh up PREFIX DIR    create namespaces PREFIX-*, start servers, write DIR/lb.yaml
#   testbed.sh down PREFIX      kill what runs in PREFIX-* and delete them
#
# Only 198.18.0.0/15 and 2001:2::/48, only inside the namespaces created here.
#
#  client ─┐                         ┌─ n1 198.18.2.11  (NAT nodes, gateway = LB eth-n)
#  m1..m3 ─┤ front 198.18.0.0/24     │  n2 198.18.2.12
#  (MAT)   ├── eth-c [ LB ] eth-n ───┤  n3 198.18.2.13
#          │   198.18.0.1   198.18.2.1  back 198.18.2.0/24
#                     eth-f 198.18.3.1 ── flood 198.18.3.2 (flood generators, a plain veth)
set -euo pipefail
cmd=${1:?usage: testbed.sh up|down PREFIX [DIR]}
P=${2:?prefix}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

MAT_VIP=198.18.1.10
NAT_VIP=198.18.1.20
MAT_VIP6=2001:2:1::10
NAT_VIP6=2001:2:1::20

down() {
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$P-" || true); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -n "$pids" ] && kill $pids 2>/dev/null || true
    done
    sleep 0.2
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$P-" || true); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
}

if [ "$cmd" = down ]; then down; exit 0; fi
[ "$cmd" = up ] || { echo "usage: testbed.sh up|down PREFIX [DIR]" >&2; exit 2; }
DIR=${3:?directory for config and logs}
mkdir -p "$DIR"
PEER=${FULCRUM_TESTPEER:-$root/.build/debug/fulcrum-testpeer}
PASS_OBJ=${FULCRUM_PASS_OBJECT:-$root/.build/bpf/xdp_pass.bpf.o}
[ -x "$PEER" ] || { echo "testbed: $PEER missing (make build)" >&2; exit 1; }
[ -f "$PASS_OBJ" ] || { echo "testbed: $PASS_OBJ missing (make bpf)" >&2; exit 1; }

down
x() { ip netns exec "$@"; }
ns() {
    ip netns add "$P-$1"
    ip -n "$P-$1" link set lo up
    x "$P-$1" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
}
ns sw
ip -n "$P-sw" link add front type bridge
ip -n "$P-sw" link add back type bridge
for b in front back; do
    ip -n "$P-sw" link set "$b" type bridge stp_state 0 forward_delay 0
    x "$P-sw" sysctl -qw net.ipv6.conf.$b.disable_ipv6=1
    ip -n "$P-sw" link set "$b" up
done

# plug NAME BRIDGE IFNAME: a host namespace with its end IFNAME on the bridge
plug() {
    ip -n "$P-sw" link add "p-$1-$3" type veth peer name "$3" netns "$P-$1"
    ip -n "$P-sw" link set "p-$1-$3" master "$2" up
    ip -n "$P-$1" link set "$3" up
    # veth leaves TCP/UDP checksums for the "hardware" to finish (CHECKSUM_PARTIAL). A
    # frame that XDP hands to AF_XDP is raw bytes, so the partial sum would go on as it
    # is; a physical NIC always puts finished checksums on the wire. Act like one.
    x "$P-$1" ethtool -K "$3" tx off >/dev/null
}

ns client; plug client front eth0
ip -n "$P-client" addr add 198.18.0.2/24 dev eth0
ip -n "$P-client" -6 addr add 2001:2::2/64 dev eth0 nodad
# The VIPs are on the link: the client asks ARP/NS for them and the active LB answers.
ip -n "$P-client" route add 198.18.1.0/24 dev eth0
ip -n "$P-client" -6 route add 2001:2:1::/64 dev eth0

ns lb
plug lb front eth-c
plug lb back eth-n
ip -n "$P-lb" addr add 198.18.0.1/24 dev eth-c
ip -n "$P-lb" -6 addr add 2001:2::1/64 dev eth-c nodad
ip -n "$P-lb" addr add 198.18.2.1/24 dev eth-n
ip -n "$P-lb" -6 addr add 2001:2:2::1/64 dev eth-n nodad
# No kernel forwarding: a reply that reaches the client went through Fulcrum.
x "$P-lb" sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
# The flood host is wired to the LB's third data-plane interface by a plain veth with no
# XDP program on its end: a client the LB must answer ARP/NS for through a path that
# reaches such a peer, and the flood generators' host (fulcrum-bench flood), as an
# attacker on another port of the LB. A flood from there shares neither the
# client's veth (whose ring a flood would fill, losing the client's packets before they
# reach the LB) nor the bridge (whose skb path would cap the flood below what one LB
# worker can take). The LB's XDP program receives them directly.
ns flood
ip -n "$P-flood" link add eth0 type veth peer name eth-f netns "$P-lb"
ip -n "$P-flood" link set eth0 up
ip -n "$P-lb" link set eth-f up
x "$P-flood" ethtool -K eth0 tx off >/dev/null
ip -n "$P-flood" addr add 198.18.3.2/24 dev eth0
ip -n "$P-flood" -6 addr add 2001:2:3::2/64 dev eth0 nodad
ip -n "$P-lb" addr add 198.18.3.1/24 dev eth-f
ip -n "$P-lb" -6 addr add 2001:2:3::1/64 dev eth-f nodad
# Its VIPs are on the link, as for the client.
ip -n "$P-flood" route add 198.18.1.0/24 dev eth0
ip -n "$P-flood" -6 route add 2001:2:1::/64 dev eth0
# veth drops frames sent with XDP_TX/XDP_REDIRECT unless the receiving end runs XDP.
# And the switch's ports toward the LB put 802.1Q tags on the wire, in the frame's bytes,
# as a physical switch does: with TX VLAN offload on, veth would hand the tag over as
# metadata that XDP never sees (as a NIC with rx-vlan-offload on does; OPERATIONS.md).
for end in p-lb-eth-c p-lb-eth-n; do
    ip -n "$P-sw" link set dev "$end" xdpdrv obj "$PASS_OBJ" sec xdp
    x "$P-sw" ethtool -K "$end" txvlan off >/dev/null
done
x "$P-lb" mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true

for i in 1 2 3; do
    m=m$i
    ns $m; plug $m front eth0
    ip -n "$P-$m" addr add 198.18.0.1$i/24 dev eth0
    ip -n "$P-$m" -6 addr add 2001:2::1$i/64 dev eth0 nodad
    ip -n "$P-$m" -6 addr add $MAT_VIP6/128 dev lo
    # MAT node: accept the VIP (IPv4 by a local redirect, IPv6 on lo), never answer ARP for it.
    x "$P-$m" nft -f - <<NFT
table ip fulcrum_mat {
    chain prerouting {
        type nat hook prerouting priority dstnat;
        ip daddr $MAT_VIP tcp dport { 80, 443 } redirect
        ip daddr $MAT_VIP udp dport 53 redirect
    }
}
NFT
    x "$P-$m" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
    # MAT replies to the flood host go through the LB's kernel (when a test turns on its
    # forwarding): that host's only link is to the LB.
    ip -n "$P-$m" route add 198.18.3.0/24 via 198.18.0.1
    ip -n "$P-$m" -6 route add 2001:2:3::/64 via 2001:2::1
    # And to the far client, through the router.
    ip -n "$P-$m" route add 198.18.4.0/24 via 198.18.0.254
    ip -n "$P-$m" -6 route add 2001:2:4::/64 via 2001:2::fe
    # Started as plain commands (not through a function) so no subshell keeps the
    # caller's stdout open.
    ip netns exec "$P-$m" "$PEER" serve --name $m --tcp 80,443 --udp 53 </dev/null >"$DIR/$m.log" 2>&1 &

    n=n$i
    ns $n; plug $n back eth0
    ip -n "$P-$n" addr add 198.18.2.1$i/24 dev eth0
    ip -n "$P-$n" -6 addr add 2001:2:2::1$i/64 dev eth0 nodad
    ip -n "$P-$n" route add default via 198.18.2.1
    ip -n "$P-$n" -6 route add default via 2001:2:2::1
    # HTTP health checks ask port 8081; its status is what $DIR/$n.http-status says (200 if absent).
    ip netns exec "$P-$n" "$PEER" serve --name $n --tcp 8080 --udp 5353 --http 8081 --http-status-file "$DIR/$n.http-status" \
        </dev/null >"$DIR/$n.log" 2>&1 &
done

# The sorry server of web-nat, on the back segment: it answers as "sorry".
ns s1; plug s1 back eth0
ip -n "$P-s1" addr add 198.18.2.99/24 dev eth0
ip -n "$P-s1" route add default via 198.18.2.1
ip netns exec "$P-s1" "$PEER" serve --name sorry --tcp 8080 --udp 5353 </dev/null >"$DIR/s1.log" 2>&1 &

# A router on the front segment, and a client behind it on the far segment. NAT replies
# to it follow the LB's default route (no `routes:` in the config): the kernel's
# routing table is where Fulcrum takes its next hops from.
#
#   far 198.18.4.2 ── [198.18.4.1 rt 198.18.0.254] ── front
ns rt; plug rt front eth0
ip -n "$P-rt" addr add 198.18.0.254/24 dev eth0
ip -n "$P-rt" -6 addr add 2001:2::fe/64 dev eth0 nodad
x "$P-rt" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
ip -n "$P-rt" route add 198.18.1.0/24 dev eth0
ip -n "$P-rt" -6 route add 2001:2:1::/64 dev eth0
ns far
ip -n "$P-far" link add eth0 type veth peer name eth1 netns "$P-rt"
ip -n "$P-far" link set eth0 up
ip -n "$P-rt" link set eth1 up
x "$P-far" ethtool -K eth0 tx off >/dev/null
x "$P-rt" ethtool -K eth1 tx off >/dev/null
ip -n "$P-far" addr add 198.18.4.2/24 dev eth0
ip -n "$P-far" -6 addr add 2001:2:4::2/64 dev eth0 nodad
ip -n "$P-rt" addr add 198.18.4.1/24 dev eth1
ip -n "$P-rt" -6 addr add 2001:2:4::1/64 dev eth1 nodad
ip -n "$P-far" route add default via 198.18.4.1
ip -n "$P-far" -6 route add default via 2001:2:4::1
ip -n "$P-lb" route add default via 198.18.0.254
ip -n "$P-lb" -6 route add default via 2001:2::fe

# group NAME VIP PROTOCOL PORTS METHOD INTERFACE NODE-PREFIX [NODE-PORT]: nodes PREFIX1..3, weights 3:2:1
group() {
    printf '  - name: %s\n    vip: "%s"\n    protocol: %s\n    ports: [%s]\n    method: %s\n    scheduler: wrr\n    interface: %s\n    nodes:\n' \
        "$1" "$2" "$3" "$4" "$5" "$6"
    for i in 1 2 3; do
        printf '      - address: "%s%s"\n' "$7" "$i"
        [ -n "${8:-}" ] && printf '        port: %s\n' "$8"
        printf '        weight: %s\n' $((4 - i))
    done
}

# The control API's tokens: the full one and the read-only one.
for t in api api-ro; do
    (umask 077; head -c 32 /dev/urandom | base64 | tr -d '/+=\n' >"$DIR/$t.token")
done

{
    cat <<YAML
node:
  name: lb1
state_file: $DIR/state.json
api:
  listen: ["127.0.0.1:9180"]
  unix_socket: $DIR/api.sock
  token_file: $DIR/api.token
  readonly_token_file: $DIR/api-ro.token
dataplane:
  interfaces:
    - name: eth-c
      queues: 1
    - name: eth-n
      queues: 1
    - name: eth-f
      queues: 1
      # A plain veth: its peer runs no XDP program, so frames the XDP program sends
      # out of it would be lost. Flows leaving here stay with the worker.
      offload: false
  flow_table_size: 65536
groups:
YAML
    group web-mat  $MAT_VIP  tcp "80, 443" mat eth-c 198.18.0.1
    group dns-mat  $MAT_VIP  udp 53        mat eth-c 198.18.0.1
    group web-nat  $NAT_VIP  tcp 80        nat eth-n 198.18.2.1 8080
    printf '    sorry:\n      address: "198.18.2.99"\n      port: 8080\n'
    group dns-nat  $NAT_VIP  udp 53        nat eth-n 198.18.2.1 5353
    group web6-mat $MAT_VIP6 tcp 80        mat eth-c 2001:2::1
    group dns6-mat $MAT_VIP6 udp 53        mat eth-c 2001:2::1
    group web6-nat $NAT_VIP6 tcp 80        nat eth-n 2001:2:2::1 8080
    group dns6-nat $NAT_VIP6 udp 53        nat eth-n 2001:2:2::1 5353
} >"$DIR/lb.yaml"

# PAIR=1: a second LB (lb2) on the front segment, for the active/standby pair. Two
# interconnects: a direct veth (198.18.9.0/30) and the front segment itself. Both LBs
# serve the MAT groups on eth-c and the NAT groups on eth-n (the nodes' gateway floating
# between them) with Maglev (a mid-flow packet gets the same node from either;
# PAIR_SCHEDULER and PAIR_NAT_SCHEDULER choose others, PAIR_FLOW_SYNC=false turns the flow
# sync off), the router 198.18.0.254 is the partition-resolution target, and lb.yaml and
# lb2.yaml get `cluster:` sections (lb master, lb2 slave) with one key.
if [ "${PAIR:-0}" = 1 ]; then
    ns lb2
    plug lb2 front eth-c
    ip -n "$P-lb2" addr add 198.18.0.4/24 dev eth-c
    ip -n "$P-lb2" -6 addr add 2001:2::4/64 dev eth-c nodad
    x "$P-lb2" sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
    ip -n "$P-sw" link set dev p-lb2-eth-c xdpdrv obj "$PASS_OBJ" sec xdp
    x "$P-sw" ethtool -K p-lb2-eth-c txvlan off >/dev/null
    x "$P-lb2" mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true
    ip -n "$P-lb" link add ic type veth peer name ic netns "$P-lb2"
    ip -n "$P-lb" addr add 198.18.9.1/30 dev ic
    ip -n "$P-lb2" addr add 198.18.9.2/30 dev ic
    ip -n "$P-lb" link set ic up
    ip -n "$P-lb2" link set ic up
    ip -n "$P-lb2" route add default via 198.18.0.254
    # The NAT side: lb2 on the back segment too. The nodes' gateway 198.18.2.1 (and
    # 2001:2:2::1) is a floating address that only the active LB holds; each LB keeps an
    # address of its own there (lb1 .2, lb2 .3).
    plug lb2 back eth-n
    ip -n "$P-lb" addr del 198.18.2.1/24 dev eth-n
    ip -n "$P-lb" -6 addr del 2001:2:2::1/64 dev eth-n
    ip -n "$P-lb" addr add 198.18.2.2/24 dev eth-n
    ip -n "$P-lb" -6 addr add 2001:2:2::2/64 dev eth-n nodad
    ip -n "$P-lb2" addr add 198.18.2.3/24 dev eth-n
    ip -n "$P-lb2" -6 addr add 2001:2:2::3/64 dev eth-n nodad
    ip -n "$P-sw" link set dev p-lb2-eth-n xdpdrv obj "$PASS_OBJ" sec xdp
    x "$P-sw" ethtool -K p-lb2-eth-n txvlan off >/dev/null
    # Text, as Docs/OPERATIONS.md says to make one: the daemon trims whitespace at both
    # ends of a key file, so raw random bytes that began or ended with one were a
    # different key to the daemon than to the rogue scripts that sign with the file.
    (umask 077; head -c 32 /dev/urandom | base64 >"$DIR/cluster.key")
    # pair_config NAME ROLE PEER LOCAL-IC PEER-IC LOCAL-FRONT PEER-FRONT STATE [MORE-INTERFACES]
    # (lb1 also runs on eth-f, the flood host's link, so a flood can reach its data plane.)
    pair_config() {
        cat <<YAML
node:
  name: $1
state_file: $DIR/$8
api:
  listen: ["127.0.0.1:9180"]   # in its own namespace: the status page for a browser there
  unix_socket: $DIR/$1-api.sock
  token_file: $DIR/api.token
  readonly_token_file: $DIR/api-ro.token
events:
  file: $DIR/$1-events.jsonl
dataplane:
  interfaces:
    - name: eth-c
      queues: 1
    - name: eth-n
      queues: 1
${9:-}
  flow_table_size: ${PAIR_FLOW_TABLE:-65536}
cluster:
  role: $2
  peer: $3
  interconnects:
    - { local: $4, peer: $5 }
    - { local: $6, peer: $7 }
  heartbeat: { interval: ${PAIR_INTERVAL:-0.05}, timeout: ${PAIR_TIMEOUT:-0.15}, key_file: $DIR/cluster.key }
  np_targets: [198.18.0.254]
  dual_active: ${PAIR_DUAL_ACTIVE:-master_stays}
  failback: ${PAIR_FAILBACK:-manual}
  flow_sync: { enabled: ${PAIR_FLOW_SYNC:-true} }
  floating_addresses:
    - { address: 198.18.2.1/24, interface: eth-n }
    - { address: 2001:2:2::1/64, interface: eth-n }
YAML
        if [ "$1" = lb1 ] && [ -n "${PAIR_LB1_MONITORS:-}" ]; then printf '  monitors: %s\n' "$PAIR_LB1_MONITORS"; fi
        echo "groups:"
        group web-mat $MAT_VIP tcp "80, 443" mat eth-c 198.18.0.1 | sed "s/scheduler: wrr/scheduler: ${PAIR_SCHEDULER:-maglev}/"
        group dns-mat $MAT_VIP udp 53 mat eth-c 198.18.0.1 | sed "s/scheduler: wrr/scheduler: ${PAIR_SCHEDULER:-maglev}/"
        group web-nat $NAT_VIP tcp 80 nat eth-n 198.18.2.1 8080 | sed "s/scheduler: wrr/scheduler: ${PAIR_NAT_SCHEDULER:-${PAIR_SCHEDULER:-maglev}}/"
        group dns-nat $NAT_VIP udp 53 nat eth-n 198.18.2.1 5353 | sed "s/scheduler: wrr/scheduler: ${PAIR_NAT_SCHEDULER:-${PAIR_SCHEDULER:-maglev}}/"
    }
    pair_config lb1 master lb2 198.18.9.1 198.18.9.2 198.18.0.1 198.18.0.4 state-lb1.json \
        "$(printf '    - name: eth-f\n      queues: 1\n      offload: false')" >"$DIR/pair-lb1.yaml"
    pair_config lb2 slave lb1 198.18.9.2 198.18.9.1 198.18.0.4 198.18.0.1 state-lb2.json >"$DIR/pair-lb2.yaml"
fi
echo "testbed $P up; config $DIR/lb.yaml"
