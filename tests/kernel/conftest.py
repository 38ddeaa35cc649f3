"""One build of the BPF programs per test session, pinned under a private
root and removed (with a check that nothing is left) at the end."""

import os

import numpy as np
import pytest

from acctd.kernel import abi
from acctd.kernel.build import Sizes
from acctd.kernel.datapath import Datapath

# BPF_PROG_RUN runs against the loopback device unless told otherwise.
LO_IFINDEX = 1
LO_SLOT = 1
# Small on purpose: the overflow test must be able to overflow the flow table.
TEST_SIZES = dict(flows=4096, addrs=4096, mock_clock=True)  # rate limits read acct_meta.mock_ns


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


def set_class(dp: Datapath, prefix: str, sys_policy: int = 0, fw: abi.Fw = abi.Fw.PASS,
              ruleset: int = 0, policer=(0, 0), unit: bool = True) -> None:
    """Write one acct_classes entry by hand and tell the CPUs (gen bump)."""
    from acctd.kernel.enforcer import _class_key, _class_val, Enforcer
    from acctd.model.addresses import parse_addr, parse_prefix
    pfx = parse_prefix(prefix) if "/" in prefix else (parse_addr(prefix), 128)
    t = (int(sys_policy), int(fw), ruleset, abi.CLASS_UNIT if unit else 0, *policer)
    dp.maps["acct_classes"].update(_class_key(pfx), _class_val(t))
    Enforcer(dp.maps).bump()


def set_clock(dp: Datapath, ns: int) -> None:
    """The mock clock rate limits read in the test build (ACCT_MOCK_CLOCK)."""
    m = dp.maps["acct_meta"]
    v = m.lookup(np.uint32(0))
    v["mock_ns"] = ns
    m.update(np.uint32(0), v)
