"""NeTAMS policy words acctd lacked: `hidden`, `fp-nodefault`, `ifindex s|d`,
`as` from a pfx2as table, and `ds` (the data source a flow came from)."""

import datetime as dt

import numpy as np
import pytest

from acctd import config
from acctd.errors import ConfigError
from acctd.kernel import abi
from acctd.model import asn, enforcement
from acctd.model.addresses import PrefixTable, parse_addr, parse_prefix, split_addrs
from acctd.model.policies import (AcctPlan, FlowView, PolicySet, PolicySpec, account,
                                  local_addrs, parse_target)
from acctd.model.snapshot import Snapshot
from acctd.model.units import UnitSet
from acctd.services import reports
from tests.unit.test_policy import IN, NOON, OUT, flows, host, mask

# --- ifindex s|d -------------------------------------------------------------------

# A gateway with two LAN ports, 3 and 4: a flow going out arrived on its port
# (its input interface), one coming in left through it (its output interface).
PORTS = flows(
    dict(src="10.0.0.1", dst="8.8.8.8", dir=OUT, ifindex=3, bytes=100),
    dict(src="8.8.8.8", dst="10.0.0.1", dir=IN, ifindex=3, bytes=2000),
    dict(src="10.0.1.1", dst="8.8.8.8", dir=OUT, ifindex=4, bytes=30000),
    dict(src="8.8.8.8", dst="10.0.1.1", dir=IN, ifindex=4, bytes=400000),
)


def test_ifindex_sides_are_input_and_output_interface():
    f = PORTS[0]
    assert mask("ifindex s3", f) == [True, False, False, False]
    assert mask("ifindex d3", f) == [False, True, False, False]
    assert mask("ifindex 3", f) == [True, True, False, False]
    assert mask("ifindex b4", f) == [False, False, True, True]
    assert mask("ifindex s3 d4", f) == [True, False, False, True]
    assert mask("ifindex s3:4", f) == [True, False, True, False]
    with pytest.raises(ValueError, match="expected an ifindex item like 2, s2 or d3:5"):
        parse_target("ifindex x3")


def test_ifindex_sides_count_bytes_per_interface():
    us = UnitSet([host("a", "10.0.0.1", acct_policy=("from-3", "to-4")),
                  host("b", "10.0.1.1", acct_policy=("from-3", "to-4"))])
    ps = PolicySet([PolicySpec("from-3", "ifindex s3"), PolicySpec("to-4", "ifindex d4")])
    fl, pk, by = PORTS
    c = account(fl, pk, by, us.match(local_addrs(fl)), AcctPlan(us, ps), NOON)
    got = {(us.units[u].name, ps.policies[p].name, d): b for u, p, d, _, b in c.rows()}
    assert got == {("a", "from-3", OUT): 100, ("b", "to-4", IN): 400000}


def test_ifindex_sides_refused_in_fw_policies():
    text = """
[[policy]]
name = "up"
target = "ifindex s3"
[[unit]]
type = "host"
name = "h"
ip = "10.0.0.9"
fw-policy = ["up"]
"""
    with pytest.raises(ConfigError, match="ifindex sN/dN .* write ifindex N") as e:
        config.loads(text, "acctd.toml")
    assert e.value.line == 9
    with pytest.raises(ConfigError, match="ifindex lists more than 8 interfaces"):
        config.loads(text.replace("ifindex s3", "ifindex 1:4294967295"), "acctd.toml")
    cfg = config.loads(text.replace("ifindex s3", "ifindex 3:4"))
    (h,) = enforcement.plan(Snapshot.build(cfg), {}, None).values()
    assert [a.ifindex for a in h.rules[0].atoms] == [3, 4]


# --- as ------------------------------------------------------------------------------

PFX2AS = """\
# CAIDA routeviews-prefix2as
8.8.8.0\t24\t15169
8.0.0.0\t9\t3356
1.0.4.0\t22\t38803_56203
2001:db8::\t32\t4200000001
"""


def test_pfx2as_lookup_is_longest_prefix(tmp_path):
    path = tmp_path / "pfx2as.txt"
    path.write_text(PFX2AS)
    t = asn.read_pfx2as(str(path))
    addrs = np.array([list(parse_addr(a)) for a in
                      ("8.8.8.8", "8.9.9.9", "1.0.5.1", "2001:db8::7", "192.0.2.1")],
                     dtype=np.uint8)
    assert t.lookup_addrs(addrs).tolist() == [15169, 3356, 38803, 4200000001, asn.UNKNOWN]


