"""Money: exact decimals in a configured currency, never float.

Amounts are decimal.Decimal. A price (per MB, a fee) may carry more places
than the currency; what reaches the ledger is quantized to the currency's
decimals, half up (commercial rounding), once per charge.
"""

from __future__ import annotations

import dataclasses
import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

# at most 9 places: the ledger's DECIMAL(38, 9) (acctd/store/migrations.py)
MAX_DECIMALS = 9
_TEXT = re.compile(r"[+-]?(\d{1,20})(\.\d{1,9})?")


class MoneyError(ValueError):
    """An amount that is not one: what was given and what was expected."""


def parse(value: str | int | Decimal) -> Decimal:
    """"10", "-5.50", "0.0125", 7 -> the exact Decimal. A float is refused:
    0.1 as a float is not 0.1, and money must be exactly what was written."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise MoneyError(f"expected an amount like 10.50, got {value}")
        return value
    if isinstance(value, bool) or isinstance(value, float):
        raise MoneyError(f"expected an amount written as a string like \"10.50\" (never a "
                         f"float), got {value!r}")
    if isinstance(value, int):
        return Decimal(value)
    text = value.strip().replace(",", ".") if isinstance(value, str) else None
    if text is None or not _TEXT.fullmatch(text):
        raise MoneyError(f"expected an amount like 10.50 (at most {MAX_DECIMALS} decimal "
                         f"places), got {value!r}")
    try:
        return Decimal(text)
    except InvalidOperation:  # the pattern makes this unreachable; kept for safety
        raise MoneyError(f"expected an amount like 10.50, got {value!r}") from None


@dataclasses.dataclass(frozen=True)
class Currency:
    """[billing] currency and decimals."""
    code: str = "EUR"
    decimals: int = 2

    @property
    def unit(self) -> Decimal:
        """The smallest amount: 0.01 for 2 decimals."""
        return Decimal(1).scaleb(-self.decimals)

    def quantize(self, amount: Decimal) -> Decimal:
        """To the currency's minor unit, half up."""
        return amount.quantize(self.unit, rounding=ROUND_HALF_UP)

    def parse(self, value: str | int | Decimal) -> Decimal:
        """An amount of this currency: no more places than it has."""
        d = parse(value)
        if d != self.quantize(d):
            raise MoneyError(f"expected an amount with at most {self.decimals} decimal "
                             f"places, got {value!r}")
        return d

    def format(self, amount: Decimal, code: bool = False) -> str:
        """"-5.00", or "-5.00 EUR" with code."""
        text = f"{self.quantize(amount):.{self.decimals}f}"
        if text.startswith("-") and not self.quantize(amount):
            text = text[1:]   # -0.00 is 0.00
        return f"{text} {self.code}" if code else text
