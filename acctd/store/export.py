"""The export service's flow caches in DuckDB (table export_cache, schema
v10): one row per open cache entry of each [[export]] table, written in
the drain's transaction, so a kill -9 neither loses the deltas a drain
committed before they were exported nor exports them twice. Each drain
writes only the entries it changed (delete their stored rows, insert
their new state; a new entry has no row to delete): the cost follows the
drain, not the cache.

An IPFIX-over-TCP export also spools the records each drain makes due
(table export_spool, v12), in that drain's transaction, until its
collector has acknowledged them: a collector away across a restart or a
kill -9 gets them when it is back."""

from __future__ import annotations

import numpy as np

from acctd.kernel import abi

KEY_WORDS = abi.FLOW_KEY.itemsize // 8      # the flow key as UBIGINT columns k0..
assert abi.FLOW_KEY.itemsize % 8 == 0
KEYS = [f"k{i}" for i in range(KEY_WORDS)]
VALUES = ("packets", "bytes", "start_ns", "end_ns", "tcp_flags")


def _key_columns(keys: np.ndarray) -> dict[str, np.ndarray]:
    words = np.ascontiguousarray(keys).view("<u8").reshape(len(keys), KEY_WORDS)
    return {k: np.ascontiguousarray(words[:, i]) for i, k in enumerate(KEYS)}


def write(con, exporter: str, changed: np.ndarray, stale: np.ndarray) -> None:
    """Inside the drain's transaction: the entries this drain changed or
    added (RECORD rows, their state now) and the keys whose stored rows
    are stale (changed, or gone from the cache)."""
    if len(stale):
        _delete(con, exporter, stale)
    if len(changed):
        _insert(con, exporter, changed)


def _delete(con, exporter: str, keys: np.ndarray) -> None:
    con.register("acct_export_gone", _key_columns(keys))
    try:
        on = " AND ".join(f"c.{k} = g.{k}" for k in KEYS)
        con.execute(f"DELETE FROM export_cache c USING acct_export_gone g "
                    f"WHERE c.exporter = $x AND {on}", {"x": exporter})
    finally:
        con.unregister("acct_export_gone")


def _insert(con, exporter: str, changed: np.ndarray) -> None:
    rows = {**_key_columns(changed["key"]),
            **{v: np.ascontiguousarray(changed[v]) for v in VALUES}}
    con.register("acct_export_batch", rows)
    try:
        con.execute(f"INSERT INTO export_cache SELECT $x, {', '.join(KEYS)}, "
                    f"{', '.join(VALUES)} FROM acct_export_batch", {"x": exporter})
    finally:
        con.unregister("acct_export_batch")


def load(con, exporter: str, record: np.dtype) -> np.ndarray:
    """The exporter's cache entries as committed (record: RECORD)."""
    got = con.execute(f"SELECT {', '.join(KEYS)}, {', '.join(VALUES)} FROM export_cache "
                      "WHERE exporter = $x", {"x": exporter}).fetchnumpy()
    n = len(got["k0"])
    out = np.zeros(n, record)
    words = np.stack([np.asarray(got[k], np.uint64) for k in KEYS], axis=1) if n else \
        np.zeros((0, KEY_WORDS), np.uint64)
    out["key"] = np.ascontiguousarray(words).view(abi.FLOW_KEY).reshape(n)
    for v in VALUES:
        out[v] = np.asarray(got[v])
    return out


def exporters(con) -> dict[str, int]:
    """exporter -> how many entries it has stored."""
    return dict(con.execute("SELECT exporter, count(*) FROM export_cache GROUP BY exporter"
                            ).fetchall())


def drop(con, exporter: str) -> None:
    con.execute("DELETE FROM export_cache WHERE exporter = $x", {"x": exporter})


def spool(con, exporter: str, seq: int, records: np.ndarray) -> None:
    """A batch of due records (RECORD rows), until acknowledged."""
    con.execute("INSERT INTO export_spool VALUES ($x, $s, $n, $r)",
                {"x": exporter, "s": seq, "n": len(records), "r": records.tobytes()})


def unspool(con, exporter: str, through: int) -> None:
    """The batches up to `through`, acknowledged."""
    con.execute("DELETE FROM export_spool WHERE exporter = $x AND seq <= $s",
                {"x": exporter, "s": through})


def spooled(con, exporter: str, record: np.dtype) -> list[tuple[int, np.ndarray]]:
    """The exporter's batches not acknowledged, in order: (seq, records)."""
    return [(int(seq), np.frombuffer(blob, record).copy()) for seq, blob in con.execute(
        "SELECT seq, records FROM export_spool WHERE exporter = $x ORDER BY seq",
        {"x": exporter}).fetchall()]


def spools(con) -> dict[str, int]:
    """exporter -> how many records it has spooled."""
    return {x: int(n) for x, n in con.execute(
        "SELECT exporter, sum(n) FROM export_spool GROUP BY exporter").fetchall()}


def drop_spool(con, exporter: str) -> None:
    con.execute("DELETE FROM export_spool WHERE exporter = $x", {"x": exporter})
