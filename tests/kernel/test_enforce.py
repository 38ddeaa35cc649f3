"""Enforcement in the kernel, through the real compiler (acctd/model/enforcement.py)
and BPF_PROG_RUN: fw-policies, restrict, rate limits on a mock clock."""

from __future__ import annotations

import numpy as np
import pytest
from scapy.all import ICMP, IP, TCP, UDP, Ether, Raw

from acctd import config
from acctd.kernel import abi, syscalls, drain, enforcer
from acctd.model import enforcement
from acctd.model.addresses import format_addr
from acctd.model.snapshot import Snapshot

from .conftest import LO_SLOT, set_clock

pytestmark = [pytest.mark.root, pytest.mark.kernel]

ETH = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
REM = "192.0.2.10"
XDP_DROP, XDP_PASS = 1, 2

CONFIG = """
[processor]
restrict = { all = "drop", local = "pass" }
[[policy]]
name = "web"
target = "proto tcp port d80 d443"
[[policy]]
name = "dns"
target = "proto udp port d53"
bw = "8M out"
[[policy]]
name = "ip"
target = "proto ip"
[[policy]]
name = "icmp"
target = "proto icmp"
[[unit]]
type = "host"
name = "fw"
ip = "10.0.5.1"
fw-policy = ["web", "dns"]
[[unit]]
type = "host"
name = "noicmp"
ip = "10.0.5.2"
acct-policy = ["ip"]
fw-policy = ["!icmp"]
[[unit]]
type = "host"
name = "plain"
ip = "10.0.5.3"
acct-policy = ["ip"]
[[unit]]
type = "net"
name = "nolocal"
net = "10.0.6.0/24"
acct-policy = ["ip"]
no-local-pass = true
[[unit]]
type = "host"
name = "slow"
ip = "10.0.5.4"
acct-policy = ["ip"]
bw = "8M"
"""


@pytest.fixture(scope="module")
def enforced(datapath):
    cfg = config.loads(CONFIG)
    enf = enforcer.Enforcer(datapath.maps, burst_s=0.1)
    classes = enforcement.plan(Snapshot.build(cfg), {}, None)
    enf.apply(classes)
    yield datapath, enf, classes
    enf.apply({})  # the other kernel tests expect no classes
    assert len(datapath.maps["acct_classes"].read_all()[0]) == 0
    assert not datapath.maps["acct_sets"].read_all()[0].size
    assert not datapath.maps["acct_fw"].read_all()[1]["n_atoms"].any()


def run(dp, pkt) -> int:
    return syscalls.prog_test_run(dp.prog_fds["acct_xdp"], bytes(pkt))[0]


def out(src, l4, size=0):
    return Ether(**ETH) / IP(src=src, dst=REM) / l4 / Raw(b"x" * size)


def drops_of(dp, addr: str) -> np.ndarray:
    keys, vals = drain.read(dp.maps["acct_addrs"])
    for k, v in zip(keys, vals):
        if format_addr(k["addr"]) == addr:
            return v["drop_packets"]
    return np.zeros((abi.DROP_MAX, abi.DIR_MAX), np.uint64)


@pytest.mark.parametrize("l4, verdict", [
    (TCP(sport=40000, dport=80), XDP_PASS),
    (TCP(sport=40000, dport=443), XDP_PASS),
    (UDP(sport=40000, dport=53), XDP_PASS),
    (TCP(sport=40000, dport=22), XDP_DROP),
    (UDP(sport=40000, dport=54), XDP_DROP),
    (ICMP(), XDP_DROP),
], ids=["tcp80", "tcp443", "udp53", "tcp22", "udp54", "icmp"])
def test_allow_list_passes_only_its_policies(enforced, l4, verdict):
    dp = enforced[0]
    before = drops_of(dp, "10.0.5.1")[abi.Drop.FW, abi.Dir.OUT]
    assert run(dp, out("10.0.5.1", l4)) == verdict
    after = drops_of(dp, "10.0.5.1")[abi.Drop.FW, abi.Dir.OUT]
    assert after - before == (verdict == XDP_DROP)


