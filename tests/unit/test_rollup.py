"""Local-time periods (hour, day, week from Monday, month) across DST, and drain rows."""

import datetime as dt
from collections import Counter
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from acctd.kernel import abi
from acctd.model.addresses import parse_addr
from acctd.model.policies import AcctPlan, PolicySet, PolicySpec, account, local_addrs
from acctd.model.units import Unit, UnitSet, oid_ints
from acctd.store.rollup import (ALL_TRAFFIC, PERIODS, UNATTRIBUTED, cells, from_us, label,
                                period_end, period_start, periods, rollup, to_us)

BERLIN = ZoneInfo("Europe/Berlin")
UTC = dt.timezone.utc


def utc(*a):
    return dt.datetime(*a, tzinfo=UTC)


def local(*a, fold=0):
    return dt.datetime(*a, tzinfo=BERLIN, fold=fold).astimezone(UTC)


# 2026-11-21 16:46:41 in Berlin (CET, +01:00) is a Saturday.
NOW = local(2026, 11, 21, 16, 46, 41, 5)


@pytest.mark.parametrize("kind, want", [
    ("hour", local(2026, 11, 21, 16)),
    ("day", local(2026, 11, 21)),
    ("week", local(2026, 11, 16)),  # Monday
    ("month", local(2026, 11, 1)),
    ("year", local(2026, 1, 1)),  # the period tops' (BY) longest period
])
def test_period_starts_in_local_time(kind, want):
    assert period_start(kind, NOW, BERLIN) == want
    assert period_start(kind, NOW, BERLIN).tzinfo is UTC


@pytest.mark.parametrize("kind, start, nxt", [
    ("hour", local(2026, 11, 21, 23), local(2026, 11, 22, 0)),
    ("day", local(2026, 11, 21), local(2026, 11, 22)),
    ("week", local(2026, 11, 16), local(2026, 11, 23)),
    ("month", local(2026, 11, 1), local(2026, 12, 1)),
    ("month", local(2026, 12, 1), local(2027, 1, 1)),
    ("year", local(2026, 1, 1), local(2027, 1, 1)),
])
def test_boundaries_belong_to_the_period_they_start(kind, start, nxt):
    assert period_end(kind, start, BERLIN) == nxt
    assert period_start(kind, nxt, BERLIN) == nxt
    assert period_start(kind, nxt - dt.timedelta(microseconds=1), BERLIN) == start


def test_week_starts_monday_even_from_sunday_night():
    sunday = local(2026, 11, 22, 23, 59, 59)
    assert period_start("week", sunday, BERLIN) == local(2026, 11, 16)
    assert period_start("week", local(2026, 11, 23), BERLIN) == local(2026, 11, 23)


def test_dst_days_are_23_and_25_hours_and_weeks_follow():
    spring, autumn = local(2026, 3, 29), local(2026, 10, 25)
    assert spring == utc(2026, 3, 28, 23) and autumn == utc(2026, 10, 24, 22)
    assert period_end("day", spring, BERLIN) - spring == dt.timedelta(hours=23)
    assert period_end("day", autumn, BERLIN) - autumn == dt.timedelta(hours=25)
    wk = period_start("week", spring, BERLIN)
    assert period_end("week", wk, BERLIN) - wk == dt.timedelta(hours=7 * 24 - 1)
    wk = period_start("week", autumn, BERLIN)
    assert period_end("week", wk, BERLIN) - wk == dt.timedelta(hours=7 * 24 + 1)
    # the month keeps its local first-of-month midnight on both sides
    assert period_start("month", spring, BERLIN) == utc(2026, 2, 28, 23)
    assert period_end("month", period_start("month", spring, BERLIN), BERLIN) == \
        utc(2026, 3, 31, 22)


