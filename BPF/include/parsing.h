/* Bounds-checked header parsing. Every access is preceded by a check against data_end,
 * which is also what the verifier demands. */
#ifndef FULCRUM_PARSING_H
#define FULCRUM_PARSING_H

#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include "fulcrum_abi.h"

#define ETH_P_8021Q_ 0x8100
#define ETH_P_ARP_ 0x0806
#define IPV6_EXT_MAX FULCRUM_IPV6_MAX_EXTENSION_HEADERS

struct vlan_hdr_ {
    __be16 tci;
    __be16 encapsulated_proto;
};

/* What the parser found; offsets from the start of the frame. */
struct packet {
    __u32 reason; /* the FULCRUM_CNT_DROP_* counter, when a parse says PARSE_MALFORMED */
    __u16 l3;
    __u16 l4;
    __u16 ether_type;
    __u8 proto;
    __u8 is_v6;
    struct fulcrum_addr src;
    struct fulcrum_addr dst;
    __be16 sport;
    __be16 dport;
};

static __always_inline void addr_from_v4(struct fulcrum_addr *a, __be32 v4)
{
    __builtin_memset(a->bytes, 0, 10);
    a->bytes[10] = 0xff;
    a->bytes[11] = 0xff;
    __builtin_memcpy(&a->bytes[12], &v4, 4);
}

static __always_inline void addr_from_v6(struct fulcrum_addr *a, const struct in6_addr *v6)
{
    __builtin_memcpy(a->bytes, v6, 16);
}

enum parse_result {
    PARSE_IP = 0,
    PARSE_ARP,
    PARSE_OTHER,
    PARSE_MALFORMED,
    PARSE_FRAGMENT,
    PARSE_VLAN,
};

/* The verifier checks a packet pointer against data_end only while its variable offset
 * is known to stay under 64 KiB. An offset read back from `struct packet` (spilled to the
 * stack as 16 bits) is known only to be under 64 KiB itself, so adding a header's size
 * to it defeats the check. Every such offset goes through here first, in the same block
 * as the pointer it makes. No header of a frame the program handles starts this far in
 * (a worker's frame is at most FULCRUM_MAX_WORKER_FRAME bytes). */
#define FULCRUM_MAX_HEADER_OFFSET 2048
static __always_inline int header_offset_ok(__u32 off)
{
    return off <= FULCRUM_MAX_HEADER_OFFSET;
}

/* PARSE_MALFORMED, with the reason it is counted under. */
#define MALFORMED(p, why) ((p)->reason = FULCRUM_CNT_DROP_##why, PARSE_MALFORMED)

/* Ethernet and an optional 802.1Q tag. */
static __always_inline int parse_ethernet(void *data, void *end, struct packet *p)
{
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return MALFORMED(p, TRUNCATED_ETHERNET);
    __u16 type = bpf_ntohs(eth->h_proto);
    __u16 l3 = sizeof(*eth);
    if (type == ETH_P_8021Q_) {
        /* Fulcrum does not know which VLANs are its own: a tagged frame is the kernel's
         * (its VLAN interfaces), never forwarded still tagged to a node. */
        struct vlan_hdr_ *vlan = (void *)(eth + 1);
        if ((void *)(vlan + 1) > end)
            return MALFORMED(p, TRUNCATED_VLAN);
        return PARSE_VLAN;
    }
    p->l3 = l3;
    p->ether_type = type;
    if (type == ETH_P_ARP_)
        return PARSE_ARP;
    if (type != ETH_P_IP && type != ETH_P_IPV6)
        return PARSE_OTHER;
    return PARSE_IP;
}

/* Reads the two ports at data + off, if TCP or UDP. */
static __always_inline int parse_ports(void *data, void *end, __u32 off, struct packet *p)
{
    if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP)
        return PARSE_IP;
    __be16 *ports = data + off;
    if ((void *)(ports + 2) > end)
        return MALFORMED(p, TRUNCATED_PORTS);
    p->sport = ports[0];
    p->dport = ports[1];
    return PARSE_IP;
}

static __always_inline int parse_ipv4(void *data, void *end, struct packet *p)
{
    __u32 l3 = p->l3;
    if (!header_offset_ok(l3))
        return MALFORMED(p, TRUNCATED_IP);
    struct iphdr *ip = data + l3;
    if ((void *)(ip + 1) > end)
        return MALFORMED(p, TRUNCATED_IP);
    if (ip->version != 4 || ip->ihl < 5)
        return MALFORMED(p, BAD_IP_HEADER);
    __u32 ihl = ip->ihl * 4;
    p->is_v6 = 0;
    p->proto = ip->protocol;
    addr_from_v4(&p->src, ip->saddr);
    addr_from_v4(&p->dst, ip->daddr);
    if (ip->frag_off & bpf_htons(0x3FFF))
        return PARSE_FRAGMENT;
    p->l4 = l3 + ihl;
    return parse_ports(data, end, l3 + ihl, p);
}

static __always_inline int is_ipv6_extension(__u8 next)
{
    return next == 0 /* hop-by-hop */ || next == 43 /* routing */ || next == 60 /* dest opts */ || next == 44;
}

static __always_inline int parse_ipv6(void *data, void *end, struct packet *p)
{
    __u32 l3 = p->l3;
    if (!header_offset_ok(l3))
        return MALFORMED(p, TRUNCATED_IP);
    struct ipv6hdr *ip6 = data + l3;
    if ((void *)(ip6 + 1) > end)
        return MALFORMED(p, TRUNCATED_IP);
    if (ip6->version != 6)
        return MALFORMED(p, BAD_IP_HEADER);
    p->is_v6 = 1;
    addr_from_v6(&p->src, &ip6->saddr);
    addr_from_v6(&p->dst, &ip6->daddr);
    __u8 next = ip6->nexthdr;
    __u32 off = l3 + sizeof(*ip6);
#pragma unroll
    for (int i = 0; i < IPV6_EXT_MAX; i++) {
        if (next == 44 /* fragment */) {
            if (!header_offset_ok(off))
                return MALFORMED(p, IPV6_EXTENSIONS);
            __u8 *frag = data + off;
            if ((void *)(frag + 8) > end)
                return MALFORMED(p, IPV6_EXTENSIONS);
            next = frag[0];
            off += 8;
            /* Offset 0 and no more fragments: atomic (RFC 6946), a whole packet. */
            if ((frag[2] | (frag[3] & 0xF9)) != 0) {
                p->proto = next; /* the first header of the fragmentable part */
                return PARSE_FRAGMENT;
            }
            continue;
        }
        if (!is_ipv6_extension(next))
            break;
        if (!header_offset_ok(off))
            return MALFORMED(p, IPV6_EXTENSIONS);
        __u8 *ext = data + off;
        if ((void *)(ext + 2) > end)
            return MALFORMED(p, IPV6_EXTENSIONS);
        next = ext[0];
        off += ((__u32)ext[1] + 1) * 8;
        if (!header_offset_ok(off))
            return MALFORMED(p, IPV6_EXTENSIONS);
    }
    if (is_ipv6_extension(next) || next == 44)
        return MALFORMED(p, IPV6_EXTENSIONS); /* more than we walk, as the Swift side */
    p->proto = next;
    p->l4 = off;
    return parse_ports(data, end, off, p);
}

#endif
