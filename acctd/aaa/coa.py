"""RFC 5176 Dynamic Authorization receiver: a Disconnect-Request ends a
session (and blocks its unit), a CoA-Request with a rate changes its limit.
Requests come from listed clients only, signed, fresh and once.

Layers. `CoaSettings` is the [coa] table. `Receiver.handle(datagram,
source)` is the whole decision for one datagram, without sockets (the unit
tests drive it); `judge` is its pure part over an authenticated packet.
`CoaServer` is a UDP socket on a thread around a Receiver. What "ending"
and "limiting" mean is the handler's: `handler.disconnect(ident) -> bool`
and `handler.coa(ident, rate_in_bps, rate_out_bps) -> bool`, True when it
found the session (and acted on every session `ident` selects: RFC 5176
lets one request name several).

Outcomes, checked in this order. Every row but 20 is logged (WARNING);
rows 1-11 get no reply at all, so the client times out.

 #  request                                                outcome          reference
 1  source address not in `clients`                        discard          RFC 5176 §6.1 (a)
 2  malformed: too short, bad Length or attribute          discard          RFC 2865 §3
 3  a code other than Disconnect-Request, CoA-Request      discard          RFC 2865 §3
 4  Request Authenticator is not MD5(code+id+length+16     discard          RFC 5176 §2.3,
    zero octets+attributes+secret): wrong secret, forged                    RFC 2866 §3
 5  no Message-Authenticator                               discard          (b)
 6  Message-Authenticator wrong, not 16 octets, or twice   discard          RFC 3579 §3.2
 7  retransmission: the Request Authenticator of a         the same reply   RFC 5080 §2.2.2;
    request answered within the window, from the same      again            the handler is
    address, port and Identifier                                            not called again
 8  replay: that Request Authenticator from another        discard          RFC 5176 §6.4
    address, port or Identifier
 9  no Event-Timestamp (require-event-timestamp = true),   discard          RFC 5176 §6.4 (c)
    or one not of 4 octets, or two
 10 Event-Timestamp more than event-window seconds from    discard          RFC 5176 §6.4 (d)
    now, either way
 11 MAX_CACHED requests answered within the window         discard          (e)
 12 NAS-IP-Address/NAS-IPv6-Address neither nas-ip nor     NAK 403          RFC 5176 §3
    the listen address; NAS-Identifier not nas-identifier
 13 Service-Type (Authorize-Only or another)               NAK 405          RFC 5176 §3.2
 14 an attribute not understood (see below): State,        NAK 401          RFC 5176 §3 (f)
    Reply-Message, other VSAs...; a rate in a
    Disconnect-Request; Acct-Terminate-Cause in a CoA
 15 a value that does not parse (wrong length, empty,      NAK 407          RFC 5176 §3.5
    a Mikrotik-Rate-Limit with bursts or junk)
 16 a session attribute or rate given twice; WISPr and     NAK 404          RFC 5176 §3.5
    Mikrotik rates that disagree
 17 no session identification attribute; a CoA-Request     NAK 402          RFC 5176 §3.5 (g)
    without a rate
 18 the handler finds no session (returns False)           NAK 503          RFC 5176 §3.5
 19 the handler raises                                     NAK 506          (h)
 20 the handler returns True                               ACK              RFC 5176 §2

Error-Cause: 401 Unsupported-Attribute, 402 Missing-Attribute, 403
NAS-Identification-Mismatch, 404 Invalid-Request, 405 Unsupported-Service,
407 Invalid-Attribute-Value, 503 Session-Context-Not-Found, 506
Resources-Unavailable.
(a) requests from untrusted sources are silently discarded; so does RFC
    2865 §3 for unknown clients.
(b) RFC 5176 §3.4 makes it a MAY; required here, as FreeRADIUS's
    require_message_authenticator does against BlastRADIUS.
(c) implementations "SHOULD be configurable to discard" requests without one.
(d) a timestamp that is not current: the packet "MUST be silently discarded".
(e) replays could no longer be detected; logged as an ERROR.
(f) a change that cannot be carried out or an unsupported attribute MUST be
    NAKed; a Disconnect-Request carries identification only.
(g) acctd never acts on every session at once; a CoA that changes nothing
    is a mistake worth telling.
(h) logged with the traceback.

Where several of 12-17 apply, the first of them wins. Every reply (ACK
or NAK, and a resent one) carries a Message-Authenticator computed with the
request's authenticator (RFC 5176 §3.4), the Response Authenticator (RFC
5176 §2.3), and the request's Proxy-State attributes in order (RFC 5176
§3.1).

Understood attributes. Session identification (each at most once, passed
to the handler in `ident`, keyed by these names): User-Name,
Acct-Session-Id, NAS-Port-Id, Calling-Station-Id (str), Framed-IP-Address
(IPv4Address), Framed-IPv6-Address (IPv6Address), Framed-IPv6-Prefix
(IPv6Network): what acctd's accounting records send. NAS identification,
checked and not passed: NAS-IP-Address, NAS-IPv6-Address, NAS-Identifier.
Always allowed: Message-Authenticator, Event-Timestamp, Proxy-State; in a
Disconnect-Request also Acct-Terminate-Cause (accepted, not acted on).

Rates (CoA-Request only), in bit/s; acctd's "in" is towards the subscriber:
  WISPr-Bandwidth-Max-Down (14122/8)  -> rate_in    (to the client)
  WISPr-Bandwidth-Max-Up   (14122/7)  -> rate_out   (from the client)
  Mikrotik-Rate-Limit (14988/8) "rx[/tx]": from the router's side (MikroTik's
      documentation), rx is what the client uploads -> rate_out, tx what it
      downloads -> rate_in; no "/tx" means tx = rx; k = 1000, M = 10**6
      (and G = 10**9); burst, priority and min-rate fields are NAKed (407).
A direction the request does not set is None ("leave as is"); 0 means "no
limit", as MikroTik and CoovaChilli read it.

Replay cache. Every answered request's Request Authenticator is kept, with
its reply, until its Event-Timestamp + event-window (receipt time +
event-window when it has none): after that row 10 refuses it anyway. So the
cache is bounded by the window, and by MAX_CACHED. Without an
Event-Timestamp (require-event-timestamp = false) a replay later than the
window goes undetected: hence the default.
"""

