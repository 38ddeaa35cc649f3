"""RADIUS accounting client (NeTAMS `storage radius`, Freeside's radacct):
Start, Interim-Update and Stop records for sessions (and static units),
spooled on disk and delivered to a server list with retransmission and
failover.

Records. A record is built whole when it is enqueued: its attributes,
Event-Timestamp (when the event happened) and Acct-Session-Id never change
afterwards. Only Acct-Delay-Time (seconds since the event, RFC 2866 §5.2)
is filled in at each transmission, and with it the Identifier and both
authenticators (RFC 5080 §2.2.1: a changed packet is a new packet). What a
server keys on, (Acct-Session-Id, Acct-Status-Type, Event-Timestamp,
counters), is therefore the same however often and however late a record
is sent; FreeRADIUS's SQL accounting updates one radacct row per
Acct-Unique-Session-Id, so a resent record changes nothing.

Counters. acctd counts from the subscriber's side ("in" = towards the
subscriber); RADIUS counts from the NAS port's side (RFC 2866 §5.3:
Input = received from the port, i.e. sent by the subscriber). So
Acct-Input-Octets/Packets carry bytes_out/packets_out and
Acct-Output-* carry bytes_in/packets_in. 64-bit octet counts go as
Octets (low 32 bits) + Gigawords (high 32 bits, RFC 2869 §5.1); packet
counts have no Gigawords and wrap at 2**32 as on any NAS. Start records
carry no counters or Acct-Session-Time (RFC 2866 allows them in Stop
only, RFC 2869 adds Interim-Update).

Delivery. The spool is a directory with one JSON file per record, written
to a temporary name, fsynced and renamed (then the directory fsynced), so
a record exists whole or not at all after SIGKILL or power loss; one client
owns a spool (flock). A record's file is removed (and the removal fsynced)
only after a verified Accounting-Response. Records of one session go
strictly in order, one in flight at a time, so a late Interim can never
overwrite a Stop's counters; different sessions go in parallel (up to
WINDOW in flight). A server may still see a record twice: when a reply is
lost or slower than the timeout, or when acctd dies between a reply and
the unlink. It is then the same record (same Event-Timestamp, counters
and session), and the radacct row stays as it was: exactly once as far as
the server's accounting can tell. Nothing is dropped: a record stays in
the spool until a server answers it.

Retransmission and failover. Each record is resent after `timeout`, then
twice that, and so on (RFC 5080 §2.2.1 backoff, at most 8 x timeout), up
to `retries` times. A server that answers none of what it was sent is
skipped for 1, 2, 4 ... 60 s and the next one in `servers` takes over; a
record a live server ignores (its SQL failed, say) backs off the same way
on its own.

Cost. Spooling waits on the disk: on ext4 about 1.5 ms a record, 0.5 ms
in a batch (interims()); delivery about 1 ms a record.

Interim interval. `interim-interval` seconds, per session from its Start
(or its last Interim). A per-session interval can be set by the caller
(set_interim_interval): that is where an Acct-Interim-Interval from the
server goes, once something reads it (acctd sends no Access-Request, so
reading it from an Access-Accept is not done here). Intervals below 60 s
are raised to 60 (RFC 2869 §5.16). Last-Interim times live in memory: after
a restart a session older than its interval is due at once.

Security. Every request carries a Message-Authenticator (RFC 3579; first
attribute), so a server that requires it (the BlastRADIUS hardening)
accepts them. Replies must pass the Response Authenticator check and,
where present, their Message-Authenticator. The shared secret comes from
a file that must not be readable by group or others.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import heapq
import ipaddress
import json
import logging
import os
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from acctd.aaa import radius
from acctd.common import durable
from acctd.config.schema import (Invalid, Table, boolean, integer, ip_address, number,
                                 secret_file, setting)
from acctd.model.sessions import Session
from acctd.services.contract import Core, Drain, Service

log = logging.getLogger("acctd.radius")

DEFAULT_PORT = 1813
WINDOW = 32                 # records in flight at once (one per session)
BACKOFF_BASE = 1.0          # a dead server / an unanswered record: retry after 1 s,
BACKOFF_CAP = 60.0          # then 2, 4, ... at most a minute
MIN_INTERIM = 60            # RFC 2869 §5.16
MAX_WAIT_FACTOR = 8         # retransmission waits double up to 8 x timeout

STATUS_NAMES = ("Start", "Interim-Update", "Stop")

# acctd's words for why a session ended (acctd.model.sessions.CAUSES) as RFC 2866
# Acct-Terminate-Cause values.
TERMINATE_CAUSES = {
    "user-request": "User-Request",
    "admin-reset": "Admin-Reset",
    "idle-timeout": "Idle-Timeout",
    "session-timeout": "Session-Timeout",
    "lost-carrier": "Lost-Carrier",
    "address-moved": "Port-Preempted",     # another session took the address
    "rebound": "NAS-Request",              # acctd moved the user to a new address
    "expired": "Session-Timeout",
    "file-removed": "NAS-Request",         # the dynamicip file said so
    "config-changed": "Admin-Reset",
}


def backoff(failures: int) -> float:
    """Wait after the n-th consecutive failure: 1, 2, 4 ... 60 s."""
    return durable.backoff(failures, BACKOFF_BASE, BACKOFF_CAP)


def terminate_cause(cause: str | int | None) -> int:
    """An acctd cause word, an RFC value name or number -> its number.
    No cause is User-Request, as a session stopped without one is."""
    if cause is None or cause == "":
        return radius.VALUES["Acct-Terminate-Cause"]["User-Request"]
    if isinstance(cause, int):
        return cause
    name = TERMINATE_CAUSES.get(cause, cause)
    try:
        return radius.value_number("Acct-Terminate-Cause", name)
    except ValueError:
        raise ValueError(f"unknown session stop cause {cause!r}; expected one of "
                         f"{', '.join(TERMINATE_CAUSES)} or an Acct-Terminate-Cause name"
                         ) from None


# --- settings --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Server:
    host: str
    port: int = DEFAULT_PORT

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> "Server":
        """host, host:port, IPv6, [IPv6]:port."""
        t = str(text).strip()
        bad = f"server {text!r}: expected host, host:port, IPv6 or [IPv6]:port"
        host, port = t, str(DEFAULT_PORT)
        if t.startswith("["):
            host, sep, rest = t[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise ValueError(bad)
            port = rest[1:] or port
        elif t.count(":") == 1:
            host, port = t.split(":")
        if ":" in host:
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(bad) from None
        elif not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", host):
            raise ValueError(bad)
        n = int(port) if port.isdigit() else -1
        if not 0 < n < 65536:
            raise ValueError(f"server {text!r}: port must be 1-65535")
        return cls(host, n)


def _servers(v, ctx) -> tuple[Server, ...]:
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise Invalid(f"expected a list of \"host:port\" strings, got {v!r}")
    if not items:
        raise Invalid("expected at least one server")
    return tuple(Server.parse(x) for x in items)


def _nas_identifier(v, ctx) -> str:
    if not isinstance(v, str):
        raise Invalid(f"expected a string, got {v!r}")
    if len(v.encode()) > radius.MAX_VALUE:
        raise Invalid(f"longer than {radius.MAX_VALUE} octets")
    return v


def _interim(v, ctx) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not (v == 0 or v >= MIN_INTERIM):
        raise Invalid(f"expected 0 (off) or at least {MIN_INTERIM} seconds, got {v!r}")
    return v


@dataclasses.dataclass(frozen=True)
class RadiusSettings(Table):
    """The [radius] table. The secret is read from secret_file (see
    read_secret), never written in the config."""
    servers: tuple[Server, ...] = setting(check=_servers)      # tried in order
    secret_file: str = setting(check=secret_file())
    nas_ip: str = setting("", check=ip_address(empty=True))             # NAS-IP(v6)-Address
    nas_identifier: str = setting("", check=_nas_identifier)  # NAS-Identifier
    interim_interval: int = setting(300, check=_interim)      # seconds; 0: no Interim-Updates
    # first retransmission after this, then doubling
    timeout: float = setting(3.0, check=number(0, 60, "seconds", open_lo=True))
    # retransmissions per server before failing over
    retries: int = setting(2, check=integer(0, 7, "retransmissions"))
    static_units: bool = setting(False, check=boolean())      # also account static units

    def finish(self, ctx) -> "RadiusSettings":
        if not (self.nas_ip or self.nas_identifier):
            raise Invalid("set nas-ip or nas-identifier (RFC 2865 needs one of "
                          "NAS-IP-Address and NAS-Identifier in every request)", "nas-ip")
        return self

    def read_secret(self) -> bytes:
        """The shared secret (acctd.common.secret_files: owner-only file, line ending dropped)."""
        from acctd.common.secret_files import read_private
        return read_private(self.secret_file, "secret-file")


# --- records ---------------------------------------------------------------------------

def _epoch(t: dt.datetime | float | int) -> float:
    """Seconds since 1970; a naive datetime is UTC (as DuckDB returns it)."""
    if isinstance(t, dt.datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.timezone.utc)
        return t.timestamp()
    return float(t)


def acct_session_id(session: Session) -> str:
    """Acct-Session-Id: the session id and start time, 16 hex digits (the
    start makes it unique even if acctd's database is recreated); a static
    unit's "session" is U + its oid + the start."""
    start = int(_epoch(session.start)) & 0xFFFFFFFF
    if session.source == "static":
        return f"U{session.unit_oid.upper()}{start:08X}"
    return f"{session.id:08X}{start:08X}"


def static_session(unit_oid: str, addr: str, since: dt.datetime) -> Session:
    """A static unit's accounting period as a Session (source "static"), for
    units accounted with static-units = true: the caller keeps its counts
    and stops it like any session."""
    return Session(0, unit_oid, addr, "static", since)


def address_attributes(addr: str) -> list[tuple[str, Any]]:
    """Framed-* attributes for a session address: an IPv4 address (with a
    Framed-IP-Netmask for a network), an IPv6 address (RFC 6911
    Framed-IPv6-Address) or an IPv6 prefix (RFC 3162 Framed-IPv6-Prefix)."""
    if not addr:
        return []
    try:
        iface = ipaddress.ip_interface(addr)
    except ValueError:
        raise ValueError(f"session address {addr!r} is not an IP address or prefix") from None
    net = iface.network
    if iface.version == 4:
        out: list[tuple[str, Any]] = [("Framed-IP-Address", str(iface.ip))]
        if net.prefixlen < 32:
            out.append(("Framed-IP-Netmask", str(net.netmask)))
        return out
    if net.prefixlen == 128:
        return [("Framed-IPv6-Address", str(iface.ip))]
    return [("Framed-IPv6-Prefix", str(net))]


def _mac(mac: str) -> str:
    """RFC 3580 §3.21 Calling-Station-Id form: 00-10-A4-23-19-C0."""
    digits = "".join(c for c in mac if c.isalnum())
    if len(digits) == 12:
        try:
            int(digits, 16)
            return "-".join(digits[i:i + 2] for i in range(0, 12, 2)).upper()
        except ValueError:
            pass
    return mac


@dataclasses.dataclass
class Record:
    """One accounting request as spooled: everything but Acct-Delay-Time."""
    id: str                      # the spool file's name without .json; orders records
    status: str                  # Start | Interim-Update | Stop
    session: str                 # Acct-Session-Id
    event: float                 # when it happened (seconds since 1970); Acct-Delay-Time base
    attrs: list[tuple[str, Any]]

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "status": self.status, "session": self.session,
                           "event": self.event, "attrs": [list(a) for a in self.attrs]},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "Record":
        d = json.loads(text)
        r = cls(d["id"], d["status"], d["session"], float(d["event"]),
                [(str(k), v) for k, v in d["attrs"]])
        if r.status not in STATUS_NAMES:
            raise ValueError(f"unknown status {r.status!r}")
        radius.encode_attributes(r.attrs)  # every attribute still encodes
        return r

    def delay(self, now: float) -> int:
        return max(0, int(now - self.event))

    def packet_attrs(self, now: float) -> list[tuple[str, Any]]:
        return self.attrs + [("Acct-Delay-Time", self.delay(now))]

    def key(self) -> tuple:
        """What a server can tell records apart by: the same after any
        number of retransmissions and restarts."""
        return (self.session, self.status, tuple((k, v) for k, v in self.attrs))


