"""Billing beyond NeTAMS (acctd/services/billing/invoicing.py): payments
imported from CSV once each, postpaid invoices and the block after their
due date, statements, 95th percentile, notices. The real daemon core and
control server over real storage (no kernel: daemon_stub)."""

import datetime as dt
import json
import types
from decimal import Decimal

import pytest
from click.testing import CliRunner

from acctctl.main import main
from acctd.config import loads
from acctd.control import server as ctl
from acctd.services.billing import accounts, invoices, ledger, payments, percentile
from acctd.services.billing.invoicing import InvoicingService
from acctd.services.billing.ledger import Entry
from acctd.services.billing.money import Currency
from acctd.store.database import Storage

from .daemon_stub import daemon_stub

UTC = dt.timezone.utc
EUR = Currency("EUR", 2)
CONFIG = """
[processor]
time-zone = "UTC"
[[policy]]
name = "ip"
target = "proto ip"
[[unit]]
type = "user"
name = "school"
acct-policy = ["ip"]
[[unit]]
type = "user"
name = "shop"
acct-policy = ["ip"]
[billing]
currency = "EUR"
[invoicing]
due-days = 10
block-after-days = 5
low-balance = "5"
"""
ALERTER = '[alerter]\nsmtp-server = "127.0.0.1"\nadmins = ["noc@isp.example"]\nlanguage = "{}"\n'


def at(d):
    """What after_drain reads of a drain: its time."""
    return types.SimpleNamespace(now=d.clock())


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def world(tmp_path):
    """A daemon with accounts `shop` (units shop) and `school` (unit school)
    on a control socket; the clock in November 2026."""
    def make(extra=""):
        cfg = loads(CONFIG + extra, str(tmp_path / "acctd.toml"))
        st = Storage(str(tmp_path / "acctd.duckdb"), UTC)
        clock = Clock(dt.datetime(2026, 11, 3, 12, tzinfo=UTC))
        t0 = dt.datetime(2026, 11, 1, tzinfo=UTC)
        for name in ("shop", "school"):
            a = accounts.create(st.con, name, t0, credit_limit=Decimal("-100"),
                                email=f"{name}@example.org")
            accounts.add_unit(st.con, a.oid, cfg.units.units[cfg.units.find(name)].oid)
        stub = daemon_stub(cfg, st, clock=clock)
        d = stub.__enter__()
        s = ctl.ControlServer(str(tmp_path / "ctl.sock"), d.dispatcher)
        s.serve_in_thread()
        made.append((stub, s, st))
        return d, s, clock
    made = []
    yield make
    for stub, s, st in made:
        s.shutdown()
        s.server_close()
        stub.__exit__(None, None, None)
        st.close()


def cli(srv, *args):
    return CliRunner().invoke(main, ["--socket", srv.path, *args])


# --- payments -------------------------------------------------------------------

def test_payment_rows_are_checked_line_by_line():
    good = "date,account,amount,reference\n2026-11-05,shop,10.50,B-1\n\n2026-11-06,000002,3,B-2\n"
    got = payments.parse(good, EUR, "bank.csv")
    assert [(p.line, p.date, p.account, p.amount, p.reference) for p in got] == [
        (2, dt.date(2026, 11, 5), "shop", Decimal("10.50"), "B-1"),
        (4, dt.date(2026, 11, 6), "000002", Decimal("3"), "B-2")]
    for text, error in (
            ("2026-11-05,shop,10.50\n", "bank.csv:1: expected 4 fields (date, account, amount, "
                                        "reference), got 3"),
            ("x,shop,1,B\n", "bank.csv:1: expected a date like 2026-11-30, got 'x'"),
            ("2026-11-05,shop,1.005,B\n", "bank.csv:1: expected an amount with at most 2 "
                                          "decimal places, got '1.005'"),
            ("2026-11-05,shop,-4,B\n", "bank.csv:1: a payment is a positive amount, got -4"),
            ("2026-11-05,shop,4,\n", "bank.csv:1: no reference"),
            ("2026-11-05,shop,4,B\n2026-11-05,shop,5,B\n",
             "bank.csv:2: reference 'B' is on line 1 with another payment"),
            ('2026-11-05,shop,4,B\n2026-11-05,"shop"x,5,C\n', "bank.csv:2: ',' expected after '\"'")):
        with pytest.raises(payments.PaymentError) as e:
            payments.parse(text, EUR, "bank.csv")
        assert str(e.value).startswith(error), str(e.value)
    # the same row twice is one payment
    assert len(payments.parse("2026-11-05,shop,4,B\n2026-11-05,shop,4,B\n", EUR)) == 1


