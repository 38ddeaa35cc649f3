"""NeTAMS import: the reference's sample imports, loads and counts; nothing is dropped silently."""

import datetime as dt
import pathlib
from decimal import Decimal

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
    assert 1 in sample().carried   # "debug none": no [log] debug
    for want in [(3, "user admin"), (9, "service server 0"),
                 (97, "storage 1 all"), (117, "service data-source 1"),
                 (123, "rule 5 ip from any to any via rl0")]:
        assert want in got, want
    assert {131, 133, 135, 137} <= res.carried   # service html: path, language en, run
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
        "policy name bgp target ingress 1",
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
        "subplan 1 policy dns",
        "plan 2 name basic",
        "plan 2 subplan 1",
        "delay 60",
        "service monitor 1",
        "monitor to file /tmp/x",
    ])
    res = netams.convert(text, "x.cfg")
    why = {w.line: w for w in res.warnings}
    assert "target 'ingress' describes NetFlow v9 collection" in why[3].reason
    assert why[4].directive == "policy nobgp" and "'bgp'" in why[4].reason
    assert 5 not in why  # bw on a policy is carried
    assert "acct-policy bgp" in why[6].directive and "no such policy" in why[6].reason
    line7 = sorted(w.directive for w in res.warnings if w.line == 7)
    assert line7 == ["password ...", "unit h acct-policy bgp", "unit h parent grp"]
    assert 9 not in why and 12 not in why  # no-local-pass, auto-assign
    assert "not carried" in why[11].reason and why[11].directive == "unit host name bad"
    assert why[16].directive == "storage 2"
    assert 24 not in why and 25 not in why       # service monitor is carried

    cfg = config.loads(res.toml, "x.toml")
    us, ps = cfg.units, cfg.policies
    assert [p.name for p in ps] == ["dns", "shaped"]
    assert ps.policies[ps.find("shaped")].bw == (1_000_000, 1_000_000)
    h = us.units[us.find("h")]
    assert h.acct_policy == ("%!dns",) and h.parents == ()
    assert (h.sys_policy, h.fw_policy, h.mac) == (("sys-deny",), ("dns",), "00:11:22:33:44:55")
    assert us.units[us.find("n")].no_local_pass
    assert len(cfg.processor.auto_assign) == 1
    assert us.units[us.find("c")].description == "two boxes"
    assert us.units[us.find("u")].addrs == ()  # unbound user
    assert cfg.processor.default_acct_policy == ("dns",)
    assert "h" not in cfg.login.units  # a unit's password makes no login record
    assert cfg.login.default_inact == 600 and cfg.login.max_inact == 43200
    sp = cfg.billing.subplan[1]
    assert (sp.fee, sp.spread, sp.policy) == (Decimal(100), "monthly", "dns")
    assert dict(sp.included) == {"in": 1 << 30, "out": 500 << 20}
    assert (cfg.billing.plan[2].name, cfg.billing.plan[2].subplans) == ("basic", (1,))
    assert cfg.billing.delay == 60
    assert cfg.monitor.to == ("file",) and cfg.monitor.file == "/tmp/x"


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


# --- acctctl import netams: what the operator is told -------------------------------

def import_cli(tmp_path, content: bytes | str, *args: str):
    """Run `acctctl import netams` on a file with `content`, output next to it."""
    from click.testing import CliRunner

    from acctctl.main import main
    src = tmp_path / "netams.cfg"
    (src.write_bytes if isinstance(content, bytes) else src.write_text)(content)
    out = tmp_path / "acctd.toml"
    res = CliRunner().invoke(main, ["import", "netams", str(src), "-o", str(out), *args])
    return res, src, out


