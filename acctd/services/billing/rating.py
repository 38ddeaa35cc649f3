"""Rating: a drain's traffic and the clock turned into ledger charges (pure).

Everything is cumulative within a month, in the billing time zone: the fee
due so far and the overdraft due so far are computed from scratch, rounded
once, and a charge is what is due minus what the rating state says has been
charged. So rounding never drifts (30 daily shares of 10.00 add up to 10.00
exactly), a period is charged once however many drains fall in it, and a
drain re-run after a crash (its state rolled back with it) charges the same.

    fee        monthly: the whole fee at the month's first drain (prorated to
               the day from a start mid-month with adjust-fee); daily/hourly:
               the share of the days/hours begun since the month (or the
               account) started, of the month's real number of them (DST
               months have 743 or 745 hours, February 28 or 29 days).
    overdraft  the bytes of the subplan's policy over the included volume
               (prorated to the day from a start mid-month with
               adjust-included), times the price per MB, by direction or sum.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
from collections.abc import Iterable, Mapping
from decimal import Decimal
from zoneinfo import ZoneInfo

from acctd.services.billing.money import Currency
from acctd.services.billing.tariff import MB, UNLIMITED, Subplan
from acctd.store.rollup import period_end, period_start

UTC = dt.timezone.utc
HOUR = dt.timedelta(hours=1)
# exact products and quotients of byte counts and prices: 2**20 divides 10**20
_EXACT = decimal.Context(prec=60)


@dataclasses.dataclass(frozen=True)
class State:
    """What one (account, subplan, kind, month) has had so far."""
    charged: Decimal = Decimal(0)          # positive: money taken
    bytes_in: int = 0
    bytes_out: int = 0
    last: dt.datetime | None = None        # the end of the last charged fee period


@dataclasses.dataclass(frozen=True)
class Charge:
    """A ledger row to write (amount negative: a charge)."""
    account_oid: int
    kind: str
    amount: Decimal
    plan: int | None
    subplan: int
    period_start: dt.datetime
    period_end: dt.datetime
    bytes_in: int = 0
    bytes_out: int = 0


@dataclasses.dataclass(frozen=True)
class Rated:
    """An account as rating sees it."""
    oid: int
    plan: int | None
    created: dt.datetime


Key = tuple[int, int, str, dt.datetime]   # account, subplan, "fee" | "overdraft", month start


# --- calendar --------------------------------------------------------------------

def month(now: dt.datetime, zone: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) in UTC of the local month holding `now` (the rollups' month)."""
    start = period_start("month", now, zone)
    return start, period_end("month", start, zone)


def days_in(start: dt.datetime, zone: ZoneInfo) -> int:
    first = start.astimezone(zone).date()
    return ((first + dt.timedelta(days=32)).replace(day=1) - first).days


