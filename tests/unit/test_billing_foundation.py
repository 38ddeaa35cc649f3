"""Billing's foundation: exact money, accounts in the database and the
append-only ledger whose sum is the balance (acctd/services/billing/)."""

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given, settings, strategies as st

from acctd.services.billing import accounts, ledger, money
from acctd.services.billing.ledger import Entry
from acctd.store.database import Storage

T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.timezone.utc)
EUR = money.Currency("EUR", 2)


@pytest.fixture
def con(tmp_path):
    st_ = Storage(tmp_path / "b.duckdb")
    yield st_.con
    st_.close()


def test_money_is_parsed_exactly_and_a_float_is_refused():
    assert money.parse("10.50") == Decimal("10.50")
    assert money.parse("-0,0125") == Decimal("-0.0125")
    assert money.parse(7) == Decimal(7)
    with pytest.raises(money.MoneyError, match=r"never a float\), got 0.1"):
        money.parse(0.1)
    with pytest.raises(money.MoneyError, match="expected an amount like 10.50"):
        money.parse("ten")
    with pytest.raises(money.MoneyError, match="at most 2 decimal places, got '1.005'"):
        EUR.parse("1.005")


def test_money_quantizes_half_up_and_formats_with_the_configured_decimals():
    assert EUR.quantize(Decimal("0.005")) == Decimal("0.01")
    assert EUR.quantize(Decimal("-0.005")) == Decimal("-0.01")
    assert EUR.quantize(Decimal("0.0049")) == Decimal("0.00")
    assert EUR.format(Decimal("-5")) == "-5.00"
    assert EUR.format(Decimal("-0.001")) == "0.00"
    assert money.Currency("JPY", 0).format(Decimal("12.5"), code=True) == "13 JPY"
    assert money.Currency("BHD", 3).unit == Decimal("0.001")


def test_accounts_live_in_the_database_with_their_units(con):
    a = accounts.create(con, "alice", T0, credit_limit=Decimal("-5"), plan=1)
    b = accounts.create(con, "bob", T0)
    assert (a.oid, b.oid, a.plan, a.credit_limit, a.status) == (1, 2, 1, Decimal("-5"), "active")
    accounts.add_unit(con, a.oid, "0246E8")
    accounts.add_unit(con, a.oid, "000101")
    with pytest.raises(accounts.AccountError, match="unit 0246E8 belongs to account 000001"):
        accounts.add_unit(con, b.oid, "0246E8")
    assert accounts.find(con, "alice").units == ("000101", "0246E8")
    assert accounts.find(con, "000002").name == "bob"
    assert accounts.unit_accounts(con) == {"000101": 1, "0246E8": 1}
    later = T0 + dt.timedelta(days=1)
    a = accounts.update(con, a.oid, later, status="block", nextplan=2, blocked=later)
    assert (a.status, a.nextplan, a.changed, a.blocked, a.created) == ("block", 2, later, later, T0)
    with pytest.raises(accounts.AccountError, match="expected one of active, block, beblock"):
        accounts.update(con, a.oid, later, status="gone")
    with pytest.raises(accounts.AccountError, match="account 'bob' exists"):
        accounts.create(con, "bob", T0)
    accounts.delete_unit(con, a.oid, "000101")
    assert accounts.find(con, 1).units == ("0246E8",)
    with pytest.raises(accounts.AccountError, match="unknown account 'carol'"):
        accounts.find(con, "carol")


def test_the_ledger_appends_in_sequence_and_the_balance_is_its_sum(con):
    day = dt.timedelta(days=1)
    seqs = ledger.append(con, [
        Entry(1, "payment", Decimal("20.00"), T0, cause="acctctl", reference="bank-1"),
        Entry(1, "fee", Decimal("-0.33"), T0 + day, plan=1, subplan=1, period_start=T0,
              period_end=T0 + day, cause="drain"),
        Entry(2, "overdraft", Decimal("-1.25"), T0 + day, plan=2, subplan=3,
              bytes_in=5 << 20, bytes_out=1, cause="drain"),
    ])
    assert seqs == [1, 2, 3]
    assert ledger.append(con, [Entry(1, "adjustment", Decimal("-0.01"), T0 + 2 * day)]) == [4]
    assert ledger.balance(con, 1) == Decimal("19.66")
    assert ledger.balances(con) == {1: Decimal("19.66"), 2: Decimal("-1.25")}
    assert ledger.balance(con, 9) == Decimal(0)
    got = ledger.rows(con, 1, start=T0 + day, end=T0 + 2 * day)
    assert [(e.seq, e.kind, e.amount, e.period_start, e.period_end) for e in got] == \
        [(2, "fee", Decimal("-0.33"), T0, T0 + day)]
    assert ledger.rows(con, 2)[0].bytes_in == 5 << 20
    assert ledger.rows(con, kind="payment")[0].reference == "bank-1"
    with pytest.raises(ValueError, match="ledger kind 'gift'"):
        ledger.append(con, [Entry(1, "gift", Decimal(1), T0)])
    with pytest.raises(TypeError, match="must be a Decimal, got float"):
        ledger.append(con, [Entry(1, "fee", -0.1, T0)])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), st.sampled_from(ledger.KINDS),
                          st.integers(-10 ** 8, 10 ** 8)), max_size=25))
def test_the_balance_always_equals_the_sum_of_the_rows(items):
    with Storage(":memory:") as s:
        entries = [Entry(a, k, Decimal(c).scaleb(-2), T0) for a, k, c in items]
        ledger.append(s.con, entries)
        for a in (1, 2, 3):
            want = sum((e.amount for e in entries if e.account_oid == a), Decimal(0))
            assert ledger.balance(s.con, a) == want
            assert sum((e.amount for e in ledger.rows(s.con, a)), Decimal(0)) == want
