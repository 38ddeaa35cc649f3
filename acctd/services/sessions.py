"""Sessions (Freeside's session monitor): which user unit holds which address
now, with exact counts (acctd/model/sessions.py has the record). Its
settings are the [session] table: the commands run when a session starts
or stops, and the NAS ports a session started by port takes its address
from. Logins, dynamicip files, OpenVPN and RADIUS Disconnect change
sessions through SessionsService.changes()."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from acctd.config.schema import Invalid, Table, number, setting, strings
from acctd.errors import BadRequest, Conflict, NotFound
from acctd.kernel import abi
from acctd.model import sys_policy
from acctd.model.addresses import canonical, format_addr, parse_addr
from acctd.model.sessions import CAUSES, Session
from acctd.model.snapshot import Snapshot
from acctd.services.access_script import AccessScript
from acctd.services.contract import Core, Drain, Service
from acctd.store import rollup

log = logging.getLogger("acctd.daemon")


def _command(v, ctx) -> tuple[str, ...]:
    argv = strings("a command as a list, e.g. [\"/usr/local/bin/hook\", \"start\"]",
                   split=False)(v, ctx)
    from acctd.services.access_script import validate
    err = validate(argv[0]) if argv else None
    if err:
        raise Invalid(err.replace("access-script", "command"))
    return argv


def _ports(v, ctx) -> Mapping[str, bytes]:
    if not isinstance(v, Mapping):
        raise Invalid("expected a table of port = address, e.g. { \"nas1:7\" = \"10.0.0.7\" }")
    out = {}
    for port, addr in v.items():
        try:
            out[str(port)] = parse_addr(addr if isinstance(addr, str) else "")
        except ValueError:
            raise Invalid(f"port {port}: expected an address, got {addr!r}") from None
    return MappingProxyType(out)


@dataclasses.dataclass(frozen=True)
class SessionSettings(Table):
    """Freeside-style session commands: argv lists run with the session in
    environment variables (user, ip, nasip, nasfqdn, nasport, mac), and the
    NAS ports ("port" or "nas:port") whose address a session started by port
    takes."""
    start: tuple[str, ...] = setting((), check=_command)
    stop: tuple[str, ...] = setting((), check=_command)
    ports: Mapping[str, bytes] = setting(default_factory=lambda: MappingProxyType({}),
                                         check=_ports)
    hook_timeout: float = setting(10.0, check=number(0, what="seconds", open_lo=True))


# --- the drain's arithmetic (pure) ----------------------------------------------

def charges(rows: Mapping[str, np.ndarray], open_sessions: Mapping[str, int]
            ) -> dict[int, tuple[int, int, int, int]]:
    """One drain's counts for each open session: session id -> (packets in,
    packets out, bytes in, bytes out), from the drain's oid-keyed rows
    (acctd.store.interval.columns): the unit's all-traffic rows.
    open_sessions: unit oid (hex text) -> session id."""
    if not open_sessions:
        return {}
    units = np.asarray(rows["unit_oid"])
    pol = np.asarray(rows["policy_oid"])
    want = {int(oid, 16): sid for oid, sid in open_sessions.items()}
    out: dict[int, list[int]] = {}
    sel = np.flatnonzero((pol == rollup.ALL_TRAFFIC) & np.isin(units, list(want)))
    for i in sel:
        sid = want[int(units[i])]
        c = out.setdefault(sid, [0, 0, 0, 0])
        d = int(rows["dir"][i])
        c[d] += int(rows["packets"][i])
        c[2 + d] += int(rows["bytes"][i])
    return {sid: tuple(c) for sid, c in out.items()}


def add_counts(x: Session, c: tuple[int, int, int, int]) -> None:
    x.packets_in += c[0]
    x.packets_out += c[1]
    x.bytes_in += c[2]
    x.bytes_out += c[3]


def hook_env(user: str, addr: str, nas: str = "", port: str = "", mac: str = "") -> dict:
    """What a Freeside-style session-start/session-stop command receives, as
    environment variables (never interpolated into a shell string). The
    NAS's name is what it was given as; an address is not looked up, so a
    slow resolver never holds up a session."""
    import ipaddress
    try:
        ipaddress.ip_address(nas)
        nasfqdn = ""
    except ValueError:
        nasfqdn = nas
    return {"user": user, "ip": addr, "nasip": nas, "nasfqdn": nasfqdn, "nasport": port,
            "mac": mac}


# --- the service --------------------------------------------------------------------

class SessionsService(Service):
    """Who holds which address: open sessions (kept in DuckDB, they survive
    restarts), their counts, and the [session] commands. Every change of
    binding drains first, under the lock, so each byte goes to its holder."""

    name = "sessions"

    def __init__(self, core: Core, settings: SessionSettings):
        super().__init__(core, settings)
        self.open: dict[str, Session] = {}    # by user unit oid
        self.runners: dict[str, AccessScript] = {}   # [session] commands, by program
        self._charges: dict[int, tuple] = {}  # the drain in progress's, by session id

    @staticmethod
    def settings_of(config):
        return config.session

    def load(self) -> None:
        """Open sessions from the database (before the first snapshot)."""
        self.open = {x.unit_oid: x for x in self.core.storage.sessions(open_only=True)}

    def bindings(self, snap: Snapshot) -> dict[int, bytes]:
        """Each open session's address for its user unit, by index in `snap`;
        sessions whose unit is gone or is no user unit any more are stopped."""
        want = {}
        for oid, x in list(self.open.items()):
            i = snap.base.by_oid.get(oid)
            if i is None or snap.base.units[i].type != "user":
                self._stop(x, self.core.clock(), "config-changed", snap)
                continue
            want[i] = parse_addr(x.addr)
        return want

    def stop(self, oid: str, cause: str) -> None:
        """A unit's open session ends, if it has one; the caller drained
        before and makes the new snapshot after (unit del)."""
        x = self.open.get(oid)
        if x is not None:
            self._stop(x, self.core.clock(), cause)

    def stop_all(self, cause: str) -> None:
        for x in list(self.open.values()):
            self._stop(x, self.core.clock(), cause)

    def in_drain(self, drain: Drain, tx) -> None:
        """Each open session's share of the drain, in its transaction."""
        self._charges = charges(drain.rows, {o: x.id for o, x in self.open.items()})
        tx.charge_sessions(self._charges)

    def after_drain(self, drain: Drain) -> None:
        for x in self.open.values():  # committed: the in-memory counts follow
            c = self._charges.get(x.id)
            if c:
                add_counts(x, c)

    def close(self) -> None:
        for r in self.runners.values():
            r.close()

    def status(self) -> dict:
        return {"sessions_open": len(self.open)}

    # -- changes --------------------------------------------------------------------

    def changes(self, changes: list[dict], source: str, displace: bool = True) -> list[dict]:
        """Start and stop sessions as one batch: one drain first (what was
        counted so far belongs to the holders until now), then every change,
        one new snapshot and one enforcement update. A change is {"user",
        "addr"} to start (addr None: stop) plus optional mac, nas, port, cause.
        A start on an address another user holds ends that session
        (address-moved); with displace False it is refused instead, before
        anything changes. Returns the sessions started, stopped or left as
        they were, each with its user's name and what happened ("change")."""
        core = self.core
        with core.lock:
            snap = core.snapshot
            plan = []
            for c in changes:  # check everything before changing anything
                u = snap.unit(c["user"])
                if u.type != "user":
                    raise BadRequest(f"unit {u.name} is a {u.type}: only user units hold "
                                     "sessions")
                addr = c.get("addr")
                if addr is not None:
                    a = parse_addr(addr)
                    owner = snap.units.match(np.frombuffer(a, np.uint8)[None])[0]
                    if owner >= 0 and snap.units.units[owner].type != "user":
                        o = snap.units.units[owner]
                        raise Conflict(f"address {addr} belongs to {o.type} unit {o.name}")
                    addr = format_addr(a)
                    held = self.holder(addr)
                    if not displace and held is not None and held.unit_oid != u.oid:
                        raise Conflict(f"address {addr} is held by {snap.name_of(held.unit_oid)} "
                                       f"(session {held.id}); give --force to end that session")
                plan.append((u, addr, c))
            now = core.clock()
            core.drain_locked()
            done = []

            def report(x: Session, change: str) -> None:
                done.append(self._row(x, snap) | {"change": change})
            for u, addr, c in plan:
                old = self.open.get(u.oid)
                if addr is None:
                    if old is not None:
                        self._stop(old, now, c.get("cause") or "user-request")
                        report(old, "stopped")
                    continue
                if old is not None:
                    if old.addr == addr:
                        report(old, "unchanged")
                        continue
                    self._stop(old, now, "rebound")
                    report(old, "stopped")
                other = self.holder(addr)
                if other is not None:
                    self._stop(other, now, "address-moved")
                    report(other, "stopped")
                x = Session(0, u.oid, addr, source, now, mac=c.get("mac") or "",
                            nas=c.get("nas") or "", port=str(c.get("port") or ""))
                x.id = core.storage.start_session(x)
                self.open[u.oid] = x
                core.session_started(x, u.name)
                self._run_hook("start", x, u.name)
                log.info("session %d: %s at %s (%s)", x.id, u.name, addr, source)
                report(x, "started")
            core.rebuild()
            core.enforce()
            return done

    def holder(self, addr: str) -> Session | None:
        """The open session at an address (acctd.model.addresses text), if any."""
        return next((x for x in self.open.values() if x.addr == addr), None)

    def _row(self, x: Session, snap: Snapshot | None = None) -> dict:
        """A session as the commands show it: the record and its user's name."""
        return x.to_row() | {"user": (snap or self.core.snapshot).name_of(x.unit_oid)}

    def _stop(self, x: Session, now: dt.datetime, cause: str, snap: Snapshot | None = None
              ) -> None:
        known = snap is not None and x.unit_oid in snap.base.by_oid
        name = (snap if known else self.core.snapshot).name_of(x.unit_oid)
        x.stop, x.stop_cause = now, cause
        self.core.session_stopping(x, name, cause, now)  # RADIUS spools before the database moves on
        self.core.storage.stop_session(x.id, now, cause)
        self.open.pop(x.unit_oid, None)
        self._run_hook("stop", x, name)
        log.info("session %d of %s at %s stopped: %s", x.id, name, x.addr, cause)

    def _run_hook(self, which: str, x: Session, user: str) -> None:
        """The [session] start/stop command, on a worker thread per program
        (in order, never through a shell; see access_script)."""
        argv = getattr(self.settings, which)
        if not argv:
            return
        timeout = self.settings.hook_timeout
        r = self.runners.get(argv[0])
        if r is None or r.timeout != timeout:
            r = self.runners[argv[0]] = AccessScript(argv[0], timeout)
        r.call(argv[1:], hook_env(user, x.addr, x.nas, x.port, x.mac))

    # -- commands (Freeside's session monitor) --------------------------------------

    def start_session(self, user: str, ip: str | None = None, port: str | None = None,
                      nas: str | None = None, mac: str | None = None,
                      force: bool = False) -> dict:
        """`session start`: bind `user` to an address, given or found from its
        NAS port in [session] ports. An address another user holds is
        refused (Conflict) unless `force`: then that session ends."""
        addr = ip
        if addr is None:
            key = f"{nas}:{port}" if nas else str(port)
            found = self.settings.ports.get(key) if port is not None else None
            if found is None:
                raise BadRequest(f"session start {user}: give --ip, or a --port listed in "
                                 f"[session] ports (no entry {key!r})")
            addr = format_addr(found)
        if mac:
            from acctd.services.mac_control import normalize_mac
            mac = normalize_mac(mac)
        return {"sessions": self.changes([{"user": user, "addr": addr, "mac": mac, "nas": nas,
                                           "port": port}], "command", displace=force)}

    def stop_session(self, user: str | None = None, ip: str | None = None,
                     port: str | None = None, nas: str | None = None,
                     cause: str = "user-request") -> dict:
        """`session stop`: the open session of `user`, or at an address, a port
        or a NAS's port (freeside-logout username ( portnum | ip | nasnum
        nasport )); each one given must match it. NotFound when none does."""
        if cause not in CAUSES:
            raise BadRequest(f"cause: expected one of {', '.join(CAUSES)}, got {cause!r}")
        if user is None and ip is None and port is None:
            raise BadRequest("session stop: give a user, an ip or a port")
        with self.core.lock:  # held through the change: nobody starts one in between
            x = self._open_session(user, ip, port, nas)
            name = self.core.snapshot.name_of(x.unit_oid)
            return {"sessions": self.changes([{"user": name, "addr": None, "cause": cause}],
                                             "command")}

    def _open_session(self, user, ip, port, nas) -> Session:
        found = list(self.open.values())
        what = []
        if user is not None:
            u = self.core.snapshot.unit(user)
            found, what = [x for x in found if x.unit_oid == u.oid], [u.name]
        if ip is not None:
            try:
                addr = canonical(ip)
            except ValueError:
                raise BadRequest(f"session stop: not an address: {ip!r}") from None
            found, what = [x for x in found if x.addr == addr], what + [f"at {addr}"]
        if port is not None:
            key = f"{nas}:{port}" if nas else str(port)
            mapped = self.settings.ports.get(key)  # a [session] ports entry: its address
            found = [x for x in found if (x.port == str(port) and (nas is None or x.nas == nas))
                     or (mapped is not None and x.addr == format_addr(mapped))]
            what.append(f"on port {key}")
        if not found:
            raise NotFound(f"{' '.join(what)} has no open session" if user is not None
                           else f"no open session {' '.join(what)}")
        if len(found) > 1:
            raise BadRequest(f"{len(found)} open sessions {' '.join(what)}: give --nas too")
        return found[0]

    def list(self, open: bool = False, user: str | None = None, limit: int = 100) -> list[dict]:
        with self.core.lock:
            snap = self.core.snapshot
            oid = snap.unit(user).oid if user is not None else None
            return [self._row(x, snap) for x in self.core.storage.sessions(open, oid, limit)]

    def kill_expired(self) -> dict:
        """Freeside's periodic kill: end the sessions of users whose access
        is denied now (any block: money, login, quota, admin)."""
        with self.core.lock:
            snap = self.core.snapshot
            bits = self.core.sys_policy_bits()
            expired = [snap.name_of(oid) for oid in self.open
                       if sys_policy.verdict(bits.get(snap.units.by_oid[oid], 0))
                       == abi.Verdict.DROP]
        if not expired:
            return {"sessions": []}
        return {"sessions": self.changes(
            [{"user": n, "addr": None, "cause": "expired"} for n in expired], "command")}
