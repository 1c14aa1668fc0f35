#!/usr/bin/env bash
# Topology of `fulcrum-bench` scenarios mat, nat, new-flows, connections, latency and bulk:
#
#   PREFIX-cl [c0] ──veth── [eth-c] PREFIX-lb [eth-n] ──veth── [s0] PREFIX-sv
#   198.18.0.2                198.18.0.1     198.18.2.1          198.18.2.11-13 (nodes)
#   (the generator, wrk,      VIP 198.18.1.20 on lo for HAProxy;  (the UDP reflector,
#    the latency client,      198.19.0.0/16 routed to the client) the HTTP servers,
#    iperf3 -c)                                                    iperf3 -s)
#   [dsr-c] 198.18.3.2 ───────────────veth───────────────── [dsr-s] 198.18.3.1
#
# The dsr link is MAT's return path (direct server return): the servers hold the MAT VIP
# 198.18.1.10 on lo, and what they send from it goes straight to the client (a policy
# rule for that source only), never through the LB. Every other reply takes the LB.
#
# Only 198.18.0.0/15, only in these namespaces. The LB's receive processing (RPS) is on
# LB_CPU, where the Fulcrum worker, HAProxy, and nftables' softirq work all run; the
# client side (generator, wrk, latency client, servers, their TCP stacks) on CLIENT_CPU. `down` removes everything (the caller traps it).
set -euo pipefail
cmd=${1:?usage: peers-bench.sh up|down PREFIX [LB_CPU CLIENT_CPU]}
P=${2:?prefix}
if [ "$cmd" = down ]; then
    for ns in "$P-cl" "$P-lb" "$P-sv"; do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
    exit 0
fi
LB_CPU=${3:-1}
CLIENT_CPU=${4:-0}
"$0" down "$P"
x() { ip netns exec "$@"; }
for ns in cl lb sv; do
    ip netns add "$P-$ns"
    ip -n "$P-$ns" link set lo up
done
ip -n "$P-cl" link add c0 type veth peer name eth-c netns "$P-lb"
ip -n "$P-sv" link add s0 type veth peer name eth-n netns "$P-lb"
ip -n "$P-cl" addr add 198.18.0.2/24 dev c0
ip -n "$P-lb" addr add 198.18.0.1/24 dev eth-c
ip -n "$P-lb" addr add 198.18.2.1/24 dev eth-n
ip -n "$P-lb" addr add 198.18.1.20/32 dev lo
for i in 11 12 13; do ip -n "$P-sv" addr add 198.18.2.$i/24 dev s0; done
ip -n "$P-cl" link set c0 up
ip -n "$P-sv" link set s0 up
ip -n "$P-lb" link set eth-c up
ip -n "$P-lb" link set eth-n up
ip -n "$P-sv" link add dsr-s type veth peer name dsr-c netns "$P-cl"
ip -n "$P-sv" addr add 198.18.3.1/24 dev dsr-s
ip -n "$P-cl" addr add 198.18.3.2/24 dev dsr-c
ip -n "$P-sv" addr add 198.18.1.10/32 dev lo
ip -n "$P-sv" link set dsr-s up
ip -n "$P-cl" link set dsr-c up
# The bulk scenario's 1500-byte MTU, whatever a veth's default.
ip -n "$P-cl" link set c0 mtu 1500
ip -n "$P-cl" link set dsr-c mtu 1500
ip -n "$P-sv" link set s0 mtu 1500
ip -n "$P-sv" link set dsr-s mtu 1500
ip -n "$P-lb" link set eth-c mtu 1500
ip -n "$P-lb" link set eth-n mtu 1500
# Finished checksums on the wire, as a NIC sends them (AF_XDP hands on raw bytes).
x "$P-cl" ethtool -K c0 tx off >/dev/null
x "$P-sv" ethtool -K s0 tx off >/dev/null
x "$P-sv" ethtool -K dsr-s tx off >/dev/null
x "$P-cl" ethtool -K dsr-c tx off >/dev/null
ip -n "$P-cl" route add 198.18.1.0/24 via 198.18.0.1
ip -n "$P-cl" route add 198.18.2.0/24 via 198.18.0.1
ip -n "$P-sv" route add default via 198.18.2.1
ip -n "$P-sv" rule add from 198.18.1.10 lookup 100
ip -n "$P-sv" route add 198.18.0.0/24 via 198.18.3.2 dev dsr-s table 100
# The client takes the MAT VIP's answers on dsr-c although it sent through c0.
x "$P-cl" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.dsr-c.rp_filter=0
ip -n "$P-lb" route add 198.19.0.0/16 via 198.18.0.2
x "$P-lb" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0
for ns in cl lb sv; do
    x "$P-$ns" sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="10000 65000"
done
# On veth the receiver's softirq runs on the CPU that sent the frame. RPS moves the
# kernel's receive work to a fixed CPU on each side, so that the client's and servers'
# TCP stacks stay on CLIENT_CPU whichever system transmits to them (XDP programs still
# run where the frame was sent). bulk replaces it on c0 and s0 with their NAPI threads
# pinned to CLIENT_CPU (PeerTopology.pinHostReceiveWork).
mask=$(printf '%x' $((1 << LB_CPU)))
for i in eth-c eth-n; do x "$P-lb" sh -c "echo $mask > /sys/class/net/$i/queues/rx-0/rps_cpus"; done
mask=$(printf '%x' $((1 << CLIENT_CPU)))
x "$P-cl" sh -c "echo $mask > /sys/class/net/c0/queues/rx-0/rps_cpus"
x "$P-sv" sh -c "echo $mask > /sys/class/net/s0/queues/rx-0/rps_cpus"
x "$P-cl" sh -c "echo $mask > /sys/class/net/dsr-c/queues/rx-0/rps_cpus"
x "$P-sv" sh -c "echo $mask > /sys/class/net/dsr-s/queues/rx-0/rps_cpus"
x "$P-lb" mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true
for i in c0 s0; do
    ns=$([ $i = c0 ] && echo cl || echo sv)
    echo "$i $(ip -n "$P-$ns" -br link show $i | awk '{print $3}')"
done
for i in eth-c eth-n; do echo "$i $(ip -n "$P-lb" -br link show $i | awk '{print $3}')"; done
