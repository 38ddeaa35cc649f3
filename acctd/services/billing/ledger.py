"""The append-only ledger: every fee, overdraft charge, payment and
adjustment is one row; an account's balance is the sum of its rows, never a
number kept beside them. Charges are negative, payments positive.

Works on a DuckDB connection (the daemon's, inside the drain's transaction
when rating), so the rows commit with whatever else that transaction holds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from decimal import Decimal

import numpy as np

from acctd.store.migrations import MONEY
from acctd.store.rollup import naive_utc as naive

# fee: a subscription fee (its spread's share); overdraft: traffic over the
# included volume; payment: money in; adjustment: an operator's correction
# (`balance add|remove|set`). Other modules may add kinds (invoice lines are
# not ledger rows: they describe rows).
KINDS = ("fee", "overdraft", "payment", "adjustment",
         "percentile")   # a transit account's month at its 95th percentile (invoicing.py)
UTC = dt.timezone.utc


def aware(ts: dt.datetime | None) -> dt.datetime | None:
    return None if ts is None else ts.replace(tzinfo=UTC)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One ledger row. period_*: what the row pays for (a fee's day, an
    overdraft's month); bytes_*: the traffic it rates; cause: why (a drain,
    `acctctl billing account ... balance add`, a payment file); reference:
    an outside identifier (a payment's)."""
    account_oid: int
    kind: str
    amount: Decimal
    ts: dt.datetime
    plan: int | None = None
    subplan: int | None = None
    period_start: dt.datetime | None = None
    period_end: dt.datetime | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    cause: str = ""
    reference: str | None = None
    seq: int | None = None   # given by append()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("ts", "period_start", "period_end"):
            d[k] = None if d[k] is None else d[k].isoformat()
        d["amount"] = str(self.amount)
        return d


_COLUMNS = ("seq", "ts", "account_oid", "kind", "plan", "subplan", "period_start",
            "period_end", "amount", "bytes_in", "bytes_out", "cause", "reference")
_TYPES = ("BIGINT", "TIMESTAMP", "UINTEGER", "VARCHAR", "INTEGER", "INTEGER", "TIMESTAMP",
          "TIMESTAMP", "VARCHAR", "UBIGINT", "UBIGINT", "VARCHAR", "VARCHAR")


def append(con, entries: Iterable[Entry]) -> list[int]:
    """Add rows; returns their sequence numbers (increasing, in order given)."""
    entries = list(entries)
    if not entries:
        return []
    for e in entries:
        if e.kind not in KINDS:
            raise ValueError(f"ledger kind {e.kind!r}; expected one of {', '.join(KINDS)}")
        if not isinstance(e.amount, Decimal):
            raise TypeError(f"ledger amount must be a Decimal, got {type(e.amount).__name__}")
    first = con.execute("SELECT coalesce(max(seq), 0) + 1 FROM ledger").fetchall()[0][0]
    cols = [list(range(first, first + len(entries))), [naive(e.ts) for e in entries],
            [e.account_oid for e in entries], [e.kind for e in entries],
            [e.plan for e in entries], [e.subplan for e in entries],
            [naive(e.period_start) for e in entries], [naive(e.period_end) for e in entries],
            [str(e.amount) for e in entries],   # text: exact into DECIMAL
            [e.bytes_in for e in entries], [e.bytes_out for e in entries],
            [e.cause for e in entries], [e.reference for e in entries]]
    insert_columns(con, "ledger", _COLUMNS, _TYPES, cols)
    return cols[0]