def test_payments_import_once_with_exact_ledger_rows_and_a_bad_file_imports_nothing(
        world, tmp_path):
    d, srv, _ = world()
    f = tmp_path / "bank.csv"
    f.write_text("date,account,amount,reference\n2026-11-05,shop,10.50,B-1\n"
                 "2026-11-06,school,3,B-2\n2026-11-06,shop,0.01,B-3\n")
    first = cli(srv, "billing", "payments", "import", str(f), "--chunk", "2")
    assert first.exit_code == 0, first.output
    assert first.stdout == "3 payments added, 0 already imported\n"
    con = d.storage.con
    rows = ledger.rows(con, kind="payment")
    assert [(r.account_oid, r.amount, r.ts, r.reference, r.cause[:10]) for r in rows] == [
        (1, Decimal("10.50"), dt.datetime(2026, 11, 5, tzinfo=UTC), "B-1", "bank.csv:2"),
        (2, Decimal("3"), dt.datetime(2026, 11, 6, tzinfo=UTC), "B-2", "bank.csv:3"),
        (1, Decimal("0.01"), dt.datetime(2026, 11, 6, tzinfo=UTC), "B-3", "bank.csv:4")]
    again = cli(srv, "billing", "payments", "import", str(f), "--json")
    assert again.exit_code == 0 and json.loads(again.stdout) == {"added": 0, "duplicates": 3}
    assert ledger.balance(con, 1) == Decimal("10.51")

    bad = tmp_path / "bad.csv"
    bad.write_text("2026-11-07,shop,1,C-1\n2026-11-07,nobody,2,C-2\n")
    res = cli(srv, "billing", "payments", "import", str(bad))
    assert (res.exit_code, res.stderr) == (1, "acctctl: bad.csv:2: unknown account 'nobody'\n")
    bad.write_text("2026-11-07,shop,1,C-1\n2026-11-07,shop,2,B-1\n")   # B-1 is shop's 10.50
    res = cli(srv, "billing", "payments", "import", str(bad))
    assert (res.exit_code, res.stderr) == (
        1, "acctctl: bad.csv:2: reference 'B-1' was imported before for account 000001, "
           "amount 10.50\n")
    bad.write_text("2026-11-07,shop,1,C-1\n2026-11-07,shop,2\n")
    res = cli(srv, "billing", "payments", "import", str(bad))
    assert res.exit_code == 1 and res.stderr.startswith("acctctl: bad.csv:2: expected 4 fields")
    bad.write_bytes(b"2026-11-07,sh\xf6p,1,C-1\n")
    res = cli(srv, "billing", "payments", "import", str(bad))
    assert (res.exit_code, res.stderr) == (1, "acctctl: bad.csv: not UTF-8 text (byte 13)\n")
    assert len(ledger.rows(con, kind="payment")) == 3     # nothing of the bad files


# --- postpaid -------------------------------------------------------------------

def november(con):
    """shop: a fee of 30.00, 12.34 overdraft of 2 GB in, a 2.00 credit;
    school: a fee of 30.00; both in November 2026."""
    t = dt.datetime(2026, 11, 10, tzinfo=UTC)
    ledger.append(con, [
        Entry(1, "fee", Decimal("-30"), t, plan=1, subplan=1, cause="drain"),
        Entry(1, "overdraft", Decimal("-12.00"), t, plan=1, subplan=2, bytes_in=1 << 30,
              cause="drain"),
        Entry(1, "overdraft", Decimal("-0.34"), t + dt.timedelta(days=1), plan=1, subplan=2,
              bytes_in=1 << 30, cause="drain"),
        Entry(1, "adjustment", Decimal("2"), t, cause="balance add 2"),
        Entry(2, "fee", Decimal("-30"), t, plan=1, subplan=1, cause="drain"),
        Entry(1, "fee", Decimal("-30"), t.replace(month=12), plan=1, subplan=1, cause="drain")])


