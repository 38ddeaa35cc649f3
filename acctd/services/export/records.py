"""The exporter's flow cache: drained flow deltas in, flow records out.

The kernel's flow table only counts; what a collector calls a flow record
is made here. Each drain's deltas are added to the cache entry of their
flow. An entry is exported as a record when it has moved for an active
timeout (and again at every active timeout while it keeps moving), and a
last time when it has been idle for the inactive timeout, after which it
is forgotten. A record carries the bytes and packets since the flow's
previous record, so the records of a flow add up to exactly what acctd
counted for it. Everything is vectorised: no Python work per flow.

Times are the kernel's CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_coarse_ns);
the encoders turn them into epoch time and sysUptime.
"""

from __future__ import annotations

import numpy as np

from acctd.kernel import abi
from acctd.kernel.drain import key_hash

# One flow record, as the encoders read it (native order; they write big-endian).
RECORD = np.dtype([
    ("ip_ver", "u1"), ("proto", "u1"), ("tos", "u1"), ("tcp_flags", "u1"),
    ("dir", "u1"), ("pad", "u1"), ("vlan", "u2"), ("sport", "u2"), ("dport", "u2"),
    ("ifindex", "u4"), ("saddr", "u1", (16,)), ("daddr", "u1", (16,)),
    ("packets", "u8"), ("bytes", "u8"), ("start_ns", "u8"), ("end_ns", "u8"),
])

_STATE = np.dtype([("packets", "u8"), ("bytes", "u8"), ("flags", "u4"),
                   ("start_ns", "u8"), ("last_ns", "u8")])

ICMP_PROTOS = (1, 58)


def records_of(keys: np.ndarray, state: np.ndarray) -> np.ndarray:
    """RECORD rows of flow keys (abi.FLOW_KEY) and their cache state.

    ICMP type and code are in the key's ports; a record carries them the
    NetFlow way, as destination port type * 256 + code, source port 0."""
    out = np.zeros(len(keys), RECORD)
    for f in ("ip_ver", "proto", "tos", "dir", "ifindex", "saddr", "daddr", "sport", "dport"):
        out[f] = keys[f]
    icmp = np.isin(keys["proto"], ICMP_PROTOS)
    out["dport"] = np.where(icmp, (keys["sport"].astype(np.uint32) << 8) | keys["dport"],
                            keys["dport"])
    out["sport"][icmp] = 0
    out["vlan"] = keys["vlan_outer"]
    out["tcp_flags"] = state["flags"] & 0xFF
    out["packets"], out["bytes"] = state["packets"], state["bytes"]
    out["start_ns"], out["end_ns"] = state["start_ns"], state["last_ns"]
    return out


class FlowCache:
    """Flows seen within the inactive timeout, with what they have moved
    since their last record. `active_ns` and `inactive_ns` are the timeouts."""

    def __init__(self, active_ns: int, inactive_ns: int):
        self.active_ns, self.inactive_ns = active_ns, inactive_ns
        self.keys = np.zeros(0, abi.FLOW_KEY)
        self.state = np.zeros(0, _STATE)
        self._hash = np.zeros(0, np.uint64)

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, keys: np.ndarray, values: np.ndarray, now_ns: int) -> None:
        """One drain's deltas (abi.FLOW_KEY, abi.FLOW_VAL), drained at
        monotonic time now_ns. A drain holds each key once."""
        if not len(keys):
            return
        h = key_hash(keys)
        order = np.argsort(self._hash, kind="stable")
        pos = np.searchsorted(self._hash[order], h)
        idx = order[np.minimum(pos, max(len(order) - 1, 0))] if len(order) else pos
        hit = np.zeros(len(keys), bool)
        if len(order):
            hit = self._hash[idx] == h
            kb = keys.view(np.uint8).reshape(len(keys), -1)
            cb = self.keys.view(np.uint8).reshape(len(self.keys), -1)
            hit[hit] = (kb[hit] == cb[idx[hit]]).all(axis=1)
        first = np.where(values["first_ns"] != 0, values["first_ns"], now_ns)
        last = np.maximum(values["last_ns"], first)
        # flows already in the cache: deltas add up; a flow whose last
        # record took everything starts a new record with these packets
        i, v = idx[hit], values[hit]
        s = self.state
        idle = s["packets"][i] == 0
        s["start_ns"][i] = np.where(idle, np.minimum(np.maximum(s["last_ns"][i], first[hit]),
                                                     last[hit]), s["start_ns"][i])
        s["packets"][i] += v["packets"]
        s["bytes"][i] += v["bytes"]
        s["flags"][i] |= v["tcp_flags"]
        s["last_ns"][i] = np.maximum(s["last_ns"][i], last[hit])
        new = ~hit
        fresh = np.zeros(int(new.sum()), _STATE)
        fresh["packets"], fresh["bytes"] = values["packets"][new], values["bytes"][new]
        fresh["flags"] = values["tcp_flags"][new]
        fresh["start_ns"], fresh["last_ns"] = first[new], last[new]
        self.keys = np.concatenate([self.keys, keys[new]])
        self.state = np.concatenate([s, fresh])
        self._hash = np.concatenate([self._hash, h[new]])

    def expire(self, now_ns: int) -> np.ndarray:
        """The records due at monotonic time now_ns (RECORD rows): flows idle
        for the inactive timeout (their last record; they leave the cache)
        and flows that moved for the active timeout since their record began."""
        s = self.state
        pending = s["packets"] != 0
        idle = (now_ns - s["last_ns"].astype(np.int64)) >= self.inactive_ns
        active = pending & ((now_ns - s["start_ns"].astype(np.int64)) >= self.active_ns)
        due = pending & (idle | active)
        out = records_of(self.keys[due], s[due])
        s["packets"][due] = 0
        s["bytes"][due] = 0
        s["flags"][due] = 0
        keep = ~idle
        if not keep.all():
            self.keys, self.state, self._hash = self.keys[keep], s[keep], self._hash[keep]
        return out

    def flush(self) -> np.ndarray:
        """Every pending record now (at shutdown); the cache is emptied."""
        s = self.state
        pending = s["packets"] != 0
        out = records_of(self.keys[pending], s[pending])
        self.keys, self.state = self.keys[:0], s[:0]
        self._hash = self._hash[:0]
        return out
