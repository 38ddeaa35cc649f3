/* acct_lib.h - header-only packet parsing and accounting, shared by the XDP
 * and TC entry programs. The entry programs fill a struct acct_ctx (the thin
 * context shim) and call acct_packet(); everything else is common.
 *
 * Per packet: one array lookup for the interface config, one for its totals,
 * one for acct_meta (the class generation), one hash lookup for the local
 * address (counters + cached class), one LRU lookup for the flow, two array
 * lookups for VLAN and port counters. The class LPM lookup happens once per
 * address and CPU after each change; fw-policies and rate limits cost only
 * the units that have them. Per-CPU values
 * are modified in place after lookup: no atomics, no update of existing keys.
 */
#ifndef ACCT_LIB_H
#define ACCT_LIB_H

#define ACCT_ETH_HLEN 14
#define ACCT_ETH_P_IP 0x0800
#define ACCT_ETH_P_IPV6 0x86DD
#define ACCT_ETH_P_8021Q 0x8100
#define ACCT_ETH_P_8021AD 0x88A8
#define ACCT_ETH_P_QINQ1 0x9100	/* pre-standard QinQ, still seen */

#define ACCT_VLAN_VID(tci) ((tci) & 0x0fff)

/* What an entry program knows before parsing. */
struct acct_ctx {
	void *data;		/* XDP: the frame (TC reads it from skb, see acct_hdr) */
	void *data_end;
	struct __sk_buff *skb;	/* TC: to pull headers into the linear area, else NULL */
	struct xdp_md *xdp;	/* XDP: to ask a multi-buffer frame's length, else NULL */
	__u32 ifindex;
	__u32 wire_len;		/* frame length (XDP: of its first buffer, until asked) */
	__u32 gso_segs;		/* TC: segments of a GSO/GRO packet, else 1 */
	__u16 meta_vlan;	/* TC: VID the driver moved to skb metadata */
	__u8 meta_vlan_present;
	__u8 egress;		/* 1 at TC egress, 0 at any ingress */
};

/* A parsed packet: the flow key without ifindex/dir, and the lengths the
 * byte count needs. Aligned to 8: its words are moved whole (acct_word64
 * below), and the verifier refuses unaligned stack accesses. */
struct acct_pkt {
	struct acct_flow_key key;
	__u32 l3_off;		/* from data to the IP header */
	__u32 l3_hdr_len;	/* IP header incl. options / extension headers */
	__u32 l4_hdr_len;	/* TCP header incl. options, UDP 8, else 0 */
	__u32 ip_len;		/* IP-layer length from the header, 0 for BIG TCP */
	__u32 tcp_flags;
	__u32 health;		/* ACCT_H_* bit flags noticed while parsing */
} __attribute__((aligned(8)));

/* Where each packet's struct acct_pkt starts: zeroes, read from a map and
 * not written as constants, so the verifier sees every field as unknown on
 * every path. The parser's paths then look alike where they meet and it
 * merges them; with a zeroed stack struct it tells apart which fields each
 * path wrote and walks enforcement once per pattern, past its budget of 1M
 * instructions on 6.1. One zero word, stored into each word of the struct
 * (acct_pkt_clear). Internal to a build: never written, never pinned. */
BPF_ARRAY(acct_pkt_zero, __u64, 1);

/* Whole words of struct acct_pkt's fields (and of other byte arrays),
 * accessed as what they are: may_alias lets them overlap any field. */
typedef __u32 __attribute__((__may_alias__)) acct_word32;
typedef __u64 __attribute__((__may_alias__)) acct_word64;

static __always_inline void acct_pkt_clear(struct acct_pkt *p, __u64 zero)
{
	acct_word64 *w = (acct_word64 *)p;

#pragma unroll
	for (int i = 0; i < sizeof(*p) / 8; i++)
		w[i] = zero;
}

enum acct_parse_rc {
	ACCT_PARSE_OK = 0,
	ACCT_PARSE_NON_IP = 1,
	ACCT_PARSE_TRUNCATED = 2,
	ACCT_PARSE_MALFORMED = 3,
};

#define ACCT_PKT_H(bit) (1u << (bit))

/* The flow key is hashed and compared in 4- and 8-byte words. A word
 * written by several narrower stores, still in flight, cannot be forwarded
 * to such a load, which then waits for them to reach the cache: its small
 * fields are written a word at a time, composed in memory order. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ACCT_WORD16(first, second) ((__u32)(first) | ((__u32)(second) << 16))
#define ACCT_WORD8(b0, b1, b2, b3) ((__u32)(b0) | ((__u32)(b1) << 8) | \
				    ((__u32)(b2) << 16) | ((__u32)(b3) << 24))
#else
#define ACCT_WORD16(first, second) (((__u32)(first) << 16) | (__u32)(second))
#define ACCT_WORD8(b0, b1, b2, b3) (((__u32)(b0) << 24) | ((__u32)(b1) << 16) | \
				    ((__u32)(b2) << 8) | (__u32)(b3))
#endif

/* dir, ip_ver, proto and tos: dir is 0 until acct_classify sets it. */
static __always_inline void acct_key_l3(struct acct_pkt *p, __u8 ip_ver, __u8 proto, __u8 tos)
{
	*(acct_word32 *)&p->key.dir = ACCT_WORD8(0, ip_ver, proto, tos);
}

