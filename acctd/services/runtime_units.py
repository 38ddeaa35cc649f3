"""Units made at run time (acctctl unit add, auto-units): kept in the
database and appended after the config's units, so the config's indexes
never move; a reload fits them to the new config again (the snapshot,
acctd/model/snapshot.py, puts them together). The pure part (de)serialises
them; UnitsService is the daemon's side.
"""

from __future__ import annotations

import json
import logging

from acctd.errors import BadRequest, Conflict
from acctd.model.addresses import format_addr, parse_addr
from acctd.model.snapshot import Snapshot
from acctd.model.units import ModelError, Unit
from acctd.services import auto_units
from acctd.services.contract import Core, Drain, Service
from acctd.services.sessions import SessionsService

log = logging.getLogger("acctd.daemon")

# The fields a run-time unit carries; the rest take their defaults.
_FIELDS = ("type", "name", "oid", "parents", "description", "email", "mac")


def to_dict(u: Unit) -> dict:
    d = {k: getattr(u, k) for k in _FIELDS}
    d["parents"] = list(u.parents)
    d["ip"] = [format_addr(a) for a in u.addrs]
    return d


def from_dict(d: dict) -> Unit:
    return Unit(type=d["type"], name=d["name"], oid=d.get("oid"),
                addrs=tuple(parse_addr(a) for a in d.get("ip", ())),
                parents=tuple(d.get("parents", ())), description=d.get("description", ""),
                email=d.get("email", ""), mac=d.get("mac", ""))


def check_new(units, u: Unit) -> None:
    """Refuse what a run-time unit may not be: only hosts and users, with
    at most one address (clusters, nets and groups belong in the config)."""
    if u.type not in ("host", "user"):
        raise BadRequest(f"units added at run time are hosts or users, not {u.type}s: "
                         "put it in the config")
    if u.name in units.index:
        raise Conflict(f"unit name {u.name!r} is already used")


# --- the service ----------------------------------------------------------------------

