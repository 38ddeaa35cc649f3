"""Postpaid terms and invoices across gateways: terms set on one gateway
are everywhere, and an account charged on two gateways gets one invoice
for the month, of both gateways' charges, issued once however many
gateways try at once, and kept by every gateway; a payment on any gateway
pays it everywhere."""

import datetime as dt
import threading
from decimal import Decimal

import psycopg
import pytest

from acctd.kernel.abi import SysPolicy
from acctd.services.billing.invoices import Terms
from acctd.services.billing.invoicing import InvoicingService
from acctd.services.billing.service import BillingService
from tests.central.gateways import UTC, commit_drain, gateway, status, wait
from tests.central.test_ledger import ACCOUNT, BILLING, bits

pytestmark = pytest.mark.peers

NOVEMBER = dt.datetime(2026, 11, 10, 12, tzinfo=UTC)


class Clock:
    def __init__(self, t: dt.datetime):
        self.t = t

    def __call__(self) -> dt.datetime:
        return self.t


def invoice(d) -> dict:
    return d.service(InvoicingService).invoice("acc", "2026-11")


def postpaid_on_two(a, b) -> None:
    """acc (alice) made on a, postpaid on b (a has the terms), charged 5.72
    on a and 4.77 on b in November, all shipped."""
    wait(lambda: status(a)["state"] == status(b)["state"] == "connected")
    a.service(BillingService).account_create("acc", ACCOUNT)
    wait(lambda: 1 in b.service(BillingService).accounts)
    b.service(InvoicingService).set_terms("acc", ["postpaid"])
    wait(lambda: a.service(InvoicingService).terms.get(1) == Terms(postpaid=True), timeout=2)
    commit_drain(a, NOVEMBER, [("alice", "ip", 0, 1, 6_000_000)])
    commit_drain(b, NOVEMBER, [("alice", "ip", 0, 1, 5_000_000)])
    wait(lambda: status(a)["backlog_drains"] == status(b)["backlog_drains"] == 0)


def test_an_account_charged_on_two_gateways_is_invoiced_once_for_both(central_dsn, tmp_path):
    clock = Clock(NOVEMBER)
    with gateway(central_dsn, "gw-a", tmp_path, clock=clock, extra=BILLING) as a, \
            gateway(central_dsn, "gw-b", tmp_path, clock=clock, extra=BILLING) as b:
        postpaid_on_two(a, b)
        # a draft, and the statement, are of both gateways' rows too
        assert (invoice(a)["draft"], invoice(a)["amount_due"]) == (True, "10.49")
        st = a.service(InvoicingService).statement("acc", "2026-11")
        assert sorted(r["amount"] for r in st["rows"]) == ["-4.77", "-5.72"]
        assert st["closing"] == "-10.49"
        # December: both gateways look for November's invoices at once
        clock.t = dt.datetime(2026, 12, 1, 1, tzinfo=UTC)
        ticks = []
        for d in (a, b):
            d.service(InvoicingService)._next = 0.0
            ticks.append(threading.Thread(target=d.service(InvoicingService).tick))
        for t in ticks:
            t.start()
        for t in ticks:
            t.join()
        wait(lambda: invoice(a)["draft"] is False and invoice(b)["draft"] is False)
        assert invoice(a)["text"] == invoice(b)["text"]
        assert invoice(a)["text"].startswith("Invoice 202611-000001  account acc (000001)  "
                                             "month 2026-11\nDue 2026-12-15  UNPAID\n")
        assert invoice(a)["amount_due"] == "10.49"     # both gateways' charges
        with psycopg.connect(central_dsn) as c:
            assert c.execute("SELECT account_oid, month, number, amount_due FROM invoice"
                             ).fetchall() == [(1, dt.date(2026, 11, 1), "202611-000001",
                                               Decimal("10.49"))]
        # unpaid a week past its due date: blocked; paid on gw-b, lifted on both
        clock.t = dt.datetime(2026, 12, 23, 1, tzinfo=UTC)
        for d in (a, b):
            d.service(InvoicingService)._next = 0.0
            d.service(InvoicingService).tick()
        wait(lambda: bits(a, "alice") == bits(b, "alice") == SysPolicy.MONEY, timeout=2)
        b.service(InvoicingService).import_payments([{
            "line": 1, "date": "2026-12-23", "account": "acc", "amount": "10.49",
            "reference": "bank-1"}])
        commit_drain(b, clock.t, [])    # its rows ship with the next drain
        wait(lambda: bits(a, "alice") == bits(b, "alice") == 0, timeout=5)
        assert "  PAID\n" in invoice(a)["text"] and invoice(a)["paid"] is True
