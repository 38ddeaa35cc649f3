"""Statements and invoices of an account's month, read from the ledger.

A statement is the month's ledger rows between the opening and the closing
balance. An invoice (postpaid accounts) is what the month charged, line by
line (fees and overdraft per subplan, each adjustment), with the amount
due (the closing balance owed, so unpaid arrears carry over) and a due
date. An issued invoice is kept as it was issued; it is paid when the
payments after its month cover its amount due, and a postpaid account
whose invoice is unpaid some days after its due date is blocked, unless
its terms make it exempt (schools, hospitals).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from decimal import Decimal

from acctd.services.billing import ledger
from acctd.services.billing.ledger import aware, naive
from acctd.services.billing.money import Currency
from acctd.store.migrations import MONEY

_MONTH = re.compile(r"(\d{4})-(\d{2})")


class InvoiceError(ValueError):
    """A month that is none, an invoice that does not exist."""


def month_of(text: str) -> dt.date:
    """"2026-11" -> 2026-11-01."""
    m = _MONTH.fullmatch(text.strip())
    if not m or not 1 <= int(m[2]) <= 12:
        raise InvoiceError(f"expected a month like 2026-11, got {text!r}")
    return dt.date(int(m[1]), int(m[2]), 1)


def bounds(month: dt.date, zone) -> tuple[dt.datetime, dt.datetime]:
    """The month's [start, end) in UTC, its days being those of the zone."""
    nxt = dt.date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return tuple(dt.datetime.combine(d, dt.time(), zone).astimezone(ledger.UTC)
                 for d in (month, nxt))


# --- terms -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Terms:
    postpaid: bool = False
    exempt: bool = False      # never blocked for an unpaid invoice
    transit: bool = False     # charged its 95th percentile when a month ends


def all_terms(con) -> dict[int, Terms]:
    return {int(a): Terms(bool(p), bool(e), bool(t)) for a, p, e, t in con.execute(
        "SELECT account_oid, postpaid, exempt, transit FROM account_terms").fetchall()}


def set_terms(con, oid: int, terms: Terms, changed: dt.datetime | None = None) -> None:
    """changed: when (None: the time it had), the last change winning with [central]."""
    con.execute("INSERT INTO account_terms VALUES (?, ?, ?, ?, ?) ON CONFLICT (account_oid) "
                "DO UPDATE SET postpaid = excluded.postpaid, exempt = excluded.exempt, "
                "transit = excluded.transit, changed = coalesce(excluded.changed, "
                "account_terms.changed)", [oid, terms.postpaid, terms.exempt, terms.transit,
                                           naive(changed) if changed else None])


def terms_changes(con) -> dict[int, tuple[Terms, dt.datetime]]:
    """The terms set with a time: oid -> (terms, when, UTC)."""
    return {int(a): (Terms(bool(p), bool(e), bool(t)), aware(ch)) for a, p, e, t, ch in
            con.execute("SELECT account_oid, postpaid, exempt, transit, changed FROM "
                        "account_terms WHERE changed IS NOT NULL").fetchall()}


# --- statements --------------------------------------------------------------------

# A row belongs to the month it pays for (its period: a fee's day, an
# overdraft's or a 95th percentile's month), else to the month it was
# written in (payments, adjustments): a charge for November written on
# December 1st is on November's invoice.
FOR = "coalesce(period_start, ts)"