def test_a_mistake_found_in_the_result_names_the_netams_line(tmp_path):
    res, src, out = import_cli(tmp_path, "\n".join([
        "service processor",
        "unit user oid 025BD0 name h ip 10.0.0.1",
        "email h@a.ru",                     # a wrapped unit line: TOML and NeTAMS lines part
        "policy name ip target proto ip",
        "unit host name h ip 10.0.0.2",
    ]) + "\n")
    assert (res.exit_code, res.stderr) == (1, (
        f"acctctl: {src}:5: the converted configuration would not load: [[unit]] #2 'h' key "
        "'name': unit name 'h' is already used by unit #1; nothing was written\n"))
    assert not out.exists()


def test_binary_input_is_refused_and_the_output_is_always_valid_toml(tmp_path):
    import random
    import tomllib

    res, src, out = import_cli(tmp_path, b"service processor\nunit host name \x00\x89PNG\n")
    assert (res.exit_code, res.stderr) == (
        1, f"acctctl: {src}:2: binary data (a NUL byte), not a NeTAMS configuration\n")
    assert not out.exists()
    # control characters are text: escaped in TOML strings and comments, kept exactly
    desc = "a\x1b[2Jb\x7f\x08c\x0cd\x85"
    res = netams.convert(f'service processor\nunit host name h ip 10.0.0.1 description "{desc}"\n'
                         "foo\x1b]0;x\x07\x7f bar\n", "n\x1b.cfg")
    assert config.loads(res.toml).units.units[0].description == desc
    assert "# acctd configuration imported from NeTAMS n\\x1b.cfg" in res.toml
    assert 'description = "a\\u001b[2Jb\\u007f\\bc\\fd\\u0085"' in res.toml
    assert "#   line 3: foo\\x1b]0;x\\x07\\x7f bar: unknown processor directive" in res.toml
    assert res.warnings[0].format("n.cfg") == \
        "n.cfg:3: foo\\x1b]0;x\\x07\\x7f bar: unknown processor directive"
    # any text without NUL: the result parses (seeded; about 0.3 s)
    rng = random.Random(12)
    words = ["service", "processor", "quota", "login", "billing", "unit", "host", "name", "ip",
             "10.0.0.1", "policy", "target", "proto", "set", "day", "3M", "in", "description",
             "subplan", "1", '"', "=", "[", "]", ".", "#", "\\", "'"]
    for _ in range(300):
        lines = [" ".join(rng.choice(words) if rng.random() < 0.7 else "".join(
            chr(rng.choice((rng.randint(1, 0x9f), rng.randint(0xa0, 0x2fff))))
            for _ in range(rng.randint(1, 5))) for _ in range(rng.randint(1, 8)))
            for _ in range(rng.randint(1, 10))]
        got = netams.convert("\n".join(lines))
        tomllib.loads(got.toml)
        tomllib.loads(got.check_toml)


def test_text_not_in_the_encoding_is_refused_with_its_line(tmp_path):
    text = 'service processor\nunit host name h ip 10.0.0.1 description "Привет"\n'
    koi8 = text.encode("koi8-r")
    res, src, out = import_cli(tmp_path, koi8)
    assert (res.exit_code, res.stderr) == (1, (
        f"acctctl: {src}:2: not utf-8 text: byte 0xf0 at column 43; give the file's encoding "
        "with --encoding (NeTAMS configs are often koi8-r or cp1251)\n"))
    assert not out.exists()
    res, src, out = import_cli(tmp_path, koi8, "--encoding", "KOI8-R")
    assert res.exit_code == 0, res.output
    assert config.load(out).units.units[0].description == "Привет"
    res, src, out = import_cli(tmp_path, b"\xef\xbb\xbf" + text.encode())  # with a BOM
    assert (res.exit_code, res.stderr) == (0, f"wrote {out}: 0 directive(s) not carried\n")
    res, _, _ = import_cli(tmp_path, koi8, "--encoding", "klingon")
    assert res.exit_code == 2 and "unknown encoding 'klingon'" in res.stderr


