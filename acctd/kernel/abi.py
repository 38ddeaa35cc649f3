"""The kernel/user contract of bpf/acct_abi.h, as numpy dtypes and enums.

This is a copy, so it is checked, not trusted: tests/unit/test_abi_header.py
compares every enum member and #define with the header (gcc reads it), and
tests/kernel/test_abi.py every struct, field, size and offset with what bcc
builds from it. The ABI version is not copied but read from the header, so
it is written in one place. Imports neither bcc nor anything kernel-side.
"""

from __future__ import annotations

import enum
import re
from pathlib import Path

import numpy as np

from acctd.errors import AcctError

PIN_ROOT = "/sys/fs/bpf/acctd"


def bpf_dir() -> Path:
    """bpf/ ships inside the installed package (acctd/bpf); in a checkout it
    is beside the package."""
    package = Path(__file__).resolve().parents[1]
    for cand in (package / "bpf", package.parent / "bpf"):
        if (cand / "acct_abi.h").exists():
            return cand
    raise AcctError(f"BPF sources not found next to {package} (broken install?)")


HEADER = bpf_dir() / "acct_abi.h"

_VERSION = re.compile(r"^[ \t]*#[ \t]*define[ \t]+ACCT_ABI_VERSION[ \t]+(\d+)\b", re.M)


def read_abi_version(header: Path) -> int:
    """ACCT_ABI_VERSION of the header: a plain number, defined once."""
    try:
        found = _VERSION.findall(header.read_text())
    except OSError as e:
        raise AcctError(f"cannot read {header}: {e.strerror} (broken install?)") from None
    if len(found) != 1:
        raise AcctError(f"{header}: expected one '#define ACCT_ABI_VERSION <number>', "
                        f"found {len(found)}")
    return int(found[0])


ABI_VERSION = read_abi_version(HEADER)


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


class Drop(enum.IntEnum):
    """Why the datapath dropped a packet (index of the drop counters)."""
    BLOCK = 0   # system policy: sys-deny, quota, login, money, mac, auth, block
    FW = 1      # no fw-policy passes it, or `restrict`
    POLICE = 2  # over a rate limit


class Fw(enum.IntEnum):
    PASS = 0    # no fw-policy: restrict ... pass
    DROP = 1    # no fw-policy: restrict ... drop
    RULES = 2   # the compiled fw-policy list acct_fw[ruleset]


class SysPolicy(enum.IntFlag):
    """NeTAMS system policies as kernel bits (acct_class.sys_policy)."""
    DENY = 1 << 0
    QUOTA = 1 << 1
    LOGIN = 1 << 2
    MONEY = 1 << 3
    MAC = 1 << 4
    AUTH = 1 << 5    # authentication refused (the login service refuses it too)
    BLOCK = 1 << 6   # the billing account is blocked
    PEERS = 1 << 7   # not a block: the class has peer atoms (CLASS_PEER_SHIFT)
    ALLOW = 1 << 31


SYS_DENY_MASK = 0x7f
SYS_SLOW_MASK = 0xff
IF_EGRESS_FIRST = 1
CLASS_UNIT = 1
CLASS_PORTAL = 2        # the captive portal's HTTP passes a login-only block
PORTAL_PORT = 80
CLASS_PEER_SHIFT = 16
FW_ATOMS = 8
POLICER_SHIFT = 16


class Atom(enum.IntFlag):
    LAST = 1
    INVERT = 2
    PORTS = 4
    TOS = 8
    VLAN = 16
    ADDR_ANY_SIDE = 32
    DENY = 64
    PEER_ALLOW = 128


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
DROP_MAX = 3
VLAN_SLOTS = 4096
PORT_TCP_BASE = 0
PORT_UDP_BASE = 65536
PORT_PROTO_BASE = 131072
PORT_SLOTS = 131072 + 256


# acct_port_slot() as a table by protocol: the slot's base, and whether the port adds to it
_PORT_BASE = np.array([PORT_PROTO_BASE + p for p in range(256)], np.uint32)
_PORT_BASE[6], _PORT_BASE[17] = PORT_TCP_BASE, PORT_UDP_BASE
_HAS_PORT = np.zeros(256, np.uint32)
_HAS_PORT[[6, 17]] = 1


