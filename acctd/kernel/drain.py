"""Drain the kernel maps into numpy: per-CPU values summed, counters turned
into deltas against the previous drain.

The kernel's counters are monotonic and never reset by user space (a reset
would race with the datapath and lose packets); a delta is the current value
minus the value at the last drain. An entry whose counters went backwards
was evicted and re-created (LRU flow table), so its whole value is new.
Everything here is vectorised: no Python work per entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from acctd.kernel.syscalls import Map



def reduce_percpu(vals: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Combine per-CPU copies (shape (n, ncpus)) into one value per entry,
    into `out` (shape (n,)) if given.

    Works on a uint64 word view, one vectorised pass per CPU: counters add,
    first_ns takes the earliest non-zero, last_ns the largest, flag words
    and the per-CPU cached class OR (it is user space's to know, not to read
    back from here)."""
    if vals.ndim == 1:
        if out is None:
            return vals
        out[:] = vals
        return out
    n, ncpus = vals.shape
    dt = vals.dtype
    nw = dt.itemsize // 8
    w = vals.view(np.uint64).reshape(n, ncpus, nw)
    if out is None:
        out = np.empty(n, dt)
    o = out.view(np.uint64).reshape(n, nw)
    o[:] = w[:, 0, :]
    for cpu in range(1, ncpus):
        c = w[:, cpu, :]
        for op, lo, hi in _word_ops(dt):
            if op == "sum":
                o[:, lo:hi] += c[:, lo:hi]
            elif op == "max":
                np.maximum(o[:, lo:hi], c[:, lo:hi], out=o[:, lo:hi])
            elif op == "or":
                np.bitwise_or(o[:, lo:hi], c[:, lo:hi], out=o[:, lo:hi])
            elif op == "min_nonzero":
                a, b = o[:, lo], c[:, lo]
                o[:, lo] = np.where((a == 0) | ((b != 0) & (b < a)), b, a)
    return out


@cache
def _word_ops(dt: np.dtype) -> list[tuple[str, int, int]]:
    """(operation, first word, end word) runs over a value's u64 words."""
    ops: list[tuple[str, int, int]] = []
    for name in dt.names:
        ftype, off = dt.fields[name][:2]
        lo, hi = off // 8, (off + ftype.itemsize + 7) // 8
        if name == "first_ns":
            op = "min_nonzero"
        elif name == "last_ns":
            op = "max"
        elif name in ("tcp_flags", "cls", "gen", "pad0"):
            op = "or"
        else:
            op = "sum"
        if ops and ops[-1][0] == op and ops[-1][2] >= lo:
            ops[-1] = (op, ops[-1][1], max(hi, ops[-1][2]))
        elif not (ops and ops[-1][2] > lo):
            ops.append((op, lo, hi))
    return ops


def read(m: Map) -> tuple[np.ndarray, np.ndarray]:
    """All entries of a map with per-CPU values reduced: (keys, values)."""
    return m.read_all(reduce_percpu if m.percpu else None)


# Fields that are monotonic counters (delta-able) per value type.
def counter_fields(dt: np.dtype) -> list[str]:
    return [n for n in dt.names
            if n in ("packets", "bytes", "unattr_packets", "unattr_bytes",
                     "drop_packets", "drop_bytes", "health", "health_bytes")]


