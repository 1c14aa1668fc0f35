/* Benchmark programs (Bench/, `make bench`), not part of the product:
 *   bench_generate  run with BPF_F_TEST_XDP_LIVE_FRAMES: varies the UDP source port over
 *                   `flows` values and returns XDP_TX, so the frame really leaves
 *   bench_sink      on the receiving veth: counts and drops
 *   bench_reflect   the in-kernel reference: swap MACs, XDP_TX back */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 2); /* 0: generated, 1: sunk */
    __type(key, __u32);
    __type(value, __u64);
} bench_counts SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32); /* flows */
} bench_config SEC(".maps");

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
    __u32 zero = 0;
    __u32 *flows = bpf_map_lookup_elem(&bench_config, &zero);
    __u64 n = bump(0);
    __u32 f = flows && *flows ? *flows : 1;
    udp->source = bpf_htons(1024 + (__u16)(n % f));
    udp->check = 0; /* IPv4 allows no UDP checksum; the port can change freely */
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
    ip->check = 0;
    __u16 *words = (void *)ip;
    __u32 sum = 0;
#pragma unroll
    for (int i = 0; i < 10; i++)
        sum += words[i];
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum = (sum & 0xFFFF) + (sum >> 16);
    ip->check = (__u16)~sum;
    return XDP_TX;
}

SEC("xdp")
int bench_sink(struct xdp_md *ctx)
{
    bump(1);
    return XDP_DROP;
}

SEC("xdp")
int bench_reflect(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return XDP_DROP;
    __u8 tmp[6];
    __builtin_memcpy(tmp, eth->h_dest, 6);
    __builtin_memcpy(eth->h_dest, eth->h_source, 6);
    __builtin_memcpy(eth->h_source, tmp, 6);
    return XDP_TX;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