def statement(con, oid: int, month: dt.date, zone, cur: Currency,
              ledger_rows: str = "ledger") -> dict:
    """ledger_rows: the table (or a subquery AS ledger) read, as compose's."""
    start, end = bounds(month, zone)
    opening = _sum(con, f"account_oid = ? AND {FOR} < ?", [oid, naive(start)], ledger_rows)
    rows = con.execute(
        f"SELECT ts, kind, amount, subplan, bytes_in, bytes_out, cause, reference FROM {ledger_rows} "
        f"WHERE account_oid = ? AND {FOR} >= ? AND {FOR} < ? ORDER BY ts, seq",
        [oid, naive(start), naive(end)]).fetchall()
    closing = opening + sum((Decimal(r[2]) for r in rows), Decimal(0))
    return {"account_oid": oid, "month": f"{month:%Y-%m}", "opening": str(cur.quantize(opening)),
            "rows": [{"date": f"{aware(ts).astimezone(zone):%Y-%m-%d}", "kind": kind,
                      "amount": str(cur.quantize(Decimal(amount))), "subplan": sub,
                      "bytes_in": int(bi), "bytes_out": int(bo), "cause": cause,
                      "reference": ref} for ts, kind, amount, sub, bi, bo, cause, ref in rows],
            "closing": str(cur.quantize(closing))}


def _sum(con, where: str, params: list, ledger_rows: str = "ledger") -> Decimal:
    v = con.execute(f"SELECT sum(amount) FROM {ledger_rows} WHERE {where}", params
                    ).fetchall()[0][0]
    return Decimal(0) if v is None else Decimal(v)


# --- invoices ----------------------------------------------------------------------

def number(oid: int, month: dt.date) -> str:
    return f"{month:%Y%m}-{oid:06X}"


def compose(con, month: dt.date, zone, cur: Currency, now: dt.datetime, due_days: int,
            oids: list[int] | None = None, ledger_rows: str = "ledger") -> dict[int, dict]:
    """The month's invoices (not stored) of these accounts (all with a ledger
    row, if None): a handful of grouped queries, whatever the number of
    accounts. ledger_rows: the table (or a subquery AS ledger) read."""
    start, end = bounds(month, zone)
    due = due_date(end, zone, due_days)
    only = " AND account_oid IN (SELECT unnest(?::UINTEGER[]))" if oids is not None else ""
    extra = [oids] if oids is not None else []
    s, e = naive(start), naive(end)
    docs: dict[int, dict] = {}

    def doc(oid: int) -> dict:
        d = docs.get(oid)
        if d is None:
            d = docs[oid] = {"number": number(oid, month), "account_oid": oid,
                             "month": f"{month:%Y-%m}", "issued": now.isoformat(),
                             "due": due.isoformat(), "lines": [], "opening": Decimal(0),
                             "charges": Decimal(0), "payments": Decimal(0)}
        return d
    for oid, amount in con.execute(f"SELECT account_oid, sum(amount) FROM {ledger_rows} WHERE {FOR} < ?"
                                   + only + " GROUP BY account_oid", [s, *extra]).fetchall():
        doc(int(oid))["opening"] = Decimal(amount)
    for oid, kind, plan, sub, amount, bi, bo in con.execute(
            "SELECT account_oid, kind, plan, subplan, sum(amount), sum(bytes_in), "
            f"sum(bytes_out) FROM {ledger_rows} WHERE {FOR} >= ? AND {FOR} < ? AND kind IN ('fee', "
            "'overdraft')" + only + " GROUP BY ALL ORDER BY account_oid, kind, plan, subplan",
            [s, e, *extra]).fetchall():
        d = doc(int(oid))
        d["lines"].append({"what": f"{kind} plan {plan if plan is not None else '-'} subplan "
                                   f"{sub if sub is not None else '-'}",
                           "amount": -Decimal(amount), "bytes_in": int(bi), "bytes_out": int(bo)})
    for oid, kind, amount, cause, bi, bo in con.execute(
            f"SELECT account_oid, kind, amount, cause, bytes_in, bytes_out FROM {ledger_rows} WHERE {FOR} >= ? AND {FOR} < ? "
            "AND kind NOT IN ('fee', 'overdraft')" + only + " ORDER BY seq",
            [s, e, *extra]).fetchall():
        d = doc(int(oid))
        if kind == "payment":
            d["payments"] += Decimal(amount)
        else:
            d["lines"].append({"what": f"{kind} {cause}".strip(), "amount": -Decimal(amount),
                               "bytes_in": int(bi), "bytes_out": int(bo)})
    for d in docs.values():
        d["charges"] = sum((x["amount"] for x in d["lines"]), Decimal(0))
        closing = d["opening"] - d["charges"] + d["payments"]
        d["closing"] = closing
        d["amount_due"] = max(-closing, Decimal(0))
        for k in ("opening", "charges", "payments", "closing", "amount_due"):
            d[k] = str(cur.quantize(d[k]))
        for x in d["lines"]:
            x["amount"] = str(cur.quantize(x["amount"]))
    return docs