def test_a_bad_value_of_a_known_directive_says_so():
    res = netams.convert("\n".join([
        "service processor",
        "lookup-delay abc",
        "flow-lifetime 30 60",
        "default acct-policy",
        "restrict all maybe",
        "service quota 0",
        "soft-treshold abc",
        "notify always {owner}",
        "set name x day 3X in",
        "frobnicate 1",
        "service login 0",
        "max_inact -5",
        "relogin perhaps",
        "frobnicate 1",
    ]))
    assert [(w.line, w.reason) for w in res.warnings] == [
        (2, "bad value for lookup-delay: expected seconds (an integer between 1 and 3600), "
                "got 'abc'"),
        (3, "bad value for flow-lifetime: expected one value, got '30 60'"),
        (4, "bad value for default: expected default {acct-policy|fw-policy} POLICY..."),
        (5, "bad value for restrict: expected restrict all {drop|pass} local {drop|pass}"),
        (7, "bad value for soft-treshold: expected a soft-threshold percentage from 0 to 100, "
            "got 'abc'"),
        (8, "bad value for notify: expected a notify event soft, hard or return, got 'always'"),
        (9, "bad value for set: expected an amount in bytes like 300, 3M or 1.5G, at most "
            "1073741824G (1 EiB), got '3X'"),
        (10, "unknown quota directive"),
        (12, "bad value for max_inact: expected a whole number of seconds >= 0, got -5"),
        (13, "bad value for relogin: expected true/false (or yes/no), got 'perhaps'"),
        (14, "unknown login directive"),
    ]
    cfg = config.loads(res.toml)
    assert (cfg.processor.lookup_delay, cfg.quota.soft_threshold, cfg.quota.units) == (30, 80, {})


def test_one_warning_repeated_on_a_line_is_given_once_with_a_count(tmp_path):
    res, src, out = import_cli(tmp_path, "service processor\nunit host name h ip 10.0.0.1 "
                               "acct-policy " + " ".join(["nosuch"] * 200_000) + "\n")
    assert res.exit_code == 0, res.output
    assert res.stderr == (f"{src}:2: unit h acct-policy nosuch: no such policy was carried "
                          "(and 199999 more like this)\n"
                          f"wrote {out}: 1 directive(s) not carried\n")
    assert "#   line 2: unit h acct-policy nosuch: no such policy was carried (and 199999 " \
           "more like this)\n" in out.read_text()
    # and one long line is not echoed whole
    assert netams.ImportWarning(2, "x" * 300, "why").text() == "x" * 197 + "...: why"


def test_a_policy_whose_prefix_file_is_missing_is_carried_and_the_import_goes_on(tmp_path):
    res, src, out = import_cli(tmp_path, "service processor\npolicy name peer target file "
                               "peers.txt\nunit host name h ip 10.0.0.1 acct-policy peer\n")
    assert res.exit_code == 0, res.output
    assert res.stderr == (
        f"{src}:2: policy peer: carried, but acctd will not load until it can read the prefix "
        f"file: cannot read prefix file {tmp_path}/peers.txt: No such file or directory\n"
        f"wrote {out}: 1 directive(s) not carried\n")
    assert 'target = "file peers.txt"' in out.read_text()
    assert out.stat().st_mode & 0o777 == 0o600  # it may hold the units' passwords
    (tmp_path / "peers.txt").write_text("10.0.0.0/8\n")  # next to the output, as the warning says
    cfg = config.load(out)
    assert [p.name for p in cfg.policies] == ["peer"]
    assert cfg.units.units[0].acct_policy == ("peer",)