def build_record(settings: RadiusSettings, status: str, session: Session, user: str,
                 event: float, cause: str | int | None = None) -> list[tuple[str, Any]]:
    """The attributes of one record (without Acct-Delay-Time)."""
    if status not in STATUS_NAMES:
        raise ValueError(f"status must be one of {', '.join(STATUS_NAMES)}, got {status!r}")
    if not user:
        raise ValueError(f"session {session.id}: no user name for its RADIUS records")
    a: list[tuple[str, Any]] = [
        ("Acct-Status-Type", status),
        ("Acct-Session-Id", acct_session_id(session)),
        ("User-Name", user),
    ]
    if settings.nas_ip:
        v6 = ipaddress.ip_address(settings.nas_ip).version == 6
        a.append(("NAS-IPv6-Address" if v6 else "NAS-IP-Address", settings.nas_ip))
    if settings.nas_identifier:
        a.append(("NAS-Identifier", settings.nas_identifier))
    if session.port:
        a.append(("NAS-Port-Id", str(session.port)))
    if session.mac:
        a.append(("Calling-Station-Id", _mac(session.mac)))
    a += address_attributes(session.addr)
    a.append(("Event-Timestamp", int(event)))
    if status != "Start":
        # the NAS port's view: Input is what the subscriber sent (acctd's "out")
        for direction, octets, packets in (("Input", session.bytes_out, session.packets_out),
                                           ("Output", session.bytes_in, session.packets_in)):
            giga, low = radius.split64(int(octets))
            a += [(f"Acct-{direction}-Octets", low), (f"Acct-{direction}-Gigawords", giga),
                  (f"Acct-{direction}-Packets", int(packets) & 0xFFFFFFFF)]
        a.append(("Acct-Session-Time", max(0, int(event - _epoch(session.start)))))
    if status == "Stop":
        a.append(("Acct-Terminate-Cause", terminate_cause(cause)))
    radius.encode_attributes(a)  # fail now, not at every retransmission
    return a


