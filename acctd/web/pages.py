"""What each console page shows, from the daemon's replies: plain
functions from replies to tables and figures (no Flask, no socket), so the
bench (acctd/bench/web.py) and the tests build pages without a server."""

from __future__ import annotations

import numpy as np

from acctd.errors import BadRequest, NotFound, PermissionDenied
from acctd.web.tables import BYTES, RATE, TEXT, TIME, Table

PERIODS = ("day", "month", "year")
VIEWS = ("hour", "day", "month")


COUNTERS = ("packets_in", "packets_out", "bytes_in", "bytes_out")


def optional(fn):
    """A reply, or None where the service is not configured or the level is short."""
    try:
        return fn()
    except (NotFound, PermissionDenied, BadRequest):
        return None


def billing_configured(ask) -> bool:
    """Whether billing's tariff has a plan (an empty [billing] has none);
    ask(cmd, **args) answers control commands."""
    return bool((optional(lambda: ask("billing-plan")) or {}).get("plans"))


def _growth(prev: dict | None, cur: dict) -> dict[str, np.ndarray]:
    """Counter growth per key of two sections ({key: counters}), vectorized,
    by acctctl's rule (acctctl/top.py _delta): an entry whose counters went
    down was re-created, and all of its count is new."""
    keys = list(cur)
    now = np.array([[int(cur[k].get(c, 0)) for c in COUNTERS] for k in keys],
                   np.int64).reshape(-1, 4)
    old = np.array([[int((prev or {}).get(k, {}).get(c, 0)) for c in COUNTERS] for k in keys],
                   np.int64).reshape(-1, 4)
    grown = np.where((now < old).any(axis=1, keepdims=True), now, now - old)
    return {"keys": keys, "d": grown}


def top_rates(prev: dict | None, cur: dict, limit: int) -> dict[str, list[dict]]:
    """Current rates (bit/s, two `rates` snapshots apart) of the gateway
    (every address's traffic) and of the top addresses, ports and VLANs;
    "<view>_now": every key's (in, out), for the period tables' rate columns."""
    elapsed = float(cur.get("ts", 0)) - float(prev.get("ts", 0)) if prev else 0.0
    scale = 8.0 / elapsed if elapsed > 0 else 0.0
    owner = {r["addr"]: r.get("unit") for r in cur.get("addrs", [])}
    out: dict[str, list[dict]] = {}
    for view in ("addrs", "ports", "vlans"):
        section = {r["addr"]: r for r in cur.get(view, [])} if view == "addrs" else cur.get(view, {})
        before = ({r["addr"]: r for r in prev.get(view, [])} if view == "addrs"
                  else prev.get(view, {})) if prev else None
        g = _growth(before, section)
        bits = g["d"][:, 2:] * scale
        out[f"{view}_now"] = {k: (round(float(i)), round(float(o)))
                              for k, (i, o) in zip(g["keys"], bits.tolist())}
        order = np.argsort(-(bits[:, 0] + bits[:, 1]), kind="stable")[:limit]
        out[view] = [{"key": g["keys"][i], "unit": owner.get(g["keys"][i]),
                      "bps_in": round(float(bits[i, 0])), "bps_out": round(float(bits[i, 1]))}
                     for i in order]
        if view == "addrs":
            out["gateway"] = [{"bps_in": round(float(bits[:, 0].sum())),
                               "bps_out": round(float(bits[:, 1].sum()))}]
    return out


def period_tops(tops: dict[str, dict], rates: dict, limit: int) -> list[Table]:
    """The top addresses, ports and VLANs of the chosen period (top-by
    replies by addr, port, vlan), each row with its rate now (in and out)."""
    heads = {"addr": ("top_addrs", "addresses", "address"), "port": ("top_ports", "ports", "port"),
             "vlan": ("top_vlans", "VLANs", "VLAN")}
    out = []
    for by, (name, what, head) in heads.items():
        r = tops[by]
        now = rates.get({"addr": "addrs", "port": "ports", "vlan": "vlans"}[by] + "_now", {})
        rows = [x | {"bps": sum(now.get(x["key"], (0, 0)))} for x in r["rows"]]
        # no total column: a card is a third of 1280 px (top-by --json has it)
        out.append(Table(name, f"Top {limit} {what}, {r['period']} from {r['start'][:10]}",
                         [("key", head, TEXT), *([("unit", "unit", TEXT)] if by == "addr" else []),
                          ("bytes_in", "in", BYTES), ("bytes_out", "out", BYTES),
                          ("bps", "now", RATE)], rows, empty="no traffic in this period"))
    return out