def key_hash(keys: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each key, for joining two drains by key."""
    if len(keys) == 0:
        return np.zeros(0, np.uint64)
    raw = np.ascontiguousarray(keys).view(np.uint8).reshape(len(keys), -1)
    width = raw.shape[1]
    if width % 8:
        raw = np.pad(raw, ((0, 0), (0, 8 - width % 8)))
    words = raw.view(np.uint64)
    h = np.full(len(keys), 0x9E3779B97F4A7C15, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(words.shape[1]):
            h ^= words[:, i]
            h *= np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(31)
    return h


def as_words(keys: np.ndarray) -> np.ndarray:
    """Each element (a key, a value) as a row of the widest words its size
    allows, for comparing and gathering whole elements (six words of a flow
    key, not 48 bytes: eight times fewer)."""
    size = keys.dtype.itemsize
    word = next(w for w in (np.uint64, np.uint32, np.uint16, np.uint8)
                if size % np.dtype(w).itemsize == 0)
    return np.ascontiguousarray(keys).view(word).reshape(len(keys), size // np.dtype(word).itemsize)


class KeyIndex:
    """Where each key of a set is, by its 64-bit hash: joins two drains by
    key. Lookups sort their keys' hashes first, so the binary searches walk
    the table in order: four times faster than at random at 1M keys."""

    def __init__(self, keys: np.ndarray, h: np.ndarray | None = None):
        self.keys = keys
        h = key_hash(keys) if h is None else h
        order = np.argsort(h)
        hs = h[order]
        if len(hs) > 1 and (hs[1:] == hs[:-1]).any():
            # a key held twice (or two sharing a hash): the first one is found
            order = np.argsort(h, kind="stable")
            hs = h[order]
        self._sorted, self._order = hs, order

    def find(self, keys: np.ndarray, h: np.ndarray) -> np.ndarray:
        """Each key's index in the set (h: key_hash(keys)), -1 where absent."""
        out = np.full(len(keys), -1, np.int64)
        n = len(self._sorted)
        if not n or not len(keys):
            return out
        q = np.argsort(h)
        pos = np.minimum(np.searchsorted(self._sorted, h[q]), n - 1)
        hit = self._sorted[pos] == h[q]
        at, cand = q[hit], self._order[pos[hit]]
        # the whole key, not the hash: a collision is not found, never wrongly found
        # (rows gathered as words: gathering a structured dtype is three times slower)
        same = (as_words(keys)[at] == as_words(self.keys)[cand]).all(axis=1)
        out[at[same]] = cand[same]
        return out

    def appended(self, keys: np.ndarray, h_new: np.ndarray) -> KeyIndex:
        """The index of `keys`, which are this set's keys and then new ones
        (their hashes h_new), without sorting the old ones again."""
        idx = KeyIndex.__new__(KeyIndex)
        idx.keys = keys
        at = np.arange(len(self.keys), len(keys))
        o = np.argsort(h_new, kind="stable")
        pos = np.searchsorted(self._sorted, h_new[o], side="right")
        idx._sorted = np.insert(self._sorted, pos, h_new[o])
        idx._order = np.insert(self._order, pos, at[o])
        return idx


@dataclass
class Delta:
    keys: np.ndarray     # entries whose counters moved
    values: np.ndarray   # their deltas (non-counter fields: current value)
    # How the whole read lines up with the read before it, so the checkpoint
    # need not join them by key a second time: entry i of the read is entry
    # prev[i] of `base`, that earlier read's keys (-1: new). None: no earlier read.
    base: np.ndarray | None = None
    prev: np.ndarray | None = None


class Deltas:
    """Turns successive reads of one keyed map into per-entry deltas. It keeps
    the arrays it is given (a read's own, or a checkpoint's): the caller must
    not change them afterwards."""

    def __init__(self):
        self._keys: np.ndarray | None = None
        self._vals: np.ndarray | None = None
        self._index: KeyIndex | None = None

    @property
    def previous(self) -> tuple[np.ndarray, np.ndarray] | None:
        return None if self._keys is None else (self._keys, self._vals)

    def seed(self, keys: np.ndarray, vals: np.ndarray) -> None:
        """Start from a known state (e.g. a checkpoint from the database)."""
        self._set(keys, vals)

    def _set(self, keys: np.ndarray, vals: np.ndarray, h: np.ndarray | None = None) -> None:
        self._keys, self._vals = keys, vals
        self._index = KeyIndex(keys, h)

    def update(self, keys: np.ndarray, vals: np.ndarray) -> Delta:
        """The deltas of a new read against the previous one, which it then becomes."""
        fields = counter_fields(vals.dtype)
        delta = vals.copy()
        h = key_hash(keys)
        base = self._keys
        prev_idx = np.full(len(keys), -1, np.int64)
        if base is not None and len(base) and len(keys):
            prev_idx = self._index.find(keys, h)
            hit = prev_idx >= 0
            # gathered as words: a structured dtype's gather is three times slower
            prev = as_words(self._vals)[np.where(hit, prev_idx, 0)].view(vals.dtype)
            prev = prev.reshape(len(keys))
            for f in fields:
                cur, old = vals[f], prev[f]
                # any counter going backwards -> the entry was re-created
                grew = hit & (cur >= old).reshape(len(keys), -1).all(axis=1)
                d = delta[f]
                d[grew] = cur[grew] - old[grew]
        moved = np.zeros(len(keys), dtype=bool)
        for f in fields if len(keys) else ():  # reshape(0, -1) is ambiguous
            moved |= (delta[f].reshape(len(keys), -1) != 0).any(axis=1)
        self._set(keys, vals, h)
        if moved.all():  # a busy table: no copy of it
            return Delta(keys, delta, base, prev_idx)
        return Delta(keys[moved], delta[moved], base, prev_idx)

    def forget(self, keys: np.ndarray) -> None:
        """Drop entries user space deleted (reaped flows) from the baseline."""
        if self._keys is None or not len(keys):
            return
        gone = np.isin(key_hash(self._keys), key_hash(keys))
        self._set(self._keys[~gone], self._vals[~gone])


def array_delta(cur: np.ndarray, prev: np.ndarray | None) -> np.ndarray:
    """Delta of an array map (index = key) against the previous read."""
    if prev is None:
        return cur.copy()
    out = cur.copy()
    for f in counter_fields(cur.dtype):
        out[f] = cur[f] - prev[f]
    return out
