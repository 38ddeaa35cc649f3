"""acctctl --central DSN: list, stat, top and quota show across gateways,
read from PostgreSQL with no gateway running."""

import datetime as dt
import json
from decimal import Decimal

import pytest
from click.testing import CliRunner

from acctctl.main import main
from acctd.services.central import CentralService
from acctd.services.quota import QuotaService
from tests.central.gateways import UTC, commit_drain, config_text, gateway, status, wait

pytestmark = pytest.mark.peers


@pytest.fixture
def shipped(central_dsn, tmp_path):
    """alice on gw-a then gw-b today, bob on gw-a; alice has a day quota; all shipped."""
    now = dt.datetime.now(UTC).replace(minute=0, second=30, microsecond=0)
    if now > dt.datetime.now(UTC):
        now -= dt.timedelta(hours=1)
    with gateway(central_dsn, "gw-a", tmp_path) as a, gateway(central_dsn, "gw-b", tmp_path) as b:
        a.service(QuotaService).set(["alice", "policy", "ip", "day", "4K", "sum"])
        commit_drain(a, now, [("alice", 0, 0, 2, 1000), ("alice", "ip", 0, 2, 1000),
                              ("bob", 0, 1, 1, 50)])
        commit_drain(b, now, [("alice", 0, 1, 3, 2000), ("alice", "ip", 1, 3, 2000)])
        for d in (a, b):
            wait(lambda d=d: (s := status(d))["backlog_drains"] == 0 and s["shipped_seq"] == 1)
        # b learns of alice's quota from the server and owes its totals of her
        wait(lambda: a.service(CentralService).elsewhere)
    return central_dsn, now


def acctctl(dsn, *args):
    return CliRunner().invoke(main, ["--central", dsn, *args])