/* IPv4 addresses are stored IPv4-mapped: ::ffff:a.b.c.d. Bytes 8-15 in
 * one store (acct_addr_copy reads them so); 0-7 are struct acct_pkt's
 * zeroes. */
static __always_inline void acct_addr_from_v4(__u8 *dst, __be32 addr)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	*(acct_word64 *)(dst + 8) = ((__u64)addr << 32) | 0xffff0000;
#else
	*(acct_word64 *)(dst + 8) = 0x0000ffff00000000ULL | addr;
#endif
}

/* 16 address bytes between two 8-byte aligned places (struct acct_pkt's
 * addresses, a local struct acct_addr_key), in two moves: a memcpy of u8
 * arrays is 16 byte loads and as many shifts and ORs. */
static __always_inline void acct_addr_copy(__u8 *dst, const __u8 *src)
{
	((acct_word64 *)dst)[0] = ((const acct_word64 *)src)[0];
	((acct_word64 *)dst)[1] = ((const acct_word64 *)src)[1];
}

/* The skb's linear area as it is now: read afresh (volatile, so the
 * compiler keeps no copy) since a pull moves it. Keeping no packet pointer
 * across headers also lets the verifier merge the pulled and unpulled paths. */
static __always_inline void acct_skb_area(struct __sk_buff *skb, void **data, void **data_end)
{
	*data = (void *)(long)*(volatile __u32 *)&skb->data;
	*data_end = (void *)(long)*(volatile __u32 *)&skb->data_end;
}

/* The `len` header bytes at `off`, or NULL when the frame ends first. At TC
 * a frame may keep them outside the skb's linear area (a packet socket's
 * large frames, jumbo frames, some drivers): they are pulled in then, and
 * only then, at least ACCT_TC_PULL bytes at once so one pull serves the
 * headers after them. A pull moves the packet: pointers from before it are
 * stale, so every header is read through this. */
static __always_inline void *acct_hdr(struct acct_ctx *c, __u32 off, __u32 len)
{
	struct __sk_buff *skb = c->skb;
	void *data = c->data, *data_end = c->data_end;

	if (skb)
		acct_skb_area(skb, &data, &data_end);
	void *h = data + off;
	if (h + len <= data_end)
		return h;
	if (!skb)
		return NULL;
	/* skb->len read afresh too: comparing the stored wire_len here would
	 * narrow its range differently on each path, and the verifier could
	 * no longer merge them */
	__u32 frame = *(volatile __u32 *)&skb->len;
	if (frame <= (__u32)(data_end - data))
		return NULL;	/* all linear: the frame ends first */
	__u32 want = off + len < ACCT_TC_PULL ? ACCT_TC_PULL : off + len;
	/* no memory for it, or the frame ends first: the check below fails */
	bpf_skb_pull_data(skb, want < frame ? want : frame);
	acct_skb_area(skb, &data, &data_end);
	h = data + off;
	if (h + len > data_end)
		return NULL;
	return h;
}

/* Whether the frame holds `len` bytes from `off`: an IP length that claims
 * more is malformed (the kernel's IP input drops such a packet). XDP reads
 * the first buffer of a multi-buffer frame (BPF_PROG_RUN makes those of
 * jumbo frames); the whole length is asked for only when that is short. */
static __always_inline int acct_frame_holds(struct acct_ctx *c, __u32 off, __u64 len)
{
	if (off + len <= c->wire_len)
		return 1;
	if (c->xdp)
		c->wire_len = bpf_xdp_get_buff_len(c->xdp);
	return off + len <= c->wire_len;
}

/* Reads the L4 ports (or ICMP type/code) and TCP flags at `off`, where the
 * IP packet carries `avail` more bytes. A header cut short is noted, not
 * fatal: the packet is still counted, with its ports when the 4 bytes that
 * hold them are there (a tiny first fragment). */
static __always_inline void acct_parse_l4(struct acct_ctx *c, __u32 off, __u32 avail,
					  struct acct_pkt *p)
{
	__u8 proto = p->key.proto;
	__u8 *h;

	if (proto == IPPROTO_TCP) {
		h = avail >= 20 ? acct_hdr(c, off, 20) : NULL;
		if (h) {
			p->tcp_flags = h[13];
			p->l4_hdr_len = (h[12] >> 4) * 4;
			goto ports;
		}
	} else if (proto == IPPROTO_UDP || proto == IPPROTO_UDPLITE ||
		   proto == IPPROTO_SCTP || proto == IPPROTO_DCCP) {
		h = avail >= 8 ? acct_hdr(c, off, 8) : NULL;
		if (h) {
			p->l4_hdr_len = 8;
			goto ports;
		}
	} else if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
		h = avail >= 2 ? acct_hdr(c, off, 2) : NULL;
		if (h) {
			/* type, code */
			*(acct_word32 *)&p->key.sport = ACCT_WORD16(h[0], h[1]);
		} else {
			p->health |= ACCT_PKT_H(ACCT_H_TRUNCATED);
		}
		return;
	} else {
		return;
	}
	p->health |= ACCT_PKT_H(ACCT_H_TRUNCATED);
	h = avail >= 4 ? acct_hdr(c, off, 4) : NULL;
	if (!h)
		return;
