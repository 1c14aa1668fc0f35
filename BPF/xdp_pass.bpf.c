/* XDP_PASS, nothing else. Attached to the far end of a veth that receives frames sent
 * with XDP_TX/XDP_REDIRECT: without an XDP program there, veth drops them. Used by the
 * testbed and demo only. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
