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

import numpy as np

from acctd.services.billing.money import Currency
from acctd.services.billing.tariff import MB, UNLIMITED, Subplan
from acctd.store.rollup import from_us, period_end, period_start, to_us

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
# The month's state of every (account, subplan) slot is a row of a numpy
# array (a Book), so a drain for 10,000 accounts is a few array operations.
# Money in it is integer nanos (10**-9 of the currency, the ledger's scale):
# integers are as exact as Decimal, and every charged amount is a whole
# number of the currency's minor unit.

NANO = 10 ** 9
SLOT = np.dtype([("account", "<u4"), ("subplan", "<i4"), ("bytes_in", "<u8"),
                 ("bytes_out", "<u8"), ("over_nano", "<i8"), ("fee_nano", "<i8"),
                 ("fee_last_us", "<i8")])


def nanos(d: Decimal) -> int:
    """A Decimal of at most 9 places as integer nanos (exact)."""
    return int(d.scaleb(9))


def from_nanos(n: int) -> Decimal:
    return Decimal(int(n)).scaleb(-9)


@dataclasses.dataclass
class Book:
    """One month's slots: state (SLOT rows, sorted by account and subplan)."""
    month: dt.datetime
    slots: np.ndarray

    @classmethod
    def empty(cls, month_start: dt.datetime) -> "Book":
        return cls(month_start, np.zeros(0, SLOT))

    def index(self, account: np.ndarray, subplan: np.ndarray) -> np.ndarray:
        """The slot of each (account, subplan); -1 where there is none."""
        keys = self.slots["account"].astype(np.int64) << 32 | self.slots["subplan"]
        want = account.astype(np.int64) << 32 | subplan.astype(np.int64)
        i = np.searchsorted(keys, want)
        i = np.minimum(i, max(len(keys) - 1, 0))
        ok = (keys[i] == want) if len(keys) else np.zeros(len(want), bool)
        return np.where(ok, i, -1)

    def with_slots(self, account, subplan) -> "Book":
        """This book with a slot for each (account, subplan), kept sorted."""
        have = self.index(np.asarray(account), np.asarray(subplan)) if len(account) else \
            np.zeros(0, np.int64)
        new = np.zeros(int((have < 0).sum()), SLOT)
        new["account"] = np.asarray(account)[have < 0]
        new["subplan"] = np.asarray(subplan)[have < 0]
        if not len(new):
            return self
        slots = np.concatenate([self.slots, new])
        slots = slots[np.lexsort((slots["subplan"], slots["account"]))]
        return Book(self.month, slots)


def _us(t: dt.datetime) -> int:
    return to_us(t)


