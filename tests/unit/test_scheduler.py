"""Scheduler (NeTAMS `service scheduler`): grammar, due times in local time
across DST and month ends, once-only delivery, persistence -- all on an
injected clock."""

import datetime as dt
import json
import os
import random
import zoneinfo

import pytest

from acctd.errors import NotFound
from acctd.services.scheduler import (Entry, Owner, Scheduler, SchedulerError, format_table,
                                      next_due, parse_schedule, parse_time, resolve_wall,
                                      split_action)

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
UTC = dt.timezone.utc
ADMIN = Owner(1000, "admin")
# Europe/Berlin 2026: clocks go forward on Mar 29 (02:00 CET -> 03:00 CEST)
# and back on Oct 25 (03:00 CEST -> 02:00 CET).
SPRING, FALL = dt.date(2026, 3, 29), dt.date(2026, 10, 25)


def local(*a, fold=0):
    return dt.datetime(*a, tzinfo=BERLIN, fold=fold)


def wall(t):
    """An instant as Berlin wall time with its offset, for readable asserts."""
    return t.astimezone(BERLIN).strftime("%Y-%m-%d %H:%M:%S%z")


class Clock:
    def __init__(self, t):
        self.t = t.astimezone(UTC)

    def __call__(self):
        return self.t

    def set(self, t):
        self.t = t.astimezone(UTC)

    def advance(self, **kw):
        self.t += dt.timedelta(**kw)
        return self.t


def sched(tmp_path=None, start=local(2026, 11, 21, 12, 0), seed=1):
    clock = Clock(start)
    path = str(tmp_path / "schedule.json") if tmp_path else None
    return Scheduler(BERLIN, clock, path, random.Random(seed)), clock


def nd(spec, after, anchor=None):
    return wall(next_due(parse_time(spec), after, BERLIN, anchor=anchor))


# -- grammar ------------------------------------------------------------------------------

# The reference's own lines, with its typography (en dashes, guillemets).
REFERENCE = [
    ("schedule time at\u201323:30 action \u00abservice processor && unit host name pupkin "
     "sys\u2013deny && exit\u00bb", None, "at-23:30",
     [["service", "processor"], ["unit", "host", "name", "pupkin", "sys-deny"], ["exit"]]),
    ("schedule oid 08FFFF time hourly\u2013action html", "08FFFF", "hourly-", [["html"]]),
    ("schedule time 10min action \u00abshow perf /var/tmp/perflog.txt\u00bb", None, "10min",
     [["show", "perf", "/var/tmp/perflog.txt"]]),
    ("schedule time 1min action \u00abshow version\u00bb", None, "1min", [["show", "version"]]),
    ("schedule time weekly action save", None, "weekly", [["save"]]),
    ("schedule time at\u201322:00 action save", None, "at-22:00", [["save"]]),
]


@pytest.mark.parametrize("line,oid,interval,commands", REFERENCE)
def test_reference_examples_parse(line, oid, interval, commands):
    sp = parse_schedule(line)
    assert (sp.oid, sp.timing.text, split_action(sp.action)) == (oid, interval, commands)


@pytest.mark.parametrize("text,canonical", [
    ("5min", "5min"), ("5 min", "5min"), ("2hours", "2hour"), ("30 sec", "30sec"),
    ("1day", "1day"), ("3 week", "3week"), ("1month", "1month"),
    ("hourly", "hourly"), ("DAILY+", "daily+"), ("weekly-", "weekly-"), ("monthly", "monthly"),
    ("at-9:05", "at-09:05"), ("at-23:59+", "at-23:59+"), ("at\u201300:00\u2013", "at-00:00-"),
])
def test_time_forms(text, canonical):
    assert parse_time(text).text == canonical