# --- the spool -------------------------------------------------------------------------

class Spool:
    """One JSON file per record, named by a sequence number that orders
    them, in a durable directory (acctd.common.durable). One process owns a
    spool: a second client on it would send records twice."""

    def __init__(self, path: str | os.PathLike):
        self.dir = durable.Directory(path, exclusive="RADIUS spool")
        self.path = self.dir.path
        self._seq = 0

    def close(self) -> None:
        self.dir.close()

    def next_id(self) -> str:
        """Sequence numbers grow across restarts (at least the wall clock in
        ns, and past every record still spooled)."""
        self._seq = max(self._seq + 1, time.time_ns())
        return f"{self._seq:020d}"

    def load(self) -> list[Record]:
        out = []
        for p in self.dir.files("*.json"):
            try:
                r = Record.from_json(p.read_text())
                if r.id != p.stem:
                    raise ValueError(f"id {r.id} does not match the file name")
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.error("RADIUS spool file %s is unreadable (%s); renamed to .bad", p, e)
                p.rename(p.with_suffix(".bad"))
                continue
            out.append(r)
            self._seq = max(self._seq, int(r.id))
        return out

    def write(self, r: Record) -> None:
        self.write_many([r])

    def write_many(self, records: Sequence[Record]) -> None:
        """All of `records`, durable when this returns (one syncfs a batch)."""
        self.dir.write_many((f"{r.id}.json", r.to_json()) for r in records)

    def remove(self, rid: str) -> None:
        self.dir.remove(f"{rid}.json")


