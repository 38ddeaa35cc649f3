"""Payments from a bank's or a payment provider's CSV file (date, account,
amount, reference) into the ledger, once each: the reference is the
payment's identity, so importing the same file again adds nothing.

The whole file is checked before anything is written (a bad row names its
line, and nothing of the file is imported), and rows are written in one
transaction per request.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
from decimal import Decimal

from acctd.services.billing import accounts, ledger
from acctd.services.billing.ledger import Entry
from acctd.services.billing.money import Currency, MoneyError

HEADER = ("date", "account", "amount", "reference")


class PaymentError(ValueError):
    """A row that is no payment: 'FILE:LINE: what is wrong'."""


@dataclasses.dataclass(frozen=True)
class Payment:
    line: int
    date: dt.date
    account: str          # a name or an oid, as the file has it
    amount: Decimal
    reference: str

    def to_dict(self) -> dict:
        return {"line": self.line, "date": self.date.isoformat(), "account": self.account,
                "amount": str(self.amount), "reference": self.reference}

    @classmethod
    def from_dict(cls, d: dict, cur: Currency) -> Payment:
        return cls(int(d["line"]), dt.date.fromisoformat(d["date"]), str(d["account"]),
                   cur.parse(d["amount"]), str(d["reference"]))


def parse(text: str, cur: Currency, source: str = "payments") -> list[Payment]:
    """The file's payments; PaymentError naming the first bad line. A
    first line `date,account,amount,reference` is a header; blank lines
    are skipped; a reference twice with different rows is an error, the
    same row twice is one payment."""
    out: list[Payment] = []
    seen: dict[str, Payment] = {}
    reader = csv.reader(io.StringIO(text), strict=True)   # a stray quote is an error
    while True:
        try:
            row = next(reader, None)
        except csv.Error as e:
            raise PaymentError(f"{source}:{reader.line_num}: {e}") from None
        if row is None:
            break
        n = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        cells = [c.strip() for c in row]
        if n == 1 and tuple(c.lower() for c in cells) == HEADER:
            continue

        def bad(why: str) -> PaymentError:
            return PaymentError(f"{source}:{n}: {why}")
        if len(cells) != 4:
            raise bad(f"expected 4 fields (date, account, amount, reference), got {len(cells)}")
        date, account, amount, reference = cells
        try:
            day = dt.date.fromisoformat(date)
        except ValueError:
            raise bad(f"expected a date like 2026-11-30, got {date!r}") from None
        try:
            value = cur.parse(amount)
        except MoneyError as e:
            raise bad(str(e)) from None
        if value <= 0:
            raise bad(f"a payment is a positive amount, got {amount}")
        if not account:
            raise bad("no account")
        if not reference:
            raise bad("no reference (it is what makes an import happen once)")
        p = Payment(n, day, account, value, reference)
        first = seen.get(reference)
        if first is not None:
            if (first.date, first.account, first.amount) != (day, account, value):
                raise bad(f"reference {reference!r} is on line {first.line} with another "
                          "payment")
            continue
        seen[reference] = p
        out.append(p)
    return out


@dataclasses.dataclass(frozen=True)
class Imported:
    added: list[tuple[int, Payment]]     # (account oid, payment)
    duplicates: int


def check(con, payments: list[Payment], cur: Currency, source: str = "payments"
          ) -> tuple[list[tuple[int, Payment]], int]:
    """(account oid, payment) of those not yet in the ledger, and how many
    are; PaymentError naming the line of an unknown account or of a
    reference the ledger holds for another payment."""
    refs = [p.reference for p in payments]
    stored: dict[str, tuple[int, Decimal]] = {}
    if refs:
        for ref, oid, amount in con.execute(
                "SELECT reference, account_oid, amount FROM ledger WHERE kind = 'payment' "
                "AND reference IN (SELECT unnest(?::VARCHAR[]))", [refs]).fetchall():
            stored[ref] = (int(oid), Decimal(amount))
    fresh, dup = [], 0
    oids: dict[str, int] = {}
    for p in payments:
        if p.account not in oids:
            try:
                oids[p.account] = accounts.find(con, p.account).oid
            except accounts.AccountError as e:
                raise PaymentError(f"{source}:{p.line}: {e}") from None
        oid = oids[p.account]
        have = stored.get(p.reference)
        if have is None:
            fresh.append((oid, p))
        elif have == (oid, p.amount):
            dup += 1
        else:
            raise PaymentError(f"{source}:{p.line}: reference {p.reference!r} was imported "
                               f"before for account {have[0]:06X}, amount {cur.format(have[1])}")
    return fresh, dup


def entries(fresh: list[tuple[int, Payment]], zone, now: dt.datetime,
            source: str = "payments") -> list[Entry]:
    """The ledger rows: dated the payment's day (its midnight in the
    billing zone), so a statement shows it in the month it was paid."""
    return [Entry(oid, "payment", p.amount,
                  dt.datetime.combine(p.date, dt.time(), zone).astimezone(ledger.UTC),
                  cause=f"{source}:{p.line} imported {now:%Y-%m-%d %H:%M:%S}",
                  reference=p.reference) for oid, p in fresh]


def import_payments(con, payments: list[Payment], cur: Currency, zone, now: dt.datetime,
                    source: str = "payments") -> Imported:
    """Check all, then write the new ones in one transaction: all or none."""
    fresh, dup = check(con, payments, cur, source)
    con.execute("BEGIN")
    try:
        ledger.append(con, entries(fresh, zone, now, source))
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return Imported(fresh, dup)
