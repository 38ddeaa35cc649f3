"""The `monitor` table (NeTAMS `monitor to storage`): one row per flow of a
monitored unit per drain, with the remote peer, so "who downloaded what from
where" has an answer. Rows are drain deltas, like `raw`: sums over rows
count every byte once.

flow_rows() is pure numpy; write(), prune() and query() are the SQL.
Addresses are stored as two big-endian 64-bit halves of the 16-byte form
(IPv4 as ::ffff:a.b.c.d), so a peer prefix is a range and sorts as one.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from acctd.kernel import abi
from acctd.model.addresses import format_addrs, parse_addr, parse_prefix
from acctd.store.rollup import naive_utc

PRUNE_STEP = 50_000   # rows retention deletes per drain at most: a long outage catches up in steps

# the batch's columns (the table, acctd/store/migrations.py _v6, has ts and
# first/last as TIMESTAMPs), and their numpy types
COLUMNS = {
    "unit_oid": np.uint32, "dir": np.uint8, "proto": np.uint8, "ifindex": np.uint32,
    "local_hi": np.uint64, "local_lo": np.uint64, "local_port": np.uint16,
    "remote_hi": np.uint64, "remote_lo": np.uint64, "remote_port": np.uint16,
    "packets": np.uint64, "bytes": np.uint64, "first_us": np.int64, "last_us": np.int64,
}


def _halves(addrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 16) bytes -> big-endian high and low 64-bit halves, native uint64."""
    h = np.ascontiguousarray(addrs, dtype=np.uint8).view(">u8").reshape(-1, 2)
    return h[:, 0].astype(np.uint64), h[:, 1].astype(np.uint64)


