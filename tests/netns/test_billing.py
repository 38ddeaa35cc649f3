"""Billing with real traffic over a month of injected time: two accounts on
two plans, a fee spread daily, included traffic then overdraft, a balance
that crosses the credit limit and blocks the units in the kernel (their
traffic drops), and a payment that unblocks them; the ledger matches a hand
computation to the cent. Then kill -9 under traffic, again and again: no
charge lost or doubled."""

from __future__ import annotations

import datetime as dt
import os
import random
from decimal import Decimal

import pytest

from .test_attachment import CONFIG as ALICE   # the gateway, the policy ip, alice
from .topology import LINKS
from acctd.services.billing import ledger
from acctd.services.billing.service import BillingService, load_book

pytestmark = [pytest.mark.root, pytest.mark.netns]

SUB1, SUB2, SRV = LINKS["sub1"], LINKS["sub2"], LINKS["srv"]
MB = 1 << 20

CONFIG = ALICE + """[[unit]]
type = "host"
name = "bob"
ip = "{bob}"
[billing]
currency = "EUR"
time-zone = "Europe/Berlin"
[billing.subplan.1]
policy = "ip"
fee = "30.00"
spread = "daily"
included = "1M in"
overdraft = "2.00 in"
[billing.subplan.2]
policy = "ip"
fee = "10.00"
included = "unlimited"
[billing.plan.1]
name = "daily"
subplans = [1]
[billing.plan.2]
name = "flat"
subplans = [2]
"""

BERLIN = dt.timezone(dt.timedelta(hours=1))     # November: no DST change


def daemon(topo, tmp_path, clock):
    from acctd import config
    from acctd.daemon.core import Daemon
    from acctd.kernel.build import Sizes
    cfg_path = tmp_path / "acctd.toml"
    cfg_path.write_text(CONFIG.format(db=tmp_path / "acctd.duckdb", alice=SUB1.v4(),
                                      bob=SUB2.v4()))
    return Daemon(config.load(str(cfg_path)),
                  Sizes(pin_root=f"/sys/fs/bpf/acctd-b-{os.getpid()}-{random.randrange(1 << 30)}",
                        flows=4096, addrs=256), netns=topo.ns["gw"], clock=lambda: clock[0])


def test_a_month_of_fees_overdraft_a_block_for_money_and_a_payment(topo, tmp_path):
    clock = [dt.datetime(2026, 11, 1, 0, 10, tzinfo=BERLIN)]
    d = daemon(topo, tmp_path, clock)

    def pings(sub: str) -> int:
        return topo.ping(sub, SRV.v4(), count=4, size=56).received

    def balance(name: str) -> Decimal:
        return Decimal(d.call("billing-account", account=name)["account"]["balance"])

    try:
        d.start()
        d.call("billing-account-create", name="alice",
               words=["plan", "1", "unit", "name", "alice", "add", "balance", "add", "12.00"])
        d.call("billing-account-create", name="bob",
               words=["plan", "2", "unit", "name", "bob", "add", "balance", "add", "20.00"])
        # day 1: 1.00 of alice's fee, bob's month; 1000 datagrams of 1400 IP bytes to alice,
        # 351424 bytes over her 1 MiB: 0.6703... -> 0.67
        udp = topo.send_udp("srv", SRV.v4(), "sub1", SUB1.v4(), count=1000, length=1372)
        assert udp.ip_bytes == 1_400_000
        d.drain()
        assert balance("alice") == Decimal("12.00") - Decimal("1.00") - Decimal("0.67")
        assert balance("bob") == Decimal("10.00")
        # days 2 .. 11: a fee a day, nobody blocked (alice at 0.33)
        for _ in range(10):
            clock[0] += dt.timedelta(days=1)
            d.drain()
        assert balance("alice") == Decimal("0.33") and pings("sub1") == 4
        # day 12: alice falls below her credit limit 0 at this drain: dropped in the kernel
        clock[0] += dt.timedelta(days=1)
        d.drain()
        assert balance("alice") == Decimal("-0.67")
        assert d.blocked()[SUB1.v4()] == ["sys-deny-money"]
        assert pings("sub1") == 0 and pings("sub2") == 4
        shown = d.call("billing-account", account="alice")
        assert shown["text"].startswith("Name alice (000001) BLOCKED (money) bal: -0.67")
        # a payment above the limit lets her through at once, no drain needed
        d.call("billing-account-set", account="alice", words=["balance", "add", "5"])
        assert SUB1.v4() not in d.blocked() and pings("sub1") == 4
        # the rest of November and the first drain of December
        for _ in range(19):
            clock[0] += dt.timedelta(days=1)
            d.drain()
        assert clock[0] == dt.datetime(2026, 12, 1, 0, 10, tzinfo=BERLIN)
        # by hand: 12 + 5 - 30 x 1.00 - 0.67 - 30/31 (December's first day, 0.97)
        assert balance("alice") == Decimal("-14.64")
        assert balance("bob") == Decimal("0.00")       # 20 - November's 10 - December's 10
        assert d.blocked()[SUB1.v4()] == ["sys-deny-money"] and SUB2.v4() not in d.blocked()
        con = d.storage.con
        rows = ledger.rows(con, 1)
        fees = [r for r in rows if r.kind == "fee"]
        assert len(fees) == 31 and sum(r.amount for r in fees) == Decimal("-30.97")
        assert [(r.amount, r.bytes_in) for r in rows if r.kind == "overdraft"] == \
            [(Decimal("-0.67"), udp.ip_bytes)]
        assert [r.amount for r in ledger.rows(con, 2)] == \
            [Decimal("20.00"), Decimal("-10.00"), Decimal("-10.00")]
        # the ledger is the balance, and the service's memory is the ledger
        svc = d.service(BillingService)
        assert svc.balances == ledger.balances(con) == {1: Decimal("-14.64"), 2: Decimal(0)}
    finally:
        d.close()
        d.dp.detach()


