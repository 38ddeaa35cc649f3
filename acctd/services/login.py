"""The login service (NeTAMS `service login`): per-unit passwords and timeouts,
login/logout with the reference's replies, and which units it keeps blocked.

LoginTable is pure: time comes in as `now`, a unit's last counted packet
comes in as `last_seen`, units are resolved through a `find` callable.
LoginService, at the end, is its place in the daemon: it persists the
records, holds `blocked()` as abi.SysPolicy.LOGIN blocks, binds user units on
`LoginResult.bind` and runs `expire()` after every drain.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import ipaddress
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from acctd.config.schema import Invalid, Table, TomlValue, carried, setting
from acctd.control.delegation import AttemptLimit
from acctd.errors import BadRequest, NotFound, PermissionDenied
from acctd.kernel import abi
from acctd.services.contract import Core, Drain, Service
from acctd.services.sessions import SessionsService

log = logging.getLogger("acctd.login")

OPENED, CLOSED = "opened", "closed"
STATES = (OPENED, CLOSED)
CAUSES = ("inactivity", "absolute")
# the words acctd.model.sessions uses for why a session ended, for the daemon's bookkeeping
SESSION_CAUSE = {"inactivity": "idle-timeout", "absolute": "session-timeout",
                 "logout": "user-request", "close": "admin-reset"}

NO_ADDR, NO_MAC = "0.0.0.0", "00:00:00:00:00:00"  # what the reference prints for "not given"

# src/netams.h defaults, as the reference gives them for each directive
DEFAULT_INACT = 0
DEFAULT_ABS = 0
MIN_INACT, MAX_INACT = 60, 12 * 60 * 60
MIN_ABS, MAX_ABS = 60, 24 * 12 * 60 * 60
MIN_PASSWD_LENGTH = 3
DEFAULT_DELAY = 10


class LoginError(BadRequest):
    """A `login set` (or a login/logout argument) that cannot be accepted: why."""


# --- service settings -------------------------------------------------------------

def _seconds(key: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{key}: expected a whole number of seconds >= 0, got {v!r}")
    return v


def _seconds_check(v, ctx) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise Invalid(f"expected a whole number of seconds >= 0, got {v!r}")
    return v


def _flag_check(v, ctx) -> bool:
    # TOML booleans, or NeTAMS's own words as `acctd.importers.netams` carries them
    if isinstance(v, bool):
        return v
    if v in (1, 0) or (isinstance(v, str) and v.lower() in ("yes", "no", "1", "0")):
        return str(v).lower() in ("1", "yes")
    raise Invalid(f"expected true/false (or yes/no), got {v!r}")


DEF_STATES = {"open": OPENED, "opened": OPENED, "1": OPENED, "closed": CLOSED, "close": CLOSED,
              "0": CLOSED, "keep": None}


def _def_state_check(v) -> str:
    if str(v).lower() not in DEF_STATES:
        raise Invalid(f"expected open, closed or keep (NeTAMS def_state 1 or 0), got {v!r}")
    return str(v).lower()


@dataclasses.dataclass(frozen=True)
class LoginSettings(Table):
    """The service's own settings (the config file's [login] table): kebab-case
    as in NeTAMS, and the spellings with underscores the reference itself
    uses for the bounds (max_inact, min_passwd_length)."""

    default_inact: int = setting(DEFAULT_INACT, check=_seconds_check, aliases=("default_inact",))
    default_abs: int = setting(DEFAULT_ABS, check=_seconds_check, aliases=("default_abs",))
    min_inact: int = setting(MIN_INACT, check=_seconds_check, aliases=("min_inact",))
    max_inact: int = setting(MAX_INACT, check=_seconds_check, aliases=("max_inact",))
    min_abs: int = setting(MIN_ABS, check=_seconds_check, aliases=("min_abs",))
    max_abs: int = setting(MAX_ABS, check=_seconds_check, aliases=("max_abs",))
    min_passwd_length: int = setting(MIN_PASSWD_LENGTH, check=_seconds_check,
                                     aliases=("min_passwd_length",))
    # NeTAMS's check interval, accepted and not used: a unit's last packet is
    # known at a drain, and every drain checks the timeouts (see after_drain)
    delay: int = setting(DEFAULT_DELAY, check=_seconds_check)
    relogin: bool = setting(True, check=_flag_check)          # "По умолчанию «да»"
    set_user_ip: bool = setting(False, check=_flag_check, aliases=("set_user_ip",))  # "равно 0"
    # the state a record takes at start unless its own def-state says (NeTAMS
    # def_state); "keep": the state it had when the daemon stopped
    def_state: str = setting("keep", check=lambda v, ctx: _def_state_check(v),
                             aliases=("def_state",))
    # `login set` lines `acctd.importers.netams` carried per unit (see config_sets)
    units: Mapping[str, TomlValue] = setting(default_factory=lambda: MappingProxyType({}),
                                             check=carried())

    def finish(self, ctx) -> "LoginSettings":
        for lo, hi in (("min-inact", "max-inact"), ("min-abs", "max-abs")):
            a, b = getattr(self, lo.replace("-", "_")), getattr(self, hi.replace("-", "_"))
            if a > b:  # blamed on a bound the table wrote, the lower one if both
                lo, hi = ctx.spelled(lo), ctx.spelled(hi)
                raise Invalid(f"{lo} ({a}) exceeds {hi} ({b})",
                              hi if hi in ctx.given and lo not in ctx.given else lo)
        # a default outside the bounds would give `set` a timeout it would refuse itself
        for key, kind in (("default-inact", "inact"), ("default-abs", "abs")):
            err = self.check_timeout(kind, getattr(self, key.replace("-", "_")))
            if err:
                raise Invalid(err, ctx.spelled(key))
        if self.min_passwd_length < 1:
            raise Invalid("must be at least 1", ctx.spelled("min-passwd-length"))
        if self.delay < 1:
            raise Invalid("must be at least 1 second", "delay")
        return self

    def check_timeout(self, kind: str, seconds: int) -> str | None:
        """Why a per-unit timeout is refused, or None: 0 (off) or within the bounds."""
        lo, hi = (self.min_inact, self.max_inact) if kind == "inact" else (self.min_abs,
                                                                           self.max_abs)
        if seconds == 0 or lo <= seconds <= hi:
            return None
        return f"{kind} must be 0 (off) or between {lo} and {hi} seconds, got {seconds}"


def config_sets(units: Mapping[str, Any]) -> list[tuple[str, list[list[str]]]]:
    """The `set` commands `acctd.importers.netams` carried from a NeTAMS config
    ([login.units.NAME] raw = ["password X inact N", ...]), as (unit, [words]);
    the service applies a unit's lines when they differ from those it last
    applied (LoginRecord.config): hashing a password is slow.

    A unit's own `password`/`mac` (from `unit ... password`) is NOT turned into
    a login record: in NeTAMS only the login table makes the service manage a
    unit, and a record blocks the unit until it logs in.
    """
    return [(str(name), [str(raw).split() for raw in entry["raw"]])
            for name, entry in units.items() if (entry or {}).get("raw")]


def config_mark(lines: list[list[str]]) -> str:
    """What LoginRecord.config keeps of a unit's config lines: their digest
    (the lines hold the password)."""
    return hashlib.sha256(json.dumps(lines).encode()).hexdigest()


# --- per-unit records -------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LoginRecord:
    """A row of NeTAMS's login table: the unit's settings and its access state.

    password is an argon2id hash, never the password. inact/abs are seconds,
    0 = that timeout is off. opened_at/addr/mac_seen are the last opening
    (last_opened_time/_ip/_mac) and stay after closing, as history. last_used
    is the last counted packet since opening, as `expire` was told it.
    """

    oid: str
    password: str
    inact: int = DEFAULT_INACT
    abs: int = DEFAULT_ABS
    mac: str | None = None       # the bound MAC (lowercase, colons)
    strict: bool = False         # logins only from `mac`
    curr_state: str = CLOSED
    opened_at: dt.datetime | None = None
    last_used: dt.datetime | None = None
    addr: str | None = None
    mac_seen: str | None = None
    last_changed: dt.datetime | None = None
    def_state: str | None = None  # opened | closed at start; None: the service's def-state
    config: str | None = None     # config_mark() of the config lines last applied

    def __post_init__(self):
        if not self.password.startswith("$argon2id$"):
            raise ValueError("password: expected an argon2id hash ($argon2id$...)")
        if self.def_state not in (None, *STATES):
            raise ValueError(f"def_state: expected {' or '.join(STATES)}, got {self.def_state!r}")
        if self.curr_state not in STATES:
            raise ValueError(f"curr_state: expected {' or '.join(STATES)}, "
                             f"got {self.curr_state!r}")
        if self.strict and not self.mac:
            raise ValueError("strict: needs a bound mac")
        if self.curr_state == OPENED and self.opened_at is None:
            raise ValueError("opened_at: an opened record needs its opening time")

    @property
    def opened(self) -> bool:
        return self.curr_state == OPENED

    def abs_deadline(self) -> dt.datetime | None:
        """When the absolute timeout closes this opening (None: off or not opened)."""
        if not self.opened or not self.abs:
            return None
        return self.opened_at + dt.timedelta(seconds=self.abs)

    def inact_deadline(self) -> dt.datetime | None:
        """When inactivity closes it: `inact` after the last counted packet, or
        after opening if none came since (a fresh login gets its full inact)."""
        if not self.opened or not self.inact:
            return None
        base = max(self.opened_at, self.last_used) if self.last_used else self.opened_at
        return base + dt.timedelta(seconds=self.inact)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for the login table."""
        d = dataclasses.asdict(self)
        for k in ("opened_at", "last_used", "last_changed"):
            d[k] = d[k].isoformat() if d[k] is not None else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LoginRecord":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"unknown login record field(s): {', '.join(unknown)}")
        kw = dict(d)
        for k in ("opened_at", "last_used", "last_changed"):
            if kw.get(k) is not None:
                try:
                    kw[k] = dt.datetime.fromisoformat(kw[k])
                except (TypeError, ValueError):
                    raise ValueError(f"{k}: expected an ISO 8601 time, got {kw[k]!r}") from None
        for k in ("inact", "abs"):
            if k in kw:
                kw[k] = _seconds(k, kw[k])
        return cls(**kw)


