"""The kernel-counter checkpoint: the counters the committed rows stand for,
written in the drain's own transaction (acctd/store/database.py says why).

It is kept by slot, so a drain writes what changed rather than the whole
table. A key keeps the slot it got when it first appeared until its map is
next written afresh:
- `checkpoint_keys` has a row per slot (map, slot, the key as six 64-bit
  words); a drain appends the keys new since the last commit. Rows, not
  blobs: DuckDB rewrites a whole row group when it folds its WAL into the
  file, and a table of a few large blobs is one row group, so appending a
  blob rewrote every key;
- `checkpoint_vals` has the counters of CHUNK slots per row (a blob) and a
  bitmap of the slots whose key is still in the map (NULL: all of them); a
  drain rewrites the rows that changed. With every one of 1M flows moved
  that is 16 of the 64 bytes per flow the whole table would be, and nothing
  for a map that stood still.
A key that comes back takes its old slot again. Once half the slots are
dead, the map is written afresh (slots renumbered), so the file holds at
most twice the live table.

What the file holds is known from the previous commit (an Image, in
memory); the Storage adopts the new Images only once its COMMIT returned,
and one that has none (just opened, or its commit failed) writes afresh.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from acctd.errors import AcctError
from acctd.kernel.drain import KeyIndex, as_words, counter_fields, key_hash

CHUNK = 1 << 16   # slots per counter row: large blobs, few rows
KEY_WORDS = 6     # a key is at most six 64-bit words (a flow key is 48 bytes)
_WORDS = ", ".join(f"w{i}" for i in range(KEY_WORDS))


class CheckpointError(AcctError):
    """What the file holds is not a checkpoint of the maps asked for."""


def type_text(t: np.dtype) -> str:
    # descr is stable across runs and names every field, offset padding included
    return str(np.dtype(t).descr)


def counter_type(t: np.dtype) -> np.dtype:
    """The counter fields of a value type, packed: all a delta baseline needs."""
    t = np.dtype(t)
    return np.dtype([(f, t.fields[f][0]) for f in counter_fields(t)])


def pack(vals: np.ndarray) -> np.ndarray:
    out = np.empty(len(vals), counter_type(vals.dtype))
    for f in out.dtype.names:
        out[f] = vals[f]
    return out


def unpack(packed: np.ndarray, t: np.dtype) -> np.ndarray:
    out = np.zeros(len(packed), t)
    for f in packed.dtype.names:
        out[f] = packed[f]
    return out


def key_words(keys: np.ndarray) -> np.ndarray:
    """Keys as (n, KEY_WORDS) little-endian words, zero-padded."""
    size = keys.dtype.itemsize
    if size > 8 * KEY_WORDS:
        raise ValueError(f"a checkpoint key is at most {8 * KEY_WORDS} bytes, not {size}")
    raw = np.zeros((len(keys), 8 * KEY_WORDS), np.uint8)
    raw[:, :size] = np.ascontiguousarray(keys).view(np.uint8).reshape(len(keys), size)
    return raw.view("<u8")


def from_words(words: np.ndarray, t: np.dtype) -> np.ndarray:
    raw = np.ascontiguousarray(words, "<u8").view(np.uint8).reshape(len(words), 8 * KEY_WORDS)
    return np.ascontiguousarray(raw[:, :t.itemsize]).view(t).reshape(len(words))


class Image:
    """One map's checkpoint as the file holds it: every slot's key, counters
    and whether it is live; and which slot each entry of the read it was
    written from (`read`, that read's keys) is in."""

    def __init__(self, keys: np.ndarray, vals: np.ndarray, alive: np.ndarray,
                 read: np.ndarray, read_slots: np.ndarray, index: KeyIndex | None = None):
        self.keys, self.vals, self.alive = keys, vals, alive
        self.read, self.read_slots = read, read_slots
        self._index = index  # of all slots' keys, built when first needed

    @classmethod
    def afresh(cls, keys: np.ndarray, vals: np.ndarray) -> Image:
        n = len(keys)
        return cls(keys, vals, np.ones(n, bool), keys, np.arange(n))

    def slots_of(self, keys: np.ndarray, match: tuple[np.ndarray | None, np.ndarray] | None
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """Each key's slot, -1 for a key the image never held; and the keys'
        hashes when they had to be computed. match: (base, prev), entry i of
        `keys` being entry prev[i] (-1: none) of the read `base` (drain.Delta);
        used when that read is the one this image was written from."""
        if match is not None and match[0] is self.read and len(match[1]) == len(keys):
            prev = match[1]  # the drain joined the two reads already
            if not len(self.read_slots):
                return np.full(len(keys), -1, np.int64), None
            return np.where(prev >= 0, self.read_slots[np.maximum(prev, 0)], -1), None
        n = len(self.keys)
        if (len(keys) == n and self.alive.all()
                and np.array_equal(as_words(keys), as_words(self.keys))):
            return np.arange(n), None  # the same keys in the same order: a quiet table
        h = key_hash(keys)
        if self._index is None:
            self._index = KeyIndex(self.keys)
        return self._index.find(keys, h), h

    def grown(self, keys: np.ndarray, vals: np.ndarray, slots: np.ndarray,
              h: np.ndarray | None) -> Image:
        """The image after a commit of (keys, packed vals) at `slots` (-1:
        appended now, in their order)."""
        new = slots < 0
        n_old, n_new = len(self.keys), int(new.sum())
        at = slots.copy()
        at[new] = np.arange(n_old, n_old + n_new)
        nk = np.concatenate([self.keys, keys[new]]) if n_new else self.keys
        nv = np.zeros(n_old + n_new, vals.dtype)
        nv[at] = vals
        alive = np.zeros(n_old + n_new, bool)
        alive[at] = True
        index = self._index
        if n_new and index is not None:
            index = index.appended(nk, h[new]) if h is not None else None
        return Image(nk, nv, alive, keys, at, index)


class Checkpoint:
    """The checkpoint tables of one Storage, and the Image of each map as
    last committed."""

    def __init__(self):
        self.images: dict[str, Image] = {}

    def write(self, con, sql: Callable, maps: Mapping[str, tuple[np.ndarray, np.ndarray]],
              matched: Mapping[str, tuple[np.ndarray | None, np.ndarray]] | None = None
              ) -> dict[str, Image]:
        """Write the state after this drain (map name -> keys, values) inside
        the open transaction of `con` (statements through `sql`); maps not
        named keep none. matched: map name -> how its keys line up with the
        drain before (Image.slots_of). Returns the Images to adopt once the
        transaction has committed."""
        out: dict[str, Image] = {}
        for name, (keys, vals) in maps.items():
            if len(keys) != len(vals):
                raise ValueError(f"checkpoint {name}: {len(keys)} keys, {len(vals)} values")
            # only the counters: timestamps and flags are not part of a delta baseline
            packed = pack(vals)
            img = self.images.get(name)
            if img is not None and (img.keys.dtype != keys.dtype or img.vals.dtype != packed.dtype):
                img = None
            if img is not None:
                slots, h = img.slots_of(keys, (matched or {}).get(name))
                nxt = img.grown(keys, packed, slots, h)
                # a key given twice (a reaped flow the datapath made again before
                # the read) is written afresh: the entries stay in the order given,
                # which is the order the next drain's deltas find them in
                once = not len(keys) or np.bincount(slots[slots >= 0], minlength=1).max() <= 1
                if once and 2 * int(nxt.alive.sum()) >= len(nxt.keys):
                    self._write_changes(con, sql, name, img, nxt)
                    out[name] = nxt
                    continue
            out[name] = self._write_afresh(con, sql, name, keys, packed)
        # maps no longer named (one scan of each table's map column)
        sql("DELETE FROM checkpoint_keys WHERE NOT list_contains($m, map)", {"m": list(out)})
        sql("DELETE FROM checkpoint_vals WHERE NOT list_contains($m, map)", {"m": list(out)})
        return out

    def _write_afresh(self, con, sql: Callable, name: str, keys: np.ndarray,
                      packed: np.ndarray) -> Image:
        sql("DELETE FROM checkpoint_keys WHERE map = ?", [name])
        sql("DELETE FROM checkpoint_vals WHERE map = ?", [name])
        img = Image.afresh(keys, packed)
        self._append_keys(con, sql, name, keys, 0)
        # always one counter row, so an empty map is remembered as empty rather than missing
        for chunk in range(max(-(-len(keys) // CHUNK), 1)):
            self._put_vals(sql, name, img, chunk)
        return img

    @staticmethod
    def _append_keys(con, sql: Callable, name: str, keys: np.ndarray, first: int) -> None:
        if not len(keys):
            return
        w = key_words(keys)
        batch = {"slot": np.arange(first, first + len(keys), dtype=np.uint64),
                 **{f"w{i}": np.ascontiguousarray(w[:, i]) for i in range(KEY_WORDS)}}
        con.register("acct_ckpt_keys", batch)
        try:
            sql(f"INSERT INTO checkpoint_keys SELECT $m, slot, {_WORDS} FROM acct_ckpt_keys",
                {"m": name})
        finally:
            con.unregister("acct_ckpt_keys")

    @staticmethod
    def _put_vals(sql: Callable, name: str, img: Image, chunk: int) -> None:
        lo, hi = chunk * CHUNK, (chunk + 1) * CHUNK
        alive = img.alive[lo:hi]
        sql("INSERT INTO checkpoint_vals VALUES (?, ?, ?, ?, ?, ?, ?)",
            [name, chunk, len(alive), type_text(img.keys.dtype), type_text(img.vals.dtype),
             np.ascontiguousarray(img.vals[lo:hi]).tobytes(),
             None if alive.all() else np.packbits(alive).tobytes()])

    def _write_changes(self, con, sql: Callable, name: str, old: Image, new: Image) -> None:
        self._append_keys(con, sql, name, new.keys[len(old.keys):], len(old.keys))
        ov, nv = as_words(old.vals), as_words(new.vals)

        def changed(c: int) -> bool:
            s = slice(c * CHUNK, (c + 1) * CHUNK)
            return (min((c + 1) * CHUNK, len(new.keys)) > len(old.keys)  # slots added
                    or not np.array_equal(ov[s], nv[s])
                    or not np.array_equal(old.alive[s], new.alive[s]))
        rows = [c for c in range(-(-len(new.keys) // CHUNK)) if changed(c)]
        if rows:
            # one DELETE, then plain INSERTs: a replace or UPDATE of a large blob
            # costs ten times as much in DuckDB (measured: 17 rows of 1 MiB)
            sql("DELETE FROM checkpoint_vals WHERE map = ? AND list_contains(?, chunk)",
                [name, rows])
        for c in rows:
            self._put_vals(sql, name, new, c)

    def load(self, con, types: Mapping[str, tuple[np.dtype, np.dtype]]
             ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The committed state of the maps named in `types` (name -> key and
        value dtype), their live entries as (keys, values) with the counter
        fields filled and every other field zero. Adopts their Images."""
        parts: dict[str, list] = {}
        for name, chunk, n, kt, vt, vb, ab in con.execute(
                "SELECT map, chunk, n, key_type, val_type, vals, alive FROM checkpoint_vals "
                "ORDER BY map, chunk").fetchall():
            if name not in types:
                continue
            ktype, vtype = np.dtype(types[name][0]), counter_type(types[name][1])
            if kt != type_text(ktype) or vt != type_text(vtype):
                raise CheckpointError(f"checkpoint of {name} has another layout (ABI "
                                      f"changed?); expected {type_text(ktype)}")
            v = np.frombuffer(vb, vtype)
            alive = (np.ones(n, bool) if ab is None else
                     np.unpackbits(np.frombuffer(ab, np.uint8), count=n).astype(bool))
            if len(v) != n or len(parts.setdefault(name, [])) != chunk:
                raise CheckpointError(f"checkpoint of {name} is truncated")
            parts[name].append((v, alive))
        out = {}
        for name, ps in parts.items():
            r = con.execute(f"SELECT slot, {_WORDS} FROM checkpoint_keys WHERE map = ? "
                            "ORDER BY slot", [name]).fetchnumpy()
            vals = np.concatenate([p[0] for p in ps])
            alive = np.concatenate([p[1] for p in ps])
            if not np.array_equal(r["slot"], np.arange(len(vals))):
                raise CheckpointError(f"checkpoint of {name} is truncated")
            words = np.stack([np.asarray(r[f"w{i}"], np.uint64) for i in range(KEY_WORDS)], 1)
            keys = from_words(words, np.dtype(types[name][0]))
            lk, lv = keys[alive], unpack(vals[alive], types[name][1])
            if all(len(p[0]) == CHUNK for p in ps[:-1]):
                # the live entries in slot order are the read the next drain's deltas start from
                self.images[name] = Image(keys, vals.copy(), alive, lk, np.flatnonzero(alive))
            else:  # rows of another CHUNK: the next commit writes the map afresh
                self.images.pop(name, None)
            out[name] = lk, lv
        return out