KILL_ROUNDS = int(os.environ.get("ACCTD_KILL_ROUNDS", "5"))


def test_sigkill_under_traffic_neither_loses_nor_doubles_a_charge(topo, tmp_path):
    """acctd as a real process draining every second, killed at random moments
    while alice pings: every byte she sent is charged once (1000.00 a MB, so
    a lost or doubled echo of 128 bytes moves the total by 0.12), and the
    hourly fee is what is due at the last drain, charged once an hour."""
    from .test_pipeline import Acctd
    from acctd.services.billing import rating
    from acctd.services.billing.money import Currency
    from acctd.services.billing.tariff import Subplan
    from acctd.store.database import Storage
    from zoneinfo import ZoneInfo

    topo.set_all_offloads(False)
    rng = random.Random(20261202)
    d = Acctd(topo, tmp_path, delay=1)
    d.cfg.write_text(d.cfg.read_text() + """
[billing]
time-zone = "Europe/Berlin"
[billing.subplan.1]
policy = "icmp"
fee = "720.00"
spread = "hourly"
overdraft = "1000.00 out"
[billing.plan.1]
name = "metered"
subplans = [1]
""")
    try:
        d.start()
        d.ctl("billing", "account", "create", "alice", "plan", "1", "unit", "name", "alice", "add",
              "balance", "set", "100000")
        sent, _starts = d.kill_under_pings(rng, KILL_ROUNDS)
        topo.quiesce()
        d.ctl("flush")
    finally:
        d.stop()
        d.detach()
    zone, cur = ZoneInfo("Europe/Berlin"), Currency()
    with Storage(tmp_path / "acctd.duckdb", read_only=True) as st:
        con = st.con
        rows = ledger.rows(con, 1)
        created = con.execute("SELECT created FROM account").fetchall()[0][0]
        last = st.last_drain
        book = load_book(con, rating.month(last, zone)[0])
        state = [int(x) for x in book.slots["bytes_out"]]
    over = sum(r.amount for r in rows if r.kind == "overdraft")
    assert over == -cur.quantize(Decimal(sent.ip_bytes) * 1000 / MB)
    assert state == [sent.ip_bytes]      # the rating state counted every byte once
    sp = Subplan(policy="icmp", fee=Decimal("720.00"), spread="hourly")
    fees = [r for r in rows if r.kind == "fee"]
    assert sum(r.amount for r in fees) == \
        -rating.fee_due(sp, last, ledger.aware(created), zone, cur)
    assert len({r.period_end for r in fees}) == len(fees)   # an hour is charged once