class UnitsService(Service):
    """Units made at run time: `acctctl unit add|del`, `ip auto` from the
    auto-assign pools, and the auto-units of nets. They are kept in the
    database and come after the config's units in every snapshot."""

    name = "units"

    def __init__(self, core: Core, settings=None):
        super().__init__(core, settings)
        self.runtime: list[Unit] = []

    def load(self) -> None:
        raw = self.core.storage.meta("runtime_units")
        self.runtime = [from_dict(d) for d in json.loads(raw)] if raw else []

    def fit(self, config) -> Snapshot:
        """A snapshot of `config` and the run-time units that fit it, oids
        assigned (without the sessions' addresses): a unit that no longer
        fits (its name or address taken there, its parent gone) is dropped
        with a warning."""
        extra = list(self.runtime)
        while True:
            try:
                snap = Snapshot.build(config, extra)
                break
            except ModelError as e:
                if not extra:
                    raise
                i = (e.index or 0) - len(config.units)
                bad = extra[i] if 0 <= i < len(extra) else extra[-1]
                log.warning("run-time unit %s dropped: %s", bad.name, e)
                extra = [u for u in extra if u is not bad]
        if list(snap.runtime) != self.runtime:
            self._keep(list(snap.runtime))
        return snap

    def _keep(self, units: list[Unit]) -> None:
        self.runtime = units
        self.core.storage.set_meta("runtime_units", json.dumps([to_dict(u) for u in units]))

    def add_units(self, new: list[Unit], drained: bool = False) -> list[Unit]:
        """Units made now (acctctl unit add, auto-units), under the lock: what
        was counted so far stays with the old model (drained first unless
        the caller just did), then the snapshot and the kernel follow.
        Returns the new units with their oids."""
        core = self.core
        with core.lock:
            config = core.config
            for u in new:
                check_new(core.snapshot.base, u)
            try:
                fitted = Snapshot.build(config, self.runtime + list(new))
            except ModelError as e:
                raise BadRequest(str(e)) from None
            if not drained:
                core.drain_locked()
            n = len(self.runtime)
            self._keep(list(fitted.runtime))
            core.rebuild(fitted)
            core.enforce()
            return list(fitted.runtime[n:])

    def _note_deleted(self, u: Unit) -> None:
        _note(self.core.storage, [*deleted(self.core.storage), {"name": u.name, "oid": u.oid}])

    def after_drain(self, drain: Drain) -> None:
        """auto-units: addresses counted for the first time inside a net with
        `auto-units N` become units by rule N. Their bytes so far stayed
        with the net (this drain is committed); from now on they are the new
        units'. Thousands at once cost one snapshot."""
        snap = drain.snapshot
        nets = {i: u.auto_units for i, u in enumerate(snap.units) if u.auto_units is not None}
        keys = drain.addr_keys
        if not nets or not len(keys):
            return
        rules = {r.number: r for r in snap.config.processor.auto_units}
        leaf = snap.units.match(keys["addr"])
        owned = auto_units.owned_addrs(snap.units)
        names = set(snap.base.index)
        new = []
        for i, number in nets.items():
            addrs = [bytes(a) for a in keys["addr"][leaf == i]]
            if addrs:
                made = auto_units.plan_new_units(rules[number], addrs, names, owned,
                                                 resolve=_reverse_dns(addrs, rules[number]))
                names |= {u.name for u in made}
                new += made
        if new:
            new = self.add_units(new, drained=True)
            log.info("auto-units: %d units made", len(new))

    # -- commands ---------------------------------------------------------------------

    def add(self, kind: str, name: str, ip: str | None = None, parents: list[str] = (),
            email: str = "") -> dict:
        """NeTAMS `unit host|user name X ip A|auto`: `auto` takes the next free
        address of the auto-assign pools, and the reply names it."""
        with self.core.lock:
            addrs = ()
            if ip == "auto":
                pools = auto_units.AutoAssign(self.core.config.processor.auto_assign)
                addrs = (pools.next_free(auto_units.owned_addrs(self.core.snapshot.units)),)
            elif ip:
                addrs = (parse_addr(ip),)
            if kind == "host" and not addrs:
                raise BadRequest("a host unit needs an address: ip A.B.C.D or ip auto")
            u, = self.add_units([Unit(kind, name, addrs=addrs, parents=tuple(parents),
                                      email=email)])
            log.info("unit %s %s added (oid %s, ip %s)", kind, name, u.oid,
                     format_addr(u.addrs[0]) if u.addrs else "-")
            return {"unit": u.name, "oid": u.oid, "type": u.type,
                    "ip": format_addr(u.addrs[0]) if u.addrs else None}

    def delete(self, name: str) -> dict:
        """Remove a unit made at run time (the config's units change by reload)."""
        core = self.core
        with core.lock:
            gone = next((u for u in self.runtime if u.name == name), None)
            if gone is None:
                raise BadRequest(f"{name!r} is not a unit added at run time; edit the config "
                                 "and reload instead")
            core.drain_locked()
            core.service(SessionsService).stop(gone.oid, "admin-reset")
            self._keep([u for u in self.runtime if u is not gone])
            self._note_deleted(gone)
            core.rebuild()
            core.enforce()
            return {"deleted": name, "oid": gone.oid}


DELETED = "runtime_units_deleted"   # meta: the last units deleted by command (name, oid)
KEEP_DELETED = 1000


def deleted(storage) -> list[dict]:
    """The units deleted by `unit delete` (not those a reload dropped), the
    latest last: what [central] deletes on the other gateways too."""
    raw = storage.meta(DELETED)
    return json.loads(raw) if raw else []


def _note(storage, gone: list[dict]) -> None:
    storage.set_meta(DELETED, json.dumps(gone[-KEEP_DELETED:]))


def _reverse_dns(addrs, rule, budget: float = 2.0, workers: int = 32):
    """For naming by-dns: PTR names looked up in parallel within `budget`
    seconds; an address not resolved by then is named by itself."""
    if rule.naming != "by-dns":
        return None
    import concurrent.futures
    import socket
    pool = concurrent.futures.ThreadPoolExecutor(workers)
    futs = {a: pool.submit(socket.gethostbyaddr, format_addr(a)) for a in addrs}
    concurrent.futures.wait(futs.values(), timeout=budget)
    pool.shutdown(wait=False, cancel_futures=True)
    names = {a: f.result()[0] for a, f in futs.items()
             if f.done() and not f.cancelled() and f.exception() is None}
    return names.get