def test_service_monitor_is_carried_into_one_monitor_table():
    text = "\n".join([
        "service processor",
        "unit host name alice oid 0A0001 ip 10.0.0.1",
        "unit host name bob ip 10.0.0.2",
        "unit host name carol ip 10.0.0.3",
        "service monitor 1",
        "monitor to storage 1",
        "monitor to file /var/log/netams.monitor",
        "monitor unit a0001",
        "monitor unit bob",
        "monitor unit carol",
        "no monitor unit carol",
        "monitor unit zed",
        "service monitor 2",
        "monitor to xmlfile /var/log/m.xml",
        "monitor to netflow 192.0.2.9 2055",
        "monitor frobnicate",
    ])
    res = netams.convert(text, "x.cfg")
    assert sorted((w.line, w.directive) for w in res.warnings) == [
        (12, "monitor unit zed"), (14, "monitor to xmlfile /var/log/m.xml"),
        (16, "monitor frobnicate")]
    why = {w.line: w.reason for w in res.warnings}
    assert why[12] == "no such unit was carried"
    cfg = config.loads(res.toml, "x.toml")
    [e] = cfg.export   # to netflow: the monitored units' flows as NetFlow v5, as NeTAMS sent
    assert (e.format, e.units) == ("v5", "monitored")
    assert cfg.monitor.units == ("alice", "bob")
    assert cfg.monitor.to == ("storage", "file", "netflow")
    assert cfg.monitor.file == "/var/log/netams.monitor"


def test_debug_categories_are_carried_to_log_and_applied(tmp_path):
    import logging

    from .daemon_stub import daemon_stub
    res = netams.convert("debug quota login\ndebug alert iptree\nservice processor\n"
                         "unit user name u1\n", "x.cfg")
    assert [(w.line, w.text()) for w in res.warnings] == [
        (2, "debug alert iptree: debug iptree: acctd has no such category (it has aclserver, "
            "alerter, all, billing, control, login, quota, scheduler, storage)")]
    assert '[log]\ndebug = ["quota", "login", "alerter"]\n' in res.toml
    cfg = config.loads(res.toml, str(tmp_path / "acctd.toml"))
    assert cfg.log.debug == ("quota", "login", "alerter")
    names = ("acctd.quota", "acctd.login", "acctd.alerter", "acctd.scheduler")
    try:
        with daemon_stub(cfg, tmp_path=tmp_path):
            assert [logging.getLogger(n).level for n in names] == \
                [logging.DEBUG, logging.DEBUG, logging.DEBUG, logging.NOTSET]
    finally:
        for n in names:
            logging.getLogger(n).setLevel(logging.NOTSET)
    assert "[log]" not in netams.convert("debug quota\ndebug none\n").toml


EVERYTHING = """\
user oid 01327B name admin real\u2013name Konstantin email root@isp.example password s3cret permit all
user name ops email ops@isp.example password pw permit some
debug none
language ru
mac control block alert
schedule time at\u201323:30 action \u00absend report to admin on LAN+ && flush\u00bb
service server 0
login any
listen 20001
max\u2013conn 6
service processor
policy name all\u2013ip target proto ip
policy name web target proto tcp port 80 bw 2M in 512K out
policy name icmp target proto icmp
default fw\u2013policy web
restrict all drop local pass
auto\u2013assign 10.2.0.1 10.2.0.9
auto\u2013units 1 type host naming prefix1 a\u2013 group LAN
access\u2013script /bin/true
unit group name LAN
unit host name h ip 10.0.0.1 acct\u2013policy all\u2013ip fw\u2013policy web !icmp bw 10M \
sys\u2013deny\u2013quota mac 00:11:22:33:44:55 parent LAN
unit net name n ip 10.1.0.0 mask 255.255.0.0 no\u2013local\u2013pass auto\u2013units 1
service quota 0
delay 20
service login 0
delay 5
service alerter 0
smtp\u2013server mail.isp.example:2525
"""