def issue(con, month: dt.date, zone, cur: Currency, now: dt.datetime, due_days: int,
          oids: list[int]) -> list[str]:
    """Store the month's invoices of these accounts that are not issued yet
    (an account without a row gets one of zero); their numbers."""
    start, end = bounds(month, zone)
    have = {int(a) for (a,) in con.execute("SELECT account_oid FROM invoice WHERE month = ?",
                                           [month]).fetchall()}
    todo = [o for o in oids if o not in have]
    if not todo:
        return []
    docs = compose(con, month, zone, cur, now, due_days, todo)
    for o in todo:
        if o not in docs:
            docs[o] = empty(o, month, now, due_date(end, zone, due_days), cur)
    rows = [docs[o] for o in todo]
    con.execute(
        "INSERT INTO invoice SELECT unnest($1::UINTEGER[]), $2::DATE, unnest($3::VARCHAR[]), "
        f"$4::TIMESTAMP, $5::TIMESTAMP, unnest($6::TIMESTAMP[]), unnest($7::VARCHAR[])::{MONEY}, "
        "unnest($8::VARCHAR[])",
        [todo, month, [d["number"] for d in rows], naive(now), naive(end),
         [naive(dt.datetime.fromisoformat(d["due"])) for d in rows],
         [d["amount_due"] for d in rows], [json.dumps(d) for d in rows]])
    return [d["number"] for d in rows]


def keep(con, rows: list[tuple]) -> None:
    """Invoices issued elsewhere (central), as the server has them: (account
    oid, month, number, issued, period_end, due, amount due, doc)."""
    for oid, month, num, issued, end, due, amount, doc in rows:
        con.execute("DELETE FROM invoice WHERE (account_oid = ? AND month = ?) OR number = ?",
                    [oid, month, num])
        con.execute("INSERT INTO invoice VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [oid, month, num, naive(issued), naive(end), naive(due), str(amount),
                     json.dumps(doc)])


def due_date(end: dt.datetime, zone, due_days: int) -> dt.datetime:
    """Midnight (in the zone) `due_days` days after the month's end."""
    day = end.astimezone(zone).date() + dt.timedelta(days=due_days)
    return dt.datetime.combine(day, dt.time(), zone).astimezone(ledger.UTC)


def empty(oid: int, month: dt.date, now: dt.datetime, due: dt.datetime, cur: Currency) -> dict:
    """The invoice of a month without a row."""
    zero = str(cur.quantize(Decimal(0)))
    return {"number": number(oid, month), "account_oid": oid, "month": f"{month:%Y-%m}",
            "issued": now.isoformat(), "due": due.isoformat(),
            "lines": [], **{k: zero for k in ("opening", "charges", "payments", "closing",
                                              "amount_due")}}


def stored(con, oid: int, month: dt.date) -> dict | None:
    r = con.execute("SELECT doc FROM invoice WHERE account_oid = ? AND month = ?",
                    [oid, month]).fetchall()
    return json.loads(r[0][0]) if r else None


