"""Postpaid blocking in the kernel, with real traffic: an unpaid invoice
past its grace drops the account's unit (sys-deny-money) until a payment
is imported. The testbed and the Daemon of tests/netns/test_enforce.py,
an injected clock."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from acctd.services.billing import accounts, invoices, ledger
from acctd.services.billing.invoicing import InvoicingService
from acctd.services.billing.ledger import Entry

from . import test_enforce
from .test_enforce import SRV, SUB1, SUB2, host, running, write_config

bed = test_enforce.bed   # the module's testbed fixture

pytestmark = [pytest.mark.root, pytest.mark.netns]

UTC = dt.timezone.utc
TERMS = """
[invoicing]
due-days = 10
block-after-days = 5
"""


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def configured(tmp_path, units: str) -> str:
    path = write_config(tmp_path, units)
    with open(path, "a") as f:
        f.write(TERMS)
    return path


def accounts_of(d, *names):
    with d.lock:
        con = d.storage.con
        for n in names:
            a = accounts.create(con, n, dt.datetime(2026, 11, 1, tzinfo=UTC),
                                credit_limit=Decimal("-1000"))
            accounts.add_unit(con, a.oid, d.snapshot.unit(n).oid)


def review(d):
    svc = d.service(InvoicingService)
    svc._next = 0
    svc.tick()
    return svc


def test_an_unpaid_invoice_blocks_in_the_kernel_and_a_payment_unblocks(bed, tmp_path):
    topo = bed.topo
    clock = Clock(dt.datetime(2026, 11, 20, tzinfo=UTC))
    units = host("alice", SUB1.v4()) + host("bob", SUB2.v4())
    with running(bed, configured(tmp_path, units), clock=clock) as d:
        accounts_of(d, "alice", "bob")
        with d.lock:
            ledger.append(d.storage.con, [Entry(2, "fee", Decimal("-25.00"), clock.t, 1, 1)])
            invoices.set_terms(d.storage.con, 2, invoices.Terms(postpaid=True))
        clock.t = dt.datetime(2026, 12, 15, 12, tzinfo=UTC)   # invoiced, due 12-11, grace to 16
        review(d)
        assert d.blocked() == {} and topo.ping("sub2", SRV.v4(), count=2).received == 2
        clock.t = dt.datetime(2026, 12, 16, tzinfo=UTC)
        svc = review(d)
        assert d.blocked() == {SUB2.v4(): ["sys-deny-money"]}
        assert [u["sys_policy"] for u in d.call("units", name="bob")] == [["sys-deny-money"]]
        assert svc.status() == {"unpaid_invoices": {
            "bob": "invoice 202611-000002 unpaid since 2026-12-11: sys-deny-money"}}
        assert topo.ping("sub2", SRV.v4(), count=3).received == 0
        assert topo.ping("sub1", SRV.v4(), count=2).received == 2
        got = d.call("billing-payments-import", rows=[
            {"line": 1, "date": "2026-12-16", "account": "bob", "amount": "25.00",
             "reference": "BANK-77"}], source="bank.csv")
        assert got == {"added": 1, "duplicates": 0, "amount": "25.00"}
        assert d.blocked() == {}
        assert topo.ping("sub2", SRV.v4(), count=2).received == 2