# --- the client ------------------------------------------------------------------------

@dataclasses.dataclass
class _ServerState:
    server: Server
    failures: int = 0
    dead_until: float = 0.0     # monotonic


@dataclasses.dataclass
class _Tx:
    record: Record
    tries: int = 0
    deadline: float = 0.0
    delay: int = -1
    request: bytes = b""
    idents: list[int] = dataclasses.field(default_factory=list)


class _Queue:
    """Pending records by session. Each session's records wait in order
    behind its head; a head is ready, in flight (taken), or backing off.
    Every operation is O(1) or O(log n) whatever the backlog."""

    def __init__(self, records: Iterable[Record] = ()):
        self.records: dict[str, Record] = {}          # id -> record, in id order
        self.sessions: dict[str, collections.deque[Record]] = {}
        self.ready: dict[str, None] = {}              # sessions whose head can go (FIFO)
        self.waiting: list[tuple[float, str]] = []    # heap: (monotonic time, session)
        self.rounds: dict[str, int] = {}              # record id -> unanswered rounds
        for r in records:
            self.add(r)

    def __len__(self) -> int:
        return len(self.records)

    def of(self, session: str) -> Iterable[Record]:
        return self.sessions.get(session, ())

    def add(self, r: Record) -> None:
        self.records[r.id] = r
        q = self.sessions.setdefault(r.session, collections.deque())
        q.append(r)
        if len(q) == 1:
            self.ready[r.session] = None

    def _wake(self, mono: float) -> None:
        while self.waiting and self.waiting[0][0] <= mono:
            _, sid = heapq.heappop(self.waiting)
            if sid in self.sessions:
                self.ready[sid] = None

    def any_ready(self, mono: float) -> bool:
        self._wake(mono)
        return bool(self.ready)

    def take(self, mono: float, limit: int) -> list[Record]:
        """Up to `limit` session heads, now in flight."""
        self._wake(mono)
        out = []
        while self.ready and len(out) < limit:
            sid = next(iter(self.ready))
            del self.ready[sid]
            out.append(self.sessions[sid][0])
        return out

    def done(self, r: Record) -> None:
        """An answered head: its session's next record is ready."""
        q = self.sessions[r.session]
        assert q[0] is r, "only a session's head is ever sent"
        q.popleft()
        del self.records[r.id]
        self.rounds.pop(r.id, None)
        if q:
            self.ready[r.session] = None
        else:
            del self.sessions[r.session]

    def release(self, r: Record) -> None:
        """A head back to ready, no penalty (its server died, or time ran out)."""
        self.ready[r.session] = None

    def defer(self, r: Record, mono: float) -> float:
        """A head a live server did not answer: back off; returns the wait."""
        n = self.rounds[r.id] = self.rounds.get(r.id, 0) + 1
        heapq.heappush(self.waiting, (mono + backoff(n), r.session))
        return backoff(n)

    def wait(self, mono: float) -> float | None:
        """Seconds until a head is ready; None if nothing is pending."""
        if not self.records:
            return None
        if self.ready:
            return 0.0
        return max(0.0, self.waiting[0][0] - mono) if self.waiting else 0.0


