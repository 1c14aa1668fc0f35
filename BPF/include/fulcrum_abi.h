/* Fulcrum's BPF ABI: the ONLY definition of map keys, values, flags and counter
 * indices shared by the XDP program and the Swift control plane (which imports this
 * header through the CFulcrumBPF module). Every struct has a size assertion; change one
 * and both sides are rebuilt from this file. */
#ifndef FULCRUM_ABI_H
#define FULCRUM_ABI_H

#include <linux/types.h> /* the same __u8…__u64 for BPF and for userspace */

/* Map names, as they appear in the object file. */
#define FULCRUM_MAP_SERVICES "fulcrum_services"
#define FULCRUM_MAP_REPLIES  "fulcrum_replies"
#define FULCRUM_MAP_VIPS     "fulcrum_vips"
#define FULCRUM_MAP_STATE    "fulcrum_state"
#define FULCRUM_MAP_COUNTERS "fulcrum_counters"
#define FULCRUM_MAP_XSKS     "fulcrum_xsks"
#define FULCRUM_MAP_IFSLOTS  "fulcrum_ifslots"
#define FULCRUM_MAP_ADMISSION "fulcrum_admission"
/* An array of one __u64: the CLOCK_MONOTONIC time (ns) until which the daemon vouches for
 * the active flag (the program compares it with the coarse clock, up to a tick behind).
 * The pair's cluster thread moves it forward by the heartbeat timeout on every turn; a daemon that stops turning (SIGSTOP, starved, hung)
 * stops answering for the VIPs once it passes, as its peer takes over: a dead-man switch.
 * 0: none (a standalone LB). */
#define FULCRUM_MAP_ALIVE "fulcrum_alive"
/* FULCRUM_MAP_OFFLOAD: established flows the XDP program forwards itself (below). */
#define FULCRUM_MAP_OFFLOAD "fulcrum_offload"
/* FULCRUM_MAP_OFFLOAD_INDEX: a bit for each slot of FULCRUM_MAP_OFFLOAD, set while the slot
 * is not empty (an entry, or a withdrawn mark), in 64-bit words: a region of
 * FULCRUM_OFFLOAD_INDEX_WORDS(mask) words per queue. The program reads the bit of the
 * flow's home slot first: clear, the flow is not offloaded (no flow is past an empty slot),
 * and the entries, a cache and TLB miss away in a large table, are not touched. The worker
 * sets a slot's bit before it writes the slot's first entry, and clears it after it
 * empties the slot. */
#define FULCRUM_MAP_OFFLOAD_INDEX "fulcrum_offload_index"
#define FULCRUM_OFFLOAD_INDEX_WORDS(mask) (((mask) >> 6) + 1)
/* The LB's own addresses (any interface): a frame to one of them is the LB's, never a NAT
 * reply to translate (a node's answer to the LB's health check comes from node:port
 * like a reply). Value unused. */
#define FULCRUM_MAP_LOCAL "fulcrum_local"
#define FULCRUM_MAX_LOCAL 256
#define FULCRUM_PROG_MAIN    "fulcrum_xdp"

#define FULCRUM_MAX_SERVICES 4096
#define FULCRUM_MAX_REPLIES  16384
#define FULCRUM_MAX_VIPS     1024
#define FULCRUM_MAX_QUEUES   64
#define FULCRUM_MAX_INTERFACES 16
/* FULCRUM_MAP_XSKS is keyed by interface slot * FULCRUM_MAX_QUEUES + queue: a socket is
 * bound to one device and queue, so queue 0 of two interfaces needs two entries. */
#define FULCRUM_XSK_KEY(slot, queue) ((slot) * FULCRUM_MAX_QUEUES + (queue))

/* An address in 16 bytes, network order; IPv4 is IPv4-mapped (::ffff:a.b.c.d), exactly
 * as FulcrumCore.IPAddress holds it. */
struct fulcrum_addr {
    __u8 bytes[16];
};
_Static_assert(sizeof(struct fulcrum_addr) == 16, "fulcrum_addr");

