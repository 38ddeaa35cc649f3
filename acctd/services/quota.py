"""Quotas (NeTAMS `service quota`): the `set` grammar, per-unit specs, and the
pure check that turns usage into soft/hard/return events and block decisions.

Plain data in, plain data out: the functions touch neither the kernel,
storage nor mail. QuotaService, at the end, is the daemon's side: it
supplies usage (from storage's per-period totals), persists the state and
holds the blocks (abi.SysPolicy.QUOTA).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import shlex
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from acctd.common.display import format_bytes
from acctd.config.schema import Invalid, Table, TomlValue, carried, integer, setting, string
from acctd.kernel import abi
from acctd.model import enforcement
from acctd.services.central import CentralService
from acctd.services.contract import Core, Drain, Service
from acctd.store.rollup import PERIODS, period_start

log = logging.getLogger("acctd.quota")

DIRS = ("in", "out", "sum")
EVENTS = ("soft", "hard", "return")
OWNER, NONE = "{owner}", "{none}"

# K/M/G are binary multiples. The reference only says "в байтах, но можно
# использовать модификаторы K, M, G"; NeTAMS's own parser (bytesT2Q, with
# KILOBYTE 1024 in netams.h) multiplies by 1024, and `show quota` prints
# 2.00G the same way, so "3M" is 3 * 1024**2 bytes here too.
MULTIPLIER = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}
# Amounts are whole bytes, read with integer arithmetic (1.5G is exactly
# 1610612736); 1 EiB is the most a quota may be, far beyond any period's
# traffic and well inside the 64-bit counters it is compared with.
MAX_AMOUNT = 1024 ** 6

# src/netams.h: S_QUOTA_DEF_soft_treshold 80, S_QUOTA_DEF_delay 10,
# S_QUOTA_DEF_notify_{soft,hard,return} 1 (read as "tell the owner").
DEFAULT_SOFT_THRESHOLD = 80
DEFAULT_DELAY = 10
DEFAULT_NOTIFY = {"soft": (OWNER,), "hard": (OWNER,), "return": (OWNER,)}

# The reference's typography: en/em dashes for '-', guillemets and curly quotes for '"'.
_TYPO = str.maketrans({"\u2013": "-", "\u2014": "-", "\u00ab": '"', "\u00bb": '"',
                       "\u201c": '"', "\u201d": '"', "\u201e": '"'})
_AMOUNT = re.compile(r"(\d{1,30})(?:\.(\d{1,30}))?([KMG]?)B?", re.IGNORECASE)
_KEYWORDS = {"name", "oid", "policy", "block-policy", "soft-treshold", "soft-threshold",
             "active", "inactive", "notify", *PERIODS}


class QuotaError(ValueError):
    """A quota command that cannot be parsed: which token, and what was expected there."""

    def __init__(self, token: str | None, expected: str, pos: int | None = None):
        got = "end of command" if token is None else repr(token)
        super().__init__(f"expected {expected}, got {got}")
        self.token, self.expected, self.pos = token, expected, pos


# --- specs ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class QuotaSpec:
    """One unit's quota record (a row of NeTAMS's quota table).

    unit: the name or oid as given; by: "name", "oid", or None (acctctl's
    `quota set NAME`, resolved by name then oid like every acctctl unit
    argument). None in policy, block_policy, soft_threshold and notify means
    "the service default". limits: {(period, dir): bytes}; 0 is never stored
    (NeTAMS: "надо задать её равной 0" resets a quota).
    """

    unit: str
    by: str | None = None
    policy: str | None = None
    block_policy: str | None = None
    soft_threshold: int | None = None
    active: bool = True
    notify: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    limits: Mapping[tuple[str, str], int] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for the quota table."""
        return {"unit": self.unit, "by": self.by, "policy": self.policy,
                "block-policy": self.block_policy, "soft-threshold": self.soft_threshold,
                "active": self.active, "notify": {k: list(v) for k, v in self.notify.items()},
                "limits": {f"{p} {d}": q for (p, d), q in sorted(self.limits.items(), key=_order)}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "QuotaSpec":
        return cls(unit=d["unit"], by=d.get("by"), policy=d.get("policy"),
                   block_policy=d.get("block-policy"), soft_threshold=d.get("soft-threshold"),
                   active=bool(d.get("active", True)),
                   notify={k: tuple(v) for k, v in (d.get("notify") or {}).items()},
                   limits={tuple(k.split()): int(v) for k, v in (d.get("limits") or {}).items()})


def _order(item) -> tuple[int, int]:
    (p, d), _q = item
    return PERIODS.index(p), DIRS.index(d)


def _soft_threshold(v, ctx) -> int:
    try:
        return _threshold(str(v))
    except QuotaError as e:
        raise Invalid(str(e)) from None


def _notify(v, ctx) -> Mapping[str, tuple[str, ...]]:
    """{event: recipients}; the events not named keep the reference's default."""
    if not isinstance(v, Mapping):
        raise Invalid(f"expected a table of soft/hard/return = recipients, got {v!r}")
    out = dict(DEFAULT_NOTIFY)
    for ev, who in v.items():
        if ev not in EVENTS:
            raise Invalid(f"expected a notify event soft, hard or return, got {ev!r}")
        who = [who] if isinstance(who, str) else who
        if not isinstance(who, (list, tuple)) or not all(isinstance(w, str) for w in who):
            raise Invalid(f"{ev}: expected recipients ({OWNER}, {NONE}, admin, user NAME, "
                          f"an address), got {who!r}")
        out[ev] = tuple(who)
    return out


def _units(v, ctx) -> Mapping[str, TomlValue]:
    """[quota.units.NAME] raw = ["day 3M in", ...]: each line must parse as
    `set NAME LINE`, so a bad amount has its key's line at load."""
    units = carried()(v, ctx)  # a table, frozen
    for name, entry in v.items():
        if not isinstance(entry, Mapping) or set(entry) - {"raw"}:
            raise Invalid(f'expected a table with raw = ["day 3M in", ...], got {entry!r}',
                          f".{name}")
        raw = entry.get("raw", ())
        if not isinstance(raw, list) or not all(isinstance(r, str) for r in raw):
            raise Invalid(f'expected a list of quota commands like "day 3M in", got {raw!r}',
                          f".{name}.raw")
        spec = None
        for i, line in enumerate(raw):
            try:
                spec = parse_set(["set", name, *tokens(line)], spec)
            except QuotaError as e:
                raise Invalid(str(e), f".{name}.raw[{i}]") from None
    return units


@dataclasses.dataclass(frozen=True)
class QuotaSettings(Table):
    """The service's own settings (the config file's [quota] table, as
    `acctd.importers.netams` writes it); missing keys keep NeTAMS's defaults."""

    policy: str | None = setting(None, check=string("a policy name"))
    block_policy: str | None = setting(None, check=string("a policy name"))
    soft_threshold: int = setting(DEFAULT_SOFT_THRESHOLD, check=_soft_threshold,
                                  aliases=("soft-treshold", "soft_threshold"))
    # NeTAMS's check interval, accepted and not used: usage moves only at a
    # drain, and every drain checks (lookup-delay is the check interval)
    delay: int = setting(DEFAULT_DELAY, check=integer(1, what="seconds"))
    notify: Mapping[str, tuple[str, ...]] = setting(
        default_factory=lambda: dict(DEFAULT_NOTIFY), check=_notify)
    # per-unit `quota set` lines the importer carried, checked as `set` commands
    units: Mapping[str, TomlValue] = setting(default_factory=lambda: MappingProxyType({}),
                                             check=_units)


@dataclasses.dataclass(frozen=True)
class Effective:
    """A spec with the service defaults merged in: what the check uses."""

    unit: str
    policy: str | None
    block_policy: str | None
    soft_threshold: int
    active: bool
    notify: Mapping[str, tuple[str, ...]]
    limits: Mapping[tuple[str, str], int]


def effective(spec: QuotaSpec, defaults: QuotaSettings,
              first_policy: str | None = None) -> Effective:
    """Merge: the unit's policy, block-policy, soft-threshold and notify override
    the service's ("переопределяют те, которые заданы глобально"); with no
    policy anywhere, the first processor policy counts ("Если не указано,
    используется первая политика ... сервиса processor")."""
    notify = dict(defaults.notify)
    notify.update(spec.notify)
    return Effective(
        unit=spec.unit,
        policy=spec.policy or defaults.policy or first_policy,
        block_policy=spec.block_policy or defaults.block_policy,
        soft_threshold=defaults.soft_threshold if spec.soft_threshold is None else spec.soft_threshold,
        active=spec.active, notify=notify, limits=dict(spec.limits))


# --- grammar --------------------------------------------------------------------------

def parse_amount(tok: str) -> int:
    """"300", "3M", "2g", "1.5G", "100MB" -> bytes (binary multiples, see
    MULTIPLIER), exact; a fraction of a byte is dropped (0.1K is 102).
    The one parser of byte amounts: `quota set` over the control socket,
    [quota.units] in the config and `acctctl import netams` all come here."""
    m = _AMOUNT.fullmatch(tok)
    n = None
    if m:
        whole, frac, suffix = m.group(1), m.group(2) or "", MULTIPLIER[m.group(3).upper()]
        n = (int(whole + frac) * suffix) // 10 ** len(frac)
    if n is None or n > MAX_AMOUNT:
        raise QuotaError(tok, "an amount in bytes like 300, 3M or 1.5G, at most "
                         f"{MAX_AMOUNT // MULTIPLIER['G']}G (1 EiB)")
    return n


def _threshold(tok: str, pos: int | None = None) -> int:
    t = tok[:-1] if tok.endswith("%") else tok  # "значок % ставить не нужно": tolerated
    if not t.isdigit() or not 0 <= int(t) <= 100:
        raise QuotaError(tok, "a soft-threshold percentage from 0 to 100", pos)
    return int(t)


def tokens(text: str) -> list[str]:
    """Split a command, reading the reference's typography (–, «»)."""
    text = text.translate(_TYPO)
    try:
        return shlex.split(text)
    except ValueError as e:
        raise QuotaError(text, f"balanced quotes ({e})") from None


def parse_set(text: str | Iterable[str], base: QuotaSpec | None = None) -> QuotaSpec:
    """Parse one quota command and apply it to `base` (the unit's current record).

    Accepted forms (the NeTAMS telnet command and acctctl's):
        [quota] set {name X | oid Y | X} [policy P] [block-policy P]
            [soft-treshold N | soft-threshold N] [active | inactive]
            [notify [{soft|hard|return} {{none} | [{owner}] [USER ...]}]]
            [{hour|day|week|month} AMOUNT {in|out|sum} [AMOUNT {in|out|sum} ...]] ...
    Like NeTAMS's `set`, only what the command names changes: `month 0 in`
    removes that quota, bare `notify` returns all notices to the service default.
    """
    # a list is argv from acctctl: the shell has split it, «{owner}» may still be quoted
    t = tokens(text) if isinstance(text, str) else [x.translate(_TYPO).strip('"') for x in text]
    low = [x.lower() for x in t]
    i = 0

    def tok(j: int) -> str | None:
        return t[j] if j < len(t) else None

    if low[i:i + 1] == ["quota"]:
        i += 1
    if low[i:i + 1] != ["set"]:
        raise QuotaError(tok(i), "'set'", i)
    i += 1
    if tok(i) is None:
        raise QuotaError(None, "a unit: name X, oid Y or a unit name", i)
    by = None
    if low[i] in ("name", "oid"):
        by = low[i]
        i += 1
        if tok(i) is None:
            raise QuotaError(None, f"the unit's {by}", i)
    elif low[i] in _KEYWORDS:
        raise QuotaError(t[i], "a unit: name X, oid Y or a unit name", i)
    unit = t[i]
    i += 1
    if base is not None and base.unit != unit:
        base = dataclasses.replace(base, unit=unit)
    spec = base or QuotaSpec(unit=unit)
    fields: dict[str, Any] = {"by": by or spec.by}
    notify = dict(spec.notify)
    limits = dict(spec.limits)

    while i < len(t):
        w = low[i]
        if w in ("policy", "block-policy"):
            if tok(i + 1) is None:
                raise QuotaError(None, f"a policy name after {w}", i + 1)
            fields["policy" if w == "policy" else "block_policy"] = t[i + 1]
            i += 2
        elif w in ("soft-treshold", "soft-threshold"):
            if tok(i + 1) is None:
                raise QuotaError(None, "a soft-threshold percentage from 0 to 100", i + 1)
            fields["soft_threshold"] = _threshold(t[i + 1], i + 1)
            i += 2
        elif w in ("active", "inactive"):
            fields["active"] = w == "active"
            i += 1
        elif w == "notify":
            i += 1
            if i >= len(t) or low[i] in _KEYWORDS:
                notify = {}
                continue
            ev = low[i]
            if ev not in EVENTS:
                raise QuotaError(t[i], "a notify event soft, hard or return", i)
            i += 1
            who: list[str] = []
            while i < len(t) and low[i] not in _KEYWORDS:
                who.append(OWNER if low[i] == OWNER else NONE if low[i] == NONE else t[i])
                i += 1
            if not who:
                raise QuotaError(tok(i), f"recipients after notify {ev}: {{owner}}, {{none}} "
                                 "or user names", i)
            if NONE in who and len(who) > 1:
                raise QuotaError(NONE, "{none} alone", i)
            notify[ev] = () if who == [NONE] else tuple(who)
        elif w in PERIODS:
            period = w
            i += 1
            pairs = 0
            while i < len(t) and low[i] not in _KEYWORDS:
                amount = parse_amount_at(t[i], i)
                d = low[i + 1] if i + 1 < len(t) else None
                if d not in DIRS:
                    raise QuotaError(tok(i + 1), f"in, out or sum after {period} {t[i]}", i + 1)
                if amount:
                    limits[(period, d)] = amount
                else:
                    limits.pop((period, d), None)
                pairs += 1
                i += 2
            if not pairs:
                raise QuotaError(tok(i), f"an amount after {period}, like 3M", i)
        else:
            raise QuotaError(t[i], "policy, block-policy, soft-treshold, active, inactive, "
                             "notify, hour, day, week or month", i)
    return dataclasses.replace(spec, **fields, notify=notify, limits=limits)


def parse_amount_at(tok: str, pos: int) -> int:
    try:
        return parse_amount(tok)
    except QuotaError as e:
        raise QuotaError(tok, e.expected, pos) from None


def format_set(spec: QuotaSpec) -> str:
    """The record as one NeTAMS command; parse_set(format_set(s)) == s."""
    out = ["set"] + ([spec.by] if spec.by else []) + [_quote(spec.unit)]
    if spec.policy:
        out += ["policy", _quote(spec.policy)]
    if spec.block_policy:
        out += ["block-policy", _quote(spec.block_policy)]
    if spec.soft_threshold is not None:
        out += ["soft-treshold", str(spec.soft_threshold)]
    out.append("active" if spec.active else "inactive")
    for ev in EVENTS:
        if ev in spec.notify:
            out += ["notify", ev, *([_quote(w) for w in spec.notify[ev]] or [NONE])]
    for (p, d), q in sorted(spec.limits.items(), key=_order):
        out += [p, _short(q), d]
    return " ".join(out)


def _quote(s: str) -> str:
    return s if s in (OWNER, NONE) else shlex.quote(s)


def _short(n: int) -> str:
    for suffix in ("G", "M", "K"):
        if n % MULTIPLIER[suffix] == 0 and n:
            return f"{n // MULTIPLIER[suffix]}{suffix}"
    return str(n)


# --- the check ------------------------------------------------------------------------

# usage: {period: (bytes in, bytes out)} of the unit's quota policy, current periods
Usage = Mapping[str, tuple[int, int]]


def usage_from_totals(rows: Iterable[Mapping[str, Any]], policy_oid: int) -> dict[str, tuple[int, int]]:
    """storage.unit_totals() rows (per policy_oid and dir, each period a (packets,
    bytes) pair) -> the Usage of one policy. dir 0 is in (towards the unit), 1 out."""
    out = {p: [0, 0] for p in PERIODS}
    for r in rows:
        if int(r["policy_oid"]) == policy_oid:
            for p in PERIODS:
                out[p][int(r["dir"])] += int(r[p][1])
    return {p: (v[0], v[1]) for p, v in out.items()}


def add_usage(a: Usage, b: Usage) -> dict[str, tuple[int, int]]:
    """Two gateways' usage of one unit's policy, added per period and dir."""
    return {p: (a.get(p, (0, 0))[0] + b.get(p, (0, 0))[0],
                a.get(p, (0, 0))[1] + b.get(p, (0, 0))[1]) for p in PERIODS}


def used(usage: Usage, period: str, d: str) -> int:
    b_in, b_out = usage.get(period, (0, 0))
    return {"in": b_in, "out": b_out, "sum": b_in + b_out}[d]


@dataclasses.dataclass(frozen=True)
class Event:
    """A notice to send. period/dir/used/quota name the limit that fired (for
    `return`, the limit that had blocked the unit, if it is still configured)."""

    kind: str  # soft | hard | return
    unit: str  # the key the caller used (the unit's oid)
    period: str | None
    dir: str | None
    used: int
    quota: int
    period_start: str  # ISO UTC start of the period the event belongs to
    notify: tuple[str, ...]  # raw recipients: {owner} and user names (see recipients())

    @property
    def ratio(self) -> float:
        return 100.0 * self.used / self.quota if self.quota else 0.0


@dataclasses.dataclass(frozen=True)
class Result:
    state: dict[str, Any]          # persist this; pass it back next time
    events: tuple[Event, ...]
    block: tuple[str, ...]         # units to block now (set SysPolicy.QUOTA / add block-policy)
    unblock: tuple[str, ...]       # units to let through again
    blocked: frozenset[str]        # every unit the quota service holds blocked


SYS_POLICY = abi.SysPolicy.QUOTA


def _iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.timezone.utc).isoformat()


