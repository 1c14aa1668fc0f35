/* Benchmark programs (Bench/, `make bench`, `fulcrum-bench`), not part of the product:
 *   bench_generate  run with BPF_F_TEST_XDP_LIVE_FRAMES: makes each frame one of `flows`
 *                   flows (source port, and past 32,768 flows the source address in
 *                   198.19.0.0/16), or with mode 1 a new flow every frame; XDP_TX, so the
 *                   frame really leaves
 *   bench_sink      on the client's veth: counts and drops IPv4 UDP, passes the rest
 *                   (ARP, and TCP for the connection scenarios)
 *   bench_reply     on the servers' veth: turns a UDP frame to port 9 into its reply
 *                   (addresses, ports and MACs swapped), counts it, XDP_TX; passes the rest
 *   bench_reflect   the in-kernel reference for MAT: swap MACs, XDP_TX back
 *   bench_nat       the in-kernel ceiling for NAT: the same rewrite as Fulcrum's, stateless,
 *                   both ways, bpf_redirect between the LB's two interfaces
 *   bench_stamp     tc egress on the client's veth: the time each numbered HTTP request
 *                   leaves the client; bench_reply, on the servers' veth, records how long
 *                   it took to arrive (the LB's own one-way latency, bench_lat_hist) */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 3); /* 0: generated, 1: sunk at the client, 2: answered by a server */
    __type(key, __u32);
    __type(value, __u64);
} bench_counts SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __u32); /* 0: flows, 1: mode (0 = cycle over the flows, 1 = every frame new) */
} bench_config SEC(".maps");

/* bench_generate's template: the frame's Ethernet, IPv4 and UDP headers (42 bytes),
 * written back before each run. BPF_F_TEST_XDP_LIVE_FRAMES initialises a page from the
 * test's frame only once and then recycles it; a system that rewrites frames in place
 * and sends them with XDP_TX (Fulcrum's offload, the XDP NAT) would otherwise hand the
 * generator back its own rewritten headers. Byte 63 is 1 once set. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u8[64]);
} bench_template SEC(".maps");

/* bench_nat's one entry: the VIP, three nodes, ports, and both sides' interfaces and MACs,
 * addresses and ports in network order. */
struct bench_nat_config {
    __u32 vip;
    __u32 nodes[3];
    __u16 vport, nport;
    __u32 ifindex_client, ifindex_nodes;
    __u8 mac_client[8], mac_lb_client[8], mac_lb_nodes[8], mac_nodes[8];
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct bench_nat_config);
} bench_nat_config SEC(".maps");

/* The LB's own latency (the latency scenario): when each request left the client, by its
 * number ("GET /?" and 8 digits starting a TCP payload), and a histogram of how long it
 * took to reach a server: 1 µs buckets below 2,048 µs, then 32 µs buckets, the last one
 * everything from about 34.8 ms. Both ends read the same clock (bpf_ktime_get_ns), so the
 * client's and the servers' scheduling is not in it, only the way between the two veths:
 * the LB, and the veth hops every row has. */
#define LAT_LINEAR 2048
#define LAT_WIDE_SHIFT 5 /* 32 µs */
#define LAT_BUCKETS (LAT_LINEAR + 1024)
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, __u32);
    __type(value, __u64);
} bench_lat_sent SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, LAT_BUCKETS);
    __type(key, __u32);
    __type(value, __u64);
} bench_lat_hist SEC(".maps");

/* The offset of the TCP payload of an IPv4 frame whose first 34 bytes are `h`, or 0. */
static __always_inline __u32 tcp_payload(const __u8 *h, const struct tcphdr *tcp)
{
    return 14 + (h[14] & 0xF) * 4 + tcp->doff * 4;
}

/* The request's number, from the first 14 bytes of its payload; -1 when not one. */
static __always_inline int request_id(const __u8 *b, __u32 *id)
{
    if (b[0] != 'G' || b[1] != 'E' || b[2] != 'T' || b[3] != ' ' || b[4] != '/' || b[5] != '?')
        return -1;
    __u32 v = 0;
#pragma unroll
    for (int i = 6; i < 14; i++) {
        if (b[i] < '0' || b[i] > '9')
            return -1;
        v = v * 10 + (b[i] - '0');
    }
    *id = v;
    return 0;
}

static __always_inline int is_ipv4_tcp(const __u8 *h)
{
    return h[12] == 0x08 && h[13] == 0x00 && (h[14] >> 4) == 4 && h[23] == IPPROTO_TCP;
}

