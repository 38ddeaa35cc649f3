"""One build of the BPF programs per test session, pinned under a private
root and removed (with a check that nothing is left) at the end."""

import os

import numpy as np
import pytest

from acctd import abi
from acctd.build import Sizes
from acctd.datapath import Datapath

# BPF_PROG_RUN runs against the loopback device unless told otherwise.
LO_IFINDEX = 1
LO_SLOT = 1
# Small on purpose: the overflow test must be able to overflow the flow table.
TEST_SIZES = dict(flows=4096, addrs=4096)


@pytest.fixture(scope="session")
def datapath():
    if os.geteuid() != 0:
        pytest.skip("needs root to load BPF programs")
    root = f"/sys/fs/bpf/acctd-test-{os.getpid()}"
    dp = Datapath(Sizes(pin_root=root, **TEST_SIZES))
    dp.load()
    set_role(dp, abi.Role.LAN)
    yield dp
    dp.detach()
    assert not os.path.exists(root), f"detach left {root} behind"


def set_role(dp: Datapath, role: abi.Role) -> None:
    v = np.zeros(1, abi.IFACE_CFG)
    v["role"], v["slot"] = int(role), LO_SLOT
    dp.maps["acct_iface_cfg"].update(np.uint32(LO_IFINDEX), v[0])