ports:
	*(acct_word32 *)&p->key.sport = ACCT_WORD16(bpf_ntohs(*(__be16 *)h), bpf_ntohs(*(__be16 *)(h + 2)));
}

static __always_inline int acct_parse_ipv4(struct acct_ctx *c, struct acct_pkt *p)
{
	__u32 l3 = p->l3_off;
	struct iphdr *iph = acct_hdr(c, l3, sizeof(*iph));

	if (!iph)
		return ACCT_PARSE_TRUNCATED;
	__u32 ihl = iph->ihl * 4;
	__u32 tot = bpf_ntohs(iph->tot_len);
	if (iph->version != 4 || ihl < 20)
		return ACCT_PARSE_MALFORMED;
	/* Total length 0 is a BIG TCP packet's, only ever GSO at TC. */
	if (tot ? tot < ihl || !acct_frame_holds(c, l3, tot) : c->gso_segs <= 1)
		return ACCT_PARSE_MALFORMED;

	acct_key_l3(p, 4, iph->protocol, iph->tos & 0xfc);	/* ECN marks would split flows */
	acct_addr_from_v4(p->key.saddr, iph->saddr);
	acct_addr_from_v4(p->key.daddr, iph->daddr);
	p->l3_hdr_len = ihl;
	p->ip_len = tot;

	/* Only the first fragment carries the L4 header. */
	if (bpf_ntohs(iph->frag_off) & 0x1fff) {
		p->health |= ACCT_PKT_H(ACCT_H_NOT_FIRST_FRAG);
		return ACCT_PARSE_OK;
	}
	if (!tot)
		tot = c->wire_len - l3;
	acct_parse_l4(c, l3 + ihl, tot - ihl, p);
	return ACCT_PARSE_OK;
}

/* IPv6 extension headers that only delay the L4 header. */
#define ACCT_NEXTHDR_HOP 0
#define ACCT_NEXTHDR_ROUTING 43
#define ACCT_NEXTHDR_FRAGMENT 44
#define ACCT_NEXTHDR_AUTH 51
#define ACCT_NEXTHDR_DEST 60
#define ACCT_IPV6_TLV_JUMBO 0xc2

#define ACCT_IPV6_EXT(nh) ((nh) == ACCT_NEXTHDR_HOP || (nh) == ACCT_NEXTHDR_ROUTING || \
			   (nh) == ACCT_NEXTHDR_FRAGMENT || (nh) == ACCT_NEXTHDR_AUTH || \
			   (nh) == ACCT_NEXTHDR_DEST)

static __always_inline int acct_parse_ipv6(struct acct_ctx *c, struct acct_pkt *p)
{
	__u32 l3 = p->l3_off;
	struct ipv6hdr *ip6h = acct_hdr(c, l3, sizeof(*ip6h));

	if (!ip6h)
		return ACCT_PARSE_TRUNCATED;
	if (ip6h->version != 6)
		return ACCT_PARSE_MALFORMED;
	__u32 plen = bpf_ntohs(ip6h->payload_len);
	if (plen && !acct_frame_holds(c, l3, plen + 40))
		return ACCT_PARSE_MALFORMED;

	__u8 tos = ((ip6h->priority << 4) | (ip6h->flow_lbl[0] >> 4)) & 0xfc;
	__builtin_memcpy(p->key.saddr, &ip6h->saddr, 16);
	__builtin_memcpy(p->key.daddr, &ip6h->daddr, 16);
	__u8 nexthdr = ip6h->nexthdr;
	__u64 jumbo = 0;	/* payload length from a Jumbo option */

	__u32 off = 40;		/* bounded: each step adds at most 2048 */
	int first_frag = 1;
#pragma unroll
	for (int i = 0; i < ACCT_IPV6_EXT_MAX; i++) {
		if (!ACCT_IPV6_EXT(nexthdr))
			break;
		__u8 *eh = acct_hdr(c, l3 + off, 8);
		if (!eh)
			return ACCT_PARSE_TRUNCATED;
		if (nexthdr == ACCT_NEXTHDR_FRAGMENT) {
			/* offset is the top 13 bits of bytes 2-3 */
			if ((((__u16)eh[2] << 8) | eh[3]) & 0xfff8)
				first_frag = 0;
			off += 8;
		} else if (nexthdr == ACCT_NEXTHDR_AUTH) {
			off += ((__u32)eh[1] + 2) * 4;
		} else {
			/* a jumbogram's length: the Jumbo option first in the
			 * hop-by-hop header, as the kernel's GSO code writes it */
			if (i == 0 && !plen && eh[2] == ACCT_IPV6_TLV_JUMBO && eh[3] == 4)
				jumbo = ((__u32)eh[4] << 24) | ((__u32)eh[5] << 16) |
					((__u32)eh[6] << 8) | eh[7];
			off += ((__u32)eh[1] + 1) * 8;
		}
		nexthdr = eh[0];
	}
	/* Payload length 0: a jumbogram, or a BIG TCP packet (GSO at TC). */
	__u64 len = plen ? plen + 40 : jumbo ? jumbo + 40 : 0;
	if (len ? jumbo && !acct_frame_holds(c, l3, len) : c->gso_segs <= 1)
		return ACCT_PARSE_MALFORMED;
	if (!len)
		len = c->wire_len - l3;
	if (off > len)
		return ACCT_PARSE_MALFORMED;	/* headers past the packet's end */
	acct_key_l3(p, 6, nexthdr, tos);
	p->l3_hdr_len = off;
	p->ip_len = plen || jumbo ? len : 0;
	if (ACCT_IPV6_EXT(nexthdr)) {
		p->health |= ACCT_PKT_H(ACCT_H_EXT_HDR_LIMIT);
		return ACCT_PARSE_OK;
	}
	if (!first_frag) {
		p->health |= ACCT_PKT_H(ACCT_H_NOT_FIRST_FRAG);
		return ACCT_PARSE_OK;
	}
	acct_parse_l4(c, l3 + off, len - off, p);
	return ACCT_PARSE_OK;
}

