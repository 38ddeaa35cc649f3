"""`make bench`, the monitor service: flow rows stored per second (`monitor
to storage`: match the local unit, pick the monitored flows, build the rows,
insert them in one statement and commit), and one unit's `monitor query`
over what was stored, as JSON lines {"name", "value", "unit"}. No kernel:
the flows are control.flows(), into a temporary DuckDB file.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np

from acctd.bench.control import T0, emit, flows, model
from acctd.kernel import abi
from acctd.model.units import oid_ints
from acctd.services.monitor import covered, select
from acctd.store import monitor as table
from acctd.store.database import Storage
from acctd.store.rollup import to_us


def bench_rows(n_flows: int = 500_000, n_units: int = 10_000, drains: int = 3
               ) -> tuple[float, float]:
    """(flow rows stored per second, median of `drains`; ms of one unit's
    query over all of them), every unit monitored."""
    units, _ = model(n_units, 1)
    oids = oid_ints(units.units)
    mask = covered(units, list(range(len(units))))
    keys, pk, by = flows(n_flows, n_units)
    vals = np.zeros(n_flows, abi.FLOW_VAL)
    vals["packets"], vals["bytes"] = pk, by
    vals["first_ns"] = vals["last_ns"] = time.monotonic_ns()
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        with Storage(os.path.join(tmp, "bench.duckdb")) as st:
            for i in range(drains):
                ts_us = to_us(T0) + i * 60_000_000
                t = time.perf_counter()
                hit, leaf = select(units, mask, keys)
                rows = table.flow_rows(keys[hit], vals[hit], oids[leaf[hit]], wall_us=ts_us,
                                       mono_ns=time.monotonic_ns())
                st.con.execute("BEGIN")
                n = table.write(st.con, ts_us, rows)
                table.prune(st.con, ts_us - 86400 * 1_000_000)
                st.con.execute("COMMIT")
                times.append(n / (time.perf_counter() - t))
            t = time.perf_counter()
            table.query(st.con, [int(oids[0])], top=10)
            query_ms = (time.perf_counter() - t) * 1000
    return statistics.median(times), query_ms


def main() -> None:
    rate, query_ms = bench_rows()
    emit("monitor.rows_per_s", rate, "rows/s")
    emit("monitor.query_ms.rows_1_5m", query_ms, "ms")


if __name__ == "__main__":
    main()
