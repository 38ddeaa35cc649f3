"""The billing service as an operator meets it: acctctl billing commands end
to end (the CLI, a real control server, the daemon's real services over real
storage; no kernel: each drain hands the service the rows the test gives,
in a real transaction), with exact text, ledger rows and blocks."""

import datetime as dt
from decimal import Decimal

import numpy as np
import pytest
from click.testing import CliRunner

from acctctl.main import main
from acctd.config import loads
from acctd.control import server as ctl
from acctd.kernel import abi
from acctd.services.billing import ledger
from acctd.services.billing.service import BillingService
from acctd.services.contract import Drain
from acctd.services.login import LoginService
from acctd.store import rollup

from .daemon_stub import ALICE, daemon_stub
from .test_login import CHEAP

MB = 1 << 20
CONFIG = ALICE + """
[[unit]]
type = "user"
name = "bob"
acct-policy = ["ip"]

[processor]
time-zone = "Europe/Berlin"

[billing]
currency = "EUR"
[billing.subplan.1]
policy = "ip"
fee = "30.00"
spread = "daily"
included = "10M in"
overdraft = "0.50 in"
[billing.subplan.2]
policy = "ip"
fee = "5.00"
[billing.plan.1]
name = "daily"
description = "30 a month, a day at a time"
subplans = [1]
[billing.plan.2]
name = "flat"
subplans = [2]
"""

BERLIN = dt.timezone(dt.timedelta(hours=1))
T0 = dt.datetime(2026, 11, 1, 0, 30, tzinfo=BERLIN)   # November: 30 days


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


@pytest.fixture
def bill(tmp_path):
    """bill(*words) -> (exit code, output); bill.drain({unit: bytes in}) runs
    one drain of those rows at the clock's time, as the core does."""
    clock = Clock()
    cfg = loads(CONFIG, str(tmp_path / "acctd.toml"))
    with daemon_stub(cfg, tmp_path=tmp_path, clock=clock) as d:
        d.service(LoginService).table.hasher = CHEAP
        srv = ctl.ControlServer(str(tmp_path / "ctl.sock"), d.dispatcher)
        srv.serve_in_thread()
        svc = d.service(BillingService)

        def drain(traffic=None):
            snap = d.snapshot
            ip = int(snap.policies.policies[snap.policies.find("ip")].oid, 16)
            units = [int(snap.unit(u).oid, 16) for u in (traffic or {})]
            rows = {"unit_oid": np.array(units, np.uint32),
                    "policy_oid": np.full(len(units), ip, np.uint32),
                    "dir": np.full(len(units), abi.Dir.IN, np.uint8),
                    "packets": np.ones(len(units), np.uint64),
                    "bytes": np.array(list((traffic or {}).values()), np.uint64)}
            e = np.zeros(0)
            dr = Drain(clock.now, snap, rows, e, e, e, e)
            with d.lock:   # the core's commit: rows, rollups, then in_drain, one transaction
                d.storage.commit(rollup.rollup(rows, clock.now, snap.config.processor.zone), {},
                                 lambda tx: svc.in_drain(dr, tx))
                svc.after_drain(dr)

        def run(*words):
            r = CliRunner().invoke(main, ["--socket", srv.path, *words])
            assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
            return r.exit_code, r.output
        run.clock, run.daemon, run.drain, run.svc = clock, d, drain, svc
        yield run
        srv.shutdown()
        srv.server_close()


def balance(bill, name):
    svc = bill.svc
    a = next(a for a in svc.accounts.values() if a.name == name)
    return ledger.balance(bill.daemon.storage.con, a.oid)


def test_show_plan_reproduces_the_reference(bill):
    code, text = bill("billing", "plan")
    assert code == 0
    ip = bill.daemon.snapshot.policies.policies[0].oid
    assert text == (
        'Plan ID 000001 Name "daily" Desc. "30 a month, a day at a time"\n'
        "  Subplan ID 000001\n"
        f"    Fee 30.00, spread: 'D', policy ip({ip})\n"
        "    Incl. 10.0 MiB in, Over. 0.50/M in\n"
        'Plan ID 000002 Name "flat" Desc. ""\n'
        "  Subplan ID 000002\n"
        f"    Fee 5.00, spread: 'M', policy ip({ip})\n"
        "    Incl. 0, Over. 0/M\n")
    assert bill("billing", "plan", "3") == (1, "acctctl: no plan 3 (see acctctl billing plan)\n")