SEC("tc")
int bench_stamp(struct __sk_buff *skb)
{
    __u8 h[34];
    struct tcphdr tcp;
    __u8 b[14];
    __u32 id;
    if (bpf_skb_load_bytes(skb, 0, h, sizeof(h)) || !is_ipv4_tcp(h))
        return TC_ACT_OK;
    if (bpf_skb_load_bytes(skb, 14 + (h[14] & 0xF) * 4, &tcp, sizeof(tcp)))
        return TC_ACT_OK;
    if (bpf_skb_load_bytes(skb, tcp_payload(h, &tcp), b, sizeof(b)) || request_id(b, &id))
        return TC_ACT_OK;
    __u64 now = bpf_ktime_get_ns();
    bpf_map_update_elem(&bench_lat_sent, &id, &now, BPF_ANY);
    return TC_ACT_OK;
}

/* At a server: a numbered request's arrival, into the histogram. */
static __always_inline void request_arrived(struct xdp_md *ctx)
{
    __u8 h[34];
    struct tcphdr tcp;
    __u8 b[14];
    __u32 id;
    if (bpf_xdp_load_bytes(ctx, 0, h, sizeof(h)) || !is_ipv4_tcp(h))
        return;
    if (bpf_xdp_load_bytes(ctx, 14 + (h[14] & 0xF) * 4, &tcp, sizeof(tcp)))
        return;
    if (bpf_xdp_load_bytes(ctx, tcp_payload(h, &tcp), b, sizeof(b)) || request_id(b, &id))
        return;
    __u64 *sent = bpf_map_lookup_elem(&bench_lat_sent, &id);
    if (!sent)
        return;
    __u64 us = (bpf_ktime_get_ns() - *sent) / 1000;
    bpf_map_delete_elem(&bench_lat_sent, &id);
    __u32 bucket = us < LAT_LINEAR ? (__u32)us : LAT_LINEAR + (__u32)((us - LAT_LINEAR) >> LAT_WIDE_SHIFT);
    if (bucket >= LAT_BUCKETS)
        bucket = LAT_BUCKETS - 1;
    __u64 *n = bpf_map_lookup_elem(&bench_lat_hist, &bucket);
    if (n)
        __sync_fetch_and_add(n, 1);
}

static __always_inline void ip_checksum(struct iphdr *ip)
{
    ip->check = 0;
    __u16 *words = (void *)ip;
    __u32 sum = 0;
#pragma unroll
    for (int i = 0; i < 10; i++)
        sum += words[i];
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum = (sum & 0xFFFF) + (sum >> 16);
    ip->check = (__u16)~sum;
}

/* RFC 1624 incremental update of a UDP checksum for a changed 32-bit word; 0 (none) stays 0. */
static __always_inline void udp_checksum_replace(struct udphdr *udp, __u32 from, __u32 to)
{
    if (!udp->check)
        return;
    __u32 sum = (__u16)~udp->check;
    sum += (__u16)~(from & 0xFFFF) + (__u16)~(from >> 16);
    sum += (to & 0xFFFF) + (to >> 16);
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum = (sum & 0xFFFF) + (sum >> 16);
    udp->check = (__u16)~sum ? (__u16)~sum : 0xFFFF;
}

static __always_inline __u64 bump(__u32 index)
{
    __u64 *v = bpf_map_lookup_elem(&bench_counts, &index);
    if (!v)
        return 0;
    return (*v)++;
}

SEC("xdp")
int bench_generate(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    struct udphdr *udp = (void *)(ip + 1);
    if ((void *)(udp + 1) > end)
        return XDP_DROP;
    __u32 zero = 0, one = 1;
    __u8 *template = bpf_map_lookup_elem(&bench_template, &zero);
    if (template && template[63] == 1)
        __builtin_memcpy(data, template, 42);
    __u32 *flows = bpf_map_lookup_elem(&bench_config, &zero);
    __u32 *mode = bpf_map_lookup_elem(&bench_config, &one);
    __u64 n = bump(0);
    __u32 f = flows && *flows ? *flows : 1;
    __u32 k = mode && *mode == 1 ? (__u32)(n & 0x7FFFFFFF) : (__u32)(n % f);
    udp->source = bpf_htons(1024 + (__u16)(k & 0x7FFF));
    udp->check = 0; /* IPv4 allows no UDP checksum; the port can change freely */
    /* Past 32,768 flows the source address varies too, over 198.19.0.0/16 (the LB
     * routes it back to the client's namespace). */
    if (k >> 15) {
        ip->saddr = bpf_htonl(0xC6130000u | (k >> 15));
        ip_checksum(ip);
    }
    return XDP_TX;
}