/* Key of FULCRUM_MAP_SERVICES (VIP, protocol, port) and of FULCRUM_MAP_REPLIES (a NAT
 * node's address, protocol and port, whose replies come back through the LB; and the
 * node's address and protocol with port 0, for its replies' later fragments, which
 * carry no port). port is in network byte order. */
struct fulcrum_service_key {
    struct fulcrum_addr addr;
    __u16 port;
    __u8 proto;
    __u8 pad;
};
_Static_assert(sizeof(struct fulcrum_service_key) == 20, "fulcrum_service_key");

/* Value of both maps: which group it belongs to. */
struct fulcrum_service_value {
    __u32 group;
    __u32 flags;
};
_Static_assert(sizeof(struct fulcrum_service_value) == 8, "fulcrum_service_value");

#define FULCRUM_SERVICE_NAT 0x1u

/* FULCRUM_MAP_VIPS: addresses this LB answers ARP/NS for while active (VIPs and NAT
 * gateway addresses). The answer carries the receiving interface's MAC. */
struct fulcrum_vip_value {
    __u32 flags;
    __u32 pad;
};
_Static_assert(sizeof(struct fulcrum_vip_value) == 8, "fulcrum_vip_value");

/* FULCRUM_MAP_IFSLOTS: ifindex -> the interface's slot and MAC. An interface without an
 * entry is not a Fulcrum data-plane interface: nothing on it is steered or answered. */
struct fulcrum_ifslot {
    __u32 slot;
    __u8 mac[6];
    __u16 pad;
};
_Static_assert(sizeof(struct fulcrum_ifslot) == 12, "fulcrum_ifslot");

#define FULCRUM_VIP_ROUTER 0x1u /* answer NS with the Router flag (a floating gateway) */

/* FULCRUM_MAP_STATE, index 0. */
struct fulcrum_state {
    __u32 active;   /* 1: answer for VIPs and steer their traffic; 0: standby, pass all */
    /* Offload entries per queue, less one (a power of two less one): queue q's entries
     * are FULCRUM_MAP_OFFLOAD[q * (mask + 1) ...]. 0: offload off. */
    __u32 offload_mask;
    /* The admission budget for new TCP connections (a SYN without ACK to a service), per
     * CPU that runs the program: a token bucket of `new_flow_burst` tokens refilled at
     * `new_flow_rate` a second. An opening over budget is dropped in XDP, counted, so that
     * a flood of new flows cannot crowd known flows out of the workers. 0 = no limit. */
    __u64 new_flow_rate;
    __u64 new_flow_burst;
    /* 1 when an interface runs the program in generic (skb) mode, where RPS may run one
     * queue's frames on several CPUs at once: an offload entry's packet and byte counts
     * are then added atomically. In native mode a queue's frames run one at a time, so an
     * entry has one writer and plain adds are exact (a locked add is a full barrier:
     * Docs/BENCHMARKS.md, "Plain adds for an entry's counts"). */
    __u32 offload_shared_writers;
    __u32 pad;
};
_Static_assert(sizeof(struct fulcrum_state) == 32, "fulcrum_state");

/* FULCRUM_MAP_ADMISSION: per-CPU array of one, the bucket's state. `credit` is in
 * token-nanoseconds (one token = 1e9), so the refill is exact in integers. */
struct fulcrum_admission {
    __u64 credit;
    __u64 last_ns;
};
_Static_assert(sizeof(struct fulcrum_admission) == 16, "fulcrum_admission");

/* IPv6 extension headers walked before the upper-layer header, by the XDP program and
 * by the Swift parser alike (PacketParser.maxExtensionHeaders; a test holds them equal).
 * A packet with more is dropped as malformed. */
#define FULCRUM_IPV6_MAX_EXTENSION_HEADERS 4

/* The largest frame a worker can take: an AF_XDP socket in copy mode drops (as
 * rx_dropped) any frame longer than its UMEM chunk (2048) less XDP_PACKET_HEADROOM (256).
 * The program drops such frames itself, counted, instead of redirecting them to be lost. */
#define FULCRUM_UMEM_FRAME_SIZE 2048
#define FULCRUM_MAX_WORKER_FRAME (FULCRUM_UMEM_FRAME_SIZE - 256)

