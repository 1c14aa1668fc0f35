/* libbpf, libxdp's AF_XDP API, and Fulcrum's BPF ABI, for import into Swift.
 *
 * The shim functions below exist only because Swift cannot import what they wrap:
 * LIBBPF_OPTS/DECLARE_LIBBPF_OPTS (a macro building a sized struct with zeroed tail) and
 * struct bpf_link_create_opts (a union with a zero-width bitfield). They can go when
 * Swift imports such structs and macros. */
#ifndef CFULCRUMBPF_H
#define CFULCRUMBPF_H

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/xsk.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <net/if.h>
#include "../../../BPF/include/fulcrum_abi.h"

/* Attaches an XDP program through a bpf_link (XDP_FLAGS_DRV_MODE or XDP_FLAGS_SKB_MODE).
 * The link lives as long as the returned fd: when the process exits or crashes the
 * kernel closes it and the program is detached, so nothing stale is left behind.
 * Returns the link fd, or -errno. */
int fulcrum_xdp_link_attach(int prog_fd, int ifindex, unsigned int xdp_flags);

/* BPF_PROG_TEST_RUN on one frame. Returns 0 or -errno; fills out/out_size/retval. */
int fulcrum_prog_test_run(int prog_fd, const void *in, unsigned int in_size, void *out,
                          unsigned int *out_size, unsigned int *retval);

/* BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES: runs the program `repeat` times over
 * the frame as if it arrived on `ifindex` queue 0, and really transmits what it returns
 * XDP_TX for. Used by the benchmark's traffic generator. Returns 0 or -errno. */
int fulcrum_prog_run_live_frames(int prog_fd, const void *frame, unsigned int size,
                                 unsigned int ifindex, unsigned int repeat, unsigned int batch_size);

/* Thread pinning, eventfd and setns: glibc declares these only under _GNU_SOURCE or in headers
 * Swift's Glibc module does not map (sched.h's GNU part, sys/eventfd.h). They can go
 * when the Glibc module exports them. */
int fulcrum_allowed_cpus(int *cpus, int max);
int fulcrum_pin_current_thread(int cpu);
int fulcrum_eventfd_nonblocking(void);
/* setns(fd, CLONE_NEWNET) for the calling thread (benchmarks and tools). Returns 0 or -errno. */
int fulcrum_enter_netns(int fd);

#endif