def flow_rows(keys: np.ndarray, values: np.ndarray, unit_oids: np.ndarray, *,
              wall_us: int, mono_ns: int) -> dict[str, np.ndarray]:
    """The monitor rows of a drain's flows (abi.FLOW_KEY / FLOW_VAL deltas),
    each flow's local unit oid given. The local side is the source of an
    "out" flow and the destination of an "in" one. first/last: the kernel's
    monotonic first_ns/last_ns put on the wall clock by the pair
    (wall_us, mono_ns) read together; a time never seen (0) is the drain's."""
    out = keys["dir"] == abi.Dir.OUT
    local = np.where(out[:, None], keys["saddr"], keys["daddr"])
    remote = np.where(out[:, None], keys["daddr"], keys["saddr"])
    lhi, llo = _halves(local)
    rhi, rlo = _halves(remote)
    ported = np.isin(keys["proto"], (6, 17))   # ports only mean ports for TCP and UDP

    def wall(ns: np.ndarray) -> np.ndarray:
        ns = ns.astype(np.int64)
        return np.where(ns > 0, wall_us - (mono_ns - ns) // 1000, wall_us)
    rows = {
        "unit_oid": unit_oids, "dir": keys["dir"], "proto": keys["proto"],
        "ifindex": keys["ifindex"], "local_hi": lhi, "local_lo": llo,
        "local_port": np.where(ported, np.where(out, keys["sport"], keys["dport"]), 0),
        "remote_hi": rhi, "remote_lo": rlo,
        "remote_port": np.where(ported, np.where(out, keys["dport"], keys["sport"]), 0),
        "packets": values["packets"], "bytes": values["bytes"],
        "first_us": wall(values["first_ns"]), "last_us": wall(values["last_ns"]),
    }
    return {k: np.ascontiguousarray(rows[k], dtype=t) for k, t in COLUMNS.items()}


def write(con, ts_us: int, rows: dict[str, np.ndarray]) -> int:
    """Insert the rows in one statement (numpy arrays registered as a
    relation, no Python loop); returns how many."""
    n = len(rows["unit_oid"])
    if not n:
        return 0
    con.register("acct_monitor_batch", rows)
    try:
        con.execute("INSERT INTO monitor SELECT make_timestamp($ts), unit_oid, dir, proto, "
                    "ifindex, local_hi, local_lo, local_port, remote_hi, remote_lo, "
                    "remote_port, packets, bytes, make_timestamp(first_us), "
                    "make_timestamp(last_us) FROM acct_monitor_batch", {"ts": ts_us})
    finally:
        con.unregister("acct_monitor_batch")
    return n


def prune(con, cut_us: int, step: int = PRUNE_STEP) -> int:
    """Delete at most `step` of the rows older than cut_us (the oldest
    first); returns how many went. Bounded so one drain after a long stop
    does not spend its transaction deleting months."""
    before = con.execute("SELECT count(*) FROM monitor WHERE ts < make_timestamp($c)",
                         {"c": cut_us}).fetchall()[0][0]
    if not before:
        return 0
    if before <= step:
        con.execute("DELETE FROM monitor WHERE ts < make_timestamp($c)", {"c": cut_us})
        return before
    con.execute("DELETE FROM monitor WHERE rowid IN (SELECT rowid FROM monitor WHERE "
                "ts < make_timestamp($c) ORDER BY ts LIMIT $n)", {"c": cut_us, "n": step})
    return step


def prefix_range(prefix: str) -> tuple[int, int, int, int]:
    """(hi, lo) of the first and of the last address of a prefix."""
    if "/" in prefix:
        net, plen = parse_prefix(prefix, strict=False)
    else:
        net, plen = parse_addr(prefix), 128
    first = int.from_bytes(net, "big")
    host = (1 << (128 - plen)) - 1
    first &= ~host
    last = first | host
    m = (1 << 64) - 1
    return first >> 64, first & m, last >> 64, last & m


def query(con, unit_oids: list[int], *, peer: str | None = None, port: int | None = None,
          since: dt.datetime | None = None, until: dt.datetime | None = None,
          top: int | None = None) -> list[dict]:
    """Per remote peer, remote port and protocol: bytes and packets in and
    out, flows, first and last time, the biggest first. `peer` is an address
    or prefix of the remote side, `port` either side's port, since/until
    bound the drain time (since included, until not)."""
    where, params = ["list_contains($oids, unit_oid)"], {"oids": [int(o) for o in unit_oids]}
    if peer is not None:
        ahi, alo, bhi, blo = prefix_range(peer)
        where.append("(remote_hi > $ahi OR (remote_hi = $ahi AND remote_lo >= $alo)) AND "
                     "(remote_hi < $bhi OR (remote_hi = $bhi AND remote_lo <= $blo))")
        params.update(ahi=ahi, alo=alo, bhi=bhi, blo=blo)
    if port is not None:
        where.append("(remote_port = $port OR local_port = $port)")
        params["port"] = port
    if since is not None:
        where.append("ts >= $since")
        params["since"] = naive_utc(since)
    if until is not None:
        where.append("ts < $until")
        params["until"] = naive_utc(until)
    limit = "" if top is None else f"LIMIT {int(top)}"
    d_in, d_out = int(abi.Dir.IN), int(abi.Dir.OUT)
    rows = con.execute(f"""
        SELECT remote_hi, remote_lo, remote_port, proto,
               sum(bytes) FILTER (WHERE dir = {d_in})::UBIGINT AS bytes_in,
               sum(bytes) FILTER (WHERE dir = {d_out})::UBIGINT AS bytes_out,
               sum(packets) FILTER (WHERE dir = {d_in})::UBIGINT AS packets_in,
               sum(packets) FILTER (WHERE dir = {d_out})::UBIGINT AS packets_out,
               count(*) AS rows, min(first) AS first, max(last) AS last
        FROM monitor WHERE {' AND '.join(where)}
        GROUP BY remote_hi, remote_lo, remote_port, proto
        ORDER BY sum(bytes) DESC, remote_hi, remote_lo, remote_port, proto {limit}""",
                       params).fetchall()
    if not rows:
        return []
    halves = np.array([(r[0], r[1]) for r in rows], dtype=">u8")
    peers = format_addrs(halves.view(np.uint8).reshape(-1, 16))
    return [{"peer": str(p), "port": r[2], "proto": r[3],
             "bytes_in": r[4] or 0, "bytes_out": r[5] or 0,
             "packets_in": r[6] or 0, "packets_out": r[7] or 0, "rows": r[8],
             "first": r[9].replace(tzinfo=dt.timezone.utc).isoformat(),
             "last": r[10].replace(tzinfo=dt.timezone.utc).isoformat()}
            for p, r in zip(peers, rows)]


def count(con) -> int:
    return con.execute("SELECT count(*) FROM monitor").fetchall()[0][0]
