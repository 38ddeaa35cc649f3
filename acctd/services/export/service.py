"""The export service: each [[export]] table is one exporter, with its own
flow cache (timeouts), its filter of units, and one stream (encoder and
sender) per destination.

Each drain's deltas enter the caches inside the drain's transaction, and
the caches' changed entries are stored with it (acctd/store/export.py);
the records due leave the stored cache in that same transaction and are
sent after the commit. So a kill -9 loses nothing a drain committed and
doubles nothing: the flows cached come back at the start and are exported
as if the daemon had not stopped. The one exception is a kill between a
commit and the end of that drain's sends: what the drain made due and had
not sent yet is lost (at most one drain's records, never sent twice; over
UDP the sends are paced, so the window is as long as the pacer needs for
them: a third of a second for 100,000 records at the default udp-rate).
A drain that fails leaves the caches as stored; they are read again."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from acctd.config.schema import (Invalid, Table, choice, duration, each, integer, parsed,
                                 setting)
from acctd.kernel import abi
from acctd.model.units import normalize_oid
from acctd.services.contract import Core, Drain, Service
from acctd.services.export.encoder import Encoder
from acctd.services.export.ipfix import IpfixEncoder
from acctd.services.export.messages import Now
from acctd.services.export.netflow_v5 import V5Encoder
from acctd.services.export.netflow_v9 import V9Encoder
from acctd.services.export.records import RECORD, FlowCache
from acctd.services.export.transport import UDP_RATE, TcpSender, UdpSender, split_destination
from acctd.store import export as stored

log = logging.getLogger("acctd.export")

ENCODERS: dict[str, type[Encoder]] = {"v5": V5Encoder, "v9": V9Encoder, "ipfix": IpfixEncoder}


def check_units(v, ctx):
    """"all", "monitored" (the monitor service's units), or a list of unit names."""
    if v in ("all", "monitored"):
        return v
    if isinstance(v, list) and v and all(isinstance(x, str) and x.strip() for x in v):
        return tuple(x.strip() for x in v)
    raise Invalid(f'expected "all", "monitored" or a list of unit names, got {v!r}')


def check_destination(v) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected host:port, got {v!r}")
    split_destination(v)
    return v


@dataclasses.dataclass(frozen=True)
class ExportSettings(Table):
    """One [[export]] table: NetFlow v5, v9 or IPFIX to one or more collectors."""
    format: str = setting(check=choice("v5", "v9", "ipfix"), example='"ipfix"')
    destination: tuple[str, ...] = setting(check=each(parsed(check_destination)),
                                           example='"192.0.2.10:2055"')
    transport: str = setting("udp", check=choice("udp", "tcp"))
    active_timeout: int = setting(60, check=duration(86400))
    inactive_timeout: int = setting(15, check=duration(86400))
    template_refresh: int = setting(300, check=duration(86400))
    template_packets: int = setting(100, check=integer(0, 1_000_000))
    domain_id: int = setting(1, check=integer(0, 0xFFFF_FFFF))
    udp_rate: int = setting(UDP_RATE, check=integer(0, 10_000_000))
    units: str | tuple[str, ...] = setting("all", check=check_units)

    def finish(self, ctx):
        if self.transport == "tcp" and self.format != "ipfix":
            raise Invalid("TCP carries IPFIX only (RFC 7011 section 10.4); use format = "
                          '"ipfix" or transport = "udp"', "transport")
        if self.transport == "tcp" and len(self.destination) != 1:
            raise Invalid("an IPFIX-over-TCP export has one destination (one [[export]] "
                          "per collector)", "destination")
        if self.format == "v5" and self.domain_id > 0xFFFF:
            raise Invalid("NetFlow v5 carries a domain of 16 bits (engine type and id); "
                          "at most 65535", "domain-id")
        return self


def monitored_oids(core: Core) -> frozenset[int]:
    """The oids the monitor service watches (none without [monitor])."""
    from acctd.services.monitor import MonitorService
    monitor = core.service(MonitorService)
    return monitor.monitored_oids() if monitor.settings is not None else frozenset()


class Exporter:
    """One [[export]] table at work."""

    def __init__(self, settings: ExportSettings, ident: str):
        self.settings, self.ident = settings, ident   # ident: its stored cache's name
        s = settings
        self.cache = FlowCache(s.active_timeout * 10**9, s.inactive_timeout * 10**9)
        self.senders: list[UdpSender | TcpSender] = []
        for dest in s.destination:
            if s.transport == "tcp":   # templates at each connection, none on a timer
                self.senders.append(TcpSender(dest, ENCODERS[s.format](s.domain_id)))
            else:
                enc = ENCODERS[s.format](s.domain_id, s.template_packets, s.template_refresh)
                self.senders.append(UdpSender(dest, enc, s.udp_rate))
        self.records = self.flows_filtered = 0
        self.due = RECORD_NONE       # made due by the drain being committed

    def open(self) -> None:
        for s in self.senders:
            s.open()

    def load(self, con) -> None:
        """The cache as the last committed drain left it."""
        self.cache.restore(stored.load(con, self.ident, RECORD), Now.sample().mono_ns)
        self.due = RECORD_NONE

    def add(self, keys: np.ndarray, values: np.ndarray, now: Now, con=None) -> None:
        """One drain's deltas, inside its transaction (con: stored with it);
        the records due wait in self.due for the commit."""
        self.cache.add(keys, values, now.mono_ns)
        self.due = self.cache.expire(now.mono_ns)
        changed, gone = self.cache.changes()
        if con is not None:
            stored.write(con, self.ident, changed, gone)

    def committed(self, now: Now) -> None:
        due, self.due = self.due, RECORD_NONE
        self.send(due, now)

    def send(self, records: np.ndarray, now: Now) -> None:
        if not len(records):
            return
        self.records += len(records)
        for s in self.senders:
            s.send(records, now)

    def close(self, con=None) -> None:
        """The flows still cached go out as their last records (and leave
        the stored cache: con)."""
        self.committed(Now.sample())
        self.send(self.cache.flush(), Now.sample())
        self.cache.changes()
        if con is not None:
            stored.drop(con, self.ident)
        for s in self.senders:
            s.close()

    def status(self) -> dict:
        """destination -> its stream's state (an `acctctl status` line each)."""
        units = self.settings.units
        units = units if isinstance(units, str) else " ".join(units)
        out = {}
        for s in self.senders:
            st = s.status()
            dest = st.pop("destination")
            out[dest] = {"units": units, "flows_cached": len(self.cache), **st}
        return out


RECORD_NONE = np.zeros(0, RECORD)


def identities(settings: tuple[ExportSettings, ...]) -> list[str]:
    """A name for each [[export]] table's stored cache, the same across
    restarts while its format, destinations and units stay (a table whose
    timeouts change keeps its flows)."""
    out: list[str] = []
    for s in settings:
        units = s.units if isinstance(s.units, str) else ",".join(s.units)
        base = f"{s.format}/{s.transport} {' '.join(s.destination)} domain {s.domain_id} " \
               f"units {units}"
        n = sum(1 for o in out if o == base or o.startswith(base + " #"))
        out.append(base if not n else f"{base} #{n + 1}")
    return out


def selected(keys: np.ndarray, units, wanted: str | tuple[str, ...],
             oids: frozenset[int] | None) -> np.ndarray:
    """Which flows an exporter's `units` setting takes: all, the monitored
    units' (oids), or the named units' (a group: its members too), by the
    flow's local address."""
    if wanted == "all":
        return np.ones(len(keys), bool)
    chosen = np.zeros(len(units) + 1, bool)     # the extra slot: no unit (-1)
    if wanted == "monitored":
        for oid in oids or ():
            i = units.by_oid.get(normalize_oid(oid))
            if i is not None:
                chosen[i] = True
    else:
        for name in wanted:
            i = units.index.get(name)
            if i is not None:
                chosen[[i, *units.descendants(i)]] = True
    local = np.where((keys["dir"] == abi.Dir.OUT)[:, None], keys["saddr"], keys["daddr"])
    return chosen[units.match(np.ascontiguousarray(local))]


class ExportService(Service):
    """NetFlow v5/v9 and IPFIX records of the drained flows, to collectors."""

    name = "export"

    def __init__(self, core: Core, settings: tuple[ExportSettings, ...]):
        super().__init__(core, settings)
        self.exporters: list[Exporter] = []
        self._stale = False          # a drain failed: the caches are read again

    @staticmethod
    def settings_of(config):
        return config.export

    def _con(self):
        storage = getattr(self.core, "storage", None)   # none: the caches are memory only
        return storage.con if storage is not None else None

    def serve(self) -> None:
        settings = self.settings or ()
        self.exporters = [Exporter(s, i) for s, i in zip(settings, identities(settings))]
        con = self._con()
        if con is not None:
            with self.core.lock:
                for ident, n in stored.exporters(con).items():
                    if ident not in {e.ident for e in self.exporters}:
                        log.warning("export: %d cached flows of %s dropped: no such [[export]] "
                                    "now", n, ident)
                        stored.drop(con, ident)
                for e in self.exporters:
                    e.load(con)
        for e in self.exporters:
            e.open()

    def reload(self, settings) -> None:
        """Unchanged tables keep their exporter (its cache, its sequence
        numbers); a changed or removed one sends its last records first."""
        settings = settings or ()
        idents = identities(settings)
        old = {(e.settings, e.ident): e for e in self.exporters}
        same = {k: old.pop(k) for k in list(old) if k in set(zip(settings, idents))}
        con = self._con()
        for e in old.values():      # first: a table's name may pass to a new one
            e.close(con)
        kept = []
        for s, ident in zip(settings, idents):
            e = same.get((s, ident))
            if e is None:
                e = Exporter(s, ident)
                if con is not None:
                    e.load(con)
                e.open()
            kept.append(e)
        self.settings, self.exporters = settings, kept

    def in_drain(self, drain: Drain, tx) -> None:
        if not self.exporters:
            return
        if self._stale:
            for e in self.exporters:
                e.load(tx.con)
            self._stale = False
        now = Now.sample()
        units = drain.snapshot.units
        oids = monitored_oids(self.core) if any(
            e.settings.units == "monitored" for e in self.exporters) else None
        for e in self.exporters:
            take = selected(drain.flow_keys, units, e.settings.units, oids)
            e.add(drain.flow_keys[take], drain.flow_values[take], now, tx.con)

    def drain_failed(self) -> None:
        self._stale = bool(self.exporters)
        for e in self.exporters:        # made due by a drain not committed
            e.due = RECORD_NONE

    def after_drain(self, drain: Drain) -> None:
        now = Now.sample()
        for e in self.exporters:
            e.committed(now)

    def close(self) -> None:
        con = self._con()
        for e in self.exporters:
            e.close(con)
        self.exporters = []

    def status(self) -> dict | None:
        if not self.exporters:
            return None
        return {"export": {k: v for e in self.exporters for k, v in e.status().items()}}