def test_everything_acctd_supports_is_carried():
    """fw-policy, default fw-policy, bw on units and policies, sys-* words,
    no-local-pass, auto-assign, auto-units, access-script, mac control, a
    unit's mac, users with levels, service server, schedule and service
    alerter are carried; what is not names its line and a true reason."""
    res = netams.convert(EVERYTHING, "x.cfg")
    assert [(w.line, w.directive) for w in res.warnings] == [
        (2, "permit some"), (7, "service server 0"), (24, "delay 20"), (26, "delay 5")]
    assert "levels are viewer, operator and admin" in res.warnings[0].reason
    assert "TLS only" in res.warnings[1].reason
    assert "lookup-delay is the check interval" in res.warnings[2].reason
    cfg = config.loads(res.toml, "x.toml")
    p, us, ps = cfg.processor, cfg.units, cfg.policies
    assert p.default_fw_policy == ("web",) and p.mac_control == "block-alert"
    assert (p.restrict_all, p.restrict_local) == ("drop", "pass")
    assert len(p.auto_assign) == 1 and [r.number for r in p.auto_units] == [1]
    assert p.access_script == "/bin/true"
    assert ps.policies[ps.find("web")].bw == (2_000_000, 512_000)
    h = us.units[us.find("h")]
    assert (h.fw_policy, h.bw, h.sys_policy, h.mac, h.parents) == (
        ("web", "!icmp"), (10_000_000, 10_000_000), ("sys-deny-quota",), "00:11:22:33:44:55",
        ("LAN",))
    n = us.units[us.find("n")]
    assert n.no_local_pass and n.auto_units == 1
    assert [(u.name, u.level, u.email) for u in cfg.users] == [
        ("admin", "admin", "root@isp.example"), ("ops", "viewer", "ops@isp.example")]
    from argon2 import PasswordHasher
    assert PasswordHasher().verify(cfg.users[0].password, "s3cret")
    assert "# [server]\n# listen = \"0.0.0.0:20001\"\n# max-conn = 6\n# login = \"any\"" in res.toml
    a = cfg.alerter
    assert (a.host, a.port, a.admins, a.language) == (
        "mail.isp.example", 2525, ("root@isp.example",), "ru")
    [sched] = cfg.scheduler.schedule
    assert (sched.timing.text, sched.action) == ("at-23:30", "send report to admin on LAN+ && flush")
    assert sched.oid.startswith("08")
    assert cfg.quota.delay == 10 and cfg.login.delay == 10  # not carried: the drain checks
    assert "password" not in res.toml.replace('password = "$argon2id$', "")  # none in clear


def test_reasons_for_what_is_not_carried_are_true_today():
    """No reason speaks of a later issue, systemd timers or --debug."""
    res = netams.convert("debug iptree\nschedule time hourly action html\n" + EVERYTHING +
                         "service html 1\nrun hourly\n", "x.cfg")
    for w in res.warnings:
        for stale in ("later issue", "systemd timer", "--debug", "not implemented yet "
                      "(enforcement"):
            assert stale not in w.reason, w
    why = {w.line: w.reason for w in res.warnings}
    assert "acctd has no such category" in why[1]
    assert 2 in res.carried   # html: a command a schedule runs (acctctl html)


def test_a_processor_auto_units_rule_after_a_unit_is_not_taken_for_the_unit():
    res = netams.convert("service processor\nunit net name n ip 10.9.0.0/16 auto\u2013units 1\n"
                         "auto\u2013units 1 type host naming prefix1 n\u2013 group g\n"
                         "unit group name g\n", "x.cfg")
    assert res.warnings == ()
    cfg = config.loads(res.toml, "x.toml")
    assert [r.number for r in cfg.processor.auto_units] == [1]
    assert cfg.units.units[cfg.units.find("n")].auto_units == 1


def test_a_quota_block_policy_naming_no_carried_policy_is_warned_not_fatal():
    res = netams.convert("service processor\npolicy name ip target proto ip\n"
                         "service quota 0\npolicy ip\nblock\u2013policy transit\n", "x.cfg")
    assert [(w.line, w.directive) for w in res.warnings] == [(5, "block-policy transit")]
    netams.check(res, "x.cfg")
    assert config.loads(res.toml).quota.policy == "ip"


def test_quota_policies_named_by_oid_are_carried_by_name():
    res = netams.convert("service processor\npolicy oid 146633 name ip target proto ip\n"
                         "service quota 0\npolicy 146633\nblock\u2013policy 146633\n", "x.cfg")
    assert res.warnings == ()
    q = config.loads(res.toml).quota
    assert (q.policy, q.block_policy) == ("ip", "ip")