from __future__ import annotations

import dataclasses
import errno
import heapq
import hmac
import ipaddress
import json
import logging
import re
import select
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from acctd.aaa import radius
from acctd.config.schema import (Invalid, Table, boolean, free_text, integer, ip_address,
                                 ip_network, secret_file, setting, tables)
from acctd.services.contract import Core, Service

log = logging.getLogger("acctd.radius_coa")

DEFAULT_PORT = 3799             # RFC 5176 §3
DEFAULT_WINDOW = 300
MAX_WINDOW = 3600
MAX_CACHED = 65536

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# --- settings -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CoaClient(Table):
    """A Dynamic Authorization Client: an address or prefix and its secret."""
    network: Network = setting(check=ip_network(), key="address")
    secret_file: str = setting(check=secret_file())
    secret: bytes = dataclasses.field(repr=False, compare=False, default=b"")

    def finish(self, ctx) -> "CoaClient":
        from acctd.common.secret_files import read_private
        return dataclasses.replace(self, secret=read_private(self.secret_file, "secret-file"))


def listen_address(default_port: int):
    """The check of a `listen` key: "127.0.0.1", "127.0.0.1:3799",
    "[::1]:3799", "::1" -> (host, port); the RADIUS servers share it."""
    def check(v, ctx) -> tuple[str, int]:
        if not isinstance(v, str) or not v:
            raise Invalid(f"expected \"address[:port]\", got {v!r}")
        host, port = v, str(default_port)
        m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", v)
        if m:
            host, port = m.group(1), m.group(2) or port
        elif v.count(":") == 1:
            host, port = v.split(":")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise Invalid(f"{v!r}: {host!r} is not an IP address") from None
        if not port.isdigit() or not 0 <= int(port) < 65536:
            raise Invalid(f"{v!r}: port must be 0-65535 (0: any free port)")
        return str(ip), int(port)
    return check


