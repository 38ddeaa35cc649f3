/* acct_abi.h - the kernel/user contract of acctd.
 *
 * Every struct, enum and limit that both the BPF programs and the Python
 * control plane depend on lives here, and only here. acctd/kernel/abi.py keeps a
 * numpy copy of these layouts and constants, checked against this file:
 * tests/kernel/test_abi.py compares the structs with what bcc builds from it,
 * tests/unit/test_abi_header.py the enums and defines with what gcc reads.
 * ACCT_ABI_VERSION is not copied: abi.py reads it from here. Change a layout
 * => bump ACCT_ABI_VERSION, which also moves the pin directory, so an old
 * pinned map is never reused with new types (bcc reuses a pin without
 * checking it).
 *
 * Fixed-width fields only, explicit padding, every struct a multiple of 8.
 * One-dimensional arrays only: bcc describes [a][b] fields as [a].
 * Addresses are 16 bytes in network byte order; IPv4 is stored IPv4-mapped
 * (::ffff:a.b.c.d). Ports, VLAN ids and ifindexes are in host byte order.
 */
#ifndef ACCT_ABI_H
#define ACCT_ABI_H

#define ACCT_ABI_VERSION 2

enum acct_dir {
	ACCT_DIR_IN = 0,	/* towards the local (subscriber) address */
	ACCT_DIR_OUT = 1,	/* from the local (subscriber) address */
	ACCT_DIR_MAX = 2,
};

/* Role of a hooked interface. Only LAN hooks add to accounting. */
enum acct_role {
	ACCT_ROLE_NONE = 0,	/* not configured: packets pass, counted as health */
	ACCT_ROLE_LAN = 1,	/* faces subscribers */
	ACCT_ROLE_WAN = 2,	/* faces upstream: may enforce, never accounts */
};

enum acct_verdict {
	ACCT_VERDICT_PASS = 0,
	ACCT_VERDICT_DROP = 1,
};

/* Why the datapath dropped a packet: index of the drop counters. */
enum acct_drop {
	ACCT_DROP_BLOCK = 0,	/* a system policy: sys-deny(-reason), sys-deny-OID */
	ACCT_DROP_FW = 1,	/* no fw-policy of the unit passes it, or `restrict` */
	ACCT_DROP_POLICE = 2,	/* over a rate limit (bw) */
	ACCT_DROP_MAX = 3,
};

/* NeTAMS system policies: why an address is blocked (bits of
 * acct_class.sys_policy). sys-deny, sys-deny-{quota,login,money,mac,auth,
 * block}, and sys-allow, which overrides them all. */
enum acct_sys_policy {
	ACCT_SYS_DENY = 1 << 0,		/* admin */
	ACCT_SYS_QUOTA = 1 << 1,	/* sys-deny-quota */
	ACCT_SYS_LOGIN = 1 << 2,	/* sys-deny-login */
	ACCT_SYS_MONEY = 1 << 3,	/* sys-deny-money */
	ACCT_SYS_MAC = 1 << 4,		/* sys-deny-mac */
	ACCT_SYS_AUTH = 1 << 5,		/* sys-deny-auth */
	ACCT_SYS_BLOCK = 1 << 6,	/* sys-deny-block */
	ACCT_SYS_PEERS = 1 << 7,	/* not a block: the class has sys-allow-OID /
					 * sys-deny-OID atoms (ACCT_CLASS_PEER_SHIFT) */
	ACCT_SYS_ALLOW = 1 << 31,	/* admin override: lifts every block above */
};
#define ACCT_SYS_DENY_MASK 0x7f
#define ACCT_SYS_SLOW_MASK 0xff	/* a block or peers: more to check */

/* What a class does with traffic its blocks let through (acct_class.fw). */
enum acct_fw {
	ACCT_FW_PASS = 0,	/* no fw-policy: `restrict ... pass` */
	ACCT_FW_DROP = 1,	/* no fw-policy: `restrict ... drop` */
	ACCT_FW_RULES = 2,	/* pass only what acct_fw[ruleset] allows */
};

/* Per-interface health counters, indexes into acct_iface_val.health. */
enum acct_health {
	ACCT_H_NON_IP = 0,		/* ARP, LLDP, ... (passed) */
	ACCT_H_TRUNCATED = 1,		/* a header ends past the frame (passed; an
					 * L4 header cut short is still accounted) */
	ACCT_H_MALFORMED = 2,		/* bad version / IHL, an IP length past the
					 * frame or 0 (passed, not accounted) */
	ACCT_H_FLOW_NEW = 3,		/* flows inserted (evictions = new - live - reaped) */
	ACCT_H_FLOW_INSERT_FAIL = 4,	/* flow could not be inserted */
	ACCT_H_ADDR_TABLE_FULL = 5,	/* local address could not be inserted */
	ACCT_H_EXT_HDR_LIMIT = 6,	/* IPv6 extension chain longer than we walk */
	ACCT_H_NOT_FIRST_FRAG = 7,	/* non-first fragments (counted, no ports) */
	ACCT_H_MAX = 8,
};