def issued(con, oid: int, elsewhere=()) -> list[dict]:
    """The account's issued invoices, newest first: number, month, due,
    amount due and whether the payments since its month cover it (elsewhere:
    the other gateways' payments, (account, ts, amount), count too)."""
    rows = con.execute(
        "SELECT i.number, i.month, i.issued, i.due, i.amount_due, i.period_end "
        "FROM invoice i WHERE i.account_oid = ? ORDER BY i.month DESC", [oid]).fetchall()
    return [{"number": n, "month": f"{m:%Y-%m}", "issued": aware(i).isoformat(),
             "due": aware(d).isoformat(), "amount_due": str(a),
             "paid": Decimal(a) <= paid_since(con, oid, aware(end), elsewhere)}
            for n, m, i, d, a, end in rows]


def paid_since(con, oid: int, since: dt.datetime, elsewhere=()) -> Decimal:
    """Payments dated on or after `since`: what pays an invoice of the month
    before; elsewhere: the other gateways' payments, (account, ts, amount)."""
    return _sum(con, "account_oid = ? AND kind = 'payment' AND ts >= ?", [oid, naive(since)]) \
        + sum((v for a, t, v in elsewhere if a == oid and t >= since), Decimal(0))


def unpaid(con, now: dt.datetime, grace_days: int, elsewhere=()
           ) -> dict[int, tuple[str, dt.datetime]]:
    """Accounts with an invoice unpaid `grace_days` after its due date:
    oid -> (its number, its due date); the oldest such invoice. elsewhere:
    the other gateways' payments, (account, ts, amount), count too."""
    rows = con.execute(
        "SELECT i.account_oid, i.number, i.due, i.period_end, i.amount_due - coalesce(("
        "SELECT sum(amount) FROM ledger l WHERE l.account_oid = i.account_oid AND l.kind = "
        "'payment' AND l.ts >= i.period_end), 0) FROM invoice i WHERE i.amount_due > 0 "
        "AND i.due + to_days(?) <= ? ORDER BY i.due DESC", [grace_days, naive(now)]).fetchall()
    out = {}
    for a, n, d, end, owed in rows:
        owed = Decimal(owed) - sum((v for o, t, v in elsewhere if o == a and t >= aware(end)),
                                   Decimal(0))
        if owed > 0:
            out[int(a)] = (n, aware(d))
    return out


# --- text ---------------------------------------------------------------------------

def format_invoice(d: dict, name: str, cur: Currency, zone, paid: bool | None) -> str:
    due = dt.datetime.fromisoformat(d["due"]).astimezone(zone)
    state = "" if paid is None else ("  PAID" if paid else "  UNPAID")
    lines = [f"Invoice {d['number']}  account {name} ({d['account_oid']:06X})  month {d['month']}",
             f"Due {due:%Y-%m-%d}{state}"]
    width = max([len(x["what"]) for x in d["lines"]] + [20])
    for x in d["lines"]:
        traffic = f"  ({x['bytes_in']} B in, {x['bytes_out']} B out)" \
            if x["bytes_in"] or x["bytes_out"] else ""
        lines.append(f"  {x['what']:<{width}} {x['amount']:>12}{traffic}")
    for label, key in (("Charges this month", "charges"), ("Previous balance", "opening"),
                       ("Payments this month", "payments"), ("Balance", "closing")):
        lines.append(f"  {label:<{width}} {d[key]:>12}")
    lines.append(f"  {'Amount due':<{width}} {d['amount_due']:>12} {cur.code}")
    return "\n".join(lines) + "\n"


def format_statement(s: dict, name: str, cur: Currency) -> str:
    lines = [f"Statement  account {name} ({s['account_oid']:06X})  month {s['month']}",
             f"  {'Opening balance':<42} {s['opening']:>12}"]
    for r in s["rows"]:
        what = f"{r['date']} {r['kind']}" + (f" subplan {r['subplan']}" if r["subplan"] else "") \
            + (f" ref {r['reference']}" if r["reference"] else "")
        lines.append(f"  {what:<42} {r['amount']:>12}")
    lines.append(f"  {'Closing balance':<42} {s['closing']:>12} {cur.code}")
    return "\n".join(lines) + "\n"