def test_spring_gap_hour_does_not_exist():
    # 01:59:59 CET is followed by 03:00:00 CEST
    before = utc(2026, 3, 29, 0, 59, 59)
    after = utc(2026, 3, 29, 1, 0, 0)
    assert period_start("hour", before, BERLIN) == utc(2026, 3, 29, 0)
    assert period_start("hour", after, BERLIN) == after
    assert label(after, BERLIN) == "2026-03-29T03:00:00+02:00"
    assert period_end("hour", utc(2026, 3, 29, 0), BERLIN) == after


def test_autumn_repeated_hour_is_two_buckets():
    first = local(2026, 10, 25, 2, 30, fold=0)
    second = local(2026, 10, 25, 2, 30, fold=1)
    assert second - first == dt.timedelta(hours=1)
    a, b = period_start("hour", first, BERLIN), period_start("hour", second, BERLIN)
    assert (a, b) == (utc(2026, 10, 25, 0), utc(2026, 10, 25, 1))
    assert label(a, BERLIN) == "2026-10-25T02:00:00+02:00"
    assert label(b, BERLIN) == "2026-10-25T02:00:00+01:00"
    assert period_end("hour", a, BERLIN) == b


def test_naive_clock_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        period_start("day", dt.datetime(2026, 1, 1), BERLIN)
    with pytest.raises(ValueError, match="period kind"):
        period_start("quarter", NOW, BERLIN)


def test_microsecond_round_trip():
    assert from_us(to_us(NOW)) == NOW
    assert to_us(utc(1970, 1, 1, 0, 0, 1)) == 1_000_000


def one_cell(packets):
    return {"unit_oid": np.array([0x020001], np.uint32),
            "policy_oid": np.array([ALL_TRAFFIC], np.uint32),
            "dir": np.array([0], np.uint8), "packets": np.array([packets], np.uint64),
            "bytes": np.array([packets * 100], np.uint64)}


def stream(day_start, step_min=10):
    """Drains ending every step_min from day_start through the next local midnight,
    drain k carrying k packets; -> summed rows {(kind, start_us): packets}."""
    end = period_end("day", day_start, BERLIN)
    sums = Counter()
    k = 0
    while True:
        k += 1
        ts = day_start + dt.timedelta(minutes=step_min * k)
        if ts > end:
            return sums, k - 1
        r = rollup(one_cell(k), ts, BERLIN)
        s = r.per_period
        assert (s["bytes"] == s["packets"] * 100).all()
        for kind, start, p in zip(s["kind"].tolist(), s["start"].tolist(),
                                  s["packets"].tolist()):
            sums[PERIODS[kind], start] += p


@pytest.mark.parametrize("day, hours", [((2026, 3, 29), 23), ((2026, 10, 25), 25),
                                        ((2026, 11, 21), 24)])
def test_counter_stream_across_dst_lands_in_exact_buckets(day, hours):
    start = local(*day)
    sums, last = stream(start)
    assert last == 6 * hours  # the last drain ends exactly at the next midnight
    day_us = to_us(start)
    hour_rows = {s: p for (kind, s), p in sums.items() if kind == "hour"}
    day_hours = {s: p for s, p in hour_rows.items() if day_us <= s < to_us(start) + hours * 3600e6}
    assert len(day_hours) == hours
    # hour j holds the drains ending in [j, j+1) hours: k = 6j .. 6j+5 (k >= 1)
    for j in range(hours):
        want = sum(k for k in range(max(6 * j, 1), 6 * j + 6))
        assert day_hours[day_us + j * 3_600_000_000] == want
    # the drain ending at midnight belongs to the next day, nothing else does
    assert sums["day", day_us] == sum(range(1, 6 * hours)) == sum(day_hours.values())
    nxt = to_us(period_end("day", start, BERLIN))
    assert sums["day", nxt] == 6 * hours
    assert sums["hour", nxt] == 6 * hours


