"""`make bench`, the web console: the overview for 10,000 units and one
unit's month chart, rendered server-side (Flask route, page tables, Jinja
template) with the daemon's report queries over a real DuckDB file (a
month of day rollups for every unit, a month of hour rollups for the
charted one); only the socket is left out. And a /metrics scrape with the
top 20 units' month gauges. JSON lines {"name", "value",
"unit"}: the median of a few runs, in ms."""

from __future__ import annotations

import datetime as dt
import os
import statistics
import tempfile
import time
import types

import numpy as np

from acctd.bench.control import emit, model
from acctd.control import commands
from acctd.model.units import oid_ints
from acctd.store import queries
from acctd.store.database import Storage
from acctd.store.rollup import period_start, to_us
from acctd.web.metrics import parse_allow

NOW = dt.datetime(2026, 11, 28, 15, 30, tzinfo=dt.timezone.utc)
UTC = dt.timezone.utc


def _fill(st: Storage, oids: np.ndarray, policies: np.ndarray) -> None:
    """This month so far: a day row for every unit (in and out, all
    traffic), and an hour row for the first unit with each policy; written
    in bulk (the bench reads them, drains are benched elsewhere)."""
    lo = to_us(period_start("month", NOW, UTC))
    days = (NOW - period_start("month", NOW, UTC)).days + 1
    fill = ("INSERT INTO rollup SELECT $kind, make_timestamp($lo + t.range * $step), u.oid, "
            "p.oid, r.range::UTINYINT, 1 + (u.oid * 7 + t.range) % 10000, "
            "1 + (u.oid * 7919 + t.range * 104729 + r.range) % 1000000000 "
            "FROM range($n) t, (SELECT unnest($units) AS oid) u, "
            "(SELECT unnest($policies) AS oid) p, range(2) r")
    st.con.execute(fill, {"kind": "day", "lo": lo, "step": 86_400_000_000, "n": days,
                          "units": [int(o) for o in oids], "policies": [0]})
    st.con.execute(fill, {"kind": "hour", "lo": lo, "step": 3_600_000_000, "n": days * 24,
                          "units": [int(oids[0])],
                          "policies": [0, *(int(p) for p in policies)]})
    # the period tops: this month's and today's rows of 10,000 addresses
    # and of 200 ports (the month query folds in the open day)
    today = to_us(period_start("day", NOW, UTC))
    tops = ("INSERT INTO rollup_by SELECT $by, k.kind, make_timestamp(k.start), 0, $base + i.range, "
            "i.range, i.range, 1 + (i.range * 7919) % 1000000000, 1 + (i.range * 104729) % 100000 "
            "FROM range($n) i, (SELECT unnest(['month', 'day']) AS kind, "
            "unnest([$lo, $today]) AS start) k")
    st.con.execute(tops, {"by": "addr", "base": 0xFFFF0A000002, "n": len(oids), "lo": lo,
                          "today": today})
    st.con.execute(tops, {"by": "port", "base": 0, "n": 200, "lo": lo, "today": today})
    st.set_meta("tops_open", f'{{"day": {today}}}')


def _rates(names: list[str], step: int) -> dict:
    addrs = [{"addr": f"10.{i >> 8 & 255}.{i & 255}.2", "unit": n, "packets_in": step * i,
              "packets_out": step * i, "bytes_in": step * i * 900, "bytes_out": step * i * 90}
             for i, n in enumerate(names)]
    return {"ts": float(step), "addrs": addrs,
            "vlans": {"untagged": {"packets_in": step, "packets_out": step,
                                   "bytes_in": step * 10**6, "bytes_out": step * 10**5}},
            "ports": {f"tcp/{p}": {"packets_in": step * p, "packets_out": step * p,
                                   "bytes_in": step * p * 900, "bytes_out": step * p * 90}
                      for p in range(1, 200)},
            "units": {n: {"groups": [], "today": {}, "month": {}} for n in names}}


def _daemon(st: Storage, m, names: list[str]):
    """The console's daemon: the report queries the daemon runs, over `st`."""
    status = {"last_drain": NOW.isoformat(), "failed_drains": 0, "last_error": None,
              "drains": 1,
              "datapath": {"fill": {"acct_addrs": {"entries": len(names), "max": 65536,
                                                   "percent": 15.3}},
                           "health": {}, "unattributed_bytes": 0, "dropped_bytes": 0,
                           "dropped": {}, "interfaces": {}, "flow_evictions": 0},
              "services": {}}
    step = [0]

    def rates():
        step[0] += 1
        return _rates(names, step[0])

    answers = {
        "web-login": lambda **a: {"token": "t", "name": "ops", "level": "operator", "unit": None},
        "status": lambda: status,
        "rates": rates,
        "units": lambda **a: [],
        "top-units": lambda **a: queries.report_top_units(st, m, now=NOW, **a),
        "top-by": lambda **a: queries.report_top_by(st, m, now=NOW, **a),
        "series": lambda **a: queries.report_series(st, m, now=NOW, **a),
        "quota-show": lambda **a: {"units": []},
        "list": lambda unit: {"unit": unit, "policies": []},
        "session-list": lambda **a: [],
        "monitor-show": lambda: {"units": []},
        "perf": lambda: [],
    }
    return lambda cmd, token=None, /, **args: answers[cmd](**commands.get(cmd).bind(args))


def timed(client, path: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        r = client.get(path)
        times.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, r.status_code
    return statistics.median(times)


def main() -> None:
    from acctd.web import app as web_app
    web_app.RATE_GAP = 0.0   # the two snapshots of a cold start are the daemon's, not ours
    units, plan = model(10_000, 4)
    m = types.SimpleNamespace(units=units, policies=plan.policies)
    oids = np.array(oid_ints(units.units), np.uint32)
    policies = np.array([int(p.oid, 16) for p in plan.policies.policies], np.uint32)
    names = [u.name for u in units.units]
    with tempfile.TemporaryDirectory() as tmp, Storage(os.path.join(tmp, "bench.duckdb"),
                                                       UTC) as st:
        _fill(st, oids, policies)
        app = web_app.create_app(_daemon(st, m, names))
        c = app.test_client()
        page = c.get("/login").get_data(as_text=True)
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        c.post("/login", data={"name": "ops", "password": "x", "csrf": csrf})
        emit("web.overview_ms.units_10k", timed(c, "/?period=month&limit=10", 7), "ms")
        emit("web.unit_month_chart_ms", timed(c, f"/unit/{names[0]}?view=day", 7), "ms")
        # /metrics with the opt-in month gauges of the top 20 (from loopback, no login)
        scraped = web_app.create_app(_daemon(st, m, names), metrics_allow=parse_allow(
            "127.0.0.1"), metrics_top_units=20).test_client()
        emit("web.metrics_scrape_ms.units_10k", timed(scraped, "/metrics", 7), "ms")


if __name__ == "__main__":
    main()
