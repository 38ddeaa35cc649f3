"""The billing ledger across gateways: every row shipped once, in order,
into the server's ledger keyed by (gateway, seq); a credit limit counts the
account's charges on all gateways, and both block when they cross it."""

import datetime as dt
from decimal import Decimal

import psycopg
import pytest

from acctd.kernel.abi import SysPolicy
from acctd.services.billing import ledger
from acctd.services.billing.service import BillingService
from tests.central.gateways import UTC, commit_drain, gateway, kill9_while_copying, status, wait

pytestmark = pytest.mark.peers

# every byte in under policy ip is overdraft, at 1.00 a megabyte
BILLING = """
[billing]
currency = "EUR"
[billing.subplan.1]
policy = "ip"
overdraft = "1.00 in"
[billing.plan.1]
name = "metered"
subplans = [1]
"""
ACCOUNT = ["plan", "1", "credit-limit", "-10", "unit", "name", "alice", "add"]


def bits(d, unit: str) -> int:
    return d.sys_policy_bits().get(d.snapshot.find(unit), 0)


def local_rows(d) -> list[tuple]:
    with d.lock:
        return [(e.seq, e.kind, e.amount) for e in ledger.rows(d.storage.con)]


def pg_ledger(dsn, name: str) -> list[tuple]:
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT l.seq, l.kind, l.amount FROM ledger l JOIN gateway g "
                         "ON g.id = l.gateway_id WHERE g.name = %s ORDER BY seq", (name,)
                         ).fetchall()


def test_charges_split_across_gateways_cross_the_credit_limit_and_both_block(
        central_dsn, tmp_path):
    with gateway(central_dsn, "gw-a", tmp_path, extra=BILLING) as a, \
            gateway(central_dsn, "gw-b", tmp_path, extra=BILLING) as b:
        wait(lambda: status(a)["state"] == status(b)["state"] == "connected")
        a.service(BillingService).account_create("acc", ACCOUNT)    # b has it from a
        wait(lambda: 1 in b.service(BillingService).accounts)
        now = dt.datetime.now(UTC)
        commit_drain(a, now, [("alice", "ip", 0, 1, 6_000_000)])
        assert bits(a, "alice") == 0
        # 6e6 bytes at 1.00 a MiB, shipped: b's balance of the account counts it
        wait(lambda: b.service(BillingService).account_show("acc")["account"]["balance"] ==
             "-5.72")
        assert bits(b, "alice") == 0                    # -6 alone is within -10
        commit_drain(b, now, [("alice", "ip", 0, 1, 5_000_000)])
        assert bits(b, "alice") == SysPolicy.MONEY      # -6 there + -5 here < -10
        wait(lambda: a.service(BillingService).reasons == {1: "money"}, timeout=2)
        # 6e6 + 5e6 bytes, on both gateways
        for d in (a, b):
            assert d.service(BillingService).account_show("acc")["account"]["balance"] == \
                "-10.49"
        # a payment on one gateway lifts the block on both
        a.service(BillingService).account_set("acc", ["balance", "add", "20"])
        assert a.service(BillingService).reasons == {}
        wait(lambda: bits(b, "alice") == 0 and bits(a, "alice") == 0, timeout=2)
        for d, name in ((a, "gw-a"), (b, "gw-b")):
            wait(lambda: status(d)["backlog_drains"] == 0)
            assert pg_ledger(central_dsn, name) == local_rows(d)
        assert [r[1] for r in local_rows(a)] == ["overdraft", "adjustment"]


CHILD = """
import datetime as dt, pathlib, sys, time
from acctd.services.billing.service import BillingService
from tests.central.gateways import UTC, commit_drain, gateway, many
from tests.central.test_ledger import ACCOUNT, BILLING
with gateway(sys.argv[1], "gw-a", pathlib.Path(sys.argv[2]), extra=BILLING) as d:
    d.service(BillingService).account_create("acc", ACCOUNT)
    now = dt.datetime.now(UTC)    # after the account was made: it is charged from then
    for i in range(4):
        t = now + dt.timedelta(seconds=30 * i)
        commit_drain(d, t, [("alice", "ip", 0, 1, 1_000_000 * (i + 1))])
        commit_drain(d, t, many(d, 150_000))
    print("committed", flush=True)
    time.sleep(600)
"""


def test_a_gateway_killed_while_shipping_ledger_rows_doubles_nothing(central_dsn, tmp_path):
    kill9_while_copying(CHILD, central_dsn, tmp_path)
    with gateway(central_dsn, "gw-a", tmp_path, extra=BILLING) as d:
        # 8 drains, and after each charging one the ledger rows it rated
        wait(lambda: (s := status(d))["shipped_seq"] == 12 and s["backlog_drains"] == 0,
             timeout=60)
        mine = local_rows(d)
    assert len(mine) == 4 and pg_ledger(central_dsn, "gw-a") == mine
    with psycopg.connect(central_dsn) as c:
        assert c.execute("SELECT sum(amount) FROM ledger").fetchone()[0] == \
            sum((r[2] for r in mine), Decimal(0))


def test_outage_credit_blocks_an_account_until_the_link_returns(cluster, central_dsn, tmp_path):
    with gateway(central_dsn, "gw-a", tmp_path,
                 extra=BILLING.replace("[billing]\n", '[billing]\noutage-credit = "2"\n')) as d:
        bill = d.service(BillingService)
        bill.account_create("acc", ACCOUNT)
        now = dt.datetime.now(UTC)
        wait(lambda: status(d)["state"] == "connected")
        cluster.kill9()
        try:
            wait(lambda: status(d)["state"] == "unreachable")
            commit_drain(d, now, [("alice", "ip", 0, 1, 1_500_000)])     # 1.43 since down
            assert bits(d, "alice") == 0
            commit_drain(d, now, [("alice", "ip", 0, 1, 1_500_000)])     # 2.86 > 2
            assert bits(d, "alice") == SysPolicy.MONEY and bill.reasons == {1: "outage"}
            assert bill.account_show()["text"].startswith("acc (000001) BLOCKED (outage) "
                                                          "bal: -2.86")
        finally:
            cluster.start()
        wait(lambda: status(d)["state"] == "connected", timeout=20)
        wait(lambda: bits(d, "alice") == 0 and bill.reasons == {}, timeout=5)