@pytest.mark.parametrize("line,message", [
    ("time 5 fortnights action save", "unknown unit 'fortnights'"),
    ("time 0min action save", "at least 1min"),
    ("time 999month action save", "at most 120month"),
    ("time 5min+ action save", "+ and - apply to hourly|daily|weekly|monthly"),
    ("time at-24:00 action save", "HH 00-23 and MM 00-59"),
    ("time at-12:60 action save", "HH 00-23 and MM 00-59"),
    ("time yearly action save", "expected N sec|min|hour|day|week|month"),
    ("time 5min", "expected 'action <command>' after the time"),
    ("action save", "expected 'time <when> action <command>'"),
    ("time 5min action", "the action is empty"),
    ("time 5min action \"\"", "the action is empty"),
    ("time 5min action \"save && \"", "empty command around '&&'"),
    ("time 5min action \"&& save\"", "empty command around '&&'"),
    ("time 5min action \"show 'version\"", "No closing quotation"),
    ("oid XYZ time 5min action save", "oid: expected an oid of 1 to 6 hex digits"),
])
def test_invalid_specs_say_what_is_wrong(line, message):
    with pytest.raises(SchedulerError, match=None) as ei:
        parse_schedule(line)
    assert message in str(ei.value)


def test_action_quoting_is_argv_not_shell():
    sp = parse_schedule("time 1min action \u00abshow perf '/tmp/a b.txt' && "
                        "unit host name 'x&&y' sys-deny; rm -rf /\u00bb")
    assert split_action(sp.action) == [["show", "perf", "/tmp/a b.txt"],
                                       ["unit", "host", "name", "x&&y", "sys-deny;", "rm",
                                        "-rf", "/"]]
    # "&&" separates only as a word of its own, as in the reference.
    assert split_action("html&&save") == [["html&&save"]]
    # Unquoted multi-word actions are accepted (acctctl passes them as argv).
    assert split_action(parse_schedule("time daily action show version").action) == \
        [["show", "version"]]


# -- next_due -----------------------------------------------------------------------------

def test_period_forms_run_at_the_first_second_of_the_period():
    after = local(2026, 11, 21, 12, 34, 56)  # a Saturday
    assert nd("hourly", after) == "2026-11-21 13:00:00+0100"
    assert nd("daily", after) == "2026-11-22 00:00:00+0100"
    assert nd("weekly", after) == "2026-11-23 00:00:00+0100"  # Monday
    assert nd("monthly", after) == "2026-12-01 00:00:00+0100"
    assert nd("at-22:00", after) == "2026-11-21 22:00:00+0100"
    assert nd("at-12:00", after) == "2026-11-22 12:00:00+0100"


def test_plus_minus_is_ten_seconds():
    after = local(2026, 11, 21, 12, 34, 56)
    assert nd("hourly-", after) == "2026-11-21 12:59:50+0100"
    assert nd("hourly+", after) == "2026-11-21 13:00:10+0100"
    assert nd("at-22:00-", after) == "2026-11-21 21:59:50+0100"
    assert nd("at-22:00+", after) == "2026-11-21 22:00:10+0100"
    assert nd("daily+", local(2026, 11, 22, 0, 0, 5)) == "2026-11-22 00:00:10+0100"
    # monthly- is the last 10 s of the month: Dec 31, then Jan 31.
    assert nd("monthly-", local(2026, 12, 15)) == "2026-12-31 23:59:50+0100"
    assert nd("monthly-", local(2026, 12, 31, 23, 59, 55)) == "2027-01-31 23:59:50+0100"
    assert nd("weekly-", local(2026, 11, 21)) == "2026-11-22 23:59:50+0100"


def test_due_is_strictly_after():
    assert nd("daily", local(2026, 11, 22, 0, 0)) == "2026-11-23 00:00:00+0100"
    assert nd("at-22:00", local(2026, 11, 21, 22, 0)) == "2026-11-22 22:00:00+0100"


def test_at_in_the_spring_gap_runs_when_the_gap_ends():
    assert nd("at-02:30", local(2026, 3, 29, 0, 0)) == "2026-03-29 03:00:00+0200"
    assert nd("at-02:30", local(2026, 3, 29, 3, 0)) == "2026-03-30 02:30:00+0200"
    assert nd("at-02:30", local(2026, 3, 28, 2, 30)) == "2026-03-29 03:00:00+0200"
    # the +/- shift applies after, in elapsed time
    assert nd("at-02:30+", local(2026, 3, 29, 0, 0)) == "2026-03-29 03:00:10+0200"
    assert nd("at-02:30-", local(2026, 3, 29, 0, 0)) == "2026-03-29 01:59:50+0100"
    # times next to the gap are untouched
    assert nd("at-01:59", local(2026, 3, 29, 0, 0)) == "2026-03-29 01:59:00+0100"
    assert nd("at-03:00", local(2026, 3, 29, 0, 0)) == "2026-03-29 03:00:00+0200"


