"""`acctctl --central DSN list|stat|top|quota show`: the answers of the
daemon's commands, read from PostgreSQL across every gateway, with no
gateway running (the web console can use the same functions). Replies
have the daemon's shapes, so acctctl renders them the same way. Periods
are local periods of `zone` (the config's, given with --config; else UTC).
"""

from __future__ import annotations

import datetime as dt

from acctd.services.central import ship
from acctd.store.rollup import ALL_TRAFFIC, DROPPED, PERIODS, label, period_end, period_start

FIGURES = ("flow", *PERIODS)


def _names(conn) -> tuple[dict[int, str], dict[int, str]]:
    units = dict(conn.execute("SELECT unit_oid, name FROM unit").fetchall())
    policies = dict(conn.execute("SELECT policy_oid, name FROM policy").fetchall())
    return units, policies


def _policy(policies: dict[int, str], oid: int) -> str:
    if oid == ALL_TRAFFIC:
        return "(all)"
    for cause, d in DROPPED.items():
        if oid == d:
            return f"(dropped: {cause})"
    return policies.get(oid, f"{oid:06X}")


def _unit(units: dict[int, str], unit: str) -> int:
    for oid, name in units.items():
        if unit in (name, f"{oid:06X}"):
            return oid
    raise LookupError(f"unknown unit {unit!r} in the central database")


