"""The scheduler (NeTAMS `service scheduler`): parses `schedule time ... action ...`,
computes when each entry is due in local time, and persists the entries.

It never runs anything: `Scheduler.due(now)` hands back the entries whose time
has come, and the daemon runs each `Entry.commands` through its control-command
dispatcher with the permissions of `Entry.owner`.

Semantics (the reference, "[service scheduler]", decides where it speaks):

* `N sec|min|hour|day|week|month` -- "the command runs after that interval and
  is scheduled again after it has run": first run at creation + N, then every N
  after the previous *due* time (no drift from a late tick). sec/min/hour are
  elapsed time; day/week/month are calendar steps in local wall time (a `1day`
  entry made at 09:00 stays at 09:00 across DST), and months count from the
  entry's anchor with the day clamped to the month's end (Jan 31 -> Feb 28 ->
  Mar 31, not Mar 28).
* `hourly|daily|weekly|monthly` -- "run in the first second of each period,
  whatever the time it was set": the start of the local hour, local midnight,
  Monday 00:00 ("the first second of Monday, the start of the week"), the 1st
  at 00:00.
* `at-HH:MM` -- "scheduled for that time and run daily".
* A trailing `+` / `-` -- "10 seconds later / earlier than given". The reference
  documents it for at-HH:MM; its own sample config (`time hourly-action html`)
  and `show schedule` output (`hourly-`) use it on the period forms too, so it
  is accepted on every calendar form (not on `N unit` intervals).
* DST: a wall time that does not exist (02:30 on the spring-forward day in
  Europe/Berlin) runs when the gap ends (03:00 CEST), once -- like cron, a
  daily job is never skipped. A wall time that happens twice (02:30 on the
  fall-back day) runs once, at its first occurrence. The +/-10 s shift is
  applied after that, in elapsed time. Hourly entries run at every local hour
  start, so 23 times on the spring-forward day and 25 on the fall-back day.
* Downtime: a missed run is returned once by `due()` and the entry is then
  rescheduled from *now* -- calendar forms to their next slot after now,
  intervals to now + N (the interval is re-anchored). No catch-up storm.
* Delivery is at most once: `due()` advances and persists the entry before the
  daemon runs it, so a crash mid-action does not repeat it on restart.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import queue
import random
import re
import shlex
import threading
import zoneinfo
from typing import Any, Callable, Iterable

from acctd.common import durable
from acctd.config.schema import Invalid, Table, setting
from acctd.errors import AcctError, NotFound, PermissionDenied
from acctd.model.units import normalize_oid
from acctd.services.contract import Service

log = logging.getLogger("acctd.scheduler")

__all__ = ["SchedulerError", "Owner", "Timing", "Entry", "Spec", "Scheduler",
           "parse_schedule", "parse_time", "split_action", "next_due", "resolve_wall",
           "format_table"]

FILE_VERSION = 1
SHIFT = dt.timedelta(seconds=10)  # the reference's '+'/'-': "10 seconds later/earlier"
OID_PREFIX = 0x08                 # NeTAMS schedule oids: 08FFFF, 0841B7, 0879E2

# The reference's typography: en/em dashes for '-', guillemets and curly quotes for '"'.
_TYPO = str.maketrans({"\u2013": "-", "\u2014": "-", "\u00ab": '"', "\u00bb": '"',
                       "\u201c": '"', "\u201d": '"', "\u201e": '"'})

_UNITS = {"sec": "sec", "second": "sec", "min": "min", "minute": "min", "hour": "hour",
          "day": "day", "week": "week", "month": "month"}
# At most about ten years, so the arithmetic stays within datetime's range.
_MAX_COUNT = {"sec": 315_360_000, "min": 5_256_000, "hour": 87_600, "day": 3_650,
              "week": 520, "month": 120}
_ELAPSED = {"sec": 1, "min": 60, "hour": 3600}
_PERIODS = ("hourly", "daily", "weekly", "monthly")
_UTC = dt.timezone.utc

_EXPECTED_TIME = ("expected N sec|min|hour|day|week|month (e.g. 10min), "
                  "hourly|daily|weekly|monthly, or at-HH:MM, the last two "
                  "optionally followed by + or -")


class SchedulerError(AcctError, ValueError):
    """A bad schedule spec, an unknown oid, or an unreadable schedule file."""


@dataclasses.dataclass(frozen=True)
class Owner:
    """Who created the entry; the daemon runs its actions with this user's
    *current* permissions (looked up by uid when the entry fires)."""
    uid: int
    name: str


@dataclasses.dataclass(frozen=True)
class Timing:
    """The `time` part. kind: "every" (count x unit), "period" (hourly..monthly)
    or "at" (hour:minute daily); shift in seconds: +10, -10 or 0."""
    kind: str
    unit: str = ""
    count: int = 0
    hour: int = 0
    minute: int = 0
    shift: int = 0

    @property
    def text(self) -> str:
        """Canonical form, as `show schedule` prints it: 5min, hourly-, at-23:15."""
        sign = {10: "+", -10: "-", 0: ""}[self.shift]
        if self.kind == "every":
            return f"{self.count}{self.unit}"
        if self.kind == "period":
            return self.unit + sign
        return f"at-{self.hour:02d}:{self.minute:02d}{sign}"


@dataclasses.dataclass
class Entry:
    oid: str
    timing: Timing
    action: str                 # the command text, commands joined by " && "
    owner: Owner
    created: dt.datetime        # aware, UTC
    anchor: dt.datetime         # intervals count from here (re-anchored after a missed run)
    due: dt.datetime            # the next time it runs, aware UTC
    last_run: dt.datetime | None = None

    @property
    def commands(self) -> list[list[str]]:
        """Each control command as an argv list (shlex, never a shell)."""
        return split_action(self.action)

    def line(self) -> str:
        """The entry as a config line NeTAMS would accept."""
        return f"schedule oid {self.oid} time {self.timing.text} action {_quote(self.action)}"

    def to_json(self) -> dict:
        return {"oid": self.oid, "time": self.timing.text, "action": self.action,
                "owner": {"uid": self.owner.uid, "name": self.owner.name},
                "created": _iso(self.created), "anchor": _iso(self.anchor),
                "due": _iso(self.due),
                "last_run": _iso(self.last_run) if self.last_run else None}

    @classmethod
    def from_json(cls, d: dict) -> "Entry":
        owner = d["owner"]
        return cls(oid=normalize_oid(d["oid"]), timing=parse_time(d["time"]),
                   action=_check_action(d["action"]),
                   owner=Owner(int(owner["uid"]), str(owner["name"])),
                   created=_parse_iso(d["created"]), anchor=_parse_iso(d["anchor"]),
                   due=_parse_iso(d["due"]),
                   last_run=_parse_iso(d["last_run"]) if d.get("last_run") else None)


# -- grammar --------------------------------------------------------------------------

# "hourly-action" (the reference's sample, an en dash glued to the keyword) is
# split by the lookbehind: a spec ending in + or - may touch "action".
_LINE = re.compile(r"""^\s*(?:schedule\s+)?(?:oid\s+(?P<oid>\S+)\s+)?
                       time\s+(?P<time>.+?)(?:\s+|(?<=[+-]))action(?:\s+(?P<action>.*?))?\s*$""",
                   re.X | re.I | re.S)
_EVERY = re.compile(r"^(\d+)\s*([a-z]+)$", re.I)
_PERIOD = re.compile(r"^(hourly|daily|weekly|monthly)\s*([+-]?)$", re.I)
_AT = re.compile(r"^at\s*-\s*(\d{1,2}):(\d{2})\s*([+-]?)$", re.I)


def normalize(text: str) -> str:
    return text.translate(_TYPO)


def parse_time(text: str) -> Timing:
    """`10min`, `10 min`, `hourly-`, `at-23:30+` (en dashes accepted) -> Timing."""
    s = normalize(text).strip()
    if m := _PERIOD.match(s):
        return Timing("period", unit=m[1].lower(), shift=_shift(m[2]))
    if m := _AT.match(s):
        hour, minute = int(m[1]), int(m[2])
        if hour > 23 or minute > 59:
            raise SchedulerError(f"time {text!r}: expected at-HH:MM with HH 00-23 and MM 00-59")
        return Timing("at", hour=hour, minute=minute, shift=_shift(m[3]))
    if m := _EVERY.match(s):
        word = m[2].lower()
        unit = _UNITS.get(word) or (_UNITS.get(word[:-1]) if word.endswith("s") else None)
        if unit is None:
            raise SchedulerError(f"time {text!r}: unknown unit {m[2]!r}; "
                                 "expected sec, min, hour, day, week or month")
        count = int(m[1])
        if count < 1:
            raise SchedulerError(f"time {text!r}: the interval must be at least 1{unit}")
        if count > _MAX_COUNT[unit]:
            raise SchedulerError(f"time {text!r}: the interval must be at most "
                                 f"{_MAX_COUNT[unit]}{unit} (about ten years)")
        return Timing("every", unit=unit, count=count)
    if re.match(r"^\d+\s*[a-z]+\s*[+-]$", s, re.I):
        raise SchedulerError(f"time {text!r}: + and - apply to hourly|daily|weekly|monthly "
                             "and at-HH:MM, not to intervals")
    raise SchedulerError(f"time {text!r}: {_EXPECTED_TIME}")


def _shift(sign: str) -> int:
    return {"+": 10, "-": -10, "": 0}[sign]


def split_action(action: str) -> list[list[str]]:
    """`a b && c 'd e'` -> [["a", "b"], ["c", "d e"]]. "&&" separates commands only
    as a word of its own (the reference: "spaces before and after")."""
    try:
        words = shlex.split(action)
    except ValueError as e:
        raise SchedulerError(f"action {action!r}: {e} (quote inside an action with apostrophes)")
    cmds: list[list[str]] = [[]]
    for w in words:
        if w == "&&":
            cmds.append([])
        else:
            cmds[-1].append(w)
    if any(not c for c in cmds):
        raise SchedulerError(f"action {action!r}: empty command around '&&'")
    return cmds


def _check_action(action: str) -> str:
    split_action(action)
    return action


def _strip_quotes(action: str) -> str:
    # One pair around the whole action is the reference's quoting; anything
    # else (an unbalanced quote included) is left to shlex.
    a = action.strip()
    if len(a) >= 2 and a[0] == a[-1] == '"' and '"' not in a[1:-1]:
        return a[1:-1].strip()
    return a


@dataclasses.dataclass(frozen=True)
class Spec:
    timing: Timing
    action: str
    oid: str | None = None


def parse_schedule(text: str) -> Spec:
    """`[schedule] [oid OID] time T action "cmd && cmd"` -> Spec. The action
    may be quoted with "" or «» (needed for several words, per the reference;
    accepted unquoted here since acctctl gets it as argv)."""
    s = normalize(text)
    m = _LINE.match(s)
    if not m:
        if not re.search(r"\btime\b", s, re.I):
            raise SchedulerError(f"{text.strip()!r}: expected 'time <when> action <command>'")
        raise SchedulerError(f"{text.strip()!r}: expected 'action <command>' after the time")
    oid = None
    if m["oid"] is not None:
        try:
            oid = normalize_oid(m["oid"])
        except ValueError as e:
            raise SchedulerError(f"oid: {e}") from None
    timing = parse_time(m["time"])
    action = _strip_quotes(m["action"] or "")
    if not action:
        raise SchedulerError(f"{text.strip()!r}: the action is empty")
    cmds = split_action(action)
    return Spec(timing, " && ".join(shlex.join(c) for c in cmds), oid)


def _quote(action: str) -> str:
    return f'"{action}"' if len(shlex.split(action)) > 1 else action


# -- time -----------------------------------------------------------------------------

def _aware(t: dt.datetime, what: str) -> dt.datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {t!r}")
    return t


def resolve_wall(wall: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """A local wall time (naive) -> the instant it names, aware UTC. A time that
    happens twice is its first occurrence; one that does not exist (in a DST
    gap) is the end of the gap."""
    early = wall.replace(tzinfo=zone, fold=0)
    utc = early.astimezone(_UTC)
    if utc.astimezone(zone).replace(tzinfo=None) == wall:
        return utc  # exists; fold=0 is the first occurrence of an ambiguous time
    # In a gap: fold=0 read it with the offset before the transition, fold=1
    # with the one after; the transition (whole seconds in tzdata) lies between.
    a = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    b = int(utc.timestamp())
    lo, hi = min(a, b), max(a, b)
    off = dt.datetime.fromtimestamp(lo, zone).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if dt.datetime.fromtimestamp(mid, zone).utcoffset() == off:
            lo = mid
        else:
            hi = mid
    return dt.datetime.fromtimestamp(hi, _UTC)


def _add_months(wall: dt.datetime, months: int, day: int) -> dt.datetime:
    y, m = divmod(wall.month - 1 + months, 12)
    year, month = wall.year + y, m + 1
    return wall.replace(year=year, month=month,
                        day=min(day, calendar.monthrange(year, month)[1]))


def _slot_start(timing: Timing, local: dt.datetime) -> dt.datetime:
    """The naive local wall time starting the period that holds `local`."""
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None, fold=0)
    if timing.kind == "at":
        return midnight.replace(hour=timing.hour, minute=timing.minute)
    if timing.unit == "daily":
        return midnight
    if timing.unit == "weekly":
        return midnight - dt.timedelta(days=midnight.weekday())
    if timing.unit == "monthly":
        return midnight.replace(day=1)
    raise AssertionError(timing)


def _slot_step(timing: Timing, wall: dt.datetime) -> dt.datetime:
    if timing.kind == "at" or timing.unit == "daily":
        return wall + dt.timedelta(days=1)
    if timing.unit == "weekly":
        return wall + dt.timedelta(days=7)
    return _add_months(wall, 1, 1)


def next_due(entry: "Entry | Timing", after: dt.datetime, zone: dt.tzinfo,
             anchor: dt.datetime | None = None) -> dt.datetime:
    """The first time strictly after `after` (aware) that the entry runs, aware
    UTC. Intervals count from `anchor` (the entry's, unless given): the first
    anchor + k*N that is later than `after`, so `after` = the previous run."""
    timing = entry.timing if isinstance(entry, Entry) else entry
    if anchor is None and isinstance(entry, Entry):
        anchor = entry.anchor
    after = _aware(after, "after").astimezone(_UTC)
    shift = dt.timedelta(seconds=timing.shift)

    if timing.kind == "every":
        anchor = _aware(anchor if anchor is not None else after, "anchor").astimezone(_UTC)
        if timing.unit in _ELAPSED:
            step = dt.timedelta(seconds=timing.count * _ELAPSED[timing.unit])
            return anchor + step * max(1, (after - anchor) // step + 1)
        wall0 = anchor.astimezone(zone).replace(tzinfo=None, fold=0)
        days = {"day": 1, "week": 7}.get(timing.unit)

        def slot(k: int) -> dt.datetime:
            if days:
                return resolve_wall(wall0 + dt.timedelta(days=days * timing.count * k), zone)
            return resolve_wall(_add_months(wall0, timing.count * k, wall0.day), zone)

        # Guess k from the calendar distance, then correct by single steps.
        la = after.astimezone(zone).replace(tzinfo=None)
        span = (la - wall0).days // days if days else \
            (la.year - wall0.year) * 12 + la.month - wall0.month
        k = max(1, span // timing.count)
        while k > 1 and slot(k - 1) > after:
            k -= 1
        while slot(k) <= after:
            k += 1
        return slot(k)

    if timing.kind == "period" and timing.unit == "hourly":
        # Every local hour start, stepped in elapsed time: 23 or 25 a day across
        # DST. The hour began (wall minutes and seconds) before `after`.
        local = after.astimezone(zone)
        t = after - dt.timedelta(minutes=local.minute, seconds=local.second,
                                 microseconds=local.microsecond) + shift
        while t <= after:
            t += dt.timedelta(hours=1)
        return t

    wall = _slot_start(timing, (after - shift - dt.timedelta(days=1)).astimezone(zone))
    while True:
        t = resolve_wall(wall, zone) + shift
        if t > after:
            return t
        wall = _slot_step(timing, wall)


# -- persistence -----------------------------------------------------------------------

def _iso(t: dt.datetime) -> str:
    return t.astimezone(_UTC).isoformat()


def _parse_iso(s: str) -> dt.datetime:
    return _aware(dt.datetime.fromisoformat(s), "a stored time").astimezone(_UTC)


def load_file(path: str) -> list[Entry]:
    """Entries from a schedule file; a missing file is an empty schedule."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise SchedulerError(f"{path}: cannot read the schedule file: {e}") from None
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("version") != FILE_VERSION:
            raise ValueError(f"expected a JSON object with \"version\": {FILE_VERSION}")
        entries = [Entry.from_json(e) for e in doc["entries"]]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        what = f"missing field {e}" if isinstance(e, KeyError) else str(e)
        raise SchedulerError(f"{path}: corrupt schedule file ({what}); "
                             "fix it or move it aside to start with an empty schedule") from None
    oids = [e.oid for e in entries]
    if len(set(oids)) != len(oids):
        raise SchedulerError(f"{path}: corrupt schedule file (duplicate oid); "
                             "fix it or move it aside to start with an empty schedule")
    return entries


# -- the scheduler ---------------------------------------------------------------------

def _utcnow() -> dt.datetime:
    return dt.datetime.now(_UTC)


class Scheduler:
    """Entries, their due times and the file they live in. Thread-safe: the
    control server adds and deletes while the main loop calls due()."""

    def __init__(self, zone: dt.tzinfo | str = "UTC", clock: Callable[[], dt.datetime] = _utcnow,
                 path: str | None = None, rng: random.Random | None = None):
        self.zone = zoneinfo.ZoneInfo(zone) if isinstance(zone, str) else zone
        self.clock = clock
        self.path = path
        self.rng = rng or random.SystemRandom()
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self.save_error: SchedulerError | None = None  # the last failed write in due()
        if path:
            for e in load_file(path):
                self._entries[e.oid] = e

    # -- changes --------------------------------------------------------------------

    def add(self, spec: str | Spec, user: Any) -> Entry:
        """Parse and add an entry made by `user` (anything with .uid and .name,
        or a (uid, name) pair). An explicit oid replaces that entry, as
        re-entering a NeTAMS config line would."""
        sp = parse_schedule(spec) if isinstance(spec, str) else spec
        owner = _owner(user)
        now = _aware(self.clock(), "clock()").astimezone(_UTC)
        with self._lock:
            oid = sp.oid or self._new_oid()
            e = Entry(oid, sp.timing, sp.action, owner, created=now, anchor=now, due=now)
            e.due = next_due(e, now, self.zone)
            before = self._entries.get(oid)
            self._entries[oid] = e
            try:
                self._save()
            except SchedulerError:  # keep memory and file in step
                if before is None:
                    del self._entries[oid]
                else:
                    self._entries[oid] = before
                raise
            return dataclasses.replace(e)

    def delete(self, oid: str) -> Entry:
        """NeTAMS `no schedule oid OID`."""
        try:
            key = normalize_oid(oid)
        except ValueError as err:
            raise SchedulerError(f"oid: {err}") from None
        with self._lock:
            e = self._entries.pop(key, None)
            if e is None:
                raise NotFound(f"no schedule entry {key} (see `acctctl schedule list`)")
            try:
                self._save()
            except SchedulerError:
                self._entries[key] = e
                raise
            return e

    def due(self, now: dt.datetime | None = None) -> list[Entry]:
        """Entries due at `now`, each returned once, oldest first, and advanced
        (persisted before they are returned: at most once). A run missed during
        downtime comes back once and is rescheduled from now. A failed write
        does not raise here; it is left in `save_error` for the daemon to log."""
        now = _aware(now if now is not None else self.clock(), "now").astimezone(_UTC)
        fired: list[Entry] = []
        with self._lock:
            for e in sorted(self._entries.values(), key=lambda x: (x.due, x.oid)):
                if e.due > now:
                    continue
                nxt = next_due(e, e.due, self.zone)
                if nxt <= now:  # at least one whole slot was missed
                    if e.timing.kind == "every":
                        e.anchor = now
                    nxt = next_due(e, now, self.zone)
                e.last_run, e.due = now, nxt
                fired.append(dataclasses.replace(e))
            if fired:
                # A failed write must not stop the runs: the entries have moved
                # on in memory; the daemon logs save_error and goes on.
                try:
                    self._save()
                    self.save_error = None
                except SchedulerError as err:
                    self.save_error = err
        return fired

    # -- views ----------------------------------------------------------------------

    def get(self, oid: str) -> Entry:
        with self._lock:
            try:
                return dataclasses.replace(self._entries[normalize_oid(oid)])
            except (KeyError, ValueError):
                raise NotFound(f"no schedule entry {oid}") from None

    def entries(self) -> list[Entry]:
        with self._lock:
            return [dataclasses.replace(e) for e in sorted(self._entries.values(),
                                                           key=lambda x: x.oid)]

    def set_zone(self, zone: dt.tzinfo | str, now: dt.datetime | None = None) -> None:
        """A new time-zone (config reload): calendar entries move to their next
        local slot; intervals keep their elapsed-time due."""
        now = _aware(now if now is not None else self.clock(), "now").astimezone(_UTC)
        with self._lock:
            self.zone = zoneinfo.ZoneInfo(zone) if isinstance(zone, str) else zone
            for e in self._entries.values():
                if e.timing.kind != "every" and e.due > now:
                    e.due = next_due(e, now, self.zone)
            self._save()

    def next_wakeup(self) -> dt.datetime | None:
        """The earliest due time, for the daemon loop's sleep."""
        with self._lock:
            return min((e.due for e in self._entries.values()), default=None)

    def list(self, now: dt.datetime | None = None) -> list[dict]:
        """`show schedule` rows: oid, interval, left (whole seconds, rounded up),
        action, plus the owner and the due/last-run times (ISO, UTC)."""
        now = _aware(now if now is not None else self.clock(), "now").astimezone(_UTC)
        return [{"oid": e.oid, "interval": e.timing.text,
                 "left": max(0, math.ceil((e.due - now).total_seconds())),
                 "action": e.action, "user": e.owner.name, "uid": e.owner.uid,
                 "due": _iso(e.due), "last_run": _iso(e.last_run) if e.last_run else None}
                for e in self.entries()]

    # -- internals ------------------------------------------------------------------

    def _new_oid(self) -> str:
        for _ in range(1000):
            oid = f"{(OID_PREFIX << 16) | self.rng.randrange(1, 0x10000):06X}"
            if oid not in self._entries:
                return oid
        raise SchedulerError("no free schedule oid (08xxxx); delete some entries")

    def _save(self) -> None:
        if not self.path:
            return
        doc = {"version": FILE_VERSION,
               "entries": [e.to_json() for e in sorted(self._entries.values(),
                                                       key=lambda x: x.oid)]}
        try:
            durable.write_file(self.path, json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
        except OSError as e:
            raise SchedulerError(f"{self.path}: cannot write the schedule file: {e}") from None


def _owner(user: Any) -> Owner:
    if isinstance(user, Owner):
        return user
    if isinstance(user, tuple) and len(user) == 2:
        return Owner(int(user[0]), str(user[1]))
    try:
        return Owner(int(user.uid), str(user.name))
    except AttributeError:
        raise TypeError(f"expected a user with .uid and .name, got {user!r}") from None


def format_table(rows: Iterable[dict]) -> str:
    """The rows as NeTAMS `show schedule` printed them."""
    lines = ["OID | INTERVAL | LEFT | ACTION"]
    lines += [f"{r['oid']} | {r['interval']} | {r['left']} | {r['action']}" for r in rows]
    return "\n".join(lines)


# --- the service ----------------------------------------------------------------------

# What a schedule may run: every control command of the registry, in its
# acctctl words (`stat alice month`, `unit bob sys-deny`, `mac fixate`), and
# the reference's own words where they differ (`service processor && unit
# host name pupkin sys-deny && exit`, `show list`, `debug quota`). A command
# added to the registry is schedulable without a change here.

# Words the reference allows that acctd has no command for, with the reason a
# schedule is refused.
REFUSED = {
    "save": "acctd's configuration is its TOML file: edit it and `reload`; there is "
            "nothing to save",
    "shutdown": "stop the daemon with systemctl (or SIGTERM), not from a schedule",
}
_NO_OP = ("service", "exit")  # NeTAMS context words: acctd's commands need no context
_SHOW = {"units": "units", "policy": "policies", "list": "list", "users": "users",
         "schedule": "schedule-list", "config": "config", "quota": "quota-show",
         "login": "login-show", "connections": "connections", "perf": "perf",
         "alerter": "alerter", "version": "status", "sessions": "session-list"}
_UNIT_TYPES = ("host", "user", "group", "cluster", "net")


def _words_of(cmd) -> tuple[str, ...]:
    """The words that name a registry command: its acctctl words, plus the
    rest of its name when several commands share them (`rotate log`,
    `unit add`)."""
    joined = "-".join(cmd.cli)
    return cmd.cli + ((cmd.name[len(joined) + 1:],) if cmd.name.startswith(joined + "-") else ())


def _match(argv: list[str]):
    """The registry command named by argv's first words (the longest match)."""
    from acctd.control import commands
    best, n = None, 0
    for cmd in commands.COMMANDS:
        w = _words_of(cmd)
        if len(w) > n and tuple(argv[:len(w)]) == w:
            best, n = cmd, len(w)
    return best, argv[n:]


def _bind_words(cmd, rest: list[str]) -> dict:
    """A command's arguments from words: `KEY VALUE` (KEY its argument's name,
    with - for _) or the word KEY for a flag; other words fill its text and
    number arguments in order; a list argument takes every word left."""
    by_key = {a.name.replace("_", "-"): a for a in cmd.args}
    if any(a.type is dict or (a.type is list and a.items is dict) for a in cmd.args):
        raise ValueError(f"{' '.join(_words_of(cmd))} takes structured input, not a command line")
    args: dict = {}
    words = list(rest)
    while words:
        w = words.pop(0)
        a = by_key.get(w.removeprefix("--"))
        if a is not None and a.type is bool:
            args[a.name] = True
            continue
        if a is not None and a.type is not list and words and a.name not in args:
            w = words.pop(0)
        else:
            a = next((x for x in cmd.args if x.name not in args and x.type is not bool), None)
        if a is None:
            raise ValueError(f"unexpected word {w!r}")
        if a.type is list:
            args[a.name] = [w, *words]
            break
        if a.type is int:
            try:
                w = int(w)
            except ValueError:
                raise ValueError(f"{a.name}: expected a number, got {w!r}") from None
        args[a.name] = w
    return args


def _netams(argv: list[str]) -> list[str] | None:
    """The reference's own words -> acctctl words (None: nothing to run)."""
    head, rest = argv[0], argv[1:]
    if head in _NO_OP:
        return None
    if head == "show" and rest and rest[0] in _SHOW:
        what, rest = rest[0], rest[1:]
        if what == "list":      # show list [full] [name X | oid X]: full is all acctd shows
            rest = [w for w in rest if w != "full"]
        if what in ("list", "quota") and rest[:1] in (["name"], ["oid"]):
            rest = ["unit", *rest[1:]]
        if what == "config":    # show config [unsecure] [oids]
            return ["config", "show", *rest]
        if what == "perf" and rest:  # show perf FILE [header]
            return ["perf", "log", *rest]
        return [*_words_of(_command(_SHOW[what])), *rest]
    if head == "unit" and rest[:1] and rest[0] in _UNIT_TYPES and rest[1:2] in (["name"], ["oid"]):
        return ["unit", *rest[2:]]  # unit host name pupkin sys-deny
    if head == "mac" and rest[:1] == ["control"]:
        return ["mac", "check"]     # alert/block are [mac] mode in the config
    if head == "no" and rest[:1] == ["debug"]:
        return ["debug", "off", *rest[1:2]]
    if head == "debug" and rest[:1] not in (["on"], ["off"]):
        if rest in ([], ["all"]):
            return ["debug", "on"]
        return ["debug", "off"] if rest == ["none"] else ["debug", "on", rest[0]]
    return argv


def _command(name: str):
    from acctd.control import commands
    return commands.REGISTRY[name]


def request_from_argv(argv: list[str]) -> dict | None:
    """A scheduled command line as a control request; None for the
    reference's context words (`service processor`, `exit`). ValueError
    names what cannot be scheduled and why."""
    if not argv:
        raise ValueError("empty command")
    line = " ".join(argv)
    words = _netams([normalize(w) for w in argv])
    if words is None:
        return None
    if words[0] in REFUSED:
        raise ValueError(f"cannot schedule {line!r}: {REFUSED[words[0]]}")
    cmd, rest = _match(words)
    if cmd is None:
        raise ValueError(f"cannot schedule {line!r}: not an acctctl or NeTAMS command "
                         "(see `acctctl --help`)")
    try:
        if cmd.name == "send-report":
            from acctd.services import reports
            return {"cmd": cmd.name, "args": reports.parse(rest).to_args()}
        if cmd.name == "schedule-add":
            return {"cmd": cmd.name, "args": {"spec": " ".join(rest)}}
        if cmd.name == "debug":
            if rest[:1] not in (["on"], ["off"]) or len(rest) > 2:
                raise ValueError("expected debug on|off [CATEGORY]")
            return {"cmd": cmd.name, "args": {"on": rest[0] == "on",
                                              "category": (rest[1:] or [None])[0]}}
        args = _bind_words(cmd, rest)
        cmd.bind(args)  # refused now, not at 3 a.m.
    except (ValueError, AcctError) as e:
        raise ValueError(f"cannot schedule {line!r}: {e}") from None
    return {"cmd": cmd.name, "args": args}


# --- schedules in the config ---------------------------------------------------------

CONFIG_OWNER = Owner(0, "config")  # root's power; the name says where the entry came from


def _config_schedules(v, ctx) -> tuple[Spec, ...]:
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise Invalid(f'expected schedule lines like "oid 08A001 time daily action flush", '
                      f"got {v!r}")
    out = []
    for i, text in enumerate(items):
        try:
            sp = parse_schedule(text)
            for argv in split_action(sp.action):  # refused at load, not at 3 a.m.
                request_from_argv(argv)
        except (SchedulerError, ValueError) as e:
            raise Invalid(str(e), f"[{i}]") from None
        if sp.oid is None:
            raise Invalid(f"{text!r}: a schedule in the config needs its oid (08XXXX), so a "
                          "reload replaces it instead of adding another", f"[{i}]")
        out.append(sp)
    if len({sp.oid for sp in out}) != len(out):
        raise Invalid("two schedules have the same oid")
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class SchedulerSettings(Table):
    """[scheduler]: schedules the config gives (NeTAMS `schedule ...` lines),
    added at start and at reload as the config's, each replacing the entry
    of its oid; one the config no longer lists is deleted."""
    schedule: tuple[Spec, ...] = setting((), check=_config_schedules)


class SchedulerService(Service):
    """NeTAMS `service scheduler` in the daemon: entries persist beside the
    database; due ones run on a worker thread of their own, one at a time,
    each command with the level its owner has *now* (a removed or demoted
    user loses the power); the first failure ends the entry's && chain."""

    name = "scheduler"

    def __init__(self, core, settings: str):
        super().__init__(core, settings)      # the time zone
        self.schedule: Scheduler | None = None
        self.queue: "queue.Queue[Entry]" = queue.Queue()
        self._thread: threading.Thread | None = None

    @staticmethod
    def settings_of(config):
        return config.processor.time_zone

    @property
    def path(self) -> str:
        return os.path.join(self.core.state_dir, "schedule.json")

    def start(self) -> None:
        self.schedule = Scheduler(self.settings, clock=self.core.clock, path=self.path)
        self._config_entries()

    def _config_entries(self) -> None:
        """The config's [scheduler] schedule lines: added (an unchanged one
        keeps its due time), and the config's entries it no longer lists deleted."""
        want = {sp.oid: sp for sp in self.core.config.scheduler.schedule}
        for e in self.schedule.entries():
            if e.owner == CONFIG_OWNER and e.oid not in want:
                self.schedule.delete(e.oid)
        have = {e.oid: e for e in self.schedule.entries()}
        for oid, sp in want.items():
            e = have.get(oid)
            if e is None or (e.timing, e.action, e.owner) != (sp.timing, sp.action, CONFIG_OWNER):
                self.schedule.add(sp, CONFIG_OWNER)

    def serve(self) -> None:
        self._thread = threading.Thread(target=self._work, name="schedule", daemon=True)
        self._thread.start()

    def reload(self, settings: str) -> None:
        if settings != self.settings:
            self.schedule.set_zone(settings)
        self.settings = settings
        self._config_entries()

    def tick(self) -> None:
        for entry in self.schedule.due():
            self.queue.put(entry)  # a scheduled `flush` waits for the very loop that ticks
        if self.schedule.save_error:
            log.error("could not save schedules: %s", self.schedule.save_error)

    def _work(self) -> None:
        while True:
            entry = self.queue.get()
            try:
                owner = self._owner(entry)
            except PermissionDenied as e:
                log.error("schedule %s: %s failed: %s", entry.oid, entry.action, e)
                continue
            for argv in entry.commands:
                try:
                    req = request_from_argv(argv)
                    if req is None:
                        continue
                    self.core.dispatcher.handle(req, owner)
                    log.info("schedule %s: %s done", entry.oid, " ".join(argv))
                except Exception as e:
                    log.error("schedule %s: %s failed: %s", entry.oid, " ".join(argv), e)
                    break

    def _owner(self, entry: Entry):
        """The entry's owner as a caller, at the level it has now."""
        import pwd

        from acctd.control.access import Level
        from acctd.control.dispatch import Caller
        owner = entry.owner
        if owner.uid >= 0:  # a Unix user: as the socket would see it now
            try:
                gid = pwd.getpwuid(owner.uid).pw_gid
            except KeyError:
                gid = -1
            return self.core.dispatcher.peer(owner.uid, gid)
        # a TCP user: whatever level that user has now
        level = next((Level.named(u.level) for u in self.core.config.users
                      if u.name == owner.name), None)
        if level is None:
            raise PermissionDenied(f"user {owner.name} no longer exists")
        return Caller(owner.uid, owner.name, level)

    # -- commands ---------------------------------------------------------------------

    def list(self) -> list[dict]:
        return self.schedule.list()

    def add(self, spec: str, caller) -> dict:
        parsed = parse_schedule(spec)
        reqs = [request_from_argv(argv) for argv in split_action(parsed.action)]
        from acctd.control import commands
        for r in reqs:  # it runs with its owner's level: one it lacks now is refused now
            cmd = commands.REGISTRY.get(r["cmd"]) if r else None
            if cmd is not None and caller.level < cmd.level:
                raise PermissionDenied(f"cannot schedule {r['cmd']!r}: it needs level "
                                       f"{cmd.level}; {caller.name} is {caller.level}")
        e = self.schedule.add(parsed, (caller.uid, caller.name))  # refused before, not at 3 a.m.
        return {"oid": e.oid, "due": e.due.isoformat()}

    def delete(self, oid: str, caller) -> dict:
        from acctd.control.access import Level
        entry = self.schedule.get(oid)  # unknown oid: an error naming it
        if (entry.owner.uid, entry.owner.name) != (caller.uid, caller.name) and \
                caller.level < Level.ADMIN:
            raise PermissionDenied(f"schedule {oid} belongs to {entry.owner.name}; only it or an "
                                   "admin may delete it")
        self.schedule.delete(oid)
        return {"deleted": oid}