_listen = listen_address(DEFAULT_PORT)


@dataclasses.dataclass(frozen=True)
class CoaSettings(Table):
    """The [coa] table; the clients' secrets are read (and checked) at load."""
    clients: tuple[CoaClient, ...] = setting(
        check=tables(CoaClient, "{address = \"...\", secret-file = \"...\"} tables"))
    listen: tuple[str, int] = setting(("127.0.0.1", DEFAULT_PORT), check=_listen)
    # seconds either side of now
    event_window: int = setting(DEFAULT_WINDOW, check=integer(1, MAX_WINDOW, "seconds"))
    require_event_timestamp: bool = setting(True, check=boolean())
    nas_ip: str = setting("", check=ip_address())  # what NAS-IP(v6)-Address may say
    nas_identifier: str = setting("", check=free_text())    # what NAS-Identifier may say

    def finish(self, ctx) -> "CoaSettings":
        for i, c in enumerate(self.clients):
            if any(o.network == c.network for o in self.clients[:i]):
                raise Invalid(f"{c.network} is listed twice", f"clients[{i}].address")
        return self

    def client(self, addr: str | Address) -> CoaClient | None:
        return listed_client(self.clients, addr)

    def own_addresses(self) -> set[Address]:
        """What NAS-IP-Address / NAS-IPv6-Address may name: nas-ip and a
        specific listen address."""
        out: set[Address] = set()
        if self.nas_ip:
            out.add(ipaddress.ip_address(self.nas_ip))
        ip = ipaddress.ip_address(self.listen[0])
        if not ip.is_unspecified:
            out.add(ip)
        return out


def listed_client(clients, addr: str | Address) -> CoaClient | None:
    """The listed client for a source address (the longest prefix)."""
    ip = _plain(ipaddress.ip_address(addr))
    best = None
    for c in clients:
        if ip.version == c.network.version and ip in c.network and \
                (best is None or c.network.prefixlen > best.network.prefixlen):
            best = c
    return best


