"""The console's own sessions: a random session id in an HttpOnly,
SameSite=Strict cookie (Secure behind TLS) names a server-side entry that
holds the daemon's token for the person (acctd/control/delegation.py) and
the session's CSRF token. The password itself is never kept: the daemon
checked it once and answered the token.

CSRF: every state-changing form carries the session's token (or, for the
login form, an HMAC of a pre-login cookie) and a POST without it is refused.
Login attempts are limited per client address here and per name in the
daemon."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import threading
import time

from acctd.control.delegation import IDLE, AttemptLimit

COOKIE = "acctd_session"
PRE_COOKIE = "acctd_login"   # before login: the login form's CSRF is bound to it
MAX_SESSIONS = 10_000


@dataclasses.dataclass
class Session:
    token: str           # the daemon's, for requests on this person's behalf
    name: str
    level: str           # viewer, operator, admin (the daemon decides; this is for display)
    unit: str | None     # a subscriber's unit
    account: str | None  # a billing account's holder: that account
    csrf: str
    last: float

    @property
    def subscriber(self) -> bool:
        return self.unit is not None or self.account is not None


class Sessions:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.secret = secrets.token_bytes(32)   # a restart logs everyone out: fine
        self.by_ip = AttemptLimit(tries=10, window=60.0, clock=clock)
        self._live: dict[str, Session] = {}
        self._lock = threading.Lock()

    def start(self, token: str, name: str, level: str, unit: str | None,
              account: str | None = None) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            while len(self._live) >= MAX_SESSIONS:
                self._live.pop(next(iter(self._live)))
            self._live[sid] = Session(token, name, level, unit, account,
                                      secrets.token_urlsafe(24), self.clock())
        return sid

    def get(self, sid: str | None) -> Session | None:
        with self._lock:
            s = self._live.get(sid) if sid else None
            if s is None:
                return None
            if self.clock() - s.last > IDLE:
                del self._live[sid]
                return None
            s.last = self.clock()
            return s

    def end(self, sid: str | None) -> Session | None:
        with self._lock:
            return self._live.pop(sid, None) if sid else None

    # the login form's CSRF: an HMAC of the pre-login cookie, so nothing is stored per visitor

    def login_csrf(self, pre: str) -> str:
        return hmac.new(self.secret, pre.encode(), hashlib.sha256).hexdigest()

    def login_csrf_ok(self, pre: str | None, given: str | None) -> bool:
        return bool(pre and given) and hmac.compare_digest(self.login_csrf(pre), given)


def same(a: str | None, b: str | None) -> bool:
    return bool(a and b) and hmac.compare_digest(a, b)
