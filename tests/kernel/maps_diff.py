"""Snapshots of every acctd map and the exact change between two of them,
in a plain form fixtures can state by hand."""

from __future__ import annotations

import numpy as np

from acctd.kernel import abi, drain
from acctd.model.addresses import format_addr

_FLOW_KEY_FIELDS = ("ifindex", "dir", "ip_ver", "proto", "tos", "vlan_outer", "vlan_inner",
                    "sport", "dport")


def snapshot(dp) -> dict:
    snap = {}
    for name in ("acct_addrs", "acct_flows", "acct_vlans", "acct_ports", "acct_ifaces"):
        snap[name] = drain.read(dp.maps[name])
    return snap


def _rows(name, keys, vals):
    out = {}
    for k, v in zip(keys, vals):
        if name == "acct_addrs":
            key = format_addr(k["addr"])
        elif name == "acct_flows":
            key = tuple(int(k[f]) for f in _FLOW_KEY_FIELDS) + (
                format_addr(k["saddr"]), format_addr(k["daddr"]))
        else:
            key = int(k)
        out[key] = v
    return out


def _moved(before, after) -> np.ndarray:
    """Indexes into `after` of entries whose counters differ from `before`."""
    keys_a, vals_a = after
    keys_b, vals_b = before
    fields = drain.counter_fields(vals_a.dtype)
    if keys_a.dtype == np.uint32:  # array map: same index, same slot
        idx = np.zeros(len(vals_a), bool)
        for f in fields:
            idx |= (vals_a[f] != vals_b[f]).reshape(len(vals_a), -1).any(axis=1)
        return np.flatnonzero(idx)
    d = drain.Deltas()
    d.seed(keys_b, vals_b)
    moved = d.update(keys_a, vals_a)
    if not len(moved.keys):
        return np.zeros(0, np.int64)
    pos = {bytes(k): i for i, k in enumerate(keys_a.view(np.uint8).reshape(len(keys_a), -1))}
    return np.array([pos[bytes(k)] for k in moved.keys.view(np.uint8).reshape(len(moved.keys), -1)],
                    dtype=np.int64)


def changes(before: dict, after: dict) -> dict:
    """{map: {key: {field: delta}}} with only the fields and entries that moved."""
    out = {}
    for name in after:
        idx = _moved(before[name], after[name])
        if not len(idx):
            continue
        keys_a, vals_a = after[name]
        a = _rows(name, keys_a[idx], vals_a[idx])
        b = _rows(name, *before[name]) if keys_a.dtype != np.uint32 else \
            _rows(name, before[name][0][idx], before[name][1][idx])
        moved = {}
        for key, v in a.items():
            old = b.get(key)
            fields = {}
            for f in drain.counter_fields(v.dtype):
                d = np.asarray(v[f], dtype=np.int64) - (np.asarray(old[f], dtype=np.int64) if old is not None else 0)
                if np.any(d):
                    fields[f] = d.tolist() if d.ndim else int(d)
            if fields:
                moved[key] = fields
        if moved:
            out[name] = moved
    return out


def health(**named) -> list[int]:
    """A health vector with the named counters set, for expectations."""
    vec = [0] * abi.HEALTH_MAX
    for n, v in named.items():
        vec[abi.Health[n.upper()]] = v
    return vec
