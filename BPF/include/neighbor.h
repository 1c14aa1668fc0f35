/* ARP requests and IPv6 neighbour solicitations for our VIPs. Only while this LB is
 * active. When the receiving queue has a worker, the request goes to it, and it answers
 * through its AF_XDP TX ring: that path delivers to any peer, where a frame sent with
 * XDP_TX is dropped by a veth peer that runs no XDP program. Without a worker on the
 * queue, the program answers itself, in place, with XDP_TX. */
#ifndef FULCRUM_NEIGHBOR_H
#define FULCRUM_NEIGHBOR_H

#include <linux/if_ether.h>
#include <linux/ipv6.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "maps.h"
#include "parsing.h"

struct arp_ipv4 {
    __be16 htype;
    __be16 ptype;
    __u8 hlen;
    __u8 plen;
    __be16 op;
    __u8 sha[6];
    __be32 spa;
    __u8 tha[6];
    __be32 tpa;
} __attribute__((packed));

/* A request ours to answer, for the worker to answer. */
#define ANSWER_IN_WORKER -3

/* Returns XDP_TX with the frame turned into a reply, ANSWER_IN_WORKER, -1 when not ours
 * to answer, or -2 when malformed. */
static __always_inline int answer_arp(void *data, void *end, const struct packet *p,
                                      const struct fulcrum_ifslot *iface, int worker)
{
    struct ethhdr *eth = data;
    __u32 l3 = p->l3;
    if (!header_offset_ok(l3))
        return -2;
    struct arp_ipv4 *arp = data + l3;
    if ((void *)(arp + 1) > end || (void *)(eth + 1) > end)
        return -2;
    if (arp->htype != bpf_htons(1) || arp->ptype != bpf_htons(ETH_P_IP) || arp->hlen != 6 || arp->plen != 4)
        return -2;
    if (arp->op != bpf_htons(1))
        return -1;
    struct fulcrum_addr target;
    addr_from_v4(&target, arp->tpa);
    if (!bpf_map_lookup_elem(&fulcrum_vips, &target))
        return -1;
    if (worker)
        return ANSWER_IN_WORKER;
    __be32 asker = arp->spa;
    __builtin_memcpy(eth->h_dest, arp->sha, 6);
    __builtin_memcpy(eth->h_source, iface->mac, 6);
    arp->op = bpf_htons(2);
    __builtin_memcpy(arp->tha, arp->sha, 6);
    arp->tpa = asker;
    __builtin_memcpy(arp->sha, iface->mac, 6);
    __builtin_memcpy(&arp->spa, &target.bytes[12], 4);
    count(FULCRUM_CNT_ARP_REPLY);
    return XDP_TX;
}

#define NA_ICMP_LEN 32 /* NA header (24) + target link-layer address option (8) */

struct ns_pseudo {
    struct in6_addr src;
    struct in6_addr dst;
    __be32 length;
    __u8 zero[3];
    __u8 next;
};

static __always_inline __u16 csum_fold(__u64 sum)
{
#pragma unroll
    for (int i = 0; i < 4; i++)
        sum = (sum & 0xFFFF) + (sum >> 16);
    return (__u16)~sum;
}

/* A solicitation (RFC 4861 §7.1.1 checks) for a VIP becomes a solicited advertisement
 * (to the all-nodes group when the asker is doing DAD from ::). */