def test_a_day_of_fee_then_overdraft_then_a_block_for_money_and_a_payment_unblocks(bill):
    code, text = bill("billing", "account", "create", "alice", "plan", "1", "unit", "name",
                      "alice", "add", "balance", "add", "2.00", "password", "secret")
    assert (code, text) == (0, "Name alice (000001) ACTIVE bal: 2.00 cred_lim: 0.00 plan: daily\n")
    bill.drain()                                  # day 1: 1.00 of the fee
    assert balance(bill, "alice") == Decimal("1.00")
    bill.drain({"alice": 12 * MB})                # 2 MB over 10 MB included: 1.00
    assert balance(bill, "alice") == Decimal("0.00")
    assert bill.daemon.service(BillingService).blocks() == {}   # not below the limit 0
    bill.clock.now += dt.timedelta(days=1)
    enforced = bill.daemon.enforced
    bill.drain()                                  # day 2: below zero, blocked
    alice = bill.daemon.snapshot.unit("alice").oid
    assert bill.svc.blocks() == {alice: abi.SysPolicy.MONEY}
    assert bill.daemon.enforced == enforced + 1
    code, text = bill("billing", "account", "alice")
    assert text == "Name alice (000001) BLOCKED (money) bal: -1.00 cred_lim: 0.00 plan: daily\n"
    assert bill.svc.status() == {"billing": {"accounts": 1, "blocked": ["alice(money)"],
                                             "fair_use": []}}
    code, text = bill("billing", "account", "set", "alice", "balance", "add", "10")
    assert text.startswith("Name alice (000001) ACTIVE bal: 9.00 ")
    assert bill.svc.blocks() == {} and bill.daemon.enforced == enforced + 2
    rows = [(e.kind, e.amount, e.bytes_in, e.cause)
            for e in ledger.rows(bill.daemon.storage.con)]
    assert rows == [("adjustment", Decimal("2.00"), 0, "balance add 2.00"),
                    ("fee", Decimal("-1.00"), 0, "drain"),
                    ("overdraft", Decimal("-1.00"), 12 * MB, "drain"),
                    ("fee", Decimal("-1.00"), 0, "drain"),
                    ("adjustment", Decimal("10.00"), 0, "balance add 10")]
    a = bill.svc.accounts[1]
    assert a.password.startswith("$argon2id$")


def test_block_and_beblock_block_with_their_own_reason_and_nextplan_waits_for_the_month(bill):
    bill("billing", "account", "create", "bob", "plan", "2", "balance", "set", "100",
         "unit", "name", "bob", "add")
    bob = bill.daemon.snapshot.unit("bob").oid
    code, text = bill("billing", "account", "set", "bob", "beblock")
    assert "BLOCKED (beblock)" in text and bill.svc.blocks() == {bob: abi.SysPolicy.MONEY}
    code, text = bill("billing", "account", "set", "bob", "block")
    assert "BLOCKED (block)" in text
    code, text = bill("billing", "account", "set", "bob", "unblock", "nextplan", "1")
    assert "ACTIVE" in text and bill.svc.blocks() == {}
    code, text = bill("billing", "account", "bob", "full")
    assert "Nextplan daily 1 from 2026-12-01\n" in text   # the next month, in Berlin
    bill.drain()
    assert bill.svc.accounts[1].plan == 2 and balance(bill, "bob") == Decimal("95.00")
    bill.clock.now = dt.datetime(2026, 12, 1, 0, 10, tzinfo=BERLIN)
    bill.drain()
    a = bill.svc.accounts[1]
    assert (a.plan, a.nextplan) == (1, None)
    assert balance(bill, "bob") == Decimal("94.03")   # plan 1 from December 1st: 30.00 / 31
    assert bill("billing", "plan", "1", "list") == (0, "bob\n")


def test_bad_commands_are_one_line(bill):
    bill("billing", "account", "create", "carol")
    assert bill("billing", "account", "set", "carol", "balance", "add", "1.005") == \
        (1, "acctctl: expected an amount with at most 2 decimal places, got '1.005'\n")
    assert bill("billing", "account", "set", "carol", "plan", "9") == \
        (1, "acctctl: plan 9: no such plan (see acctctl billing plan)\n")
    assert bill("billing", "account", "set", "carol", "fly") [1].startswith(
        "acctctl: unknown account parameter 'fly'")
    assert bill("billing", "account", "dave") == (1, "acctctl: unknown account 'dave'\n")
    assert bill("billing", "account", "create", "carol") == \
        (1, "acctctl: account 'carol' exists\n")
    # a failed word leaves the earlier ones undone
    bill("billing", "account", "set", "carol", "balance", "add", "5", "plan", "9")
    assert balance(bill, "carol") == Decimal(0)


