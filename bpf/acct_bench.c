/* acct_bench.c - benchmark-only entries (built by acctd/bench/datapath.py, never by
 * the daemon). BPF_PROG_RUN repeats one packet; to measure N distinct flows
 * these entries rewrite the test packet's source address and port before
 * each run, cycling through acct_bench_cfg.nflows flows spread over up to
 * 1,024 local addresses. The _base variants do the same rewrite and return
 * at once, so the rewrite's cost can be subtracted. */
#include "acct_prologue.h"

struct acct_bench_cfg {
	__u32 nflows;
	__u32 naddrs;
};

BPF_ARRAY(acct_bench_cfg, struct acct_bench_cfg, 1);
BPF_PERCPU_ARRAY(acct_bench_seq, __u32, 1);

/* Frame layout: Ethernet, IPv4 without options, UDP (see bench.packets). */
static __always_inline int acct_bench_rewrite(void *data, void *data_end)
{
	__u32 zero = 0;
	struct acct_bench_cfg *cfg = acct_bench_cfg.lookup(&zero);
	__u32 *seq = acct_bench_seq.lookup(&zero);
	__u8 *p = data;

	if (!cfg || !seq || !cfg->nflows || !cfg->naddrs || data + 42 > data_end)
		return -1;
	__u32 i = *seq;
	*seq = i + 1 >= cfg->nflows ? 0 : i + 1;
	__u32 a = i % cfg->naddrs, port = 1024 + i / cfg->naddrs;
	p[28] = a >> 8;		/* source address 10.8.<a> */
	p[29] = a & 0xff;
	p[34] = port >> 8;	/* UDP source port */
	p[35] = port & 0xff;
	return 0;
}

int acct_xdp_bench(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;

	if (acct_bench_rewrite(data, data_end))
		return XDP_ABORTED;
	struct acct_ctx c = {};
	c.data = data;
	c.data_end = data_end;
	c.xdp = ctx;
	c.ifindex = ctx->ingress_ifindex;
	c.wire_len = data_end - data;
	c.gso_segs = 1;
	return acct_packet(&c) == ACCT_VERDICT_DROP ? XDP_DROP : XDP_PASS;
}

int acct_xdp_bench_base(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;

	return acct_bench_rewrite(data, data_end) ? XDP_ABORTED : XDP_PASS;
}

int acct_tc_bench(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;

	if (acct_bench_rewrite(data, data_end))
		return TC_ACT_SHOT;
	return acct_tc(skb, 0);
}

int acct_tc_bench_base(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;

	return acct_bench_rewrite(data, data_end) ? TC_ACT_SHOT : TC_ACT_OK;
}