# --- replies ----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LoginResult:
    """The outcome of a login or logout.

    code: stable identifier (ok, unknown-unit, no-login, wrong-password,
    mac-mismatch, already-logged-in); reason: the same in words, as the hook
    gets it; reply: the text for the control socket, in the reference's words.
    bind: with set-user-ip, the address the (user) unit is to be bound to;
    unbind: with set-user-ip, the unit's address goes back to none.
    """

    ok: bool
    code: str
    reason: str
    reply: str
    oid: str | None = None
    addr: str | None = None
    mac: str | None = None
    bind: str | None = None
    unbind: bool = False
    relogin: bool = False       # the unit was already logged in


class Expiry(NamedTuple):
    """A unit `expire` closed, and why: "inactivity" or "absolute"."""

    oid: str
    cause: str


@dataclasses.dataclass(frozen=True)
class ShowRow:
    """One line of `show login`. Seconds are whole, None where the reference
    prints -1 (never used since opening, timeout off, or not opened)."""

    oid: str
    state: str
    opened_ago: int | None
    last_used_ago: int | None
    abs_in: int | None          # seconds left before the absolute timeout
    inact_in: int | None        # seconds left before the inactivity timeout
    abs_at: dt.datetime | None
    inact_at: dt.datetime | None
    addr: str | None
    mac: str | None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("abs_at", "inact_at"):
            d[k] = d[k].isoformat() if d[k] is not None else None
        return d


