"""`make bench`, several gateways ([central]): against a throwaway
PostgreSQL (acctd/bench/pgcluster.py), as JSON lines {"name", "value", "unit"}.

- central.ingest_rows_per_s: drains of 100,000 rows each (10,000 units x 10
  policies) shipped by the shipper's own path (ship.ship: binary COPY into
  the month partition, shipped_seq, NOTIFY) from two gateways at once, 4
  drains a transaction; rows per second of wall time.
- central.block_propagation_ms (median, max): a block decided on gateway A
  (a stored sys-deny) until gateway B's CentralService holds it and calls
  enforce(), over LISTEN/NOTIFY between two shipper threads; the kernel
  write after that is one map update (tests/central/test_gateways_netns.py
  checks the whole way into B's kernel within 2 s).
Skipped with a line saying why where PostgreSQL's binaries are missing.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

from acctd.bench.pgcluster import BINDIRS, Cluster

UNITS, POLICIES, DRAINS = 10_000, 10, 20
ROUNDS = 15


def emit(name: str, value: float, unit: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 4), "unit": unit}), flush=True)


def ingest(dsn: str, gateways: int = 2) -> float:
    """Rows/s of `gateways` shippers at once, each its own connection (as
    gateways ship), 4 drains (400,000 rows) a transaction."""
    import psycopg

    from acctd.services.central import schema, ship
    n = UNITS * POLICIES
    rows = {"unit_oid": np.repeat(np.arange(1, UNITS + 1, dtype=np.uint32), POLICIES),
            "policy_oid": np.tile(np.arange(POLICIES, dtype=np.uint32), UNITS),
            "dir": np.zeros(n, np.uint8), "packets": np.ones(n, np.uint64),
            "bytes": np.arange(n, dtype=np.uint64)}
    blob = ship.pack(rows)
    t0 = int(dt.datetime(2026, 11, 2, 9, tzinfo=dt.timezone.utc).timestamp() * 1e6)
    conns, ids = [], []
    for g in range(gateways):
        c = psycopg.connect(dsn, autocommit=True)
        schema.migrate(c)
        ids.append(c.execute("INSERT INTO gateway (name) VALUES (%s) RETURNING id",
                             (f"bench{g}",)).fetchone()[0])
        ship.ship(c, ids[-1], [(1, t0, blob)])   # the partition made, caches warm
        conns.append(c)
    drains = [(i, t0 + i * 30_000_000, blob) for i in range(2, DRAINS + 2)]

    def run(c, gw):
        for i in range(0, len(drains), 4):
            ship.ship(c, gw, drains[i:i + 4])
    threads = [threading.Thread(target=run, args=a) for a in zip(conns, ids)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    got = conns[0].execute("SELECT count(*) FROM raw").fetchone()[0]
    for c in conns:
        c.close()
    assert got == n * (DRAINS + 1) * gateways, got
    return n * DRAINS * gateways / took


class _Core:
    """The little of a daemon's core CentralService uses, over real storage."""

    def __init__(self, path: str, cfg):
        from acctd.model.snapshot import Snapshot
        from acctd.store.database import Storage
        self.lock = threading.RLock()
        self.storage = Storage(path)
        self.snapshot = Snapshot.build(cfg)
        self.config = cfg
        self.services: dict = {}
        self.enforced = threading.Event()

    def clock(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc)

    def enforce(self) -> dict:
        self.enforced.set()
        return {}


def propagation(dsn: str, tmp: str) -> list[float]:
    from acctd import config
    from acctd.kernel.abi import SysPolicy
    from acctd.services.central import CentralService
    text = """
[[policy]]
name = "ip"
target = "proto ip"
[[unit]]
type = "user"
name = "alice"
[central]
dsn = "%s"
gateway = "%s"
"""
    cores, services = [], []
    for name in ("a", "b"):
        cfg = config.loads(text % (dsn, name))
        core = _Core(f"{tmp}/{name}.duckdb", cfg)
        svc = CentralService(core, cfg.central)
        core.services = {"central": svc}
        svc.start()
        svc.serve()
        cores.append(core)
        services.append(svc)
    a, b = cores
    oid = a.snapshot.units.units[0].oid
    took = []
    try:
        deadline = time.monotonic() + 30
        while not all(s.state == "connected" for s in services):
            if time.monotonic() > deadline:
                raise RuntimeError(f"not connected: {[s.error for s in services]}")
            time.sleep(0.01)
        for i in range(ROUNDS * 2):
            want = {oid: SysPolicy.DENY} if i % 2 == 0 else {}
            b.enforced.clear()
            t = time.perf_counter()
            with a.lock:
                a.storage.set_sys_policy(oid, SysPolicy.DENY if want else 0)
            while services[1].remote != want:
                b.enforced.wait(0.001)
            took.append((time.perf_counter() - t) * 1000)
    finally:
        for s, c in zip(services, cores):
            s.close()
            c.storage.close()
    return took


def main() -> int:
    try:
        import psycopg
    except ImportError:
        print("central: skipped, psycopg 3 is not installed", file=sys.stderr)
        return 0
    if not BINDIRS:
        print("central: skipped, no PostgreSQL binaries (/usr/lib/postgresql/*/bin)",
              file=sys.stderr)
        return 0
    c = Cluster()
    try:
        c.initdb()
        c.start()
        emit("central.ingest_rows_per_s", ingest(c.dsn()), "rows/s")
        with psycopg.connect(c.dsn(), autocommit=True) as con:
            con.execute("CREATE DATABASE blocks")
        with tempfile.TemporaryDirectory() as tmp:
            took = propagation(c.dsn("blocks"), tmp)
        emit("central.block_propagation_ms.median", statistics.median(took), "ms")
        emit("central.block_propagation_ms.max", max(took), "ms")
    finally:
        c.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