def report_list(conn, unit: str | None, now: dt.datetime, zone) -> dict:
    """Per unit, policy and dir: the gateways' last drains ("flow") and the
    current hour, day, week and month, summed over every gateway."""
    units, policies = _names(conn)
    starts = ship.period_bounds(now, zone)
    only = None if unit is None else _unit(units, unit)
    sums = ", ".join(f"coalesce(sum(r.packets) FILTER (WHERE r.ts >= %({k})s), 0), "
                     f"coalesce(sum(r.bytes) FILTER (WHERE r.ts >= %({k})s), 0)"
                     for k in PERIODS)
    rows = conn.execute(
        f"SELECT r.unit_oid, r.policy_oid, r.dir, "
        "coalesce(sum(r.packets) FILTER (WHERE r.seq = g.shipped_seq), 0), "
        f"coalesce(sum(r.bytes) FILTER (WHERE r.seq = g.shipped_seq), 0), {sums} "
        "FROM raw r JOIN gateway g ON g.id = r.gateway_id WHERE r.ts >= %(lo)s "
        "AND (%(only)s::integer IS NULL OR r.unit_oid = %(only)s) "
        "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        {**starts, "lo": min(starts.values()), "only": only}).fetchall()
    out: dict[int, list] = {}
    for u, p, d, *v in rows:
        out.setdefault(int(u), []).append({
            "policy": _policy(policies, int(p)), "dir": "in" if d == 0 else "out",
            **{k: {"packets": int(v[2 * i]), "bytes": int(v[2 * i + 1])}
               for i, k in enumerate(FIGURES)}})
    reps = [{"unit": units.get(u, f"{u:06X}"), "oid": f"{u:06X}", "policies": out.get(u, [])}
            for u in ([only] if only is not None else sorted(set(units) | set(out)))]
    return reps[0] if only is not None else {"units": reps}


def report_stat(conn, unit: str, period: str, now: dt.datetime, zone) -> dict:
    """Hourly rows of this week or month, every gateway summed."""
    units, policies = _names(conn)
    oid = _unit(units, unit)
    lo = period_start(period, now, zone)
    hi = period_end(period, lo, zone)
    rows = conn.execute(
        "SELECT date_trunc('hour', ts), policy_oid, dir, sum(packets), sum(bytes) FROM raw "
        "WHERE unit_oid = %s AND ts >= %s AND ts < %s GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        (oid, lo, hi)).fetchall()
    return {"unit": units[oid], "oid": f"{oid:06X}", "period": period,
            "rows": [{"hour": label(h, zone), "policy": _policy(policies, int(p)),
                      "dir": "in" if d == 0 else "out", "packets": int(pk), "bytes": int(b)}
                     for h, p, d, pk, b in rows]}


def report_top(conn, now: dt.datetime, zone, n: int = 20) -> list[dict]:
    """The units with most bytes today (all traffic), every gateway summed,
    with their month and the gateways they were seen on today."""
    units, _ = _names(conn)
    day, month = period_start("day", now, zone), period_start("month", now, zone)
    rows = conn.execute(
        "SELECT r.unit_oid, "
        "coalesce(sum(r.bytes) FILTER (WHERE r.ts >= %(day)s AND r.dir = 0), 0), "
        "coalesce(sum(r.bytes) FILTER (WHERE r.ts >= %(day)s AND r.dir = 1), 0), "
        "sum(r.bytes), string_agg(DISTINCT g.name, ',' ORDER BY g.name) "
        "FILTER (WHERE r.ts >= %(day)s) FROM raw r JOIN gateway g ON g.id = r.gateway_id "
        "WHERE r.ts >= %(month)s AND r.policy_oid = 0 AND r.unit_oid <> 0 GROUP BY 1 "
        "ORDER BY 2 + 3 DESC, 1 LIMIT %(n)s",
        {"day": day, "month": month, "n": n}).fetchall()
    return [{"unit": units.get(int(u), f"{int(u):06X}"), "oid": f"{int(u):06X}",
             "today_in": int(i), "today_out": int(o), "month": int(m), "gateways": g or ""}
            for u, i, o, m, g in rows]


def report_quota(conn, unit: str | None, now: dt.datetime, zone, defaults) -> dict:
    """`quota show` over the shared records and totals: every gateway's
    usage summed, [-] where a gateway holds the unit's quota block."""
    from acctd.kernel.abi import SysPolicy
    from acctd.services.quota import QuotaSpec, effective, format_show, show_quota
    units, policies = _names(conn)
    specs = {f"{u:06X}": QuotaSpec.from_dict(s)
             for u, s in conn.execute("SELECT unit_oid, spec FROM quota").fetchall()}
    by_name = {name: oid for oid, name in policies.items()}
    first = policies[min(policies)] if policies else None
    tot = ship.totals(conn, ship.period_bounds(now, zone), [int(o, 16) for o in specs])
    usage = {}
    for oid, spec in specs.items():
        pol = by_name.get(effective(spec, defaults, first).policy)
        usage[oid] = tot.get((int(oid, 16), pol), {}) if pol is not None else {}
    held = {f"{u:06X}": {"blocked": True} for (u,) in conn.execute(
        "SELECT DISTINCT unit_oid FROM block WHERE bits & %s <> 0",
        (int(SysPolicy.QUOTA),)).fetchall()}
    names = {f"{u:06X}": n for u, n in units.items()}
    only = None if unit is None else f"{_unit(units, unit):06X}"
    rows = show_quota(specs, defaults, names, usage, {"units": held}, None, first, only)
    return {"text": format_show(rows),
            "units": [{"oid": r.oid, "name": r.name, "blocked": r.blocked,
                       "lines": [{"period": ln.period, "dir": ln.dir, "used": ln.used,
                                  "quota": ln.quota, "ok": ln.ok} for ln in r.lines]}
                      for r in rows]}


OPERATOR = "(operator)"   # the pseudo-gateway whose blocks acctctl --central sets


def set_operator_block(conn, unit: str, word: str) -> dict:
    """`acctctl --central DSN unit NAME sys-deny[-REASON] | sys-allow`: a block
    held by the operator pseudo-gateway, on every gateway at once (NOTIFY);
    sys-allow lifts the operator's only, not what a gateway decided."""
    from acctd.model import sys_policy
    kind, bits = sys_policy.parse(word)
    units, _ = _names(conn)
    oid = _unit(units, unit)
    with conn.transaction():
        conn.execute("INSERT INTO gateway (name) VALUES (%s) ON CONFLICT (name) DO NOTHING",
                     (OPERATOR,))
        gw = conn.execute("SELECT id FROM gateway WHERE name = %s", (OPERATOR,)).fetchone()[0]
        if kind == "deny":
            conn.execute("INSERT INTO block VALUES (%s, %s, %s, now()) ON CONFLICT (gateway_id, "
                         "unit_oid) DO UPDATE SET bits = block.bits | excluded.bits, at = now()",
                         (gw, oid, int(bits)))
        else:
            conn.execute("UPDATE block SET bits = bits & ~%s::integer, at = now() "
                         "WHERE gateway_id = %s AND unit_oid = %s", (int(bits), gw, oid))
            conn.execute("DELETE FROM block WHERE bits = 0")
        conn.execute("NOTIFY acctd_block")
        held = conn.execute("SELECT coalesce(bit_or(bits), 0) FROM block WHERE unit_oid = %s",
                            (oid,)).fetchone()[0]
    return {"unit": units[oid], "sys_policy": sys_policy.words(int(held)), "changed": {}}
