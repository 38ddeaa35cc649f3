"""The tariff: [billing] settings, its subplans and plans (NeTAMS `subplan`,
`plan`, `delay`, `default-credit-limit`), checked at load so a mistake
names its file, line and key.

    [billing]
    currency = "EUR"              # decimals = 2; time-zone (default [processor]'s)
    default-credit-limit = "0"    # money is written as a string: "-5.00"
    [billing.subplan.1]
    fee = "30"                    # per month, charged by spread: monthly | daily | hourly
    spread = "daily"
    included = "1G in 500M out"   # or "2G sum", "unlimited", "unlimited in 1G out"
    policy = "ip"                 # the acct-policy whose bytes this subplan rates
    overdraft = "0.10 in 0.05 out"   # price per MB over included; or "0.08 sum"
    adjust-included = true        # prorate included for a start mid-month
    adjust-fee = false            # prorate the fee likewise
    fair-use-rate = "1M"          # optional: past fair-use-at % (default 100) of
                                  # included, limit the units to this rate instead
    [billing.plan.1]
    name = "basic"
    description = "basic plan"
    subplans = [1]
"""

from __future__ import annotations

import dataclasses
import zoneinfo
from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType

from acctd.config.schema import (Invalid, Table, boolean, choice, free_text, integer,
                                 numbered, parsed, setting, string, time_zone)
from acctd.model import enforcement
from acctd.services.billing import money
from acctd.services.quota import QuotaError, parse_amount

SPREADS = ("monthly", "daily", "hourly")
MB = 1024 ** 2          # overdraft is priced per MB, binary as every K/M/G here
UNLIMITED = None        # an included volume with no limit


def _money(v, ctx) -> Decimal:
    try:
        return money.parse(v)
    except money.MoneyError as e:
        raise Invalid(str(e)) from None


def _pairs(v, what: str, allow_unlimited: bool) -> list[tuple[str, str]]:
    """"1G in 500M out" -> [("1G", "in"), ("500M", "out")]; "unlimited" -> sum."""
    if not isinstance(v, str) or not v.split():
        raise Invalid(f"expected {what}, got {v!r}")
    t = v.split()
    if t == ["unlimited"] and allow_unlimited:
        return [("unlimited", "sum")]
    if len(t) % 2:
        raise Invalid(f"expected {what}: pairs of an amount and in, out or sum, got {v!r}")
    pairs = list(zip(t[::2], (d.lower() for d in t[1::2])))
    dirs = [d for _, d in pairs]
    if any(d not in ("in", "out", "sum") for d in dirs) or len(set(dirs)) < len(dirs) or \
            ("sum" in dirs and len(dirs) > 1):
        raise Invalid(f"expected {what}: either one amount for sum, or one for in and/or "
                      f"one for out, got {v!r}")
    return pairs


def _included(v, ctx) -> Mapping[str, int | None]:
    """dir -> bytes included (None: unlimited)."""
    out: dict[str, int | None] = {}
    for amount, d in _pairs(v, 'an included volume like "1G in 500M out", "2G sum" or '
                            '"unlimited"', True):
        if amount.lower() == "unlimited":
            out[d] = UNLIMITED
            continue
        try:
            out[d] = parse_amount(amount)
        except QuotaError as e:
            raise Invalid(f"{amount!r}: expected {e.expected}") from None
    return MappingProxyType(out)


def _overdraft(v, ctx) -> Mapping[str, Decimal]:
    """dir -> price per MB."""
    out = {}
    for price, d in _pairs(v, 'prices per MB like "0.10 in 0.05 out" or "0.08 sum"', False):
        try:
            out[d] = money.parse(price)
        except money.MoneyError as e:
            raise Invalid(str(e)) from None
        if out[d] < 0:
            raise Invalid(f"expected a price of at least 0, got {price!r}")
    return MappingProxyType(out)