/* Ethernet, up to two VLAN tags, then IPv4 or IPv6. */
static __always_inline int acct_parse(struct acct_ctx *c, struct acct_pkt *p)
{
	__u8 *eth = acct_hdr(c, 0, ACCT_ETH_HLEN);
	__u16 outer = 0, inner = 0;
	int ntags = 0;

	if (!eth)
		return ACCT_PARSE_TRUNCATED;
	__u16 proto = bpf_ntohs(*(__be16 *)(eth + 12));
	__u32 off = ACCT_ETH_HLEN;

	/* A tag the driver stripped into metadata was the outermost one. */
	if (c->meta_vlan_present) {
		outer = c->meta_vlan;
		ntags = 1;
	}
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != ACCT_ETH_P_8021Q && proto != ACCT_ETH_P_8021AD &&
		    proto != ACCT_ETH_P_QINQ1)
			break;
		__u8 *tag = acct_hdr(c, off, 4);
		if (!tag)
			return ACCT_PARSE_TRUNCATED;
		__u16 vid = ACCT_VLAN_VID(bpf_ntohs(*(__be16 *)tag));
		if (ntags == 0)
			outer = vid;
		else if (ntags == 1)
			inner = vid;
		ntags++;
		proto = bpf_ntohs(*(__be16 *)(tag + 2));
		off += 4;
	}
	*(acct_word32 *)&p->key.vlan_outer = ACCT_WORD16(outer, inner);
	p->l3_off = off;

	if (proto == ACCT_ETH_P_IP)
		return acct_parse_ipv4(c, p);
	if (proto == ACCT_ETH_P_IPV6)
		return acct_parse_ipv6(c, p);
	return ACCT_PARSE_NON_IP;
}

static __always_inline void acct_count(struct acct_count_val *v, __u32 dir,
				       __u64 packets, __u64 bytes)
{
	if (v) {
		v->packets[dir & 1] += packets;
		v->bytes[dir & 1] += bytes;
	}
}

/* Service port of a flow for acct_ports: the lower of its two ports. */
static __always_inline __u32 acct_port_slot(const struct acct_flow_key *k)
{
	__u32 port = k->sport < k->dport ? k->sport : k->dport;

	if (k->proto == IPPROTO_TCP)
		return ACCT_PORT_TCP_BASE + port;
	if (k->proto == IPPROTO_UDP)
		return ACCT_PORT_UDP_BASE + port;
	return ACCT_PORT_PROTO_BASE + k->proto;
}

/* Adds one packet to the flow table. The LRU may evict: acct_addrs, not
 * this table, is the exact record, so a failed insert is only counted. */
static __always_inline void acct_flow_add(struct acct_flow_key *fk,
					  __u64 packets, __u64 bytes,
					  __u64 now, __u32 tcp_flags,
					  struct acct_iface_val *st)
{
	struct acct_flow_val *fv = acct_flows.lookup(fk);

	if (!fv) {
		struct acct_flow_val nv = {};
		nv.packets = packets;
		nv.bytes = bytes;
		nv.first_ns = now;
		nv.last_ns = now;
		nv.tcp_flags = tcp_flags;
		if (acct_flows.insert(fk, &nv) == 0) {
			st->health[ACCT_H_FLOW_NEW]++;
			return;
		}
		/* Lost a race with another CPU inserting the same key? */
		fv = acct_flows.lookup(fk);
		if (!fv) {
			st->health[ACCT_H_FLOW_INSERT_FAIL]++;
			st->health_bytes[ACCT_H_FLOW_INSERT_FAIL] += bytes;
			return;
		}
	}
	fv->packets += packets;
	fv->bytes += bytes;
	if (!fv->first_ns)
		fv->first_ns = now;	/* first packet on this CPU */
	fv->last_ns = now;
	fv->tcp_flags |= tcp_flags;
}

