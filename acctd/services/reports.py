"""Traffic reports by mail (NeTAMS `send report`): which units, which period,
which figures and to whom. The functions are pure (the one query,
period_figures, is in acctd/store/queries.py); ReportsService queues what
`build` returns through the alerter.

    send report [to {owner}|admin|ADDRESS ...] [on UNIT[+] ...] [period day|week]

* `to`: `{owner}` is the unit's e-mail, `admin` (or `admins`) the [alerter]
  admins (acctd's users have no e-mail, so NeTAMS's `to admin` lands there),
  anything with an `@` that address. Default: `{owner} admin`.
* `on`: units by name or oid; `LAN+` is LAN and every unit below it (members,
  and members of member groups). Default: every unit that has an e-mail.
* `period`: the last complete day (yesterday) or ISO week (Monday to Sunday)
  in the processor time zone, as the hour/day/week rollups count it: a
  drain's bytes belong to the period holding the drain's end. Default: day.

One message per unit: a line per acct-policy of the unit (zero if idle, plus
any policy it had traffic under that is no longer in its list), and a total
line with all of its traffic (policy oid 0), which is not the sum of the
policy lines: policies may overlap or leave traffic out.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
from collections.abc import Mapping, Sequence
from zoneinfo import ZoneInfo

from acctd.errors import AcctError
from acctd.services.contract import Service
from acctd.store.rollup import ALL_TRAFFIC, DROPPED, period_start

log = logging.getLogger("acctd.daemon")

PERIODS = ("day", "week")
OWNER = "{owner}"
ADMIN = ("admin", "admins")
GRAMMAR = "send report [to {owner}|admin|ADDRESS ...] [on UNIT[+] ...] [period day|week]"
NO_ALERTER = "send report needs an [alerter] table in the config"

Row = tuple[str, int, int]   # policy name, bytes in, bytes out: render_report's rows

_KEYWORDS = ("to", "on", "period")
_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+")
_QUOTES = "\"'\u00ab\u00bb\u201c\u201d\u201e"   # «{owner}» as the reference writes it


class ReportError(AcctError, ValueError):
    """A `send report` that cannot be understood or names an unknown unit."""


@dataclasses.dataclass(frozen=True)
class Request:
    """A parsed `send report`. Empty `to`: the owner and the admins; empty
    `on`: every unit with an e-mail."""
    to: tuple[str, ...] = ()
    on: tuple[str, ...] = ()
    period: str = "day"

    def __post_init__(self):
        if self.period not in PERIODS:
            raise ReportError(f"send report: period must be day or week, got {self.period!r}")
        for w in self.to:
            if w != OWNER and w not in ADMIN and not _ADDRESS.fullmatch(w):
                raise ReportError(f"send report: recipient {w!r}: expected {OWNER}, admin "
                                  "(the [alerter] admins) or an e-mail address")
        for w in self.on:
            if not w.removesuffix("+"):
                raise ReportError(f"send report: unit {w!r}: expected NAME, OID, NAME+ or OID+")

    def to_args(self) -> dict:
        """The control request's args (JSON)."""
        return {"to": list(self.to), "on": list(self.on), "period": self.period}


def parse(words: Sequence[str]) -> Request:
    """The words after `send report` (argv from acctctl or a schedule action)."""
    got: dict[str, list[str]] = {}
    key = None
    for raw in words:
        w = raw.strip(_QUOTES)
        if key == "period":               # exactly one word, whatever it is
            got["period"].append(w.lower())
            key = None
        elif w.lower() in _KEYWORDS:
            key = w.lower()
            if key == "period" and "period" in got:
                raise ReportError("send report: period given twice")
            got.setdefault(key, [])
        elif key is None:
            raise ReportError(f"send report: unexpected {raw!r}; expected {GRAMMAR}")
        elif key == "to":
            got["to"].append(w.lower() if w.lower() in (OWNER, *ADMIN) else w)
        else:
            got["on"].append(w)
    for k, v in got.items():
        if not v:
            raise ReportError(f"send report: nothing after {k!r}; expected {GRAMMAR}")
    return Request(tuple(got.get("to", ())), tuple(got.get("on", ())),
                   (got.get("period") or ["day"])[0])


# --- the period -----------------------------------------------------------------------

