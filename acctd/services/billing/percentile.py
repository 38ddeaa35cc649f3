"""95th percentile billing for transit customers: the month cut in
5-minute samples, each the bytes the account's units moved in it (from the
stored raw rows, their unit totals: policy 0; a row is stamped with its
drain's end, so one at 10:05:00 is of the sample 10:00-10:05); the top 5 % of the samples
are dropped and the highest left is billed, in and out apart, the larger
of the two counting. Samples the daemon has no rows for count as zero.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import numpy as np

from acctd.kernel.abi import Dir
from acctd.services.billing.ledger import naive

SAMPLE_S = 300


def p95(samples) -> int:
    """The value left on top when the highest 5 % (rounded down) of the
    samples are dropped: of 20 samples the second highest, of 8640 (30
    days) the 433rd."""
    a = np.sort(np.asarray(samples, dtype=np.uint64))[::-1]
    if not len(a):
        return 0
    return int(a[len(a) * 5 // 100])


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
    n = int((end - start).total_seconds()) // SAMPLE_S
    per = {Dir.IN: np.zeros(n, np.uint64), Dir.OUT: np.zeros(n, np.uint64)}
    if units and n:
        rows = con.execute(
            "SELECT (epoch_us(ts) - epoch_us(?::TIMESTAMP) - 1) // ? AS slot, dir, sum(bytes) "
            "FROM raw WHERE ts > ? AND ts <= ? AND policy_oid = ? "
            "AND unit_oid IN (SELECT unnest(?::UINTEGER[])) GROUP BY ALL",
            [naive(start), SAMPLE_S * 1_000_000, naive(start), naive(end), policy_oid,
             units]).fetchall()
        for slot, d, b in rows:
            if 0 <= slot < n and d in per:
                per[d][slot] += np.uint64(b)
    return Percentile(n, p95(per[Dir.IN]), p95(per[Dir.OUT]))