INVOICE = """\
Invoice 202611-000001  account shop (000001)  month 2026-11
Due 2026-12-11{state}
  fee plan 1 subplan 1              30.00
  overdraft plan 1 subplan 2        12.34  (2147483648 B in, 0 B out)
  adjustment balance add 2          -2.00
  Charges this month                40.34
  Previous balance                   0.00
  Payments this month                0.00
  Balance                          -40.34
  Amount due                        40.34 EUR
"""


def test_postpaid_invoice_is_issued_at_the_month_end_and_blocks_after_the_due_date_until_paid(
        world, tmp_path):
    d, srv, clock = world()
    con = d.storage.con
    november(con)
    svc = d.service(InvoicingService)
    for name, words in (("shop", ["postpaid"]), ("school", ["postpaid", "exempt"])):
        res = cli(srv, "billing", "terms", name, *words)
        assert res.exit_code == 0, res.output
    assert res.stdout == "school: postpaid, exempt\n"
    draft = cli(srv, "billing", "invoice", "shop", "--month", "2026-11")
    assert draft.stdout == "DRAFT (not issued)\n" + INVOICE.format(state="")

    clock.t = dt.datetime(2026, 12, 1, 0, 5, tzinfo=UTC)   # November has ended
    svc._next = 0
    svc.tick()
    assert [r[0] for r in con.execute("SELECT number FROM invoice ORDER BY number").fetchall()] \
        == ["202611-000001", "202611-000002"]
    res = cli(srv, "billing", "invoice", "shop", "--month", "2026-11")
    assert (res.exit_code, res.stdout) == (0, INVOICE.format(state="  UNPAID"))
    assert json.loads(cli(srv, "billing", "invoice", "shop", "--month", "2026-11",
                          "--json").stdout)["amount_due"] == "40.34"
    assert svc.blocks() == {}

    def words(unit):
        (row,) = d.call("units", name=unit)
        return row["sys_policy"]
    clock.t = dt.datetime(2026, 12, 15, 23, 59, tzinfo=UTC)  # due 12-11, blocked from 12-16
    svc._next = 0
    svc.tick()
    assert svc.blocks() == {} and words("shop") == []
    clock.t = dt.datetime(2026, 12, 16, 0, 0, tzinfo=UTC)
    svc._next = 0
    enforced = d.enforced
    svc.tick()
    shop = d.snapshot.unit("shop").oid
    assert svc.blocks() == {shop: 8} and d.enforced == enforced + 1
    assert words("shop") == ["sys-deny-money"] and words("school") == []   # school: exempt
    assert svc.status() == {"unpaid_invoices": {
        "shop": "invoice 202611-000001 unpaid since 2026-12-11: sys-deny-money"}}

    pay = tmp_path / "pay.csv"
    pay.write_text("2026-12-16,shop,40.33,P-1\n")        # a cent short: still blocked
    assert cli(srv, "billing", "payments", "import", str(pay)).exit_code == 0
    assert words("shop") == ["sys-deny-money"]
    pay.write_text("2026-12-16,shop,0.01,P-2\n")
    assert cli(srv, "billing", "payments", "import", str(pay)).exit_code == 0
    assert words("shop") == [] and svc.blocks() == {} and svc.status() is None
    assert cli(srv, "billing", "invoice", "shop", "--month", "2026-11").stdout == \
        INVOICE.format(state="  PAID")


def test_statement_lists_the_months_rows_between_the_balances(world):
    d, srv, _ = world()
    november(d.storage.con)
    res = cli(srv, "billing", "statement", "shop", "--month", "2026-11")
    assert (res.exit_code, res.stdout) == (0, """\
Statement  account shop (000001)  month 2026-11
  Opening balance                                    0.00
  2026-11-10 fee subplan 1                         -30.00
  2026-11-10 overdraft subplan 2                   -12.00
  2026-11-10 adjustment                              2.00
  2026-11-11 overdraft subplan 2                    -0.34
  Closing balance                                  -40.34 EUR
""")
    dec = json.loads(cli(srv, "billing", "statement", "shop", "--month", "2026-12",
                         "--json").stdout)
    assert (dec["opening"], dec["closing"], len(dec["rows"])) == ("-40.34", "-70.34", 1)
    bad = cli(srv, "billing", "statement", "shop", "--month", "2026-13")
    assert (bad.exit_code, bad.stderr) == (
        1, "acctctl: expected a month like 2026-11, got '2026-13'\n")


