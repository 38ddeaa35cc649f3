"""Rating with an injected clock (acctd/services/billing/rating.py): fees
spread monthly, daily and hourly charged once per period and adding up to
the fee exactly, across month boundaries, DST changes and leap days;
proration to the day; included volume then overdraft per MB."""

import datetime as dt
from decimal import Decimal
from types import MappingProxyType
from zoneinfo import ZoneInfo

from acctd.services.billing import rating
from acctd.services.billing.money import Currency
from acctd.services.billing.rating import Rated
from acctd.services.billing.tariff import MB, Subplan

BERLIN = ZoneInfo("Europe/Berlin")
EUR = Currency("EUR", 2)


def sp(**kw) -> Subplan:
    kw = {k: MappingProxyType(v) if isinstance(v, dict) else v for k, v in kw.items()}
    return Subplan(policy="ip", **kw)


def local(*a) -> dt.datetime:
    return dt.datetime(*a, tzinfo=BERLIN).astimezone(dt.timezone.utc)


def run(subplan: Subplan, times, created=local(2020, 1, 1), usage=()):
    """Drain at each time (usage: bytes (in, out) per drain, default none);
    every charge, and the state after."""
    state, charges, fees = {}, [], {}
    acct = [Rated(1, 1, created)]
    usage = list(usage)
    for i, t in enumerate(times):
        u = {(1, 7): usage[i]} if i < len(usage) else {}
        got, changed = rating.rate({7: subplan}, {1: (7,)}, acct, u, state, t, BERLIN, EUR, fees)
        state.update(changed)
        charges += got
    return charges, state


def every(start, end, step):
    t = start
    while t < end:
        yield t
        t += step


def test_a_daily_fee_is_charged_once_a_day_and_adds_up_to_the_fee():
    # November 2026: 30 days; 10.00 / 30 is not a whole number of cents
    times = list(every(local(2026, 11, 1, 0, 5), local(2026, 12, 1), dt.timedelta(minutes=37)))
    charges, _ = run(sp(fee=Decimal("10.00"), spread="daily"), times)
    assert len(charges) == 30
    assert [c.period_end.astimezone(BERLIN).day for c in charges[:3]] == [2, 3, 4]
    assert [-c.amount for c in charges[:3]] == [Decimal("0.33"), Decimal("0.34"), Decimal("0.33")]
    assert sum(c.amount for c in charges) == Decimal("-10.00")
    assert charges[-1].period_end == local(2026, 12, 1)


def test_the_next_month_starts_again_and_february_of_a_leap_year_has_29_days():
    times = list(every(local(2028, 2, 1, 1), local(2028, 3, 2, 2), dt.timedelta(hours=6)))
    charges, _ = run(sp(fee=Decimal("29.00"), spread="daily"), times)
    feb = [c for c in charges if c.period_start < local(2028, 3, 1)]
    assert len(feb) == 29 and {c.amount for c in feb} == {Decimal("-1.00")}
    march = [c for c in charges if c.period_start >= local(2028, 3, 1)]
    assert [c.amount for c in march] == [Decimal("-0.94"), Decimal("-0.93")]  # 29/31 a day
    times = list(every(local(2027, 2, 1, 1), local(2027, 3, 1), dt.timedelta(hours=6)))
    charges, _ = run(sp(fee=Decimal("28.00"), spread="daily"), times)
    assert len(charges) == 28 and sum(c.amount for c in charges) == Decimal("-28.00")


def test_an_hourly_fee_counts_the_real_hours_of_a_dst_month():
    # Berlin, October 2026 ends DST on the 25th: 745 hours; March 2026: 743
    for first, hours in ((local(2026, 10, 1), 745), (local(2026, 3, 1), 743)):
        start, end = rating.month(first, BERLIN)
        assert (end - start) // dt.timedelta(hours=1) == hours
        fee = Decimal(hours).scaleb(-2)   # a cent an hour
        charges, _ = run(sp(fee=fee, spread="hourly"), every(start, end, dt.timedelta(minutes=45)))
        assert len(charges) == hours and {c.amount for c in charges} == {Decimal("-0.01")}
    # the day of the change has 25 hours: 25 hourly charges fall in it
    charges, _ = run(sp(fee=Decimal("7.45"), spread="hourly"),
                     every(local(2026, 10, 20), local(2026, 10, 30), dt.timedelta(minutes=30)))
    day = [c for c in charges if local(2026, 10, 25) <= c.period_start < local(2026, 10, 26)]
    assert len(day) == 25


