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

# fee: a subscription fee (its spread's share); overdraft: traffic over the
# included volume; payment: money in; adjustment: an operator's correction
# (`balance add|remove|set`). Other modules may add kinds (invoice lines are
# not ledger rows: they describe rows).
KINDS = ("fee", "overdraft", "payment", "adjustment",
         "percentile")   # a transit account's month at its 95th percentile (invoicing.py)
UTC = dt.timezone.utc


def naive(ts: dt.datetime | None) -> dt.datetime | None:
    """UTC without a zone, as the schema's TIMESTAMPs hold it."""
    if ts is None:
        return None
    return (ts.astimezone(UTC) if ts.tzinfo else ts).replace(tzinfo=None)


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
    rows = [[first + i, naive(e.ts), e.account_oid, e.kind, e.plan, e.subplan,
             naive(e.period_start), naive(e.period_end), e.amount, e.bytes_in, e.bytes_out,
             e.cause, e.reference] for i, e in enumerate(entries)]
    con.executemany(f"INSERT INTO ledger ({', '.join(_COLUMNS)}) VALUES "
                    f"({', '.join('?' * len(_COLUMNS))})", rows)
    return [r[0] for r in rows]


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