def test_list_sums_every_gateway(shipped):
    dsn, _ = shipped
    r = acctctl(dsn, "list", "alice", "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert got["unit"] == "alice"
    assert [(p["policy"], p["dir"], p["day"]["bytes"], p["month"]["packets"], p["flow"]["bytes"])
            for p in got["policies"]] == [("(all)", "in", 1000, 2, 1000),
                                          ("(all)", "out", 2000, 3, 2000),
                                          ("ip", "in", 1000, 2, 1000), ("ip", "out", 2000, 3, 2000)]


def test_stat_top_and_quota_show(shipped):
    dsn, now = shipped
    r = acctctl(dsn, "stat", "alice", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)["rows"]
    hour = now.replace(minute=0, second=0).isoformat()
    assert [(x["hour"], x["policy"], x["dir"], x["bytes"]) for x in rows] == [
        (hour, "(all)", "in", 1000), (hour, "(all)", "out", 2000), (hour, "ip", "in", 1000),
        (hour, "ip", "out", 2000)]
    r = acctctl(dsn, "top", "--json")
    assert r.exit_code == 0, r.output
    assert [(x["unit"], x["today_in"], x["today_out"], x["gateways"]) for x in
            json.loads(r.output)] == [("alice", 1000, 2000, "gw-a,gw-b"), ("bob", 0, 50, "gw-a")]
    r = acctctl(dsn, "quota", "show")
    assert r.exit_code == 0, r.output
    alice = r.output.split("(alice)")[0].split("UNIT ")[-1]
    assert r.output == (
        "QUOTA: alice policy ip set sys-deny-quota\n"
        f"UNIT {alice}(alice) SYST: ACCT is present\n"
        "DAY sum: 2.93 KiB, quota 4.00 KiB, ratio 73.24% -> [+]\n")


def test_stat_hours_are_the_zones_hours_at_a_half_hour_offset(shipped):
    import psycopg
    from zoneinfo import ZoneInfo
    from acctd.services.central import queries
    dsn, now = shipped
    kolkata = ZoneInfo("Asia/Kolkata")                          # UTC+05:30
    with psycopg.connect(dsn) as conn:
        rows = queries.report_stat(conn, "alice", "month", now, kolkata)["rows"]
    local = now.astimezone(kolkata)                              # hh:30:30 there
    hour = local.replace(minute=0, second=0).isoformat()         # the local hour it is in
    assert {(x["hour"], x["bytes"]) for x in rows if x["policy"] == "(all)"} == \
        {(hour, 1000), (hour, 2000)}


def test_bad_dsn_and_unknown_unit_are_one_line(shipped):
    dsn, _ = shipped
    r = acctctl(dsn, "list", "nosuch")
    assert (r.exit_code, r.output) == (1, "Error: unknown unit 'nosuch' in the central database\n")
    r = acctctl(dsn, "units")
    assert r.exit_code == 2 and ("--central answers list, stat, quota-show, top, sys-policy, "
                                 "billing-account, billing-ledger, billing-invoice only, not "
                                 "units") in r.output


@pytest.fixture
def billed(central_dsn, tmp_path):
    """acc (alice) charged on gw-a and gw-b in November, 3.00 added on gw-b,
    postpaid, its November invoice issued; yields gw-a and the DSN."""
    from acctd.services.billing.invoicing import InvoicingService
    from acctd.services.billing.service import BillingService
    from tests.central.test_invoices import NOVEMBER, Clock, postpaid_on_two
    from tests.central.test_ledger import BILLING
    clock = Clock(NOVEMBER)
    with gateway(central_dsn, "gw-a", tmp_path, clock=clock, extra=BILLING) as a, \
            gateway(central_dsn, "gw-b", tmp_path, clock=clock, extra=BILLING) as b:
        postpaid_on_two(a, b)
        b.service(BillingService).account_set("acc", ["balance", "add", "3"])
        wait(lambda: status(a)["backlog_drains"] == status(b)["backlog_drains"] == 0)
        wait(lambda: a.service(BillingService).balance(1) == Decimal("-7.49"))
        clock.t = dt.datetime(2026, 12, 1, 1, tzinfo=UTC)
        a.service(InvoicingService).tick()
        wait(lambda: not a.service(InvoicingService).invoice("acc", "2026-11")["draft"])
        conf = tmp_path / "acctd.toml"     # the plans' names and the currency
        conf.write_text(config_text(central_dsn, "gw-a", BILLING))
        yield a, central_dsn, str(conf)


def test_billing_answers_from_the_server_match_the_gateways(billed):
    from acctd.services.billing.invoicing import InvoicingService
    from acctd.services.billing.service import BillingService
    a, dsn, conf = billed
    bill = a.service(BillingService)

    def acctctl(dsn, *args):
        return CliRunner().invoke(main, ["--central", dsn, "--config", conf, *args])
    r = acctctl(dsn, "billing", "account", "list")
    assert (r.exit_code, r.output) == (0, bill.account_show()["text"])
    assert r.output == "acc (000001) ACTIVE bal: -7.49\n"
    r = acctctl(dsn, "billing", "account", "acc", "full")
    assert (r.exit_code, r.output) == (0, bill.account_show("acc", full=True)["text"])
    # every gateway's rows, on the gateway and from the server alike
    r = acctctl(dsn, "billing", "ledger", "acc", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == bill.ledger_rows("acc")
    r = acctctl(dsn, "billing", "ledger", "acc")
    assert r.output == ("     1 2026-11-10T12:00:00 overdraft           -5.72 subplan 1 [gw-a]\n"
                        "     1 2026-11-10T12:00:00 overdraft           -4.77 subplan 1 [gw-b]\n"
                        "     2 2026-11-10T12:00:00 adjustment           3.00 "
                        "balance add 3 [gw-b]\n"
                        "balance -7.49\n")
    r = acctctl(dsn, "billing", "invoice", "acc", "--month", "2026-11")
    assert (r.exit_code, r.output) == (0, a.service(InvoicingService).invoice(
        "acc", "2026-11")["text"])
    assert r.output.startswith("Invoice 202611-000001  account acc (000001)  month 2026-11\n")
    # both gateways' charges on one line, 3.00 added on gw-b
    assert "  overdraft plan 1 subplan 1        10.49  (11000000 B in, 0 B out)\n" in r.output
    assert r.output.endswith("  Amount due                         7.49 EUR\n")
    r = acctctl(dsn, "billing", "account", "nosuch")
    assert (r.exit_code, r.output) == (
        1, "Error: unknown account 'nosuch' in the central database\n")
