"""NeTAMS import: the reference's sample imports, loads and counts; nothing is dropped silently."""

import datetime as dt
import pathlib

import numpy as np

from acctd import config
from acctd.importers import netams
from acctd.kernel import abi
from acctd.model.addresses import parse_addr
from acctd.model.policies import account, local_addrs

SAMPLE = pathlib.Path(__file__).resolve().parents[1] / "data" / "netams_sample.conf"


def sample():
    return netams.import_file(str(SAMPLE))


def test_sample_keeps_the_reference_typography():
    text = SAMPLE.read_text(encoding="utf-8")
    assert "real\u2013name" in text and "\u00abip from any to any via rl0\u00bb" in text


def test_sample_imports_and_loads():
    res = sample()
    cfg = config.loads(res.toml, "imported.toml")
    assert len(cfg.units) == 28 and len(cfg.policies) == 2
    assert cfg.processor.lookup_delay == 20 and cfg.processor.flow_lifetime == 60
    assert (cfg.processor.restrict_all, cfg.processor.restrict_local) == ("pass", "pass")
    us = cfg.units
    u = us.units[us.find("13_1")]
    assert (u.type, u.oid, u.email, u.acct_policy) == ("user", "025BD0", "user08@a.ru",
                                                       ("all-ip", "http"))
    assert u.addrs == (parse_addr("192.168.0.16"),)
    assert us.units[us.find("TPSO-1")].oid == "02140E"  # en dash in the name became '-'
    assert us.units[us.find("local")].nets[0][1] == 96 + 24  # "ip 192.168.0/24"
    assert us.units[us.find("all")].nets[0][1] == 96  # "ip 0.0.0.0 mask 0.0.0.0"
    assert us.units[us.find("LAN")].type == "group"
    http = cfg.policies.policies[cfg.policies.find("147C83")]
    assert http.name == "http"
    q = cfg.quota
    assert (q.policy, q.soft_threshold, q.block_policy, q.delay, dict(q.units)) == \
        ("http", 75, None, 10, {})
    assert q.notify == {"soft": ("{owner}",), "hard": ("{owner}", "admin"),
                        "return": ("{owner}",)}


def test_sample_warnings_name_their_lines():
    res = sample()
    got = {(w.line, w.directive) for w in res.warnings}
    for want in [(1, "debug none"), (9, "service server 0"), (13, "listen 20001"),
                 (97, "storage 1 all"), (117, "service data-source 1"),
                 (123, "rule 5 ip from any to any via rl0"), (137, "run hourly")]:
        assert want in got, want
    assert "user oid 01327B" in next(w.directive for w in res.warnings if w.line == 3)
    # every directive line is either carried whole or warned about
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    directive_lines = {n for n, ln in enumerate(lines, 1)
                       if ln.strip() and not ln.startswith("#")}
    warned = {w.line for w in res.warnings}
    assert directive_lines == res.carried | warned
    assert not res.carried & warned
    assert 55 in res.carried  # "email user08@a.ru ..." continues the unit on line 53
    assert res.toml.count("# ") >= len(res.warnings)  # also listed at the top of the output


def test_imported_sample_counts_traffic():
    cfg = config.loads(sample().toml, "imported.toml")
    f = np.zeros(3, dtype=abi.FLOW_KEY)
    f["dir"] = [abi.Dir.OUT, abi.Dir.IN, abi.Dir.OUT]
    f["proto"] = [6, 6, 17]
    f["dport"] = [8080, 0, 53]
    f["sport"] = [40000, 3128, 40000]
    for i, (src, dst) in enumerate([("192.168.0.10", "8.8.8.8"), ("8.8.8.8", "192.168.0.10"),
                                    ("192.168.0.99", "8.8.8.8")]):
        f[i]["saddr"] = np.frombuffer(parse_addr(src), np.uint8)
        f[i]["daddr"] = np.frombuffer(parse_addr(dst), np.uint8)
    by = np.array([1000, 20000, 300], dtype=np.uint64)
    pk = np.ones(3, dtype=np.uint64)
    leaf = cfg.units.match(local_addrs(f))
    c = account(f, pk, by, leaf, cfg.plan, dt.datetime(2026, 11, 18, 12))
    us, ps = cfg.units, cfg.policies

    def got(unit, policy):
        return c.get(us.find(unit), ps.find(policy))[1].tolist()

    assert got("02", "all-ip") == [20000, 1000]
    assert got("02", "http") == [20000, 1000]
    assert got("local", "all-ip") == [0, 300]  # .99 has no host unit: the /24 net has it


