/* acct_tc.c - TC (clsact) entries for ingress and egress. TC sees GSO/GRO
 * packets whole and VLAN tags the driver moved into skb metadata. */
#include "acct_prologue.h"

static __always_inline int acct_tc(struct __sk_buff *skb, __u8 egress)
{
	struct acct_ctx c = {};

	c.ifindex = skb->ifindex;
	c.skb = skb;
	c.wire_len = skb->len;
	c.gso_segs = skb->gso_segs ? skb->gso_segs : 1;
	c.egress = egress;
	if (skb->vlan_present) {
		c.meta_vlan_present = 1;
		c.meta_vlan = ACCT_VLAN_VID(skb->vlan_tci);
	}
	return acct_packet(&c) == ACCT_VERDICT_DROP ? TC_ACT_SHOT : TC_ACT_OK;
}

int acct_tc_ingress(struct __sk_buff *skb)
{
	return acct_tc(skb, 0);
}

int acct_tc_egress(struct __sk_buff *skb)
{
	return acct_tc(skb, 1);
}
