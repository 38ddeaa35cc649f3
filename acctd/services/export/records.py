"""The exporter's flow cache: drained flow deltas in, flow records out.

The kernel's flow table only counts; what a collector calls a flow record
is made here. Each drain's deltas are added to the cache entry of their
flow. An entry is exported as a record when it has moved for an active
timeout (and again at every active timeout while it keeps moving), and a
last time when it has been idle for the inactive timeout, after which it
is forgotten. A record carries the bytes and packets since the flow's
previous record, so the records of a flow add up to exactly what acctd
counted for it. Everything is vectorised: no Python work per flow.

The cache remembers which entries changed since `changes()` was last
asked (and which left), so the exporter stores only those in the drain's
transaction (acctd/store/export.py).

Times are the kernel's CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_coarse_ns);
the encoders turn them into epoch time and sysUptime.
"""

from __future__ import annotations

import numpy as np

from acctd.kernel import abi
from acctd.kernel.drain import key_hash

# A cache entry, and the flow record it gives: the kernel's flow key and
# what the flow moved since its previous record (native order; the
# encoders write big-endian).
RECORD = np.dtype([
    ("key", abi.FLOW_KEY), ("packets", "u8"), ("bytes", "u8"), ("start_ns", "u8"),
    ("end_ns", "u8"), ("tcp_flags", "u4"), ("pad", "u4"),
])


CLEAN, CHANGED, NEW = 0, 1, 2     # an entry against its stored row


class FlowCache:
    """Flows seen within the inactive timeout, with what they have moved
    since their last record. `active_ns` and `inactive_ns` are the timeouts."""

    def __init__(self, active_ns: int, inactive_ns: int):
        self.active_ns, self.inactive_ns = active_ns, inactive_ns
        self.entries = np.zeros(0, RECORD)
        self._hash = np.zeros(0, np.uint64)
        # since changes(): each entry CLEAN, CHANGED (stored before) or NEW
        # (never stored: nothing to delete); the stored keys that left
        self._state = np.zeros(0, np.uint8)
        self._gone: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.entries)

    def restore(self, entries: np.ndarray, now_ns: int) -> None:
        """The entries stored by an earlier process. After a reboot the
        monotonic clock starts again: times ahead of now become now, so
        the timeouts still run."""
        entries = entries.copy()
        for f in ("start_ns", "end_ns"):
            entries[f] = np.minimum(entries[f], now_ns)
        self.entries, self._hash = entries, key_hash(np.ascontiguousarray(entries["key"]))
        self._state, self._gone = np.zeros(len(entries), np.uint8), []

    def changes(self) -> tuple[np.ndarray, np.ndarray]:
        """(the entries changed or new since the last call, as they are now;
        the keys whose stored rows are stale: changed or gone), and start
        counting again."""
        changed = self.entries[self._state != CLEAN]
        stale = [self.entries["key"][self._state == CHANGED], *self._gone]
        self._state[:] = CLEAN
        self._gone = []
        return changed, np.concatenate(stale)

    def add(self, keys: np.ndarray, values: np.ndarray, now_ns: int) -> None:
        """One drain's deltas (abi.FLOW_KEY, abi.FLOW_VAL), drained at
        monotonic time now_ns. A drain holds each key once."""
        if not len(keys):
            return
        h = key_hash(keys)
        first = np.where(values["first_ns"] != 0, values["first_ns"], now_ns)
        last = np.maximum(values["last_ns"], first)
        hit = np.zeros(len(keys), bool)
        if len(self.entries):
            order = np.argsort(self._hash, kind="stable")
            idx = order[np.minimum(np.searchsorted(self._hash[order], h), len(order) - 1)]
            hit = self._hash[idx] == h
            kb = keys.view(np.uint8).reshape(len(keys), -1)
            cb = np.ascontiguousarray(self.entries["key"]).view(np.uint8).reshape(
                len(self.entries), -1)
            hit[hit] = (kb[hit] == cb[idx[hit]]).all(axis=1)
            # flows already in the cache: deltas add up; a flow whose last
            # record took everything starts a new record with these packets
            i, v = idx[hit], values[hit]
            e = self.entries
            idle = e["packets"][i] == 0
            e["start_ns"][i] = np.where(idle, np.minimum(np.maximum(e["end_ns"][i], first[hit]),
                                                         last[hit]), e["start_ns"][i])
            e["packets"][i] += v["packets"]
            e["bytes"][i] += v["bytes"]
            e["tcp_flags"][i] |= v["tcp_flags"]
            e["end_ns"][i] = np.maximum(e["end_ns"][i], last[hit])
            self._state[i] = np.maximum(self._state[i], CHANGED)
        new = np.flatnonzero(~hit) if hit.any() else slice(None)
        fresh = np.zeros(len(keys) - int(hit.sum()), RECORD)
        fresh["key"] = keys[new]
        fresh["packets"], fresh["bytes"] = values["packets"][new], values["bytes"][new]
        fresh["tcp_flags"] = values["tcp_flags"][new]
        fresh["start_ns"], fresh["end_ns"] = first[new], last[new]
        if len(self.entries):
            self.entries = np.concatenate([self.entries, fresh])
            self._hash = np.concatenate([self._hash, h[new]])
            self._state = np.concatenate([self._state, np.full(len(fresh), NEW, np.uint8)])
        else:
            self.entries, self._hash = fresh, h[new]
            self._state = np.full(len(fresh), NEW, np.uint8)

    def expire(self, now_ns: int) -> np.ndarray:
        """The records due at monotonic time now_ns (RECORD rows): flows idle
        for the inactive timeout (their last record; they leave the cache)
        and flows that moved for the active timeout since their record began."""
        e = self.entries
        pending = e["packets"] != 0
        idle = (now_ns - e["end_ns"].astype(np.int64)) >= self.inactive_ns
        active = pending & ((now_ns - e["start_ns"].astype(np.int64)) >= self.active_ns)
        due = pending & (idle | active)
        if idle.all():          # everything leaves: no copies needed
            self._leave(np.ones(len(e), bool))
            return e if due.all() else e[due]
        out = e[due]
        e["packets"][due] = 0
        e["bytes"][due] = 0
        e["tcp_flags"][due] = 0
        self._state[due] = np.maximum(self._state[due], CHANGED)
        if idle.any():
            self._leave(idle)
        return out

    def flush(self) -> np.ndarray:
        """Every pending record now (at shutdown); the cache is emptied."""
        e = self.entries
        self._leave(np.ones(len(e), bool))
        return e[e["packets"] != 0]

    def _leave(self, out: np.ndarray) -> None:
        """The entries where `out` is set leave the cache."""
        e = self.entries
        if out.any():
            self._gone.append(np.ascontiguousarray(e["key"][out & (self._state != NEW)]))
        keep = ~out
        self.entries, self._hash, self._state = e[keep], self._hash[keep], self._state[keep]
