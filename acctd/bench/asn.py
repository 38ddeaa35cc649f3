"""`make bench`, the `as` target: loading a full-table pfx2as file (what a
config load and every reload pay) and matching a drain's flows against it
(what every drain pays), as JSON lines. Synthetic data, fixed seed: a
routing table's mix of prefix lengths, /8 to /24, and 64-bit random flows."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import time

import numpy as np

from acctd.bench.control import emit
from acctd.kernel import abi
from acctd.model.asn import read_pfx2as
from acctd.model.policies import FlowView, PolicySet, PolicySpec

PREFIXES = 1_000_000   # about today's IPv4 table
FLOWS = 100_000


def write_table(path: str, n: int, rng: np.random.Generator) -> None:
    lens = rng.choice([8, 12, 16, 19, 20, 21, 22, 23, 24], n,
                      p=[.001, .004, .02, .03, .04, .05, .1, .1, .655])
    shift = (32 - lens).astype(np.uint64)
    nets = rng.integers(1 << 24, 224 << 24, n, dtype=np.uint64) >> shift << shift
    asns = rng.integers(1, 400_000, n)
    with open(path, "w") as f:
        for net, plen, asn in zip(nets.tolist(), lens.tolist(), asns.tolist()):
            f.write(f"{net >> 24}.{net >> 16 & 255}.{net >> 8 & 255}.{net & 255}\t{plen}\t{asn}\n")


def flows(n: int, rng: np.random.Generator) -> np.ndarray:
    f = np.zeros(n, abi.FLOW_KEY)
    for side in ("saddr", "daddr"):
        f[side][:, 10:12] = 255
        f[side][:, 12:] = rng.integers(1, 224, (n, 4), dtype=np.uint8)
    f["dir"] = rng.integers(0, 2, n)
    return f


def main() -> None:
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "pfx2as.txt")
        write_table(path, PREFIXES, rng)
        t = time.perf_counter()
        table = read_pfx2as(path)
        emit("asn.table_load_s.prefixes_1m", time.perf_counter() - t, "s")
    ps = PolicySet([PolicySpec("p", "as s15169 d3356:3400")], as_table=table)
    f = flows(FLOWS, rng)
    now = dt.datetime(2026, 1, 1, 12)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        ps.mask(0, FlowView(f), now)  # a fresh view: both sides looked up, as in a drain
        best = min(best, time.perf_counter() - t)
    emit("asn.match_ms.flows_100k", best * 1000, "ms")


if __name__ == "__main__":
    main()