class RadiusAccounting:
    """Spools records and delivers them. start/interim/stop may be called
    from any thread; delivery runs in run_sender()'s thread, or
    synchronously through flush()."""

    def __init__(self, settings: RadiusSettings, spool: str | os.PathLike, *,
                 secret: bytes | None = None, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.secret = secret if secret is not None else settings.read_secret()
        self.clock = clock
        self.spool = Spool(spool)
        self._lock = threading.Lock()          # the queue
        self._wake = threading.Condition(self._lock)
        self._send_lock = threading.Lock()     # one delivery pass at a time
        self._q = _Queue(self.spool.load())
        self._servers = [_ServerState(s) for s in settings.servers]
        self._sockets: dict[int, socket.socket] = {}
        self._ident = int.from_bytes(os.urandom(1), "big")
        self._last_interim: dict[str, float] = {}
        self._interval: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.delivered = 0                     # records answered, this process
        if self._q:
            log.info("RADIUS spool %s: %d record(s) pending from before", self.spool.path,
                     len(self._q))

    # --- enqueueing ---------------------------------------------------------------------

    def _enqueue(self, status: str, session: Session, user: str, event: float,
                 cause: str | int | None = None) -> str:
        attrs = build_record(self.settings, status, session, user, event, cause)
        sid = acct_session_id(session)
        with self._lock:
            queued = list(self._q.of(sid))
            if status != "Stop" and any(r.status == "Stop" for r in queued):
                raise ValueError(f"session {sid} is stopped: no {status} after its Stop")
            if status != "Interim-Update":
                # a session has one Start and one Stop: asking again (say after a
                # restart) while it is still spooled adds nothing
                for r in queued:
                    if r.status == status:
                        return r.id
            r = Record(self.spool.next_id(), status, sid, event, attrs)
            self.spool.write(r)
            self._q.add(r)
            self._wake.notify_all()
        return r.id

    def start(self, session: Session, user: str) -> str:
        """Spool the session's Start (Event-Timestamp: its start). Returns
        the record id."""
        event = _epoch(session.start)
        rid = self._enqueue("Start", session, user, event)
        self._last_interim.setdefault(acct_session_id(session), event)
        return rid

    def interim(self, session: Session, user: str,
                now: dt.datetime | float | None = None) -> str:
        """Spool an Interim-Update with the session's counts as they are now."""
        return self.interims([(session, user)], now)[0]

    def interims(self, batch: Iterable[tuple[Session, str]],
                 now: dt.datetime | float | None = None) -> list[str]:
        """Interim-Updates for many sessions at once (what due_interims
        found), written to the spool as one batch: all or none. Spooling
        waits on the disk (see Spool.write_many): call it off the event loop
        when the batch is large. Returns the record ids."""
        event = self.clock() if now is None else _epoch(now)
        items = []
        for session, user in batch:
            if session.stop is not None:
                raise ValueError(f"session {session.id} has stopped: send its Stop, "
                                 f"not an Interim")
            items.append((acct_session_id(session),
                          build_record(self.settings, "Interim-Update", session, user, event)))
        if not items:
            return []
        if len({sid for sid, _ in items}) != len(items):
            raise ValueError("a batch of Interim-Updates names a session twice")
        with self._lock:
            for sid, _ in items:
                if any(r.status == "Stop" for r in self._q.of(sid)):
                    raise ValueError(f"session {sid} is stopped: no Interim-Update after "
                                     f"its Stop")
            records = [Record(self.spool.next_id(), "Interim-Update", sid, event, attrs)
                       for sid, attrs in items]
            self.spool.write_many(records)
            for r in records:
                self._q.add(r)
            self._wake.notify_all()
        for sid, _ in items:
            self._last_interim[sid] = event
        return [r.id for r in records]

    def stop(self, session: Session, user: str, cause: str | int | None = None,
             now: dt.datetime | float | None = None) -> str:
        """Spool the session's Stop with its final counts. The event time is
        session.stop (else `now`, else the clock); the cause, if not given,
        is session.stop_cause (acctd words or RFC names, see TERMINATE_CAUSES)."""
        if session.stop is not None:
            event = _epoch(session.stop)
        else:
            event = self.clock() if now is None else _epoch(now)
        rid = self._enqueue("Stop", session, user, event,
                            session.stop_cause if cause is None else cause)
        sid = acct_session_id(session)
        self._last_interim.pop(sid, None)
        self._interval.pop(sid, None)
        return rid

    def set_interim_interval(self, session: Session, seconds: int | None) -> None:
        """A per-session interval (as a server's Acct-Interim-Interval gives
        it); it wins over interim-interval. None goes back to the setting.
        Below 60 s it is raised to 60 (RFC 2869 §5.16)."""
        sid = acct_session_id(session)
        if seconds is None:
            self._interval.pop(sid, None)
            return
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
            raise ValueError(f"an interim interval is a positive number of seconds, "
                             f"got {seconds!r}")
        if seconds < MIN_INTERIM:
            log.warning("interim interval %d s for session %s raised to %d s", seconds, sid,
                        MIN_INTERIM)
        self._interval[sid] = max(MIN_INTERIM, seconds)

    def interim_interval(self, session: Session) -> int:
        return self._interval.get(acct_session_id(session), self.settings.interim_interval)

    def due_interims(self, now: dt.datetime | float, sessions: Iterable[Session]) -> list[Session]:
        """The open sessions whose next Interim-Update is due at `now`: their
        interval has passed since their last Interim (or their Start)."""
        t = _epoch(now)
        out = []
        for s in sessions:
            if s.stop is not None:
                continue
            iv = self.interim_interval(s)
            if iv <= 0:
                continue
            last = self._last_interim.get(acct_session_id(s), _epoch(s.start))
            if t - last >= iv:
                out.append(s)
        return out

    def pending(self) -> list[Record]:
        """Records not yet answered, oldest first."""
        with self._lock:
            return list(self._q.records.values())

    # --- delivery -----------------------------------------------------------------------

    def _pick_server(self, mono: float) -> _ServerState | None:
        for st in self._servers:
            if st.dead_until <= mono:
                return st
        return None

    def _socket(self, family: int) -> socket.socket:
        s = self._sockets.get(family)
        if s is None:
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
            s.setblocking(False)
            self._sockets[family] = s
        return s

    def _new_ident(self, taken: Mapping[int, Any]) -> int:
        for _ in range(256):
            self._ident = (self._ident + 1) & 0xFF
            if self._ident not in taken:
                return self._ident
        raise RuntimeError("no free RADIUS Identifier")  # WINDOW x tries < 256 prevents it

    def _exchange(self, server: Server, addr: tuple, deadline: float
                  ) -> tuple[int, list[Record]]:
        """Send session heads to one server, retransmitting until each is
        answered or out of tries; as a head is answered its session's next
        record goes out (a window of WINDOW sessions). Answered records
        leave the spool at once. Returns (answered count, heads the server
        did not answer: still taken, for the caller to defer or release).
        At `deadline` (monotonic) what is in flight is released unpunished."""
        sock = self._socket(socket.AF_INET6 if len(addr) == 4 else socket.AF_INET)
        by_ident: dict[int, tuple[_Tx, bytes]] = {}
        tries = self.settings.retries + 1
        open_: dict[str, _Tx] = {}
        failed: list[Record] = []
        answered = 0

        def send(tx: _Tx) -> None:
            now = self.clock()
            delay = tx.record.delay(now)
            if delay != tx.delay:
                # RFC 5080 §2.2.1: a changed Acct-Delay-Time makes a new packet:
                # new Identifier, new authenticators. Unchanged: a true resend.
                ident = self._new_ident(by_ident)
                tx.request = radius.accounting_request(ident, tx.record.packet_attrs(now),
                                                       self.secret)
                tx.delay = delay
                tx.idents.append(ident)
                by_ident[ident] = (tx, tx.request)
            try:
                sock.sendto(tx.request, addr)
            except OSError as e:
                log.debug("RADIUS send to %s: %s", server, e)
            tx.tries += 1
            wait = self.settings.timeout * min(MAX_WAIT_FACTOR, 2 ** (tx.tries - 1))
            tx.deadline = time.monotonic() + wait

        def close(tx: _Tx) -> None:
            del open_[tx.record.id]
            for i in tx.idents:
                by_ident.pop(i, None)

        def answer(data: bytes) -> None:
            nonlocal answered
            hit = by_ident.get(data[1])
            if hit is None:
                return   # a late reply for a record already done
            tx, request = hit
            try:
                p = radius.verify_response(data, request, self.secret)
            except radius.PacketError as e:
                log.warning("RADIUS server %s: reply discarded: %s", server, e)
                return
            if p.code != radius.ACCOUNTING_RESPONSE:
                log.warning("RADIUS server %s: reply code %d to an Accounting-Request "
                            "discarded", server, p.code)
                return
            self._done(tx.record)   # if this fails, the record is still open: released
            close(tx)
            answered += 1

        try:
            while not self._stop.is_set():
                mono = time.monotonic()
                if mono >= deadline:
                    break
                if len(open_) < WINDOW:
                    with self._lock:
                        fresh = self._q.take(mono, WINDOW - len(open_))
                    for r in fresh:
                        open_[r.id] = tx = _Tx(r)
                        send(tx)
                if not open_:
                    break
                for tx in list(open_.values()):
                    if tx.deadline <= mono:
                        if tx.tries < tries:
                            send(tx)
                        else:   # its session waits until this exchange is over
                            failed.append(tx.record)
                            close(tx)
                if not open_:
                    continue   # maybe more to send, from sessions not held up
                wait = min(min(tx.deadline for tx in open_.values()), deadline) - time.monotonic()
                if not select.select([sock], [], [], min(max(0.0, wait), 0.5))[0]:
                    continue
                while True:
                    try:
                        data, src = sock.recvfrom(4096)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as e:
                        log.debug("RADIUS receive from %s: %s", server, e)
                        break
                    if src[:2] == addr[:2] and len(data) >= radius.HEADER_LEN:
                        answer(data)
        except BaseException:
            with self._lock:
                for r in failed:
                    self._q.release(r)
            raise
        finally:
            with self._lock:
                for tx in open_.values():
                    self._q.release(tx.record)
        return answered, failed

    def _done(self, r: Record) -> None:
        self.spool.remove(r.id)
        with self._lock:
            self._q.done(r)
            self._wake.notify_all()   # for flush()
        self.delivered += 1
        log.debug("RADIUS %s for session %s delivered", r.status, r.session)

    def _resolve(self, server: Server) -> tuple | None:
        try:
            return socket.getaddrinfo(server.host, server.port, type=socket.SOCK_DGRAM)[0][4]
        except (socket.gaierror, IndexError) as e:
            log.warning("RADIUS server %s: cannot resolve (%s)", server, e)
            return None

    def _server_failed(self, st: _ServerState, what: str) -> None:
        st.failures += 1
        st.dead_until = time.monotonic() + backoff(st.failures)
        log.warning("RADIUS server %s %s; %s", st.server, what,
                    "failing over" if len(self._servers) > 1 else
                    f"retrying in {backoff(st.failures):.0f} s")

    def deliver(self, timeout: float | None = None) -> float | None:
        """One delivery pass: send what can be sent now (for at most
        `timeout` seconds). Returns seconds until more could be tried
        (records backing off, or every server dead), or None when the spool
        is empty."""
        deadline = time.monotonic() + (1e9 if timeout is None else timeout)
        with self._send_lock:
            while not self._stop.is_set() and time.monotonic() < deadline:
                mono = time.monotonic()
                with self._lock:
                    if not self._q.any_ready(mono):
                        break
                st = self._pick_server(mono)
                if st is None:
                    break
                addr = self._resolve(st.server)
                if addr is None:
                    self._server_failed(st, "cannot be resolved")
                    continue
                answered, failed = self._exchange(st.server, addr, deadline)
                mono = time.monotonic()
                with self._lock:
                    if answered:
                        st.failures = 0
                        for r in failed:   # the server is alive but ignored these
                            wait = self._q.defer(r, mono)
                            log.warning("RADIUS server %s did not answer %s for session %s; "
                                        "retrying in %.0f s", st.server, r.status, r.session,
                                        wait)
                    else:
                        for r in failed:
                            self._q.release(r)
                if failed and not answered:
                    self._server_failed(st, f"answered none of {len(failed)} request(s)")
            mono = time.monotonic()
            with self._lock:
                record_wait = self._q.wait(mono)
            if record_wait is None:
                return None
            return max(record_wait, min(s.dead_until for s in self._servers) - mono)

    def flush(self, timeout: float) -> bool:
        """Wait until the spool is empty or `timeout` seconds pass; True if
        empty. Delivers itself unless the sender thread runs. For drivers,
        tests and shutdown."""
        deadline = time.monotonic() + timeout
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if self._thread is not None:
                with self._wake:
                    if not self._q:
                        return True
                    if left <= 0:
                        return False
                    self._wake.wait(left)
                continue
            wait = self.deliver(max(0.0, left))
            if wait is None:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(max(wait, 0.01), left))
        return not self._q

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.deliver()
            except Exception:   # keep delivering; the record stays spooled
                log.exception("RADIUS delivery pass failed")
                wait = BACKOFF_CAP
            with self._wake:
                if self._stop.is_set():
                    break
                # at least 10 ms: a pass that could not progress never spins
                self._wake.wait(timeout=None if wait is None else max(wait, 0.01))

    def run_sender(self) -> None:
        """Deliver in a background thread until close()."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="radius-acct", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop delivering (records stay spooled) and close the sockets."""
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for s in self._sockets.values():
            s.close()
        self._sockets.clear()
        self.spool.close()