def test_invoices_of_a_month_are_the_ledgers_sums_to_the_cent():
    """compose() over many accounts equals a hand sum per account."""
    from acctd.store.database import Storage as S
    st = S(":memory:")
    t = dt.datetime(2026, 2, 1, tzinfo=UTC)
    rows = [Entry(o, "fee", Decimal(f"-{o}.{o % 100:02d}"), t + dt.timedelta(hours=o), 1, 1)
            for o in range(1, 51)] + [Entry(7, "payment", Decimal("100"), t, reference="x")]
    ledger.append(st.con, rows)
    docs = invoices.compose(st.con, dt.date(2026, 2, 1), UTC, EUR, t, 14)
    assert len(docs) == 50
    assert docs[7]["charges"] == "7.07" and docs[7]["amount_due"] == "0.00"
    assert docs[7]["closing"] == "92.93" and docs[7]["due"] == "2026-03-15T00:00:00+00:00"
    assert sum(Decimal(x["amount_due"]) for x in docs.values()) == \
        sum(Decimal(f"{o}.{o % 100:02d}") for o in range(1, 51) if o != 7)
    st.close()


# --- 95th percentile -------------------------------------------------------------

def test_95th_percentile_of_5_minute_samples_matches_a_hand_computation():
    assert percentile.p95(range(1, 21)) == 19          # 20 samples: the top one dropped
    assert percentile.p95(list(range(1, 8641))) == 8640 - 432
    assert percentile.p95([5] * 19) == 5 and percentile.p95([]) == 0
    st = Storage(":memory:")
    start = dt.datetime(2026, 11, 1, tzinfo=UTC)
    end = start + dt.timedelta(minutes=100)                 # 20 samples
    rows = []
    for i in range(20):   # sample i: (i + 1) * 3000 bytes in, in two drains; 100 out
        at = start + dt.timedelta(minutes=5 * i)
        rows += [(at + dt.timedelta(minutes=2), 0x10, 0, 0, (i + 1) * 1000),
                 (at + dt.timedelta(minutes=5), 0x10, 0, 0, (i + 1) * 2000),   # its end
                 (at + dt.timedelta(minutes=5), 0x10, 0, 1, 100),
                 (at + dt.timedelta(minutes=5), 0x10, 7, 0, 10 ** 9),   # a policy: not counted
                 (at + dt.timedelta(minutes=5), 0x11, 0, 0, 10 ** 9)]   # another unit
    st.con.executemany("INSERT INTO raw VALUES (?, ?, ?, ?, 1, ?)",
                       [(ledger.naive(t), u, p, dr, b) for t, u, p, dr, b in rows])
    got = percentile.of_units(st.con, [0x10], start, end)
    # hand: in-samples 3000, 6000, ..., 60000; drop the top one: 57000 B in 300 s
    assert (got.samples, got.bytes_in, got.bytes_out) == (20, 57000, 100)
    assert got.to_dict()["in_bps"] == "1520" and got.billed_bps == Decimal(1520)
    assert str(got.rate(100)) == "2.666666666666666666666666667"
    st.close()


# --- notices ---------------------------------------------------------------------

@pytest.mark.parametrize("language,subjects", [
    ("en", ["[acctd] shop: payment of 1.00 EUR received",
            "[acctd] shop: low balance 1.00 EUR",
            "[acctd] shop: access blocked (the balance is under the credit limit)",
            "[acctd] school: access blocked (invoice 202611-000002 is unpaid since 2026-12-11)"]),
    ("ru", ["[acctd] shop: получен платёж 1.00 EUR",
            "[acctd] shop: низкий баланс 1.00 EUR",
            "[acctd] shop: доступ закрыт (баланс ниже кредитного лимита)",
            "[acctd] school: доступ закрыт (счёт 202611-000002 не оплачен с 2026-12-11)"])])
