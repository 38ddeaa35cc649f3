"""Drains into the central PostgreSQL: the outbox's packed rows, COPY'd in
PostgreSQL's binary format (built with numpy, no per-row Python), into
the month partitions of `raw`, in one transaction with the gateway's
shipped_seq. A drain whose seq is not above shipped_seq is already there
(a crash after PostgreSQL's COMMIT and before the outbox's DELETE ships
it again): skipped, so every drain is stored exactly once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from acctd.services.central.schema import LOCK
from acctd.store.rollup import PERIODS, period_start

UTC = dt.timezone.utc
# One drain row as the outbox packs it (acctd.store.interval.columns' columns).
ROW = np.dtype([("unit_oid", "<u4"), ("policy_oid", "<u4"), ("dir", "u1"),
                ("packets", "<u8"), ("bytes", "<u8")])
COLUMNS = ("ts", "gateway_id", "seq", "unit_oid", "policy_oid", "dir", "packets", "bytes")
# A binary COPY tuple of raw: field count, then (length, big-endian value) per column.
_TUPLE = np.dtype([("n", ">i2"),
                   ("l0", ">i4"), ("ts", ">i8"), ("l1", ">i4"), ("gateway_id", ">i2"),
                   ("l2", ">i4"), ("seq", ">i8"), ("l3", ">i4"), ("unit_oid", ">i4"),
                   ("l4", ">i4"), ("policy_oid", ">i8"), ("l5", ">i4"), ("dir", ">i2"),
                   ("l6", ">i4"), ("packets", ">i8"), ("l7", ">i4"), ("bytes", ">i8")])
_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
_TRAILER = b"\xff\xff"
_PG_EPOCH_US = 946_684_800 * 1_000_000   # 2000-01-01 UTC, PostgreSQL's timestamp zero


def pack(rows: Mapping[str, np.ndarray]) -> bytes:
    """A drain's oid-keyed rows as the outbox keeps them."""
    out = np.zeros(len(rows["bytes"]), ROW)
    for k in ROW.names:
        out[k] = rows[k]
    return out.tobytes()


def copy_buffer(gateway_id: int, drains: Iterable[tuple[int, int, bytes]]) -> tuple[bytes, int]:
    """(the COPY ... FORMAT BINARY data, rows) for drains (seq, ts in epoch µs, packed rows)."""
    drains = [(seq, ts_us, np.frombuffer(blob, ROW)) for seq, ts_us, blob in drains]
    # one array filled in place: np.concatenate would turn the fields native-endian
    data = np.empty(sum(len(r) for _, _, r in drains), _TUPLE)
    data["n"] = len(COLUMNS)
    for i, size in enumerate((8, 2, 8, 4, 8, 2, 8, 8)):
        data[f"l{i}"] = size
    at = 0
    for seq, ts_us, r in drains:
        t = data[at:at + len(r)]
        t["ts"] = ts_us - _PG_EPOCH_US
        t["gateway_id"] = gateway_id
        t["seq"] = seq
        for k in ("unit_oid", "policy_oid", "dir", "packets", "bytes"):
            t[k] = r[k]
        at += len(r)
    return _HEADER + data.tobytes() + _TRAILER, len(data)


