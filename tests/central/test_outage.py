"""PostgreSQL away (kill -9, during COPY too) or the gateway killed while
shipping: drains wait in the outbox, status says so, and every drain is in
PostgreSQL exactly once after the catch-up."""

import datetime as dt
import time

import psycopg
import pytest

from tests.central.gateways import (UTC, commit_drain, copying, gateway, kill9_while_copying,
                                    many, status, wait)

pytestmark = pytest.mark.peers
NOW = dt.datetime(2026, 12, 2, 10, tzinfo=UTC)


def per_seq(dsn):
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT seq, count(*), sum(bytes) FROM raw GROUP BY 1 ORDER BY 1"
                         ).fetchall()


def test_postgres_down_then_back_catches_up_once(cluster, central_dsn, tmp_path, caplog):
    caplog.set_level("INFO", "acctd.central")
    with gateway(central_dsn, "gw-a", tmp_path) as d:
        commit_drain(d, NOW, [("alice", 0, 0, 1, 100)])
        wait(lambda: status(d)["shipped_seq"] == 1)
        cluster.kill9()
        try:
            for i in range(3):
                commit_drain(d, NOW + dt.timedelta(seconds=30 * (i + 1)),
                             [("alice", 0, 0, 1, 1000 + i)])
            st = wait(lambda: (s := status(d))["state"] == "unreachable" and s)
            assert st["backlog_drains"] == 3 and st["error"]
            time.sleep(2.5)   # retried every second meanwhile: logged once (throttled)
        finally:
            cluster.start()
        st = wait(lambda: (s := status(d))["caught_up"] and s["caught_up"]["done_at"] and s,
                  timeout=20)
        assert st["state"] == "connected" and st["backlog_drains"] == 0
        assert st["caught_up"]["drains"] == 3 and st["caught_up"]["pending"] == 3
    said = [r.getMessage() for r in caplog.records if r.name == "acctd.central"]
    assert [m.split(" (")[0] for m in said if "unreachable" in m] == ["central gw-a unreachable"]
    assert [m.split(" after")[0] for m in said if "reachable again" in m] == [
        "central gw-a reachable again"]
    assert sum("caught up: 3 drains shipped after the outage" in m for m in said) == 1
    assert per_seq(central_dsn) == [(1, 1, 100), (2, 1, 1000), (3, 1, 1001), (4, 1, 1002)]


def test_postgres_killed_during_copy(cluster, central_dsn, tmp_path):
    n = 200_000
    with gateway(central_dsn, "gw-a", tmp_path) as d:
        wait(lambda: status(d)["state"] == "connected")
        commit_drain(d, NOW, many(d, n))
        commit_drain(d, NOW + dt.timedelta(seconds=30), many(d, n))
        try:
            wait(lambda: copying(central_dsn), timeout=30, step=0.005)
        finally:
            cluster.kill9()
            cluster.start()
        st = wait(lambda: (s := status(d))["shipped_seq"] == 2 and s["backlog_drains"] == 0
                  and s, timeout=60)
        assert st["caught_up"] is not None
    assert per_seq(central_dsn) == [(1, n, n * (n + 1) // 2), (2, n, n * (n + 1) // 2)]


CHILD = """
import datetime as dt, pathlib, sys, time
from tests.central.gateways import UTC, commit_drain, gateway, many
with gateway(sys.argv[1], "gw-a", pathlib.Path(sys.argv[2])) as d:
    for i in range(4):
        commit_drain(d, dt.datetime(2026, 12, 2, 10, tzinfo=UTC) + dt.timedelta(seconds=30 * i),
                     many(d, 150_000))
    print("committed", flush=True)
    time.sleep(600)
"""


def test_gateway_killed_while_shipping(central_dsn, tmp_path):
    kill9_while_copying(CHILD, central_dsn, tmp_path)
    with gateway(central_dsn, "gw-a", tmp_path) as d:
        wait(lambda: (s := status(d))["shipped_seq"] == 4 and s["backlog_drains"] == 0,
             timeout=60)
    n = 150_000
    assert per_seq(central_dsn) == [(i, n, n * (n + 1) // 2) for i in range(1, 5)]


def test_outage_allowance_holds_a_quota_unit_until_the_link_returns(cluster, central_dsn,
                                                                    tmp_path):
    from acctd.kernel.abi import SysPolicy
    from acctd.services.quota import QuotaService
    now = dt.datetime.now(UTC)
    with gateway(central_dsn, "gw-a", tmp_path, outage_allowance=1000) as d:
        d.service(QuotaService).set(["alice", "policy", "ip", "month", "1G", "sum"])
        wait(lambda: status(d)["state"] == "connected")
        cluster.kill9()
        try:
            wait(lambda: status(d)["state"] == "unreachable")
            commit_drain(d, now, [("alice", 0, 0, 1, 600), ("bob", 0, 0, 1, 5000)])
            assert d.sys_policy_bits() == {}
            commit_drain(d, now, [("alice", 0, 1, 1, 600)])      # 1200 > 1000 since down
            assert d.sys_policy_bits() == {d.snapshot.find("alice"): SysPolicy.QUOTA}
            assert status(d)["held_for_outage"] == [d.snapshot.unit("alice").oid]
        finally:
            cluster.start()
        wait(lambda: status(d)["state"] == "connected", timeout=20)
        assert d.sys_policy_bits() == {} and status(d)["held_for_outage"] == []