def test_notices_payment_low_balance_and_blocked_go_through_the_alerter(
        world, tmp_path, language, subjects):
    d, srv, clock = world(ALERTER.format(language))
    from acctd.services.alerter import AlerterService
    mailer = d.service(AlerterService).mailer
    pay = tmp_path / "pay.csv"
    pay.write_text("2026-11-05,shop,1,P-1\n")
    assert cli(srv, "billing", "payments", "import", str(pay)).exit_code == 0
    svc = d.service(InvoicingService)
    svc.after_drain(at(d))
    assert [m.subject for m in mailer.outbox.messages()] == subjects[:1]   # 1.00 is low already
    ledger.append(d.storage.con, [Entry(1, "fee", Decimal("-4"), d.clock(), 1, 1)])
    svc.after_drain(at(d))   # -3.00: still low, no second notice
    assert len(mailer.outbox.messages()) == 1
    ledger.append(d.storage.con, [Entry(1, "payment", Decimal("9"), d.clock(), reference="Q")])
    svc.after_drain(at(d))   # 6.00: above again
    ledger.append(d.storage.con, [Entry(1, "fee", Decimal("-5"), d.clock(), 1, 1)])
    svc.after_drain(at(d))   # 1.00: low
    ledger.append(d.storage.con, [Entry(1, "fee", Decimal("-101"), d.clock(), 1, 1)])
    svc.after_drain(at(d))   # -100.00 is the limit; -100.01 under it
    ledger.append(d.storage.con, [Entry(1, "fee", Decimal("-0.01"), d.clock(), 1, 1)])
    svc.after_drain(at(d))
    # school, postpaid: no low-balance notice for what it owes, one when it is blocked
    ledger.append(d.storage.con, [Entry(2, "fee", Decimal("-30"), d.clock(), 1, 1)])
    d.call("billing-terms", account="school", words=["postpaid"])
    svc.after_drain(at(d))
    clock.t = dt.datetime(2026, 12, 16, tzinfo=UTC)
    svc._next = 0
    svc.tick()
    msgs = sorted(mailer.outbox.messages(), key=lambda m: m.seq)
    assert [m.subject for m in msgs] == subjects
    assert msgs[3].to == ("school@example.org", "noc@isp.example")
    svc.unpaid = {}
    svc.start()           # as after a restart: what was overdue before is not noticed again
    svc._next = 0
    svc.tick()
    assert len(mailer.outbox.messages()) == 4 and svc.unpaid
    assert msgs[0].to == ("shop@example.org", "noc@isp.example")
    assert "P-1" in msgs[0].body


@pytest.mark.parametrize("html, link", [
    ('url = "https://stats.isp.example/"',
     "Traffic of shop: https://stats.isp.example/units/shop/index.html\n"),
    ('url = "https://stats.isp.example"\nclient-pages = "groups"',   # no unit pages
     "Traffic: https://stats.isp.example/\n"),
    ('url = "https://stats.isp.example/"\naccount-pages = "all"',      # its own page
     "Your account: https://stats.isp.example/accounts/shop/index.html\n")])
def test_a_notice_links_the_accounts_traffic_pages_of_html_url(world, tmp_path, html, link):
    d, srv, clock = world(ALERTER.format("en") + "[html]\n" + html + "\n")
    from acctd.services.alerter import AlerterService
    pay = tmp_path / "pay.csv"
    pay.write_text("2026-11-05,shop,10,P-1\n")
    assert cli(srv, "billing", "payments", "import", str(pay)).exit_code == 0
    msg, = d.service(AlerterService).mailer.outbox.messages()
    assert msg.body == ("A payment of 10.00 EUR (reference P-1) was received for account shop.\n"
                        "Balance: 10.00 EUR.\n\n" + link)


def test_the_benchmarks_month_invoices_to_the_cent():
    """acctd/bench/billing_invoices.py's ledger, 30 accounts: account 30 has
    30 fees of 1.00, two overdrafts of 0.30, a credit of 2.50, a payment of 20."""
    from acctd.bench.billing_invoices import MONTH, fill
    st = Storage(":memory:")
    fill(st.con, 30)
    now = dt.datetime(2026, 12, 1, tzinfo=UTC)
    assert len(invoices.issue(st.con, MONTH, UTC, EUR, now, 14, list(range(1, 31)))) == 30
    assert invoices.issue(st.con, MONTH, UTC, EUR, now, 14, list(range(1, 31))) == []  # once
    d = invoices.stored(st.con, 30, MONTH)
    assert [(x["what"], x["amount"]) for x in d["lines"]] == [
        ("fee plan 1 subplan 1", "30.00"), ("overdraft plan 1 subplan 2", "0.60"),
        ("adjustment bench", "-2.50")]
    assert (d["charges"], d["payments"], d["closing"], d["amount_due"]) == \
        ("28.10", "20.00", "-8.10", "8.10")
    st.close()