def overview(status: dict, rates: dict, totals: dict[str, dict], top: dict,
             blocked: list[dict], limit: int, tops: dict[str, dict] | None = None) -> dict:
    """The overview: rates, today's/month's/year's totals, the top units and
    (with `tops`, the top-by replies) the top addresses, ports and VLANs of
    the chosen period, the blocked units and why, and health."""
    dp = status.get("datapath", {})
    fill = dp.get("fill", {})
    health = [{"what": f"{name} fill", "value": f"{f['entries']} of {f['max']} ({f['percent']}%)"}
              for name, f in fill.items()]
    health += [{"what": "unattributed bytes", "value": dp.get("unattributed_bytes")},
               {"what": "dropped bytes", "value": dp.get("dropped_bytes")},
               {"what": "flow evictions", "value": dp.get("flow_evictions")},
               {"what": "last commit", "value": status.get("last_drain")},
               {"what": "failed drains in a row", "value": status.get("failed_drains")},
               {"what": "last error", "value": (status.get("last_error") or {}).get("error")}]
    health += [{"what": f"health {k}", "value": v}
               for k, v in sorted(dp.get("health", {}).items()) if v]
    rate_cols = [("bps_in", "in", RATE), ("bps_out", "out", RATE)]
    tables = [
        Table("rates", "Gateway now", rate_cols, rates["gateway"]),
        Table("totals", "Totals", [("period", "period", TEXT), ("start", "since", TEXT),
                                   ("bytes_in", "in", BYTES), ("bytes_out", "out", BYTES),
                                   ("units", "units", TEXT)],
              [{"period": p, "start": t["start"][:10], "bytes_in": t["total"]["in"],
                "bytes_out": t["total"]["out"], "units": t["total"]["units"]}
               for p, t in totals.items()]),
        Table("top_units", f"Top {limit} units, {top['period']} from {top['start'][:10]}",
              [("unit", "unit", TEXT), ("bytes_in", "in", BYTES), ("bytes_out", "out", BYTES),
               ("bytes", "total", BYTES)], top["units"]),
        *(period_tops(tops, rates, limit) if tops is not None else ()),
        Table("blocked", "Blocked units", [("name", "unit", TEXT), ("type", "type", TEXT),
                                           ("sys_policy", "why", TEXT)],
              [u for u in blocked if u.get("sys_policy")], empty="no unit is blocked"),
        Table("health", "Health", [("what", "what", TEXT), ("value", "value", TEXT)], health),
    ]
    return {"tables": tables}


def chart(series: dict) -> dict:
    """uPlot's data for a unit's series: x = every bucket's start in the
    span (epoch seconds), one line per policy and direction, "(all)" first."""
    import datetime as dt
    xs = series["buckets"]
    index = {x: i for i, x in enumerate(xs)}
    lines: dict[tuple[str, str], list[int]] = {}
    for r in series["rows"]:
        lines.setdefault((r["policy"], r["dir"]), [0] * len(xs))[index[r["start"]]] = r["bytes"]
    keys = sorted(lines, key=lambda k: (k[0] != "(all)", k[0], k[1]))
    return {"x": [int(dt.datetime.fromisoformat(x).timestamp()) for x in xs],
            "series": [{"label": f"{p} {d}", "all": p == "(all)", "dir": d, "data": lines[(p, d)]}
                       for p, d in keys]}


def unit(series: dict, previous: dict, quota: dict | None, totals: dict | None,
         sessions: list[dict] | None, flows: dict | None) -> dict:
    """A unit's page: the chart's data, per-policy totals, the comparison
    with the previous period, quota bars, the 95th percentile, its sessions
    and (monitored) flows."""
    cmp_rows = []
    for d in ("in", "out"):
        now, before = series["total"][d], previous["total"][d]
        change = None if not before else round(100.0 * (now - before) / before, 1)
        cmp_rows.append({"dir": d, "now": now, "previous": before, "change_pct": change,
                         "p95_bps": series["p95_bps"][d]})
    bars = []
    for u in (quota or {}).get("units", []):
        for ln in u["lines"]:
            q = ln.get("quota") or 0
            bars.append({"period": ln["period"], "dir": ln["dir"], "used": ln["used"],
                         "quota": ln["quota"], "ok": ln.get("ok"),
                         "percent": min(100.0, 100.0 * ln["used"] / q) if q else 0.0})
    tables = [
        Table("series", f"{series['unit']}: {series['view']}s from {series['start'][:10]}",
              [("start", "start", TIME), ("policy", "policy", TEXT), ("dir", "dir", TEXT),
               ("packets", "packets", TEXT), ("bytes", "bytes", BYTES)], series["rows"],
              empty="no traffic in this period"),
        Table("compare", f"Against the previous period (from {previous['start'][:10]})",
              [("dir", "dir", TEXT), ("now", "this period", BYTES),
               ("previous", "previous", BYTES), ("change_pct", "change %", TEXT),
               ("p95_bps", "95th percentile (5 min)" if series.get("p95_sample_s") == 300
                else "95th percentile (hourly)", RATE)], cmp_rows),
        Table("quota", "Quota", [("period", "period", TEXT), ("dir", "dir", TEXT),
                                 ("used", "used", BYTES), ("quota", "quota", BYTES),
                                 ("percent", "%", TEXT)], bars, empty="no quota"),
    ]
    if totals is not None:
        tables.append(Table("policies", "Per policy", [
            ("policy", "policy", TEXT), ("dir", "dir", TEXT), ("hour", "hour", BYTES),
            ("day", "day", BYTES), ("week", "week", BYTES), ("month", "month", BYTES)],
            [{"policy": p["policy"], "dir": p["dir"],
              **{k: p[k]["bytes"] for k in ("hour", "day", "week", "month")}}
             for p in totals["policies"]]))
    if sessions is not None:
        tables.append(sessions_table(sessions, "unit_sessions", "Sessions"))
    if flows is not None:
        tables.append(Table("flows", "Monitored flows", [
            ("peer", "peer", TEXT), ("proto", "proto", TEXT), ("port", "port", TEXT),
            ("bytes_in", "in", BYTES), ("bytes_out", "out", BYTES)],
            flows.get("peers", []), empty="no flows recorded"))
    return {"tables": tables, "chart": chart(series), "bars": bars}