def test_autumn_stream_gives_two_rows_labelled_0200():
    sums, _ = stream(local(2026, 10, 25))
    labels = [label(from_us(s), BERLIN) for (kind, s) in sorted(sums) if kind == "hour"]
    assert [x for x in labels if "T02:00" in x] == ["2026-10-25T02:00:00+02:00",
                                                     "2026-10-25T02:00:00+01:00"]
    assert sums["hour", to_us(utc(2026, 10, 25, 0))] == sum(range(12, 18))
    assert sums["hour", to_us(utc(2026, 10, 25, 1))] == sum(range(18, 24))


def test_week_and_month_sum_their_days():
    # drains at local noon every day of March 2026: each lands in its own day,
    # its Monday week and the month
    sums = Counter()
    for d in range(1, 32):
        r = rollup(one_cell(d), local(2026, 3, d, 12), BERLIN)
        for kind, start, p in zip(r.per_period["kind"].tolist(), r.per_period["start"].tolist(),
                                  r.per_period["packets"].tolist()):
            sums[PERIODS[kind], start] += p
    assert sums["month", to_us(local(2026, 3, 1))] == sum(range(1, 32))
    # Sun 1 March belongs to the week of Mon 23 February
    assert sums["week", to_us(local(2026, 2, 23))] == 1
    assert sums["week", to_us(local(2026, 3, 23))] == sum(range(23, 30))  # DST week
    assert sums["week", to_us(local(2026, 3, 30))] == 30 + 31
    assert sum(p for (k, _), p in sums.items() if k == "week") == sum(range(1, 32))
    assert sum(p for (k, _), p in sums.items() if k == "day") == sum(range(1, 32))


def test_rollup_rows_per_period():
    r = rollup(one_cell(5), NOW, BERLIN)
    assert r.ts == NOW
    assert r.raw["packets"].tolist() == [5]
    assert r.per_period["kind"].tolist() == [0, 1, 2, 3]
    assert [from_us(s) for s in r.per_period["start"].tolist()] == [s for _, s in periods(NOW, BERLIN)]
    assert r.per_period["unit_oid"].tolist() == [0x020001] * 4


def test_cells_keys_counts_by_oid_with_totals_and_unattributed():
    us = UnitSet([Unit("host", "a", oid="020001", addrs=(parse_addr("10.0.0.1"),),
                       acct_policy=("web",)),
                  Unit("host", "b", oid="020002", addrs=(parse_addr("10.0.0.2"),))])
    ps = PolicySet([PolicySpec("web", "proto tcp port 80", oid="140001")])
    plan = AcctPlan(us, ps)
    f = np.zeros(3, abi.FLOW_KEY)
    f["proto"], f["dir"], f["dport"], f["sport"] = 6, abi.Dir.OUT, 80, 40000
    for i, src in enumerate(["10.0.0.1", "10.0.0.2", "10.0.0.9"]):
        f["saddr"][i] = np.frombuffer(parse_addr(src), np.uint8)
        f["daddr"][i] = np.frombuffer(parse_addr("192.0.2.1"), np.uint8)
    pk = np.array([2, 3, 4], np.uint64)
    c = account(f, pk, pk * 10, us.match(local_addrs(f)), plan, NOW.astimezone(BERLIN))
    rows = cells(c, oid_ints(us), oid_ints(ps))
    got = sorted(zip(*(rows[k].tolist() for k in ("unit_oid", "policy_oid", "dir", "packets",
                                                   "bytes"))))
    assert got == [(UNATTRIBUTED, ALL_TRAFFIC, 1, 4, 40),
                   (0x020001, ALL_TRAFFIC, 1, 2, 20), (0x020001, 0x140001, 1, 2, 20),
                   (0x020002, ALL_TRAFFIC, 1, 3, 30)]
    assert rows["unit_oid"].dtype == np.uint32 and rows["packets"].dtype == np.uint64
    assert len(cells(c, oid_ints(us), oid_ints(ps), totals=False)["unit_oid"]) == 1
