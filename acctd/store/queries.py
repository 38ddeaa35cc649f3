"""Report queries over a Storage handle (NeTAMS show units, policies, list,
stat): shared by the daemon and `acctctl --db`, which give the same answers
with the daemon stopped. `model` is what names units and policies: the
daemon's snapshot, or a Config read from the file (both have units,
policies and plan)."""

from __future__ import annotations

import datetime as dt
import json

from acctd.errors import BadRequest
from acctd.store import percentile, rollup
from acctd.store.rollup import to_us


def _policy_name(model, oid: int) -> str:
    if oid == rollup.ALL_TRAFFIC:
        return "(all)"
    for cause, d in rollup.DROPPED.items():
        if oid == d:
            return f"(dropped: {cause})"
    if model is not None:
        i = model.policies.by_oid.get(f"{oid:06X}")
        if i is not None:
            return model.policies.policies[i].name
    return f"{oid:06X}"


def report_units(units) -> list[dict]:
    """The units (the daemon's give user units their session addresses)."""
    from acctd.model.addresses import format_addr, format_prefix
    return [{"name": u.name, "oid": u.oid, "type": u.type, "email": u.email,
             "addrs": [format_addr(a) for a in u.addrs],
             "nets": [format_prefix(*n) for n in u.nets], "mac": u.mac,
             "parents": list(u.parents), "acct_policy": list(u.acct_policy)}
            for u in units]


def filter_units(rows: list[dict], f: dict) -> list[dict]:
    """`acctctl units` filters: type, name and email (substring), policy."""
    out = rows
    if f.get("type"):
        out = [u for u in out if u["type"] == f["type"]]
    if f.get("name"):
        out = [u for u in out if f["name"] in u["name"]]
    if f.get("email"):
        out = [u for u in out if f["email"] in (u["email"] or "")]
    if f.get("policy"):
        out = [u for u in out if any(p.lstrip("!%") == f["policy"] for p in u["acct_policy"])]
    if f.get("sys_policy"):  # NeTAMS `show units syspolicy whereset`
        out = [u for u in out if u.get("sys_policy")]
    return out


def report_policies(model) -> list[dict]:
    """The policies with their targets as written (an inline table as JSON)."""
    return [{"name": p.name, "oid": p.oid, "target": p.target if isinstance(p.target, str)
             else json.dumps(p.target, default=dict), "hidden": p.hidden}
            for p in model.policies]


def report_list(storage, model, unit: str, now: dt.datetime, checks=None, matches=None) -> dict:
    """NeTAMS `show list full`: per policy and direction, flow/hour/day/week/month;
    with the daemon's counters, per acct entry its checks and matches (flows,
    since the daemon started: in memory, as in NeTAMS)."""
    i = model.units.find(unit)
    u = model.units.units[i]
    rows = storage.unit_totals(u.oid, now)
    out = []
    for r in rows:
        out.append({"policy": _policy_name(model, r["policy_oid"]),
                    "dir": "in" if r["dir"] == 0 else "out",
                    **{k: {"packets": r[k][0], "bytes": r[k][1]}
                       for k in ("flow", "hour", "day", "week", "month")}})
    rep = {"unit": u.name, "oid": u.oid, "policies": out}
    if checks is not None:
        plan = model.plan
        lo, hi = plan.entry_ptr[i], plan.entry_ptr[i + 1]
        rep["checks"] = [{"policy": model.policies.policies[plan.entry_policy[e]].name,
                          "check": int(checks[e]), "match": int(matches[e])} for e in range(lo, hi)]
    return rep


def report_list_all(storage, model, now: dt.datetime, checks=None, matches=None) -> dict:
    """NeTAMS `show list` without a unit: every unit, in config order."""
    return {"units": [report_list(storage, model, u.oid, now, checks, matches)
                      for u in model.units.units]}