def last_period(period: str, now: dt.datetime, zone: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """UTC [start, end) of the last complete local day or ISO week before `now`:
    yesterday, or Monday to Sunday of the week before this one. 23 or 25
    hours long across a DST change, as the rollups are."""
    if period not in PERIODS:
        raise ReportError(f"send report: period must be day or week, got {period!r}")
    end = period_start(period, now, zone)
    return period_start(period, end - dt.timedelta(microseconds=1), zone), end


# --- units, recipients, rows ---------------------------------------------------------

def select_units(units, on: Sequence[str] = ()) -> list[int]:
    """Indexes into a UnitSet: `on` in the order given (NAME+ adds everything
    below NAME, in config order), each unit once; nothing given: every unit
    with an e-mail."""
    if not on:
        return [i for i, u in enumerate(units) if u.email]
    out: list[int] = []
    for w in on:
        name, plus = (w[:-1], True) if w.endswith("+") else (w, False)
        i = units.find(name)   # NotFound: "unknown unit 'x'"
        for j in (i, *(units.descendants(i) if plus else ())):
            if j not in out:
                out.append(j)
    return out


def addresses(to: Sequence[str], owner_email: str | None, admins: Sequence[str]) -> tuple[str, ...]:
    """Recipient words -> addresses, each once (case-insensitively), in order.
    {owner} without an e-mail adds nothing."""
    out: list[str] = []
    for w in to or (OWNER, ADMIN[0]):
        for a in ([owner_email] if w == OWNER else admins if w in ADMIN else [w]):
            if a and a.lower() not in (x.lower() for x in out):
                out.append(a)
    return tuple(out)


def policy_rows(listed: Sequence[tuple[int, str]], figures: Mapping[tuple[int, int], int],
                names: Mapping[int, str] | None = None, hidden: frozenset[int] = frozenset()
                ) -> tuple[list[Row], tuple[int, int] | None]:
    """(rows, total) for render_report: a (name, bytes in, bytes out) line per
    listed acct-policy (oid, name), then any other policy with figures (a
    unit's list changed during the period) by oid; the total is the unit's
    all-traffic figures, None if it has none (the rows are then summed).
    Policies in `hidden` (their oids) get no line: NeTAMS's `hidden`."""
    rows, seen = [], set(hidden)

    def row(oid: int, name: str) -> Row:
        return (name, figures.get((oid, 0), 0), figures.get((oid, 1), 0))
    for oid, name in listed:
        if oid not in seen:
            seen.add(oid)
            rows.append(row(oid, name))
    for oid in sorted({p for p, _ in figures} - seen - {ALL_TRAFFIC}):
        rows.append(row(oid, (names or {}).get(oid, f"{oid:06X}")))
    if not any(p == ALL_TRAFFIC for p, _ in figures):
        return rows, None
    return rows, (figures.get((ALL_TRAFFIC, 0), 0), figures.get((ALL_TRAFFIC, 1), 0))


@dataclasses.dataclass(frozen=True)
class Report:
    """One message to queue: Mailer.report's arguments."""
    unit: str
    oid: str
    to: tuple[str, ...]
    period: str
    start: dt.datetime                 # local, aware: what the template prints
    rows: tuple[Row, ...]
    total: tuple[int, int] | None


def build(snap, req: Request, admins: Sequence[str], figures: Mapping[int, Mapping],
          start: dt.datetime) -> tuple[list[Report], list[dict]]:
    """The messages for `req` over the period starting at `start` (UTC), and
    the units left out (nobody to send to) with the reason; snap: the model
    snapshot (units, policies, plan)."""
    zone = snap.config.processor.zone
    pols = snap.policies.policies
    names = {int(p.oid, 16): p.name for p in pols}
    hidden = frozenset(int(p.oid, 16) for p in pols if p.hidden)
    names.update({oid: f"dropped: {cause}" for cause, oid in DROPPED.items()})
    reports, skipped = [], []
    for i in select_units(snap.units, req.on):
        u = snap.units.units[i]
        to = addresses(req.to, u.email or None, admins)
        if not to:
            skipped.append({"unit": u.name, "reason": "no e-mail and no other recipient"})
            continue
        listed = [(int(pols[e.policy].oid, 16), pols[e.policy].name) for e in snap.plan.lists[i]]
        rows, total = policy_rows(listed, figures.get(int(u.oid, 16), {}), names, hidden)
        reports.append(Report(u.name, u.oid, to, req.period, start.astimezone(zone),
                              tuple(rows), total))
    return reports, skipped


# --- the service ----------------------------------------------------------------------

class ReportsService(Service):
    """`send report` from acctctl or a schedule: one mail per unit with its
    bytes per acct-policy over the last complete day or week, queued in the
    alerter's outbox (its thread delivers). Which units, period and figures:
    the functions above; here only the query, under the lock, and the
    queueing, outside it."""

    name = "reports"

    def send(self, to: list[str] = (), on: list[str] = (), period: str = "day") -> dict:
        from acctd.services.alerter import AlerterService
        from acctd.store.queries import period_figures
        mailer = self.core.service(AlerterService).mailer
        if mailer is None:
            raise ReportError(NO_ALERTER)
        req = Request(tuple(to), tuple(on), period)
        with self.core.lock:  # one DuckDB handle; a reload swaps the snapshot under it too
            snap = self.core.snapshot
            zone = snap.config.processor.zone
            now = self.core.clock()
            start, end = last_period(req.period, now, zone)
            figures = period_figures(self.core.storage, req.period, start)
        out, skipped = build(snap, req, mailer.settings.admins, figures, start)
        queued = []
        for r in out:
            mid = mailer.report(r.unit, r.oid, None, r.period, r.start, list(r.rows),
                                to=r.to, total=r.total)
            queued.append({"unit": r.unit, "to": list(r.to), "id": mid})
        log.info("send report %s from %s: %d queued, %d skipped", req.period,
                 start.astimezone(zone).date(), len(queued), len(skipped))
        return {"period": req.period, "start": start.astimezone(zone).isoformat(),
                "end": end.astimezone(zone).isoformat(), "queued": queued, "skipped": skipped}