def append_columns(con, ts: dt.datetime, cols, cause: str) -> None:
    """Many rows at once (a drain's charges): cols as rating.rate_book gives
    them, numpy columns with amounts in integer nanos."""
    n = len(cols["account"])
    if not n:
        return
    first = con.execute("SELECT coalesce(max(seq), 0) + 1 FROM ledger").fetchall()[0][0]

    def stamps(us):
        return np.asarray(us, np.int64).astype("datetime64[us]")
    kinds = np.asarray(cols["kind"], object)
    frame = {"seq": np.arange(first, first + n, dtype=np.int64),
             "account_oid": np.asarray(cols["account"], np.uint32),
             # the kind as its index in KINDS: numbers cross into DuckDB as one buffer
             "kind": np.select([kinds == k for k in KINDS], np.arange(len(KINDS)), -1),
             "plan": np.asarray(cols["plan"], np.int32),
             "subplan": np.asarray(cols["subplan"], np.int32),
             "period_start": stamps(cols["period_start"]), "period_end": stamps(cols["period_end"]),
             "amount": np.asarray(cols["amount"], np.int64),
             "bytes_in": np.asarray(cols["bytes_in"], np.uint64),
             "bytes_out": np.asarray(cols["bytes_out"], np.uint64)}
    if (frame["kind"] < 0).any():
        raise ValueError(f"ledger kinds {sorted(set(kinds) - set(KINDS))}; expected one of "
                         f"{', '.join(KINDS)}")
    name = f"_ledger_rows_{id(frame)}"
    value = {"ts": "$ts", "cause": "$cause",
             "kind": "[" + ", ".join(f"'{k}'" for k in KINDS) + "][kind + 1]",
             # nanos to DECIMAL by an exact decimal product, never a float
             "amount": f"amount::DECIMAL(38, 0) * 0.000000001::{MONEY}"}
    con.register(name, frame)
    try:
        con.execute(f"INSERT INTO ledger ({', '.join(_COLUMNS[:-1])}) SELECT "
                    + ", ".join(value.get(c, c) for c in _COLUMNS[:-1]) + f" FROM {name}",
                    {"ts": naive(ts), "cause": cause})
    finally:
        con.unregister(name)


def insert_columns(con, table: str, names, types, cols, replace: bool = False) -> None:
    """Many rows in one statement (executemany is a statement per row);
    replace: an upsert on the table's key (never for the ledger)."""
    sel = ", ".join(f"unnest(${i + 1}::{t}[])" + ("::" + MONEY if t == "VARCHAR" and n in
                                                   ("amount", "charged") else "")
                    for i, (n, t) in enumerate(zip(names, types)))
    verb = "INSERT OR REPLACE" if replace else "INSERT"
    con.execute(f"{verb} INTO {table} ({', '.join(names)}) SELECT {sel}", cols)


def balance(con, account_oid: int) -> Decimal:
    """The sum of the account's rows."""
    v = con.execute("SELECT sum(amount) FROM ledger WHERE account_oid = ?",
                    [account_oid]).fetchall()[0][0]
    return Decimal(0) if v is None else Decimal(v)


def balances(con) -> dict[int, Decimal]:
    """Every account's balance that has a row."""
    return {int(a): Decimal(v) for a, v in
            con.execute("SELECT account_oid, sum(amount) FROM ledger GROUP BY account_oid"
                        ).fetchall()}


def rows(con, account_oid: int | None = None, start: dt.datetime | None = None,
         end: dt.datetime | None = None, kind: str | None = None) -> list[Entry]:
    """Rows in sequence order: one account's (or all), written in [start, end)."""
    where, params = [], []
    for cond, val in (("account_oid = ?", account_oid), ("ts >= ?", naive(start)),
                      ("ts < ?", naive(end)), ("kind = ?", kind)):
        if val is not None:
            where.append(cond)
            params.append(val)
    sql = f"SELECT {', '.join(_COLUMNS)} FROM ledger"
    if where:
        sql += " WHERE " + " AND ".join(where)
    out = []
    for r in con.execute(sql + " ORDER BY seq", params).fetchall():
        d = dict(zip(_COLUMNS, r))
        for k in ("ts", "period_start", "period_end"):
            d[k] = aware(d[k])
        d["amount"] = Decimal(d["amount"])
        out.append(Entry(**d))
    return out
