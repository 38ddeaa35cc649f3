/* acct_maps.h - map definitions (kernel side only). All maps are named
 * acct_* and pinned under ACCT_PIN_DIR, so counters outlive the loader and
 * a restarted daemon continues from them. Layouts: acct_abi.h. */
#ifndef ACCT_MAPS_H
#define ACCT_MAPS_H

#define ACCT_PIN(name) ACCT_PIN_DIR "/" #name

/* Flows. Lossy by design (LRU): exact totals live in acct_addrs. */
BPF_TABLE_PINNED("lru_percpu_hash", struct acct_flow_key, struct acct_flow_val,
		 acct_flows, ACCT_MAX_FLOWS, ACCT_PIN(acct_flows));

/* Exact per-local-address counters plus the enforcement verdict. Not LRU:
 * an address that does not fit is counted as unattributed, never evicted. */
BPF_TABLE_PINNED("percpu_hash", struct acct_addr_key, struct acct_addr_val,
		 acct_addrs, ACCT_MAX_ADDRS, ACCT_PIN(acct_addrs));

/* Outer (or only) VLAN at [vid], inner VLAN of QinQ at [4096 + vid]. */
BPF_TABLE_PINNED("percpu_array", __u32, struct acct_count_val,
		 acct_vlans, 2 * ACCT_VLAN_SLOTS, ACCT_PIN(acct_vlans));

/* Per (protocol, service port); index layout in acct_abi.h. */
BPF_TABLE_PINNED("percpu_array", __u32, struct acct_count_val,
		 acct_ports, ACCT_PORT_SLOTS, ACCT_PIN(acct_ports));

BPF_TABLE_PINNED("array", __u32, struct acct_iface_cfg,
		 acct_iface_cfg, ACCT_MAX_IFINDEX, ACCT_PIN(acct_iface_cfg));

BPF_TABLE_PINNED("percpu_array", __u32, struct acct_iface_val,
		 acct_ifaces, ACCT_MAX_IFACES, ACCT_PIN(acct_ifaces));

/* Enforcement: classes of local addresses, compiled fw-policies, their prefix
 * sets and the rate limits. Written by user space only (acctd/kernel/enforcer.py). */
BPF_TABLE_PINNED("lpm_trie", struct acct_class_key, struct acct_class,
		 acct_classes, ACCT_MAX_CLASSES, ACCT_PIN(acct_classes), BPF_F_NO_PREALLOC);

BPF_TABLE_PINNED("array", __u32, struct acct_fw_set,
		 acct_fw, ACCT_MAX_RULESETS, ACCT_PIN(acct_fw));

BPF_TABLE_PINNED("lpm_trie", struct acct_set_key, __u32,
		 acct_sets, ACCT_MAX_SET_PREFIXES, ACCT_PIN(acct_sets), BPF_F_NO_PREALLOC);

BPF_TABLE_PINNED("array", __u32, struct acct_policer,
		 acct_policers, ACCT_MAX_POLICERS, ACCT_PIN(acct_policers));

BPF_TABLE_PINNED("array", __u32, struct acct_meta,
		 acct_meta, 1, ACCT_PIN(acct_meta));

#endif /* ACCT_MAPS_H */
