/* acct_xdp.c - XDP entry (native or generic): the ingress side of a hook.
 * XDP has no egress, so a LAN interface hooked with XDP also gets the TC
 * egress program for its "in" direction (see acctd/datapath.py). */
#include "acct_prologue.h"

int acct_xdp(struct xdp_md *ctx)
{
	struct acct_ctx c = {};

	c.data = (void *)(long)ctx->data;
	c.data_end = (void *)(long)ctx->data_end;
	c.ifindex = ctx->ingress_ifindex;
	c.wire_len = c.data_end - c.data;
	c.gso_segs = 1;
	return acct_packet(&c) == ACCT_VERDICT_DROP ? XDP_DROP : XDP_PASS;
}

/* Control program, run by user space with BPF_PROG_RUN once on each CPU
 * (the thread pinned there): writes the verdict of one address into this
 * CPU's copy without touching its counters, which a map update would reset. */
int acct_ctl_set(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct acct_ctl_set_arg *arg = data;

	if ((void *)(arg + 1) > data_end)
		return XDP_ABORTED;
	struct acct_addr_key key = arg->key;
	struct acct_addr_val *av = acct_addrs.lookup(&key);
	if (!av)
		return XDP_DROP;	/* tells user space: no such address */
	av->verdict = arg->verdict;
	av->reason = arg->reason;
	av->policer = arg->policer;
	return XDP_PASS;
}

/* Baseline for benchmarks: the cost of running any XDP program. */
int acct_xdp_empty(struct xdp_md *ctx)
{
	return XDP_PASS;
}