def format_show(rows: Iterable[ShowRow], name: Callable[[str], str | None] = lambda oid: None
                ) -> str:
    """`show login` in words (the reference's lines, without its -1 for
    "never" and "off"):

        avm1 (0246E8) opened 14 sec. ago, no traffic counted since
        \tabsolute timeout in 106 sec., inactivity timeout off
        anb1 (022EB1) closed, last opened 30 sec. ago
    """
    def timeout(what: str, left: int | None) -> str:
        return f"{what} timeout off" if left is None else f"{what} timeout in {left} sec."

    out = []
    for r in rows:
        who = f"{name(r.oid) or r.oid} ({r.oid})"
        if r.state != OPENED:
            when = ("never opened" if r.opened_ago is None
                    else f"last opened {r.opened_ago} sec. ago")
            out.append(f"{who} closed, {when}")
            continue
        used = ("no traffic counted since" if r.last_used_ago is None
                else f"last used {r.last_used_ago} sec. ago")
        out.append(f"{who} opened {r.opened_ago} sec. ago, {used}")
        out.append(f"\t{timeout('absolute', r.abs_in)}, {timeout('inactivity', r.inact_in)}")
    return "\n".join(out)


# --- the service ------------------------------------------------------------------

def _default_hasher():
    # imported here so importing this module (acctctl --help) stays cheap
    from argon2 import PasswordHasher
    return PasswordHasher()


def normalize_mac(text: str) -> str:
    """0A-0B-0C-0D-0E-0F or 0a:0b:... → 0a:0b:0c:0d:0e:0f (mac_control's reading)."""
    from acctd.services.mac_control import MacError, normalize_mac
    try:
        return normalize_mac(text)
    except MacError as e:
        raise LoginError(f"mac: {e}") from None