def test_at_in_the_fall_overlap_runs_once_at_the_first_occurrence():
    first = nd("at-02:30", local(2026, 10, 25, 0, 0))
    assert first == "2026-10-25 02:30:00+0200"
    # after the first 02:30 (CEST), the second 02:30 (CET) is skipped
    assert nd("at-02:30", local(2026, 10, 25, 2, 30, fold=0)) == "2026-10-26 02:30:00+0100"
    assert nd("at-02:30", local(2026, 10, 25, 2, 45, fold=1)) == "2026-10-26 02:30:00+0100"


def _runs_on(spec, day):
    t = dt.datetime.combine(day, dt.time(0), BERLIN) - dt.timedelta(seconds=1)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), BERLIN)
    runs = []
    while (t := next_due(parse_time(spec), t, BERLIN)) < end:
        runs.append(wall(t))
    return runs


def test_hourly_follows_local_hours_across_dst():
    spring = _runs_on("hourly", SPRING)
    assert len(spring) == 23 and spring[1:3] == ["2026-03-29 01:00:00+0100",
                                                 "2026-03-29 03:00:00+0200"]
    fall = _runs_on("hourly", FALL)
    assert len(fall) == 25 and fall[2:4] == ["2026-10-25 02:00:00+0200",
                                             "2026-10-25 02:00:00+0100"]
    assert len(_runs_on("hourly", dt.date(2026, 11, 21))) == 24


def test_daily_forms_run_once_on_dst_days():
    for day in (SPRING, FALL):
        assert len(_runs_on("daily", day)) == 1
        assert len(_runs_on("at-02:30", day)) == 1
        assert len(_runs_on("at-12:00", day)) == 1


def test_weekly_and_monthly_across_dst_and_year_end():
    assert nd("weekly", local(2026, 3, 25)) == "2026-03-30 00:00:00+0200"
    assert nd("monthly", local(2026, 3, 1, 0, 0)) == "2026-04-01 00:00:00+0200"
    assert nd("monthly", local(2026, 10, 2)) == "2026-11-01 00:00:00+0100"
    assert nd("weekly", local(2026, 12, 29)) == "2027-01-04 00:00:00+0100"


def test_intervals_count_from_the_anchor():
    a = local(2026, 11, 21, 12, 0, 7)
    assert nd("10min", a, anchor=a) == "2026-11-21 12:10:07+0100"
    assert nd("10min", local(2026, 11, 21, 12, 10, 7), anchor=a) == "2026-11-21 12:20:07+0100"
    assert nd("10min", local(2026, 11, 21, 12, 10, 8), anchor=a) == "2026-11-21 12:20:07+0100"
    assert nd("30sec", a, anchor=a) == "2026-11-21 12:00:37+0100"
    assert nd("2hour", a, anchor=a) == "2026-11-21 14:00:07+0100"


def test_hour_intervals_are_elapsed_but_days_keep_the_wall_clock():
    a = local(2026, 3, 28, 9, 0)
    assert nd("24hour", a, anchor=a) == "2026-03-29 10:00:00+0200"
    assert nd("1day", a, anchor=a) == "2026-03-29 09:00:00+0200"
    assert nd("1week", a, anchor=a) == "2026-04-04 09:00:00+0200"
    b = local(2026, 10, 24, 9, 0)
    assert nd("1day", b, anchor=b) == "2026-10-25 09:00:00+0100"
    # a day interval anchored in what becomes the gap runs at the gap's end
    c = local(2026, 3, 28, 2, 30)
    assert nd("1day", c, anchor=c) == "2026-03-29 03:00:00+0200"
    assert nd("1day", local(2026, 3, 29, 3, 0), anchor=c) == "2026-03-30 02:30:00+0200"


