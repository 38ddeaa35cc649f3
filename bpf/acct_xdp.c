/* acct_xdp.c - XDP entry (native or generic): the ingress side of a hook.
 * XDP has no egress, so a LAN interface hooked with XDP also gets the TC
 * egress program for its "in" direction (see acctd/kernel/datapath.py). */
#include "acct_prologue.h"

int acct_xdp(struct xdp_md *ctx)
{
	struct acct_ctx c = {};

	c.data = (void *)(long)ctx->data;
	c.data_end = (void *)(long)ctx->data_end;
	c.xdp = ctx;
	c.ifindex = ctx->ingress_ifindex;
	c.wire_len = c.data_end - c.data;
	c.gso_segs = 1;
	return acct_packet(&c) == ACCT_VERDICT_DROP ? XDP_DROP : XDP_PASS;
}

/* Baseline for benchmarks: the cost of running any XDP program. */
int acct_xdp_empty(struct xdp_md *ctx)
{
	return XDP_PASS;
}
