/* Fulcrum's XDP program: steer service traffic (and NAT replies) into the AF_XDP socket
 * of the receiving queue, forward the established flows a worker offloaded, answer
 * ARP/NS for VIPs while active, pass everything else. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "include/fulcrum_abi.h"
#include "include/parsing.h"
#include "include/maps.h"
#include "include/neighbor.h"
#include "include/icmp.h"
#include "include/offload.h"

/* Whether the receiving queue has a worker's socket. */
static __always_inline int has_worker(struct xdp_md *ctx, const struct fulcrum_ifslot *iface)
{
    __u32 queue = ctx->rx_queue_index;
    if (queue >= FULCRUM_MAX_QUEUES || iface->slot >= FULCRUM_MAX_INTERFACES)
        return 0;
    __u32 key = FULCRUM_XSK_KEY(iface->slot, queue);
    return bpf_map_lookup_elem(&fulcrum_xsks, &key) != 0;
}

static __always_inline int to_worker(struct xdp_md *ctx, const struct fulcrum_ifslot *iface)
{
    if (ctx->data_end - ctx->data > FULCRUM_MAX_WORKER_FRAME) {
        count(FULCRUM_CNT_DROP_OVERSIZE);
        return XDP_DROP;
    }
    __u32 queue = ctx->rx_queue_index;
    if (queue >= FULCRUM_MAX_QUEUES || iface->slot >= FULCRUM_MAX_INTERFACES) {
        count(FULCRUM_CNT_NO_SOCKET);
        return XDP_PASS;
    }
    __u32 key = FULCRUM_XSK_KEY(iface->slot, queue);
    if (!bpf_map_lookup_elem(&fulcrum_xsks, &key)) {
        count(FULCRUM_CNT_NO_SOCKET);
        return XDP_PASS;
    }
    count(FULCRUM_CNT_TO_WORKER);
    return bpf_redirect_map(&fulcrum_xsks, key, XDP_PASS);
}

static __always_inline int for_this_interface(void *data, void *end, const struct fulcrum_ifslot *iface)
{
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return 0;
    const __u8 *d = eth->h_dest;
    const __u8 *m = iface->mac;
    return ((d[0] ^ m[0]) | (d[1] ^ m[1]) | (d[2] ^ m[2]) | (d[3] ^ m[3]) | (d[4] ^ m[4]) | (d[5] ^ m[5])) == 0;
}

#define OURS_SERVICE 1
#define OURS_OTHER 2 /* a NAT reply, or an ICMP error about a service flow */

/* Does this IP packet belong to a service, a NAT reply, or an ICMP error about either? */
static __always_inline int is_ours(void *data, void *end, struct packet *p)
{
    if (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP) {
        if (lookup_endpoint(&fulcrum_services, &p->dst, p->dport, p->proto))
            return OURS_SERVICE;
        if (!bpf_map_lookup_elem(&fulcrum_local, &p->dst) &&
            lookup_endpoint(&fulcrum_replies, &p->src, p->sport, p->proto)) {
            count(FULCRUM_CNT_NAT_REPLY);
            return OURS_OTHER;
        }
        return 0;
    }
    if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6) {
        struct packet inner = {};
        int r = parse_icmp_inner(data, end, p, &inner);
        if (r == PARSE_MALFORMED) {
            p->reason = FULCRUM_CNT_DROP_MALFORMED_ICMP;
            return -1;
        }
        if (r != PARSE_IP)
            return 0;
        /* About a packet the VIP sent, or one a NAT node received. */
        if (lookup_endpoint(&fulcrum_services, &inner.src, inner.sport, inner.proto) ||
            lookup_endpoint(&fulcrum_replies, &inner.dst, inner.dport, inner.proto)) {
            count(FULCRUM_CNT_ICMP_ERROR);
            return OURS_OTHER;
        }
    }
    return 0;
}

/* A fragment of a TCP or UDP datagram to a VIP, or from a NAT node (its reply): the
 * worker keeps every fragment of a datagram on one path. Only the first fragment has
 * ports, so a VIP and a node are matched by address. */
static __always_inline int fragment_is_ours(const struct packet *p)
{
    if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP)
        return 0;
    return bpf_map_lookup_elem(&fulcrum_vips, &p->dst) ||
           (!bpf_map_lookup_elem(&fulcrum_local, &p->dst) && lookup_endpoint(&fulcrum_replies, &p->src, 0, p->proto));
}

/* A TCP SYN without ACK: the first packet of a connection. (A segment cut short
 * before its flags is not one; the worker drops it as truncated.) */
static __always_inline int opens_connection(void *data, void *end, const struct packet *p)
{
    if (p->proto != IPPROTO_TCP)
        return 0;
    /* Bounded, so that the verifier can prove the check below (an offset it only knows
     * to be under 64 KiB, plus 14, may be past any packet). A frame whose TCP header
     * starts this far in is dropped as oversize before a worker sees it anyway. */
    __u32 l4 = p->l4;
    if (!header_offset_ok(l4))
        return 0;
    __u8 *flags = data + l4 + 13;
    if ((void *)(flags + 1) > end)
        return 0;
    return (*flags & 0x12) == 0x02;
}

