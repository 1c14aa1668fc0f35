/* Forwarding of established flows by the XDP program itself (FULCRUM_MAP_OFFLOAD in
 * fulcrum_abi.h). The worker decided the flow and wrote its rewrite; here the rewrite is
 * applied exactly as the Swift worker applies it (Rewrite.translate4/translate6: the
 * same RFC 1624 updates over the same words, so the checksums come out byte-identical,
 * which the differential test checks), then the frame leaves by XDP_TX or redirect. */
#ifndef FULCRUM_OFFLOAD_H
#define FULCRUM_OFFLOAD_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "fulcrum_abi.h"
#include "parsing.h"
#include "maps.h"

#define OFFLOAD_BARRIER() asm volatile("" ::: "memory")
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04

/* What the program needs of an entry, copied out under its sequence lock. */
struct offload_hit {
    struct fulcrum_offload *entry;
    __u32 ifindex;
    __u16 max_frame;
    __u16 new_port;
    __u8 action;
    __u8 pad[3];
    struct fulcrum_addr new_addr;
    __u8 eth[12];
};

static __always_inline __u64 offload_load64(const __u8 *b)
{
    __u64 v;
    __builtin_memcpy(&v, b, 8);
    return v;
}

/* The checksum field after adding `acc` (one's-complement words, as they lie in memory):
 * RFC 1624 eqn. 3, HC' = ~(~HC + acc). */
static __always_inline __u16 offload_csum(__u16 field, __u64 acc)
{
    __u64 sum = (__u64)(__u16)~field + acc;
#pragma unroll
    for (int i = 0; i < 4; i++)
        sum = (sum & 0xFFFF) + (sum >> 16);
    return (__u16)~sum;
}

/* A UDP checksum: 0 ("none") stays 0, a computed 0 is sent as 0xFFFF (RFC 768). */
static __always_inline __u16 offload_udp_csum(__u16 field, __u64 acc)
{
    if (field == 0)
        return 0;
    __u16 c = offload_csum(field, acc);
    return c ? c : 0xFFFF;
}

/* Finds the frame's flow in this queue's region; 0 and `hit` filled when found. The
 * entry says which interface and destination MAC address (`dst_head`, `dst_tail`: the
 * frame's) its frames arrive with, so a frame of the flow that came another way, or was
 * for another host, stays on the ordinary path (which counts it). */
static __always_inline int offload_find(const struct xdp_md *ctx, const struct packet *p, __u32 mask,
                                        __u32 dst_head, __u16 dst_tail, struct offload_hit *hit)
{
    __u32 queue = ctx->rx_queue_index;
    if (queue >= FULCRUM_MAX_QUEUES)
        return -1;
    __u64 s0 = offload_load64(&p->src.bytes[0]), s1 = offload_load64(&p->src.bytes[8]);
    __u64 d0 = offload_load64(&p->dst.bytes[0]), d1 = offload_load64(&p->dst.bytes[8]);
    __u64 ports = (__u64)p->sport | (__u64)p->dport << 16 | (__u64)p->proto << 32;
    __u64 h = fulcrum_offload_hash(s0, s1, d0, d1, ports);
    /* The home slot's bit: clear, nothing of this flow's is in the table. */
    __u32 home = (__u32)h & mask;
    __u32 word = queue * FULCRUM_OFFLOAD_INDEX_WORDS(mask) + (home >> 6);
    __u64 *bits = bpf_map_lookup_elem(&fulcrum_offload_index, &word);
    if (!bits || !(*bits & (1ULL << (home & 63))))
        return -1;
    __u32 base = queue * (mask + 1);
#pragma unroll
    for (int i = 0; i < FULCRUM_OFFLOAD_PROBES; i++) {
        __u32 key = base + (((__u32)h + i) & mask);
        struct fulcrum_offload *e = bpf_map_lookup_elem(&fulcrum_offload, &key);
        if (!e)
            return -1;
        __u32 seq = *(volatile __u32 *)&e->seq;
        OFFLOAD_BARRIER();
        if (seq & 1)
            continue;
        __u8 action = e->action;
        if (!action)
            return -1; /* empty: the flow is not further along (fulcrum_abi.h) */
        if (action == FULCRUM_OFFLOAD_WITHDRAWN)
            continue;
        if (e->proto != p->proto || e->sport != p->sport || e->dport != p->dport ||
            offload_load64(&e->src.bytes[0]) != s0 || offload_load64(&e->src.bytes[8]) != s1 ||
            offload_load64(&e->dst.bytes[0]) != d0 || offload_load64(&e->dst.bytes[8]) != d1)
            continue;
        __u32 from = e->from_ifindex;
        __u32 mac_head;
        __u16 mac_tail;
        __builtin_memcpy(&mac_head, &e->in_mac[0], 4);
        __builtin_memcpy(&mac_tail, &e->in_mac[4], 2);
        hit->entry = e;
        hit->ifindex = e->ifindex;
        hit->max_frame = e->max_frame;
        hit->new_port = e->new_port;
        hit->action = action;
        __builtin_memcpy(&hit->new_addr, &e->new_addr, sizeof(hit->new_addr));
        __builtin_memcpy(hit->eth, e->eth, sizeof(hit->eth));
        OFFLOAD_BARRIER();
        if (*(volatile __u32 *)&e->seq != seq)
            return -1; /* rewritten meanwhile: the worker has this frame */
        if (from != ctx->ingress_ifindex || dst_head != mac_head || dst_tail != mac_tail)
            return -1; /* e.g. a reply from the wrong side: the worker counts and drops it */
        return 0;
    }
    return -1;
}