def test_inverted_policy_passes_everything_else(enforced):
    dp = enforced[0]
    assert run(dp, out("10.0.5.2", ICMP())) == XDP_DROP
    assert run(dp, out("10.0.5.2", UDP(sport=1, dport=9))) == XDP_PASS


def test_restrict(enforced):
    dp = enforced[0]
    # a unit without fw-policy but with acct-policies: restrict local (pass)
    assert run(dp, out("10.0.5.3", ICMP())) == XDP_PASS
    # no unit: restrict all (drop), counted per interface, no address entry
    ifs = drain.read(dp.maps["acct_ifaces"])[1][LO_SLOT]
    assert run(dp, out("10.0.7.9", ICMP(), 20)) == XDP_DROP
    ifs2 = drain.read(dp.maps["acct_ifaces"])[1][LO_SLOT]
    assert ifs2["drop_packets"][abi.Drop.FW, abi.Dir.OUT] - ifs["drop_packets"][abi.Drop.FW, abi.Dir.OUT] == 1
    keys = drain.read(dp.maps["acct_addrs"])[0]
    assert "10.0.7.9" not in {format_addr(k["addr"]) for k in keys}
    # no-local-pass: restrict all applies to the unit
    assert run(dp, out("10.0.6.7", ICMP())) == XDP_DROP
    assert drops_of(dp, "10.0.6.7")[abi.Drop.FW, abi.Dir.OUT] == 1  # a unit: counted per address


def test_block_overrides_and_sys_allow_lifts_only_blocks(enforced):
    dp, enf, classes = enforced
    cfg = config.loads(CONFIG)
    fw = cfg.units.find("fw")
    enf.apply(enforcement.plan(Snapshot.build(cfg), {fw: abi.SysPolicy.QUOTA}, None))
    assert run(dp, out("10.0.5.1", TCP(sport=1, dport=80))) == XDP_DROP
    assert drops_of(dp, "10.0.5.1")[abi.Drop.BLOCK, abi.Dir.OUT] >= 1
    enf.apply(enforcement.plan(Snapshot.build(cfg), {fw: abi.SysPolicy.QUOTA | abi.SysPolicy.ALLOW}, None))
    assert run(dp, out("10.0.5.1", TCP(sport=1, dport=80))) == XDP_PASS
    assert run(dp, out("10.0.5.1", TCP(sport=1, dport=22))) == XDP_DROP  # fw still holds
    enf.apply(classes)


def test_rate_limit_token_bucket_on_mock_clock(enforced):
    """8 Mbit/s = 1e6 B/s, burst 0.1 s = 100,000 B. Packets of 1,000 IP bytes
    at one instant: a full bucket holds 100 of them (the first one charged
    too); 10 ms later, 10 more."""
    dp = enforced[0]
    pkt = out("10.0.5.4", UDP(sport=5000, dport=6000), 1000 - 28)
    assert len(pkt[IP]) == 1000
    t0 = 10 ** 12
    set_clock(dp, t0)
    verdicts = [run(dp, pkt) for _ in range(150)]
    assert verdicts == [XDP_PASS] * 100 + [XDP_DROP] * 50
    set_clock(dp, t0 + 10 * 10 ** 6)
    verdicts = [run(dp, pkt) for _ in range(20)]
    assert verdicts == [XDP_PASS] * 10 + [XDP_DROP] * 10
    d = drops_of(dp, "10.0.5.4")
    assert d[abi.Drop.POLICE, abi.Dir.OUT] == 50 + 10
    # the per-policy limit of "dns" (8M out) on unit "fw" is its own bucket
    dns = out("10.0.5.1", UDP(sport=5000, dport=53), 1000 - 28)
    assert [run(dp, dns) for _ in range(102)].count(XDP_PASS) == 100