def fee_period(spread: str, now: dt.datetime, zone: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """The fee period [start, end) holding now: a rollup month, day or hour."""
    kind = {"monthly": "month", "daily": "day", "hourly": "hour"}[spread]
    start = period_start(kind, now, zone)
    return start, period_end(kind, start, zone)


def since(created: dt.datetime, month_start: dt.datetime) -> dt.datetime:
    """When the account's billing in this month begins."""
    return max(created, month_start)


def _days_left(start: dt.datetime, month_end: dt.datetime, zone: ZoneInfo) -> int:
    """Days from start's local day to the month's end, that day counted."""
    return (month_end.astimezone(zone).date() - start.astimezone(zone).date()).days


# --- what is due -----------------------------------------------------------------

def fee_due(sp: Subplan, now: dt.datetime, created: dt.datetime, zone: ZoneInfo,
            cur: Currency) -> Decimal:
    """The fee due for the month holding `now`, up to and including now's
    fee period (rounded once: what the month's charges add up to)."""
    start, end = month(now, zone)
    begin = since(created, start)
    if sp.fee == 0 or now < begin:
        return Decimal(0)
    if sp.spread == "monthly":
        share = Decimal(1) if not sp.adjust_fee or begin == start else \
            Decimal(_days_left(begin, end, zone)) / days_in(start, zone)
    elif sp.spread == "daily":
        days = (now.astimezone(zone).date() - begin.astimezone(zone).date()).days + 1
        share = Decimal(days) / days_in(start, zone)
    else:
        hours_of_month = (end - start) // HOUR
        hours = (period_start("hour", now, zone) - period_start("hour", begin, zone)) // HOUR + 1
        share = Decimal(hours) / hours_of_month
    return cur.quantize(_EXACT.multiply(sp.fee, share))


def included(sp: Subplan, now: dt.datetime, created: dt.datetime,
             zone: ZoneInfo) -> dict[str, int | None]:
    """dir -> included bytes this month (None: unlimited), prorated to the
    day for a start mid-month when adjust-included."""
    start, end = month(now, zone)
    begin = since(created, start)
    out = {}
    for d in (("sum",) if sp.by_sum else ("in", "out")):
        v = sp.included.get(d, 0)
        if v is not UNLIMITED and sp.adjust_included and begin > start:
            v = v * _days_left(begin, end, zone) // days_in(start, zone)
        out[d] = v
    return out


def overdraft_due(sp: Subplan, incl: Mapping[str, int | None], bytes_in: int, bytes_out: int,
                  cur: Currency) -> Decimal:
    """The overdraft due for a month's bytes so far."""
    used = {"sum": bytes_in + bytes_out} if sp.by_sum else {"in": bytes_in, "out": bytes_out}
    total = Decimal(0)
    for d, n in used.items():
        limit = incl.get(d, 0)
        price = sp.overdraft.get(d, Decimal(0))
        if limit is UNLIMITED or not price or n <= limit:
            continue
        total = _EXACT.add(total, _EXACT.multiply(Decimal(n - limit), price))
    return cur.quantize(_EXACT.divide(total, MB))


# --- one drain -------------------------------------------------------------------

def rate(subplans: Mapping[int, Subplan], plans: Mapping[int, tuple[int, ...]],
         accounts: Iterable[Rated], usage: Mapping[tuple[int, int], tuple[int, int]],
         state: Mapping[Key, State], now: dt.datetime, zone: ZoneInfo, cur: Currency,
         fees: dict | None = None) -> tuple[list[Charge], dict[Key, State]]:
    """The charges of one drain at `now`, and the states they change.

    plans: plan number -> its subplans; usage: (account, subplan) -> this
    drain's (bytes in, bytes out) of that subplan's policy; state: what each
    (account, subplan, kind, month) has had (missing: nothing); fees: a cache
    of fee_due by (subplan, month, start) the caller may keep between drains."""
    fees = {} if fees is None else fees
    start, end = month(now, zone)
    charges: list[Charge] = []
    changed: dict[Key, State] = {}
    for a in accounts:
        if a.plan is None or a.created >= end or a.created > now:
            continue
        begin = since(a.created, start)
        for n in plans.get(a.plan, ()):
            sp = subplans[n]
            if sp.fee:
                k = (a.oid, n, "fee", start)
                memo = (n, start, begin, fee_period(sp.spread, now, zone)[0])
                due = fees.get(memo)
                if due is None:
                    due = fees[memo] = fee_due(sp, now, a.created, zone, cur)
                st = state.get(k, State())
                if due != st.charged:
                    p_start, p_end = fee_period(sp.spread, now, zone)
                    charges.append(Charge(a.oid, "fee", -(due - st.charged), a.plan, n,
                                          max(st.last or begin, begin), p_end))
                    changed[k] = dataclasses.replace(st, charged=due, last=p_end)
            got = usage.get((a.oid, n))
            if got is None or not (got[0] or got[1]):
                continue
            k = (a.oid, n, "overdraft", start)
            st = state.get(k, State())
            b_in, b_out = st.bytes_in + got[0], st.bytes_out + got[1]
            due = overdraft_due(sp, included(sp, now, a.created, zone), b_in, b_out, cur) \
                if sp.overdraft else Decimal(0)
            if due != st.charged:
                charges.append(Charge(a.oid, "overdraft", -(due - st.charged), a.plan, n,
                                      start, end, got[0], got[1]))
            changed[k] = State(due, b_in, b_out, now)
    return charges, changed


def next_plans(accounts: Iterable, now: dt.datetime) -> dict[int, int]:
    """Accounts whose nextplan takes effect by now: oid -> the new plan."""
    return {a.oid: a.nextplan for a in accounts
            if a.nextplan is not None and a.nextplan_from is not None and a.nextplan_from <= now}


def replay(subplans: Mapping[int, Subplan], plans: Mapping[int, tuple[int, ...]],
           accounts: Iterable[Rated], hourly: Mapping[dt.datetime, Mapping], start: dt.datetime,
           end: dt.datetime, zone: ZoneInfo, cur: Currency
           ) -> tuple[dict[tuple[int, int, str], Decimal], dict[Key, State]]:
    """Rate [start, end) again from hourly usage (the stored hour rollups):
    one drain at the last instant of every hour (the last at `end`). Returns
    the charges by (account, subplan, kind), positive, and the state after."""
    accounts = list(accounts)
    state: dict[Key, State] = {}
    totals: dict[tuple[int, int, str], Decimal] = {}
    fees: dict = {}
    hour = period_start("hour", start, zone)
    while hour < end:
        nxt = period_end("hour", hour, zone)
        at = min(nxt - dt.timedelta(microseconds=1), end)
        got, changed = rate(subplans, plans, accounts, hourly.get(hour, {}), state, at, zone,
                            cur, fees)
        state.update(changed)
        for c in got:
            k = (c.account_oid, c.subplan, c.kind)
            totals[k] = totals.get(k, Decimal(0)) - c.amount
        hour = nxt
    return totals, state
