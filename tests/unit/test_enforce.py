"""The enforcement compiler (pure): bw, fw-policy atoms, classes, config errors."""

import pytest

from acctd import config
from acctd.errors import ConfigError
from acctd.kernel import abi, enforcer
from acctd.model import enforcement, sys_policy
from acctd.model.addresses import parse_addr, parse_prefix
from acctd.model.enforcement import Atom
from acctd.model.snapshot import Snapshot

BASE = """
[[policy]]
name = "web"
target = "proto tcp port d80 d443"
[[policy]]
name = "ip"
target = "proto ip"
[[policy]]
name = "office"
target = "proto tcp time 9-18"
"""


def test_parse_bw():
    assert enforcement.parse_bw("10M") == (10_000_000, 10_000_000)
    assert enforcement.parse_bw("2M in 512K out") == (2_000_000, 512_000)
    assert enforcement.parse_bw("256K out") == (None, 256_000)
    assert enforcement.parse_bw({"in": "1G"}) == (1_000_000_000, None)
    for bad in ("", "fast", "1M up", "1M in 2M in", "0K", {"up": "1M"}):
        with pytest.raises(ValueError):
            enforcement.parse_bw(bad)


def test_policer_value_and_minimum_burst():
    ns_per_byte, burst_ns = enforcer.policer_value(8_000_000, 0.1)   # 1e6 B/s
    assert ns_per_byte == 1000 << abi.POLICER_SHIFT and burst_ns == 100_000_000
    # a slow rate still holds one whole GSO packet
    _, burst_ns = enforcer.policer_value(1_000_000, 0.1)              # 125,000 B/s
    assert burst_ns == int(enforcement.MIN_BURST * 1e9 / 125_000)


def test_policy_atoms_expand_alternatives_and_time():
    cfg = config.loads(BASE)
    web = cfg.policies.find("web")
    assert enforcement.policy_atoms(web, cfg.policies, cfg.units, None) == [
        Atom(proto=6, dport=(80, 80)), Atom(proto=6, dport=(443, 443))]
    office = cfg.policies.find("office")
    import datetime as dt
    assert enforcement.policy_atoms(office, cfg.policies, cfg.units, dt.datetime(2026, 1, 5, 10)) \
        == [Atom(proto=6)]
    assert enforcement.policy_atoms(office, cfg.policies, cfg.units, dt.datetime(2026, 1, 5, 20)) == []


def test_plan_classes_and_restrict():
    cfg = config.loads(BASE + """
[processor]
restrict = { all = "drop", local = "pass" }
[[unit]]
type = "host"
name = "a"
ip = "10.0.0.1"
fw-policy = ["web"]
bw = "2M in 1M out"
[[unit]]
type = "host"
name = "b"
ip = "10.0.0.2"
acct-policy = ["ip"]
[[unit]]
type = "host"
name = "c"
ip = "10.0.0.3"
[[unit]]
type = "group"
name = "g"
[[unit]]
type = "net"
name = "n"
net = "10.1.0.0/16"
acct-policy = ["ip"]
parents = ["g"]
""")
    g = cfg.units.find("g")
    blocks = sys_policy.resolve(cfg.units, {g: abi.SysPolicy.MONEY}, {})[0]  # groups reach members
    classes = enforcement.plan(Snapshot.build(cfg), blocks, None)
    a = classes[(parse_addr("10.0.0.1"), 128)]
    assert a.fw == abi.Fw.RULES and a.bw == (2_000_000, 1_000_000) and len(a.rules) == 1
    assert classes[(parse_addr("10.0.0.2"), 128)].fw == abi.Fw.PASS      # restrict local
    assert classes[(parse_addr("10.0.0.3"), 128)].fw == abi.Fw.DROP      # no policies: all
    assert classes[parse_prefix("10.1.0.0/16")].sys_policy == abi.SysPolicy.MONEY  # from its group
    assert classes[enforcement.ALL] == enforcement.ClassSpec(0, abi.Fw.DROP)
    assert enforcement.blocks(classes) == {"10.1.0.0/16": abi.SysPolicy.MONEY}


def test_fw_policy_inactive_now_passes_nothing():
    import datetime as dt
    cfg = config.loads(BASE + """
[[unit]]
type = "host"
name = "a"
ip = "10.0.0.1"
fw-policy = ["office"]
""")
    night = enforcement.plan(Snapshot.build(cfg), {}, dt.datetime(2026, 1, 5, 23))
    a = night[(parse_addr("10.0.0.1"), 128)]
    assert a.fw == abi.Fw.RULES and a.rules == ()   # listed, none active: drop all


@pytest.mark.parametrize("unit, msg", [
    ('type = "group"\nname = "g"\nbw = "1M"', "give them to the group's members"),
    ('type = "host"\nname = "h"\nip = "10.0.0.9"\nfw-policy = ["nope"]', "unknown policy 'nope'"),
    ('type = "host"\nname = "h"\nip = "10.0.0.9"\nbw = "1M sideways"', "SPEED in SPEED out"),
    ('type = "host"\nname = "h"\nip = "10.0.0.9"\nfw-policy = ["many"]', "at most 8 fit"),
])
def test_config_errors_name_the_line(unit, msg):
    text = BASE + '[[policy]]\nname = "many"\ntarget = "proto tcp port d1 d2 d3 d4 d5 d6 d7 d8 d9"\n' \
        + "[[unit]]\n" + unit + "\n"
    with pytest.raises(ConfigError) as e:
        config.loads(text, "acctd.toml")
    assert msg in str(e.value) and "acctd.toml" in str(e.value)
    assert e.value.line is not None


def test_time_dependent_follows_policy_references():
    cfg = config.loads(BASE + """
[[policy]]
name = "either"
target = "policy-or web office"
""")
    find = cfg.policies.find
    assert enforcement.time_dependent(cfg.policies, [find("office")])
    assert enforcement.time_dependent(cfg.policies, [find("either")])   # through a reference
    assert not enforcement.time_dependent(cfg.policies, [find("web"), find("ip")])


PEERS = """
[[unit]]
type = "host"
name = "pay"
oid = "0A0101"
ip = "10.0.9.1"
[[unit]]
type = "net"
name = "lan2"
oid = "0A0102"
net = "10.2.0.0/16"
[[unit]]
type = "group"
name = "subs"
sys-policy = ["sys-deny-0A0102", "sys-allow-0A0101"]
[[unit]]
type = "host"
name = "h"
ip = "10.0.5.9"
parents = ["subs"]
sys-policy = ["sys-deny-0A0101", "sys-deny-money"]
"""


def test_peers_are_the_units_own_words_then_its_groups():
    cfg = config.loads(PEERS)
    h = enforcement.plan(Snapshot.build(cfg), {}, None)[(parse_addr("10.0.5.9"), 128)]
    assert h.peers == ((frozenset({(parse_addr("10.0.9.1"), 128)}), False),   # its own deny
                       (frozenset({parse_prefix("10.2.0.0/16")}), False))     # the group's
    assert enforcement.plan(Snapshot.build(cfg), {}, None)[
        (parse_addr("10.0.9.1"), 128)].peers == ()


def test_peer_of_no_unit_is_a_config_error_at_its_line():
    with pytest.raises(ConfigError, match="key .sys-policy.: no unit has oid 0ABCDE") as e:
        config.loads(PEERS.replace("sys-deny-0A0101", "sys-deny-0ABCDE"), "acctd.toml")
    assert e.value.line == 21