/* This CPU's copy of a local address's class: the most specific
 * acct_classes prefix holding it, or pass-everything when none does. */
static __always_inline void acct_class_of(const struct acct_addr_key *ak,
					  struct acct_class *out)
{
	struct acct_class_key ck = {};

	ck.prefixlen = 128;
	__builtin_memcpy(ck.addr, ak->addr, 16);
	struct acct_class *c = acct_classes.lookup(&ck);
	if (c)
		*out = *c;
	else
		__builtin_memset(out, 0, sizeof(*out));
}

static __always_inline int acct_in_set(__u32 set, const __u8 *addr)
{
	struct acct_set_key k = {};

	k.prefixlen = 32 + 128;
	k.set = set;
	__builtin_memcpy(k.addr, addr, 16);
	return acct_sets.lookup(&k) != NULL;
}

/* One ANDed condition of a compiled fw-policy against a packet. Ports follow
 * the policy semantics of acctd/model/policies.py: as in the packet, TCP/UDP only. */
static __always_inline int acct_atom_match(const struct acct_fw_atom *a,
					   const struct acct_flow_key *k)
{
	if (a->proto && a->proto != k->proto)
		return 0;
	if (a->ifindex && a->ifindex != k->ifindex)
		return 0;
	if ((a->flags & ACCT_ATOM_TOS) && a->tos != k->tos)
		return 0;
	if ((a->flags & ACCT_ATOM_VLAN) && a->vlan != k->vlan_outer &&
	    a->vlan != k->vlan_inner)
		return 0;
	if (a->flags & ACCT_ATOM_PORTS) {
		if (k->proto != IPPROTO_TCP && k->proto != IPPROTO_UDP)
			return 0;
		if (k->sport < a->sport_lo || k->sport > a->sport_hi ||
		    k->dport < a->dport_lo || k->dport > a->dport_hi)
			return 0;
	}
	if (a->addr_set) {
		/* the remote side is the one that is not the local address */
		const __u8 *remote = k->dir == ACCT_DIR_OUT ? k->daddr : k->saddr;
		const __u8 *local = k->dir == ACCT_DIR_OUT ? k->saddr : k->daddr;
		if (!acct_in_set(a->addr_set, remote) &&
		    (!(a->flags & ACCT_ATOM_ADDR_ANY_SIDE) ||
		     !acct_in_set(a->addr_set, local)))
			return 0;
	}
	return 1;
}

/* A unit's fw-policy list: the packet passes when one of the policies
 * matches it (an inverted one: does not), in list order; a matching DENY
 * policy (listed first: a quota's block-policy) drops it instead. *policer
 * gets the passing policy's rate limit for the packet's direction. */
static __always_inline int acct_fw_eval(__u32 ruleset, const struct acct_flow_key *k,
					__u32 *policer)
{
	struct acct_fw_set *fs = acct_fw.lookup(&ruleset);
	if (!fs)
		return ACCT_VERDICT_DROP;
	int hit = 0;
	for (int i = 0; i < ACCT_FW_ATOMS; i++) {
		if (i >= fs->n_atoms)
			break;
		struct acct_fw_atom *a = &fs->atoms[i];
		if (!hit)
			hit = acct_atom_match(a, k);
		if (a->flags & ACCT_ATOM_LAST) {
			if (hit ^ !!(a->flags & ACCT_ATOM_INVERT)) {
				if (a->flags & ACCT_ATOM_DENY)
					return ACCT_VERDICT_DROP;
				*policer = k->dir == ACCT_DIR_OUT ? a->policer[ACCT_DIR_OUT] :
								    a->policer[ACCT_DIR_IN];
				return ACCT_VERDICT_PASS;
			}
			hit = 0;
		}
	}
	return ACCT_VERDICT_DROP;
}

/* Rate limits need a fine clock (a coarse one lets a jiffy of traffic
 * through at once); test builds read a settable one from acct_meta. */
static __always_inline __u64 acct_police_clock(const struct acct_meta *meta)
{
#ifdef ACCT_MOCK_CLOCK
	return meta ? meta->mock_ns : 0;
#else
	return bpf_ktime_get_ns();
#endif
}

/* Token bucket as GCRA: a packet conforms when charging its cost keeps the
 * bucket's theoretical arrival time within burst_ns of now. Charged with an
 * atomic add, so all CPUs share one bucket. An idle (full) bucket passes any
 * packet, so a GSO packet larger than the burst is never stuck; the idle
 * reset may race with another CPU, which forgives at most one packet. */