def check_unit(key: str, eff: Effective, usage: Usage, prev: Mapping[str, Any] | None,
               now: dt.datetime, zone: ZoneInfo) -> tuple[dict[str, Any], list[Event]]:
    """One unit: (new state, events).

    State: {"blocked": bool, "limits": {"day in": {"start": ISO, "soft": bool,
    "hard": bool, "over": bool}}}. soft/hard record that the notice for that
    limit's current period was given, so a drain every `delay` seconds does not
    repeat it; a new period start clears them.

    Rules: hard when used > quota ("превышение"); soft when used > threshold% of
    quota and not already hard (a jump straight past the quota gives one hard
    notice, not both); threshold 0 disables soft. The unit is blocked while any
    limit is over; when none is over any more (a new period began, or the quota
    was raised) it is unblocked with one `return`. Inactive: never blocked, no
    notices ("экстренное включение клиента обратно").
    """
    prev = prev or {}
    was_blocked = bool(prev.get("blocked"))
    events: list[Event] = []
    if not eff.active:
        # let a blocked unit through at once, without mail: the admin did it by hand
        return {"blocked": False, "limits": {}}, events
    old = prev.get("limits", {})
    limits: dict[str, Any] = {}
    over_any = False
    first_over: tuple[str, str, int, int, str] | None = None
    for (period, d), quota in sorted(eff.limits.items(), key=_order):
        if quota <= 0:
            continue
        key_l = f"{period} {d}"
        start = _iso(period_start(period, now, zone))
        mark = dict(old.get(key_l, {}))
        if mark.get("start") != start:
            mark = {"start": start, "soft": False, "hard": False}
        u = used(usage, period, d)
        over = u > quota
        if over and not mark["hard"]:
            mark["hard"] = mark["soft"] = True
            events.append(Event("hard", key, period, d, u, quota, start, eff.notify.get("hard", ())))
        elif (not over and eff.soft_threshold and not mark["soft"]
              and u * 100 > quota * eff.soft_threshold):
            mark["soft"] = True
            events.append(Event("soft", key, period, d, u, quota, start, eff.notify.get("soft", ())))
        mark["over"] = over
        if over:
            over_any = True
            first_over = first_over or (period, d, u, quota, start)
        limits[key_l] = mark
    if was_blocked and not over_any:
        # name the limit that had blocked the unit, if it is still there
        cause = next(((k, old[k]) for k in old if old[k].get("over") and k in limits), None)
        if cause:
            p, d = cause[0].split()
            ev = Event("return", key, p, d, used(usage, p, d), eff.limits[(p, d)],
                       limits[cause[0]]["start"], eff.notify.get("return", ()))
        else:
            ev = Event("return", key, None, None, 0, 0, _iso(now), eff.notify.get("return", ()))
        events.append(ev)
    return {"blocked": over_any, "limits": limits}, events