def test_month_intervals_clamp_to_month_end_without_drifting():
    a = local(2026, 1, 31, 10, 0)
    runs, t = [], a
    for _ in range(4):
        t = next_due(parse_time("1month"), t, BERLIN, anchor=a)
        runs.append(wall(t))
    assert runs == ["2026-02-28 10:00:00+0100", "2026-03-31 10:00:00+0200",
                    "2026-04-30 10:00:00+0200", "2026-05-31 10:00:00+0200"]
    leap = local(2028, 1, 31, 10, 0)
    assert nd("1month", leap, anchor=leap) == "2028-02-29 10:00:00+0100"
    assert nd("3month", a, anchor=a) == "2026-04-30 10:00:00+0200"
    assert nd("12month", local(2027, 6, 1), anchor=a) == "2028-01-31 10:00:00+0100"


def test_resolve_wall():
    assert wall(resolve_wall(dt.datetime(2026, 3, 29, 2, 0), BERLIN)) == "2026-03-29 03:00:00+0200"
    assert wall(resolve_wall(dt.datetime(2026, 3, 29, 2, 59, 59), BERLIN)) == \
        "2026-03-29 03:00:00+0200"
    assert wall(resolve_wall(dt.datetime(2026, 10, 25, 2, 0), BERLIN)) == \
        "2026-10-25 02:00:00+0200"


def test_other_zones():
    kolkata = zoneinfo.ZoneInfo("Asia/Kolkata")  # +05:30: hours start at :30 UTC
    t = next_due(parse_time("hourly"), dt.datetime(2026, 1, 1, 10, 15, tzinfo=kolkata), kolkata)
    assert t.astimezone(kolkata).strftime("%H:%M") == "11:00"
    assert next_due(parse_time("daily"), dt.datetime(2026, 1, 1, 23, 0, tzinfo=UTC), UTC) == \
        dt.datetime(2026, 1, 2, tzinfo=UTC)


def test_naive_times_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        next_due(parse_time("daily"), dt.datetime(2026, 1, 1), BERLIN)


# -- Scheduler ----------------------------------------------------------------------------

def test_add_generates_netams_oids_and_keeps_the_owner():
    s, clock = sched()
    e = s.add("schedule time 5min action \u00abshow version\u00bb", ADMIN)
    assert len(e.oid) == 6 and e.oid.startswith("08") and int(e.oid, 16)
    assert e.owner == ADMIN and e.commands == [["show", "version"]]
    assert e.due == clock() + dt.timedelta(minutes=5)
    assert s.add("time daily action save", (0, "root")).owner == Owner(0, "root")
    assert len({x.oid for x in s.entries()}) == 2
    # an explicit oid replaces that entry, as re-entering a config line would
    s.add("schedule oid 08ffff time hourly- action html", ADMIN)
    s.add("schedule oid 08FFFF time hourly action html", ADMIN)
    assert s.get("8ffff").timing.text == "hourly" and len(s.entries()) == 3
    assert s.get("08FFFF").line() == "schedule oid 08FFFF time hourly action html"


def test_oids_are_deterministic_with_a_seeded_rng():
    a, _ = sched(seed=7)
    b, _ = sched(seed=7)
    assert [a.add("time 1min action html", ADMIN).oid for _ in range(5)] == \
        [b.add("time 1min action html", ADMIN).oid for _ in range(5)]


def test_delete():
    s, _ = sched()
    e = s.add("time 1min action html", ADMIN)
    assert s.delete(e.oid.lower()).oid == e.oid and s.entries() == []
    with pytest.raises(NotFound, match=f"no schedule entry {e.oid}"):
        s.delete(e.oid)
    with pytest.raises(SchedulerError, match="oid:"):
        s.delete("nope")