/* bench_syn_flood: a TCP SYN over IPv4, made a new connection on every run: the source
 * port takes 32,768 values and the source address 198.19.x.y the next 16 bits of the
 * counter, so 2^31 frames are all distinct flows. The IPv4 header checksum is made
 * right; the TCP checksum is left as the template's, wrong for the new tuple, on
 * purpose: the nodes drop the SYNs, and the test measures the LB alone. */
SEC("xdp")
int bench_syn_flood(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    __be16 *ports = (void *)(ip + 1);
    if ((void *)(ports + 2) > end)
        return XDP_DROP;
    __u64 n = bump(0);
    ports[0] = bpf_htons(1024 + (__u16)(n & 0x7FFF));
    ip->saddr = bpf_htonl(0xC6130000u | (__u32)((n >> 15) & 0xFFFF));
    ip_checksum(ip);
    return XDP_TX;
}

SEC("xdp")
int bench_sink(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->protocol != IPPROTO_UDP)
        return XDP_PASS;
    bump(1);
    return XDP_DROP;
}

static __always_inline void swap_macs(struct ethhdr *eth)
{
    __u8 tmp[6];
    __builtin_memcpy(tmp, eth->h_dest, 6);
    __builtin_memcpy(eth->h_dest, eth->h_source, 6);
    __builtin_memcpy(eth->h_source, tmp, 6);
}

SEC("xdp")
int bench_reply(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    struct udphdr *udp = (void *)(ip + 1);
    if ((void *)(ip + 1) <= end && eth->h_proto == bpf_htons(ETH_P_IP) && ip->protocol == IPPROTO_TCP) {
        request_arrived(ctx);
        return XDP_PASS;
    }
    if ((void *)(udp + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 ||
        ip->protocol != IPPROTO_UDP || udp->dest != bpf_htons(9))
        return XDP_PASS;
    bump(2);
    swap_macs(eth);
    __u32 a = ip->saddr;
    ip->saddr = ip->daddr;
    ip->daddr = a;
    __u16 p = udp->source;
    udp->source = udp->dest;
    udp->dest = p;
    ip->ttl = 64;
    ip_checksum(ip);
    return XDP_TX;
}

SEC("xdp")
int bench_reflect(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return XDP_DROP;
    swap_macs(eth);
    return XDP_TX;
}

SEC("xdp")
int bench_nat(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    struct udphdr *udp = (void *)(ip + 1);
    __u32 zero = 0;
    struct bench_nat_config *c = bpf_map_lookup_elem(&bench_nat_config, &zero);
    if (!c || (void *)(udp + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 ||
        ip->protocol != IPPROTO_UDP)
        return XDP_PASS;
    if (ctx->ingress_ifindex == c->ifindex_client && ip->daddr == c->vip && udp->dest == c->vport) {
        /* To a node: the node by a hash of the client's address and port. */
        __u32 pick = ((ip->saddr * 2654435761u) ^ udp->source) % 3;
        __u32 node = pick == 0 ? c->nodes[0] : pick == 1 ? c->nodes[1] : c->nodes[2];
        udp_checksum_replace(udp, ip->daddr, node);
        udp_checksum_replace(udp, udp->dest, c->nport);
        ip->daddr = node;
        udp->dest = c->nport;
        ip->ttl--;
        ip_checksum(ip);
        __builtin_memcpy(eth->h_source, c->mac_lb_nodes, 6);
        __builtin_memcpy(eth->h_dest, c->mac_nodes, 6);
        return bpf_redirect(c->ifindex_nodes, 0);
    }
    if (ctx->ingress_ifindex == c->ifindex_nodes && udp->source == c->nport &&
        (ip->saddr == c->nodes[0] || ip->saddr == c->nodes[1] || ip->saddr == c->nodes[2])) {
        /* A reply: from the VIP again. */
        udp_checksum_replace(udp, ip->saddr, c->vip);
        udp_checksum_replace(udp, udp->source, c->vport);
        ip->saddr = c->vip;
        udp->source = c->vport;
        ip->ttl--;
        ip_checksum(ip);
        __builtin_memcpy(eth->h_source, c->mac_lb_client, 6);
        __builtin_memcpy(eth->h_dest, c->mac_client, 6);
        return bpf_redirect(c->ifindex_client, 0);
    }
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