def test_a_monthly_fee_is_prorated_to_the_day_only_with_adjust_fee():
    created = local(2026, 11, 16, 10, 0)      # 15 of November's 30 days left, the 16th counted
    times = [local(2026, 11, 16, 10, 1), local(2026, 11, 20), local(2026, 12, 1, 0, 1)]
    charges, _ = run(sp(fee=Decimal("30.00"), adjust_fee=True), times, created)
    assert [c.amount for c in charges] == [Decimal("-15.00"), Decimal("-30.00")]
    assert charges[0].period_start == created and charges[1].period_start == local(2026, 12, 1)
    charges, _ = run(sp(fee=Decimal("30.00")), times, created)
    assert [c.amount for c in charges] == [Decimal("-30.00"), Decimal("-30.00")]
    # nothing before the account exists
    charges, _ = run(sp(fee=Decimal("30.00")), [local(2026, 11, 16, 9)], created)
    assert charges == []


def test_included_then_overdraft_per_mb_charges_the_rounded_cumulative():
    s = sp(included={"in": MB}, overdraft={"in": Decimal("0.10")})
    t0 = local(2026, 11, 2)
    times = [t0 + dt.timedelta(minutes=i) for i in range(4)]
    usage = [(MB // 2, 5), (MB // 4 * 3, 0), (MB // 4, 0), (0, MB * 100)]
    charges, state = run(s, times, usage=usage)
    # 1.25 MB in: 0.025 due -> 0.03; 1.5 MB: 0.05 -> 0.02 more; out is free
    assert [(c.kind, c.amount, c.bytes_in) for c in charges] == \
        [("overdraft", Decimal("-0.03"), MB // 4 * 3), ("overdraft", Decimal("-0.02"), MB // 4)]
    st = state[(1, 7, "overdraft", local(2026, 11, 1))]
    assert (st.bytes_in, st.bytes_out, st.charged) == (MB * 3 // 2 + 0, 5 + MB * 100, Decimal("0.05"))


def test_sum_and_unlimited_and_adjust_included():
    s = sp(included={"sum": 30 * MB}, overdraft={"sum": Decimal("1")})
    created = local(2026, 11, 16)                 # half the month: 15 MB included
    t = local(2026, 11, 20)
    charges, _ = run(s, [t], created, usage=[(10 * MB, 6 * MB)])
    assert [c.amount for c in charges] == [Decimal("-1.00")]
    no_adjust = sp(included={"sum": 30 * MB}, overdraft={"sum": Decimal("1")},
                   adjust_included=False)
    assert run(no_adjust, [t], created, usage=[(10 * MB, 6 * MB)])[0] == []
    free = sp(included={"in": None}, overdraft={"in": Decimal("5"), "out": Decimal("1")})
    charges, _ = run(free, [t], usage=[(10 ** 9, MB)])
    assert [c.amount for c in charges] == [Decimal("-1.00")]   # in unlimited, out 1 MB


def test_a_drain_rerun_from_the_same_state_charges_the_same():
    s = sp(fee=Decimal("10.00"), spread="daily", overdraft={"in": Decimal("0.01")})
    acct = [Rated(1, 1, local(2020, 1, 1))]
    before = {}
    t = local(2026, 11, 5, 12)
    a = rating.rate({7: s}, {1: (7,)}, acct, {(1, 7): (5 * MB, 0)}, before, t, BERLIN, EUR)
    b = rating.rate({7: s}, {1: (7,)}, acct, {(1, 7): (5 * MB, 0)}, before, t, BERLIN, EUR)
    assert a == b and [c.amount for c in a[0]] == [Decimal("-1.67"), Decimal("-0.05")]
    # and the state after it: the same drain again charges nothing more for the day
    again, _ = rating.rate({7: s}, {1: (7,)}, acct, {}, a[1], t, BERLIN, EUR)
    assert again == []