def test_pfx2as_lookup_agrees_with_the_general_prefix_table(tmp_path):
    """The /24 direct table and the longer-prefix table against PrefixTable on
    random nested prefixes: /0 to /32, duplicates (the first wins), IPv6."""
    rng = np.random.default_rng(3)
    lines, pfx, asns = [], [], []
    for k in range(3000):
        plen = int(rng.choice([0, 8, 16, 20, 23, 24, 25, 28, 32])) if k else 0
        net = int(rng.integers(0, 1 << 32)) >> (32 - plen) << (32 - plen) if plen else 0
        a = f"{net >> 24}.{net >> 16 & 255}.{net >> 8 & 255}.{net & 255}"
        if k % 500 == 7:
            a, plen = f"2001:db8:{k:x}::", 48
        lines.append(f"{a} {plen} {k + 1}")
        pfx.append(parse_prefix(f"{a}/{plen}"))
        asns.append(k + 1)
    lines.append(lines[5].rsplit(" ", 1)[0] + " 999999")   # a duplicate: the first wins
    path = tmp_path / "pfx2as.txt"
    path.write_text("\n".join(lines) + "\n")
    probe = rng.integers(0, 256, (20000, 16), dtype=np.uint8)
    probe[:19000, :12] = np.frombuffer(bytes(10) + b"\xff\xff", np.uint8)
    probe[19000:, :6] = np.frombuffer(bytes.fromhex("20010db80007"), np.uint8)  # k = 7's /48
    probe[19500:, 5] = 0                                                       # no /48
    ref = PrefixTable(pfx, range(len(pfx))).lookup(*split_addrs(probe))
    want = np.where(ref >= 0, np.array(asns)[ref], asn.UNKNOWN)
    assert asn.read_pfx2as(str(path)).lookup_addrs(probe).tolist() == want.tolist()


def test_as_target_matches_source_destination_or_either(tmp_path):
    path = tmp_path / "pfx2as.txt"
    path.write_text(PFX2AS)
    f, _, _ = flows(dict(src="10.0.0.1", dst="8.8.8.8", dir=OUT),
                    dict(src="8.8.8.8", dst="10.0.0.1", dir=IN),
                    dict(src="10.0.0.1", dst="8.1.1.1", dir=OUT),
                    dict(src="10.0.0.1", dst="192.0.2.1", dir=OUT))
    t = asn.read_pfx2as(str(path))

    def m(target):
        ps = PolicySet([PolicySpec("p", target)], as_table=t)
        return ps.mask(0, FlowView(f), NOON).tolist()
    assert m("as d15169") == [True, False, False, False]
    assert m("as s15169") == [False, True, False, False]
    assert m("as 15169") == [True, True, False, False]
    assert m("as d3000:4000") == [False, False, True, False]
    assert m("as d0") == [False, True, False, True]         # not in the table
    with pytest.raises(ValueError, match=r"needs a prefix-to-AS table: set \[processor\] as-table"):
        parse_target("as s1234")


AS_CONFIG = """
[processor]
as-table = "pfx2as.txt"
[[policy]]
name = "google"
target = "as 15169"
[[unit]]
type = "host"
name = "h"
ip = "10.0.0.1"
acct-policy = ["google"]
"""


def _google_bytes(cfg):
    fl, pk, by = flows(dict(src="10.0.0.1", dst="8.8.8.8", dir=OUT, bytes=100),
                       dict(src="10.0.0.1", dst="9.9.9.9", dir=OUT, bytes=7))
    c = account(fl, pk, by, cfg.units.match(local_addrs(fl)), cfg.plan, NOON)
    return c.get(cfg.units.find("h"), cfg.policies.find("google"))[1].tolist()


def test_as_table_from_the_config_is_read_again_at_reload(tmp_path):
    (tmp_path / "pfx2as.txt").write_text("8.8.8.0 24 15169\n")
    path = tmp_path / "acctd.toml"
    path.write_text(AS_CONFIG)
    assert _google_bytes(config.load(path)) == [0, 100]
    (tmp_path / "pfx2as.txt").write_text("9.9.9.0 24 15169\n")  # the route moved
    assert _google_bytes(config.load(path)) == [0, 7]