def month_of(ts: dt.datetime) -> dt.datetime:
    return ts.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(m: dt.datetime) -> dt.datetime:
    return m.replace(year=m.year + m.month // 12, month=m.month % 12 + 1)


def partition_name(m: dt.datetime) -> str:
    return f"raw_{m:%Y%m}"


def ensure_partitions(conn, months: Iterable[dt.datetime]) -> None:
    """The month partitions of `raw` for these months (UTC), made if missing,
    inside the caller's transaction (serialised between gateways)."""
    have = {r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'raw'::regclass").fetchall()}
    missing = [m for m in sorted({month_of(m) for m in months})
               if partition_name(m) not in have]
    if not missing:
        return
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
    for m in missing:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {partition_name(m)} PARTITION OF raw "
                     f"FOR VALUES FROM ('{m.isoformat()}') TO ('{next_month(m).isoformat()}')")


DRAIN = 0   # the outbox kind of a drain's rows
# Other outbox kinds: kind -> store(conn, gateway_id, [(seq, ts µs, payload)]),
# called inside ship()'s transaction (the billing ledger registers its own).
# An outbox row of a kind with no shipper stops shipping: it is never skipped.
SHIPPERS: dict[int, Callable[[object, int, list[tuple[int, int, bytes]]], None]] = {}


class UnknownKind(ValueError):
    pass


def ship(conn, gateway_id: int, drains: Sequence[tuple[int, int, bytes]],
         others: Sequence[tuple[int, int, int, bytes]] = ()) -> tuple[int, int]:
    """Store drains (seq, ts µs, packed rows) and other outbox rows (seq,
    ts µs, kind, payload), in seq order, exactly once, in one transaction:
    returns (the gateway's shipped_seq after, drain rows written)."""
    with conn.transaction():
        shipped = conn.execute("SELECT shipped_seq FROM gateway WHERE id = %s FOR UPDATE",
                               (gateway_id,)).fetchone()[0]
        new = [d for d in drains if d[0] > shipped]
        rest = [o for o in others if o[0] > shipped]
        if not new and not rest:
            return shipped, 0
        n = 0
        if new:
            ensure_partitions(conn, (dt.datetime.fromtimestamp(d[1] / 1e6, UTC) for d in new))
            data, n = copy_buffer(gateway_id, new)
            with conn.cursor().copy(f"COPY raw ({', '.join(COLUMNS)}) FROM STDIN "
                                    "(FORMAT BINARY)") as cp:
                cp.write(data)
        for kind in sorted({o[2] for o in rest}):
            if kind not in SHIPPERS:
                raise UnknownKind(f"the outbox holds rows of kind {kind}, which this acctd "
                                  "cannot ship; they wait")
            SHIPPERS[kind](conn, gateway_id, [(q, t, b) for q, t, k, b in rest if k == kind])
        last = max([d[0] for d in new] + [o[0] for o in rest])
        conn.execute("UPDATE gateway SET shipped_seq = %s, shipped_at = now(), seen = now() "
                     "WHERE id = %s", (last, gateway_id))
    return last, n


def drop_old_partitions(conn, keep_months: int, now: dt.datetime) -> list[str]:
    """Retention: drop the month partitions wholly older than keep_months
    months before now's month; returns their names."""
    cut = month_of(now)
    for _ in range(keep_months):
        cut = cut.replace(year=cut.year - (cut.month == 1), month=(cut.month - 2) % 12 + 1)
    dropped = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
        for (name,) in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'raw'::regclass ORDER BY 1").fetchall():
            m = dt.datetime.strptime(name, "raw_%Y%m").replace(tzinfo=UTC)
            if m < cut:
                conn.execute(f"DROP TABLE {name}")
                dropped.append(name)
    return dropped


# --- totals across gateways -----------------------------------------------------------

def period_bounds(now: dt.datetime, zone) -> dict[str, dt.datetime]:
    return {k: period_start(k, now, zone) for k in PERIODS}


def put_totals(conn, gateway_id: int, rows: Iterable[tuple]) -> None:
    """This gateway's current-period totals (kind, period_start, unit_oid,
    policy_oid, dir, bytes), absolute: written again, they stay right."""
    with conn.transaction():
        conn.cursor().executemany(
            "INSERT INTO quota_total VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT "
            "(unit_oid, kind, period_start, gateway_id, policy_oid, dir) DO UPDATE "
            "SET bytes = excluded.bytes", [(gateway_id, *r) for r in rows])
        conn.execute("NOTIFY acctd_shipped")


def totals(conn, starts: Mapping[str, dt.datetime], units: Sequence[int],
           not_gateway: int | None = None) -> dict[tuple[int, int], dict[str, tuple[int, int]]]:
    """{(unit_oid, policy_oid): {period: (bytes in, bytes out)}} of the current
    periods (starts) on every gateway but not_gateway, for these units."""
    rows = conn.execute(
        "SELECT unit_oid, policy_oid, dir, kind, sum(bytes) FROM quota_total "
        "WHERE unit_oid = ANY(%(units)s) AND gateway_id IS DISTINCT FROM %(gw)s AND ("
        + " OR ".join(f"(kind = '{k}' AND period_start = %({k})s)" for k in PERIODS) +
        ") GROUP BY 1, 2, 3, 4", {**starts, "units": list(units), "gw": not_gateway}
    ).fetchall()
    out: dict[tuple[int, int], dict[str, list[int]]] = {}
    for u, p, d, kind, b in rows:
        cell = out.setdefault((int(u), int(p)), {k: [0, 0] for k in PERIODS})
        cell[kind][int(d)] += int(b)
    return {key: {k: (v[0], v[1]) for k, v in cell.items()} for key, cell in out.items()}