@dataclasses.dataclass(frozen=True)
class Subplan(Table):
    """NeTAMS `subplan N`."""
    policy: str = setting(check=string("a policy name"), example='"ip"')
    fee: Decimal = setting(Decimal(0), check=_money)
    spread: str = setting("monthly", check=choice(*SPREADS))
    included: Mapping[str, int | None] = setting(default_factory=lambda: MappingProxyType({}),
                                                 check=_included)
    overdraft: Mapping[str, Decimal] = setting(default_factory=lambda: MappingProxyType({}),
                                               check=_overdraft)
    adjust_included: bool = setting(True, check=boolean())
    adjust_fee: bool = setting(False, check=boolean())
    # fair use: past fair-use-at percent of the included volume, the
    # account's units are limited to fair-use-rate (the kernel's bw
    # policers) for the rest of the month, instead of paying overdraft
    fair_use_rate: tuple[int | None, int | None] | None = setting(
        None, check=parsed(enforcement.parse_bw))
    fair_use_at: int = setting(100, check=integer(1, 100, what="a percentage of included"))

    def finish(self, ctx):
        if self.fee < 0:
            raise Invalid(f"expected a fee of at least 0, got {self.fee}", ctx.spelled("fee"))
        if self.fair_use_rate is not None and not self.included:
            raise Invalid("fair use needs an included volume to be a share of",
                          ctx.spelled("fair-use-rate"))
        if ("sum" in self.included) != ("sum" in self.overdraft) and self.included and \
                self.overdraft:
            raise Invalid("included and overdraft must both be by sum, or both by in/out",
                          ctx.spelled("overdraft"))
        return self

    @property
    def by_sum(self) -> bool:
        """Rated on in + out together (else each direction apart)."""
        return "sum" in self.included or "sum" in self.overdraft


@dataclasses.dataclass(frozen=True)
class Plan(Table):
    """NeTAMS `plan N`."""
    name: str = setting(check=string("a short plan name"), example='"basic"')
    description: str = setting("", check=free_text())
    subplans: tuple[int, ...] = setting((), check=lambda v, ctx: _numbers(v))


def _numbers(v) -> tuple[int, ...]:
    if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool)
                                          for x in v):
        raise Invalid(f"expected a list of subplan numbers like [1, 2], got {v!r}")
    return tuple(v)


@dataclasses.dataclass(frozen=True)
class BillingSettings(Table):
    """[billing]: off (no rating, no blocks) while it has no plan."""
    currency: str = setting("EUR", check=string("a currency code like EUR"))
    decimals: int = setting(2, check=integer(0, money.MAX_DECIMALS, what="decimal places"))
    time_zone: str | None = setting(None, check=time_zone)
    delay: int = setting(60, check=integer(1, what="seconds"))
    default_credit_limit: Decimal = setting(Decimal(0), check=_money)
    # with [central]: what an account may be charged on this gateway while the
    # server is unreachable (the others' charges unseen) before it is blocked
    outage_credit: Decimal = setting(Decimal(5), check=_money)
    subplan: Mapping[int, Subplan] = setting(default_factory=lambda: MappingProxyType({}),
                                             check=numbered(Subplan, "subplans"))
    plan: Mapping[int, Plan] = setting(default_factory=lambda: MappingProxyType({}),
                                       check=numbered(Plan, "plans"))

    def finish(self, ctx):
        cur = self.money
        for n, sp in self.subplan.items():
            if sp.fee != cur.quantize(sp.fee):
                raise Invalid(f"expected a fee with at most {self.decimals} decimal places, "
                              f"got {sp.fee}", f"subplan.{n}.fee")
        for n, p in self.plan.items():
            for s in p.subplans:
                if s not in self.subplan:
                    raise Invalid(f"no [billing.subplan.{s}]", f"plan.{n}.subplans")
        if self.default_credit_limit != cur.quantize(self.default_credit_limit):
            raise Invalid(f"expected at most {self.decimals} decimal places",
                          ctx.spelled("default-credit-limit"))
        return self

    @property
    def money(self) -> money.Currency:
        return money.Currency(self.currency, self.decimals)

    def zone(self, default: zoneinfo.ZoneInfo) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone) if self.time_zone else default
