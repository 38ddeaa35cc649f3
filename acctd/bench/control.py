"""`make bench`, control plane: drain-to-commit throughput and report latency,
as JSON lines {"name", "value", "unit"}. Needs no kernel: the drained flow
arrays are synthesised with a fixed seed.

Pipeline per drain: UnitSet.match -> policy.account -> rollup -> Storage.commit
(raw rows, four rollup upserts, the period tops' day rows, and the
checkpoint of the whole flow table and address table), into a temporary
DuckDB file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import tempfile
import time
from zoneinfo import ZoneInfo

import numpy as np

from acctd.kernel import abi
from acctd.kernel.drain import Deltas
from acctd.model.policies import AcctPlan, FlowView, PolicySet, PolicySpec, account
from acctd.model.units import Unit, UnitSet
from acctd.model.units import oid_ints
from acctd.store.database import Storage
from acctd.store.rollup import by_key, cells, rollup

ZONE = ZoneInfo("Europe/Berlin")
T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.timezone.utc)
SPECS = [PolicySpec("all", "proto ip"), PolicySpec("tcp", "proto tcp"),
         PolicySpec("udp", "proto udp"), PolicySpec("web", "proto tcp port 80 443"),
         PolicySpec("dns", "proto udp port 53"), PolicySpec("icmp", "proto icmp"),
         PolicySpec("local", "addr 10.0.0.0/8"), PolicySpec("high", "proto tcp port d1024:65535"),
         PolicySpec("ssh", "proto tcp port 22"), PolicySpec("office", "time 9-18")]


def emit(name: str, value: float, unit: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 4), "unit": unit}), flush=True)


def _addr(i: np.ndarray) -> np.ndarray:
    """10.1.x.y for each index, as 16-byte IPv4-mapped addresses."""
    a = np.zeros((len(i), 16), np.uint8)
    a[:, 10:12] = 255
    a[:, 12], a[:, 13], a[:, 14], a[:, 15] = 10, 1, i >> 8, i & 255
    return a


def model(n_units: int, n_policies: int) -> tuple[UnitSet, AcctPlan]:
    if n_units > 65536:
        raise ValueError("at most 65536 units (one /16)")
    addrs = _addr(np.arange(n_units))
    us = UnitSet([Unit("host", f"h{i}", addrs=(addrs[i].tobytes(),)) for i in range(n_units)])
    specs = [SPECS[i % len(SPECS)] if i < len(SPECS) else PolicySpec(f"p{i}", f"proto tcp port {i}")
             for i in range(n_policies)]
    ps = PolicySet(specs)
    return us, AcctPlan(us, ps, default=[s.name for s in specs])


def flows(n: int, n_units: int, seed: int = 0):
    """n drained flows: (FLOW_KEY keys, packets, bytes); 2% from unknown local addresses."""
    rng = np.random.default_rng(seed)
    f = np.zeros(n, abi.FLOW_KEY)
    f["ifindex"] = 2
    f["dir"] = rng.integers(0, 2, n)
    f["ip_ver"] = 4
    f["proto"] = rng.choice(np.array([6, 17, 1], np.uint8), n, p=[.7, .25, .05])
    f["sport"] = rng.integers(1024, 65535, n)
    f["dport"] = rng.choice(np.array([80, 443, 53, 22, 8080], np.uint16), n)
    local = _addr(rng.integers(0, min(n_units + n_units // 50 + 1, 65536), n))
    remote = np.zeros((n, 16), np.uint8)
    remote[:, 10:12] = 255
    remote[:, 12:16] = rng.integers(0, 256, (n, 4))
    out = (f["dir"] == abi.Dir.OUT)[:, None]
    f["saddr"] = np.where(out, local, remote)
    f["daddr"] = np.where(out, remote, local)
    pk = rng.integers(1, 1000, n).astype(np.uint64)
    return f, pk, pk * rng.integers(60, 1500, n).astype(np.uint64)


def bench_pipeline(n_flows: int = 1_000_000, n_units: int = 10_000, n_policies: int = 10,
                   drains: int = 6, path: str | None = None, tops: bool = True,
                   clock=time.perf_counter, churn: float = 0.0,
                   deltas_s: list[float] | None = None) -> float:
    """Flows per second from drained arrays to committed drains (over `drains`
    drains in a row: the WAL's folds fall on some of them, so not a median).

    Every drain carries all n_flows (each with a delta) and checkpoints the
    whole flow table; the first drain inserts the rollup rows, the later
    ones update them, which is the steady state being measured. With tops,
    as the daemon does, the period tops' rows (rollup.by_key: every unit's
    address, the flows' ports and VLANs) are summed and upserted too.
    clock: wall time, or time.process_time for CPU time (DuckDB's threads
    included), steadier on a shared machine.
    churn: the share of flows replaced by new ones before each drain, at
    random places in the read (the checkpoint appends their keys, marks the
    old ones dead and, every few drains, writes the table afresh).
    Before each drain's clock starts, the counters' deltas are taken as the
    daemon does (drain.Deltas, its time appended to `deltas_s`): their join
    of the two reads is what the checkpoint finds its slots by.
    """
    us, plan = model(n_units, n_policies)
    keys, pk, by = flows(n_flows, n_units)
    uo, po = oid_ints(us), oid_ints(plan.policies)
    addr_keys = np.zeros(n_units, abi.ADDR_KEY)
    addr_keys["addr"] = _addr(np.arange(n_units))
    addr_vals = np.zeros(n_units, abi.ADDR_VAL)
    addr_vals["packets"], addr_vals["bytes"] = 3, 3000  # every address moved
    flow_vals = np.zeros(n_flows, abi.FLOW_VAL)
    moved = np.zeros(n_flows, abi.FLOW_VAL)  # each drain's deltas
    moved["packets"], moved["bytes"] = pk, by
    with tempfile.TemporaryDirectory() as tmp:
        db = Storage(path or os.path.join(tmp, "bench.duckdb"), ZONE)
        times = []
        rng = np.random.default_rng(1)
        deltas = Deltas()
        for k in range(drains + 1):
            now = T0 + dt.timedelta(seconds=30 * k)
            if k and churn:
                # flows end and others start; the kernel's read has the new ones
                # among the old (by hash bucket), so every later entry moves on
                m = int(n_flows * churn)
                gone = rng.choice(n_flows, m, replace=False)
                fresh = keys[gone].copy()
                fresh["ifindex"] = 100 + k  # a key no earlier drain had
                at = np.sort(rng.choice(n_flows - m, m))
                keep = np.delete(np.arange(n_flows), gone)
                order = np.insert(keep, at, gone)  # a new flow takes an old one's traffic
                keys = np.insert(keys[keep], at, fresh)
                pk, by = pk[order], by[order]
                flow_vals = np.insert(flow_vals[keep], at, np.zeros(m, abi.FLOW_VAL))
                moved = np.zeros(n_flows, abi.FLOW_VAL)
                moved["packets"], moved["bytes"] = pk, by
            flow_vals = flow_vals.copy()  # each drain reads arrays of its own
            flow_vals["packets"] += pk
            flow_vals["bytes"] += by
            t = time.perf_counter()
            d = deltas.update(keys, flow_vals)
            if k and deltas_s is not None:
                deltas_s.append(time.perf_counter() - t)
            t = clock()
            view = FlowView(keys)  # as store.interval.columns does
            leaf = us.match_flows(view)
            counts = account(view, pk, by, leaf, plan, now.astimezone(ZONE))
            tops_rows = by_key(keys, moved, addr_keys, addr_vals) if tops else None
            r = rollup(cells(counts, uo, po), now, ZONE, tops_rows)
            db.commit(r, {"acct_flows": (keys, flow_vals), "acct_addrs": (addr_keys, addr_vals)},
                      matched={"acct_flows": (d.base, d.prev)})
            if k:
                times.append(clock() - t)
        db.close()
    return n_flows * len(times) / sum(times)


def tops_cost(n_flows: int, n_units: int) -> float:
    """CPU time of drains with the period tops over drains without (5 of each)."""
    cpu = time.process_time
    return (bench_pipeline(n_flows, n_units, drains=5, tops=False, clock=cpu)
            / bench_pipeline(n_flows, n_units, drains=5, tops=True, clock=cpu))


def bench_report(n_units: int = 10_000, n_policies: int = 10, tries: int = 5) -> float:
    """Milliseconds for Storage.month_report over n_units with every cell filled (best of tries)."""
    uo = np.arange(n_units, dtype=np.uint32) + 0x020000
    po = np.concatenate([[0], np.arange(n_policies, dtype=np.uint32) + 0x140000]).astype(np.uint32)
    u = np.repeat(uo, len(po) * 2)
    p = np.tile(np.repeat(po, 2), n_units)
    d = np.tile(np.array([0, 1], np.uint8), n_units * len(po))
    v = np.arange(len(u), dtype=np.uint64) + 1
    with tempfile.TemporaryDirectory() as tmp:
        db = Storage(os.path.join(tmp, "report.duckdb"), ZONE)
        # three drains on different days: the month rows are updated, and other
        # periods' rows sit in the table as they would in a real file
        for h in (0, 24 * 10, 24 * 20):
            now = T0 + dt.timedelta(hours=h)
            r = rollup({"unit_oid": u, "policy_oid": p, "dir": d, "packets": v, "bytes": v * 100},
                       now, ZONE)
            db.commit(r, {})
        best = float("inf")
        for _ in range(tries):
            t = time.perf_counter()
            rep = db.month_report(T0)
            best = min(best, time.perf_counter() - t)
        assert len(rep["unit_oid"]) == len(u)
        db.close()
    return best * 1000


def bench_perf_record(n: int = 2000) -> float:
    """What timing one drain costs (`acctctl perf`): four laps and the record
    (getrusage, /proc/self/statm), in microseconds per drain."""
    from acctd.daemon import perf
    p = perf.Perf()
    t = time.perf_counter()
    for i in range(n):
        c = perf.DrainClock()
        for step in perf.STEPS:
            c.lap(step)
        p.record(i, "", c, 0, 0)
    return (time.perf_counter() - t) / n * 1e6


def main() -> None:
    steady, churned = [], []
    emit("control.pipeline_flows_per_s.flows_1m", bench_pipeline(deltas_s=steady), "flows/s")
    # a tenth of the flows new at every drain, over enough drains that the
    # checkpoint is written afresh once (at half its slots dead)
    emit("control.pipeline_flows_per_s.flows_1m_churn_10pct",
         bench_pipeline(drains=12, churn=0.1, deltas_s=churned), "flows/s")
    # the drain's own join of two reads (before the pipeline; its clock is apart)
    emit("control.deltas_s.flows_1m", statistics.median(steady), "s")
    emit("control.deltas_s.flows_1m_churn_10pct", statistics.median(churned), "s")
    # what the period tops cost a drain (CPU with them / without): 1M flows of 10k
    # addresses, and 64k addresses every one of which moved
    emit("control.pipeline_tops_cpu_ratio.flows_1m", tops_cost(1_000_000, 10_000), "ratio")
    emit("control.pipeline_tops_cpu_ratio.flows_200k_units_64k", tops_cost(200_000, 65_536),
         "ratio")
    emit("control.report_ms.units_10k", bench_report(), "ms")
    emit("control.perf_record_us", bench_perf_record(), "us")


if __name__ == "__main__":
    main()
