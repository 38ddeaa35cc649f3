"""`make bench`, export: flow records encoded per second for each format
(the flow cache's expiry and the encoder, no sockets) and the peak memory
of encoding one large drain, and what storing the cache adds to a drain's
transaction (acctd/store/export.py), as JSON lines {"name", "value", "unit"}.
Needs no kernel: the drained flows are synthesised with a fixed seed.

Fails (exit 1) below the issue's floor of 1,000,000 IPFIX records/s."""

from __future__ import annotations

import sys
import tempfile
import time
import tracemalloc

import numpy as np

from acctd.bench.control import emit
from acctd.kernel import abi
from acctd.services.export.ipfix import IpfixEncoder
from acctd.services.export.messages import Now
from acctd.services.export.netflow_v5 import V5Encoder
from acctd.services.export.netflow_v9 import V9Encoder
from acctd.services.export.records import RECORD, FlowCache
from acctd.store import export as stored
from acctd.store.database import Storage

FLOWS = 200_000
FLOOR = 1_000_000       # IPFIX records/s (issue 14)


def drain(n: int, now_ns: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """n flows, one in five IPv6, as one drain hands them over."""
    rng = np.random.default_rng(seed)
    k = np.zeros(n, abi.FLOW_KEY)
    v = np.zeros(n, abi.FLOW_VAL)
    v6 = rng.random(n) < 0.2
    k["ifindex"], k["dir"], k["proto"] = 2, rng.integers(0, 2, n), rng.choice([6, 17, 1], n)
    k["ip_ver"] = np.where(v6, 6, 4)
    k["sport"], k["dport"] = rng.integers(1024, 65535, n), rng.choice([53, 80, 443], n)
    addrs = rng.integers(0, 256, (n, 2, 16), dtype=np.uint8)
    addrs[~v6, :, :10], addrs[~v6, :, 10:12] = 0, 0xFF
    k["saddr"], k["daddr"] = addrs[:, 0], addrs[:, 1]
    v["packets"] = rng.integers(1, 10_000, n)
    v["bytes"] = v["packets"] * rng.integers(40, 1500, n)
    v["first_ns"], v["last_ns"] = now_ns - 10**9, now_ns
    return k, v


def records_per_s(encoder, keys, values, rounds: int = 5) -> float:
    """The best of `rounds`: cache add, expiry, encoding of every record,
    in CPU time of this process (one core; the machine may be shared)."""
    best = 0.0
    for _ in range(rounds):
        now = Now.sample()
        cache = FlowCache(0, 0)
        t = time.process_time()
        cache.add(keys, values, now.mono_ns)
        msgs = encoder.encode(cache.expire(now.mono_ns), now)
        best = max(best, len(keys) / max(time.process_time() - t, 1e-9))
        assert msgs
    return best


def persist_ms(keys, values, moved: int = 10_000, rounds: int = 3) -> dict[str, float]:
    """Wall milliseconds (DuckDB works on threads of its own) of the
    drain's store of a cache of len(keys) flows: the first drain (every
    entry new), a drain that moves `moved` of them, one that brings `moved`
    new flows (what each drain costs), and for comparison a rewrite of the
    whole cache. The best of `rounds`."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, Storage(f"{tmp}/bench.duckdb") as st:
        con = st.con

        def timed(name: str, work) -> None:
            _best(out, name, con, work)

        now = Now.sample().mono_ns
        for r in range(rounds):
            stored.drop(con, "bench")
            cache = FlowCache(600 * 10**9, 600 * 10**9)
            cache.add(keys, values, now)
            timed("first", lambda: stored.write(con, "bench", *cache.changes()))
            part = slice(r * moved, (r + 1) * moved)
            cache.add(keys[part], values[part], now)
            timed("moved", lambda: stored.write(con, "bench", *cache.changes()))
            cache.add(*drain(moved, now, seed=100 + r), now)
            timed("new", lambda: stored.write(con, "bench", *cache.changes()))
            everything = cache.entries

            def rewrite():
                stored.drop(con, "bench")
                stored.write(con, "bench", everything, np.zeros(0, abi.FLOW_KEY))
            timed("rewrite", rewrite)
        assert len(stored.load(con, "bench", RECORD)) == len(cache)
    return out


def spool_ms(records: np.ndarray, rounds: int = 3) -> dict[str, float]:
    """Wall milliseconds an IPFIX-over-TCP export adds to a drain that makes
    len(records) due (their spool row, in the drain's transaction) and to
    the tick that deletes it once acknowledged. The best of `rounds`."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, Storage(f"{tmp}/bench.duckdb") as st:
        con = st.con
        for r in range(rounds):
            _best(out, "spool", con, lambda: stored.spool(con, "bench", r, records))
            _best(out, "unspool", con, lambda: stored.unspool(con, "bench", r))
        assert stored.spools(con) == {}
    return out


def _best(out: dict[str, float], name: str, con, work) -> None:
    """work() in a transaction of its own: its wall ms, the least so far in out[name]."""
    con.execute("BEGIN")
    t = time.perf_counter()
    work()
    con.execute("COMMIT")
    ms = (time.perf_counter() - t) * 1000
    out[name] = min(out.get(name, ms), ms)


def main() -> int:
    keys, values = drain(FLOWS, time.monotonic_ns())
    rates = {}
    for fmt, cls in (("v5", V5Encoder), ("v9", V9Encoder), ("ipfix", IpfixEncoder)):
        rates[fmt] = records_per_s(cls(1, 100, 300), keys, values)
        emit(f"export.records_per_s.{fmt}", rates[fmt], "records/s")
    tracemalloc.start()
    now = Now.sample()
    cache = FlowCache(0, 0)
    cache.add(keys, values, now.mono_ns)
    IpfixEncoder(1, 100, 300).encode(cache.expire(now.mono_ns), now)
    emit("export.peak_mb.ipfix_200k_flows", tracemalloc.get_traced_memory()[1] / 2**20, "MiB")
    tracemalloc.stop()
    ms = persist_ms(keys, values)
    emit("export.persist_ms.cache_200k_first_drain", ms["first"], "ms")
    emit("export.persist_ms.cache_200k_drain_moving_10k", ms["moved"], "ms")
    emit("export.persist_ms.cache_200k_drain_of_10k_new", ms["new"], "ms")
    emit("export.persist_ms.cache_200k_full_rewrite", ms["rewrite"], "ms")
    cache = FlowCache(0, 0)
    cache.add(keys, values, now.mono_ns)
    due = cache.expire(now.mono_ns)
    ms = spool_ms(due)
    emit("export.spool_ms.tcp_200k_records_due", ms["spool"], "ms")
    emit("export.spool_ms.tcp_200k_records_acknowledged", ms["unspool"], "ms")
    if rates["ipfix"] < FLOOR:
        print(f"export.records_per_s.ipfix {rates['ipfix']:.0f} < {FLOOR}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
