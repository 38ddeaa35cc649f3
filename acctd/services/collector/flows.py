"""Decoded records -> the kernel's columnar flow arrays (pure numpy), so a
collector's traffic goes through the same accounting as a drain's: each
record becomes a flow `out` for a local source address and `in` for a
local destination (both, between two subscribers), renormalised by its
sampling rate, tagged with its data source in the ifindex."""

from __future__ import annotations

import numpy as np

from acctd.kernel import abi
from acctd.model import sources


def to_flows(records: np.ndarray, units, takes: np.ndarray, source: int
             ) -> tuple[np.ndarray, np.ndarray, int]:
    """(FLOW_KEY keys, FLOW_VAL values, records no unit of this source took).

    takes: (n_units,) bool, the units counting from this source."""
    if not len(records):
        return np.zeros(0, abi.FLOW_KEY), np.zeros(0, abi.FLOW_VAL), 0
    out = _local(units.match(records["saddr"]), takes)
    inn = _local(units.match(records["daddr"]), takes)
    pick = np.concatenate([np.flatnonzero(out), np.flatnonzero(inn)])
    d = np.concatenate([np.full(int(out.sum()), abi.Dir.OUT, np.uint8),
                        np.full(int(inn.sum()), abi.Dir.IN, np.uint8)])
    r = records[pick]
    keys = np.zeros(len(r), abi.FLOW_KEY)
    keys["ifindex"] = sources.SOURCE_IFINDEX | source
    keys["dir"] = d
    for k in ("ip_ver", "proto", "tos", "sport", "dport", "saddr", "daddr"):
        keys[k] = r[k]
    vals = np.zeros(len(r), abi.FLOW_VAL)
    rate = r["sampling"].astype(np.uint64)
    vals["packets"] = r["packets"] * rate
    vals["bytes"] = r["bytes"] * rate
    vals["first_ns"] = r["first_ms"] * np.uint64(10**6)
    vals["last_ns"] = r["last_ms"] * np.uint64(10**6)
    vals["tcp_flags"] = r["tcp_flags"]
    return keys, vals, int((~(out | inn)).sum())


def _local(leaf: np.ndarray, takes: np.ndarray) -> np.ndarray:
    return (leaf >= 0) & takes[np.maximum(leaf, 0)]


def compact(keys: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One row per distinct flow key: what memory holds between drains is
    bounded by the flows, not by the records that arrived."""
    if len(keys) < 2:
        return keys, vals
    raw = np.ascontiguousarray(keys).view(np.dtype((np.void, keys.dtype.itemsize)))
    uniq, first, inv = np.unique(raw, return_index=True, return_inverse=True)
    out = np.zeros(len(uniq), abi.FLOW_VAL)
    inv = inv.reshape(-1)
    for f in ("packets", "bytes"):
        np.add.at(out[f], inv, vals[f])
    out["first_ns"] = np.iinfo(np.uint64).max
    np.minimum.at(out["first_ns"], inv, vals["first_ns"])
    np.maximum.at(out["last_ns"], inv, vals["last_ns"])
    np.bitwise_or.at(out["tcp_flags"], inv, vals["tcp_flags"])
    return keys[first], out


def addr_deltas(keys: np.ndarray, vals: np.ndarray, seen_ns: int = 0
                ) -> tuple[np.ndarray, np.ndarray]:
    """The per-address deltas the flows add up to (what a unit's total is
    made from): ADDR_KEY keys and ADDR_VAL values, one per local address.
    seen_ns: their last packet, on the kernel's clock (CLOCK_MONOTONIC), as
    the login service's inactivity timeout reads it: when they arrived."""
    if not len(keys):
        return np.zeros(0, abi.ADDR_KEY), np.zeros(0, abi.ADDR_VAL)
    from acctd.model.policies import local_addrs
    local = np.ascontiguousarray(local_addrs(keys))
    raw = local.view(np.dtype((np.void, 16))).reshape(-1)
    uniq, inv = np.unique(raw, return_inverse=True)
    inv = inv.reshape(-1)
    ak = np.zeros(len(uniq), abi.ADDR_KEY)
    ak["addr"] = np.frombuffer(uniq.tobytes(), np.uint8).reshape(-1, 16)
    av = np.zeros(len(uniq), abi.ADDR_VAL)
    d = keys["dir"].astype(np.intp)
    np.add.at(av["packets"], (inv, d), vals["packets"])
    np.add.at(av["bytes"], (inv, d), vals["bytes"])
    av["last_ns"] = seen_ns
    return ak, av