def check(specs: Mapping[str, QuotaSpec], defaults: QuotaSettings,
          usage: Mapping[str, Usage], state: Mapping[str, Any] | None,
          now: dt.datetime, zone: ZoneInfo, first_policy: str | None = None) -> Result:
    """Every unit with a quota record, keyed by unit oid (strings: JSON keys).

    state is what the previous call returned (or None at first start). A unit
    whose record disappeared but is still blocked is unblocked without a notice.
    """
    prev_units = (state or {}).get("units", {})
    units: dict[str, Any] = {}
    events: list[Event] = []
    block, unblock = [], []
    for key in sorted(set(specs) | set(prev_units)):
        prev = prev_units.get(key)
        was = bool(prev and prev.get("blocked"))
        if key not in specs:
            if was:
                unblock.append(key)
            continue
        eff = effective(specs[key], defaults, first_policy)
        st, ev = check_unit(key, eff, usage.get(key, {}), prev, now, zone)
        units[key] = st
        events += ev
        if st["blocked"] and not was:
            block.append(key)
        elif was and not st["blocked"]:
            unblock.append(key)
    new = {"version": 1, "checked": _iso(now), "units": units}
    return Result(new, tuple(events), tuple(block), tuple(unblock),
                  frozenset(k for k, v in units.items() if v["blocked"]))