@pytest.mark.parametrize("table, line, msg", [
    ("8.8.8.0 24 15169\n8.8.4.0 24\n", 2, 'expected "PREFIX LENGTH AS" (3 fields), got 2'),
    ("# ok\n8.8.8.0 24 AS15169\n", 2, "expected an AS number 1..4294967295, got 'AS15169'"),
    ("8.8.8.0 x 15169\n", 1, "expected a prefix length, got 'x'"),
    ("8.8.8.0 33 15169\n", 1, "expected an IPv4 or IPv6 prefix and its length, got '8.8.8.0' '33'"),
])
def test_as_table_errors_name_its_file_and_line(tmp_path, table, line, msg):
    (tmp_path / "pfx2as.txt").write_text(table)
    path = tmp_path / "acctd.toml"
    path.write_text(AS_CONFIG)
    with pytest.raises(ConfigError) as e:
        config.load(path)
    assert e.value.path == str(tmp_path / "pfx2as.txt") and e.value.line == line
    assert msg in str(e.value)


def test_missing_as_table_is_a_config_error_at_its_key(tmp_path):
    path = tmp_path / "acctd.toml"
    path.write_text(AS_CONFIG)
    with pytest.raises(ConfigError, match="cannot read the AS table: No such file") as e:
        config.load(path)
    assert e.value.path == str(path) and e.value.line == 3


def test_as_refused_in_fw_policies(tmp_path):
    (tmp_path / "pfx2as.txt").write_text("8.8.8.0 24 15169\n")
    path = tmp_path / "acctd.toml"
    path.write_text(AS_CONFIG.replace('acct-policy = ["google"]', 'fw-policy = ["google"]'))
    with pytest.raises(ConfigError, match="target 'as' is looked up at drain time"):
        config.load(path)


# --- ds ------------------------------------------------------------------------------

def test_ds_matches_the_data_source_a_flow_came_from():
    """NeTAMS ds N1 N2: the kernel is source 0, a [[collector]] N tags its
    flows' ifindex 0xFFFF0000 | N; ds is accounting's only, never a fw rule."""
    from acctd.model import sources
    f, _, _ = flows(dict(src="10.0.0.1", dst="8.8.8.8", dir=OUT, ifindex=3),
                    dict(src="10.0.0.1", dst="8.8.8.8", dir=OUT,
                         ifindex=sources.SOURCE_IFINDEX | 1),
                    dict(src="10.0.0.1", dst="8.8.8.8", dir=OUT,
                         ifindex=sources.SOURCE_IFINDEX | 2))
    assert mask("ds 1", f) == [False, True, False]
    assert mask("ds 0 2", f) == [True, False, True]
    with pytest.raises(ValueError, match="expected at least one data-source number"):
        parse_target("ds")
    with pytest.raises(enforcement.FwError, match="target 'ds' is the data source"):
        enforcement.policy_atoms(0, PolicySet([PolicySpec("r1", "ds 1")]), UnitSet([]), None)


# --- fp-nodefault and hidden ---------------------------------------------------------

NODEFAULT = """
[processor]
default-acct-policy = ["ip"]
default-fw-policy = ["web"]
[[policy]]
name = "web"
target = "proto tcp port d80"
[[policy]]
name = "ip"
target = "proto ip"
hidden = true
[[unit]]
type = "host"
name = "fp"
ip = "10.0.0.1"
fp-nodefault = true
[[unit]]
type = "host"
name = "plain"
ip = "10.0.0.2"
"""


def test_fp_nodefault_drops_only_the_default_fw_policies():
    cfg = config.loads(NODEFAULT)
    classes = enforcement.plan(Snapshot.build(cfg), {}, None)
    fp = classes[(parse_addr("10.0.0.1"), 128)]
    plain = classes[(parse_addr("10.0.0.2"), 128)]
    assert plain.fw == abi.Fw.RULES and [r.policy_oid for r in plain.rules] == \
        [cfg.policies.policies[cfg.policies.find("web")].oid]
    assert fp.fw == abi.Fw.PASS and fp.rules == ()          # restrict local, as with no list
    ip = cfg.policies.find("ip")
    assert [e.policy for e in cfg.plan.lists[cfg.units.find("fp")]] == [ip]  # acct kept


def test_hidden_policy_has_no_line_in_reports():
    cfg = config.loads(NODEFAULT)
    snap = Snapshot.build(cfg)
    ip = int(cfg.policies.policies[cfg.policies.find("ip")].oid, 16)
    web = int(cfg.policies.policies[cfg.policies.find("web")].oid, 16)
    req = reports.parse(["to", "x@example.net", "on", "fp"])
    figures = {int(cfg.units.units[0].oid, 16): {(ip, 0): 500, (web, 0): 20, (0, 0): 520}}
    (rep,), _ = reports.build(snap, req, (), figures, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert rep.rows == (("web", 20, 0),) and rep.total == (520, 0)
    assert [p.hidden for p in cfg.policies] == [False, True]
