// A plain C AF_XDP forwarder: the yardstick the forwarding benchmark compares one Fulcrum
// worker with (`fulcrum-bench forward`). It is measurement apparatus, not product code:
// it does the least an AF_XDP forwarder can do, the way libxdp's own examples do it —
// receive a batch, swap the Ethernet addresses, transmit it from the same UMEM frames,
// recycle completions straight into the fill ring — on one pinned core.
//
//   xsk_forward IFNAME SECONDS CPU
//
// Prints "ready" once the socket is bound, then "forwarded N dropped M" after SECONDS or
// at SIGTERM (M: frames the kernel could not queue, from XDP_STATISTICS), and removes its
// socket and XDP program either way.
#define _GNU_SOURCE
#include <errno.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <xdp/xsk.h>

#define FRAMES 4096
#define FRAME_SIZE 2048
#define RING 2048
#define BATCH 64

static struct xsk_ring_prod fill, tx;
static volatile sig_atomic_t stop;

static void on_term(int sig) { (void)sig; stop = 1; }
static struct xsk_ring_cons comp, rx;

// Completed transmissions go straight back to the fill ring.
static void recycle(void) {
	__u32 ci, fi;
	__u32 done = xsk_ring_cons__peek(&comp, BATCH, &ci);
	if (!done) return;
	while (xsk_ring_prod__reserve(&fill, done, &fi) != done) {}
	for (__u32 i = 0; i < done; i++)
		*xsk_ring_prod__fill_addr(&fill, fi + i) = *xsk_ring_cons__comp_addr(&comp, ci + i);
	xsk_ring_prod__submit(&fill, done);
	xsk_ring_cons__release(&comp, done);
}

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
	if (argc != 4) {
		fprintf(stderr, "usage: %s IFNAME SECONDS CPU\n", argv[0]);
		return 2;
	}
	const char *ifname = argv[1];
	signal(SIGTERM, on_term);
	double seconds = atof(argv[2]);
	cpu_set_t cpus;
	CPU_ZERO(&cpus);
	CPU_SET(atoi(argv[3]), &cpus);
	if (sched_setaffinity(0, sizeof(cpus), &cpus) != 0) perror("sched_setaffinity");

	void *area = mmap(NULL, (size_t)FRAMES * FRAME_SIZE, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED) { perror("mmap"); return 1; }
	struct xsk_umem *umem;
	struct xsk_umem_config ucfg = { .fill_size = RING, .comp_size = RING, .frame_size = FRAME_SIZE };
	int r = xsk_umem__create(&umem, area, (__u64)FRAMES * FRAME_SIZE, &fill, &comp, &ucfg);
	if (r) { fprintf(stderr, "xsk_umem__create: %s\n", strerror(-r)); return 1; }
	struct xsk_socket *xsk;
	struct xsk_socket_config scfg = { .rx_size = RING, .tx_size = RING, .xdp_flags = XDP_FLAGS_DRV_MODE,
					  .bind_flags = XDP_USE_NEED_WAKEUP };
	r = xsk_socket__create(&xsk, ifname, 0, umem, &rx, &tx, &scfg);
	if (r) { fprintf(stderr, "xsk_socket__create: %s\n", strerror(-r)); return 1; }
	int fd = xsk_socket__fd(xsk);

	// Half the frames wait in the fill ring; the other half are for TX in flight.
	__u32 idx;
	if (xsk_ring_prod__reserve(&fill, RING, &idx) != RING) { fprintf(stderr, "fill reserve\n"); return 1; }
	for (__u32 i = 0; i < RING; i++) *xsk_ring_prod__fill_addr(&fill, idx + i) = (__u64)i * FRAME_SIZE;
	xsk_ring_prod__submit(&fill, RING);
	printf("ready\n");
	fflush(stdout);

	unsigned long long forwarded = 0;
	double deadline = now() + seconds;
	unsigned loops = 0;
	for (;;) {
		if ((++loops & 1023) == 0 && (stop || now() >= deadline)) break;
		recycle();
		__u32 ri;
		__u32 n = xsk_ring_cons__peek(&rx, BATCH, &ri);
		if (!n) {
			if (xsk_ring_prod__needs_wakeup(&fill)) recvfrom(fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
			continue;
		}
		__u32 ti;
		while (xsk_ring_prod__reserve(&tx, n, &ti) != n) {
			sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0);
			recycle();
		}
		for (__u32 i = 0; i < n; i++) {
			const struct xdp_desc *in = xsk_ring_cons__rx_desc(&rx, ri + i);
			unsigned char *p = xsk_umem__get_data(area, in->addr);
			unsigned char mac[6];
			memcpy(mac, p, 6);
			memcpy(p, p + 6, 6);
			memcpy(p + 6, mac, 6);
			struct xdp_desc *out = xsk_ring_prod__tx_desc(&tx, ti + i);
			out->addr = in->addr;
			out->len = in->len;
			out->options = 0;
		}
		xsk_ring_prod__submit(&tx, n);
		xsk_ring_cons__release(&rx, n);
		forwarded += n;
		// Copy mode sends a limited number of frames per call: kick until it stops
		// asking to be woken.
		while (sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0) < 0 && errno == EAGAIN) {}
	}
	struct xdp_statistics stats = { 0 };
	socklen_t len = sizeof(stats);
	getsockopt(fd, SOL_XDP, XDP_STATISTICS, &stats, &len);
	printf("forwarded %llu dropped %llu\n", forwarded,
	       (unsigned long long)(stats.rx_dropped + stats.rx_ring_full));
	xsk_socket__delete(xsk);
	xsk_umem__delete(umem);
	return 0;
}
