"""The 95th percentile of traffic, one definition for the console's charts
and for 95th-percentile billing: the span cut in 5-minute samples, each the
bytes the units moved in it (from the stored raw rows, their unit totals:
policy 0; a row is stamped with its drain's end, so one at 10:05:00 is of
the sample 10:00-10:05); the top 5 % of the samples are dropped and the
highest left is the figure, in and out apart. Samples the daemon has no
rows for count as zero."""

from __future__ import annotations

import datetime as dt

import numpy as np

from acctd.kernel.abi import Dir
from acctd.store.rollup import naive_utc

SAMPLE_S = 300


def p95(samples) -> int:
    """The value left on top when the highest 5 % (rounded down) of the
    samples are dropped: of 20 samples the second highest, of 8640 (30
    days) the 433rd."""
    a = np.sort(np.asarray(samples, dtype=np.uint64))[::-1]
    if not len(a):
        return 0
    return int(a[len(a) * 5 // 100])


def of_units(con, units: list[int], start: dt.datetime, end: dt.datetime,
             policy_oid: int = 0) -> tuple[int, int, int]:
    """(samples, in, out): the number of whole and begun 5-minute samples in
    [start, end) and the 95th percentile sample's bytes in and out."""
    n = -(-int((end - start).total_seconds()) // SAMPLE_S)
    per = {Dir.IN: np.zeros(max(n, 0), np.uint64), Dir.OUT: np.zeros(max(n, 0), np.uint64)}
    if units and n > 0:
        rows = con.execute(
            "SELECT (epoch_us(ts) - epoch_us(?::TIMESTAMP) - 1) // ? AS slot, dir, sum(bytes) "
            "FROM raw WHERE ts > ? AND ts <= ? AND policy_oid = ? "
            "AND unit_oid IN (SELECT unnest(?::UINTEGER[])) GROUP BY ALL",
            [naive_utc(start), SAMPLE_S * 1_000_000, naive_utc(start), naive_utc(end), policy_oid,
             units]).fetchall()
        for slot, d, b in rows:
            if 0 <= slot < n and d in per:
                per[d][slot] += np.uint64(b)
    return max(n, 0), p95(per[Dir.IN]), p95(per[Dir.OUT])
