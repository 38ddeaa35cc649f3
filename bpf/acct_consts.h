/* acct_consts.h - build-time limits. Every one can be overridden with
 * -DNAME=VALUE (acctd passes them as bcc cflags from its config); the
 * defaults suit a small site. */
#ifndef ACCT_CONSTS_H
#define ACCT_CONSTS_H

/* Flow table entries. LRU maps evict before they are full, so the loader
 * passes the configured size times its headroom factor. */
#ifndef ACCT_MAX_FLOWS
#define ACCT_MAX_FLOWS 65536
#endif

/* Local (subscriber) addresses with exact counters. */
#ifndef ACCT_MAX_ADDRS
#define ACCT_MAX_ADDRS 16384
#endif

/* Highest ifindex that can be hooked, plus one. */
#ifndef ACCT_MAX_IFINDEX
#define ACCT_MAX_IFINDEX 4096
#endif

/* Hooked interfaces (slots in acct_ifaces); slot 0 collects packets seen
 * on an interface that has no configuration. */
#ifndef ACCT_MAX_IFACES
#define ACCT_MAX_IFACES 64
#endif

/* IPv6 extension headers walked before giving up on finding L4. */
#ifndef ACCT_IPV6_EXT_MAX
#define ACCT_IPV6_EXT_MAX 6
#endif

/* Bytes a TC hook pulls into the skb's linear area at once when a header
 * lies outside it: Ethernet, two VLAN tags, IP and TCP with options. */
#ifndef ACCT_TC_PULL
#define ACCT_TC_PULL 256
#endif

/* Enforcement tables: unit prefixes (plus `restrict`), compiled fw-policy
 * lists (index 0 unused), prefixes of fw targets, rate limits (0 unused). */
#ifndef ACCT_MAX_CLASSES
#define ACCT_MAX_CLASSES 16384
#endif

#ifndef ACCT_MAX_RULESETS
#define ACCT_MAX_RULESETS 1024
#endif

#ifndef ACCT_MAX_SET_PREFIXES
#define ACCT_MAX_SET_PREFIXES 65536
#endif

#ifndef ACCT_MAX_POLICERS
#define ACCT_MAX_POLICERS 4096
#endif

/* Where the maps are pinned: one directory per ACCT_ABI_VERSION, as
 * acctd/kernel/abi.py pin_dir() has it (the loader passes its own). */
#ifndef ACCT_PIN_DIR
#define ACCT_STR_(x) #x
#define ACCT_STR(x) ACCT_STR_(x)
#define ACCT_PIN_DIR "/sys/fs/bpf/acctd/v" ACCT_STR(ACCT_ABI_VERSION)
#endif

#endif /* ACCT_CONSTS_H */
