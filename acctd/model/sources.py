"""Data sources (NeTAMS `service data-source N` and a unit's `ds-list`):
where a unit's traffic is counted from. Source 0 is the kernel's datapath;
each `[[collector]]` is its own numbered source. A unit takes the sources
its `ds-list` names (default: the kernel only), so a subscriber seen both
by the kernel and by a router's NetFlow is counted from one of them, never
from both added together.

The source of a flow is in its key: collector flows carry
`SOURCE_IFINDEX | source` as ifindex, beyond any real interface index,
so the policy target `ds` and the flow log can tell them apart."""

from __future__ import annotations

import numpy as np

KERNEL = 0
SOURCE_IFINDEX = 0xFFFF0000   # | the data-source number; real ifindexes stay far below
MAX_SOURCE = 0xFFFF


def of_flows(flow_keys: np.ndarray) -> np.ndarray:
    """The data source of each flow (0: the kernel)."""
    return of_ifindex(flow_keys["ifindex"])


def of_ifindex(ifindex: np.ndarray) -> np.ndarray:
    """The data source of each flow, from its ifindex (the source's tag)."""
    ifx = np.asarray(ifindex, np.uint32)
    return np.where(ifx >= SOURCE_IFINDEX, ifx & MAX_SOURCE, KERNEL).astype(np.uint32)


def takes(units, source: int) -> np.ndarray:
    """(n_units,) bool: which units count their traffic from `source`."""
    return np.fromiter((source in u.ds_list for u in units.units), bool, len(units.units))


def kernel_view(units, flow_keys, flow_vals, addr_keys, addr_vals):
    """The kernel's deltas without the units that count from elsewhere.
    Their per-address counts move to the unattributed row (returned per
    dir), so units plus unattributed still equal the datapath's totals."""
    kernel = takes(units, KERNEL)
    none = np.zeros(2, np.uint64)
    if kernel.all():
        return flow_keys, flow_vals, addr_keys, addr_vals, none, none
    from acctd.model import policies
    keep_f = _keeps(units, kernel, policies.local_addrs(flow_keys)) if len(flow_keys) else \
        np.zeros(0, bool)
    keep_a = _keeps(units, kernel, addr_keys["addr"]) if len(addr_keys) else np.zeros(0, bool)
    gone = addr_vals[~keep_a]
    return (flow_keys[keep_f], flow_vals[keep_f], addr_keys[keep_a], addr_vals[keep_a],
            gone["packets"].sum(axis=0).astype(np.uint64),
            gone["bytes"].sum(axis=0).astype(np.uint64))


def _keeps(units, kernel: np.ndarray, addrs: np.ndarray) -> np.ndarray:
    leaf = units.match(addrs)
    return (leaf < 0) | kernel[np.maximum(leaf, 0)]