def test_directives_that_cannot_be_carried_are_reported():
    text = "\n".join([
        "service processor",
        "policy name dns target proto udp port 53",
        "policy name bgp target as s1234",
        "policy name nobgp target policy-or !bgp",
        "policy name shaped target proto tcp bw 1M",
        "default acct\u2013policy dns bgp",
        "unit host name h ip 10.0.0.1 acct-policy %!dns bgp sys-deny fw-policy dns "
        "password secret mac 00:11:22:33:44:55 parent grp",
        "unit cluster name c ip 10.0.0.2 ip 10.0.0.3 description \u00abtwo boxes\u00bb",
        "unit net name n ip 10.1.0.0 mask 255.255.0.0 no-local-pass",
        "unit user name u ip 0.0.0.0",
        "unit host name bad ip 10.0.0.999",
        "auto-assign 10.2.0.1 10.2.0.9",
        "service login 0",
        "default-inact 600",
        "max_inact 43200",
        "storage 2",
        "service billing",
        "subplan 1 fee 100 spread monthly",
        "subplan 1 included 1G in 500M out",
        "plan 2 name basic",
        "plan 2 subplan 1",
        "delay 60",
        "service monitor 1",
        "monitor to file /tmp/x",
    ])
    res = netams.convert(text, "x.cfg")
    why = {w.line: w for w in res.warnings}
    assert "needs BGP data" in why[3].reason
    assert why[4].directive == "policy nobgp" and "'bgp'" in why[4].reason
    assert why[5].directive == "bw 1M"
    assert "acct-policy bgp" in why[6].directive and "no such policy" in why[6].reason
    line7 = [w.directive for w in res.warnings if w.line == 7]
    assert any("sys-deny" in d for d in line7) and any("fw-policy" in d for d in line7)
    assert any("parent grp" in d for d in line7) and any("bgp" in d for d in line7)
    assert "no-local-pass" in why[9].directive
    assert "not carried" in why[11].reason and why[11].directive == "unit host name bad"
    assert "auto-assign" in why[12].directive
    assert why[16].directive == "storage 2"
    assert why[23].directive == "service monitor 1" and why[24].line == 24

    cfg = config.loads(res.toml, "x.toml")
    us, ps = cfg.units, cfg.policies
    assert [p.name for p in ps] == ["dns", "shaped"]
    h = us.units[us.find("h")]
    assert h.acct_policy == ("%!dns",) and h.parents == ()
    assert us.units[us.find("c")].description == "two boxes"
    assert us.units[us.find("u")].addrs == ()  # unbound user
    assert cfg.processor.default_acct_policy == ("dns",)
    assert cfg.login.units["h"] == {"password": "secret", "mac": "00:11:22:33:44:55"}
    assert cfg.login.default_inact == 600 and cfg.login.max_inact == 43200
    assert cfg.billing["subplan"]["1"]["fee"] == (100, "spread", "monthly")
    assert cfg.billing["subplan"]["1"]["included"] == ((("1G", "in", "500M", "out")),)
    assert cfg.billing["plan"]["2"] == {"name": "basic", "subplan": ((1,),)}
    assert cfg.billing["delay"] == 60


def test_prefix_file_targets_are_carried_with_a_warning(tmp_path):
    res = netams.convert("service processor\npolicy name peer target file /nonexistent/peers\n")
    assert '"file /nonexistent/peers"' in res.toml
    assert "prefix file" in res.warnings[0].reason and res.warnings[0].line == 2
    (tmp_path / "peers").write_text("10.0.0.0/8\n")
    res = netams.convert("service processor\npolicy name peer target file peers\n")
    path = tmp_path / "acctd.toml"
    path.write_text(res.toml)
    assert len(config.load(path).policies) == 1  # relative to the acctd config


def test_imported_sample_runs_through_a_drain(tmp_path):
    """The reference's complete sample imports and runs: its units and
    policies account a drain interval and the rows store."""
    import datetime as dt

    import numpy as np

    from acctd.config import loads
    from acctd.importers.netams import import_file
    from acctd.kernel import abi
    from acctd.model.snapshot import Snapshot
    from acctd.store import interval, rollup
    from acctd.store.database import Storage

    res = import_file(str(SAMPLE))
    cfg = loads(res.toml, "sample.toml")
    model = Snapshot.build(cfg)
    addrs = [u.addrs[0] for u in cfg.units if u.addrs][:3]
    assert addrs, "the sample has host units"
    fk = np.zeros(len(addrs), abi.FLOW_KEY)
    fk["dir"], fk["ip_ver"], fk["proto"], fk["dport"] = abi.Dir.OUT, 4, 6, 80
    fv = np.zeros(len(addrs), abi.FLOW_VAL)
    fv["packets"], fv["bytes"] = 2, 3000
    ak = np.zeros(len(addrs), abi.ADDR_KEY)
    av = np.zeros(len(addrs), abi.ADDR_VAL)
    for i, a in enumerate(addrs):
        fk["saddr"][i] = np.frombuffer(a, np.uint8)
        ak["addr"][i] = np.frombuffer(a, np.uint8)
    av["packets"][:, abi.Dir.OUT], av["bytes"][:, abi.Dir.OUT] = 2, 3000
    now = dt.datetime(2026, 11, 21, 12, tzinfo=dt.timezone.utc)
    cols, _ = interval.columns(model, now, fk, fv, ak, av, np.zeros(2), np.zeros(2))
    alltraffic = cols["policy_oid"] == rollup.ALL_TRAFFIC
    # every address belongs to a unit: nothing unattributed, each host's total is exact
    assert not (cols["unit_oid"][alltraffic] == rollup.UNATTRIBUTED).any()
    with Storage(tmp_path / "s.duckdb", cfg.processor.zone) as st:
        st.commit(rollup.rollup(cols, now, cfg.processor.zone), {})
        assert st.month_report(now)