/* FULCRUM_MAP_OFFLOAD: an mmap-able array of these, a region per queue, each region an
 * open-addressed table written only by that queue's worker and read by the XDP program
 * on frames of that queue. The worker decides every flow; once a flow is established it
 * writes the flow's rewrite here (a NAT flow gets a second entry for its replies), and
 * the program forwards the flow's later frames itself, stamping `last_used` and counting
 * `packets` and `bytes`, which the worker folds into its counters and flow table.
 *
 * The key is the frame's addresses, ports and protocol as the program parses them. An
 * entry is found within FULCRUM_OFFLOAD_PROBES slots of its hash's home slot, and never
 * past an empty slot (action 0): the worker puts a flow in the first free slot, leaves a
 * withdrawn one marked FULCRUM_OFFLOAD_WITHDRAWN, which probes pass over, and empties it
 * when no flow's probes need to pass it (at the withdrawal, or at the worker's next scan
 * for a mark behind an entry still in use then). So a frame of a flow not offloaded (a new flow, a flood)
 * stops at the first empty slot: its first probe, while the table is not crowded.
 *
 * `seq` is a sequence lock: the worker makes it odd, writes, then makes it even again
 * (never 0 once written); the program takes an entry only if it reads the same even,
 * nonzero value before and after copying it, so it never acts on half an entry. The
 * loads are ordered on x86-64 (TSO) with a compiler barrier; this is the platform the
 * data plane runs on. */
#define FULCRUM_OFFLOAD_PROBES 8
#define FULCRUM_OFFLOAD_MAT 1     /* rewrite the Ethernet addresses only */
#define FULCRUM_OFFLOAD_NAT_DST 2 /* and the destination address and port (to a node) */
#define FULCRUM_OFFLOAD_NAT_SRC 3 /* and the source address and port (a reply, as the VIP) */
#define FULCRUM_OFFLOAD_WITHDRAWN 0xFF /* no flow, but probes go on past it */
struct fulcrum_offload {
    __u32 seq;
    __u8 action;    /* FULCRUM_OFFLOAD_*; 0: empty (probes stop here) */
    __u8 proto;
    __u16 max_frame; /* longer frames go to the worker (it answers "too big") */
    __u16 sport;    /* key ports, network order */
    __u16 dport;
    __u16 new_port; /* NAT: the port written, network order */
    __u16 pad0;
    struct fulcrum_addr src; /* key addresses */
    struct fulcrum_addr dst;
    struct fulcrum_addr new_addr; /* NAT: the address written */
    __u8 eth[12];   /* destination MAC, then source MAC */
    __u32 ifindex;  /* out of: XDP_TX when it is the receiving interface, else redirect */
    /* Written by the XDP program. */
    __u64 last_used; /* bpf_ktime_get_coarse_ns (CLOCK_MONOTONIC_COARSE) of the last frame */
    __u64 packets;
    __u64 bytes;
    __u32 from_ifindex; /* only frames received here (for a NAT reply: from the nodes' side) */
    __u8 in_mac[6];     /* and only frames to this MAC address (the receiving interface's) */
    __u8 pad1[14];
};
_Static_assert(sizeof(struct fulcrum_offload) == 128, "fulcrum_offload");

/* The home slot's hash of an offload key, the same in the XDP program and in the worker
 * (FlowOffload.hash; a test holds them equal): the addresses as four 64-bit words and the
 * ports and protocol as one, each as they lie in memory (little-endian loads). */
#ifdef __bpf__
#define FULCRUM_ABI_INLINE static inline __attribute__((always_inline)) /* not a BPF subprogram call */
#else
#define FULCRUM_ABI_INLINE static inline
#endif

FULCRUM_ABI_INLINE __u64 fulcrum_offload_mix(__u64 h, __u64 v)
{
    h = (h ^ v) * 0xff51afd7ed558ccdULL;
    return h ^ (h >> 32);
}

