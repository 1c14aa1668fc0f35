/* Maps and counters. Names, key and value layouts come from fulcrum_abi.h. */
#ifndef FULCRUM_MAPS_H
#define FULCRUM_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "fulcrum_abi.h"

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, FULCRUM_MAX_SERVICES);
    __type(key, struct fulcrum_service_key);
    __type(value, struct fulcrum_service_value);
} fulcrum_services SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, FULCRUM_MAX_REPLIES);
    __type(key, struct fulcrum_service_key);
    __type(value, struct fulcrum_service_value);
} fulcrum_replies SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, FULCRUM_MAX_VIPS);
    __type(key, struct fulcrum_addr);
    __type(value, struct fulcrum_vip_value);
} fulcrum_vips SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct fulcrum_state);
} fulcrum_state SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, FULCRUM_CNT_MAX);
    __type(key, __u32);
    __type(value, __u64);
} fulcrum_counters SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, FULCRUM_MAX_QUEUES * FULCRUM_MAX_INTERFACES);
    __type(key, __u32);
    __type(value, __u32);
} fulcrum_xsks SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, FULCRUM_MAX_INTERFACES);
    __type(key, __u32);
    __type(value, struct fulcrum_ifslot);
} fulcrum_ifslots SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct fulcrum_admission);
} fulcrum_admission SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, FULCRUM_MAX_LOCAL);
    __type(key, struct fulcrum_addr);
    __type(value, __u32);
} fulcrum_local SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} fulcrum_alive SEC(".maps");

/* Sized by the daemon before loading (queues * entries per queue); one entry while
 * offload is off. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(map_flags, BPF_F_MMAPABLE);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct fulcrum_offload);
} fulcrum_offload SEC(".maps");

/* Sized by the daemon before loading (queues * FULCRUM_OFFLOAD_INDEX_WORDS); one word while
 * offload is off. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(map_flags, BPF_F_MMAPABLE);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} fulcrum_offload_index SEC(".maps");

static __always_inline void count(__u32 index)
{
    __u64 *value = bpf_map_lookup_elem(&fulcrum_counters, &index);
    if (value)
        *value += 1;
}

static __always_inline struct fulcrum_state *state(void)
{
    __u32 zero = 0;
    return bpf_map_lookup_elem(&fulcrum_state, &zero);
}

/* The daemon's deadline (FULCRUM_MAP_ALIVE) has not passed, or there is none. Read
 * with the coarse clock (CLOCK_MONOTONIC_COARSE), which lags the daemon's
 * CLOCK_MONOTONIC by at most a tick: a deadline seconds long is kept a few ms late at
 * worst, and on this path every frame pays the clock (bpf_ktime_get_ns measured ~40 ns
 * more a frame than the coarse read in fulcrum-bench mat). */
static __always_inline int daemon_alive(__u64 now)
{
    __u32 zero = 0;
    __u64 *until = bpf_map_lookup_elem(&fulcrum_alive, &zero);
    if (!until || !*until)
        return 1;
    return (now ? now : bpf_ktime_get_coarse_ns()) < *until; /* now 0: read it only if needed */
}

/* Active: the flag is on and the daemon vouches for it; a stale daemon is counted. */
static __always_inline int state_active(const struct fulcrum_state *s)
{
    if (!s || !s->active)
        return 0;
    if (!daemon_alive(0)) {
        count(FULCRUM_CNT_STALE_PASS);
        return 0;
    }
    return 1;
}

/* state_active at `now` (bpf_ktime_get_coarse_ns), for a caller that needs the time
 * anyway; it counts nothing (the frame may not be ours: state_active counts it later). */
static __always_inline int state_active_at(const struct fulcrum_state *s, __u64 now)
{
    return s && s->active && daemon_alive(now);
}

static __always_inline int is_active(void)
{
    return state_active(state());
}

#define NS_PER_SECOND 1000000000ULL

/* One token from this CPU's bucket for a new connection, or 0 when it is empty. */
static __always_inline int admit_new_connection(const struct fulcrum_state *s)
{
    if (!s->new_flow_rate)
        return 1;
    __u32 zero = 0;
    struct fulcrum_admission *a = bpf_map_lookup_elem(&fulcrum_admission, &zero);
    if (!a)
        return 1;
    __u64 now = bpf_ktime_get_ns();
    __u64 cap = s->new_flow_burst * NS_PER_SECOND;
    if (a->last_ns == 0) /* a bucket starts full */
        a->credit = cap;
    __u64 elapsed = now - a->last_ns;
    if (elapsed > NS_PER_SECOND) /* a full bucket refills within a second at most rates; */
        elapsed = NS_PER_SECOND; /* and the product below stays within 64 bits */
    a->last_ns = now;
    __u64 credit = a->credit + elapsed * s->new_flow_rate;
    if (credit > cap)
        credit = cap;
    if (credit < NS_PER_SECOND) {
        a->credit = credit;
        return 0;
    }
    a->credit = credit - NS_PER_SECOND;
    return 1;
}

static __always_inline struct fulcrum_service_value *
lookup_endpoint(void *map, const struct fulcrum_addr *addr, __be16 port, __u8 proto)
{
    struct fulcrum_service_key key = {};
    __builtin_memcpy(&key.addr, addr, sizeof(key.addr));
    key.port = port;
    key.proto = proto;
    return bpf_map_lookup_elem(map, &key);
}

#endif
