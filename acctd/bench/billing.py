"""`make bench`, billing: rating one drain for 10,000 accounts, as JSON lines
{"name", "value", "unit"}. Needs no kernel.

What is timed is BillingService.in_drain on a real DuckDB file, in the
drain's transaction: the drain's rows summed per account and subplan, the
rating, the ledger rows and the rating state written. Every account moved
traffic over its included volume, so each gets an overdraft row; in the
first drain of a day each also gets its fee row (accounts_10k_new_day).
"""

from __future__ import annotations

import datetime as dt
import statistics
import tempfile
import threading
import time
from decimal import Decimal

import numpy as np

from acctd.bench.control import emit
from acctd.config import loads
from acctd.kernel import abi
from acctd.model.snapshot import Snapshot
from acctd.services.billing import accounts, ledger
from acctd.services.billing.service import BillingService
from acctd.services.contract import Drain
from acctd.store.database import Storage

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.timezone.utc)
TARIFF = """
[processor]
time-zone = "Europe/Berlin"
[[policy]]
name = "ip"
target = "proto ip"
[billing.subplan.1]
policy = "ip"
fee = "30.00"
spread = "daily"
included = "1M in"
overdraft = "0.10 in 0.05 out"
[billing.plan.1]
name = "daily"
subplans = [1]
"""


class _Core:
    """What BillingService uses of the daemon, and nothing else."""

    def __init__(self, cfg, storage: Storage, clock):
        self.config, self.storage, self.clock = cfg, storage, clock
        self.snapshot = Snapshot.build(cfg)
        self.lock = threading.RLock()
        self.services: dict = {}       # no central: balances are this gateway's

    def enforce(self) -> dict:
        return {}


def bench_rate(n_accounts: int = 10_000, tries: int = 7) -> tuple[float, float]:
    """Median ms of in_drain for n_accounts accounts of one unit each: a
    drain within the day, and the first of a day."""
    units = "".join(f'[[unit]]\ntype = "user"\nname = "u{i}"\n' for i in range(n_accounts))
    cfg = loads(TARIFF + units, "<bench>")
    now = [T0]
    with tempfile.TemporaryDirectory() as tmp, Storage(f"{tmp}/b.duckdb", cfg.processor.zone) as st:
        core = _Core(cfg, st, lambda: now[0])
        st.con.execute("BEGIN")
        for i, u in enumerate(core.snapshot.units):
            a = accounts.create(st.con, u.name, T0 - dt.timedelta(days=40), plan=1, oid=i + 1)
            accounts.add_unit(st.con, a.oid, u.oid)
        ledger.append(st.con, [ledger.Entry(i + 1, "payment", Decimal(100), T0)
                               for i in range(n_accounts)])
        st.con.execute("COMMIT")
        svc = BillingService(core, cfg.billing)
        svc.start()
        oids = np.array([int(u.oid, 16) for u in core.snapshot.units], np.uint32)
        ip = int(core.snapshot.policies.policies[0].oid, 16)
        n = len(oids)
        rows = {"unit_oid": np.concatenate([oids, oids]),
                "policy_oid": np.full(2 * n, ip, np.uint32),
                "dir": np.repeat(np.array([abi.Dir.IN, abi.Dir.OUT], np.uint8), n),
                "packets": np.ones(2 * n, np.uint64),
                "bytes": np.full(2 * n, 3 << 20, np.uint64)}
        e = np.zeros(0)
        times: dict[bool, list[float]] = {True: [], False: []}
        for k in range(2 * tries):
            new_day = k % 2 == 0
            now[0] = T0 + dt.timedelta(days=k // 2 + 1, minutes=0 if new_day else 1)
            d = Drain(now[0], core.snapshot, rows, e, e, e, e)
            st.con.execute("BEGIN")
            t = time.perf_counter()
            svc.in_drain(d, st)
            times[new_day].append(time.perf_counter() - t)
            st.con.execute("COMMIT")
            svc.after_drain(d)
        charged = st.con.execute("SELECT count(*) FROM ledger WHERE kind <> 'payment'"
                                 ).fetchall()[0][0]
        assert charged == 3 * n * tries, charged   # an overdraft each drain, a fee each day
    return statistics.median(times[False]) * 1000, statistics.median(times[True]) * 1000


def main() -> None:
    within_day, new_day = bench_rate()
    emit("billing.rate_ms.accounts_10k", within_day, "ms")
    emit("billing.rate_ms.accounts_10k_new_day", new_day, "ms")


if __name__ == "__main__":
    main()