def test_list_shows_time_left_like_show_schedule():
    s, clock = sched(start=local(2026, 11, 21, 22, 17, 20))
    s.add("schedule oid 08FFFF time hourly- action html", ADMIN)
    s.add("schedule oid 0841B7 time at-23:15 action shutdown", ADMIN)
    s.add("schedule oid 0879E2 time 5min action \"show version\"", ADMIN)
    clock.advance(seconds=6)
    rows = s.list()
    assert [(r["oid"], r["interval"], r["left"], r["action"]) for r in rows] == [
        ("0841B7", "at-23:15", 3454, "shutdown"),
        ("0879E2", "5min", 294, "show version"),
        ("08FFFF", "hourly-", 2544, "html"),
    ]
    assert rows[0]["user"] == "admin" and rows[0]["uid"] == 1000 and rows[0]["last_run"] is None
    assert format_table(rows).splitlines() == [
        "OID | INTERVAL | LEFT | ACTION",
        "0841B7 | at-23:15 | 3454 | shutdown",
        "0879E2 | 5min | 294 | show version",
        "08FFFF | hourly- | 2544 | html",
    ]
    # left rounds up and never goes negative
    clock.advance(seconds=293, microseconds=500_000)
    assert s.list()[1]["left"] == 1
    clock.advance(minutes=10)
    assert s.list()[1]["left"] == 0


def test_due_returns_each_entry_once_and_advances_it():
    s, clock = sched(start=local(2026, 11, 21, 12, 0))
    five = s.add("time 5min action html", ADMIN)
    daily = s.add("time at-12:10 action save", ADMIN)
    assert s.due() == [] and s.next_wakeup() == five.due
    clock.advance(minutes=5)
    fired = s.due()
    assert [e.oid for e in fired] == [five.oid] and fired[0].last_run == clock()
    assert s.due() == [] and s.due(clock()) == []
    assert wall(s.get(five.oid).due) == "2026-11-21 12:10:00+0100"
    # a tick that comes late does not make the interval drift
    clock.advance(minutes=5, seconds=3)
    assert {e.oid for e in s.due()} == {five.oid, daily.oid}
    assert wall(s.get(five.oid).due) == "2026-11-21 12:15:00+0100"
    assert wall(s.get(daily.oid).due) == "2026-11-22 12:10:00+0100"


def test_a_simulated_day_runs_every_entry_the_right_number_of_times():
    s, clock = sched(start=local(2026, 10, 24, 23, 59, 59))
    oids = {spec: s.add(f"time {spec} action html", ADMIN).oid
            for spec in ("hourly", "daily", "at-02:30", "15min", "weekly")}
    counts = {spec: 0 for spec in oids}
    by_oid = {v: k for k, v in oids.items()}
    # one tick a second from Sunday 00:00 (the fall-back day) to Monday 00:00 inclusive
    while clock() < local(2026, 10, 26, 0, 0):
        clock.advance(seconds=1)
        for e in s.due():
            counts[by_oid[e.oid]] += 1
    assert counts == {"hourly": 26, "daily": 2, "at-02:30": 1, "15min": 4 * 25,  # 25 elapsed hours
                      "weekly": 1}


def test_no_catch_up_storm_after_downtime():
    s, clock = sched(start=local(2026, 11, 21, 12, 0))
    five = s.add("time 5min action html", ADMIN)
    hourly = s.add("time hourly action save", ADMIN)
    clock.set(local(2026, 11, 23, 9, 41, 30))  # two days down
    fired = s.due()
    assert sorted(e.oid for e in fired) == sorted([five.oid, hourly.oid])
    assert s.due() == []
    # the interval is re-anchored at now; the period waits for its next slot
    assert wall(s.get(five.oid).due) == "2026-11-23 09:46:30+0100"
    assert wall(s.get(hourly.oid).due) == "2026-11-23 10:00:00+0100"
    clock.advance(minutes=5)
    assert [e.oid for e in s.due()] == [five.oid]


def test_persistence_round_trip(tmp_path):
    s, clock = sched(tmp_path)
    e1 = s.add("schedule time at\u201323:30 action \u00abservice processor && unit host "
               "name pupkin sys\u2013deny && exit\u00bb", ADMIN)
    e2 = s.add("time 7min action html", Owner(0, "root"))
    clock.advance(minutes=7)
    assert [e.oid for e in s.due()] == [e2.oid]
    path = tmp_path / "schedule.json"
    doc = json.loads(path.read_text())
    assert doc["version"] == 1 and len(doc["entries"]) == 2
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert os.listdir(tmp_path) == ["schedule.json"]   # no temporary file left

    s2 = Scheduler(BERLIN, clock, str(path))
    assert s2.entries() == s.entries()
    assert s2.list() == s.list()
    assert s2.get(e1.oid).commands == [["service", "processor"],
                                       ["unit", "host", "name", "pupkin", "sys-deny"],
                                       ["exit"]]
    s2.delete(e1.oid)
    assert [e.oid for e in Scheduler(BERLIN, clock, str(path)).entries()] == [e2.oid]


