"""Requests made on someone's behalf (the web console, acctd/web): a local
peer that is itself a [[user]] hands the daemon a person's name and
password once (`web-login`); the daemon checks them itself (a [[user]]'s
argon2id hash, a unit's login-service password, or a billing account's
password) and answers a token.
Requests carrying {"as": token} from the same uid then run at that person's
level, never the peer's: the web process cannot raise anyone's rights, and
a token taken elsewhere is useless to another uid.

A unit's subscriber gets a Caller scoped to the unit: only SUBSCRIBER
commands, always about that unit (acctd/control/dispatch.py enforces it);
of those, login and logout (which ask for the password again) at operator
level. A billing account's holder (NeTAMS account-pages) likewise gets a
Caller scoped to the account: only ACCOUNT commands, about that account,
its plan and its units; of those, billing-beblock (which undoes only their
own block, never the operator's) at operator level.
Failed logins are limited per name, whoever asks."""

from __future__ import annotations

import secrets
import threading
import time

from acctd.control.access import Level
from acctd.errors import PermissionDenied

IDLE = 30 * 60          # a token unused this long is forgotten (seconds)
MAX_TOKENS = 10_000     # at most this many live at once; the oldest go first
# what a subscriber may ask, about their own unit only
SUBSCRIBER = frozenset({"list", "stat", "series", "quota-show", "login-show", "login",
                        "logout"})
# what a subscriber may do above their level: these check the unit's password
# themselves (NeTAMS login.cgi, the hotspot page), so the token adds no right
SELF_SERVICE = frozenset({"login", "logout", "billing-beblock"})
# what an account's holder may ask, about their own account and its units only
ACCOUNT = frozenset({"billing-account", "billing-ledger", "billing-plan", "billing-invoice",
                     "billing-invoices", "billing-statement", "billing-beblock", "list", "stat",
                     "series", "quota-show"})


class AttemptLimit:
    """At most `tries` failures per key in `window` seconds; the next
    attempt is refused unchecked until the window has passed."""

    def __init__(self, tries: int = 5, window: float = 60.0, clock=time.monotonic):
        self.tries, self.window, self.clock = tries, window, clock
        self._fails: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        with self._lock:
            now = self.clock()
            recent = [t for t in self._fails.get(key, ()) if now - t < self.window]
            if recent:
                self._fails[key] = recent
            else:
                self._fails.pop(key, None)
            if len(recent) >= self.tries:
                wait = self.window - (now - recent[0])
                raise PermissionDenied(f"too many failed logins for {key!r}: try again in "
                                       f"{wait:.0f} s")

    def failed(self, key: str) -> None:
        with self._lock:
            fails = self._fails.setdefault(key, [])
            fails.append(self.clock())
            if len(self._fails) > MAX_TOKENS:  # a flood of names: forget the oldest
                self._fails.pop(next(iter(self._fails)))


class Delegations:
    """The live tokens: token -> (peer uid, name, level, unit, account, last use)."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.limit = AttemptLimit(clock=clock)
        self._tokens: dict[str, list] = {}
        self._lock = threading.Lock()

    def issue(self, peer_uid: int, name: str, level: Level, unit: str | None,
              account: str | None = None) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._expire()
            while len(self._tokens) >= MAX_TOKENS:
                self._tokens.pop(next(iter(self._tokens)))
            self._tokens[token] = [peer_uid, name, level, unit, account, self.clock()]
        return token

    def resolve(self, token: object, peer_uid: int
                ) -> tuple[str, Level, str | None, str | None]:
        """(name, level, unit, account) of a live token issued to this uid."""
        with self._lock:
            entry = self._tokens.get(token) if isinstance(token, str) else None
            if entry is None or entry[0] != peer_uid or self.clock() - entry[-1] > IDLE:
                raise PermissionDenied("not logged in (the session ended or expired): log in "
                                       "again")
            entry[-1] = self.clock()
            return entry[1], entry[2], entry[3], entry[4]

    def drop(self, token: str, peer_uid: int) -> bool:
        """End a token this uid was given."""
        with self._lock:
            entry = self._tokens.get(token)
            if entry is None or entry[0] != peer_uid:
                return False
            del self._tokens[token]
            return True

    def _expire(self) -> None:
        now = self.clock()
        for t in [t for t, e in self._tokens.items() if now - e[-1] > IDLE]:
            del self._tokens[t]
