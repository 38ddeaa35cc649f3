"""RADIUS authorization: acctd answers Access-Request itself (RFC 2865),
for the subscribers it counts and blocks. A NAS (or a FreeRADIUS that
proxies to acctd as a home server) asks "may X connect?"; the answer comes
from the same login records and blocks that the kernel enforces, and the
Access-Accept carries the unit's rate, address and timeouts.

Layers. `AuthSettings` is the [radius-auth] table. `AuthReceiver.handle(
datagram, source)` is the whole wire side for one datagram, without
sockets: who may ask, BlastRADIUS, the password, the retransmission cache,
the signed reply. What the answer is belongs to an `Authorizer`:
`authorize(AuthRequest) -> Verdict`; the daemon's is `RadiusAuthService`
over the login records, and other account sources (billing accounts) plug
in as `RadiusAuthService.sources`. The socket and its thread are
acctd.aaa.coa's CoaServer.

Outcomes, in this order:
 #  request                                                outcome
 1  source address not in `clients`                        discard
 2  malformed (RFC 2865 §3), or not an Access-Request      discard
 3  no Message-Authenticator, or a wrong one (BlastRADIUS, discard
    CVE-2024-3596: required on every request)
 4  the same source, port, Identifier and Request          the cached reply
    Authenticator as one answered in the last cache-time   again (RFC 5080
    seconds                                                §2.2.2)
 5  no User-Name, or no User-Password (CHAP, MS-CHAP:      Access-Reject
    see below)
 6  the authorizer's verdict                               Accept / Reject
Discards get no reply (the NAS times out, as RFC 2865 §3 wants for bad
authenticators). Each reason is logged at most once a minute, with a count
of the ones left out, so hostile traffic cannot flood the log.

Every reply carries a Message-Authenticator (first, computed with the
request's authenticator), the Response Authenticator, and the request's
Proxy-States; a Reject carries a Reply-Message saying why.

CHAP and MS-CHAPv2 are refused: both prove knowledge of the cleartext
password (CHAP: MD5 of it; MS-CHAPv2: its MD4 "NT hash"), and acctd keeps
only argon2id hashes of passwords, so it cannot check them without storing
a password equivalent. PAP (the password hidden by the shared secret, RFC
2865 §5.2) is checked against the argon2id hash.
"""

from __future__ import annotations

import dataclasses
import heapq
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from acctd.aaa import radius
from acctd.aaa.coa import (CoaClient, CoaServer, Outcome, UdpService,
                           check_message_authenticator, listed_client, listen_address, screen)
from acctd.config.schema import Invalid, Table, integer, setting, tables
from acctd.services.contract import Core

log = logging.getLogger("acctd.radius_auth")

DEFAULT_PORT = 1812          # RFC 2865 §3
DEFAULT_INTERIM = 300
DEFAULT_CACHE = 30           # seconds a reply is kept for retransmissions
MAX_CACHED = 16384
LOG_EVERY = 60.0             # seconds between two log lines of one discard reason


@dataclasses.dataclass(frozen=True)
class AuthSettings(Table):
    """The [radius-auth] table; the clients' secrets are read (and checked
    owner-only) at load."""
    clients: tuple[CoaClient, ...] = setting(
        check=tables(CoaClient, "{address = \"...\", secret-file = \"...\"} tables"))
    listen: tuple[str, int] = setting(("127.0.0.1", DEFAULT_PORT),
                                      check=listen_address(DEFAULT_PORT))
    # Acct-Interim-Interval sent; 0: none (as [radius]'s interim-interval, its default)
    interim_interval: int = setting(DEFAULT_INTERIM, check=integer(0, 86400, "seconds"))
    session_timeout: int = setting(0, check=integer(0, 86400 * 365, "seconds"))  # 0: none
    cache_time: int = setting(DEFAULT_CACHE, check=integer(1, 300, "seconds"))

    def finish(self, ctx) -> "AuthSettings":
        for i, c in enumerate(self.clients):
            if any(o.network == c.network for o in self.clients[:i]):
                raise Invalid(f"{c.network} is listed twice", f"clients[{i}].address")
        return self


# --- what the authorizer sees and says -----------------------------------------------------

@dataclasses.dataclass(frozen=True)
class AuthRequest:
    user: str
    password: str
    mac: str | None          # Calling-Station-Id, as sent
    nas: str                 # NAS-Identifier, else the client's address: F-TICKS's RP
    client: str              # the source address


@dataclasses.dataclass(frozen=True)
class Verdict:
    accept: bool
    reason: str                                      # a Reject's Reply-Message
    attrs: tuple[tuple[str, Any], ...] = ()          # an Accept's reply attributes


class Authorizer(Protocol):
    def authorize(self, req: AuthRequest) -> Verdict: ...