def test_missing_file_is_an_empty_schedule(tmp_path):
    s, _ = sched(tmp_path)
    assert s.entries() == [] and not (tmp_path / "schedule.json").exists()


@pytest.mark.parametrize("content,why", [
    ("{not json", "Expecting property name"),
    ("[]", "expected a JSON object"),
    ('{"version": 99, "entries": []}', '"version": 1'),
    ('{"version": 1}', "missing field 'entries'"),
    ('{"version": 1, "entries": [{"oid": "08AAAA", "time": "fortnightly", "action": "x",'
     ' "owner": {"uid": 0, "name": "r"}, "created": "2026-01-01T00:00:00+00:00",'
     ' "anchor": "2026-01-01T00:00:00+00:00", "due": "2026-01-01T00:00:00+00:00"}]}',
     "time 'fortnightly'"),
    ('{"version": 1, "entries": [{"oid": "08AAAA", "time": "daily", "action": "x",'
     ' "owner": {"uid": 0, "name": "r"}, "created": "2026-01-01T00:00:00",'
     ' "anchor": "2026-01-01T00:00:00+00:00", "due": "2026-01-01T00:00:00+00:00"}]}',
     "timezone-aware"),
])
def test_corrupt_file_names_the_file(tmp_path, content, why):
    path = tmp_path / "schedule.json"
    path.write_text(content)
    with pytest.raises(SchedulerError) as ei:
        Scheduler(BERLIN, Clock(local(2026, 1, 1)), str(path))
    msg = str(ei.value)
    assert msg.startswith(f"{path}: corrupt schedule file (") and why in msg
    assert "move it aside" in msg


def test_binary_file_names_the_file(tmp_path):
    path = tmp_path / "schedule.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SchedulerError, match=f"^{path}: cannot read the schedule file"):
        Scheduler(BERLIN, Clock(local(2026, 1, 1)), str(path))


def test_write_failures(tmp_path):
    s, clock = sched(tmp_path)
    e = s.add("time 1min action html", ADMIN)
    s.path = str(tmp_path / "missing-dir" / "schedule.json")
    with pytest.raises(SchedulerError, match="missing-dir/schedule.json: cannot write"):
        s.add("time 1min action save", ADMIN)
    with pytest.raises(SchedulerError, match="cannot write"):
        s.delete(e.oid)
    assert [x.oid for x in s.entries()] == [e.oid]  # both rolled back
    # due() still hands the entry out and leaves the error for the daemon to log
    clock.advance(minutes=1)
    assert [x.oid for x in s.due()] == [e.oid] and s.due() == []
    assert "cannot write" in str(s.save_error)
    s.path = str(tmp_path / "schedule.json")
    clock.advance(minutes=1)
    assert len(s.due()) == 1 and s.save_error is None


def test_set_zone_moves_calendar_entries():
    s, clock = sched(start=dt.datetime(2026, 11, 21, 12, 0, tzinfo=UTC))
    d = s.add("time daily action save", ADMIN)
    m = s.add("time 5min action html", ADMIN)
    assert wall(s.get(d.oid).due) == "2026-11-22 00:00:00+0100"
    s.set_zone("UTC")
    assert s.get(d.oid).due == dt.datetime(2026, 11, 22, tzinfo=UTC)
    assert s.get(m.oid).due == m.due


def test_entries_are_copies():
    s, _ = sched()
    e = s.add("time 1min action html", ADMIN)
    got = s.get(e.oid)
    got.due = got.due + dt.timedelta(days=1)
    assert s.get(e.oid).due == e.due
    assert isinstance(got, Entry)