def recipients(who: Iterable[str], owner_email: str, users: Mapping[str, str]) -> list[str]:
    """Raw notify tokens -> addresses: {owner} is the unit's e-mail (skipped if it
    has none), other words are management users by name -> their e-mail, or
    an address as it is."""
    out: list[str] = []
    for w in who:
        addr = owner_email if w == OWNER else users.get(w, w if "@" in w else "")
        if addr and addr not in out:
            out.append(addr)
    return out


# --- show quota -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ShowLine:
    period: str
    dir: str
    used: int
    quota: int

    @property
    def ratio(self) -> float:
        return 100.0 * self.used / self.quota if self.quota else 0.0

    @property
    def ok(self) -> bool:  # [+]; [-] once the quota is exceeded (the block rule)
        return self.used <= self.quota


@dataclasses.dataclass(frozen=True)
class ShowRow:
    oid: str
    name: str
    policy: str | None
    block_policy: str | None
    soft_threshold: int
    active: bool
    blocked: bool
    acct_present: bool  # the unit counts the quota policy (reference: "ACCT is present")
    lines: tuple[ShowLine, ...]


def show_quota(specs: Mapping[str, QuotaSpec], defaults: QuotaSettings,
               names: Mapping[str, str], usage: Mapping[str, Usage],
               state: Mapping[str, Any] | None, acct: Mapping[str, Iterable[str]] | None = None,
               first_policy: str | None = None, only: str | None = None) -> list[ShowRow]:
    """Rows for `show quota [oid ID | name X]`: specs/usage/state keyed by oid,
    names {oid: name}, acct {oid: the unit's acct-policy names} (None: assume present)."""
    units = (state or {}).get("units", {})
    rows = []
    for oid in sorted(specs):
        if only is not None and only not in (oid, names.get(oid)):
            continue
        eff = effective(specs[oid], defaults, first_policy)
        present = acct is None or eff.policy in set(acct.get(oid, ()))
        lines = tuple(ShowLine(p, d, used(usage.get(oid, {}), p, d), q)
                      for (p, d), q in sorted(eff.limits.items(), key=_order) if q > 0)
        rows.append(ShowRow(oid, names.get(oid, specs[oid].unit), eff.policy, eff.block_policy,
                            eff.soft_threshold, eff.active,
                            bool(units.get(oid, {}).get("blocked")), present,
                            lines if present else ()))
    return rows


