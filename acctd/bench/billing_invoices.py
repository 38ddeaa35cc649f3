"""`make bench`, billing: a month's invoices for 10,000 postpaid accounts
(compose from the ledger and store), as JSON lines {"name", "value", "unit"}.
The ledger is synthesised: a daily fee for each account on each of the
month's 30 days, two overdraft rows, an adjustment for one account in ten
and a payment for one in three (340,000 rows), into a temporary DuckDB file.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import time

from acctd.bench.control import emit
from acctd.services.billing import invoices
from acctd.services.billing.money import Currency
from acctd.store.database import Storage

UTC = dt.timezone.utc
MONTH = dt.date(2026, 11, 1)
ACCOUNTS = 10_000


def fill(con, n: int) -> None:
    """The month's rows, written by SQL (the bench times invoicing, not inserts)."""
    con.execute("""
        INSERT INTO ledger (seq, ts, account_oid, kind, plan, subplan, amount, bytes_in,
                            bytes_out, cause, reference)
        SELECT row_number() OVER () AS seq, ts, a, kind, 1, sub, amount, bi, 0, 'bench', ref
        FROM (
            SELECT TIMESTAMP '2026-11-01' + to_days(d::INTEGER) AS ts, a, 'fee' AS kind, 1 AS sub,
                   -1.00 AS amount, 0 AS bi, NULL AS ref
            FROM range(1, $n + 1) t(a), range(30) s(d)
            UNION ALL
            SELECT TIMESTAMP '2026-11-15' + to_hours(h::INTEGER), a, 'overdraft', 2,
                   -(a % 97) / 100, 1048576 * (a % 13), NULL
            FROM range(1, $n + 1) t(a), range(2) s(h)
            UNION ALL
            SELECT TIMESTAMP '2026-11-20', a, 'adjustment', NULL, 2.50, 0, NULL
            FROM range(1, $n + 1) t(a) WHERE a % 10 = 0
            UNION ALL
            SELECT TIMESTAMP '2026-11-25', a, 'payment', NULL, 20.00, 0, 'p' || a
            FROM range(1, $n + 1) t(a) WHERE a % 3 = 0)
    """, {"n": n})


def bench_invoices(n: int = ACCOUNTS) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        with Storage(os.path.join(tmp, "bench.duckdb")) as st:
            fill(st.con, n)
            now = dt.datetime(2026, 12, 1, 0, 5, tzinfo=UTC)
            t = time.perf_counter()
            issued = invoices.issue(st.con, MONTH, UTC, Currency("EUR", 2), now, 14,
                                    list(range(1, n + 1)))
            took = time.perf_counter() - t
            assert len(issued) == n, len(issued)
            return took


def main() -> None:
    emit("billing.invoices_s.accounts_10k", bench_invoices(), "s")


if __name__ == "__main__":
    main()