def test_monitor_to_netflow_becomes_an_export_of_the_monitored_units():
    text = "\n".join([
        "service processor",
        "unit host name h ip 10.0.0.1",
        "service monitor 1",
        "monitor to netflow 192.0.2.9 9996",
        "monitor to netflow 2001:db8::9 2055",
        "monitor to netflow 192.0.2.9 99999",
    ])
    res = netams.convert(text, "x.cfg")
    assert {4, 5} <= res.carried
    why = {w.line: w for w in res.warnings}
    assert why[6].reason == "expected a port from 1 to 65535, got '99999'"
    cfg = config.loads(res.toml, "x.toml")
    assert [(e.format, e.destination, e.units) for e in cfg.export] == [
        ("v5", ("192.0.2.9:9996",), "monitored"), ("v5", ("[2001:db8::9]:2055",), "monitored")]
    assert res.source_line(res.toml.splitlines().index("[[export]]") + 1) == 4


PARITY_POLICY = "\n".join([
    "service processor",
    "policy name l7 hidden target proto tcp",
    "policy name in3 target ifindex s3 d4",
    "policy name google target as d15169",
    "policy name coll target ds 2",
    "unit host name pay oid 0A0101 ip 10.0.9.1",
    "unit host name h ip 10.0.0.1 acct-policy l7 in3 google fp-nodefault "
    "sys-deny-auth sys-deny-block sys-allow-0A0101 sys-deny-0ABCDE sys-deny-bogus",
])


def test_policy_words_hidden_fp_nodefault_ifindex_as_ds_and_sys_words_are_carried(tmp_path):
    res = netams.convert(PARITY_POLICY, "x.cfg")
    why = [(w.line, w.directive, w.reason) for w in res.warnings]
    assert why == [
        (4, "policy google", 'carried; acctd looks the AS numbers up in [processor] as-table = '
                             '"pfx2as.txt": put a CAIDA pfx2as file there before starting it'),
        (7, "sys-deny-bogus", "not carried: unknown system policy 'sys-deny-bogus'; expected "
                              "sys-deny, sys-allow, sys-deny-/sys-allow-{quota,login,money,mac,auth,block} "
                              "or sys-deny-/sys-allow-OID"),
        (7, "unit h sys-deny-0ABCDE", "no unit with oid 0ABCDE was carried"),
    ]
    path = tmp_path / "acctd.toml"
    netams.check(res, "x.cfg", str(path))   # the import's own check: before the table exists
    path.write_text(res.toml)
    (tmp_path / "pfx2as.txt").write_text("8.8.8.0 24 15169\n")
    cfg = config.load(path)
    assert [(p.name, p.hidden) for p in cfg.policies] == \
        [("l7", True), ("in3", False), ("google", False), ("coll", False)]
    assert cfg.policies.policies[cfg.policies.find("coll")].target == "ds 2"
    h = cfg.units.units[cfg.units.find("h")]
    assert h.fp_nodefault and h.sys_policy == ("sys-deny-auth", "sys-deny-block",
                                               "sys-allow-0A0101")
    assert cfg.processor.as_table == str(tmp_path / "pfx2as.txt")


def test_netflow_and_raw_data_sources_become_collectors():
    text = """service processor
unit host name r1 ip 10.0.0.1 ds-list 1,2
unit host name k1 ip 10.0.0.2 ds-list 3
unit host name x1 ip 10.0.0.3 ds-list 9
service data-source 1
type netflow
source 192.0.2.1
listen 0 20001
clock local
layer7-detect urls
service data-source 2
type raw
service data-source 3
type ip-traffic
source divert 199
"""
    res = netams.convert(text)
    cfg = config.loads(res.toml, "imported.toml")
    one, two = cfg.collector
    assert (one.id, one.type, one.listen, one.clock, [str(n) for n in one.source]) == \
        (1, "netflow", ("0.0.0.0", 20001), "local", ["192.0.2.1/32"])
    assert (two.id, two.type) == (2, "raw")
    assert [u.ds_list for u in cfg.units] == [(1, 2), (0,), (0,)]
    assert {(w.line, w.directive, w.reason) for w in res.warnings} == {
        (4, "unit x1 ds-list 9", "no netflow or raw data source of that number was carried"),
        (10, "layer7-detect urls",
         "not carried: a [[collector]] takes type, source, listen and clock"),
        (13, "service data-source 3", netams._WHY["data-source"]),
        (14, "type ip-traffic", netams._WHY["data-source"]),
        (15, "source divert 199", netams._WHY["data-source"])}