def grant(rate: tuple[int | None, int | None] | None, address: str | None,
          session_timeout: int, interim: int) -> tuple[tuple[str, Any], ...]:
    """An Accept's attributes. rate is acctd's (in, out) bit/s, in towards
    the subscriber; sent as the CoA receiver reads them back: WISPr Down =
    in, Up = out; Mikrotik-Rate-Limit "rx/tx" from the router's side, rx =
    the client's upload (out), tx its download (in). None or 0: no limit."""
    out: list[tuple[str, Any]] = []
    if address:
        out.append(("Framed-IP-Address", address))
    if session_timeout:
        out.append(("Session-Timeout", session_timeout))
    if interim:
        out.append(("Acct-Interim-Interval", interim))
    rin, rout = rate or (None, None)
    if rin or rout:
        if rin:
            out.append(("Vendor-Specific", radius.encode_vsa("WISPr-Bandwidth-Max-Down", rin)))
        if rout:
            out.append(("Vendor-Specific", radius.encode_vsa("WISPr-Bandwidth-Max-Up", rout)))
        out.append(("Vendor-Specific", radius.encode_vsa("Mikrotik-Rate-Limit",
                                                         f"{rout or 0}/{rin or 0}")))
    return tuple(out)


# --- the wire -----------------------------------------------------------------------------