def format_show(rows: Iterable[ShowRow], list_only: bool = False) -> str:
    """The reference's layout, one QUOTA block per unit record:

        QUOTA: avm policy all-ip set sys-deny-quota
        UNIT 0246E8 (avm) SYST: sys-deny-quota ACCT is present
        HOUR in: 420 B, quota 300 B, ratio 140.00% -> [-]

    list_only ("show quota list"): the UNIT line of each active record.
    """
    out = []
    for r in rows:
        unit = f"UNIT {r.oid} ({r.name})"
        if list_only:
            if r.active:
                out.append(unit)
            continue
        action = f"block-policy {r.block_policy}" if r.block_policy else "sys-deny-quota"
        head = f"QUOTA: {r.name} policy {r.policy or '-'} set {action}"
        if r.soft_threshold != DEFAULT_SOFT_THRESHOLD:
            head += f" soft-treshold {r.soft_threshold}"
        out.append(head + ("" if r.active else " inactive"))
        syst = (action + " ") if r.blocked else ""  # what the kernel holds
        out.append(f"{unit} SYST: {syst}ACCT is {'' if r.acct_present else 'NOT '}present")
        for ln in r.lines:
            # used and quota in the one unit system of every acctctl figure
            out.append(f"{ln.period.upper()} {ln.dir}: {format_bytes(ln.used)}, quota "
                       f"{format_bytes(ln.quota)}, ratio {ln.ratio:.2f}% -> [{'+' if ln.ok else '-'}]")
    return "\n".join(out) + ("\n" if out else "")