static __always_inline int answer_ns(struct xdp_md *ctx, const struct packet *p,
                                     const struct fulcrum_ifslot *iface_ptr, int worker)
{
    struct fulcrum_ifslot iface = *iface_ptr;
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    __u32 l3 = p->l3;
    if (l3 != 14 && l3 != 18)
        return -1;
    struct ipv6hdr *ip6 = data + l3;
    __u8 *icmp = (void *)(ip6 + 1);
    if ((void *)(icmp + 24) > end)
        return -1;
    if (ip6->hop_limit != 255 || icmp[1] != 0)
        return -1;
    struct fulcrum_addr target;
    __builtin_memcpy(target.bytes, icmp + 8, 16);
    struct fulcrum_vip_value *vip_ptr = bpf_map_lookup_elem(&fulcrum_vips, &target);
    if (!vip_ptr)
        return -1;
    if (worker)
        return ANSWER_IN_WORKER;
    struct fulcrum_vip_value vip = *vip_ptr;
    struct in6_addr asker = ip6->saddr;
    __u8 asker_mac[6];
    struct ethhdr *eth0 = data;
    if ((void *)(eth0 + 1) > end)
        return -1;
    __builtin_memcpy(asker_mac, eth0->h_source, 6);
    int dad = asker.in6_u.u6_addr32[0] == 0 && asker.in6_u.u6_addr32[1] == 0 &&
              asker.in6_u.u6_addr32[2] == 0 && asker.in6_u.u6_addr32[3] == 0;

    /* Make the frame exactly Ethernet + IPv6 + 32 bytes of ICMPv6. */
    int want = (int)(l3 + sizeof(struct ipv6hdr) + NA_ICMP_LEN);
    int have = (int)(end - data);
    if (have != want && bpf_xdp_adjust_tail(ctx, want - have))
        return -1;
    data = (void *)(long)ctx->data;
    end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if (l3 == 18) {
        ip6 = data + 18;
    } else {
        ip6 = data + 14;
    }
    icmp = (void *)(ip6 + 1);
    if ((void *)(eth + 1) > end || (void *)(icmp + NA_ICMP_LEN) > end)
        return -1;

    static const __u8 all_nodes_mac[6] = {0x33, 0x33, 0, 0, 0, 1};
    if (dad)
        __builtin_memcpy(eth->h_dest, all_nodes_mac, 6);
    else
        __builtin_memcpy(eth->h_dest, asker_mac, 6);
    __builtin_memcpy(eth->h_source, iface.mac, 6);

    ip6->payload_len = bpf_htons(NA_ICMP_LEN);
    ip6->nexthdr = IPPROTO_ICMPV6;
    ip6->hop_limit = 255;
    __builtin_memcpy(&ip6->saddr, target.bytes, 16);
    if (dad) {
        __builtin_memset(&ip6->daddr, 0, 16);
        ip6->daddr.in6_u.u6_addr8[0] = 0xff;
        ip6->daddr.in6_u.u6_addr8[1] = 0x02;
        ip6->daddr.in6_u.u6_addr8[15] = 1;
    } else {
        ip6->daddr = asker;
    }

    icmp[0] = 136;
    icmp[1] = 0;
    icmp[2] = 0;
    icmp[3] = 0;
    icmp[4] = (vip.flags & FULCRUM_VIP_ROUTER ? 0x80 : 0) | (dad ? 0 : 0x40) | 0x20;
    icmp[5] = 0;
    icmp[6] = 0;
    icmp[7] = 0;
    /* bytes 8..23 still hold the target */
    icmp[24] = 2; /* target link-layer address */
    icmp[25] = 1;
    __builtin_memcpy(icmp + 26, iface.mac, 6);

    struct ns_pseudo pseudo = {};
    pseudo.src = ip6->saddr;
    pseudo.dst = ip6->daddr;
    pseudo.length = bpf_htonl(NA_ICMP_LEN);
    pseudo.next = IPPROTO_ICMPV6;
    __s64 sum = bpf_csum_diff(0, 0, (__be32 *)&pseudo, sizeof(pseudo), 0);
    if (sum < 0)
        return -1;
    sum = bpf_csum_diff(0, 0, (__be32 *)icmp, NA_ICMP_LEN, (__u32)sum);
    if (sum < 0)
        return -1;
    __u16 csum = csum_fold((__u64)sum);
    icmp[2] = csum & 0xFF;
    icmp[3] = csum >> 8;
    count(FULCRUM_CNT_NA_REPLY);
    return XDP_TX;
}

#endif
