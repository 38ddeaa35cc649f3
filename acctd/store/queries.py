"""Report queries over a Storage handle (NeTAMS show units, policies, list,
stat): shared by the daemon and `acctctl --db`, which give the same answers
with the daemon stopped. `model` is what names units and policies: the
daemon's snapshot, or a Config read from the file (both have units,
policies and plan)."""

from __future__ import annotations

import datetime as dt
import json

from acctd.store import rollup
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
