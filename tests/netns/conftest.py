"""The `topology` fixture (also as `topo`): a fresh four-namespace topology
per test, after removing what crashed earlier runs left."""
import os
import shutil

import pytest

from .topology import Topology, remove_stale

TOOLS = ("ip", "ethtool", "ping", "iperf3", "tcpdump", "ss", "nstat", "sysctl")


@pytest.fixture
def topology():
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces")
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)}")
    remove_stale()  # namespaces of crashed earlier runs
    with Topology() as topo:
        yield topo


@pytest.fixture
def topo(topology):
    """The short name the datapath and pipeline tests use."""
    return topology