# --- the service ----------------------------------------------------------------------

class QuotaService(Service):
    """NeTAMS `service quota` in the daemon: records and state in DuckDB, a
    hard quota blocks (reason quota) at the drain that crossed it and a new
    period lets the unit back, with soft/hard/return notices once per period.
    The state is saved before the kernel is told, so a crash in between
    re-applies it at the next start."""

    name = "quota"

    def __init__(self, core: Core, settings: QuotaSettings):
        super().__init__(core, settings)
        self.state: dict | None = None      # check()'s state, persisted
        self.events: list[Event] = []       # notices given (also mailed with [alerter])

    @staticmethod
    def settings_of(config):
        return config.quota

    def start(self) -> None:
        self.state = self.core.storage.quota_state()
        self._config_sets()

    def reload(self, settings: QuotaSettings) -> None:
        changed = settings.units != self.settings.units
        self.settings = settings
        if changed:  # the config's lines again; a reload keeps what `quota set` did since
            self._config_sets()

    def _config_sets(self) -> None:
        """The config's [quota.units.X] raw lines, as `quota set X LINE` each
        (over the unit's record: only what a line names changes)."""
        for name, entry in self.settings.units.items():
            for line in entry.get("raw", ()):
                try:
                    self.set([name, *tokens(line)])
                except (KeyError, ValueError) as e:
                    log.error("[quota.units.%s]: %s; that line is not applied", name,
                              e.args[0] if e.args else e)

    def held(self) -> set[str]:
        return {o for o, st in (self.state or {}).get("units", {}).items() if st.get("blocked")}

    def _block_policies(self) -> dict[str, str | None]:
        """Each held unit's block-policy (None: the whole unit, sys-deny-quota)."""
        held = self.held()
        if not held:
            return {}
        specs = self.core.storage.quotas()
        return {o: effective(QuotaSpec.from_dict(specs[o]), self.settings).block_policy
                if o in specs else None for o in held}

    def blocks(self) -> dict[str, int]:
        return {o: abi.SysPolicy.QUOTA for o, p in self._block_policies().items() if p is None}

    def fw_blocks(self) -> dict[str, tuple[tuple[str, ...], int]]:
        """A block-policy is added to the unit's fw-policies while it is over
        ("добавляться к набору политик блокировки юнита"): its traffic drops."""
        return {o: ((p,), abi.SysPolicy.QUOTA) for o, p in self._block_policies().items()
                if p is not None}

    def _inputs(self, now):
        snap = self.core.snapshot
        specs = {o: QuotaSpec.from_dict(d) for o, d in self.core.storage.quotas().items()}
        policies = snap.policies
        first = policies.policies[0].name if len(policies) else None
        central = self.core.service(CentralService)   # the other gateways' share, if any
        usage = {}
        for oid, spec in specs.items():
            eff = effective(spec, self.settings, first)
            try:
                pol = policies.policies[policies.find(eff.policy)]
            except KeyError:
                log.error("quota of %s counts policy %r, which is not configured", oid, eff.policy)
                continue
            usage[oid] = add_usage(
                usage_from_totals(self.core.storage.unit_totals(oid, now), int(pol.oid, 16)),
                central.usage_elsewhere(oid, int(pol.oid, 16), now))
        return specs, usage, first

    def after_drain(self, drain: Drain) -> None:
        specs, usage, first = self._inputs(drain.now)
        if not specs and not self.state:
            return
        res = check(specs, self.settings, usage, self.state, drain.now,
                    drain.snapshot.config.processor.zone, first)
        before = self._block_policies()
        self.state = res.state
        self.core.storage.set_quota_state(res.state)
        if self._block_policies() != before:
            self.core.enforce()  # first: a notice that cannot go out holds up no block
        self.events.extend(res.events)
        for e in res.events:
            log.info("quota %s: unit %s %s %s %d of %d", e.kind, e.unit, e.period, e.dir, e.used,
                     e.quota)
            self._mail(e)

    def _mail(self, e: Event) -> None:
        """Queue the notice (the outbox is on disk: nothing is lost if the mail
        server is down); a thread of its own delivers it."""
        from acctd.services.alerter import AlerterService, QuotaNotice
        mailer = self.core.service(AlerterService).mailer
        if mailer is None or e.period is None:
            return
        units = self.core.snapshot.units
        i = units.by_oid.get(e.unit)
        if i is None:
            return  # the unit has left the config since its quota was set
        u = units.units[i]
        users = {x.name: x.email for x in self.core.config.users if x.email}
        unknown = [w for w in e.notify if w != OWNER and w not in users and "@" not in w]
        if unknown:
            log.warning("quota %s of %s: notify names %s, no [[user]] with an email",
                        e.kind, u.name, ", ".join(unknown))
        if not e.notify:
            return  # {none}: nobody, the alerter's admins included
        to = tuple(recipients(e.notify, u.email or "", users))
        from acctd.web.static_site import page_url
        url = page_url(self.core.config.html, {"name": u.name, "oid": u.oid, "type": u.type,
                                               "parents": u.parents})
        mailer.notify_quota(QuotaNotice(e.kind, u.name, u.oid, e.period, e.dir, e.used, e.quota,
                                        u.email or None, to, url))

    # -- commands ---------------------------------------------------------------------

    def set(self, argv: list[str]) -> dict:
        """`acctctl quota set NAME day 3M in ...`: kept in the database."""
        with self.core.lock:
            words = ["set", *argv]  # acctctl quota set NAME ... = NeTAMS quota set NAME ...
            u = self.core.snapshot.unit(parse_set(words).unit)  # whose record it is
            old = self.core.storage.quotas().get(u.oid)
            spec = parse_set(words, base=QuotaSpec.from_dict(old) if old else None)
            block = effective(spec, self.settings).block_policy
            why = block and enforcement.deny_error(self.core.snapshot, u.oid, (block,))
            if why:
                raise QuotaError(block, f"a block-policy the kernel can hold ({why})")
            self.core.storage.set_quota(u.oid, spec.to_dict() if spec.limits or not spec.active
                                        else None)
            return {"unit": u.name, "oid": u.oid, "set": format_set(spec)}

    def show(self, unit: str | None = None, list: bool = False) -> dict:
        with self.core.lock:
            snap = self.core.snapshot
            if unit is not None:
                unit = snap.unit(unit).oid   # NotFound: "unknown unit 'x'"
            specs, usage, first = self._inputs(self.core.clock())
            names = {u.oid: u.name for u in snap.units}
            acct = {}
            for i, u in enumerate(snap.units):
                lo, hi = snap.plan.entry_ptr[i], snap.plan.entry_ptr[i + 1]
                acct[u.oid] = [snap.policies.policies[p].name
                               for p in snap.plan.entry_policy[lo:hi]]
            rows = show_quota(specs, self.settings, names, usage, self.state, acct, first, unit)
            return {"text": format_show(rows, list),
                    "units": [{"oid": r.oid, "name": r.name, "blocked": r.blocked,
                               "lines": [{"period": ln.period, "dir": ln.dir, "used": ln.used,
                                          "quota": ln.quota, "ok": ln.ok} for ln in r.lines]}
                              for r in rows]}
