"""[billing] in the config (acctd/services/billing/tariff.py): subplans and
plans as NeTAMS has them, money as exact text, and every mistake as
file:line: [billing] key."""

from decimal import Decimal

import pytest

from acctd import config
from tests.unit.test_config import BASE, error

TARIFF = """\
[billing]
currency = "EUR"
decimals = 2
default-credit-limit = "-5.00"
time-zone = "Europe/Berlin"
[billing.subplan.1]
fee = "30"
spread = "daily"
included = "1G in 500M out"
policy = "ip"
overdraft = "0.10 in 0.05 out"
adjust-fee = true
[billing.subplan.2]
policy = "ip"
included = "unlimited"
[billing.plan.1]
name = "basic"
description = "basic, daily"
subplans = [1, 2]
"""


def test_the_tariff_loads_exactly():
    b = config.loads(BASE + TARIFF).billing
    s1 = b.subplan[1]
    assert (s1.fee, s1.spread, s1.policy, s1.adjust_fee, s1.adjust_included) == \
        (Decimal(30), "daily", "ip", True, True)
    assert dict(s1.included) == {"in": 1 << 30, "out": 500 << 20}
    assert dict(s1.overdraft) == {"in": Decimal("0.10"), "out": Decimal("0.05")}
    assert dict(b.subplan[2].included) == {"sum": None} and b.subplan[2].by_sum
    assert (b.plan[1].name, b.plan[1].subplans) == ("basic", (1, 2))
    assert b.default_credit_limit == Decimal("-5.00") and b.money.format(Decimal(1)) == "1.00"
    assert b.zone(None).key == "Europe/Berlin"


@pytest.mark.parametrize("old, new, line, message", [
    ('fee = "30"', "fee = 30.5", 7, "[billing] key 'subplan.1.fee': expected an amount written "
     'as a string like "10.50" (never a float), got 30.5'),
    ('fee = "30"', 'fee = "30.001"', 7, "expected a fee with at most 2 decimal places"),
    ('spread = "daily"', 'spread = "weekly"', 8, "expected one of monthly, daily, hourly"),
    ('included = "1G in 500M out"', 'included = "1G in 2G sum"', 9, "either one amount for sum"),
    ('included = "1G in 500M out"', 'included = "1Q in"', 9, "'1Q': expected an amount"),
    ('overdraft = "0.10 in 0.05 out"', 'overdraft = "0.10 sum"', 11,
     "included and overdraft must both be by sum"),
    ('policy = "ip"\noverdraft', 'policy = "www"\noverdraft', 10,
     "[billing] key 'subplan.1.policy': no policy 'www'"),
    ("subplans = [1, 2]", "subplans = [1, 3]", 19, "[billing] key 'plan.1.subplans': no "
     "[billing.subplan.3]"),
    ('currency = "EUR"', 'currency = "EUR"\ncolour = "red"', 3, "unknown key"),
    ('spread = "daily"', 'spread = "daily"\nfair-use-rate = "fast"', 9,
     "[billing] key 'subplan.1.fair-use-rate': "),
    ('included = "unlimited"', 'fair-use-rate = "1M"', 15, "fair use needs an included volume"),
    ('time-zone = "Europe/Berlin"', 'time-zone = "Mars/Olympus"', 5, "expected an IANA time zone"),
])
def test_a_mistake_names_file_line_and_key(tmp_path, old, new, line, message):
    assert old in TARIFF
    e = error(BASE + TARIFF.replace(old, new, 1), tmp_path)
    assert e.line == len(BASE.splitlines()) + line, str(e)
    assert message in str(e) and str(e).startswith(str(tmp_path / "acctd.toml")), str(e)