def _due_over(sp: Subplan, cum_in, cum_out, incl: np.ndarray, cur: Currency) -> np.ndarray:
    """Overdraft due in nanos, per slot: overdraft_due() in integers.
    incl: (n, 3) included in/out/sum bytes, -1 unlimited."""
    n = len(cum_in)
    a = np.zeros(n, np.int64)          # whole MBs times the price: nanos
    b = np.zeros(n, np.int64)          # the rest: nanos times MB
    used = {"sum": cum_in + cum_out} if sp.by_sum else {"in": cum_in, "out": cum_out}
    col = {"in": 0, "out": 1, "sum": 2}
    for d, u in used.items():
        price = nanos(sp.overdraft.get(d, Decimal(0)))
        if not price:
            continue
        lim = incl[:, col[d]]
        over = np.where(lim < 0, 0, np.maximum(u - np.maximum(lim, 0), 0))
        q, r = np.divmod(over, MB)
        if (q > (1 << 62) // price).any():
            raise OverflowError("an overdraft beyond 4.6e9 in the currency")
        a += q * price
        b += r * price
    unit = NANO // 10 ** cur.decimals
    a1, a0 = np.divmod(a, unit)
    k, rr = np.divmod(a0 * MB + b, MB * unit)
    return (a1 + k + (2 * rr >= MB * unit)) * unit


def rate_book(subplans: Mapping[int, Subplan], book: Book, plan: np.ndarray,
              created_us: np.ndarray, used_in: np.ndarray, used_out: np.ndarray,
              now: dt.datetime, zone: ZoneInfo, cur: Currency, fees: dict | None = None
              ) -> tuple[dict[str, np.ndarray], Book]:
    """The charges of one drain at `now` (columns, amounts in nanos, negative)
    and the book after it.

    Per slot of `book` (its month must hold now): plan, the account's plan
    number (-1: the subplan is not in it now, so it is not rated); created_us,
    when the account was made; used_in/used_out, this drain's bytes of the
    subplan's policy. fees: fee_due() by (subplan, start, period) between drains."""
    fees = {} if fees is None else fees
    start, end = month(now, zone)
    s0, now_us = _us(start), _us(now)
    slots = book.slots.copy()
    rated = (plan >= 0) & (created_us < _us(end)) & (created_us <= now_us)
    begin = np.maximum(created_us, s0)
    out: dict[str, list] = {k: [] for k in ("row", "kind", "amount", "period_start",
                                            "period_end", "bytes_in", "bytes_out")}

    def add(rows, kind, amount, p_start, p_end, b_in, b_out):
        out["row"].append(rows)
        out["kind"].append(np.full(len(rows), kind, object))
        for k, v in (("amount", amount), ("period_start", p_start), ("period_end", p_end),
                     ("bytes_in", b_in), ("bytes_out", b_out)):
            out[k].append(np.broadcast_to(np.asarray(v, np.int64), len(rows)))

    for n, sp in subplans.items():
        m = rated & (slots["subplan"] == n)
        if not m.any():
            continue
        starts, where = np.unique(begin[m], return_inverse=True)
        rows = np.flatnonzero(m)
        if sp.fee:
            p_start, p_end = fee_period(sp.spread, now, zone)
            due = np.array([fees.setdefault((n, s0, int(b), p_start), nanos(
                fee_due(sp, now, from_us(int(b)), zone, cur))) for b in starts], np.int64)[where]
            delta = due - slots["fee_nano"][rows]
            ch = delta != 0
            if ch.any():
                r = rows[ch]
                add(r, "fee", -delta[ch], np.maximum(slots["fee_last_us"][r], begin[r]),
                    _us(p_end), 0, 0)
                slots["fee_nano"][r] = due[ch]
                slots["fee_last_us"][r] = _us(p_end)
        moved = (used_in[rows] > 0) | (used_out[rows] > 0)
        if not moved.any():
            continue
        r = rows[moved]
        slots["bytes_in"][r] += used_in[r].astype(np.uint64)
        slots["bytes_out"][r] += used_out[r].astype(np.uint64)
        if not sp.overdraft:
            continue
        incl = np.array([[-1 if v is UNLIMITED else v for v in (
            inc.get("in", 0), inc.get("out", 0), inc.get("sum", 0))]
            for inc in (included(sp, now, from_us(int(b)), zone) for b in starts)],
            np.int64).reshape(-1, 3)[where[moved]]
        due = _due_over(sp, slots["bytes_in"][r].astype(np.int64),
                        slots["bytes_out"][r].astype(np.int64), incl, cur)
        delta = due - slots["over_nano"][r]
        ch = delta != 0
        if ch.any():
            rc = r[ch]
            add(rc, "overdraft", -delta[ch], s0, _us(end), used_in[rc], used_out[rc])
            slots["over_nano"][rc] = due[ch]
    if out["row"]:
        cols = {k: np.concatenate(v) for k, v in out.items()}
    else:
        cols = {k: np.zeros(0, object if k == "kind" else np.int64) for k in out}
    rows = cols.pop("row")
    cols["account"] = slots["account"][rows]
    cols["subplan"] = slots["subplan"][rows]
    cols["plan"] = plan[rows]
    return cols, Book(book.month, slots)


def fair_use(subplans: Mapping[int, Subplan], book: Book, plan: np.ndarray,
             created_us: np.ndarray, now: dt.datetime, zone: ZoneInfo
             ) -> dict[int, tuple[int | None, int | None]]:
    """Accounts past a subplan's fair-use threshold this month: account ->
    the (in, out) rate its units are limited to (the lowest of several)."""
    out: dict[int, tuple[int | None, int | None]] = {}
    sl = book.slots
    for n, sp in subplans.items():
        if sp.fair_use_rate is None:
            continue
        for i in np.flatnonzero((sl["subplan"] == n) & (plan >= 0)):
            incl = included(sp, now, from_us(int(created_us[i])), zone)
            used = {"sum": int(sl["bytes_in"][i]) + int(sl["bytes_out"][i]),
                    "in": int(sl["bytes_in"][i]), "out": int(sl["bytes_out"][i])}
            if any(v is not UNLIMITED and used[d] * 100 >= v * sp.fair_use_at
                   for d, v in incl.items() if d in sp.included):
                a = int(sl["account"][i])
                have = out.get(a)
                out[a] = sp.fair_use_rate if have is None else tuple(
                    min((x for x in (h, r) if x is not None), default=None)
                    for h, r in zip(have, sp.fair_use_rate))
    return out


def book_of(start: dt.datetime, pairs, state: Mapping[Key, State]) -> Book:
    """A book of the (account, subplan) pairs from plain states."""
    pairs = sorted(set(pairs))
    book = Book.empty(start).with_slots(np.array([p[0] for p in pairs], np.uint32),
                                        np.array([p[1] for p in pairs], np.int32))
    sl = book.slots
    for i, (a, n) in enumerate(pairs):
        fee, over = state.get((a, n, "fee", start)), state.get((a, n, "overdraft", start))
        if fee:
            sl["fee_nano"][i], sl["fee_last_us"][i] = nanos(fee.charged), _us(fee.last)
        if over:
            sl["over_nano"][i] = nanos(over.charged)
            sl["bytes_in"][i], sl["bytes_out"][i] = over.bytes_in, over.bytes_out
    return book


def rate(subplans: Mapping[int, Subplan], plans: Mapping[int, tuple[int, ...]],
         accounts: Iterable[Rated], usage: Mapping[tuple[int, int], tuple[int, int]],
         state: Mapping[Key, State], now: dt.datetime, zone: ZoneInfo, cur: Currency,
         fees: dict | None = None) -> tuple[list[Charge], dict[Key, State]]:
    """rate_book() for plain data: plans, plan number -> its subplans; usage,
    (account, subplan) -> this drain's (bytes in, bytes out); state, what each
    (account, subplan, kind, month) has had (missing: nothing). Returns the
    charges and the states they change."""
    start = month(now, zone)[0]
    accounts = list(accounts)
    book = book_of(start, [(a.oid, n) for a in accounts for n in plans.get(a.plan, ())], state)
    sl = book.slots
    by = {a.oid: a for a in accounts}
    acct = [by[a] for a in sl["account"].tolist()]
    plan = np.array([a.plan if a.plan is not None else -1 for a in acct], np.int64)
    created = np.array([_us(a.created) for a in acct], np.int64)
    got = [usage.get((a, n), (0, 0)) for a, n in zip(sl["account"].tolist(),
                                                      sl["subplan"].tolist())]
    u_in = np.array([g[0] for g in got], np.int64)
    u_out = np.array([g[1] for g in got], np.int64)
    cols, after = rate_book(subplans, book, plan, created, u_in, u_out, now, zone, cur, fees)
    charges = [Charge(int(a), k, from_nanos(v), int(p), int(n), from_us(int(ps)),
                      from_us(int(pe)), int(bi), int(bo))
               for a, k, v, p, n, ps, pe, bi, bo in zip(
                   cols["account"], cols["kind"], cols["amount"], cols["plan"], cols["subplan"],
                   cols["period_start"], cols["period_end"], cols["bytes_in"], cols["bytes_out"])]
    changed = {}
    new, old = after.slots, book.slots
    for i in np.flatnonzero(new != old):
        a, n = int(new["account"][i]), int(new["subplan"][i])
        if new["fee_nano"][i] != old["fee_nano"][i]:
            changed[(a, n, "fee", start)] = State(from_nanos(new["fee_nano"][i]),
                                                  last=from_us(int(new["fee_last_us"][i])))
        if (new["bytes_in"][i], new["bytes_out"][i]) != (old["bytes_in"][i], old["bytes_out"][i]):
            changed[(a, n, "overdraft", start)] = State(
                from_nanos(new["over_nano"][i]), int(new["bytes_in"][i]),
                int(new["bytes_out"][i]), now)
    return charges, changed


def next_plans(accounts: Iterable, now: dt.datetime) -> dict[int, int]:
    """Accounts whose nextplan takes effect by now: oid -> the new plan."""
    return {a.oid: a.nextplan for a in accounts
            if a.nextplan is not None and a.nextplan_from is not None and a.nextplan_from <= now}


def replay(subplans: Mapping[int, Subplan], plans: Mapping[int, tuple[int, ...]],
           accounts: Iterable[Rated], hourly: Mapping[dt.datetime, Mapping], start: dt.datetime,
           end: dt.datetime, zone: ZoneInfo, cur: Currency
           ) -> tuple[dict[tuple[int, int, str], Decimal], Book]:
    """Rate [start, end) again from hourly usage (the stored hour rollups):
    one drain at the last instant of every hour (the last at `end`). Returns
    the charges by (account, subplan, kind), positive, and the book after."""
    accounts = list(accounts)
    by = {a.oid: a for a in accounts}
    book = book_of(month(start, zone)[0], [(a.oid, n) for a in accounts
                                           for n in plans.get(a.plan, ())], {})
    sl = book.slots
    plan = np.array([by[a].plan for a in sl["account"].tolist()], np.int64)
    created = np.array([_us(by[a].created) for a in sl["account"].tolist()], np.int64)
    slot = {(a, n): i for i, (a, n) in enumerate(zip(sl["account"].tolist(),
                                                      sl["subplan"].tolist()))}
    totals: dict[tuple[int, int, str], Decimal] = {}
    fees: dict = {}
    hour = period_start("hour", start, zone)
    while hour < end:
        nxt = period_end("hour", hour, zone)
        at = min(nxt - dt.timedelta(microseconds=1), end)
        if month(at, zone)[0] != book.month:      # a new month starts from nothing
            fresh = np.zeros(len(book.slots), SLOT)
            fresh[["account", "subplan"]] = book.slots[["account", "subplan"]]
            book = Book(month(at, zone)[0], fresh)
        u_in = np.zeros(len(book.slots), np.int64)
        u_out = np.zeros(len(book.slots), np.int64)
        for k, (b_in, b_out) in hourly.get(hour, {}).items():
            if k in slot:
                u_in[slot[k]] += b_in
                u_out[slot[k]] += b_out
        cols, book = rate_book(subplans, book, plan, created, u_in, u_out, at, zone, cur, fees)
        for a, n, kind, v in zip(cols["account"].tolist(), cols["subplan"].tolist(),
                                 cols["kind"].tolist(), cols["amount"].tolist()):
            totals[(a, n, kind)] = totals.get((a, n, kind), Decimal(0)) - from_nanos(v)
        hour = nxt
    return totals, book