def sessions_table(rows: list[dict], name: str = "sessions", title: str = "Sessions") -> Table:
    return Table(name, title, [("user", "user", TEXT), ("addr", "address", TEXT),
                               ("source", "source", TEXT), ("start", "start", TIME),
                               ("stop", "stop", TIME), ("bytes_in", "in", BYTES),
                               ("bytes_out", "out", BYTES)], rows, empty="no sessions")


def sessions(open_sessions: list[dict], logins: dict | None, vpn: list[dict] | None,
             status: dict) -> dict:
    """Open sessions, login-service state, OpenVPN clients, RADIUS status."""
    tables = [sessions_table(open_sessions, "sessions", "Open sessions")]
    if logins is not None:
        tables.append(Table("logins", "Login service", [
            ("unit", "unit", TEXT), ("state", "state", TEXT), ("addr", "address", TEXT),
            ("mac", "mac", TEXT)], [_login_row(r) for r in logins.get("rows", [])],
            empty="no login records"))
    if vpn is not None:
        tables.append(Table("openvpn", "OpenVPN clients", [
            ("user", "user", TEXT), ("vpn_addr", "address", TEXT), ("bytes_in", "in", BYTES),
            ("bytes_out", "out", BYTES)], vpn, empty="no OpenVPN clients"))
    tables.append(Table("services", "Services (RADIUS, OpenVPN, ...)",
                        [("what", "what", TEXT), ("value", "value", TEXT)],
                        [{"what": k, "value": v} for k, v in
                         sorted(status.get("services", {}).items())], empty="no service status"))
    return {"tables": tables}


def _login_row(r: dict) -> dict:
    return {"unit": r.get("name") or r.get("oid"), "state": r.get("state"),
            "addr": r.get("addr"), "mac": r.get("mac")}


def account(reply: dict, ledger: dict | None, plans: dict | None,
            invoices: dict | None = None) -> dict:
    """Billing's accounts, or one account with its units, ledger, plan and
    issued invoices, as the billing-account, billing-ledger, billing-plan
    and billing-invoices commands answer them."""
    tables = []
    if "accounts" in reply:
        tables.append(_dict_table("accounts", "Accounts", reply["accounts"]))
    if "account" in reply:
        a = reply["account"]
        tables.append(Table("account", f"Account {a.get('name', '')}",
                            [("what", "what", TEXT), ("value", "value", TEXT)],
                            [{"what": k, "value": v} for k, v in a.items()
                             if k != "unit_names"]))
        tables.append(Table("account_units", "Units (their traffic)", [("unit", "unit", TEXT)],
                            [{"unit": n} for n in a.get("unit_names", [])],
                            empty="no units"))
    if invoices is not None:
        tables.append(Table("invoices", "Invoices", [
            ("number", "invoice", TEXT), ("month", "month", TEXT), ("due", "due", TIME),
            ("amount_due", "amount due", TEXT), ("paid", "paid", TEXT)],
            [{**r, "account": invoices["account"]} for r in invoices["invoices"]],
            empty="no invoices issued"))
    if ledger is not None:
        tables.append(_dict_table("ledger", f"Ledger (balance {ledger.get('balance', '-')})",
                                  ledger.get("rows", [])))
    if plans is not None:
        tables.append(_dict_table("plan", "Plan", plans.get("plans", [])))
    return {"tables": tables, "text": reply.get("text"),
            "status": reply.get("account", {}).get("status")}


def _dict_table(name: str, title: str, rows: list) -> Table:
    rows = [r for r in rows if isinstance(r, dict)]
    keys = list(dict.fromkeys(k for r in rows for k in r if not isinstance(r[k], dict)))
    return Table(name, title, [(k, k, TEXT) for k in keys], rows, empty="no rows")