def report_stat(storage, model, unit: str, period: str, now: dt.datetime) -> dict:
    """NeTAMS `show stat`: hourly rows of the week or month."""
    u = model.units.units[model.units.find(unit)]
    rows = storage.stat(u.oid, period, now)
    return {"unit": u.name, "oid": u.oid, "period": period,
            "rows": [{"hour": r["label"], "policy": _policy_name(model, r["policy_oid"]),
                      "dir": "in" if r["dir"] == 0 else "out",
                      "packets": r["packets"], "bytes": r["bytes"]} for r in rows]}


def period_figures(storage, period: str, start: dt.datetime) -> dict[int, dict[tuple[int, int], int]]:
    """Bytes of every unit in the day or week starting at `start` (UTC), from
    the rollups: {unit_oid: {(policy_oid, dir): bytes}}, dir 0 in, 1 out."""
    rows = storage.con.execute(
        "SELECT unit_oid, policy_oid, dir, bytes FROM rollup WHERE kind = $k "
        "AND period_start = make_timestamp($s)", {"k": period, "s": to_us(start)}).fetchall()
    out: dict[int, dict[tuple[int, int], int]] = {}
    for unit, policy, d, b in rows:
        out.setdefault(int(unit), {})[(int(policy), int(d))] = int(b)
    return out


# -- the web console's charts and tops (acctd/web) -------------------------------------

# a chart's view: the rollup it plots and the span it shows
VIEWS = {"hour": ("hour", "day"), "day": ("day", "month"), "month": ("month", "year")}
TOP_PERIODS = ("day", "month", "year")
MAX_BACK = 1000   # periods back at most: each is a step of the calendar walk


def _span(kind: str, back: int, now: dt.datetime, zone) -> tuple[dt.datetime, dt.datetime]:
    """UTC [start, end) of the local day, month or year `back` periods before now's."""
    period_start, period_end = rollup.period_start, rollup.period_end
    if back > MAX_BACK:
        raise BadRequest(f"back: at most {MAX_BACK} periods, got {back}")
    if kind == "year":
        year = now.astimezone(zone).year - back
        lo = period_start("day", dt.datetime(year, 1, 1, 12, tzinfo=zone), zone)
        return lo, period_start("day", dt.datetime(year + 1, 1, 1, 12, tzinfo=zone), zone)
    lo = period_start(kind, now, zone)
    for _ in range(back):
        lo = period_start(kind, lo - dt.timedelta(microseconds=1), zone)
    return lo, period_end(kind, lo, zone)


def report_series(storage, model, unit: str, view: str, back: int, now: dt.datetime) -> dict:
    """A unit's traffic over time: per bucket (hour of a day, day of a month,
    month of a year), policy and direction; totals and the 95th percentile
    (bit/s) over the span so far: of 5-minute samples, as billing bills it,
    while the raw rows cover the span, else of hourly rates (p95_sample_s)."""
    from_us, label = rollup.from_us, rollup.label
    if view not in VIEWS:
        raise BadRequest(f"view: expected one of {', '.join(VIEWS)}, got {view!r}")
    u = model.units.units[model.units.find(unit)]
    kind, span = VIEWS[view]
    lo, hi = _span(span, back, now, storage.zone)
    q = ("SELECT epoch_us(period_start), policy_oid, dir, packets, bytes FROM rollup "
         "WHERE kind = $k AND unit_oid = $u AND period_start >= make_timestamp($lo) "
         "AND period_start < make_timestamp($hi) ORDER BY 1, 2, 3")
    bind = {"u": int(u.oid, 16), "lo": to_us(lo), "hi": to_us(hi)}
    rows = storage.con.execute(q, {**bind, "k": kind}).fetchall()
    hours = storage.con.execute(q, {**bind, "k": "hour"}).fetchall() if kind != "hour" else rows
    total = {"in": 0, "out": 0}
    hourly: dict[int, list[int]] = {0: [], 1: []}
    for _, pol, d, _, b in hours:
        if pol == 0:
            hourly[d].append(int(b))
            total["in" if d == 0 else "out"] += int(b)
    p95_bps, sample_s = _p95_bps(storage, int(u.oid, 16), lo, min(now, hi), hourly, now)
    buckets, t = [], lo
    while t < hi:  # every bucket of the span, DST included, so a chart has its whole axis
        buckets.append(label(t, storage.zone))
        t = rollup.period_end(kind, t, storage.zone)
    return {"unit": u.name, "oid": u.oid, "view": view, "start": label(lo, storage.zone),
            "end": label(hi, storage.zone), "buckets": buckets,
            "rows": [{"start": label(from_us(us), storage.zone), "policy": _policy_name(model, pol),
                      "dir": "in" if d == 0 else "out", "packets": int(p), "bytes": int(b)}
                     for us, pol, d, p, b in rows],
            "total": total,
            "p95_bps": p95_bps, "p95_sample_s": sample_s}