/* acct_iface_cfg.flags */
#define ACCT_IF_EGRESS_FIRST 1	/* egress is the first hook of its direction: no
				 * hook of the other role exists, so fw-policies
				 * and rate limits apply here, not only at ingress */

/* Interface config, written by user space, indexed by ifindex. */
struct acct_iface_cfg {
	__u32 role;	/* enum acct_role */
	__u32 slot;	/* index into acct_ifaces */
	__u32 flags;	/* ACCT_IF_* */
	__u32 pad0;
};

/* Per-interface totals (per-CPU). Accounted = attributed + unattributed, so
 * sum(acct_addrs) + unattr == packets/bytes on every LAN interface. */
struct acct_iface_val {
	__u64 packets[ACCT_DIR_MAX];
	__u64 bytes[ACCT_DIR_MAX];
	__u64 unattr_packets[ACCT_DIR_MAX];	/* address table full */
	__u64 unattr_bytes[ACCT_DIR_MAX];
	__u64 drop_packets[ACCT_DROP_MAX * ACCT_DIR_MAX];	/* [cause * 2 + dir]: */
	__u64 drop_bytes[ACCT_DROP_MAX * ACCT_DIR_MAX];		/* dropped, not in packets */
	__u64 health[ACCT_H_MAX];		/* events */
	__u64 health_bytes[ACCT_H_MAX];		/* frame bytes of those events */
};

struct acct_addr_key {
	__u8 addr[16];	/* network order, IPv4-mapped for IPv4 */
};

/* What to do with a local address: the most specific acct_classes prefix
 * holding it. User space writes one per unit prefix/address, plus ::/0 for
 * `restrict all`; no entry at all means pass. */
struct acct_class_key {
	__u32 prefixlen;	/* LPM: bits of addr that count, 0..128 */
	__u8 addr[16];		/* network order, IPv4-mapped */
};

/* acct_class.flags */
#define ACCT_CLASS_UNIT 1	/* belongs to a unit: drops are counted per address */
#define ACCT_CLASS_PORTAL 2	/* blocked for its login only, TCP with remote port
				 * ACCT_PORTAL_PORT passes: the gateway's DNAT takes it
				 * to the captive login page (acctd/aaa/captive.py) */
#define ACCT_PORTAL_PORT 80
#define ACCT_CLASS_PEER_SHIFT 16	/* flags >> 16: the acct_fw index of the unit's
					 * sys-allow-OID / sys-deny-OID atoms, 0 = none */

struct acct_class {
	__u32 sys_policy;	/* enum acct_sys_policy bits: drop while a deny bit is set */
	__u32 fw;		/* enum acct_fw */
	__u32 ruleset;		/* index into acct_fw when fw == ACCT_FW_RULES */
	__u32 flags;		/* ACCT_CLASS_* */
	__u32 policer[ACCT_DIR_MAX];	/* the unit's rate limit (acct_policers), 0 = none */
};

/* Per-local-address counters (per-CPU). The kernel only adds to the
 * counters. `cls` is this CPU's copy of the address's acct_classes entry,
 * refreshed whenever acct_meta.gen moves past `gen`: a decision reaches
 * every CPU at its next packet, and counters are never rewritten. */
struct acct_addr_val {
	__u64 packets[ACCT_DIR_MAX];
	__u64 bytes[ACCT_DIR_MAX];
	__u64 drop_packets[ACCT_DROP_MAX * ACCT_DIR_MAX];	/* [cause * 2 + dir] */
	__u64 drop_bytes[ACCT_DROP_MAX * ACCT_DIR_MAX];
	__u64 last_ns;		/* bpf_ktime_get_coarse_ns() of the last counted packet */
	struct acct_class cls;
	__u32 gen;		/* acct_meta.gen cls was read at; 0 = never */
	__u32 pad0;
};

/* fw-policies compiled to kernel rules. A ruleset is the unit's fw-policy
 * list, each policy a run of atoms (an OR of ANDed conditions) ended by one
 * flagged ACCT_ATOM_LAST. A packet passes when some policy matches (or, with
 * ACCT_ATOM_INVERT, does not); otherwise it is dropped. */
#define ACCT_FW_ATOMS 8	/* atoms per ruleset (part of the layout); more
				 * makes the verifier give up on the TC program */

