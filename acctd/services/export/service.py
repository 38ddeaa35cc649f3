"""The export service: each [[export]] table is one exporter, with its own
flow cache (timeouts), its filter of units, and one stream (encoder and
sender) per destination.

Each drain's deltas enter the caches inside the drain's transaction, and
the caches' changed entries are stored with it (acctd/store/export.py);
the records due leave the stored cache in that same transaction and are
sent after the commit. So a kill -9 loses nothing a drain committed and
doubles nothing: the flows cached come back at the start and are exported
as if the daemon had not stopped. Over UDP a kill between a commit and
the end of that drain's sends loses what the drain made due and had not
sent yet (at most one drain's records, never sent twice; the sends are
paced, so the window is as long as the pacer needs for them: a third of a
second for 100,000 records at the default udp-rate). Over TCP the records
due are spooled in the drain's transaction too and leave the spool once
the collector acknowledged them (at the next tick, about a second): a
collector away across a restart or a kill -9 gets them when it is back,
and a kill -9 sends again only what was acknowledged in that last second.
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
from acctd.services.export.transport import (UDP_RATE, TcpSender, UdpSender, split_destination,
                                             throttled)
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
        self.records = self.flows_filtered = self.spool_dropped = 0
        self.due = RECORD_NONE       # made due by the drain being committed
        # TCP: the due records are spooled (acctd/store/export.py) until acknowledged
        self.spooling = s.transport == "tcp"
        self.due_tag: int | None = None     # the spool row of self.due
        self.next_tag = 0
        self.unspooled = -1                 # the spool rows deleted up to this tag
        self.spooled = 0                    # records in the spool
        self._before: tuple[int, int] | None = None
        self._resume: list[tuple[int, np.ndarray]] = []

    def open(self) -> None:
        for s in self.senders:
            s.open()
        resume, self._resume = self._resume, []
        for tag, records in resume:     # first: they were due before anything new
            self.send(records, Now.sample(), tag)

    def load(self, con) -> None:
        """The cache as the last committed drain left it."""
        self.cache.restore(stored.load(con, self.ident, RECORD), Now.sample().mono_ns)
        self.due = RECORD_NONE

    def resume(self, con) -> None:
        """At start: the spooled batches no collector acknowledged go out
        first, at open() (a table that is UDP now sends them once)."""
        self._resume = stored.spooled(con, self.ident, RECORD)
        if not self._resume:
            return
        n = sum(len(r) for _, r in self._resume)
        log.info("export %s: %d records spooled for %s sent again", self.ident, n,
                 ", ".join(self.settings.destination))
        if self.spooling:
            self.next_tag, self.spooled = self._resume[-1][0] + 1, n
        else:
            stored.drop_spool(con, self.ident)

    def add(self, keys: np.ndarray, values: np.ndarray, now: Now, con=None) -> None:
        """One drain's deltas, inside its transaction (con: stored with it);
        the records due wait in self.due for the commit (and in the spool)."""
        self.cache.add(keys, values, now.mono_ns)
        self.due = self.cache.expire(now.mono_ns)
        changed, gone = self.cache.changes()
        if con is not None:
            stored.write(con, self.ident, changed, gone)
            self._before = (self.unspooled, self.spooled)    # if the drain rolls back
            self.unspool(con)
            self.due_tag = self._spool(con, self.due)

    def _spool(self, con, records: np.ndarray) -> int | None:
        """The records in the spool (TCP), up to the sender's queue bound
        (beyond it they are dropped and counted, as the queue would); the
        row's tag."""
        if not self.spooling or con is None or not len(records):
            return None
        room = self.senders[0].queue_records - self.spooled
        if room < len(records):
            self.spool_dropped += len(records) - max(room, 0)
            throttled.warning("spool", "export %s: more than %d records wait for %s, the "
                              "newest dropped", self.ident, self.senders[0].queue_records,
                              self.settings.destination[0])
            records = records[:max(room, 0)]
            if not len(records):
                return None
        tag, self.next_tag = self.next_tag, self.next_tag + 1
        stored.spool(con, self.ident, tag, records)
        self.spooled += len(records)
        return tag

    def unspool(self, con) -> None:
        """The spool rows the collector acknowledged, deleted."""
        if not self.spooling:
            return
        acked = self.senders[0].acked
        if acked > self.unspooled:
            stored.unspool(con, self.ident, acked)
            self.unspooled = acked
            self.spooled = stored.spools(con).get(self.ident, 0)

    def failed(self) -> None:
        """The drain being committed rolled back: its spool row, and the
        deletes of acknowledged rows it made (they are made again)."""
        if self._before is not None:
            self.unspooled, self.spooled = self._before
        self.due, self.due_tag, self._before = RECORD_NONE, None, None

    def committed(self, now: Now) -> None:
        due, self.due = self.due, RECORD_NONE
        tag, self.due_tag, self._before = self.due_tag, None, None
        self.send(due, now, tag)

    def send(self, records: np.ndarray, now: Now, tag: int | None = None) -> None:
        if not len(records):
            return
        self.records += len(records)
        for s in self.senders:
            s.send(records, now, tag)

    def close(self, con=None) -> None:
        """The flows still cached go out as their last records (and leave
        the stored cache: con); over TCP what the collector has not
        acknowledged when the sender stops stays spooled for the next start."""
        self.committed(Now.sample())
        last = self.cache.flush()
        self.send(last, Now.sample(), self._spool(con, last))
        self.cache.changes()
        if con is not None:
            stored.drop(con, self.ident)
        for s in self.senders:
            s.close()
        if con is not None:
            self.unspool(con)
            if self.spooled:
                log.warning("export %s: %d records not acknowledged by %s stay spooled for "
                            "the next start", self.ident, self.spooled,
                            self.settings.destination[0])

    def status(self) -> dict:
        """destination -> its stream's state (an `acctctl status` line each)."""
        units = self.settings.units
        units = units if isinstance(units, str) else " ".join(units)
        out = {}
        for s in self.senders:
            st = s.status()
            dest = st.pop("destination")
            out[dest] = {"units": units, "flows_cached": len(self.cache), **st}
            if self.spooling:
                out[dest] |= {"records_spooled": self.spooled,
                              "records_spool_dropped": self.spool_dropped}
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
                idents = {e.ident for e in self.exporters}
                for ident, n in stored.exporters(con).items():
                    if ident not in idents:
                        log.warning("export: %d cached flows of %s dropped: no such [[export]] "
                                    "now", n, ident)
                        stored.drop(con, ident)
                for ident, n in stored.spools(con).items():
                    if ident not in idents:
                        log.warning("export: %d spooled records of %s dropped: no such "
                                    "[[export]] now", n, ident)
                        stored.drop_spool(con, ident)
                for e in self.exporters:
                    e.load(con)
                    e.resume(con)
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
                    e.resume(con)
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
            e.failed()

    def tick(self) -> None:
        """The spool rows acknowledged since, deleted (about once a second)."""
        con = self._con()
        if con is None or not any(e.spooling for e in self.exporters):
            return
        with self.core.lock:
            for e in self.exporters:
                e.unspool(con)

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