SEC("xdp")
int fulcrum_xdp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct packet p = {};
    count(FULCRUM_CNT_RX);
    int r = parse_ethernet(data, end, &p);
    int l3 = PARSE_OTHER;
    struct fulcrum_state *s = 0;
    int active = -1; /* not asked yet: state_active counts a stale daemon once per frame of ours */
    if (r == PARSE_IP) {
        l3 = p.ether_type == ETH_P_IP ? parse_ipv4(data, end, &p) : parse_ipv6(data, end, &p);
        /* An established flow a worker offloaded: forwarded here, first (an entry exists
         * only for a flow of a service or a NAT reply, decided by a worker of this active
         * LB; entries are withdrawn at role changes and at reloads that change them),
         * and before the admission budget, so that a flood of new flows cannot crowd it
         * out. The entry names the interface and MAC address its frames arrive with, so
         * nothing else is looked up for them (not even the interface's slot). */
        if (l3 == PARSE_IP && (p.proto == IPPROTO_TCP || p.proto == IPPROTO_UDP)) {
            s = state();
            if (s && s->offload_mask) {
                __u64 now = bpf_ktime_get_coarse_ns(); /* one clock read: the deadline, and the entry's stamp */
                if (state_active_at(s, now)) {
                    active = 1;
                    int verdict = offload_forward(ctx, &p, s, now);
                    if (verdict >= 0)
                        return verdict;
                } /* else not asked yet, as far as counting goes: a frame of ours counts a stale daemon below */
            }
        }
    }

    __u32 ifindex = ctx->ingress_ifindex;
    struct fulcrum_ifslot *iface = bpf_map_lookup_elem(&fulcrum_ifslots, &ifindex);
    if (!iface)
        goto pass;
    if (r == PARSE_MALFORMED)
        goto malformed;
    if (r == PARSE_VLAN) {
        count(FULCRUM_CNT_VLAN);
        return XDP_PASS;
    }
    if (r == PARSE_OTHER)
        goto pass;
    if (r == PARSE_ARP) {
        if (!is_active())
            goto pass;
        int verdict = answer_arp(data, end, &p, iface, has_worker(ctx, iface));
        if (verdict == -2) {
            p.reason = FULCRUM_CNT_DROP_MALFORMED_ARP;
            goto malformed;
        }
        if (verdict == ANSWER_IN_WORKER) {
            count(FULCRUM_CNT_NEIGH_TO_WORKER);
            return to_worker(ctx, iface);
        }
        if (verdict >= 0)
            return verdict;
        goto pass;
    }

    r = l3; /* parsed above */
    if (r == PARSE_MALFORMED)
        goto malformed;
    if (r == PARSE_FRAGMENT) {
        if (!for_this_interface(data, end, iface)) {
            count(FULCRUM_CNT_OTHER_MAC);
            return XDP_PASS;
        }
        if (!fragment_is_ours(&p)) {
            count(FULCRUM_CNT_FRAGMENT);
            return XDP_PASS;
        }
        if (!s)
            s = state();
        if (!state_active(s)) {
            count(FULCRUM_CNT_STANDBY_PASS);
            return XDP_PASS;
        }
        count(FULCRUM_CNT_FRAGMENT_TO_WORKER);
        return to_worker(ctx, iface);
    }

    if (p.is_v6 && p.proto == IPPROTO_ICMPV6) {
        __u32 l4 = p.l4;
        if (!header_offset_ok(l4)) {
            p.reason = FULCRUM_CNT_DROP_MALFORMED_ICMP;
            goto malformed;
        }
        __u8 *icmp = data + l4;
        if ((void *)(icmp + 1) > end) {
            p.reason = FULCRUM_CNT_DROP_MALFORMED_ICMP;
            goto malformed;
        }
        if (*icmp == 135) {
            if (!is_active())
                goto pass;
            int verdict = answer_ns(ctx, &p, iface, has_worker(ctx, iface));
            if (verdict == ANSWER_IN_WORKER) {
                count(FULCRUM_CNT_NEIGH_TO_WORKER);
                return to_worker(ctx, iface);
            }
            if (verdict >= 0)
                return verdict;
            goto pass;
        }
    }

    /* Only frames for this interface (ARP and NS, above, come to broadcast and
     * multicast addresses): a frame for another host's MAC, or a broadcast or multicast
     * one, is never load-balanced. */
    if (!for_this_interface(data, end, iface)) {
        count(FULCRUM_CNT_OTHER_MAC);
        return XDP_PASS;
    }

    int ours = is_ours(data, end, &p);
    if (ours < 0)
        goto malformed;
    if (ours) {
        if (!s)
            s = state();
        if (active < 0)
            active = state_active(s);
        if (!active) {
            count(FULCRUM_CNT_STANDBY_PASS);
            return XDP_PASS;
        }
        if (ours == OURS_SERVICE && opens_connection(data, end, &p) && !admit_new_connection(s)) {
            count(FULCRUM_CNT_DROP_OVER_BUDGET);
            return XDP_DROP;
        }
        return to_worker(ctx, iface);
    }
pass:
    count(FULCRUM_CNT_PASS);
    return XDP_PASS;
malformed:
    count(p.reason);
    return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