def _plain(ip: Address) -> Address:
    """An IPv4-mapped IPv6 address (a dual-stack socket's view) as IPv4."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


# --- the pure part: what an authenticated request asks for -------------------------------

SESSION_ATTRIBUTES = ("User-Name", "Acct-Session-Id", "NAS-Port-Id", "Calling-Station-Id",
                      "Framed-IP-Address", "Framed-IPv6-Address", "Framed-IPv6-Prefix")
_PASSED = ("Message-Authenticator", "Event-Timestamp", "Proxy-State")

# Which Error-Cause wins when a request has several problems (rows 12-17).
_PRIORITY = ("NAS-Identification-Mismatch", "Unsupported-Service", "Unsupported-Attribute",
             "Invalid-Attribute-Value", "Invalid-Request", "Missing-Attribute")

_VENDORS = {n: name for name, n in radius.VENDORS.items()}
_RATE_ATTRIBUTES = ("WISPr-Bandwidth-Max-Down", "WISPr-Bandwidth-Max-Up", "Mikrotik-Rate-Limit")
_RATE_UNITS = {"": 1, "k": 1000, "K": 1000, "M": 10 ** 6, "G": 10 ** 9}


def parse_rate_limit(text: str) -> tuple[int, int]:
    """Mikrotik-Rate-Limit "rx[/tx]" as (rate_in, rate_out) in bit/s: rx is
    the client's upload (acctd's out), tx its download (acctd's in). Only
    the first field: bursts, priority and min rates raise ValueError."""
    fields = text.split()
    if len(fields) != 1:
        raise ValueError(f"only \"rx[/tx]\" is supported, not bursts, priority or min "
                         f"rates: {text!r}")
    m = re.fullmatch(r"(\d+)([kKMG]?)(?:/(\d+)([kKMG]?))?", fields[0])
    if not m:
        raise ValueError(f"expected \"rx[/tx]\" rates like 512k/2M, got {text!r}")
    rx = int(m.group(1)) * _RATE_UNITS[m.group(2)]
    tx = rx if m.group(3) is None else int(m.group(3)) * _RATE_UNITS[m.group(4)]
    return tx, rx


@dataclasses.dataclass(frozen=True)
class Action:
    """What a well-formed request asks the handler to do."""
    kind: str                                # "disconnect" | "coa"
    ident: dict[str, Any]
    rate_in: int | None = None               # bit/s towards the subscriber; 0: no limit
    rate_out: int | None = None              # bit/s from the subscriber


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A NAK: the Error-Cause name (radius.VALUES["Error-Cause"]) and why."""
    cause: str
    detail: str


def judge(p: radius.Packet, settings: CoaSettings) -> Action | Refusal:
    """Rows 12-17 of the outcome table over an authenticated, fresh request."""
    disconnect = p.code == radius.DISCONNECT_REQUEST
    problems: dict[str, str] = {}
    ident: dict[str, Any] = {}
    rates: dict[str, dict[str, int]] = {"in": {}, "out": {}}   # direction -> {source: bps}

    def problem(cause: str, detail: str) -> None:
        problems.setdefault(cause, detail)

    def rate(direction: str, source: str, bps: int) -> None:
        if source in rates[direction]:
            problem("Invalid-Request", f"{source} given twice")
        rates[direction][source] = bps

    own = settings.own_addresses()
    for t, raw in p.attributes:
        name = radius.BY_NUMBER.get(t, (str(t), ""))[0]
        if name in _PASSED:
            continue
        try:
            if name in ("NAS-IP-Address", "NAS-IPv6-Address"):
                ip = radius.decode_value(name, raw)
                if ip not in own:
                    problem("NAS-Identification-Mismatch", f"{name} {ip} is not ours "
                            f"({', '.join(sorted(map(str, own))) or 'none configured'})")
            elif name == "NAS-Identifier":
                v = radius.decode_value(name, raw)
                if not settings.nas_identifier or v != settings.nas_identifier:
                    problem("NAS-Identification-Mismatch", f"NAS-Identifier {v!r} is not "
                            f"ours ({settings.nas_identifier or 'none configured'!r})")
            elif name in SESSION_ATTRIBUTES:
                v = radius.decode_value(name, raw) if raw else b""
                if isinstance(v, bytes):
                    raise radius.PacketError(f"{name} is empty or not UTF-8")
                if name in ident:
                    problem("Invalid-Request", f"{name} given twice")
                ident.setdefault(name, v)
            elif name == "Service-Type":
                v = radius.value_name(name, radius.decode_value(name, raw))
                problem("Unsupported-Service", f"Service-Type {v} (acctd changes rates "
                        f"and ends sessions only)")
            elif name == "Acct-Terminate-Cause" and disconnect:
                radius.decode_value(name, raw)
            elif name == "Vendor-Specific":
                if len(raw) >= 4 and struct.unpack("!I", raw[:4])[0] not in _VENDORS:
                    problem("Unsupported-Attribute",
                            f"Vendor-Specific of vendor {struct.unpack('!I', raw[:4])[0]}")
                    continue
                vendor, subs = radius.decode_vsa(raw)
                for sub, v in subs:
                    if sub not in _RATE_ATTRIBUTES:
                        problem("Unsupported-Attribute", sub if isinstance(sub, str) else
                                f"{_VENDORS[vendor]} vendor attribute {sub}")
                    elif disconnect:
                        problem("Unsupported-Attribute", f"{sub} in a Disconnect-Request "
                                f"(RFC 5176 §3: identification only)")
                    elif sub == "WISPr-Bandwidth-Max-Down":
                        rate("in", sub, v)
                    elif sub == "WISPr-Bandwidth-Max-Up":
                        rate("out", sub, v)
                    else:
                        if not isinstance(v, str):
                            raise radius.PacketError(f"{sub} is not UTF-8")
                        try:
                            rin, rout = parse_rate_limit(v)
                        except ValueError as e:
                            problem("Invalid-Attribute-Value", f"Mikrotik-Rate-Limit: {e}")
                            continue
                        rate("in", sub, rin)
                        rate("out", sub, rout)
            else:
                problem("Unsupported-Attribute", f"{name} in a {radius.CODES[p.code]}")
        except (radius.PacketError, ValueError) as e:
            problem("Invalid-Attribute-Value", str(e))

    chosen: dict[str, int | None] = {}
    for direction, by_source in rates.items():
        if len(set(by_source.values())) > 1:
            problem("Invalid-Request", f"the {direction} rates disagree: "
                    f"{', '.join(f'{k} {v}' for k, v in by_source.items())}")
        chosen[direction] = next(iter(by_source.values()), None)
    if not ident:
        problem("Missing-Attribute", f"no session identification attribute (one of "
                f"{', '.join(SESSION_ATTRIBUTES)})")
    if not disconnect and chosen["in"] is None and chosen["out"] is None:
        problem("Missing-Attribute", "a CoA-Request without a rate (WISPr-Bandwidth-Max-Down/"
                "Up or Mikrotik-Rate-Limit)")
    for cause in _PRIORITY:
        if cause in problems:
            return Refusal(cause, problems[cause])
    if disconnect:
        return Action("disconnect", ident)
    return Action("coa", ident, chosen["in"], chosen["out"])


# --- one datagram in, at most one out -----------------------------------------------------

class CoaHandler(Protocol):
    def disconnect(self, ident: dict[str, Any]) -> bool: ...
    def coa(self, ident: dict[str, Any], rate_in_bps: int | None,
            rate_out_bps: int | None) -> bool: ...


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What became of one datagram: kind is "ack", "nak", "resend" or
    "discard"; reason a stable word (a discard's, or the NAK's Error-Cause);
    reply the datagram to send back, if any."""
    kind: str
    reason: str
    reply: bytes | None = None
    detail: str = ""


@dataclasses.dataclass
class _Seen:
    source: tuple[str, int]
    identifier: int
    reply: bytes
    expires: float


_REPLIES = {radius.DISCONNECT_REQUEST: (radius.DISCONNECT_ACK, radius.DISCONNECT_NAK),
            radius.COA_REQUEST: (radius.COA_ACK, radius.COA_NAK)}


class Receiver:
    """The outcome table over datagrams, with the replay cache; no sockets.
    Not thread-safe: one thread feeds it (CoaServer's)."""

    def __init__(self, settings: CoaSettings, handler: CoaHandler,
                 clock: Callable[[], float] = time.time):
        self.settings, self.handler, self.clock = settings, handler, clock
        self.stats: Counter[str] = Counter()          # by Outcome.reason
        self._seen: dict[bytes, _Seen] = {}           # Request Authenticator -> answer
        self._expiry: list[tuple[float, bytes]] = []  # heap of (expires, authenticator)

    def handle(self, data: bytes, source: tuple[str, int]) -> Outcome:
        out = self._handle(data, (str(_plain(ipaddress.ip_address(source[0]))), source[1]))
        self.stats[out.reason] += 1
        return out

    def _handle(self, data: bytes, src: tuple[str, int]) -> Outcome:
        client = self.settings.client(src[0])
        first = screen(data, src, client, _REPLIES, "Disconnect-Request and CoA-Request are",
                       self._discard)
        if isinstance(first, Outcome):
            return first
        p, what = first
        if not radius.request_authenticator_ok(data, client.secret):
            return self._discard("bad-authenticator", f"{what}: Request Authenticator does "
                                 f"not match the secret of {client.network}")
        refused = check_message_authenticator(data, p, client, bytes(16), what, self._discard)
        if refused is not None:
            return refused

        now = self.clock()
        self._expire(now)
        seen = self._seen.get(p.authenticator)
        if seen is not None:
            if seen.source == src and seen.identifier == p.identifier:
                log.info("coa: %s: retransmission, the same reply again", what)
                return Outcome("resend", "retransmission", seen.reply)
            return self._discard("replay", f"{what}: replay of a request from "
                                 f"{seen.source[0]}:{seen.source[1]} Id {seen.identifier}")

        window = self.settings.event_window
        stamps = p.raw("Event-Timestamp")
        if not stamps:
            if self.settings.require_event_timestamp:
                return self._discard("no-event-timestamp", f"{what}: no Event-Timestamp")
            expires = now + window
        else:
            if len(stamps) != 1 or len(stamps[0]) != 4:
                return self._discard("bad-event-timestamp",
                                     f"{what}: Event-Timestamp not one 4-octet value")
            stamp = struct.unpack("!I", stamps[0])[0]
            if abs(now - stamp) > window:
                return self._discard("stale-event-timestamp",
                                     f"{what}: Event-Timestamp {stamp} is {now - stamp:+.0f} s "
                                     f"from now, outside ±{window} s")
            expires = stamp + window
        if len(self._seen) >= MAX_CACHED:
            log.error("coa: replay cache full (%d requests in %d s)", MAX_CACHED, window)
            return self._discard("cache-full", f"{what}: {MAX_CACHED} requests answered "
                                 f"within the window already")

        verdict = judge(p, self.settings)
        ack, nak = _REPLIES[p.code]
        if isinstance(verdict, Refusal):
            out = self._reply(data, p, client, nak, verdict.cause, verdict.detail)
            log.warning("coa: %s: %s %s (%s)", what, radius.CODES[nak], verdict.cause,
                        verdict.detail)
        else:
            out = self._act(data, p, client, verdict, what)
        self._seen[p.authenticator] = _Seen(src, p.identifier, out.reply, expires)
        heapq.heappush(self._expiry, (expires, p.authenticator))
        return out

    def _act(self, data: bytes, p: radius.Packet, client: CoaClient, a: Action,
             what: str) -> Outcome:
        ack, nak = _REPLIES[p.code]
        rates = "" if a.kind == "disconnect" else f" in {a.rate_in} out {a.rate_out} bit/s"
        try:
            if a.kind == "disconnect":
                found = self.handler.disconnect(dict(a.ident))
            else:
                found = self.handler.coa(dict(a.ident), a.rate_in, a.rate_out)
        except Exception as e:  # noqa: BLE001 - a handler bug must not kill the receiver
            log.exception("coa: %s: the %s handler failed", what, a.kind)
            return self._reply(data, p, client, nak, "Resources-Unavailable",
                               f"{a.kind} handler: {e!r}")
        if not found:
            log.warning("coa: %s: %s Session-Context-Not-Found (%s)", what,
                        radius.CODES[nak], _show(a.ident))
            return self._reply(data, p, client, nak, "Session-Context-Not-Found",
                               _show(a.ident))
        log.info("coa: %s: %s %s%s", what, radius.CODES[ack], _show(a.ident), rates)
        return self._reply(data, p, client, ack, None, _show(a.ident) + rates)

    @staticmethod
    def _reply(data: bytes, p: radius.Packet, client: CoaClient, code: int,
               cause: str | None, detail: str) -> Outcome:
        attrs: list[tuple[str, Any]] = [] if cause is None else [("Error-Cause", cause)]
        attrs += [("Proxy-State", v) for v in p.raw("Proxy-State")]
        reply = radius.response(data, code, client.secret, attrs,
                                with_message_authenticator=True)
        if cause is None:
            return Outcome("ack", "ack", reply, detail)
        return Outcome("nak", cause, reply, detail)

    @staticmethod
    def _discard(reason: str, detail: str) -> Outcome:
        log.warning("coa: discarded %s (%s)", detail, reason)
        return Outcome("discard", reason, None, detail)

    def _expire(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] < now:
            _, auth = heapq.heappop(self._expiry)
            self._seen.pop(auth, None)


def screen(data: bytes, src: tuple[str, int], client: CoaClient | None, codes,
           served: str, discard: Callable[[str, str], Outcome]
           ) -> tuple[radius.Packet, str] | Outcome:
    """The first checks of a RADIUS server (rows 1-3 here, 1-2 of the
    Access-Request server): a listed client, a well-formed packet of one of
    `codes`. The packet and its description for the log, or the discard."""
    where = f"from {src[0]}:{src[1]}"
    if client is None:
        return discard("unlisted-source", f"{len(data)} octets {where}: not a listed client")
    try:
        p = radius.decode(data)
    except radius.PacketError as e:
        return discard("malformed", f"{len(data)} octets {where}: {e}")
    what = f"{radius.CODES.get(p.code, f'code {p.code}')} Id {p.identifier} {where}"
    if p.code not in codes:
        return discard("unsupported-code", f"{what}: only {served} served here")
    return p, what


def check_message_authenticator(data: bytes, p: radius.Packet, client: CoaClient,
                                authenticator: bytes, what: str,
                                discard: Callable[[str, str], Outcome]) -> Outcome | None:
    """The discard of a request without exactly one right Message-Authenticator
    (computed over `authenticator`, RFC 3579 §3.2), or None."""
    mas = p.raw("Message-Authenticator")
    if not mas:
        return discard("no-message-authenticator", f"{what}: no Message-Authenticator")
    try:
        ok = len(mas) == 1 and len(mas[0]) == 16 and hmac.compare_digest(
            radius.message_authenticator(data, client.secret, authenticator), mas[0])
    except radius.PacketError:
        ok = False
    if not ok:
        return discard("bad-message-authenticator",
                       f"{what}: Message-Authenticator does not match the secret")
    return None


def _show(ident: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in ident.items())


# --- the socket ------------------------------------------------------------------------

class CoaServer:
    """A Receiver on a UDP socket, served by one thread (requests are
    handled one at a time, in arrival order)."""

    def __init__(self, settings: CoaSettings, handler: CoaHandler,
                 clock: Callable[[], float] = time.time, *, receiver=None, name: str = "coa"):
        # receiver: another datagram decider with .handle and .stats (the
        # Access-Request server's, acctd.aaa.radius_auth)
        self.settings, self.name = settings, name
        self.receiver = receiver or Receiver(settings, handler, clock)
        self._sock: socket.socket | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def address(self) -> tuple[str, int]:
        """The bound (address, port); the port is the real one when listen
        asked for 0."""
        if self._sock is None:
            raise RuntimeError(f"{self.name}: the server is not started")
        return self._sock.getsockname()[:2]

    @property
    def stats(self) -> Counter[str]:
        return self.receiver.stats

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name}: the server is already started")
        host, port = self.settings.listen
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6 and ipaddress.ip_address(host).is_unspecified:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((host, port))
        except OSError as e:
            sock.close()
            if e.errno == errno.EADDRINUSE:
                raise ValueError(f"{self.name}: listen {host}:{port}: the port is in use") from None
            if e.errno == errno.EACCES:
                raise ValueError(f"{self.name}: listen {host}:{port}: ports below 1024 need root "
                                 f"or CAP_NET_BIND_SERVICE") from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise ValueError(f"{self.name}: listen {host}:{port}: no such local address") from None
            raise ValueError(f"{self.name}: listen {host}:{port}: {e.strerror}") from None
        self._sock = sock
        self._wake = socket.socketpair()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"acctd-{self.name}", daemon=True)
        self._thread.start()
        log.info("%s: listening on %s:%d for %s", self.name, *self.address[:2],
                 ", ".join(str(c.network) for c in self.settings.clients))

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping = True
        assert self._wake is not None and self._sock is not None
        self._wake[1].send(b"x")
        self._thread.join(10)
        self._thread = None
        for s in (self._sock, *self._wake):
            s.close()
        self._sock, self._wake = None, None

    def __enter__(self) -> "CoaServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        assert self._sock is not None and self._wake is not None
        sock, wake = self._sock, self._wake[0]
        while not self._stopping:
            ready, _, _ = select.select([sock, wake], [], [])
            if wake in ready:
                break
            try:
                data, addr = sock.recvfrom(radius.MAX_PACKET + 1)
            except OSError as e:   # an ICMP error for an earlier reply, say
                log.debug("%s: recvfrom: %s", self.name, e)
                continue
            try:
                out = self.receiver.handle(data, addr)
                if out.reply is not None:
                    sock.sendto(out.reply, addr)
            except Exception:  # noqa: BLE001 - one bad datagram must not stop the server
                log.exception("%s: datagram from %s:%d", self.name, addr[0], addr[1])