FULCRUM_ABI_INLINE __u64 fulcrum_offload_hash(__u64 s0, __u64 s1, __u64 d0, __u64 d1, __u64 ports_proto)
{
    __u64 h = 0x9e3779b97f4a7c15ULL;
    h = fulcrum_offload_mix(h, s0);
    h = fulcrum_offload_mix(h, s1);
    h = fulcrum_offload_mix(h, d0);
    h = fulcrum_offload_mix(h, d1);
    h = fulcrum_offload_mix(h, ports_proto);
    return h ^ (h >> 29);
}

#undef FULCRUM_ABI_INLINE

/* FULCRUM_MAP_COUNTERS: a per-CPU array of __u64, one per counter below. This list is
 * the only definition of the counters: the enum is generated from it, and so are the
 * names the Swift side shows in status and metrics (fulcrum_counter_label). */
#define FULCRUM_COUNTERS(X)                                                              \
    X(RX, "received")                   /* every frame the program saw */                 \
    X(TO_WORKER, "to_worker")           /* redirected to the queue's AF_XDP socket */     \
    X(NO_SOCKET, "no_socket")           /* ours, but no socket on this queue: passed */   \
    X(PASS, "passed")                   /* not ours: to the kernel */                     \
    X(STANDBY_PASS, "standby_passed")   /* ours, but this LB is standby: to the kernel */ \
    X(STALE_PASS, "stale_daemon_passed") /* active, but the daemon's deadline passed */   \
    X(ARP_REPLY, "arp_replies")         /* ARP request for a VIP answered with XDP_TX */  \
    X(NA_REPLY, "neighbor_advertisements") /* NS for a VIP answered with XDP_TX */        \
    X(NEIGH_TO_WORKER, "neighbor_requests_to_worker") /* ARP/NS for a VIP, to the worker */ \
    X(FRAGMENT, "fragments_passed")     /* IP fragments not for a service: to the kernel */ \
    X(FRAGMENT_TO_WORKER, "fragments_to_worker") /* TCP/UDP fragments to a VIP or from a NAT node */ \
    X(NAT_REPLY, "nat_replies")         /* a NAT node's reply steered */                  \
    X(ICMP_ERROR, "icmp_errors")        /* an ICMP error about a service flow steered */  \
    X(OTHER_MAC, "other_destination_mac") /* not addressed to this interface: passed */   \
    X(VLAN, "vlan_tagged_passed")       /* 802.1Q-tagged: passed to the kernel */         \
    X(DROP_OVERSIZE, "dropped_oversize") /* longer than FULCRUM_MAX_WORKER_FRAME */       \
    X(DROP_OVER_BUDGET, "dropped_new_connections_over_budget") /* admission budget */     \
    X(DROP_TRUNCATED_ETHERNET, "dropped_truncated_ethernet")                              \
    X(DROP_TRUNCATED_VLAN, "dropped_truncated_vlan")                                      \
    X(DROP_MALFORMED_ARP, "dropped_malformed_arp")                                        \
    X(DROP_TRUNCATED_IP, "dropped_truncated_ip_header")                                   \
    X(DROP_BAD_IP_HEADER, "dropped_bad_ip_header") /* version or IHL */                   \
    X(DROP_IPV6_EXTENSIONS, "dropped_ipv6_extension_headers") /* cut short, too many */   \
    X(DROP_TRUNCATED_PORTS, "dropped_truncated_ports")                                    \
    X(DROP_MALFORMED_ICMP, "dropped_malformed_icmp")                                      \
    X(OFFLOADED, "offloaded")           /* an established flow's frame forwarded here */

enum fulcrum_counter {
#define FULCRUM_COUNTER_ENUM(name, label) FULCRUM_CNT_##name,
    FULCRUM_COUNTERS(FULCRUM_COUNTER_ENUM)
#undef FULCRUM_COUNTER_ENUM
    FULCRUM_CNT_MAX
};

#ifndef __bpf__
/* The counter's name as operators see it (userspace only). */
static inline const char *fulcrum_counter_label(unsigned int index)
{
    static const char *const labels[] = {
#define FULCRUM_COUNTER_LABEL(name, label) label,
        FULCRUM_COUNTERS(FULCRUM_COUNTER_LABEL)
#undef FULCRUM_COUNTER_LABEL
    };
    return index < FULCRUM_CNT_MAX ? labels[index] : "unknown";
}
#endif

#endif
