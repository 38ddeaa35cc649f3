"""Billing accounts across gateways (README "Several gateways").

Each gateway puts the accounts it made or changed into the server's
`account` table (one row an oid: its fields as JSON, its units, when it
last changed); a newer `changed` wins, so the last change anywhere is the
account. NOTIFY acctd_account; every gateway reads the table again on it
and at connect, and takes the rows newer than its own into DuckDB (the
billing service then decides on them: plan, credit limit, block).

A new account's oid comes from the server (allocate): above every oid
handed out, stored or known to the asking gateway, recorded in
`account_oid`, so two gateways never make one oid. While the server is
unreachable no account is made (the central service refuses): a
gateway-scoped range would need one more setting per gateway kept apart
by hand, and making an account is an operator's rare act that can wait,
while counting and enforcing do not.
"""

from __future__ import annotations

import datetime as dt

from acctd.services.billing.accounts import Account
from acctd.services.billing.ledger import naive
from acctd.services.central.schema import LOCK

OID_LOCK = LOCK + 1   # pg_advisory_xact_lock key of account oids

_FIELDS = ("oid", "name", "description", "email", "password", "plan", "nextplan",
           "nextplan_from", "status", "credit_limit", "created", "changed", "blocked")


def _jsonable(a: Account) -> dict:
    d = {k: getattr(a, k) for k in _FIELDS}
    for k, v in d.items():
        if isinstance(v, dt.datetime):
            d[k] = v.isoformat()
    d["credit_limit"] = str(a.credit_limit)
    d["units"] = list(a.units)
    return d


def allocate(conn, gateway_id: int, name: str, local_max: int) -> int:
    """The next account oid: one transaction, under a lock, so two gateways
    asking at once get two oids; local_max: the largest this gateway has."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (OID_LOCK,))
        oid = conn.execute(
            "SELECT greatest((SELECT coalesce(max(oid), 0) FROM account_oid), "
            "(SELECT coalesce(max(oid), 0) FROM account), %s) + 1", (local_max,)).fetchone()[0]
        conn.execute("INSERT INTO account_oid (oid, gateway_id, name) VALUES (%s, %s, %s)",
                     (oid, gateway_id, name))
    return int(oid)


def publish(conn, gateway_id: int, changed: list[Account]) -> None:
    """Upsert these accounts; a row changed later elsewhere is kept."""
    import psycopg.types.json
    with conn.transaction():
        conn.cursor().executemany(
            "INSERT INTO account VALUES (%s, %s, %s, %s) ON CONFLICT (oid) DO UPDATE "
            "SET spec = excluded.spec, changed = excluded.changed, gateway_id = "
            "excluded.gateway_id WHERE account.changed < excluded.changed",
            [(a.oid, psycopg.types.json.Jsonb(_jsonable(a)), a.changed, gateway_id)
             for a in changed])
        conn.execute("NOTIFY acctd_account")


def newer(conn, have: dict[int, Account]) -> list[dict]:
    """The server's accounts changed later than this gateway's copy (or not here)."""
    out = []
    for oid, spec, changed in conn.execute("SELECT oid, spec, changed FROM account ORDER BY oid"
                                           ).fetchall():
        mine = have.get(int(oid))
        if mine is None or mine.changed < changed:
            out.append(spec)
    return out


def take(con, specs: list[dict]) -> list[str]:
    """Write these accounts into DuckDB in one transaction (their units move
    to them); returns the names of those refused (a name another local
    account holds)."""
    refused = []
    con.execute("BEGIN")
    try:
        for s in specs:
            clash = con.execute("SELECT oid FROM account WHERE name = ? AND oid <> ?",
                                [s["name"], s["oid"]]).fetchall()
            if clash:
                refused.append(s["name"])
                continue
            row = [s[k] for k in _FIELDS]
            row = [naive(dt.datetime.fromisoformat(v)) if k in
                   ("nextplan_from", "created", "changed", "blocked") and v else v
                   for k, v in zip(_FIELDS, row)]
            con.execute("DELETE FROM account WHERE oid = ?", [s["oid"]])
            con.execute(f"INSERT INTO account ({', '.join(_FIELDS)}) VALUES "
                        f"({', '.join('?' * len(_FIELDS))})", row)
            con.execute("DELETE FROM account_unit WHERE account_oid = ?", [s["oid"]])
            for u in s["units"]:
                con.execute("DELETE FROM account_unit WHERE unit_oid = ?", [int(u, 16)])
                con.execute("INSERT INTO account_unit VALUES (?, ?)", [int(u, 16), s["oid"]])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return refused
