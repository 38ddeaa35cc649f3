"""Report queries over a Storage handle (NeTAMS show units, policies, list,
stat): shared by the daemon and `acctctl --db`, which give the same answers
with the daemon stopped."""

from __future__ import annotations

import datetime as dt
import json

from acctd.errors import AcctError
from acctd.store import rollup


def _policy_name(cfg, oid: int) -> str:
    if oid == rollup.ALL_TRAFFIC:
        return "(all)"
    for cause, d in rollup.DROPPED.items():
        if oid == d:
            return f"(dropped: {cause})"
    if cfg is not None:
        i = cfg.policies.by_oid.get(f"{oid:06X}")
        if i is not None:
            return cfg.policies.policies[i].name
    return f"{oid:06X}"


def _unit(cfg, name: str):
    try:
        return cfg.units.units[cfg.units.find(name)]
    except KeyError:
        raise AcctError(f"unknown unit {name!r} (see `acctctl units`)") from None


def report_units(cfg, units=None) -> list[dict]:
    """The units; `units` (the daemon's) gives user units their session addresses."""
    from acctd.model.addresses import format_addr, format_prefix
    return [{"name": u.name, "oid": u.oid, "type": u.type, "email": u.email,
             "addrs": [format_addr(a) for a in u.addrs],
             "nets": [format_prefix(*n) for n in u.nets], "mac": u.mac,
             "parents": list(u.parents), "acct_policy": list(u.acct_policy)}
            for u in (units if units is not None else cfg.units)]


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
    if f.get("syspolicy"):  # NeTAMS `show units syspolicy whereset`
        out = [u for u in out if u.get("sys_policy")]
    return out


def report_policies(cfg) -> list[dict]:
    return [{"name": p.name, "oid": p.oid, "target": p.target if isinstance(p.target, str)
             else json.dumps(p.target)} for p in cfg.policies]


def report_list(storage, cfg, unit: str, now: dt.datetime, checks=None, matches=None) -> dict:
    """NeTAMS `show list full`: per policy and direction, flow/hour/day/week/month;
    with the daemon's counters, per acct entry its checks and matches (flows,
    since the daemon started: in memory, as in NeTAMS)."""
    u = _unit(cfg, unit)
    rows = storage.unit_totals(u.oid, now)
    out = []
    for r in rows:
        out.append({"policy": _policy_name(cfg, r["policy_oid"]),
                    "dir": "in" if r["dir"] == 0 else "out",
                    **{k: {"packets": r[k][0], "bytes": r[k][1]}
                       for k in ("flow", "hour", "day", "week", "month")}})
    rep = {"unit": u.name, "oid": u.oid, "policies": out}
    if checks is not None:
        i = cfg.units.find(unit)
        lo, hi = cfg.plan.entry_ptr[i], cfg.plan.entry_ptr[i + 1]
        rep["checks"] = [{"policy": cfg.policies.policies[cfg.plan.entry_policy[e]].name,
                          "check": int(checks[e]), "match": int(matches[e])} for e in range(lo, hi)]
    return rep


def report_stat(storage, cfg, unit: str, period: str, now: dt.datetime) -> dict:
    """NeTAMS `show stat`: hourly rows of the week or month."""
    u = _unit(cfg, unit)
    rows = storage.stat(u.oid, period, now)
    return {"unit": u.name, "oid": u.oid, "period": period,
            "rows": [{"hour": r["label"], "policy": _policy_name(cfg, r["policy_oid"]),
                      "dir": "in" if r["dir"] == 0 else "out",
                      "packets": r["packets"], "bytes": r["bytes"]} for r in rows]}
