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
 * node's address, protocol and port, whose replies come back through the LB).
 * port is in network byte order. */
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
    __u32 pad;
};
_Static_assert(sizeof(struct fulcrum_state) == 8, "fulcrum_state");

/* FULCRUM_MAP_COUNTERS: a per-CPU array of __u64 indexed by these. */
enum fulcrum_counter {
    FULCRUM_CNT_RX = 0,
    FULCRUM_CNT_TO_WORKER,        /* redirected to the queue's AF_XDP socket */
    FULCRUM_CNT_NO_SOCKET,        /* ours, but no socket on this queue: passed */
    FULCRUM_CNT_PASS,             /* not ours: to the kernel */
    FULCRUM_CNT_STANDBY_PASS,     /* ours, but this LB is standby: to the kernel */
    FULCRUM_CNT_ARP_REPLY,        /* ARP request for a VIP answered with XDP_TX */
    FULCRUM_CNT_NA_REPLY,         /* neighbour solicitation for a VIP answered */
    FULCRUM_CNT_MALFORMED,        /* truncated or inconsistent headers: dropped */
    FULCRUM_CNT_FRAGMENT,         /* IP fragments: to the kernel */
    FULCRUM_CNT_NAT_REPLY,        /* a NAT node's reply redirected */
    FULCRUM_CNT_ICMP_ERROR,       /* an ICMP error about a service flow redirected */
    FULCRUM_CNT_MAX
};

#endif
