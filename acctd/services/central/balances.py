"""The billing ledger across gateways (README "Several gateways").

Every ledger row a gateway writes goes into the outbox as kind LEDGER, in
the transaction of the drain that follows it (the drain that rated it: the
central service's in_drain runs after billing's, in the same transaction),
or of the command that wrote it (enqueue_rows, called by billing's
commands). A meta watermark, central_ledger_seq, is the last ledger seq
enqueued, moved in that same transaction: a row is enqueued once, whatever
path wrote it. The shipper stores the rows in the server's `ledger` keyed
by (gateway, seq), with the drains around them in seq order, exactly once.

What a gateway decides on is its own ledger plus the other gateways'
shipped rows (elsewhere()), read at connect and on every NOTIFY
acctd_ledger, and their payments (payments_elsewhere(): what pays an
invoice). During an outage the others' sums stay the last known.
"""

from __future__ import annotations

import json
from decimal import Decimal

from acctd.services.central import ship

LEDGER = 1   # the outbox kind of billing ledger rows
WATERMARK = "central_ledger_seq"
BATCH = 20_000   # rows an outbox row at most: a ledger older than [central] ships in steps
_COLUMNS = ("seq", "ts", "account_oid", "kind", "plan", "subplan", "period_start",
            "period_end", "amount", "bytes_in", "bytes_out", "cause", "reference")


def unshipped(tx) -> list[tuple]:
    """The ledger rows written since the last enqueue, in seq order (BATCH
    at most); ts as ISO text (UTC), amount as exact decimal text."""
    after = int(tx.meta(WATERMARK) or 0)
    return tx.con.execute(
        "SELECT seq, strftime(ts, '%Y-%m-%dT%H:%M:%S.%f+00:00'), account_oid, kind, plan, "
        "subplan, strftime(period_start, '%Y-%m-%dT%H:%M:%S.%f+00:00'), "
        "strftime(period_end, '%Y-%m-%dT%H:%M:%S.%f+00:00'), amount::VARCHAR, bytes_in, "
        "bytes_out, cause, reference FROM ledger WHERE seq > ? ORDER BY seq LIMIT ?",
        [after, BATCH]
    ).fetchall()


def enqueue_rows(central, tx, now) -> int:
    """The unshipped ledger rows as one outbox row of kind LEDGER, in tx
    (the caller's transaction); returns how many."""
    rows = unshipped(tx)
    if not rows:
        return 0
    central.enqueue(tx, LEDGER, now, len(rows), json.dumps(
        [[int(v) if isinstance(v, int) else v for v in r] for r in rows]).encode())
    tx.set_meta(WATERMARK, str(rows[-1][0]))
    return len(rows)


def store(conn, gateway_id: int, items: list[tuple[int, int, bytes]]) -> None:
    """ship()'s shipper of kind LEDGER, inside its transaction. The key
    (gateway, seq) refuses a row twice; shipped_seq already skips it."""
    rows = [(gateway_id, *r) for _seq, _ts, blob in items for r in json.loads(blob)]
    conn.cursor().executemany(
        f"INSERT INTO ledger (gateway_id, {', '.join(_COLUMNS)}) VALUES "
        f"({', '.join(['%s'] * (len(_COLUMNS) + 1))}) ON CONFLICT (gateway_id, seq) DO NOTHING",
        rows)
    conn.execute("NOTIFY acctd_ledger")


ship.SHIPPERS[LEDGER] = store


def elsewhere(conn, gateway_id: int) -> dict[int, Decimal]:
    """account oid -> the sum of the other gateways' shipped rows."""
    return {int(a): Decimal(v) for a, v in conn.execute(
        "SELECT account_oid, sum(amount)::text FROM ledger WHERE gateway_id <> %s "
        "GROUP BY 1", (gateway_id,)).fetchall()}


def payments_elsewhere(conn, gateway_id: int) -> list[tuple]:
    """The other gateways' payments, (account oid, ts, amount): what pays
    an invoice wherever it was paid (invoicing's unpaid and paid)."""
    return [(int(a), ts, Decimal(v)) for a, ts, v in conn.execute(
        "SELECT account_oid, ts, amount::text FROM ledger WHERE gateway_id <> %s AND "
        "kind = 'payment' ORDER BY ts", (gateway_id,)).fetchall()]