def _p95_bps(storage, oid: int, lo: dt.datetime, hi: dt.datetime,
             hourly: dict[int, list[int]], now: dt.datetime) -> tuple[dict, int]:
    """The unit's 95th percentile in [lo, hi), in and out, in bit/s, and the
    sample it is of: 5 minutes where raw rows are kept for all of it."""
    if hi <= lo:
        return {"in": 0, "out": 0}, percentile.SAMPLE_S
    retention = storage.raw_retention
    if retention is None or lo >= now - dt.timedelta(seconds=retention):
        _, b_in, b_out = percentile.of_units(storage.con, [oid], lo, hi)
        per = percentile.SAMPLE_S
    else:   # the raw rows of the span's start are gone: the hourly rollups
        hours = -(-int((hi - lo).total_seconds()) // 3600)
        b_in, b_out = (percentile.p95(hourly[d] + [0] * max(0, hours - len(hourly[d])))
                       for d in (0, 1))
        per = 3600
    return {"in": b_in * 8 // per, "out": b_out * 8 // per}, per


def report_top_units(storage, model, period: str, back: int, limit: int, now: dt.datetime) -> dict:
    """The units (not groups) with the most bytes in a day, month or year, in
    and out together (ties by oid), all traffic, from the day or month
    rollups; the total is every unit's (each byte once: groups left out)."""
    label = rollup.label
    if period not in TOP_PERIODS:
        raise BadRequest(f"period: expected one of {', '.join(TOP_PERIODS)}, got {period!r}")
    lo, hi = _span(period, back, now, storage.zone)
    leaves = [int(u.oid, 16) for u in model.units.units if u.type != "group"]
    per_unit = (
        "SELECT unit_oid, sum(CASE WHEN dir = 0 THEN bytes ELSE 0 END) AS i, "
        "sum(CASE WHEN dir = 1 THEN bytes ELSE 0 END) AS o FROM rollup "
        "JOIN (SELECT unnest($leaves) AS oid) k ON k.oid = unit_oid "
        "WHERE kind = $kind AND policy_oid = 0 AND period_start >= make_timestamp($lo) "
        "AND period_start < make_timestamp($hi) GROUP BY 1")
    bind = {"leaves": leaves, "kind": "day" if period == "day" else "month",
            "lo": to_us(lo), "hi": to_us(hi)}
    # one pass: the top rows, each carrying the count and sums over every unit
    rows = storage.con.execute(
        f"SELECT unit_oid, i, o, count(*) OVER (), sum(i) OVER (), sum(o) OVER () "
        f"FROM ({per_unit}) ORDER BY i + o DESC, unit_oid LIMIT $limit",
        {**bind, "limit": limit}).fetchall()
    n, total_in, total_out = rows[0][3:] if rows else (0, 0, 0)
    top = [r[:3] for r in rows]
    units = model.units
    names = {oid: units.units[units.by_oid[f"{oid:06X}"]].name for oid, _, _ in top}
    return {"period": period, "start": label(lo, storage.zone), "end": label(hi, storage.zone),
            "units": [{"unit": names[oid], "bytes_in": int(i), "bytes_out": int(o),
                       "bytes": int(i) + int(o)} for oid, i, o in top],
            "total": {"in": int(total_in), "out": int(total_out), "units": int(n)}}


def _key_label(by: str, hi: int, lo: int) -> str:
    from acctd.kernel import reader
    from acctd.model.addresses import format_addr
    if by == "addr":
        return format_addr(int(hi).to_bytes(8, "big") + int(lo).to_bytes(8, "big"))
    return reader.port_label(int(lo)) if by == "port" else reader.vlan_label(int(lo))


def report_top_by(storage, model, by: str, period: str, back: int, limit: int,
                  now: dt.datetime) -> dict:
    """The local addresses, service ports or VLANs with the most bytes in a
    day, month or year, in and out together (ties by key), from the period
    tops (acctd.store.rollup.BY); an address carries the unit it belongs to
    now. The total is every key's, those trimmed from a past period included."""
    label = rollup.label
    if by not in rollup.BY:
        raise BadRequest(f"by: expected one of {', '.join(rollup.BY)}, got {by!r}")
    if period not in rollup.TOP_PERIODS:
        raise BadRequest(f"period: expected one of {', '.join(rollup.TOP_PERIODS)}, "
                         f"got {period!r}")
    if limit > rollup.TOP_KEEP:
        raise BadRequest(f"limit: at most {rollup.TOP_KEEP} (what a past period keeps), "
                         f"got {limit}")
    lo, hi = _span(period, back, now, storage.zone)
    counters = ("packets_in", "packets_out", "bytes_in", "bytes_out")
    rest = "(key_hi = $rest AND key_lo = $rest)"
    # one pass: the top rows (the rest row sorts last), each carrying the sums over all
    # a month or a year is its own rows plus the open day's, not yet folded into it
    open_day = json.loads(storage.meta("tops_open") or "{}").get("day")
    day = "false" if period == "day" or open_day is None else \
        "(kind = 'day' AND period_start = make_timestamp($day) AND period_start < make_timestamp($hi))"
    rows = storage.con.execute(
        f"SELECT key_hi, key_lo, {', '.join(counters)}, {rest}, "
        f"{', '.join(f'sum({c}) OVER ()' for c in counters)} FROM ("
        f"SELECT key_hi, key_lo, {', '.join(f'sum({c}) AS {c}' for c in counters)} "
        "FROM rollup_by WHERE keyed_by = $by AND ((kind = $k AND period_start = "
        f"make_timestamp($lo)) OR ({day} AND period_start >= make_timestamp($lo))) "
        f"GROUP BY key_hi, key_lo) ORDER BY {rest}, bytes_in::HUGEINT + bytes_out DESC, "
        "key_hi, key_lo LIMIT $n",
        {"by": by, "k": period, "lo": to_us(lo), "rest": rollup.REST, "n": limit + 1,
         **({"day": open_day, "hi": to_us(hi)} if "$day" in day else {})}).fetchall()
    total = dict(zip(counters, (int(x) for x in rows[0][7:]))) if rows else \
        dict.fromkeys(counters, 0)
    out = [{"key": _key_label(by, h, k), "packets_in": int(pi), "packets_out": int(po),
            "bytes_in": int(bi), "bytes_out": int(bo), "bytes": int(bi) + int(bo)}
           for h, k, pi, po, bi, bo, is_rest, *_ in rows if not is_rest][:limit]
    if by == "addr":
        for r, unit in zip(out, model.units.names_of([r["key"] for r in out])):
            r["unit"] = unit
    return {"by": by, "period": period, "start": label(lo, storage.zone),
            "end": label(hi, storage.zone), "rows": out, "total": total}
