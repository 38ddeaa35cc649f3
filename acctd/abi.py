"""The kernel/user contract of bpf/acct_abi.h, as numpy dtypes and enums.

This is a copy, so it is checked, not trusted: tests/kernel/test_abi.py
compares every size and offset with what bcc builds from the header.
Imports neither bcc nor anything kernel-side.
"""

from __future__ import annotations

import enum

import numpy as np

ABI_VERSION = 1
PIN_ROOT = "/sys/fs/bpf/acctd"


def pin_dir(root: str = PIN_ROOT) -> str:
    """Pins of one ABI version live apart, so a new layout never reuses an old map."""
    return f"{root}/v{ABI_VERSION}"


# How an interface's arriving side is hooked (its leaving side: TC egress).
HOOKS = ("xdp-native", "xdp-generic", "tc")


class Dir(enum.IntEnum):
    IN = 0   # towards the local (subscriber) address
    OUT = 1  # from the local (subscriber) address


class Role(enum.IntEnum):
    NONE = 0
    LAN = 1  # faces subscribers: accounts
    WAN = 2  # faces upstream: may enforce, never accounts


class Verdict(enum.IntEnum):
    PASS = 0
    DROP = 1
    POLICE = 2


class Reason(enum.IntFlag):
    SYS_DENY = 1 << 0
    QUOTA = 1 << 1
    LOGIN = 1 << 2
    MONEY = 1 << 3
    MAC = 1 << 4
    SYS_ALLOW = 1 << 31


class Health(enum.IntEnum):
    NON_IP = 0
    TRUNCATED = 1
    MALFORMED = 2
    FLOW_NEW = 3
    FLOW_INSERT_FAIL = 4
    ADDR_TABLE_FULL = 5
    EXT_HDR_LIMIT = 6
    NOT_FIRST_FRAG = 7


HEALTH_MAX = 8
DIR_MAX = 2
VLAN_SLOTS = 4096
PORT_TCP_BASE = 0
PORT_UDP_BASE = 65536
PORT_PROTO_BASE = 131072
PORT_SLOTS = 131072 + 256

_u64x2 = ("<u8", (DIR_MAX,))

IFACE_CFG = np.dtype([("role", "<u4"), ("slot", "<u4")])

IFACE_VAL = np.dtype([
    ("packets", _u64x2), ("bytes", _u64x2),
    ("unattr_packets", _u64x2), ("unattr_bytes", _u64x2),
    ("drop_packets", _u64x2), ("drop_bytes", _u64x2),
    ("health", "<u8", (HEALTH_MAX,)), ("health_bytes", "<u8", (HEALTH_MAX,)),
])

ADDR_KEY = np.dtype([("addr", "u1", (16,))])

ADDR_VAL = np.dtype([
    ("packets", _u64x2), ("bytes", _u64x2),
    ("drop_packets", _u64x2), ("drop_bytes", _u64x2),
    ("last_ns", "<u8"),
    ("verdict", "<u4"), ("reason", "<u4"), ("policer", "<u4"), ("pad0", "<u4"),
])

FLOW_KEY = np.dtype([
    ("ifindex", "<u4"), ("dir", "u1"), ("ip_ver", "u1"), ("proto", "u1"), ("tos", "u1"),
    ("vlan_outer", "<u2"), ("vlan_inner", "<u2"), ("sport", "<u2"), ("dport", "<u2"),
    ("saddr", "u1", (16,)), ("daddr", "u1", (16,)),
])

FLOW_VAL = np.dtype([
    ("packets", "<u8"), ("bytes", "<u8"), ("first_ns", "<u8"), ("last_ns", "<u8"),
    ("tcp_flags", "<u4"), ("pad0", "<u4"),
])

COUNT_VAL = np.dtype([("packets", _u64x2), ("bytes", _u64x2)])

META = np.dtype([("abi", "<u4"), ("pad0", "<u4"), ("build_id", "<u8")])

CTL_SET_ARG = np.dtype([
    ("key", ADDR_KEY), ("verdict", "<u4"), ("reason", "<u4"),
    ("policer", "<u4"), ("ncpus", "<u4"),
])

# C struct name -> dtype, for the layout check against the compiled program.
STRUCTS = {
    "acct_iface_cfg": IFACE_CFG,
    "acct_iface_val": IFACE_VAL,
    "acct_addr_key": ADDR_KEY,
    "acct_addr_val": ADDR_VAL,
    "acct_flow_key": FLOW_KEY,
    "acct_flow_val": FLOW_VAL,
    "acct_count_val": COUNT_VAL,
    "acct_meta": META,
    "acct_ctl_set_arg": CTL_SET_ARG,
}

# Map name -> (key dtype, value dtype, per-CPU).
MAPS = {
    "acct_flows": (FLOW_KEY, FLOW_VAL, True),
    "acct_addrs": (ADDR_KEY, ADDR_VAL, True),
    "acct_vlans": (np.dtype("<u4"), COUNT_VAL, True),
    "acct_ports": (np.dtype("<u4"), COUNT_VAL, True),
    "acct_iface_cfg": (np.dtype("<u4"), IFACE_CFG, False),
    "acct_ifaces": (np.dtype("<u4"), IFACE_VAL, True),
    "acct_meta": (np.dtype("<u4"), META, False),
}