def test_a_transit_account_is_charged_its_95th_percentile_once_a_month(world):
    """shop moves (i + 1) * 3 MB in the 5 minutes i = 0..499 of November
    (8640 samples): with the top 432 dropped, the 433rd highest, 68 * 3 MB,
    is billed: 204e6 * 8 / 300 = 5,440,000 bit/s, at 1.50 per Mbit/s 8.16."""
    d, srv, clock = world('percentile-price = "1.50"\n')
    con, svc = d.storage.con, d.service(InvoicingService)
    unit = int(d.snapshot.unit("shop").oid, 16)
    nov = dt.datetime(2026, 11, 1, tzinfo=UTC)
    con.executemany("INSERT INTO raw VALUES (?, ?, 0, 0, 1, ?)",
                    [(ledger.naive(nov + dt.timedelta(minutes=5 * (i + 1))), unit,
                      (i + 1) * 3_000_000) for i in range(500)])
    res = cli(srv, "billing", "percentile", "shop", "--month", "2026-11")
    assert (res.exit_code, res.stdout) == (0, "shop 2026-11: 95th percentile in 5440000 bit/s, "
                                              "out 0 bit/s, billed 5440000 bit/s (8640 samples "
                                              "of 5 minutes)\n")
    assert cli(srv, "billing", "terms", "shop", "postpaid", "transit").stdout == \
        "shop: postpaid, transit\n"
    clock.t = dt.datetime(2026, 12, 1, 0, 5, tzinfo=UTC)
    for _ in range(2):   # once, however often it looks
        svc._next = 0
        svc.tick()
    (row,) = ledger.rows(con, kind="percentile")
    assert (row.account_oid, row.amount, row.period_start, row.bytes_in, row.cause) == (
        1, Decimal("-8.16"), nov, 204_000_000, "95th percentile 5440000 bit/s at 1.50/Mbit/s")
    # written on December 1st, for November: on November's invoice
    inv = json.loads(cli(srv, "billing", "invoice", "shop", "--month", "2026-11", "--json").stdout)
    assert (inv["draft"], inv["lines"], inv["amount_due"]) == (False, [
        {"what": "percentile 95th percentile 5440000 bit/s at 1.50/Mbit/s", "amount": "8.16",
         "bytes_in": 204_000_000, "bytes_out": 0}], "8.16")
    st = json.loads(cli(srv, "billing", "statement", "shop", "--month", "2026-11", "--json").stdout)
    assert (st["closing"], [r["date"] for r in st["rows"]]) == ("-8.16", ["2026-12-01"])


def test_a_postpaid_balance_under_the_credit_limit_is_owed_not_blocked(world):
    """A prepaid account under its credit limit is blocked for money at
    once; the same balance on a postpaid account is owed until its invoice
    is overdue, so billing's own money block leaves it alone."""
    from acctd.services.billing.service import BillingService
    d, srv, clock = world()
    con = d.storage.con
    con.execute("UPDATE account SET credit_limit = 0")
    november(con)   # both balances are negative now
    billing = d.service(BillingService)
    billing._changed()
    assert sorted(d.call("units", name=n)[0]["sys_policy"] == ["sys-deny-money"]
                  for n in ("shop", "school")) == [True, True]
    assert cli(srv, "billing", "terms", "shop", "postpaid").exit_code == 0
    assert d.call("units", name="shop")[0]["sys_policy"] == []
    assert d.call("units", name="school")[0]["sys_policy"] == ["sys-deny-money"]
    assert cli(srv, "billing", "terms", "shop", "prepaid").exit_code == 0
    assert d.call("units", name="shop")[0]["sys_policy"] == ["sys-deny-money"]
