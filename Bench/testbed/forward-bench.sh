#!/usr/bin/env bash
# Topology of the forwarding benchmark (`make bench`):
#
#   PREFIX-gen [g0] ──veth── [eth0] PREFIX-lb
#   198.18.0.2                198.18.0.1
#
# The generator transmits from g0 with BPF_PROG_TEST_RUN live frames; whatever the LB
# sends back arrives at g0, where a sink program counts it. Bounded by the benchmark's
# run time; removed by `down` (also on failure, by the caller's trap).
set -euo pipefail
cmd=${1:?usage: forward-bench.sh up|down PREFIX}
P=${2:?prefix}
if [ "$cmd" = down ]; then
    for ns in "$P-gen" "$P-lb"; do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
    exit 0
fi
"$0" down "$P"
ip netns add "$P-gen"
ip netns add "$P-lb"
ip -n "$P-gen" link add g0 type veth peer name eth0 netns "$P-lb"
ip -n "$P-gen" link set lo up
ip -n "$P-lb" link set lo up
ip -n "$P-gen" addr add 198.18.0.2/24 dev g0
ip -n "$P-lb" addr add 198.18.0.1/24 dev eth0
ip -n "$P-gen" link set g0 up
ip -n "$P-lb" link set eth0 up
ip netns exec "$P-lb" sysctl -qw net.ipv4.ip_forward=0
echo "g0 $(cat /sys/class/net/lo/address >/dev/null; ip -n "$P-gen" -br link show g0 | awk '{print $3}')"
echo "eth0 $(ip -n "$P-lb" -br link show eth0 | awk '{print $3}')"