static __always_inline int acct_police(__u32 idx, __u64 bytes, __u64 now)
{
	if (!idx)
		return 1;
	struct acct_policer *pl = acct_policers.lookup(&idx);
	if (!pl || !pl->ns_per_byte)
		return 1;
	__u64 cost = (bytes * pl->ns_per_byte) >> ACCT_POLICER_SHIFT;
	__u64 tat = pl->tat_ns;
	if (tat <= now) {
		pl->tat_ns = now + cost;
		return 1;
	}
	if (tat + cost > now + pl->burst_ns)
		return 0;
	__sync_fetch_and_add(&pl->tat_ns, cost);
	return 1;
}

/* sys-allow-OID / sys-deny-OID: the first peer atom whose unit holds the
 * remote address decides, "regardless of other restrictions" (NeTAMS).
 * Returns 0 when no peer matches, else 1 + the atom's ACCT_ATOM_PEER_ALLOW. */
static __always_inline int acct_peer_eval(__u32 set, const struct acct_flow_key *k)
{
	struct acct_fw_set *fs = acct_fw.lookup(&set);
	if (!fs)
		return 0;
	for (int i = 0; i < ACCT_FW_ATOMS; i++) {
		if (i >= fs->n_atoms)
			break;
		struct acct_fw_atom *a = &fs->atoms[i];
		if (acct_atom_match(a, k))
			return 1 + !!(a->flags & ACCT_ATOM_PEER_ALLOW);
	}
	return 0;
}

/* Which drop counter a packet goes to, or ACCT_DROP_MAX when it passes.
 * Peers and blocks act at every hook; fw-policies and rate limits once per
 * direction, at the hook that sees it first (`first`), so a packet is
 * charged once. */
static __always_inline __u32 acct_enforce(const struct acct_class *cls,
					  const struct acct_flow_key *k, __u64 bytes,
					  int first, const struct acct_meta *meta)
{
	/* one test on the common path: no block and no peers */
	if (cls->sys_policy & ACCT_SYS_SLOW_MASK) {
		if (cls->sys_policy & ACCT_SYS_PEERS) {
			/* constants, not the helper's value: the verifier must see
			 * the drop cause bounded where it indexes the counters */
			int v = acct_peer_eval(cls->flags >> ACCT_CLASS_PEER_SHIFT, k);
			if (v == 2)
				return ACCT_DROP_MAX;
			if (v == 1)
				return ACCT_DROP_BLOCK;
		}
		if ((cls->sys_policy & ACCT_SYS_DENY_MASK) &&
		    !(cls->sys_policy & ACCT_SYS_ALLOW)) {
			if ((cls->flags & ACCT_CLASS_PORTAL) &&
			    (cls->sys_policy & ACCT_SYS_DENY_MASK) == ACCT_SYS_LOGIN &&
			    k->proto == IPPROTO_TCP &&
			    (k->dir == ACCT_DIR_OUT ? k->dport : k->sport) == ACCT_PORTAL_PORT)
				return ACCT_DROP_MAX;
			return ACCT_DROP_BLOCK;
		}
	}
	if (!first)
		return ACCT_DROP_MAX;
	__u32 policer = 0;
	if (cls->fw == ACCT_FW_DROP)
		return ACCT_DROP_FW;
	if (cls->fw == ACCT_FW_RULES &&
	    acct_fw_eval(cls->ruleset, k, &policer) == ACCT_VERDICT_DROP)
		return ACCT_DROP_FW;
	/* selected, not indexed: clang turns a variable index into a stack
	 * slot into pointer arithmetic the verifier refuses */
	__u32 unit_policer = k->dir == ACCT_DIR_OUT ? cls->policer[ACCT_DIR_OUT] :
						     cls->policer[ACCT_DIR_IN];
	if (policer || unit_policer) {
		__u64 now = acct_police_clock(meta);
		if (!acct_police(policer, bytes, now) || !acct_police(unit_policer, bytes, now))
			return ACCT_DROP_POLICE;
	}
	return ACCT_DROP_MAX;
}

/* acct_packet runs a packet through these steps, in order: hook (the
 * interface), parse, measure, classify (direction, local address, class),
 * enforce (acct_enforce above), then count the drop or account the packet.
 * A step hands on what it found in struct acct_pkt (above) and these. */

/* The interface a packet was seen on. */
struct acct_hook {
	struct acct_iface_cfg *cfg;	/* NULL: not configured */
	struct acct_iface_val *st;	/* its per-CPU totals */
	__u32 role;			/* enum acct_role, ACCT_ROLE_NONE if not configured */
};

/* What a packet counts as: wire packets and their IP-layer bytes. */
struct acct_size {
	__u64 packets;
	__u64 bytes;
};

/* The packet's direction and what this CPU knows about its local
 * (subscriber) address. The address itself is kept apart, in a struct
 * acct_addr_key of its own: a map key's address goes to a helper call, and
 * clang then keeps the whole struct around it in memory (measured: a few ns
 * per packet). */
struct acct_local {
	__u32 dir;			/* enum acct_dir, as seen from the address */
	__u32 gen;			/* acct_meta.gen: the classes' generation */
	struct acct_addr_val *av;	/* its per-CPU counters, NULL without an entry */
	struct acct_class cls;		/* its class */
	struct acct_meta *meta;		/* acct_meta[0], NULL if the lookup failed */
	__u64 now;			/* coarse clock: first/last seen */
};