#define ACCT_ATOM_LAST 1	/* last atom of its policy */
#define ACCT_ATOM_INVERT 2	/* the policy was listed as !name */
#define ACCT_ATOM_PORTS 4	/* TCP/UDP only, ports within the ranges */
#define ACCT_ATOM_TOS 8		/* tos must equal .tos */
#define ACCT_ATOM_VLAN 16	/* either VLAN tag equals .vlan */
#define ACCT_ATOM_PEER_ALLOW 128	/* in a peer set: sys-allow-OID (else sys-deny-OID) */
#define ACCT_ATOM_ADDR_ANY_SIDE 32	/* .addr_set holds either address (target addr),
					 * not just the remote one (target file/units) */
#define ACCT_ATOM_DENY 64	/* on the LAST atom: the policy's match drops instead
				 * of passing (a quota's block-policy) */

struct acct_fw_atom {
	__u8 proto;		/* IP protocol, 0 = any */
	__u8 tos;		/* DSCP byte as in acct_flow_key.tos */
	__u16 flags;		/* ACCT_ATOM_* */
	__u16 sport_lo;		/* host order, inclusive */
	__u16 sport_hi;
	__u16 dport_lo;
	__u16 dport_hi;
	__u16 vlan;
	__u16 pad0;
	__u32 ifindex;		/* 0 = any */
	__u32 addr_set;		/* acct_sets id the address must be in, 0 = any */
	__u32 policer[ACCT_DIR_MAX];	/* the policy's rate limit for this unit, 0 = none */
};

struct acct_fw_set {
	__u32 n_atoms;
	__u32 pad0;
	struct acct_fw_atom atoms[ACCT_FW_ATOMS];
};

/* Prefix sets for fw atoms (target addr/file/units): LPM over (set, address). */
struct acct_set_key {
	__u32 prefixlen;	/* 32 + bits of addr that count */
	__u32 set;		/* set id (always matched whole: prefixlen >= 32) */
	__u8 addr[16];		/* network order, IPv4-mapped */
};

/* A token-bucket rate limit, kept as a GCRA theoretical arrival time so every
 * CPU can charge it with one atomic add (see acct_police in acct_lib.h). */
#define ACCT_POLICER_SHIFT 16
struct acct_policer {
	__u64 tat_ns;		/* when the bucket is next full; written by the datapath */
	__u64 ns_per_byte;	/* 1e9 / rate in bytes/s, << ACCT_POLICER_SHIFT; 0 = off */
	__u64 burst_ns;		/* bucket depth, in time at the rate */
	__u64 pad0;
};

/* Flow key: one entry per interface, direction and 5-tuple with VLANs. */
struct acct_flow_key {
	__u32 ifindex;
	__u8 dir;		/* enum acct_dir */
	__u8 ip_ver;		/* 4 or 6 */
	__u8 proto;		/* IP protocol (after IPv6 extension headers) */
	__u8 tos;		/* DSCP bits of TOS / traffic class (ECN masked off) */
	__u16 vlan_outer;	/* VID, 0 = untagged */
	__u16 vlan_inner;	/* VID of the second tag (QinQ), 0 = none */
	__u16 sport;		/* host order; ICMP/ICMPv6 type; 0 for non-first fragments */
	__u16 dport;		/* host order; ICMP/ICMPv6 code */
	__u8 saddr[16];		/* network order, IPv4-mapped */
	__u8 daddr[16];
};

struct acct_flow_val {
	__u64 packets;
	__u64 bytes;
	__u64 first_ns;		/* bpf_ktime_get_coarse_ns(), per CPU: user space takes min */
	__u64 last_ns;		/* per CPU: user space takes max */
	__u32 tcp_flags;	/* OR of the TCP flag byte */
	__u32 pad0;
};

/* Per-VLAN and per-(protocol, port) counters (per-CPU arrays). */
struct acct_count_val {
	__u64 packets[ACCT_DIR_MAX];
	__u64 bytes[ACCT_DIR_MAX];
};

/* acct_ports index: TCP ports, then UDP ports, then one slot per other IP
 * protocol. The port is the flow's service port: the lower of its two. */
#define ACCT_PORT_TCP_BASE 0
#define ACCT_PORT_UDP_BASE 65536
#define ACCT_PORT_PROTO_BASE 131072
#define ACCT_PORT_SLOTS (131072 + 256)

#define ACCT_VLAN_SLOTS 4096

/* Build metadata, acct_meta[0]: lets a restarted loader tell whether the
 * attached programs are the ones it would build. */
struct acct_meta {
	__u32 abi;
	__u32 gen;		/* bumped by user space after acct_classes/acct_fw change */
	__u64 build_id;		/* hash of the sources and build options */
	__u64 mock_ns;		/* the clock of test builds (-DACCT_MOCK_CLOCK) */
};

#endif /* ACCT_ABI_H */
