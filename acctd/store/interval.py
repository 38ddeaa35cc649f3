"""One drain interval, from kernel deltas to oid-keyed rows (pure: numpy only).

Two sources, two jobs:
- the exact per-address counters give each unit's all-traffic row
  (policy_oid 0) and the unattributed row (unit_oid 0), so stored totals
  always reconcile with the datapath's interface totals, even when the LRU
  flow table evicted flows before a drain;
- the flow table gives the per-policy rows (a policy needs ports, protocols
  and peers, which only flows have). Bytes of flows evicted between two
  drains are in the unit's total but in no policy; `acctctl health` shows
  evictions, and the flow table should be sized so there are none.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from acctd.kernel import abi
from acctd.model import policies
from acctd.model.snapshot import Snapshot
from acctd.store import rollup


def unit_sums(model: Snapshot, leaf: np.ndarray, packets: np.ndarray, bytes_: np.ndarray):
    """Per unit (groups included, each byte once) and per dir: packets, bytes.

    leaf: unit index per row (-1 none); packets/bytes_: (n, 2) per dir."""
    n_units = len(model.units)
    up = np.zeros((n_units, abi.DIR_MAX), np.uint64)
    ub = np.zeros((n_units, abi.DIR_MAX), np.uint64)
    hit = leaf >= 0
    if hit.any():
        # each row goes to its unit and that unit's ancestor groups (deduplicated)
        lf = leaf[hit]
        lens = model.units.target_len[lf]
        starts = model.units.target_ptr[lf]
        rows = np.repeat(np.arange(len(lf)), lens)
        offs = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
        targets = model.units.target_idx[np.repeat(starts, lens) + offs]
        for d in range(abi.DIR_MAX):
            np.add.at(up[:, d], targets, packets[hit][rows, d])
            np.add.at(ub[:, d], targets, bytes_[hit][rows, d])
    nonep = packets[~hit].sum(axis=0).astype(np.uint64)
    noneb = bytes_[~hit].sum(axis=0).astype(np.uint64)
    return up, ub, nonep, noneb


def columns(model: Snapshot, now: dt.datetime, flow_keys: np.ndarray, flow_vals: np.ndarray,
            addr_keys: np.ndarray, addr_vals: np.ndarray,
            unattr_packets: np.ndarray, unattr_bytes: np.ndarray
            ) -> tuple[dict[str, np.ndarray], policies.Counts]:
    """Oid-keyed rows (rollup.cells layout) for one drain's deltas, and the
    flow accounting they came from (for its check/match counters).

    now: the drain's local time (for `time`/`day` policies); unattr_*: per dir,
    what the kernel could not attribute to an address (address table full)."""
    view = policies.FlowView(flow_keys)  # the address halves: units and policies both
    leaf = model.units.match_flows(view) if len(flow_keys) else np.zeros(0, np.int32)
    counts = policies.account(view, flow_vals["packets"], flow_vals["bytes"], leaf,
                            model.plan, now, model.units)
    parts = [rollup.cells(counts, model.unit_oids, model.policy_oids, totals=False)]

    aleaf = model.units.match(addr_keys["addr"]) if len(addr_keys) else np.zeros(0, np.int32)
    up, ub, nonep, noneb = unit_sums(model, aleaf, addr_vals["packets"], addr_vals["bytes"])
    nonep = nonep + np.asarray(unattr_packets, np.uint64)
    noneb = noneb + np.asarray(unattr_bytes, np.uint64)
    u, d = np.nonzero(up | ub)
    parts.append({"unit_oid": model.unit_oids[u], "policy_oid": np.full(len(u), rollup.ALL_TRAFFIC),
                  "dir": d, "packets": up[u, d], "bytes": ub[u, d]})
    for cause, oid in rollup.DROPPED.items():
        c = abi.Drop[cause.upper()]
        dp, db, _, _ = unit_sums(model, aleaf, addr_vals["drop_packets"][:, c],
                                 addr_vals["drop_bytes"][:, c])
        u, d = np.nonzero(dp | db)
        parts.append({"unit_oid": model.unit_oids[u], "policy_oid": np.full(len(u), oid),
                      "dir": d, "packets": dp[u, d], "bytes": db[u, d]})
    d = np.flatnonzero(nonep | noneb)
    parts.append({"unit_oid": np.full(len(d), rollup.UNATTRIBUTED),
                  "policy_oid": np.full(len(d), rollup.ALL_TRAFFIC),
                  "dir": d, "packets": nonep[d], "bytes": noneb[d]})
    types = {"unit_oid": np.uint32, "policy_oid": np.uint32, "dir": np.uint8,
             "packets": np.uint64, "bytes": np.uint64}
    cols = {k: np.concatenate([np.asarray(p[k]) for p in parts]).astype(t, copy=False)
            for k, t in types.items()}
    return cols, counts
