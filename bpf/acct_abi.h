/* acct_abi.h - the kernel/user contract of acctd.
 *
 * Every struct, enum and limit that both the BPF programs and the Python
 * control plane depend on lives here, and only here. acctd/abi.py keeps a
 * numpy copy of these layouts; tests/kernel/test_abi.py checks that copy
 * against what bcc builds from this file. Change a layout => bump
 * ACCT_ABI_VERSION, which also moves the pin directory, so an old pinned map
 * is never reused with new types (bcc reuses a pin without checking it).
 *
 * Fixed-width fields only, explicit padding, every struct a multiple of 8.
 * Addresses are 16 bytes in network byte order; IPv4 is stored IPv4-mapped
 * (::ffff:a.b.c.d). Ports, VLAN ids and ifindexes are in host byte order.
 */
#ifndef ACCT_ABI_H
#define ACCT_ABI_H

#define ACCT_ABI_VERSION 1

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
	ACCT_VERDICT_POLICE = 2,	/* rate-limited by policer `policer` */
};

/* Why an address is blocked (bitmask in acct_addr_val.reason). */
enum acct_reason {
	ACCT_REASON_SYS_DENY = 1 << 0,	/* admin */
	ACCT_REASON_QUOTA = 1 << 1,
	ACCT_REASON_LOGIN = 1 << 2,
	ACCT_REASON_MONEY = 1 << 3,
	ACCT_REASON_MAC = 1 << 4,
	ACCT_REASON_SYS_ALLOW = 1 << 31,	/* admin override: never drop */
};

/* Per-interface health counters, indexes into acct_iface_val.health. */
enum acct_health {
	ACCT_H_NON_IP = 0,		/* ARP, LLDP, ... (passed) */
	ACCT_H_TRUNCATED = 1,		/* a header ends past the packet (passed) */
	ACCT_H_MALFORMED = 2,		/* bad version / IHL / lengths (passed) */
	ACCT_H_FLOW_NEW = 3,		/* flows inserted (evictions = new - live - reaped) */
	ACCT_H_FLOW_INSERT_FAIL = 4,	/* flow could not be inserted */
	ACCT_H_ADDR_TABLE_FULL = 5,	/* local address could not be inserted */
	ACCT_H_EXT_HDR_LIMIT = 6,	/* IPv6 extension chain longer than we walk */
	ACCT_H_NOT_FIRST_FRAG = 7,	/* non-first fragments (counted, no ports) */
	ACCT_H_MAX = 8,
};

/* Interface config, written by user space, indexed by ifindex. */
struct acct_iface_cfg {
	__u32 role;	/* enum acct_role */
	__u32 slot;	/* index into acct_ifaces */
};

/* Per-interface totals (per-CPU). Accounted = attributed + unattributed, so
 * sum(acct_addrs) + unattr == packets/bytes on every LAN interface. */
struct acct_iface_val {
	__u64 packets[ACCT_DIR_MAX];
	__u64 bytes[ACCT_DIR_MAX];
	__u64 unattr_packets[ACCT_DIR_MAX];	/* address table full */
	__u64 unattr_bytes[ACCT_DIR_MAX];
	__u64 drop_packets[ACCT_DIR_MAX];	/* dropped by a verdict: not in packets */
	__u64 drop_bytes[ACCT_DIR_MAX];
	__u64 health[ACCT_H_MAX];		/* events */
	__u64 health_bytes[ACCT_H_MAX];		/* frame bytes of those events */
};

struct acct_addr_key {
	__u8 addr[16];	/* network order, IPv4-mapped for IPv4 */
};

/* Per-local-address counters and verdict (per-CPU). The kernel only adds to
 * the counters; verdict/reason/policer are written by user space in every
 * CPU's copy (see acct_ctl_set in acct_xdp.c), never by the datapath. */
struct acct_addr_val {
	__u64 packets[ACCT_DIR_MAX];
	__u64 bytes[ACCT_DIR_MAX];
	__u64 drop_packets[ACCT_DIR_MAX];
	__u64 drop_bytes[ACCT_DIR_MAX];
	__u64 last_ns;		/* bpf_ktime_get_coarse_ns() of the last counted packet */
	__u32 verdict;		/* enum acct_verdict */
	__u32 reason;		/* enum acct_reason bits */
	__u32 policer;		/* policer index when verdict == POLICE, else 0 */
	__u32 pad0;
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
	__u32 pad0;
	__u64 build_id;		/* hash of the sources and build options */
};

/* Argument of acct_ctl_set, passed as the packet of a BPF_PROG_RUN. */
struct acct_ctl_set_arg {
	struct acct_addr_key key;
	__u32 verdict;
	__u32 reason;
	__u32 policer;
	__u32 ncpus;	/* number of possible CPUs to write */
};

#endif /* ACCT_ABI_H */