def port_slots(flow_keys: np.ndarray) -> np.ndarray:
    """The acct_ports slot of each flow key, as acct_port_slot() computes it:
    TCP or UDP with the lower of the two ports (the service port), other
    protocols one slot each."""
    proto = flow_keys["proto"]
    port = np.minimum(flow_keys["sport"], flow_keys["dport"])
    return _PORT_BASE[proto] + _HAS_PORT[proto] * port


def vlan_slots(flow_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The acct_vlans slots of the flow keys, as the datapath counts them:
    every flow in its outer VID's slot (0 untagged), a QinQ flow also in
    VLAN_SLOTS + its inner VID. (outer slot per key, QinQ rows, their inner slots)."""
    inner = np.flatnonzero(flow_keys["vlan_inner"])
    return (flow_keys["vlan_outer"].astype(np.uint32), inner,
            VLAN_SLOTS + flow_keys["vlan_inner"][inner].astype(np.uint32))


_u64x2 = ("<u8", (DIR_MAX,))

_drops = ("<u8", (DROP_MAX, DIR_MAX))  # C: one dimension, [cause * 2 + dir]

IFACE_CFG = np.dtype([("role", "<u4"), ("slot", "<u4"), ("flags", "<u4"), ("pad0", "<u4")])

IFACE_VAL = np.dtype([
    ("packets", _u64x2), ("bytes", _u64x2),
    ("unattr_packets", _u64x2), ("unattr_bytes", _u64x2),
    ("drop_packets", _drops), ("drop_bytes", _drops),
    ("health", "<u8", (HEALTH_MAX,)), ("health_bytes", "<u8", (HEALTH_MAX,)),
])

ADDR_KEY = np.dtype([("addr", "u1", (16,))])

CLASS_KEY = np.dtype([("prefixlen", "<u4"), ("addr", "u1", (16,))])

CLASS = np.dtype([
    ("sys_policy", "<u4"), ("fw", "<u4"), ("ruleset", "<u4"), ("flags", "<u4"),
    ("policer", "<u4", (DIR_MAX,)),
])

ADDR_VAL = np.dtype([
    ("packets", _u64x2), ("bytes", _u64x2),
    ("drop_packets", _drops), ("drop_bytes", _drops),
    ("last_ns", "<u8"),
    ("cls", CLASS), ("gen", "<u4"), ("pad0", "<u4"),
])

FW_ATOM = np.dtype([
    ("proto", "u1"), ("tos", "u1"), ("flags", "<u2"),
    ("sport_lo", "<u2"), ("sport_hi", "<u2"), ("dport_lo", "<u2"), ("dport_hi", "<u2"),
    ("vlan", "<u2"), ("pad0", "<u2"), ("ifindex", "<u4"), ("addr_set", "<u4"),
    ("policer", "<u4", (DIR_MAX,)),
])

FW_SET = np.dtype([("n_atoms", "<u4"), ("pad0", "<u4"), ("atoms", FW_ATOM, (FW_ATOMS,))])

SET_KEY = np.dtype([("prefixlen", "<u4"), ("set", "<u4"), ("addr", "u1", (16,))])

POLICER = np.dtype([("tat_ns", "<u8"), ("ns_per_byte", "<u8"), ("burst_ns", "<u8"),
                    ("pad0", "<u8")])

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

META = np.dtype([("abi", "<u4"), ("gen", "<u4"), ("build_id", "<u8"), ("mock_ns", "<u8")])

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
    "acct_class_key": CLASS_KEY,
    "acct_class": CLASS,
    "acct_fw_atom": FW_ATOM,
    "acct_fw_set": FW_SET,
    "acct_set_key": SET_KEY,
    "acct_policer": POLICER,
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
    "acct_classes": (CLASS_KEY, CLASS, False),
    "acct_fw": (np.dtype("<u4"), FW_SET, False),
    "acct_sets": (SET_KEY, np.dtype("<u4"), False),
    "acct_policers": (np.dtype("<u4"), POLICER, False),
}