# --- the service ------------------------------------------------------------------------

class RadiusService(Service):
    """RADIUS in the daemon: with [radius], every session's Start, its
    Interim-Updates when due (after each committed drain) and its Stop go
    through the spool (under the state directory); with static-units, host
    units get a session per daemon run. Without it, only `acctctl radius
    import` (FreeRADIUS sessions into the sessions table)."""

    name = "radius"

    def __init__(self, core: Core, settings: RadiusSettings | None):
        super().__init__(core, settings)
        self.client: RadiusAccounting | None = None
        self.static: dict[str, Session] = {}   # static units' sessions, by unit oid

    @staticmethod
    def settings_of(config):
        return config.radius

    def start(self) -> None:
        self._configure()

    def serve(self) -> None:
        if self.client is not None:
            self.client.run_sender()

    def reload(self, settings: RadiusSettings | None) -> None:
        if settings != self.settings:
            self.settings = settings
            self._configure()
            self.serve()

    def _configure(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        s = self.settings
        if s is None:
            return
        self.client = RadiusAccounting(s, os.path.join(self.core.state_dir, "radius-spool"))
        if s.static_units and not self.static:
            from acctd.model.addresses import format_addr
            now = self.core.clock()
            for u in self.core.snapshot.units:
                if u.type in ("host", "cluster") and u.addrs:
                    x = static_session(u.oid, format_addr(u.addrs[0]), now)
                    self.static[u.oid] = x
                    self.client.start(x, u.name)

    def session_started(self, session: Session, user: str) -> None:
        if self.client is not None:
            self.client.start(session, user)

    def session_stopping(self, session: Session, user: str, cause: str, now) -> None:
        if self.client is not None:
            self.client.stop(session, user, cause, now)

    def after_drain(self, drain: Drain) -> None:
        """Static units' counts, and the Interim-Updates now due (they see this drain)."""
        if self.client is None:
            return
        from acctd.services.sessions import SessionsService, add_counts, charges
        # charges are keyed by whatever names a session: here its unit's oid
        for oid, c in charges(drain.rows, {o: o for o in self.static}).items():
            add_counts(self.static[oid], c)
        live = list(self.core.service(SessionsService).open.values()) + list(self.static.values())
        due = self.client.due_interims(drain.now, live)
        if due:
            try:
                self.client.interims([(x, drain.snapshot.name_of(x.unit_oid)) for x in due],
                                     drain.now)
            except OSError as e:  # the counts are committed: RADIUS gets them later
                log.error("RADIUS interims not spooled: %s", e)

    def close(self) -> None:
        """A clean stop ends the static units' sessions (NAS-Reboot)."""
        if self.client is None:
            return
        now = self.core.clock()
        for x in self.static.values():
            self.client.stop(x, self.core.snapshot.name_of(x.unit_oid), "NAS-Reboot", now)
        self.client.flush(5.0)
        self.client.close()
        self.client = None

    def status(self) -> dict | None:
        return {"radius_pending": len(self.client.pending())} if self.client is not None else None

    def session_ids(self) -> dict[str, str]:
        """Acct-Session-Id -> unit oid of every session RADIUS knows (CoA names them)."""
        from acctd.services.sessions import SessionsService
        live = list(self.core.service(SessionsService).open.items()) + list(self.static.items())
        return {acct_session_id(x): oid for oid, x in live}

    # -- commands ---------------------------------------------------------------------

    def import_sessions(self, sessions: list[dict]) -> dict:
        """Closed sessions read by `acctctl radius import` (detail files or
        radacct), sent in chunks: address-to-user history and NAS usage."""
        from acctd.aaa import radius_import
        for x in sessions:
            for k in ("start", "stop"):
                if isinstance(x.get(k), str):
                    x[k] = dt.datetime.fromisoformat(x[k])

        def oid_of(user: str):
            try:
                return self.core.snapshot.unit(user).oid
            except KeyError:
                return None
        with self.core.lock:
            return radius_import.import_sessions(self.core.storage.con, sessions, oid_of)
