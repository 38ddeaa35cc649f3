"""Rollups: one drain's counts as rows for the hour, day, week and month it falls in.

Pure (numpy and zoneinfo). Periods are local-time periods of a configured
zone, keyed by the UTC instant they start at, so the autumn's repeated hour
is two buckets (02:00+02:00 and 02:00+01:00 in Europe/Berlin) and a DST
day is 23 or 25 hours long. Weeks start on Monday.

Convention: a drain's counts belong to the period that contains the drain's
end time (the `ts` passed in). A drain interval is at most lookup-delay
long, so traffic near a boundary lands at most one interval late; it is
never split and never counted twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np

UTC = dt.timezone.utc
PERIODS = ("hour", "day", "week", "month")
HOUR, DAY, WEEK, MONTH = range(4)

# Row conventions beyond the configured policies (oids are 1..FFFFFF, so 0 is free):
ALL_TRAFFIC = 0   # policy_oid 0: everything a unit sent/received, whatever its policies
UNATTRIBUTED = 0  # unit_oid 0 (with policy_oid 0): local addresses that matched no unit
# Dropped traffic, per unit and cause (abi.Drop), apart from what was
# accounted: rows with these policy oids (no policy oid has 8 hex digits).
DROPPED = {"block": 0xFFFFFFF0, "fw": 0xFFFFFFF1, "police": 0xFFFFFFF2}

# The period tops (the console's top addresses, ports and VLANs): per local
# address, service port and VLAN, the in/out counts of each day, month and
# year (the periods the tops are asked for). An open period keeps every key
# that moved; once a period is over, only its TOP_KEEP biggest keys of each
# kind stay and the rest are summed into one REST row, so 64k addresses
# cost 64k rows per open period, not per day of history.
BY = ("addr", "port", "vlan")
TOP_PERIODS = ("day", "month", "year")
TOP_KEEP = 1000
REST = 0xFFFFFFFFFFFFFFFF  # key_hi and key_lo of the rest row (no address or slot has it)
BY_COLUMNS = ("keyed_by", "key_hi", "key_lo", "packets_in", "packets_out", "bytes_in", "bytes_out")


def _utc(ts: dt.datetime) -> dt.datetime:
    if ts.tzinfo is None:
        raise ValueError("expected a timezone-aware datetime (the drain clock is UTC)")
    return ts.astimezone(UTC)


def naive_utc(ts: dt.datetime | None) -> dt.datetime | None:
    """UTC without a zone, as the schema's TIMESTAMP columns hold it (a naive
    value is taken to be UTC already)."""
    if ts is None:
        return None
    return (ts.astimezone(UTC) if ts.tzinfo else ts).replace(tzinfo=None)


def _local_midnight(day: dt.date, zone: ZoneInfo) -> dt.datetime:
    """The first instant of a local date, in UTC.

    fold=0 takes the earlier of a repeated midnight; a midnight that falls in
    a spring-forward gap resolves to the transition instant, which is the
    day's first existing instant.
    """
    return dt.datetime.combine(day, dt.time(0), tzinfo=zone).astimezone(UTC)


def period_start(kind: str, ts: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """UTC start of the local `kind` period ("hour", "day", "week", "month",
    "year") containing ts."""
    ts = _utc(ts)
    local = ts.astimezone(zone)
    if kind == "hour":
        # subtract the local minutes rather than rebuild the local time: exact in
        # the repeated hour, where the wall clock alone is ambiguous
        return ts - dt.timedelta(minutes=local.minute, seconds=local.second,
                                 microseconds=local.microsecond)
    day = local.date()
    if kind == "day":
        start = _local_midnight(day, zone)
    elif kind == "week":
        start = _local_midnight(day - dt.timedelta(days=day.weekday()), zone)
    elif kind == "month":
        start = _local_midnight(day.replace(day=1), zone)
    elif kind == "year":
        start = _local_midnight(day.replace(month=1, day=1), zone)
    else:
        raise ValueError(f"expected a period kind {', '.join(PERIODS)}, got {kind!r}")
    if start > ts:  # pragma: no cover - a zone whose day begins after a gap past ts
        start = ts
    return start


def period_end(kind: str, start: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """UTC start of the period after the one starting at `start`."""
    start = _utc(start)
    if kind == "hour":
        nxt = start + dt.timedelta(hours=1)
        # whole-hour offsets make that exact; a half-hour DST shift (Lord Howe)
        # is absorbed by re-flooring the instant half-way into the next hour
        return period_start("hour", nxt + dt.timedelta(minutes=30), zone)
    day = start.astimezone(zone).date()
    if kind == "day":
        return _local_midnight(day + dt.timedelta(days=1), zone)
    if kind == "week":
        return _local_midnight(day + dt.timedelta(days=7), zone)
    if kind == "month":
        y, m = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
        return _local_midnight(dt.date(y, m, 1), zone)
    if kind == "year":
        return _local_midnight(dt.date(day.year + 1, 1, 1), zone)
    raise ValueError(f"expected a period kind {', '.join(PERIODS)}, got {kind!r}")


def periods(ts: dt.datetime, zone: ZoneInfo) -> list[tuple[str, dt.datetime]]:
    """(kind, UTC start) of the hour, day, week and month containing ts."""
    return [(k, period_start(k, ts, zone)) for k in PERIODS]


def label(start: dt.datetime, zone: ZoneInfo) -> str:
    """A period start as local time with its offset: the repeated hour reads
    2026-10-25T02:00:00+02:00, then 2026-10-25T02:00:00+01:00."""
    return _utc(start).astimezone(zone).isoformat()


def to_us(ts: dt.datetime) -> int:
    """Microseconds since the epoch (what DuckDB's TIMESTAMP stores)."""
    d = _utc(ts) - dt.datetime(1970, 1, 1, tzinfo=UTC)
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds


def from_us(us: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=int(us))


@dataclasses.dataclass(frozen=True)
class Rollup:
    """One drain, ready to store.

    raw: unit_oid, policy_oid, dir, packets, bytes (one row per non-zero cell);
    per_period: the same rows once per period (the `rollup` table), with kind
    (index into PERIODS) and start (UTC, microseconds since the epoch) in front.
    """

    ts: dt.datetime
    raw: dict[str, np.ndarray]
    per_period: dict[str, np.ndarray]
    # the period tops' rows (BY_COLUMNS, see `by_key`) once per TOP_PERIODS
    # kind, with kind and start in front; None: this drain writes none
    by_period: dict[str, np.ndarray] | None = None


def cells(counts, unit_oids: np.ndarray, policy_oids: np.ndarray,
          totals: bool = True) -> dict[str, np.ndarray]:
    """A policy.Counts as oid-keyed columns: unit_oid, policy_oid, dir, packets, bytes.

    With totals, each unit's all-traffic row (policy_oid ALL_TRAFFIC) and the
    unattributed row (unit_oid UNATTRIBUTED) are added, so stored totals
    reconcile with the datapath's counters.
    """
    c = counts.columns()
    parts = [(unit_oids[c["unit"]], policy_oids[c["policy"]], c["dir"], c["packets"],
              c["bytes"])]
    if totals:
        u, d = np.nonzero(counts.unit_packets | counts.unit_bytes)
        parts.append((unit_oids[u], np.full(len(u), ALL_TRAFFIC, np.uint32), d,
                      counts.unit_packets[u, d], counts.unit_bytes[u, d]))
        d = np.flatnonzero(counts.unattributed_packets | counts.unattributed_bytes)
        parts.append((np.full(len(d), UNATTRIBUTED, np.uint32),
                      np.full(len(d), ALL_TRAFFIC, np.uint32), d,
                      counts.unattributed_packets[d], counts.unattributed_bytes[d]))
    names = ("unit_oid", "policy_oid", "dir", "packets", "bytes")
    types = (np.uint32, np.uint32, np.uint8, np.uint64, np.uint64)
    return {n: np.concatenate([p[i] for p in parts]).astype(t, copy=False)
            for i, (n, t) in enumerate(zip(names, types))}


def _per_period(columns: dict[str, np.ndarray], kinds, ts: dt.datetime, zone: ZoneInfo
                ) -> dict[str, np.ndarray]:
    n = len(columns["packets"] if "packets" in columns else columns["packets_in"])
    starts = np.array([to_us(period_start(k, ts, zone)) for k in kinds], dtype=np.int64)
    out = {"kind": np.repeat(np.arange(len(kinds), dtype=np.uint8), n),
           "start": np.repeat(starts, n)}
    for k, v in columns.items():
        out[k] = np.tile(v, len(kinds))
    return out


def _summed(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One row per (unit, policy, dir): the store adds each period's rows to
    the existing ones in an update and inserts the rest, which needs unique
    keys. A drain's cells are unique already; rows given by hand (rawdata,
    tests) may not be."""
    u, p, d = columns["unit_oid"], columns["policy_oid"], columns["dir"]
    if len(u) < 2:
        return columns
    order = np.lexsort((d, p, u))
    u, p, d = u[order], p[order], d[order]
    first = np.flatnonzero(np.r_[True, (u[1:] != u[:-1]) | (p[1:] != p[:-1]) | (d[1:] != d[:-1])])
    if len(first) == len(u):
        return columns
    return {"unit_oid": u[first], "policy_oid": p[first], "dir": d[first],
            **{k: np.add.reduceat(v[order], first) for k, v in columns.items()
               if k not in ("unit_oid", "policy_oid", "dir")}}


def rollup(columns: dict[str, np.ndarray], ts: dt.datetime, zone: ZoneInfo,
           by: dict[str, np.ndarray] | None = None) -> Rollup:
    """One drain's oid-keyed columns (see `cells`) -> raw rows and per-period rows;
    with `by` (the period tops' rows, `by_key`), those per TOP_PERIODS kind.

    ts is the drain's end (an injected, timezone-aware clock value); the rows
    go to the hour, day, week and month containing it (see the module doc).
    """
    ts = _utc(ts)
    return Rollup(ts, dict(columns), _per_period(_summed(columns), PERIODS, ts, zone),
                  None if by is None else _per_period(by, TOP_PERIODS, ts, zone))


def _halves(addrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 16) bytes -> big-endian high and low 64-bit halves, native uint64."""
    h = np.ascontiguousarray(addrs, dtype=np.uint8).view(">u8").reshape(-1, 2)
    return h[:, 0].astype(np.uint64), h[:, 1].astype(np.uint64)


def by_key(flow_keys: np.ndarray, flow_vals: np.ndarray, addr_keys: np.ndarray,
           addr_vals: np.ndarray) -> dict[str, np.ndarray]:
    """One drain's counts per local address, service port and VLAN, as BY_COLUMNS
    (keyed_by: index into BY; an address's 16 bytes as key_hi/key_lo, a port's
    or VLAN's acct_ports/acct_vlans slot as key_lo), one row per port or VLAN
    that moved.

    Addresses come from the exact per-address deltas; ports and VLANs from
    the flow deltas, slotted as the kernel slots them (abi.port_slots,
    abi.vlan_slots): the flows are checkpointed, the acct_ports and
    acct_vlans arrays are not, so a crash replays them exactly.
    """
    from acctd.kernel import abi
    parts = []  # (by, key_hi, key_lo, [packets_in, packets_out, bytes_in, bytes_out])
    if len(addr_keys):
        moved = np.flatnonzero(addr_vals["packets"].any(axis=1))  # not drops alone
        hi, lo = _halves(addr_keys["addr"][moved])
        v = addr_vals[moved]
        cols = [v[f][:, d] for f in ("packets", "bytes") for d in (abi.Dir.IN, abi.Dir.OUT)]
        order = np.lexsort((lo, hi))
        hi, lo, cols = hi[order], lo[order], [c[order] for c in cols]
        first = np.flatnonzero(np.r_[True, (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])])
        if len(first) < len(hi):  # a data source named an address the kernel named too
            hi, lo, cols = hi[first], lo[first], [np.add.reduceat(c, first) for c in cols]
        parts.append((0, hi, lo, cols))
    if len(flow_keys):
        d = flow_keys["dir"] & 1
        pk, by = flow_vals["packets"], flow_vals["bytes"]
        # bincount sums in float64: exact while the drain's bytes stay below 2**53 (9 PB)
        exact = float(by.sum(dtype=np.float64)) < 2 ** 53

        def sums(cell, size, rows=None):
            return [_sums(cell, w if rows is None else w[rows], 2 * size, exact).reshape(size, 2)
                    for w in (pk, by)]
        ports = sums(abi.port_slots(flow_keys) * 2 + d, abi.PORT_SLOTS)
        outer, qinq, inner = abi.vlan_slots(flow_keys)
        vlans = sums(outer * 2 + d, 2 * abi.VLAN_SLOTS)
        if len(qinq):
            vlans = [a + b for a, b in zip(vlans, sums(inner * 2 + d[qinq], 2 * abi.VLAN_SLOTS,
                                                       qinq))]
        for k, (p, b) in ((1, ports), (2, vlans)):
            slot = np.flatnonzero(p.any(axis=1))
            parts.append((k, np.zeros(len(slot), np.uint64), slot.astype(np.uint64),
                          [p[slot, 0], p[slot, 1], b[slot, 0], b[slot, 1]]))
    out = {"keyed_by": np.concatenate([np.full(len(p[1]), p[0], np.uint8) for p in parts]
                                      or [np.zeros(0, np.uint8)])}
    for i, n in enumerate(BY_COLUMNS[1:]):
        out[n] = np.concatenate([(p[1], p[2], *p[3])[i] for p in parts]
                                or [np.zeros(0, np.uint64)]).astype(np.uint64, copy=False)
    return out


def _sums(cell: np.ndarray, weights: np.ndarray, size: int, exact: bool) -> np.ndarray:
    """Per cell, the sum of weights (uint64): bincount where exact, else np.add.at."""
    if exact:
        return np.bincount(cell, weights.astype(np.float64), size).astype(np.uint64)
    out = np.zeros(size, np.uint64)
    np.add.at(out, cell, weights.astype(np.uint64))
    return out
