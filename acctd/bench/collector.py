"""Collector benchmarks (make bench): records decoded and accounted per
second on one core, for IPFIX, NetFlow v5 and sFlow (packets built by
flowgen, fed through the listener's entry point, turned into flows under a
model and accounted into rows as a drain would), and the memory a flood of
10,000 templates takes."""

from __future__ import annotations

import datetime as dt
import time
import tracemalloc

import numpy as np

from acctd.bench import flowgen
from acctd.bench.control import emit
from acctd.config import loader
from acctd.model.snapshot import Snapshot
from acctd.services.collector import flows
from acctd.services.collector.service import CollectorSettings, _Source
from acctd.services.collector.templates import Store
from acctd.store import interval

CONFIG = """
[[collector]]
id = 1
listen = "127.0.0.1:{port}"
source = ["192.0.2.1"]
[[policy]]
name = "web"
target = "proto tcp port 80"
[[unit]]
type = "net"
name = "lan"
net = "10.0.0.0/16"
ds-list = [1]
acct-policy = ["web"]
"""
EXPORTER = "192.0.2.1"


class _Core:
    def __init__(self, snap):
        self.snapshot, self.netns = snap, None


def _flows(n: int, seed: int):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a = int(rng.integers(0, 4096))
        out.append((f"10.0.{a >> 8}.{a & 255}", f"198.51.100.{i % 200}", 40000 + i % 1000,
                    80 if i % 3 else 443, 6, 10 + i % 7, 1500 + i))
    return out


def _run(packets: list[bytes], n_records: int, source: _Source) -> float:
    """Records per second: every packet through handle(), then what one
    drain does with them (flows, address deltas, rows)."""
    snap = source.core.snapshot
    t = time.process_time()  # one core's work, whatever else runs on the machine
    for p in packets:
        source.listener.handle(p, EXPORTER)
    keys, vals = source.take()
    ak, av = flows.addr_deltas(keys, vals)
    rows, _ = interval.columns(snap, dt.datetime.now(), keys, vals, ak, av,
                               np.zeros(2, np.uint64), np.zeros(2, np.uint64))
    took = time.process_time() - t
    assert int(rows["bytes"].sum()) > 0
    return n_records / took


def _source(tmp: str) -> _Source:
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = loader.loads(CONFIG.format(port=port))
    settings: CollectorSettings = cfg.collector[0]
    return _Source(_Core(Snapshot.build(cfg)), settings, tmp)


def bench(kind: str, n_packets: int = 20000) -> float:
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        src = _source(tmp)
        try:
            if kind == "ipfix":
                src.listener.handle(flowgen.ipfix(_flows(1, 0)), EXPORTER)  # the template
                packets = [flowgen.ipfix(_flows(30, i), template=False) for i in range(200)]
                per = 30
            elif kind == "v5":
                packets = [flowgen.v5(_flows(30, i)) for i in range(200)]
                per = 30
            else:
                packets = [flowgen.sflow([(s, d, sp, dp, pr, by, 64) for s, d, sp, dp, pr, _, by
                                          in _flows(10, i)]) for i in range(200)]
                per = 10
            src.take()
            feed = packets * (n_packets // len(packets))
            return _run(feed, len(feed) * per, src)
        finally:
            src.listener.sock.close()


def template_flood(n: int = 10_000) -> tuple[int, int]:
    """(peak bytes, templates kept) while one exporter sends n distinct
    templates over 64 observation domains with default caps."""
    from acctd.services.collector import netflow9
    store = Store()
    fields = flowgen.V4_FIELDS
    tracemalloc.start()
    for i in range(n):
        pkt = flowgen.ipfix_template(256 + i % 60000, fields[: 1 + i % len(fields)] +
                                     ((400 + i % 50, 4),), domain=i % 64)
        netflow9.decode_ipfix(pkt, EXPORTER, store)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, store.count(EXPORTER)


def main() -> None:
    for kind in ("ipfix", "v5", "sflow"):
        emit(f"collector.records_per_s.{kind}", bench(kind), "records/s")
    peak, kept = template_flood()
    emit("collector.template_flood_peak_bytes.templates_10k", peak, "bytes")
    emit("collector.template_flood_kept.templates_10k", kept, "templates")


if __name__ == "__main__":
    main()
