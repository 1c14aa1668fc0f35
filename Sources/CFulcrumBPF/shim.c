#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include "CFulcrumBPF.h"
#include <errno.h>
#include <string.h>

int fulcrum_xdp_link_attach(int prog_fd, int ifindex, unsigned int xdp_flags)
{
    LIBBPF_OPTS(bpf_link_create_opts, opts, .flags = xdp_flags);
    int fd = bpf_link_create(prog_fd, ifindex, BPF_XDP, &opts);
    return fd < 0 ? -errno : fd;
}

int fulcrum_prog_test_run(int prog_fd, const void *in, unsigned int in_size, void *out,
                          unsigned int *out_size, unsigned int *retval)
{
    LIBBPF_OPTS(bpf_test_run_opts, opts,
                .data_in = in,
                .data_size_in = in_size,
                .data_out = out,
                .data_size_out = *out_size,
                .repeat = 1);
    if (bpf_prog_test_run_opts(prog_fd, &opts))
        return -errno;
    *out_size = opts.data_size_out;
    *retval = opts.retval;
    return 0;
}

int fulcrum_prog_run_live_frames(int prog_fd, const void *frame, unsigned int size,
                                 unsigned int ifindex, unsigned int repeat, unsigned int batch_size)
{
    struct xdp_md ctx;
    memset(&ctx, 0, sizeof(ctx));
    ctx.data_end = size;
    ctx.ingress_ifindex = ifindex;
    LIBBPF_OPTS(bpf_test_run_opts, opts,
                .data_in = frame,
                .data_size_in = size,
                .ctx_in = &ctx,
                .ctx_size_in = sizeof(ctx),
                .repeat = repeat,
                .flags = BPF_F_TEST_XDP_LIVE_FRAMES,
                .batch_size = batch_size);
    if (bpf_prog_test_run_opts(prog_fd, &opts))
        return -errno;
    return 0;
}

int fulcrum_allowed_cpus(int *cpus, int max)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set))
        return -errno;
    int n = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && n < max; cpu++)
        if (CPU_ISSET(cpu, &set))
            cpus[n++] = cpu;
    return n;
}

int fulcrum_pin_current_thread(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return -pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

int fulcrum_eventfd_nonblocking(void)
{
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int fulcrum_enter_netns(int fd)
{
    return setns(fd, CLONE_NEWNET) ? -errno : 0;
}
