"""Shared state between two gateways over one PostgreSQL: a block decided
on one is held by the other within 2 s (LISTEN/NOTIFY), again after a
reconnect; a day quota counts the traffic of both."""

import datetime as dt
import time

import pytest

from acctd.kernel.abi import SysPolicy
from acctd.services.central import CentralService
from acctd.services.quota import QuotaService
from tests.central.gateways import UTC, commit_drain, gateway, status, wait

pytestmark = pytest.mark.peers


def bits(d, unit: str) -> int:
    """The unit's blocks as the core resolves them for the kernel."""
    return d.sys_policy_bits().get(d.snapshot.find(unit), 0)


def test_a_block_on_one_gateway_reaches_the_other(cluster, central_dsn, tmp_path):
    with gateway(central_dsn, "gw-a", tmp_path) as a, gateway(central_dsn, "gw-b", tmp_path) as b:
        wait(lambda: status(a)["state"] == status(b)["state"] == "connected")
        t = time.monotonic()
        a.set_sys_policy("bob", "sys-deny")
        wait(lambda: bits(b, "bob") == SysPolicy.DENY, timeout=5, step=0.005)
        assert time.monotonic() - t < 2.0
        assert bits(b, "alice") == 0 and status(b)["blocks_from_elsewhere"] == 1
        # decided while the server is away: published, and read, after the reconnect
        cluster.kill9()
        try:
            wait(lambda: status(b)["state"] == "unreachable")
            a.set_sys_policy("bob", "sys-allow")
            a.set_sys_policy("alice", "sys-deny")
            time.sleep(0.5)
            assert bits(b, "bob") == SysPolicy.DENY     # the last state it knew
        finally:
            cluster.start()
        wait(lambda: bits(b, "alice") == SysPolicy.DENY and bits(b, "bob") == 0, timeout=20)


def test_a_day_quota_counts_both_gateways(central_dsn, tmp_path):
    now = dt.datetime.now(UTC)
    with gateway(central_dsn, "gw-a", tmp_path) as a, gateway(central_dsn, "gw-b", tmp_path) as b:
        for d in (a, b):
            d.service(QuotaService).set(["alice", "policy", "ip", "day", "1000", "sum"])
        wait(lambda: status(a)["state"] == status(b)["state"] == "connected")
        commit_drain(a, now, [("alice", "ip", 0, 1, 600), ("alice", 0, 0, 1, 600)])
        assert a.service(QuotaService).held() == set()
        alice = a.snapshot.unit("alice").oid
        wait(lambda: b.service(CentralService).usage_elsewhere(
            alice, int(b.snapshot.policies.policies[0].oid, 16), now).get("day") == (600, 0))
        commit_drain(b, now, [("alice", "ip", 1, 1, 500), ("alice", 0, 1, 1, 500)])
        assert b.service(QuotaService).held() == {alice}     # 600 there + 500 here > 1000
        assert bits(b, "alice") == SysPolicy.QUOTA
        wait(lambda: bits(a, "alice") == SysPolicy.QUOTA, timeout=2)
        assert bits(a, "bob") == bits(b, "bob") == 0


def test_a_quota_set_later_counts_what_the_others_moved_before(central_dsn, tmp_path):
    now = dt.datetime.now(UTC)
    with gateway(central_dsn, "gw-a", tmp_path) as a, gateway(central_dsn, "gw-b", tmp_path) as b:
        wait(lambda: status(a)["state"] == status(b)["state"] == "connected")
        commit_drain(b, now, [("alice", "ip", 0, 1, 700)])
        wait(lambda: status(b)["shipped_seq"] == 1 and status(b)["backlog_drains"] == 0)
        a.service(QuotaService).set(["alice", "policy", "ip", "day", "1000", "sum"])
        ip = int(a.snapshot.policies.policies[0].oid, 16)
        alice = a.snapshot.unit("alice").oid
        wait(lambda: a.service(CentralService).usage_elsewhere(alice, ip, now).get("day") ==
             (700, 0))
        commit_drain(a, now, [("alice", "ip", 1, 1, 400)])
        assert a.service(QuotaService).held() == {alice}


def test_an_operator_blocks_from_acctctl_central_with_no_gateway_asked(central_dsn, tmp_path):
    from click.testing import CliRunner

    from acctctl.main import main
    with gateway(central_dsn, "gw-b", tmp_path) as b:
        wait(lambda: status(b)["state"] == "connected")
        t = time.monotonic()
        r = CliRunner().invoke(main, ["--central", central_dsn, "unit", "bob", "sys-deny"])
        assert (r.exit_code, r.output) == (0, "bob: sys-deny\n")
        wait(lambda: bits(b, "bob") == SysPolicy.DENY, timeout=5, step=0.005)
        assert time.monotonic() - t < 2.0
        r = CliRunner().invoke(main, ["--central", central_dsn, "unit", "bob", "sys-allow"])
        assert (r.exit_code, r.output) == (0, "bob: no system policy\n")
        wait(lambda: bits(b, "bob") == 0, timeout=5, step=0.005)
        r = CliRunner().invoke(main, ["--central", central_dsn, "unit", "bob", "sys-maybe"])
        assert r.exit_code == 1 and r.output.startswith("Error: unknown system policy 'sys-maybe'")
