"""Prometheus /metrics (OpenMetrics text, prometheus_client) from the
daemon's `status`, `perf` and `units` replies, read at each scrape by the
console's own viewer identity. Low cardinality: one series per hooked
interface and direction, per drop cause, per health counter, per map, per
block reason and per service counter; the per-unit month gauges only for
the top N units when asked (--metrics-top-units N), and never a series per
address."""

from __future__ import annotations

import collections
import datetime as dt
import ipaddress

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

DEFAULT_ALLOW = "127.0.0.0/8,::1/128"


def parse_allow(text: str) -> tuple:
    """--metrics-allow: comma-separated addresses or networks ("" = nobody)."""
    return tuple(ipaddress.ip_network(w.strip(), strict=False)
                 for w in text.split(",") if w.strip())


def allowed(addr: str | None, nets: tuple) -> bool:
    try:
        a = ipaddress.ip_address((addr or "").split("%")[0])
    except ValueError:
        return False
    if a.version == 6 and a.ipv4_mapped:
        a = a.ipv4_mapped
    return any(a in n for n in nets)


class Metrics:
    """A prometheus_client collector asking the daemon at each collect():
    ask(cmd, **args) answers a control command."""

    def __init__(self, ask, top_units: int = 0, clock=lambda: dt.datetime.now(dt.timezone.utc)):
        self.ask = ask
        self.top_units = top_units
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The page and its content type: OpenMetrics when the scraper asks
        for it (Prometheus does), else the classic text format (promtool's)."""
        encode, kind = choose_encoder(accept or "")
        return encode(self.registry), kind

    def collect(self):
        st = self.ask("status")
        dp = st["datapath"]
        yield from _interfaces(dp.get("interfaces", {}))
        drops_p = CounterMetricFamily("acctd_dropped_packets", "Packets dropped at the hooks",
                                      labels=["cause"])
        drops_b = CounterMetricFamily("acctd_dropped_bytes", "Bytes dropped at the hooks",
                                      labels=["cause"])
        for cause, v in sorted(dp["dropped"].items()):
            drops_p.add_metric([cause], v["packets"])
            drops_b.add_metric([cause], v["bytes"])
        yield drops_p
        yield drops_b
        health = CounterMetricFamily("acctd_health", "The datapath's health counters",
                                     labels=["counter"])
        for k, v in sorted(dp["health"].items()):
            health.add_metric([k], v)
        yield health
        yield CounterMetricFamily("acctd_unattributed_bytes",
                                  "LAN bytes of addresses no unit owns", value=dp["unattributed_bytes"])
        yield CounterMetricFamily("acctd_flow_evictions", "Flow entries evicted since start",
                                  value=dp["flow_evictions"])
        entries = GaugeMetricFamily("acctd_map_entries", "Entries in a datapath map", labels=["map"])
        size = GaugeMetricFamily("acctd_map_max_entries", "A datapath map's size", labels=["map"])
        for name, f in sorted(dp["fill"].items()):
            entries.add_metric([name], f["entries"])
            size.add_metric([name], f["max"])
        yield entries
        yield size
        yield from self._drains(st)
        yield from _services(st.get("services", {}))
        yield from self._blocked()
        if self.top_units:
            yield from self._top_units()

    def _drains(self, st: dict):
        yield CounterMetricFamily("acctd_drains", "Drains committed since start", value=st["drains"])
        yield GaugeMetricFamily("acctd_failed_drains", "Drains failed in a row",
                                value=st["failed_drains"])
        if st["last_drain"]:
            last = dt.datetime.fromisoformat(st["last_drain"])
            yield GaugeMetricFamily("acctd_last_commit_timestamp_seconds",
                                    "When the last drain was committed", value=last.timestamp())
            yield GaugeMetricFamily("acctd_commit_lag_seconds", "Seconds since the last commit",
                                    value=max(0.0, (self.clock() - last).total_seconds()))
        rows = self.ask("perf")
        if rows:
            step = GaugeMetricFamily("acctd_drain_step_seconds",
                                     "The last drain's duration by step", labels=["step"])
            for k in ("read", "account", "commit", "services", "total"):
                step.add_metric([k], rows[-1][f"{k}_ms"] / 1000)
            yield step

    def _blocked(self):
        reasons = collections.Counter()
        for u in self.ask("units", sys_policy=True):
            for word in u.get("sys_policy") or ():
                reasons[word] += 1
        g = GaugeMetricFamily("acctd_blocked_units", "Units with a system policy, by reason",
                              labels=["reason"])
        for word, n in sorted(reasons.items()):
            g.add_metric([word], n)
        yield g

    def _top_units(self):
        top = self.ask("top-units", period="month", limit=self.top_units)
        g = GaugeMetricFamily("acctd_unit_month_bytes",
                              "This calendar month's bytes of the top units (opt-in)",
                              labels=["unit", "direction"])
        for r in top["units"]:
            g.add_metric([r["unit"], "in"], r["bytes_in"])
            g.add_metric([r["unit"], "out"], r["bytes_out"])
        yield g


def _interfaces(ifaces: dict):
    fams = {k: CounterMetricFamily(f"acctd_interface_{k}", f"{k.capitalize()} seen at a hook",
                                   labels=["interface", "role", "direction"])
            for k in ("packets", "bytes")}
    for name, v in sorted(ifaces.items()):
        for k, fam in fams.items():
            for d in ("in", "out"):
                fam.add_metric([name, v["role"], d], v[f"{k}_{d}"])
    yield from fams.values()


def _services(services: dict):
    """Every integer a service reports in `status` (RADIUS, CoA, alerter,
    export, ...), one series per service and path: bounded by the config."""
    g = GaugeMetricFamily("acctd_service", "A service's counter from acctd status",
                          labels=["service", "key"])
    for name, v in sorted(services.items()):
        for key, n in _numbers(v):
            g.add_metric([name, key or "value"], n)
    yield g


def _numbers(v, path: str = ""):
    if isinstance(v, bool):
        yield path, int(v)
    elif isinstance(v, (int, float)):
        yield path, v
    elif isinstance(v, dict):
        for k, x in sorted(v.items()):
            yield from _numbers(x, f"{path}.{k}" if path else str(k))
