"""95th percentile billing for transit customers: the month's 95th
percentile sample of the account's units (acctd.store.percentile, the one
definition the console shows too), in and out apart, the larger of the two
counting, priced by the bit/s."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

from acctd.store import percentile as samples
from acctd.store.percentile import SAMPLE_S, p95

__all__ = ["SAMPLE_S", "Percentile", "of_units", "p95", "shown"]


@dataclasses.dataclass(frozen=True)
class Percentile:
    samples: int              # 5-minute samples in the period
    bytes_in: int             # the 95th percentile sample's bytes, in
    bytes_out: int

    def rate(self, nbytes: int) -> Decimal:
        """Bytes of a sample as bit/s, exactly."""
        return Decimal(nbytes * 8) / SAMPLE_S

    @property
    def billed_bps(self) -> Decimal:
        return self.rate(max(self.bytes_in, self.bytes_out))

    def to_dict(self) -> dict:
        return {"samples": self.samples, "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                "in_bps": shown(self.rate(self.bytes_in)),
                "out_bps": shown(self.rate(self.bytes_out)), "billed_bps": shown(self.billed_bps)}


def shown(bps: Decimal) -> str:
    """A rate as people read it: to the thousandth of a bit/s ("2.667", "1520")."""
    return f"{bps.quantize(Decimal('0.001')).normalize():f}"


def of_units(con, units: list[int], start: dt.datetime, end: dt.datetime,
             policy_oid: int = 0) -> Percentile:
    """The 95th percentile of these units' traffic in [start, end)."""
    return Percentile(*samples.of_units(con, units, start, end, policy_oid))