class _QuietLog:
    """A warning per reason at most every LOG_EVERY seconds, telling how many
    were left out since: hostile traffic must not flood the log."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.last: dict[str, float] = {}
        self.skipped: Counter[str] = Counter()

    def warning(self, reason: str, text: str) -> None:
        now = self.clock()
        if now - self.last.get(reason, -LOG_EVERY) < LOG_EVERY:
            self.skipped[reason] += 1
            return
        more = self.skipped.pop(reason, 0)
        self.last[reason] = now
        log.warning("radius-auth: %s (%s)%s", text, reason,
                    f"; {more} more like it in the last minute not logged" if more else "")


class AuthReceiver:
    """The outcome table over datagrams, with the retransmission cache; no
    sockets. Not thread-safe: one thread feeds it (CoaServer's)."""

    def __init__(self, settings: AuthSettings, authorizer: Authorizer,
                 clock: Callable[[], float] = time.monotonic):
        self.settings, self.authorizer, self.clock = settings, authorizer, clock
        self.stats: Counter[str] = Counter()
        self.quiet = _QuietLog(clock)
        self._cache: dict[tuple, bytes] = {}          # (ip, port, id, authenticator) -> reply
        self._expiry: list[tuple[float, tuple]] = []

    def handle(self, data: bytes, source: tuple[str, int]) -> Outcome:
        out = self._handle(data, (str(ipaddress.ip_address(source[0])), source[1]))
        self.stats[out.reason] += 1
        return out

    def _handle(self, data: bytes, src: tuple[str, int]) -> Outcome:
        client = listed_client(self.settings.clients, src[0])
        first = screen(data, src, client, (radius.ACCESS_REQUEST,), "Access-Request is",
                       self._discard)
        if isinstance(first, Outcome):
            return first
        p, what = first
        # BlastRADIUS (CVE-2024-3596): required, over the Request Authenticator
        refused = check_message_authenticator(data, p, client, p.authenticator, what,
                                              self._discard)
        if refused is not None:
            return refused
        now = self.clock()
        while self._expiry and self._expiry[0][0] < now:
            self._cache.pop(heapq.heappop(self._expiry)[1], None)
        key = (src[0], src[1], p.identifier, p.authenticator)
        cached = self._cache.get(key)
        if cached is not None:
            return Outcome("resend", "retransmission", cached, what)
        if len(self._cache) >= MAX_CACHED:
            return self._discard("cache-full", f"{what}: {MAX_CACHED} requests in "
                                 f"{self.settings.cache_time} s")
        verdict = self._verdict(p, data, client, src)
        code = radius.ACCESS_ACCEPT if verdict.accept else radius.ACCESS_REJECT
        attrs = list(verdict.attrs) if verdict.accept else [("Reply-Message", verdict.reason)]
        attrs += [("Proxy-State", v) for v in p.raw("Proxy-State")]
        reply = radius.response(data, code, client.secret, attrs, with_message_authenticator=True)
        self._cache[key] = reply
        heapq.heappush(self._expiry, (now + self.settings.cache_time, key))
        log.info("radius-auth: %s: %s %s", what, radius.CODES[code],
                 "" if verdict.accept else verdict.reason)
        return Outcome("accept" if verdict.accept else "reject",
                       "accept" if verdict.accept else "reject", reply, verdict.reason)

    def _verdict(self, p: radius.Packet, data: bytes, client: CoaClient,
                 src: tuple[str, int]) -> Verdict:
        def text(name: str) -> str | None:
            v = p.get(name)
            return v if isinstance(v, str) and v.isprintable() else None
        try:
            user = text("User-Name")
            hidden = p.raw("User-Password")
            if not user:
                return Verdict(False, "no User-Name")
            if not hidden:
                if p.raw("CHAP-Password"):
                    return Verdict(False, "CHAP is not accepted: acctd keeps only hashes of "
                                          "passwords; use PAP")
                return Verdict(False, "no User-Password (only PAP is accepted)")
            password = radius.reveal_password(hidden[0], p.authenticator, client.secret)
            req = AuthRequest(user, password.decode("utf-8"), text("Calling-Station-Id"),
                              text("NAS-Identifier") or src[0], src[0])
        except (radius.PacketError, UnicodeDecodeError) as e:
            return Verdict(False, f"malformed request: {e}")
        try:
            return self.authorizer.authorize(req)
        except Exception:  # noqa: BLE001 - a decider bug must not kill the server
            log.exception("radius-auth: deciding for %r", user)
            return Verdict(False, "internal error")

    def _discard(self, reason: str, detail: str) -> Outcome:
        self.quiet.warning(reason, f"discarded {detail}")
        return Outcome("discard", reason, None, detail)


def server(settings: AuthSettings, authorizer: Authorizer) -> CoaServer:
    """The receiver on its UDP socket and thread (coa.CoaServer)."""
    return CoaServer(settings, None, receiver=AuthReceiver(settings, authorizer),
                     name="radius-auth")


# --- the service ------------------------------------------------------------------------

# what a Reject says for these login outcomes: one message, so a NAS's user
# cannot tell a name that exists from a wrong password
_UNKNOWN = {"unknown-unit", "no-login", "wrong-password"}
AccountSource = Callable[[AuthRequest], "Verdict | None"]


class RadiusAuthService(UdpService):
    """[radius-auth] in the daemon: Access-Requests answered from the login
    records (a password set with `acctctl login set`). An Accept logs the
    unit in (the login service's rules, its LOGIN block lifts) and, for a
    user unit, opens its session on the address the reply gives; the
    session is counted, and RADIUS accounting ([radius]) reports it.

    sources: account sources asked first, in order (billing accounts plug
    in here): each returns a Verdict, or None when the name is not its."""

    name = "radius_auth"

    def __init__(self, core: Core, settings: AuthSettings | None):
        super().__init__(core, settings)
        self.sources: list[AccountSource] = []

    @staticmethod
    def settings_of(config):
        return config.radius_auth

    def make_server(self) -> CoaServer:
        return server(self.settings, self)

    def authorize(self, req: AuthRequest) -> Verdict:
        for source in self.sources:
            v = source(req)
            if v is not None:
                return v
        return self._login(req)

    def _login(self, req: AuthRequest) -> Verdict:
        from acctd.services.login import LoginService
        login = self.core.service(LoginService)
        grant_: list = []
        res = login.admit(req.user, req.password, None, _mac(req.mac),
                          lambda rec: self._rules(rec, req, grant_, login), "radius", req.nas)
        if not res.ok:
            return Verdict(False, "wrong user name or password" if res.code in _UNKNOWN
                           else res.reason)
        attrs, bind = grant_
        login.follow(res.oid, bind, res.mac)
        return Verdict(True, "", attrs)

    def _rules(self, rec, req: AuthRequest, out: list, login):
        """Past the password and the login service's rules (under the core's
        lock): the unit's other blocks, its MAC, an address; fills `out`
        with (reply attributes, the address to open its session on or None)."""
        from acctd.model.addresses import format_addr, is_v4
        core, snap = self.core, self.core.snapshot
        u = snap.units.units[snap.units.by_oid[rec.oid]]
        blocked = login.other_blocks(rec)
        if blocked is not None:
            return blocked
        if u.mac and _mac(req.mac) != u.mac:
            return login.table.fail(rec.oid, "mac-mismatch", "MAC mismatch: "
                                    f"Calling-Station-Id {req.mac or 'missing'}", "mac mismatch")
        addr, bind = None, None
        v4 = [a for a in u.addrs if is_v4(a)]
        if v4:
            addr = format_addr(v4[0])
        elif u.type == "user":
            from acctd.services import auto_units
            pools = auto_units.AutoAssign(core.config.processor.auto_assign)
            try:
                addr = format_addr(pools.next_free(auto_units.owned_addrs(snap.units), 4))
            except auto_units.PoolExhausted as e:
                return login.table.fail(rec.oid, "no-address", f"no address: {e}",
                                        "no address")
            bind = addr
        rate = None
        for s in core.services.values():
            rate = s.rate_limits().get(u.oid, rate)
        rate = rate or u.bw
        timeout = rec.abs or self.settings.session_timeout
        out += [grant(rate, addr, timeout, self.settings.interim_interval), bind]
        return None


def _mac(text: str | None) -> str | None:
    from acctd.services.mac_control import MacError, normalize_mac
    try:
        return normalize_mac(text) if text else None
    except MacError:
        return None
