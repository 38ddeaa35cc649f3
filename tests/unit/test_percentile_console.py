"""The console's 95th percentile is billing's: 5-minute samples of the
stored raw rows while they cover the span, hourly rates once they do not."""

import datetime as dt

import numpy as np

from acctd.config import loads
from acctd.services.billing import percentile
from acctd.store.rollup import rollup

from .daemon_stub import ALICE, daemon_stub

UTC = dt.timezone.utc
MIDNIGHT = dt.datetime(2026, 12, 2, tzinfo=UTC)
NOW = MIDNIGHT + dt.timedelta(hours=4, minutes=2)      # 49 samples begun today


def commit(d, when, nbytes_in, nbytes_out):
    oid = int(d.snapshot.unit("alice").oid, 16)
    rows = {"unit_oid": np.array([oid, oid], np.uint32), "policy_oid": np.array([0, 0], np.uint32),
            "dir": np.array([0, 1], np.uint8), "packets": np.array([1, 1], np.uint64),
            "bytes": np.array([nbytes_in, nbytes_out], np.uint64)}
    d.storage.commit(rollup(rows, when, d.config.processor.zone), {})


def test_the_day_views_95th_is_of_5_minute_samples_as_billing_bills_them():
    cfg = loads('[processor]\ntime-zone = "UTC"\n' + ALICE, "t.toml")
    with daemon_stub(cfg, clock=lambda: NOW) as d:
        # a drain at the end of each of the first 40 samples: k*1000 bytes in, 7 out
        for k in range(1, 41):
            commit(d, MIDNIGHT + dt.timedelta(minutes=5 * k), k * 1000, 7)
        got = d.call("series", unit="alice", view="hour")
        # 49 samples (9 of them empty): drop the top 49*5//100 = 2, keep 38000
        assert got["p95_sample_s"] == 300
        assert got["p95_bps"] == {"in": 38000 * 8 // 300, "out": 7 * 8 // 300}
        oid = int(d.snapshot.unit("alice").oid, 16)
        billed = percentile.of_units(d.storage.con, [oid], MIDNIGHT, NOW)
        assert (billed.samples, billed.bytes_in, billed.bytes_out) == (49, 38000, 7)
        # the raw rows of the day's start are gone: the hourly rates, the same rule
        d.storage.raw_retention = 3600
        got = d.call("series", unit="alice", view="hour")
        hours = [sum(k * 1000 for k in range(1, 41) if (5 * k) // 60 == h) for h in range(5)]
        assert got["p95_sample_s"] == 3600
        assert got["p95_bps"]["in"] == sorted(hours)[-1] * 8 // 3600   # 5 hours: none dropped