/* Rewrites one endpoint (address and port) and the checksums that cover it. */
static __always_inline int offload_translate(void *data, void *end, const struct packet *p,
                                             const struct offload_hit *hit)
{
    int is_source = hit->action == FULCRUM_OFFLOAD_NAT_SRC;
    __u32 l3 = p->l3, l4 = p->l4;
    if (!header_offset_ok(l3) || !header_offset_ok(l4))
        return -1;
    /* Every bound first: a frame found short is the worker's, untouched. */
    __u16 *ports = data + l4;
    if ((void *)(ports + 2) > end)
        return -1;
    __u16 *check = data + l4 + (p->proto == IPPROTO_UDP ? 6 : 16);
    if ((void *)(check + 1) > end)
        return -1;
    __u64 acc = 0;
    if (!p->is_v6) {
        struct iphdr *ip = data + l3;
        if ((void *)(ip + 1) > end)
            return -1;
        __u32 *addr = is_source ? &ip->saddr : &ip->daddr;
        __u32 old = *addr, new;
        __builtin_memcpy(&new, &hit->new_addr.bytes[12], 4);
        acc = (__u64)(__u32)~old + new;
        *addr = new;
        ip->check = offload_csum(ip->check, acc);
    } else {
        struct ipv6hdr *ip6 = data + l3;
        if ((void *)(ip6 + 1) > end)
            return -1;
        __u32 *addr = is_source ? (__u32 *)&ip6->saddr : (__u32 *)&ip6->daddr;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            __u32 new;
            __builtin_memcpy(&new, &hit->new_addr.bytes[4 * i], 4);
            acc += (__u64)(__u32)~addr[i] + new;
            addr[i] = new;
        }
    }
    __u16 *port = is_source ? &ports[0] : &ports[1];
    acc += (__u64)(__u16)~*port + hit->new_port;
    *port = hit->new_port;
    if (p->proto == IPPROTO_UDP)
        *check = offload_udp_csum(*check, acc);
    else
        *check = offload_csum(*check, acc);
    return 0;
}

/* An established flow's frame, forwarded here: the verdict, or -1 for the worker (not
 * offloaded, a TCP segment with SYN, FIN or RST, too long, or being rewritten). `now`
 * (bpf_ktime_get_coarse_ns, read once for the daemon's deadline too: a tick's precision
 * ages flows well enough, at a fraction of the precise clock's cost) stamps the entry. */
static __always_inline int offload_forward(struct xdp_md *ctx, const struct packet *p, const struct fulcrum_state *s,
                                           __u64 now)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    if (p->proto == IPPROTO_TCP) {
        __u32 l4 = p->l4;
        if (!header_offset_ok(l4))
            return -1;
        __u8 *flags = data + l4 + 13;
        if ((void *)(flags + 1) > end)
            return -1;
        if (*flags & (TCP_FIN | TCP_SYN | TCP_RST))
            return -1; /* state changes are the worker's */
    } else if (p->proto != IPPROTO_UDP) {
        return -1;
    }
    struct ethhdr *eth = data;
    asm volatile("" : "+r"(eth)); /* keep the check below: the compiler knows it holds, the verifier must see it */
    if ((void *)(eth + 1) > end)
        return -1;
    __u32 dst_head;
    __u16 dst_tail;
    __builtin_memcpy(&dst_head, &eth->h_dest[0], 4);
    __builtin_memcpy(&dst_tail, &eth->h_dest[4], 2);
    struct offload_hit hit = {};
    if (offload_find(ctx, p, s->offload_mask, dst_head, dst_tail, &hit))
        return -1;
    __u64 length = (__u64)(end - data);
    if (length > hit.max_frame)
        return -1;
    if (hit.action != FULCRUM_OFFLOAD_MAT && offload_translate(data, end, p, &hit))
        return -1;
    /* Both MAC addresses, as six 16-bit stores: the frame is 2-byte aligned, and a byte
     * copy (what the compiler makes of an alignment it cannot see) is twelve. */
    __u16 *mac = (__u16 *)eth;
    const __u16 *to = (const __u16 *)hit.eth;
#pragma unroll
    for (int i = 0; i < 6; i++)
        mac[i] = to[i];
    struct fulcrum_offload *e = hit.entry;
    e->last_used = now;
    if (s->offload_shared_writers) {
        __sync_fetch_and_add(&e->packets, 1);
        __sync_fetch_and_add(&e->bytes, length);
    } else { /* one writer: this queue's receive, one frame at a time (fulcrum_state) */
        e->packets += 1;
        e->bytes += length;
    }
    count(FULCRUM_CNT_OFFLOADED);
    if (hit.ifindex == ctx->ingress_ifindex)
        return XDP_TX;
    return bpf_redirect(hit.ifindex, 0);
}

#endif