def test_service_acl_server_is_carried_to_an_nft_backend_with_the_rsh_warning():
    # the reference's example (its en dashes included), plus `debug aclserver`
    text = ("debug aclserver\nservice processor\nunit host name srv ip 192.168.0.11\n"
            "service acl\u2013server 0\nhostname 192.168.0.1 5140\ndirection src\n"
            "dynamic\u2013name NETAMS\nacl\u2013number 100 cisco\ndelay 100\n"
            "set\u2013uptime 4094100\n")
    res = netams.convert(text, "x.cfg")
    assert [(w.line, w.reason) for w in res.warnings] == [
        (4, 'RSH to a Cisco is not offered: carried as an nftables back-end over SSH '
            '([[aclserver.backend]] type = "nft", command = ssh root@HOST); for a Cisco use '
            'type = "bgp" (RTBH or FlowSpec, README "Blocking at the routers")'),
        (5, "RSH port 5140 not carried: ssh uses its own (add -p PORT to command)"),
        (8, "a Cisco access-list number has no counterpart: the nftables set (dynamic-name) "
            "is in table acctd, family inet")]
    assert '[log]\ndebug = ["aclserver"]\n' in res.toml   # NeTAMS debug lines: [log] debug
    assert res.toml.split("[aclserver]\n", 1)[1] == (
        "delay = 100\n\n[[aclserver.backend]]\nname = \"acl-server-0\"\n"
        "type = \"nft\"\ncommand = [\"ssh\", \"root@192.168.0.1\"]\ndirection = \"src\"\n"
        "dynamic-name = \"NETAMS\"\nset-uptime = 4094100\n")
    a = config.loads(res.toml, "imported.toml").aclserver
    b, = a.backend
    assert (a.delay, a.debug, b.type, b.command, b.direction, b.dynamic_name, b.set_uptime) == \
        (100, False, "nft", ("ssh", "root@192.168.0.1"), "src", "NETAMS", 4094100)


def test_debug_aclserver_without_the_service_is_carried_to_log():
    res = netams.convert("debug aclserver\nservice processor\n", "x.cfg")
    assert res.warnings == ()
    assert '[log]\ndebug = ["aclserver"]\n' in res.toml and "[aclserver]" not in res.toml


def test_service_html_is_carried_to_the_html_table_and_a_schedule():
    res = netams.convert("service html\nrun hourly\u2013\npath /var/www/stat/\n"
                         "url http://stat.isp.example/traffic/\nhtaccess yes\n"
                         "client\u2013pages groups\naccount-pages none\ndisplay-top 15\n"
                         "display-health no\nservlet-url http://stat.isp.example:8010\n"
                         "client-pages group G1 G2\naccount-pages all\n"
                         "service processor\nunit group name G1\n", "x.cfg")
    assert [(w.line, w.text()) for w in res.warnings] == [
        (10, "servlet-url http://stat.isp.example:8010: not carried: there is no servlet; the "
             "web console (acctd-web) shows each unit's tables"),
        (11, "client-pages group G2: no group of that name was carried")]
    assert set(range(1, 10)) | {12} <= res.carried
    cfg = config.loads(res.toml, "x.toml")
    h = cfg.html
    assert (h.path, h.url, h.htaccess, h.client_pages, h.account_pages, h.display_top,
            h.display_health) == ("/var/www/stat/", "http://stat.isp.example/traffic/", True,
                                  ("G1",), "all", 15, False)
    [sched] = cfg.scheduler.schedule
    assert (sched.timing.text, sched.action) == ("hourly-", "html")