# --- the service ------------------------------------------------------------------------

class UdpService(Service):
    """A service that serves a UDP server made from its settings (make_server),
    while it has settings; its status is the server's per-reason counts."""

    reload_under_lock = False  # its server's thread waits for the core's lock
    server: CoaServer | None = None

    def make_server(self) -> CoaServer:
        raise NotImplementedError

    def serve(self) -> None:
        if self.settings is not None:
            self.server = self.make_server()
            self.server.start()

    def reload(self, settings) -> None:
        self.restart(settings)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def status(self) -> dict | None:
        return {self.name: dict(self.server.stats)} if self.server is not None else None


class CoaService(UdpService):
    """The [coa] receiver in the daemon. A Disconnect-Request ends the named
    unit's session and blocks it (sys-deny, as an admin's; `acctctl unit
    NAME sys-allow` lifts it); a CoA with a rate replaces the unit's bw,
    kept in the database over restarts."""

    name = "coa"

    def __init__(self, core: Core, settings: CoaSettings | None):
        super().__init__(core, settings)
        self.rates: dict[str, list] = {}    # unit oid -> [in, out] bit/s set by RADIUS CoA

    @staticmethod
    def settings_of(config):
        return config.coa

    def start(self) -> None:
        self.rates = json.loads(self.core.storage.meta("coa_rates") or "{}")

    def make_server(self) -> CoaServer:
        return CoaServer(self.settings, self)  # calls self.disconnect / self.coa

    def rate_limits(self) -> dict[str, tuple]:
        return {oid: tuple(r) for oid, r in self.rates.items()}

    def _units(self, ident: dict) -> list[int]:
        """The units a Disconnect/CoA names: by Acct-Session-Id (ours),
        User-Name, or the address a unit holds now."""
        from acctd.aaa.radius_accounting import RadiusService
        from acctd.model.addresses import parse_addr
        snap = self.core.snapshot
        found = set()
        sid = ident.get("Acct-Session-Id")
        if sid:
            oid = self.core.service(RadiusService).session_ids().get(str(sid))
            if oid is None:
                return []
            found.add(snap.units.by_oid[oid])
        name = ident.get("User-Name")
        if name:
            try:
                i = snap.find(str(name))
            except KeyError:
                return []
            found = found & {i} if sid else {i}
        for key in ("Framed-IP-Address", "Framed-IPv6-Address"):
            if ident.get(key) is not None:
                a = parse_addr(str(ident[key]))
                i = int(snap.units.match(np.frombuffer(a, np.uint8)[None])[0])
                if i < 0 or (found and i not in found):
                    return []
                found = {i}
        return sorted(found)

    def disconnect(self, ident: dict) -> bool:
        """RFC 5176 Disconnect-Request: end the session and block the unit."""
        from acctd.services.sessions import SessionsService
        units = self._units(ident)
        sessions = self.core.service(SessionsService)
        for i in units:
            u = self.core.snapshot.units.units[i]
            if u.oid in sessions.open:
                sessions.changes([{"user": u.name, "addr": None, "cause": "admin-reset"}],
                                 "radius")
            self.core.set_sys_policy(u.name, "sys-deny")
            log.info("RADIUS Disconnect: %s ended and blocked", u.name)
        return bool(units)

    def coa(self, ident: dict, rate_in: int | None, rate_out: int | None) -> bool:
        """RFC 5176 CoA with a rate: the unit's rate limit changes (0 lifts
        it, None keeps that direction)."""
        units = self._units(ident)
        with self.core.lock:
            for i in units:
                u = self.core.snapshot.units.units[i]
                cur = self.rates.get(u.oid) or list(u.bw or (None, None))
                for d, r in enumerate((rate_in, rate_out)):
                    if r is not None:
                        cur[d] = r or None
                self.rates[u.oid] = cur
                log.info("RADIUS CoA: %s rate in %s out %s", u.name, cur[0], cur[1])
            if units:
                self.core.storage.set_meta("coa_rates", json.dumps(self.rates))
                self.core.enforce()
        return bool(units)
