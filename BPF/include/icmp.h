/* ICMP errors carry the header of the packet they are about; that packet identifies the
 * flow (a VIP's reply the network could not deliver, or a client packet a NAT node
 * refused). Only the IP header and the first 8 bytes of L4 are needed. */
#ifndef FULCRUM_ICMP_H
#define FULCRUM_ICMP_H

#include <linux/ip.h>
#include <linux/ipv6.h>
#include "parsing.h"

static __always_inline int icmp_is_error(__u8 type, int is_v6)
{
    if (is_v6)
        return type >= 1 && type <= 4;
    return type == 3 || type == 11 || type == 12;
}

/* Fills `inner` with the quoted packet's addresses and ports. */
static __always_inline int parse_icmp_inner(void *data, void *end, const struct packet *p, struct packet *inner)
{
    __u32 l4 = p->l4;
    if (!header_offset_ok(l4))
        return PARSE_MALFORMED;
    __u8 *icmp = data + l4;
    if ((void *)(icmp + 8) > end)
        return PARSE_MALFORMED;
    if (!icmp_is_error(icmp[0], p->is_v6))
        return PARSE_OTHER;
    __u32 off = l4 + 8;
    if (!p->is_v6) {
        struct iphdr *ip = data + off;
        if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl < 5)
            return PARSE_MALFORMED;
        inner->proto = ip->protocol;
        addr_from_v4(&inner->src, ip->saddr);
        addr_from_v4(&inner->dst, ip->daddr);
        off += ip->ihl * 4;
    } else {
        struct ipv6hdr *ip6 = data + off;
        if ((void *)(ip6 + 1) > end || ip6->version != 6)
            return PARSE_MALFORMED;
        inner->proto = ip6->nexthdr;
        addr_from_v6(&inner->src, &ip6->saddr);
        addr_from_v6(&inner->dst, &ip6->daddr);
        off += sizeof(*ip6);
    }
    if (inner->proto != IPPROTO_TCP && inner->proto != IPPROTO_UDP)
        return PARSE_OTHER;
    __be16 *ports = data + off;
    if ((void *)(ports + 2) > end)
        return PARSE_MALFORMED;
    inner->sport = ports[0];
    inner->dport = ports[1];
    return PARSE_IP;
}

#endif