def test_rerate_from_the_rollups_gives_the_ledger_and_a_dry_run_shows_a_tariff_change(bill):
    bill("billing", "account", "create", "alice", "plan", "1", "unit", "name", "alice", "add")
    # three days, a drain every 25 minutes, 1 MB each: 10 MB included, then 0.50 a MB
    for i in range(3 * 24 * 60 // 25):
        bill.drain({"alice": MB})
        bill.clock.now += dt.timedelta(minutes=25)
    booked = balance(bill, "alice")
    # 3 days of 30.00/30 and (172 - 10) MB over at 0.50
    assert booked == -(Decimal("3.00") + Decimal("81.00"))
    code, text = bill("billing", "rerate", "--from", "2026-11-01", "--dry-run")
    assert code == 0
    assert text.splitlines()[2:] == [
        "alice                  1 fee               3.00         3.00         0.00",
        "alice                  1 overdraft        81.00        81.00         0.00",
        "total difference 0.00"]
    # what if the overdraft were 0.40 a MB: 16.20 less
    cfg = loads(CONFIG.replace('overdraft = "0.50 in"', 'overdraft = "0.40 in"'),
                bill.daemon.config.path)
    bill.svc.reload(cfg.billing)
    code, text = bill("billing", "rerate", "--from", "2026-11-01", "--dry-run", "--json")
    assert '"difference": "-16.20"' in text and balance(bill, "alice") == booked
    code, text = bill("billing", "rerate", "--from", "2026-11-01")
    assert text.splitlines()[-1] == "total difference -16.20 (booked as adjustments)"
    assert balance(bill, "alice") == booked + Decimal("16.20")
    # the month goes on from the re-rated state: the next MB costs 0.40, not a catch-up
    # (and it is November 4th, 00:10: the day's fee)
    bill.drain({"alice": MB})
    assert balance(bill, "alice") == booked + Decimal("16.20") - Decimal("0.40") - Decimal("1.00")


def test_account_changes_can_be_scheduled():
    from acctd.services.scheduler import request_from_argv
    assert request_from_argv(["billing", "account", "set", "alice", "balance", "add", "10"]) == \
        {"cmd": "billing-account-set",
         "args": {"account": "alice", "words": ["balance", "add", "10"]}}


def test_import_netams_carries_subplans_and_plans_and_says_where_accounts_are():
    from acctd.importers import netams
    res = netams.convert("\n".join([
        "service processor",
        "policy name ip target proto ip",
        "service billing",
        "subplan 1 fee 30 spread daily",
        "subplan 1 included 1G in 500M out",
        "subplan 1 policy ip",
        "subplan 1 overdraft 0.10 in 0.05 out",
        "subplan 1 adjust-fee yes",
        "subplan 2 policy ip",
        "subplan 2 fee 5 spread weekly",
        "plan 1 name basic",
        "plan 1 description \u00abthe basic plan\u00bb",
        "plan 1 subplan 1 2",
        "plan 1 no subplan 2",
        "account 01BFEF name a1",
        "default-credit-limit -5",
        "delay 30"]), "x.cfg")
    why = {w.line: w.reason for w in res.warnings}
    assert why[10].startswith("bad value for subplan 2 spread: expected one of monthly, daily")
    assert why[15].startswith("accounts live in the database (NeTAMS keeps them in its SQL")
    b = loads(res.toml, "x.toml").billing
    s1 = b.subplan[1]
    assert (s1.fee, s1.spread, s1.adjust_fee, dict(s1.overdraft)) == \
        (Decimal(30), "daily", True, {"in": Decimal("0.10"), "out": Decimal("0.05")})
    assert (b.plan[1].name, b.plan[1].description, b.plan[1].subplans) == \
        ("basic", "the basic plan", (1,))
    assert (b.default_credit_limit, b.delay) == (Decimal(-5), 30)


def test_fair_use_limits_the_units_rate_past_the_threshold_until_the_month_ends(bill):
    cfg = loads(CONFIG.replace('overdraft = "0.50 in"',
                               'fair-use-rate = "1M"\nfair-use-at = 80'), bill.daemon.config.path)
    bill.svc.reload(cfg.billing)
    bill("billing", "account", "create", "alice", "plan", "1", "unit", "name", "alice", "add")
    alice = bill.daemon.snapshot.unit("alice").oid
    bill.drain({"alice": 8 * MB - 1})           # just under 80 % of 10 MB
    assert bill.svc.rate_limits() == {}
    enforced = bill.daemon.enforced
    bill.drain({"alice": 1})
    assert bill.svc.rate_limits() == {alice: (1_000_000, 1_000_000)}
    assert bill.daemon.enforced == enforced + 1
    code, text = bill("billing", "account", "alice", "--json")
    assert '"fair_use_rate": [\n   1000000,\n   1000000\n  ]' in text
    bill.clock.now = dt.datetime(2026, 12, 1, 0, 5, tzinfo=BERLIN)   # a new month
    bill.drain()
    assert bill.svc.rate_limits() == {} and bill.daemon.enforced == enforced + 2


def test_the_holders_beblock_never_lifts_the_operators_block(bill):
    """acctctl billing beblock NAME [--undo]: the holder's own block (what
    the subscriber's page sends); undone only when it is theirs."""
    bill("billing", "account", "create", "bob", "plan", "2", "balance", "set", "100",
         "unit", "name", "bob", "add")
    bob = bill.daemon.snapshot.unit("bob").oid
    code, text = bill("billing", "beblock", "bob")
    assert code == 0 and "BLOCKED (beblock)" in text
    assert bill.svc.blocks() == {bob: abi.SysPolicy.MONEY}
    code, text = bill("billing", "beblock", "bob", "--undo")
    assert code == 0 and "ACTIVE" in text and bill.svc.blocks() == {}
    assert bill("billing", "beblock", "bob", "--undo") == \
        (1, "acctctl: account bob is not blocked by its holder\n")
    bill("billing", "account", "set", "bob", "block")
    assert bill("billing", "beblock", "bob", "--undo") == \
        (1, "acctctl: account bob is blocked by the operator: only they can unblock it\n")
    assert "BLOCKED (block)" in bill("billing", "account", "bob")[1]