/* Hook: the interface's config and totals. An unconfigured interface has
 * ACCT_ROLE_NONE and counts in slot 0. Returns 0 when there is no totals
 * slot to count in: the packet passes. */
static __always_inline int acct_hook_of(const struct acct_ctx *c, struct acct_hook *h)
{
	__u32 ifindex = c->ifindex;
	__u32 slot = 0;

	h->cfg = acct_iface_cfg.lookup(&ifindex);
	h->role = ACCT_ROLE_NONE;
	if (h->cfg) {
		h->role = h->cfg->role;
		slot = h->cfg->slot;
	}
	h->st = acct_ifaces.lookup(&slot);
	return h->st != NULL;
}

/* Parse: the flow key and header lengths of an IP packet. What the parser
 * noticed goes to the interface's health counters; a packet it cannot read
 * (not IP, truncated or malformed) is counted there only and passes:
 * returns 0. */
static __always_inline int acct_parse_packet(struct acct_ctx *c, struct acct_iface_val *st,
					     struct acct_pkt *p)
{
	int rc = acct_parse(c, p);

	if (rc != ACCT_PARSE_OK) {
		__u32 h = rc == ACCT_PARSE_NON_IP ? ACCT_H_NON_IP :
			  rc == ACCT_PARSE_TRUNCATED ? ACCT_H_TRUNCATED :
						       ACCT_H_MALFORMED;
		st->health[h]++;
		st->health_bytes[h] += c->wire_len;
		return 0;
	}
	if (p->health) {
		if (p->health & ACCT_PKT_H(ACCT_H_TRUNCATED))
			st->health[ACCT_H_TRUNCATED]++;
		if (p->health & ACCT_PKT_H(ACCT_H_NOT_FIRST_FRAG))
			st->health[ACCT_H_NOT_FIRST_FRAG]++;
		if (p->health & ACCT_PKT_H(ACCT_H_EXT_HDR_LIMIT))
			st->health[ACCT_H_EXT_HDR_LIMIT]++;
	}
	return 1;
}

/* Measure: NetFlow/IPFIX convention, IP-layer bytes as on the wire. A GSO/GRO
 * packet stands for gso_segs wire packets, each repeating the headers. */
static __always_inline void acct_measure(const struct acct_ctx *c, const struct acct_pkt *p,
					 struct acct_size *n)
{
	__u64 packets = 1, bytes = p->ip_len;

	if (c->gso_segs > 1) {	/* only then may ip_len be 0 (BIG TCP) */
		__u32 segs = c->gso_segs;
		packets = segs;
		bytes = (__u64)(c->wire_len - p->l3_off) +
			(__u64)(segs - 1) * (p->l3_hdr_len + p->l4_hdr_len);
	}
	n->packets = packets;
	n->bytes = bytes;
}

/* Classify: the packet's direction, its local address, that address's
 * counters entry and its class. LAN: arriving = out for the source, leaving
 * = in for the destination. WAN (and unconfigured) interfaces look the
 * address up the other way round and only enforce. The entry caches this
 * CPU's copy of the class, refreshed when user space has changed the classes
 * (acct_meta.gen moved on); an address without an entry gets a fresh lookup.
 * Completes the flow key with the interface and direction. */
static __always_inline void acct_classify(const struct acct_ctx *c, const struct acct_hook *h,
					  struct acct_pkt *p, struct acct_addr_key *ak,
					  struct acct_local *l)
{
	if (h->role == ACCT_ROLE_LAN)
		l->dir = c->egress ? ACCT_DIR_IN : ACCT_DIR_OUT;
	else
		l->dir = c->egress ? ACCT_DIR_OUT : ACCT_DIR_IN;
	acct_addr_copy(ak->addr, l->dir == ACCT_DIR_OUT ? p->key.saddr : p->key.daddr);

	__u32 zero = 0;
	l->meta = acct_meta.lookup(&zero);
	l->gen = l->meta ? l->meta->gen : 0;
	l->av = acct_addrs.lookup(ak);
	if (l->av) {
		if (l->av->gen != l->gen) {	/* user space changed the classes */
			acct_class_of(ak, &l->av->cls);
			l->av->gen = l->gen;
		}
		l->cls = l->av->cls;
	} else {
		acct_class_of(ak, &l->cls);
	}
	/* Coarse clock (jiffy resolution) is plenty for first/last seen and
	 * costs a fraction of bpf_ktime_get_ns(). */
	l->now = bpf_ktime_get_coarse_ns();

	/* ifindex and the word acct_key_l3 wrote, now with dir, in one store */
	__u64 l3 = *(acct_word32 *)&p->key.dir | ACCT_WORD8(l->dir, 0, 0, 0);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	*(acct_word64 *)&p->key.ifindex = c->ifindex | (l3 << 32);
#else
	*(acct_word64 *)&p->key.ifindex = ((__u64)c->ifindex << 32) | l3;
#endif
}

