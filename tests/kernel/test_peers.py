"""sys-allow-OID / sys-deny-OID in the kernel, through the real compiler and
BPF_PROG_RUN: a unit blocked for money still reaches the payment server, and
a unit's traffic with a denied unit drops whatever its fw-policies say."""

from __future__ import annotations

import pytest
from scapy.all import ICMP, IP, TCP, Ether

from acctd import config
from acctd.kernel import abi, enforcer, syscalls
from acctd.model import enforcement, sys_policy
from acctd.model.snapshot import Snapshot

from .conftest import set_role
from .test_enforce import ETH, REM, XDP_DROP, XDP_PASS, drops_of

pytestmark = [pytest.mark.root, pytest.mark.kernel]

CONFIG = """
[[policy]]
name = "web"
target = "proto tcp port d80"
[[unit]]
type = "host"
name = "pay"
oid = "0A0101"
ip = "10.0.9.1"
[[unit]]
type = "host"
name = "bad"
oid = "0A0102"
ip = "10.0.9.2"
[[unit]]
type = "group"
name = "subs"
sys-policy = ["sys-deny-0A0102"]
[[unit]]
type = "host"
name = "debtor"
ip = "10.0.5.9"
fw-policy = ["web"]
sys-policy = ["sys-deny-money", "sys-allow-0A0101"]
[[unit]]
type = "host"
name = "member"
ip = "10.0.5.10"
parents = ["subs"]
fw-policy = ["web"]
"""


@pytest.fixture(scope="module")
def peered(datapath):
    cfg = config.loads(CONFIG)
    enf = enforcer.Enforcer(datapath.maps)
    states = {i: sys_policy.from_words(u.sys_policy) for i, u in enumerate(cfg.units)}
    blocks = sys_policy.resolve(cfg.units, states, {})[0]
    enf.apply(enforcement.plan(Snapshot.build(cfg), blocks, None))
    yield datapath
    enf.apply({})
    assert not datapath.maps["acct_sets"].read_all()[0].size
    assert not datapath.maps["acct_fw"].read_all()[1]["n_atoms"].any()


def run(dp, src, dst, l4) -> int:
    return syscalls.prog_test_run(dp.prog_fds["acct_xdp"],
                                  bytes(Ether(**ETH) / IP(src=src, dst=dst) / l4))[0]


@pytest.mark.parametrize("dst, l4, verdict, cause", [
    ("10.0.9.1", ICMP(), XDP_PASS, None),                    # the payment server: any traffic
    ("10.0.9.1", TCP(sport=40000, dport=22), XDP_PASS, None),
    (REM, TCP(sport=40000, dport=80), XDP_DROP, abi.Drop.BLOCK),   # the rest: blocked
], ids=["pay-icmp", "pay-ssh", "elsewhere-web"])
def test_sys_allow_oid_passes_a_blocked_units_traffic_with_that_unit(peered, dst, l4, verdict,
                                                                     cause):
    before = drops_of(peered, "10.0.5.9").copy()
    assert run(peered, "10.0.5.9", dst, l4) == verdict
    delta = drops_of(peered, "10.0.5.9") - before
    assert delta[:, abi.Dir.OUT].tolist() == \
        [int(cause == c) for c in range(abi.DROP_MAX)]


def test_sys_allow_oid_lets_the_answer_in(peered):
    """Coming in (arriving at a WAN hook) the peer is the source: the payment
    server's reply passes, other replies are blocked."""
    set_role(peered, abi.Role.WAN)
    try:
        assert run(peered, "10.0.9.1", "10.0.5.9", TCP(sport=443, dport=40000)) == XDP_PASS
        assert run(peered, REM, "10.0.5.9", TCP(sport=80, dport=40000)) == XDP_DROP
    finally:
        set_role(peered, abi.Role.LAN)


def test_sys_deny_oid_of_a_group_drops_its_members_traffic_with_that_unit(peered):
    before = drops_of(peered, "10.0.5.10").copy()
    assert run(peered, "10.0.5.10", REM, TCP(sport=40000, dport=80)) == XDP_PASS   # fw: web
    assert run(peered, "10.0.5.10", "10.0.9.2", TCP(sport=40000, dport=80)) == XDP_DROP
    delta = drops_of(peered, "10.0.5.10") - before
    assert delta[abi.Drop.BLOCK, abi.Dir.OUT] == 1 and delta[abi.Drop.FW].sum() == 0