def test_fw_and_rate_limits_act_once_per_direction(enforced):
    """A LAN egress hook enforces fw-policies only when it is the first hook
    of its direction (no WAN hook: ACCT_IF_EGRESS_FIRST); blocks act at
    every hook. So a packet is never charged twice."""
    from .conftest import LO_IFINDEX
    dp = enforced[0]
    tc_egress = dp.prog_fds["acct_tc_egress"]
    into = bytes(Ether(**ETH) / IP(src=REM, dst="10.0.5.1") / TCP(sport=22, dport=40000))
    cfg = dp.maps["acct_iface_cfg"]

    def egress(flags: int) -> int:
        v = cfg.lookup(np.uint32(LO_IFINDEX))
        v["flags"] = flags
        cfg.update(np.uint32(LO_IFINDEX), v)
        return syscalls.prog_test_run(tc_egress, into)[0]
    try:
        assert egress(0) == 0                          # TC_ACT_OK: WAN ingress did the fw
        assert egress(abi.IF_EGRESS_FIRST) == 2        # TC_ACT_SHOT: fw (only web, dns out)
    finally:
        egress(0)


def test_deny_rules_drop_their_policy_before_the_fw_list(enforced):
    """A quota's block-policy (plan's `denied`): on a unit without fw-policies
    only ICMP drops; on one with ["web", "dns"], dns drops and web still passes."""
    dp, enf, classes = enforced
    cfg = config.loads(CONFIG)
    snap = Snapshot.build(cfg)
    denied = {snap.unit("plain").oid: (("icmp",), abi.SysPolicy.QUOTA),
              snap.unit("fw").oid: (("dns",), abi.SysPolicy.QUOTA)}
    enf.apply(enforcement.plan(snap, {}, None, denied))
    try:
        assert run(dp, out("10.0.5.3", ICMP())) == XDP_DROP
        assert run(dp, out("10.0.5.3", UDP(sport=1, dport=9))) == XDP_PASS
        assert run(dp, out("10.0.5.1", UDP(sport=1, dport=53))) == XDP_DROP
        assert run(dp, out("10.0.5.1", TCP(sport=1, dport=80))) == XDP_PASS
        assert run(dp, out("10.0.5.1", TCP(sport=1, dport=22))) == XDP_DROP
    finally:
        enf.apply(classes)


def test_captive_portal_lets_a_login_only_block_speak_http(enforced):
    """[captive]: a unit blocked for its login only sends and receives TCP
    with remote port 80 (for the DNAT to the login page); nothing else, and
    not when another reason blocks it too or without [captive]."""
    dp, enf, classes = enforced
    plain = config.loads(CONFIG).units.find("plain")

    def verdicts(cfg_text, bits):
        cfg = config.loads(cfg_text)
        enf.apply(enforcement.plan(Snapshot.build(cfg), {plain: bits}, None))
        # (the replies, remote port 80 as the source, pass at the LAN egress:
        # tests/netns/test_captive.py; XDP sees one direction here)
        return [run(dp, out("10.0.5.3", TCP(sport=40000, dport=80))),
                run(dp, out("10.0.5.3", TCP(sport=40000, dport=443))),
                run(dp, out("10.0.5.3", UDP(sport=40000, dport=80))),
                run(dp, out("10.0.5.3", TCP(sport=80, dport=40000)))]
    captive = CONFIG + '[captive]\nlisten = "10.0.5.254:8080"\n'
    try:
        assert verdicts(captive, abi.SysPolicy.LOGIN) == [XDP_PASS] + [XDP_DROP] * 3
        assert verdicts(captive, abi.SysPolicy.LOGIN | abi.SysPolicy.QUOTA) == [XDP_DROP] * 4
        assert verdicts(CONFIG, abi.SysPolicy.LOGIN) == [XDP_DROP] * 4
    finally:
        enf.apply(classes)