/* Whether fw-policies and rate limits apply at this hook (see acct_enforce):
 * at ingress, and at an egress that is the first hook of its direction. */
static __always_inline int acct_first_hook(const struct acct_ctx *c, const struct acct_hook *h)
{
	return !c->egress || (h->cfg && (h->cfg->flags & ACCT_IF_EGRESS_FIRST));
}

/* A LAN address gets its entry at its first packet; a dropped one only when
 * it belongs to a unit, so its drops are counted per address. */
static __always_inline void acct_addr_entry(const struct acct_hook *h,
					    struct acct_addr_key *ak,
					    struct acct_local *l, __u32 drop)
{
	if (!l->av && h->role == ACCT_ROLE_LAN &&
	    (drop >= ACCT_DROP_MAX || (l->cls.flags & ACCT_CLASS_UNIT))) {
		struct acct_addr_val nv = {};
		nv.cls = l->cls;
		nv.gen = l->gen;
		acct_addrs.insert(ak, &nv);	/* fails if another CPU won: fine */
		l->av = acct_addrs.lookup(ak);
	}
}

/* Drop: counted by cause and direction for the interface and, when it has
 * an entry, the local address; never as traffic. */
static __always_inline void acct_count_drop(const struct acct_hook *h, const struct acct_size *n,
					    const struct acct_local *l, __u32 drop)
{
	struct acct_addr_val *av = l->av;
	struct acct_iface_val *st = h->st;
	__u64 packets = n->packets, bytes = n->bytes;
	__u32 slot = drop * ACCT_DIR_MAX + (l->dir & 1);

	if (av) {
		av->drop_packets[slot] += packets;
		av->drop_bytes[slot] += bytes;
	}
	st->drop_packets[slot] += packets;
	st->drop_bytes[slot] += bytes;
}

/* Account: a passed packet's counters. At a LAN interface: its local address
 * (unattributed when the address table is full), the interface's totals, the
 * flow table and the VLAN and port counters. Elsewhere the interface's
 * statistics only: never part of accounting. */
static __always_inline void acct_account(const struct acct_hook *h, struct acct_pkt *p,
					 const struct acct_size *n, const struct acct_local *l)
{
	struct acct_addr_val *av = l->av;
	struct acct_iface_val *st = h->st;
	__u64 packets = n->packets, bytes = n->bytes;
	__u32 dir = l->dir;

	if (h->role != ACCT_ROLE_LAN) {
		st->packets[dir & 1] += packets;
		st->bytes[dir & 1] += bytes;
		return;
	}
	__u64 now = l->now;
	if (av) {
		av->packets[dir & 1] += packets;
		av->bytes[dir & 1] += bytes;
		av->last_ns = now;
	} else {
		st->health[ACCT_H_ADDR_TABLE_FULL]++;
		st->unattr_packets[dir & 1] += packets;
		st->unattr_bytes[dir & 1] += bytes;
	}
	st->packets[dir & 1] += packets;
	st->bytes[dir & 1] += bytes;

	acct_flow_add(&p->key, packets, bytes, now, p->tcp_flags, st);

	__u32 vslot = p->key.vlan_outer;
	acct_count(acct_vlans.lookup(&vslot), dir, packets, bytes);
	if (p->key.vlan_inner) {
		vslot = ACCT_VLAN_SLOTS + p->key.vlan_inner;
		acct_count(acct_vlans.lookup(&vslot), dir, packets, bytes);
	}
	__u32 pslot = acct_port_slot(&p->key);
	acct_count(acct_ports.lookup(&pslot), dir, packets, bytes);
}

/* Accounts one packet and returns its verdict (ACCT_VERDICT_PASS or DROP).
 * Anything the accountant cannot understand passes. */
static __always_inline int acct_packet(struct acct_ctx *c)
{
	struct acct_hook h;
	if (!acct_hook_of(c, &h))
		return ACCT_VERDICT_PASS;

	__u32 zero = 0;
	__u64 *blank = acct_pkt_zero.lookup(&zero);
	if (!blank)
		return ACCT_VERDICT_PASS;	/* an array's only element: never */
	struct acct_pkt p;
	acct_pkt_clear(&p, *blank);
	if (!acct_parse_packet(c, h.st, &p))
		return ACCT_VERDICT_PASS;

	struct acct_size n;
	acct_measure(c, &p, &n);

	struct acct_addr_key ak __attribute__((aligned(8))) = {};	/* acct_addr_copy */
	struct acct_local l;
	acct_classify(c, &h, &p, &ak, &l);

	__u32 drop = acct_enforce(&l.cls, &p.key, n.bytes, acct_first_hook(c, &h), l.meta);
	acct_addr_entry(&h, &ak, &l, drop);
	if (drop < ACCT_DROP_MAX) {
		acct_count_drop(&h, &n, &l, drop);
		return ACCT_VERDICT_DROP;
	}
	acct_account(&h, &p, &n, &l);
	return ACCT_VERDICT_PASS;
}

#endif /* ACCT_LIB_H */