def _normalize_addr(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise LoginError(f"ip: expected an IP address, got {text!r}") from None


def arguments(addr: str | None, mac: str | None) -> tuple[str | None, str | None]:
    """A login's or logout's address and MAC, normalized; LoginError for a
    malformed one, raised before anything counts as an attempt (acctctl
    checks them before it asks for the password)."""
    return (_normalize_addr(addr) if addr else None, normalize_mac(mac) if mac else None)


def _secs(delta: dt.timedelta) -> int:
    return max(0, int(delta.total_seconds()))


Hook = Callable[[str, bool, str, "str | None", "str | None", dt.datetime], Any]


class LoginTable:
    """The login records by oid and the operations on them.

    find(name_or_oid) -> oid | None resolves units (acctd.model.units.UnitSet in the
    daemon). hasher: an argon2 PasswordHasher; the default parameters in
    production, cheap ones in tests. on_attempt(who, ok, reason, addr, mac, now)
    is called on every login and logout attempt, successful or not (the F-TICKS
    hook point); who is the oid, or the name as given when it names no unit.
    auth_refused(oid) says whether a sys-deny-auth is in force for the unit:
    then a login fails even with the right password.
    Records are immutable: an operation replaces a unit's record or leaves it
    alone, so a failed attempt cannot half-change one.
    """

    def __init__(self, settings: LoginSettings | None = None,
                 find: Callable[[str], str | None] = lambda key: None,
                 records: Iterable[LoginRecord] = (), *, hasher=None,
                 on_attempt: Hook | None = None,
                 auth_refused: Callable[[str], bool] = lambda oid: False):
        self.settings = settings or LoginSettings()
        self.find = find
        self.auth_refused = auth_refused
        self.hasher = hasher or _default_hasher()
        self.on_attempt = on_attempt
        self._records: dict[str, LoginRecord] = {r.oid: r for r in records}

    @property
    def records(self) -> Mapping[str, LoginRecord]:
        return dict(self._records)

    def get(self, oid: str) -> LoginRecord | None:
        return self._records.get(oid)

    # -- settings per unit ----------------------------------------------------------

    def set(self, who: str, words: Iterable[str], *, now: dt.datetime) -> LoginRecord:
        """`set {name|oid} X [password P] [inact N] [abs N] [mac M|none] [strict|nostrict]`,
        the words after the unit. A new record needs a password and gets the
        default timeouts for those not given; an existing one keeps what is not
        given (the reference takes the defaults again, so a user changing a
        password would lose the timeouts the operator gave the unit). The
        access state is left as it is."""
        oid = self.find(who)
        if oid is None:
            raise NotFound(f"unknown unit {who!r}")
        words = list(words)
        s = self.settings
        new: dict[str, Any] = {}
        k = 0
        while k < len(words):
            w = words[k].lower()
            if w in ("strict", "nostrict"):
                new["strict"] = w == "strict"
                k += 1
                continue
            if w not in ("password", "inact", "abs", "mac", "def-state", "def_state"):
                raise LoginError(f"unexpected word {words[k]!r}; expected password, inact, "
                                 "abs, mac, def-state, strict or nostrict")
            if k + 1 >= len(words):
                raise LoginError(f"{w} needs a value")
            v = words[k + 1]
            if w == "password":
                if len(v) < s.min_passwd_length:
                    raise LoginError(f"password must be at least {s.min_passwd_length} "
                                     "characters")
                new["password"] = v
            elif w == "mac":
                new["mac"] = None if v.lower() == "none" else normalize_mac(v)
            elif w in ("def-state", "def_state"):
                if v.lower() not in DEF_STATES:
                    raise LoginError(f"def-state must be open, closed or keep, got {v!r}")
                new["def_state"] = DEF_STATES[v.lower()]
            else:
                if not v.isdigit():
                    raise LoginError(f"{w} must be a whole number of seconds, got {v!r}")
                err = s.check_timeout(w, int(v))
                if err:
                    raise LoginError(err)
                new[w] = int(v)
            k += 2
        old = self._records.get(oid)
        if old is None:
            if "password" not in new:
                raise LoginError(f"unit {who} has no login yet: set a password")
            new.setdefault("inact", s.default_inact)
            new.setdefault("abs", s.default_abs)
        strict = new["strict"] if "strict" in new else bool(old and old.strict)
        bound = new["mac"] if "mac" in new else (old.mac if old else None)
        if strict and not bound:
            raise LoginError("strict needs a bound mac (mac XX:XX:XX:XX:XX:XX)")
        if "password" in new:
            new["password"] = self.hasher.hash(new["password"])
        rec = (dataclasses.replace(old, **new, last_changed=now) if old
               else LoginRecord(oid=oid, **new, last_changed=now))
        self._records[oid] = rec
        return rec

    def put(self, rec: LoginRecord) -> None:
        """A record as it is (one changed later on another gateway)."""
        self._records[rec.oid] = rec

    def mark(self, oid: str, config: str) -> None:
        """Remember which config lines the record has (see config_mark)."""
        self._records[oid] = dataclasses.replace(self._records[oid], config=config)

    def start_states(self, now: dt.datetime) -> list[str]:
        """At start each record takes its def-state ("текущее состояние доступа
        становится равным значению по умолчанию"): the record's own, else the
        service's; keep leaves it. Returns the records that changed."""
        default = DEF_STATES[self.settings.def_state]
        changed = []
        for oid, rec in self._records.items():
            want = rec.def_state or default
            if want is None or want == rec.curr_state:
                continue
            self._records[oid] = dataclasses.replace(
                rec, curr_state=want, **({"opened_at": now, "last_used": None}
                                         if want == OPENED else {}))
            changed.append(oid)
        return changed

    def remove(self, oid: str) -> bool:
        """Drop a unit's record: the service no longer manages (or blocks) it."""
        return self._records.pop(oid, None) is not None

    # -- login / logout -----------------------------------------------------------------

    def login(self, who: str, password: str, addr: str | None = None, mac: str | None = None,
              *, now: dt.datetime, by: str = "name",
              admit: Callable[[LoginRecord], LoginResult | None] | None = None) -> LoginResult:
        """`login {name|oid} X password P [ip A] [mac M]`; by is "name" or
        "oid", as the command said (only the wording of the unknown-unit reply).
        admit: the caller's own rules after the service's (RADIUS: blocks,
        the unit's MAC), a failed LoginResult to refuse."""
        addr, mac = arguments(addr, mac)
        rec, res = self._authenticate(who, password, by)
        if res is None:
            s = self.settings
            if self.auth_refused(rec.oid):
                res = self.fail(rec.oid, "auth-denied", "authentication denied",
                                 "authentication denied (sys-deny-auth)")
            elif rec.strict and mac != rec.mac:
                res = self.fail(rec.oid, "mac-mismatch", "mac mismatch", "mac address mismatch")
            elif rec.opened and not s.relogin:
                res = self.fail(rec.oid, "already-logged-in", "already logged in",
                                 "already logged in")
            elif admit is not None and (res := admit(rec)) is not None:
                pass
            else:
                password_hash = rec.password
                if self.hasher.check_needs_rehash(password_hash):
                    # the production parameters changed since it was set
                    password_hash = self.hasher.hash(password)
                self._records[rec.oid] = dataclasses.replace(
                    rec, curr_state=OPENED, opened_at=now, last_used=None, addr=addr,
                    mac_seen=mac, password=password_hash)
                res = LoginResult(
                    True, "ok", "login success",
                    f"OK: login success from ip:{addr or NO_ADDR}, mac:{mac or NO_MAC}",
                    rec.oid, addr, mac, bind=addr if s.set_user_ip and addr else None,
                    relogin=rec.opened)
        return self._report(who, res, addr, mac, now)

    def logout(self, who: str, password: str, addr: str | None = None, mac: str | None = None,
               *, now: dt.datetime, by: str = "name") -> LoginResult:
        """`logout`, with the same arguments as login. Logging out a unit that
        is not logged in succeeds too: scripts can always log out."""
        addr, mac = arguments(addr, mac)
        rec, res = self._authenticate(who, password, by)
        if res is None:
            self._records[rec.oid] = dataclasses.replace(rec, curr_state=CLOSED)
            res = LoginResult(
                True, "ok", "logout success",
                f"OK: logout success from ip:{addr or NO_ADDR}, mac:{mac or NO_MAC}",
                rec.oid, addr, mac, unbind=self.settings.set_user_ip and rec.opened)
        return self._report(who, res, addr, mac, now)

    def verify(self, who: str, password: str) -> str | None:
        """The unit's oid if the password is its login password; nothing changes."""
        rec, res = self._authenticate(who, password, "name")
        return rec.oid if res is None else None

    def close(self, oid: str) -> bool:
        """Close a unit's access without a password (operator, or the daemon);
        not an attempt, so no hook. True if it was logged in."""
        rec = self._records.get(oid)
        if rec is None or not rec.opened:
            return False
        self._records[oid] = dataclasses.replace(rec, curr_state=CLOSED)
        return True

    def _authenticate(self, who: str, password: str, by: str
                      ) -> tuple[LoginRecord | None, LoginResult | None]:
        oid = self.find(who)
        if oid is None:
            return None, self.fail(None, "unknown-unit", "unknown unit",
                                    f"unit with {by}={who} is not exist")
        rec = self._records.get(oid)
        if rec is None:
            return None, self.fail(oid, "no-login", "no login", f"login is not set for unit {who}")
        from argon2.exceptions import InvalidHashError, VerificationError
        try:
            self.hasher.verify(rec.password, password)
        except (VerificationError, InvalidHashError):
            return None, self.fail(oid, "wrong-password", "wrong password", "password incorrect")
        return rec, None

    @staticmethod
    def fail(oid: str | None, code: str, reason: str, text: str) -> LoginResult:
        return LoginResult(False, code, reason, f"FAIL: {text}", oid)

    def _report(self, who, res: LoginResult, addr, mac, now) -> LoginResult:
        if self.on_attempt is not None:
            self.on_attempt(res.oid or who, res.ok, res.reason, addr, mac, now)
        return res

    # -- timeouts and blocking ----------------------------------------------------------

    def expire(self, now: dt.datetime,
               last_seen: Mapping[str, dt.datetime | None] | None = None) -> list[Expiry]:
        """Close the units whose absolute or inactivity timeout has come.

        last_seen: each unit's last counted packet; packets from before the
        opening do not count. curr_state goes back to closed: the reference
        lists its not doing so as a bug.
        """
        out = []
        for oid in sorted(self._records):
            rec = self._records[oid]
            if not rec.opened:
                continue
            seen = (last_seen or {}).get(oid)
            if seen is not None and seen >= rec.opened_at and (rec.last_used is None
                                                               or seen > rec.last_used):
                rec = dataclasses.replace(rec, last_used=seen)
            cause = None
            if (d := rec.abs_deadline()) is not None and now >= d:
                cause = "absolute"
            elif (d := rec.inact_deadline()) is not None and now >= d:
                cause = "inactivity"
            if cause:
                rec = dataclasses.replace(rec, curr_state=CLOSED)
                out.append(Expiry(oid, cause))
            self._records[oid] = rec
        return out

    def blocked(self) -> set[str]:
        """Units the service blocks (reason login): those with a record that
        are not logged in. Units without one are not its business."""
        return {oid for oid, r in self._records.items() if not r.opened}

    def show(self, now: dt.datetime, oid: str | None = None) -> list[ShowRow]:
        """`show login`: one unit's record, or every unit's, whatever its state."""
        if oid is not None:
            recs = [self._records[oid]] if oid in self._records else []
        else:
            recs = [self._records[o] for o in sorted(self._records)]
        rows = []
        for r in recs:
            abs_at, inact_at = r.abs_deadline(), r.inact_deadline()
            used = r.last_used if r.opened else None
            rows.append(ShowRow(
                r.oid, r.curr_state,
                _secs(now - r.opened_at) if r.opened_at else None,
                _secs(now - used) if used else None,
                _secs(abs_at - now) if abs_at else None,
                _secs(inact_at - now) if inact_at else None,
                abs_at, inact_at, r.addr, r.mac_seen))
        return rows

    # -- persistence ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {oid: r.to_dict() for oid, r in sorted(self._records.items())}

    def load(self, d: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the records with ones from `to_dict` output."""
        recs = {}
        for oid, rd in d.items():
            rec = LoginRecord.from_dict(rd)
            if rec.oid != oid:
                raise ValueError(f"login record {oid}: holds oid {rec.oid}")
            recs[oid] = rec
        self._records = recs


# --- the service ----------------------------------------------------------------------

def _portal(ok: bool, status: int, message: str) -> dict:
    return {"ok": ok, "status": status, "message": message}


class LoginService(Service):
    """NeTAMS `service login` in the daemon: the records live in DuckDB (they
    outlive reloads and restarts), a record blocks its unit (reason login)
    until it logs in, timeouts close it after each drain, and with
    set-user-ip a login binds the user unit's address (a session)."""

    name = "login"
    # with [central] the records are shared (central/logins.py) and each
    # gateway decides their blocks: a timeout here must not block elsewhere
    shares_blocks = True

    def __init__(self, core: Core, settings: LoginSettings):
        super().__init__(core, settings)
        self.table: LoginTable | None = None
        self.last_seen: dict[str, dt.datetime] = {}   # unit oid -> its last counted packet
        self.saved_use: dict[str, dt.datetime] = {}   # unit oid -> last use as stored
        self.pending: list[dict] = []                 # session changes for settle()
        self._via: tuple[str, str | None] = ("login", None)   # F-TICKS's AN and RP, see admit
        self.attempts = AttemptLimit()                # the login pages' failures per name

    @staticmethod
    def settings_of(config):
        return config.login

    def start(self) -> None:
        records = [LoginRecord.from_dict(d) for d in self.core.storage.login_records().values()]
        self.table = LoginTable(self.settings, self._find, records, on_attempt=self._attempt,
                                auth_refused=self._auth_refused)
        self._forget_gone()
        self._config_sets()
        for oid in self.table.start_states(self.core.clock()):
            self._save(oid, shared=False)

    def reload(self, settings: LoginSettings) -> None:
        self.settings = self.table.settings = settings
        self._forget_gone()
        self._config_sets()  # the lines that changed; `login set` since is kept otherwise

    def _config_sets(self) -> None:
        """The config's [login.units.X] raw lines, as `login set X LINE` each,
        for the units whose lines changed since they were applied."""
        now = self.core.clock()
        for unit, lines in config_sets(self.settings.units):
            mark = config_mark(lines)
            oid = self._find(unit)
            rec = self.table.get(oid) if oid else None
            if rec is not None and rec.config == mark:
                continue
            for words in lines:
                try:
                    rec = self.table.set(unit, words, now=now)
                except (LoginError, NotFound) as e:
                    log.error("[login.units.%s]: %s; that line is not applied", unit, e)
            if rec is not None:
                self.table.mark(rec.oid, mark)
                self._save(rec.oid)

    def _forget_gone(self) -> None:
        with self.core.lock:
            units = self.core.snapshot.units
            for oid in list(self.table.records):
                if oid not in units.by_oid:  # the unit left the config
                    self.table.remove(oid)
                    self.core.storage.set_login_record(oid, None)

    def _find(self, key: str) -> str | None:
        try:
            return self.core.snapshot.unit(key).oid
        except KeyError:
            return None

    def _auth_refused(self, oid: str) -> bool:
        i = self.core.snapshot.units.by_oid.get(oid)
        return i is not None and bool(self.core.sys_policy_bits().get(i, 0) & abi.SysPolicy.AUTH)

    def _attempt(self, who, ok, reason, addr, mac, now) -> None:
        method, rp = self._via
        self.core.login_attempted(who, ok, reason, addr, mac, method, rp=rp)

    def _save(self, oid: str, shared: bool = True) -> None:
        """Into DuckDB; shared: an act the other gateways take (central), stamped
        now; not so a timeout or a def-state here, decided by each gateway."""
        rec = self.table.get(oid)
        self.core.storage.set_login_record(oid, rec.to_dict() if rec else None,
                                           self.core.clock() if shared else None)
        central = self.core.services.get("central")
        if shared and central is not None:
            central.changed_here()

    def take(self, records: dict[str, tuple[dict, dt.datetime]]) -> list[str]:
        """Login records changed later on another gateway (central): oid ->
        (record, when); they replace this gateway's, and the blocks follow;
        with set-user-ip the sessions follow at the next settle(). Returns
        the oids taken (not those of units unknown here). The caller holds
        the lock."""
        taken = []
        for oid, (d, changed) in sorted(records.items()):
            if oid not in self.core.snapshot.units.by_oid:
                continue
            try:
                rec = LoginRecord.from_dict(d)
            except (TypeError, ValueError) as e:
                log.error("login record of %s from another gateway not taken: %s", oid, e)
                continue
            self.pending += self._followed(self.table.get(oid), rec)
            self.table.put(rec)
            self.core.storage.set_login_record(oid, rec.to_dict(), changed)
            if rec.last_used:   # as saved: not saved (and sent back) again
                self.saved_use[oid] = rec.last_used
            taken.append(oid)
        if taken:
            self.core.enforce()
        return taken

    def _followed(self, old: LoginRecord | None, new: LoginRecord) -> list[dict]:
        """With set-user-ip, the session changes a record taken from another
        gateway asks for: a login there binds the user unit's address here
        too (the subscriber's traffic may pass either gateway), a logout
        there ends the session here."""
        snap = self.core.snapshot
        u = snap.units.units[snap.units.by_oid[new.oid]]
        if not self.settings.set_user_ip or u.type != "user":
            return []
        was = old is not None and old.curr_state == OPENED
        if new.curr_state == OPENED and new.addr and not (was and old.addr == new.addr):
            return [{"user": u.name, "addr": new.addr, "mac": new.mac_seen}]
        if new.curr_state != OPENED and was and new.oid in self.core.service(SessionsService).open:
            return [{"user": u.name, "addr": None, "cause": SESSION_CAUSE["logout"]}]
        return []

    def blocks(self) -> dict[str, int]:
        return dict.fromkeys(self.table.blocked(), abi.SysPolicy.LOGIN)

    # -- after each drain: timeouts -------------------------------------------------

    def after_drain(self, drain: Drain) -> None:
        """Close logins past their absolute or inactivity timeout. Inactivity
        counts from the unit's last counted packet: for the addresses whose
        counters moved in this drain, the kernel's last-packet time, turned
        from its monotonic clock into ours."""
        if not self.table.records:
            return
        now, keys, vals = drain.now, drain.addr_keys, drain.addr_values
        if len(keys):
            leaf = drain.snapshot.units.match(keys["addr"])
            mono = time.monotonic_ns()  # the datapath's clock (coarse monotonic)
            for oid in self.table.records:
                i = drain.snapshot.units.by_oid.get(oid)
                sel = vals["last_ns"][leaf == i] if i is not None else ()
                if len(sel) and sel.max():
                    ago = max(0.0, (mono - int(sel.max())) / 1e9)
                    self.last_seen[oid] = now - dt.timedelta(seconds=ago)
        expired = self.table.expire(now, self.last_seen)
        for e in expired:
            self._save(e.oid, shared=False)   # each gateway times out by its own traffic
            log.info("login of %s closed: %s timeout", e.oid, e.cause)
        # last use is kept in the record, so a restart measures inactivity
        # from the last packet, not from the login; saved when it moved a
        # minute or more (one row per active unit per minute at most)
        gone = {e.oid for e in expired}
        for oid, rec in self.table.records.items():
            saved = self.saved_use.get(oid)
            if oid not in gone and rec.last_used and (
                    saved is None or (rec.last_used - saved).total_seconds() >= 60):
                self._save(oid)
                self.saved_use[oid] = rec.last_used
        if expired:
            self.core.enforce()
            if self.settings.set_user_ip:  # timed-out users give their addresses back
                snap = drain.snapshot
                open_ = self.core.service(SessionsService).open
                self.pending += [{"user": snap.name_of(e.oid), "addr": None,
                                  "cause": SESSION_CAUSE[e.cause]}
                                 for e in expired if e.oid in open_]

    def settle(self) -> None:
        """The session changes a drain's expiries, or records taken from
        other gateways, left (outside the lock: they drain first)."""
        pending, self.pending = self.pending, []
        if pending:
            self.core.service(SessionsService).changes(pending, "login")

    # -- commands ---------------------------------------------------------------------

    def set(self, unit: str, words: list[str]) -> dict:
        """NeTAMS `login set NAME password P inact N abs N mac M strict`."""
        with self.core.lock:
            self.core.snapshot.unit(unit)  # NotFound: "unknown unit 'x'", as everywhere
            rec = self.table.set(unit, words, now=self.core.clock())
            self._save(rec.oid)
            self.core.enforce()  # a new record blocks until the unit logs in
            return {"unit": unit, "oid": rec.oid, "inact": rec.inact, "abs": rec.abs,
                    "mac": rec.mac, "strict": rec.strict}

    def login(self, unit: str, password: str, ip: str | None = None,
              mac: str | None = None) -> dict:
        return self._log(unit, password, ip, mac, out=False)

    def logout(self, unit: str, password: str, ip: str | None = None,
               mac: str | None = None) -> dict:
        return self._log(unit, password, ip, mac, out=True)

    def _log(self, unit: str, password: str, addr, mac, out: bool) -> dict:
        """NeTAMS `login`/`logout`: the reply in the reference's words. A wrong
        password changes nothing; success lifts (logout: restores) the block
        and, with set-user-ip, binds (unbinds) the user unit's address."""
        with self.core.lock:
            op = self.table.logout if out else self.table.login
            res = op(unit, password, addr, mac, now=self.core.clock())
            if res.ok:
                self._save(res.oid)
        if res.ok:
            self._follow(res.oid, res.bind, res.unbind or out, res.mac, "user-request")
        return {"ok": res.ok, "code": res.code, "reply": res.reply, "addr": res.addr,
                "mac": res.mac}

    def portal(self, unit: str, password: str, ip: str, logout: bool = False) -> dict:
        """A login page's request (NeTAMS login.cgi): the console's /hotspot
        and [captive]'s page both come here, so both say the same. Log the
        unit in (or out) from the client's address `ip`; the reply in a
        person's words and the HTTP status to answer with. Failures are
        limited per unit name (the argon2 check alone paces one client, not
        many)."""
        unit = unit.strip()
        if not unit or not password:
            return _portal(False, 400, "enter your user name and password")
        key = f"portal:{unit}"
        try:
            self.attempts.check(key)
        except PermissionDenied as e:
            return _portal(False, 429, str(e).removeprefix("permission denied: "))
        res = self._log(unit, password, ip, None, out=logout)
        if res["ok"]:
            return _portal(True, 200, res["reply"])
        if res["code"] in ("unknown-unit", "no-login", "wrong-password"):
            self.attempts.failed(key)
            return _portal(False, 403, "wrong user name or password")
        return _portal(False, 409, res["reply"])

    def admit(self, unit: str, password: str, addr: str | None, mac: str | None,
              rules: Callable[[LoginRecord], LoginResult | None], method: str,
              rp: str | None) -> LoginResult:
        """A login on another service's behalf (RADIUS): the service's rules,
        then `rules`; the attempt is reported as `method` from `rp`. The
        caller follows up the sessions and blocks (follow)."""
        with self.core.lock:
            self._via = (method, rp)
            try:
                res = self.table.login(unit, password, addr, mac, now=self.core.clock(),
                                       admit=rules)
            finally:
                self._via = ("login", None)
            if res.ok:
                self._save(res.oid)
        return res

    def other_blocks(self, rec: LoginRecord) -> LoginResult | None:
        """An admit rule: the unit's blocks other than this service's own (a
        login lifts that one), reason "blocked: quota, ..."; under the lock."""
        from acctd.model import sys_policy
        i = self.core.snapshot.units.by_oid[rec.oid]
        bits = self.core.sys_policy_bits().get(i, 0) & ~abi.SysPolicy.LOGIN
        if not bits:
            return None
        why = ", ".join(w.removeprefix("sys-deny-").removeprefix("sys-")
                        for w in sys_policy.words(bits))
        return self.table.fail(rec.oid, "blocked", f"blocked: {why}", "blocked")

    def follow(self, oid: str, bind: str | None, mac: str | None) -> None:
        self._follow(oid, bind, False, mac, "user-request")

    def _follow(self, oid: str, bind: str | None, unbind: bool, mac, cause: str) -> None:
        """Sessions and blocks after a login state change (outside the lock:
        session changes drain, which takes it)."""
        snap = self.core.snapshot
        u = snap.units.units[snap.units.by_oid[oid]]
        sessions = self.core.service(SessionsService)
        if u.type == "user" and bind:
            sessions.changes([{"user": u.name, "addr": bind, "mac": mac}], "login")
        elif u.type == "user" and unbind and oid in sessions.open:
            sessions.changes([{"user": u.name, "addr": None, "cause": cause}], "login")
        else:
            self.core.enforce()

    def verify(self, unit: str, password: str) -> str:
        """A subscriber's login to the web console: the unit's name if the
        password is its login password (nothing opens or closes)."""
        with self.core.lock:
            oid = self.table.verify(unit, password)
            if oid is None:
                raise PermissionDenied("wrong unit name or password")
            return self.core.snapshot.name_of(oid)

    def show(self, unit: str | None = None) -> dict:
        with self.core.lock:
            snap = self.core.snapshot
            oid = snap.unit(unit).oid if unit else None
            rows = self.table.show(self.core.clock(), oid)
            text = format_show(rows, lambda o: snap.name_of(o) if o in snap.units.by_oid
                               else None)
            if not rows:
                text = f"{unit} has no login record" if unit else "no login records"
            return {"text": text, "rows": [r.to_dict() for r in rows]}
