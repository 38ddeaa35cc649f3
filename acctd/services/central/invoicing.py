"""Postpaid terms and invoices across gateways (README "Several gateways").

Terms: each gateway puts the terms set on it into the server's
`account_terms` (the later change wins), NOTIFY acctd_terms; the others
take the newer rows on it and at connect.

Invoices: an account's invoice for a month is issued once across the
gateways. A gateway whose invoicing finds last month's invoices lacking
composes them over its own ledger and the other gateways' shipped rows,
and claims them on the server, keyed by (account, month): a second
gateway's claim of the same invoice is a no-op. Every gateway then keeps
the server's invoices in its DuckDB (NOTIFY acctd_invoice, and at
connect), so `billing invoice` shows the one issued, wherever. While the
server is unreachable no invoice is issued: they wait for the link (an
invoice is a month's document; a day late is better than two of them).
"""

from __future__ import annotations

import datetime as dt

from acctd.services.billing.invoices import Terms
from acctd.services.billing.ledger import naive


def publish_terms(conn, gateway_id: int, changed: dict[int, tuple[Terms, dt.datetime]]) -> None:
    with conn.transaction():
        conn.cursor().executemany(
            "INSERT INTO account_terms VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (account_oid) "
            "DO UPDATE SET postpaid = excluded.postpaid, exempt = excluded.exempt, transit = "
            "excluded.transit, changed = excluded.changed, gateway_id = excluded.gateway_id "
            "WHERE account_terms.changed < excluded.changed",
            [(oid, t.postpaid, t.exempt, t.transit, when, gateway_id)
             for oid, (t, when) in sorted(changed.items())])
        conn.execute("NOTIFY acctd_terms")


def newer_terms(conn, have: dict[int, dt.datetime]) -> dict[int, tuple[Terms, dt.datetime]]:
    """The server's terms changed later than this gateway's (or not here)."""
    return {int(oid): (Terms(p, e, t), ch) for oid, p, e, t, ch in conn.execute(
        "SELECT account_oid, postpaid, exempt, transit, changed FROM account_terms "
        "ORDER BY account_oid").fetchall() if int(oid) not in have or have[int(oid)] < ch}


def ledger_elsewhere(conn, gateway_id: int, oids: list[int], end: dt.datetime) -> list[tuple]:
    """The other gateways' ledger rows of these accounts for months before
    `end`, in the DuckDB ledger's columns (times naive UTC)."""
    rows = conn.execute(
        "SELECT seq, ts, account_oid, kind, plan, subplan, period_start, period_end, amount, "
        "bytes_in, bytes_out, cause, reference FROM ledger WHERE gateway_id <> %s AND "
        "account_oid = ANY(%s) AND coalesce(period_start, ts) < %s",
        (gateway_id, oids, end)).fetchall()
    return [(seq, naive(ts), a, k, p, sp, naive(ps), naive(pe), str(amount),
             bi, bo, cause, ref) for seq, ts, a, k, p, sp, ps, pe, amount, bi, bo, cause, ref
            in rows]


def claim(conn, gateway_id: int, month: dt.date, end: dt.datetime, docs: list[dict]) -> int:
    """Store these invoices unless issued already (by any gateway); how many were new."""
    import psycopg.types.json
    with conn.transaction():
        cur = conn.cursor()
        n = 0
        for d in docs:
            cur.execute(
                "INSERT INTO invoice VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (account_oid, month) DO NOTHING",
                (d["account_oid"], month, d["number"], dt.datetime.fromisoformat(d["issued"]),
                 end, dt.datetime.fromisoformat(d["due"]), d["amount_due"],
                 psycopg.types.json.Jsonb(d), gateway_id))
            n += cur.rowcount
        conn.execute("NOTIFY acctd_invoice")
    return n


def issued(conn, have: set[tuple[int, dt.date]]) -> list[tuple]:
    """The server's invoices this gateway has not kept: (account oid, month,
    number, issued, period_end, due, amount due, doc)."""
    keys = conn.execute("SELECT account_oid, month FROM invoice").fetchall()
    want = [(int(a), m) for a, m in keys if (int(a), m) not in have]
    if not want:
        return []
    return conn.execute(
        "SELECT account_oid, month, number, issued, period_end, due, amount_due, doc FROM "
        "invoice WHERE (account_oid, month) IN (SELECT * FROM unnest(%s::integer[], "
        "%s::date[])) ORDER BY month, account_oid",
        ([a for a, _ in want], [m for _, m in want])).fetchall()
