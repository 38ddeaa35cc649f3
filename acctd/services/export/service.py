"""The export service: each [[export]] table is one exporter, with its own
flow cache (timeouts), its filter of units, and one stream (encoder and
sender) per destination. Records are made after each drain is committed."""

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
from acctd.services.export.records import FlowCache
from acctd.services.export.transport import TcpSender, UdpSender, split_destination

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

    def __init__(self, settings: ExportSettings):
        self.settings = settings
        s = settings
        self.cache = FlowCache(s.active_timeout * 10**9, s.inactive_timeout * 10**9)
        self.senders: list[UdpSender | TcpSender] = []
        for dest in s.destination:
            if s.transport == "tcp":   # templates at each connection, none on a timer
                self.senders.append(TcpSender(dest, ENCODERS[s.format](s.domain_id)))
            else:
                enc = ENCODERS[s.format](s.domain_id, s.template_packets, s.template_refresh)
                self.senders.append(UdpSender(dest, enc))
        self.records = self.flows_filtered = 0

    def open(self) -> None:
        for s in self.senders:
            s.open()

    def add(self, keys: np.ndarray, values: np.ndarray, now: Now) -> None:
        self.cache.add(keys, values, now.mono_ns)
        self.send(self.cache.expire(now.mono_ns), now)

    def send(self, records: np.ndarray, now: Now) -> None:
        if not len(records):
            return
        self.records += len(records)
        for s in self.senders:
            s.send(records, now)

    def close(self) -> None:
        """The flows still cached go out as their last records."""
        self.send(self.cache.flush(), Now.sample())
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

    @staticmethod
    def settings_of(config):
        return config.export

    def serve(self) -> None:
        self.exporters = [Exporter(s) for s in self.settings or ()]
        for e in self.exporters:
            e.open()

    def reload(self, settings) -> None:
        """Unchanged tables keep their exporter (its cache, its sequence
        numbers); a changed or removed one sends its last records first."""
        settings = settings or ()
        old = {e.settings: e for e in self.exporters}
        kept = []
        for s in settings:
            e = old.pop(s, None)
            if e is None:
                e = Exporter(s)
                e.open()
            kept.append(e)
        for e in old.values():
            e.close()
        self.settings, self.exporters = settings, kept

    def after_drain(self, drain: Drain) -> None:
        if not self.exporters:
            return
        now = Now.sample()
        units = drain.snapshot.units
        oids = monitored_oids(self.core) if any(
            e.settings.units == "monitored" for e in self.exporters) else None
        for e in self.exporters:
            take = selected(drain.flow_keys, units, e.settings.units, oids)
            e.add(drain.flow_keys[take], drain.flow_values[take], now)

    def close(self) -> None:
        for e in self.exporters:
            e.close()
        self.exporters = []

    def status(self) -> dict | None:
        if not self.exporters:
            return None
        return {"export": {k: v for e in self.exporters for k, v in e.status().items()}}
