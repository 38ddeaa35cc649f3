"""In-process gateways for the central tests: the real Daemon, its services
and DuckDB storage (tests/unit/daemon_stub.py), with drains committed as
the core commits them (each service's in_drain in the transaction, then
after_drain), so the outbox and the shipper run as in a gateway."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import time

import numpy as np

from acctd import config
from acctd.services.central import CentralService
from acctd.services.contract import Drain
from acctd.store import rollup
from tests.unit.daemon_stub import ALICE, daemon_stub

UTC = dt.timezone.utc


def cfg(dsn: str, gateway: str, extra: str = "", **central) -> config.Config:
    return config.loads(config_text(dsn, gateway, extra, **central))


def config_text(dsn: str, gateway: str, extra: str = "", **central) -> str:
    keys = "".join(f'{k.replace("_", "-")} = {v}\n' for k, v in central.items())
    return (ALICE + f"""
[[unit]]
type = "user"
name = "bob"
acct-policy = ["ip"]

[central]
dsn = "{dsn}"
gateway = "{gateway}"
retry = 1
{keys}{extra}""")


@contextlib.contextmanager
def gateway(dsn: str, name: str, tmp_path, clock=None, extra: str = "", **central):
    c = cfg(dsn, name, extra, **central)
    (tmp_path / name).mkdir(parents=True, exist_ok=True)
    with daemon_stub(c, tmp_path=tmp_path / name, clock=clock) as d:
        d.drain_locked = lambda: {"drain": 1}   # no kernel: a unit made drains nothing
        d.service(CentralService).serve()
        yield d


def rows(d, cells) -> dict[str, np.ndarray]:
    """Drain rows from [(unit name or 0, policy name or 0, dir, packets, bytes)]."""
    snap = d.snapshot
    out = {"unit_oid": [], "policy_oid": [], "dir": [], "packets": [], "bytes": []}
    for unit, pol, di, p, b in cells:
        out["unit_oid"].append(0 if unit == 0 else int(snap.unit(unit).oid, 16))
        out["policy_oid"].append(0 if pol == 0 else int(
            snap.policies.policies[snap.policies.find(pol)].oid, 16))
        out["dir"].append(di)
        out["packets"].append(p)
        out["bytes"].append(b)
    types = {"unit_oid": np.uint32, "policy_oid": np.uint32, "dir": np.uint8,
             "packets": np.uint64, "bytes": np.uint64}
    return {k: np.array(v, types[k]) for k, v in out.items()}


def many(d, n: int, unit: str = "alice") -> dict[str, np.ndarray]:
    """n drain rows of one unit, bytes 1..n (their sum is n(n+1)/2)."""
    return {"unit_oid": np.full(n, int(d.snapshot.unit(unit).oid, 16), np.uint32),
            "policy_oid": np.zeros(n, np.uint32), "dir": (np.arange(n) % 2).astype(np.uint8),
            "packets": np.ones(n, np.uint64), "bytes": np.arange(1, n + 1, dtype=np.uint64)}


def commit_drain(d, now: dt.datetime, cells) -> None:
    """One drain of these rows (cells for rows(), or the columns), committed
    as the core commits one."""
    r = cells if isinstance(cells, dict) else rows(d, cells)
    empty = np.zeros(0)
    dr = Drain(now, d.snapshot, r, empty, empty, empty, empty)
    with d.lock:
        def in_tx(tx):
            for s in d.services.values():
                s.in_drain(dr, tx)
        d.storage.commit(rollup.rollup(r, now, d.snapshot.config.processor.zone), {}, in_tx)
        for s in d.services.values():
            s.after_drain(dr)


def wait(what, timeout: float = 10.0, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = what()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(step)


def status(d) -> dict:
    with d.lock:
        return d.service(CentralService).status()["central"]


def copying(dsn) -> bool:
    """Whether a COPY into raw is running on the server."""
    import psycopg
    with psycopg.connect(dsn, autocommit=True) as c:
        return bool(c.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                              "AND query LIKE 'COPY raw%'").fetchone()[0])


def kill9_while_copying(child: str, dsn: str, tmp_path) -> None:
    """Run `child` (Python: a gateway that commits drains, prints "committed"
    and waits) and kill -9 it while it COPYs them to the server."""
    p = subprocess.Popen([sys.executable, "-c", child, dsn, str(tmp_path)],
                         stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert p.stdout.readline() == "committed\n"
        wait(lambda: copying(dsn), timeout=30, step=0.005)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    time.sleep(0.5)   # PostgreSQL notices the dead client and rolls its COPY back
