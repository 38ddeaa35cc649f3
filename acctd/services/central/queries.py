"""`acctctl --central DSN list|stat|top|quota show|billing ...`: the
answers of the daemon's commands, read from PostgreSQL across every
gateway, with no gateway running (the web console can use the same
functions). Replies have the daemon's shapes, so acctctl renders them the
same way. Periods are local periods of `zone` (the config's, given with
--config; else UTC). The billing answers run the gateway's own code over
a scratch in-memory DuckDB that holds the server's rows of the accounts
asked about.
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
    # the zone's hours, not UTC's: they differ at offsets of half an hour
    rows = conn.execute(
        "SELECT date_trunc('hour', ts, %s), policy_oid, dir, sum(packets), sum(bytes) FROM raw "
        "WHERE unit_oid = %s AND ts >= %s AND ts < %s GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        (zone.key, oid, lo, hi)).fetchall()
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


# --- billing ----------------------------------------------------------------------

def ledger_rows(conn, oid: int, start: dt.datetime | None = None,
                end: dt.datetime | None = None, not_gateway: int | None = None) -> list[tuple]:
    """The server's ledger rows of an account written in [start, end), by
    time: (gateway name, billing.ledger.Entry); not_gateway: but its own."""
    from decimal import Decimal

    from acctd.services.billing.ledger import Entry
    rows = conn.execute(
        "SELECT g.name, l.seq, l.ts, l.account_oid, l.kind, l.plan, l.subplan, l.period_start, "
        "l.period_end, l.amount::text, l.bytes_in, l.bytes_out, l.cause, l.reference FROM "
        "ledger l JOIN gateway g ON g.id = l.gateway_id WHERE l.account_oid = %s AND "
        "(%s::timestamptz IS NULL OR l.ts >= %s) AND (%s::timestamptz IS NULL OR l.ts < %s) "
        "AND (%s::smallint IS NULL OR l.gateway_id <> %s) ORDER BY l.ts, g.name, l.seq",
        (oid, start, start, end, end, not_gateway, not_gateway)).fetchall()
    return [(g, Entry(account_oid=int(a), kind=k, amount=Decimal(amount),
                      ts=ts.astimezone(dt.timezone.utc), plan=p, subplan=sp,
                      period_start=ps and ps.astimezone(dt.timezone.utc),
                      period_end=pe and pe.astimezone(dt.timezone.utc), bytes_in=int(bi),
                      bytes_out=int(bo), cause=cause, reference=ref, seq=int(seq)))
            for g, seq, ts, a, k, p, sp, ps, pe, amount, bi, bo, cause, ref in rows]


def _scratch(conn, oid: int | None = None):
    """An in-memory DuckDB with the gateway's schema, the server's accounts
    and terms, and (oid) that account's ledger rows and invoices."""
    import duckdb

    from acctd.kernel import abi
    from acctd.services.billing import invoices
    from acctd.services.billing.invoices import Terms
    from acctd.services.central import accounts
    from acctd.store import migrations
    con = duckdb.connect()
    migrations.upgrade(con, abi.ABI_VERSION)
    accounts.take(con, [spec for (spec,) in conn.execute(
        "SELECT spec FROM account ORDER BY oid").fetchall()])
    for a, p, e, t in conn.execute("SELECT account_oid, postpaid, exempt, transit FROM "
                                   "account_terms").fetchall():
        invoices.set_terms(con, int(a), Terms(p, e, t))
    if oid is not None:
        from acctd.services.billing import ledger
        ledger.append(con, [e for _, e in ledger_rows(conn, oid)])   # one sequence, by time
        invoices.keep(con, conn.execute(
            "SELECT account_oid, month, number, issued, period_end, due, amount_due, doc FROM "
            "invoice WHERE account_oid = %s", (oid,)).fetchall())
    return con


def _find(conn, account: str):
    from acctd.services.billing import accounts
    con = _scratch(conn)
    try:
        return accounts.find(con, account)
    except accounts.AccountError as e:
        raise LookupError(f"{e} in the central database") from None
    finally:
        con.close()


def _balances(conn) -> dict[int, object]:
    from decimal import Decimal
    return {int(a): Decimal(v) for a, v in conn.execute(
        "SELECT account_oid, sum(amount)::text FROM ledger GROUP BY 1").fetchall()}


def report_accounts(conn, account: str | None, full: bool, settings, snapshot, zone) -> dict:
    """`billing account list | NAME [full]` over every gateway's ledger. The
    state is the account's own (block, beblock) or money; an outage's or
    an unpaid invoice's block is a gateway's and not shown here."""
    from decimal import Decimal

    from acctd.services.billing import accounts, invoices
    from acctd.services.billing.service import (account_dict, account_list_text,
                                                block_reason, format_account)
    cur = settings.money
    bal = _balances(conn)
    con = _scratch(conn)
    try:
        post = {o for o, t in invoices.all_terms(con).items() if t.postpaid}
        every = sorted(accounts.all_accounts(con), key=lambda a: a.name)
        if account is not None:
            try:
                every = [accounts.find(con, account)]
            except accounts.AccountError as e:
                raise LookupError(f"{e} in the central database") from None
    finally:
        con.close()
    rows = [(a, bal.get(a.oid, Decimal(0)), block_reason(a, bal.get(a.oid, Decimal(0)),
                                                         a.oid in post)) for a in every]
    if account is None:
        return {"text": account_list_text(rows, cur),
                "accounts": [account_dict(a, b, cur, why) for a, b, why in rows]}
    a, b, why = rows[0]
    return {"text": format_account(a, b, cur, settings, snapshot, full, why, zone),
            "account": account_dict(a, b, cur, why)}


def report_ledger(conn, account: str, since: str | None, until: str | None, settings,
                  zone) -> dict:
    """`billing ledger NAME`: every gateway's rows, each named by its gateway."""
    from decimal import Decimal

    from acctd.services.billing.service import _when, ledger_answer
    a = _find(conn, account)
    rows = ledger_rows(conn, a.oid, _when(since, zone), _when(until, zone))
    return ledger_answer(a.name, rows, _balances(conn).get(a.oid, Decimal(0)), settings.money)


def report_invoice(conn, account: str, month: str | None, settings, invoicing, now: dt.datetime,
                   zone) -> dict:
    """`billing invoice ACCOUNT [MONTH]`: as issued (by any gateway), else a
    draft over every gateway's rows as of now."""
    from acctd.services.billing.invoicing import answer_invoice
    a = _find(conn, account)
    con = _scratch(conn, a.oid)
    try:
        return answer_invoice(con, a, month, zone, settings.money, now, invoicing.due_days)
    finally:
        con.close()


class Names:
    """The unit names the server knows, where the gateway's snapshot gives them."""

    def __init__(self, conn):
        self._names = {f"{u:06X}": n for u, n in _names(conn)[0].items()}

    def name_of(self, oid: str) -> str:
        return self._names.get(oid, oid)
