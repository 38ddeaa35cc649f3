"""Configuration: the example loads, and every mistake names file, line and key."""

import pathlib

import pytest

from acctd import config
from acctd.config import ConfigError
from acctd.kernel import abi
from acctd.services.login import LoginSettings
from acctd.services.quota import QuotaSettings

ROOT = pathlib.Path(__file__).resolve().parents[2]

BASE = """\
[[policy]]
name = "ip"
target = "proto ip"

[[unit]]
type = "host"
name = "server"
ip = "192.168.0.1"
"""


def error(text, tmp_path, name="acctd.toml"):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        config.load(path)
    return e.value


def test_example_config_loads():
    cfg = config.load(ROOT / "acctd.example.toml")
    assert [i.name for i in cfg.interfaces] == ["eth1", "eth0"]
    assert cfg.interfaces[1].hook == "tc" and cfg.interfaces[1].role_id == abi.Role.WAN
    assert cfg.processor.zone.key == "Europe/Moscow"
    assert cfg.processor.lookup_delay == 30 and cfg.processor.time_zone == "Europe/Moscow"
    assert cfg.storage.raw_retention == 30 * 86400
    assert cfg.units.units[cfg.units.find("server")].oid == "021949"
    assert cfg.policies.find("146633") == cfg.policies.find("all-ip")
    assert cfg.quota.notify["hard"] == ("{owner}", "admin")
    assert cfg.login.default_inact == 0


def test_defaults():
    cfg = config.loads(BASE)
    assert cfg.processor == config.Processor()
    assert cfg.processor.lookup_delay == 30 and cfg.processor.flow_lifetime == 300
    assert cfg.storage.path == config.DEFAULT_DB
    assert cfg.interfaces == () and cfg.quota == QuotaSettings()
    assert cfg.login == LoginSettings() and not cfg.billing.plan


def test_unknown_key_names_file_line_and_key(tmp_path):
    e = error(BASE + 'colour = "red"\n', tmp_path)
    assert e.path.endswith("acctd.toml") and e.line == 9 and e.key == "colour"
    assert str(e).startswith(f"{tmp_path}/acctd.toml:9: [[unit]] #1 'server' key 'colour': "
                             "unknown key; expected one of")


def test_bad_address_points_at_its_line(tmp_path):
    e = error(BASE.replace('"192.168.0.1"', '"192.168.0.300"'), tmp_path)
    assert e.line == 8 and e.key == "ip"
    assert "expected an IPv4 or IPv6 address, got '192.168.0.300'" in str(e)


def test_second_unit_is_located(tmp_path):
    text = BASE + '\n[[unit]]\ntype = "net"\nname = "lan"\nnet = "192.168.0.0/33"\n'
    e = error(text, tmp_path)
    assert (e.line, e.key) == (13, "net") and "[[unit]] #2 'lan'" in str(e)


def test_missing_required_key(tmp_path):
    e = error('[[unit]]\nname = "x"\n', tmp_path)
    assert e.key == "type" and e.line == 1 and "required key is missing" in str(e)


def test_bad_policy_target(tmp_path):
    e = error(BASE.replace('"proto ip"', '"proto tcp as 1234"'), tmp_path)
    assert (e.line, e.key) == (3, "target") and "needs a prefix-to-AS table" in str(e)
    e = error(BASE.replace('"proto ip"', '{ proto = "tcp", port = "s99999" }'), tmp_path)
    assert (e.line, e.key) == (3, "target") and "expected port numbers 0..65535" in str(e)
    e = error(BASE.replace('target = "proto ip"\n', ''), tmp_path)
    assert (e.line, e.key) == (1, "target")
    assert 'required key is missing; e.g. target = "proto tcp port 80"' in str(e)


def test_model_errors_are_located(tmp_path):
    e = error(BASE + 'parents = ["nope"]\n', tmp_path)
    assert (e.line, e.key) == (9, "parents") and "'nope' is not a defined unit" in str(e)
    e = error(BASE + 'acct-policy = ["!%web"]\n', tmp_path)
    assert (e.line, e.key) == (9, "acct-policy") and "unknown policy 'web'" in str(e)
    cyc = ('[[unit]]\ntype = "group"\nname = "a"\nparents = ["b"]\n'
           '[[unit]]\ntype = "group"\nname = "b"\nparents = ["a"]\n')
    e = error(cyc, tmp_path)
    assert e.key == "parents" and e.line in (4, 8) and "cycle" in str(e)


def test_processor_values(tmp_path):
    e = error("[processor]\nlookup-delay = 0\n", tmp_path)
    assert (e.line, e.key) == (2, "lookup-delay") and "integer between 1 and 3600" in str(e)
    e = error("[processor]\nlookup-delay = 60\nflow-lifetime = 30\n", tmp_path)
    assert e.key == "flow-lifetime" and e.line == 3
    e = error('[processor]\ntime-zone = "Mars/Olympus"\n', tmp_path)
    assert e.key == "time-zone" and "IANA" in str(e)
    e = error('[processor]\nrestrict = { all = "block" }\n', tmp_path)
    assert e.key == "restrict" and "drop, pass" in str(e)
    e = error(BASE + '[processor]\ndefault-acct-policy = ["web"]\n', tmp_path)
    assert (e.line, e.key) == (10, "default-acct-policy")
    cfg = config.loads('[processor]\nlookup-delay = 1\nflow-lifetime = 1\n'
                       'restrict = { all = "drop", local = "pass" }\n')
    assert (cfg.processor.restrict_all, cfg.processor.restrict_local) == ("drop", "pass")


def test_time_settings_have_upper_bounds_and_the_key_written_is_blamed(tmp_path):
    """A lookup-delay above the default flow-lifetime is lookup-delay's
    mistake (flow-lifetime is not in the file); absurd values are refused."""
    path = tmp_path / "acctd.toml"
    cases = [
        ("[processor]\nlookup-delay = 600\n",
         "2: [processor] key 'lookup-delay': expected at most flow-lifetime (300 s by default: "
         "raise it too), got 600"),
        ("[processor]\nlookup-delay = 600\nflow-lifetime = 400\n",
         "3: [processor] key 'flow-lifetime': expected at least lookup-delay (600 s), got 400"),
        ("[processor]\nlookup-delay = 100000000000\n",
         "2: [processor] key 'lookup-delay': expected seconds (an integer between 1 and 3600), "
         "got 100000000000"),
        ("[processor]\nflow-lifetime = 9999999\n",
         "2: [processor] key 'flow-lifetime': expected seconds (an integer between 1 and 86400), "
         "got 9999999"),
        ("[processor]\naccess-script-timeout = 1e9\n",
         "2: [processor] key 'access-script-timeout': expected seconds (a number above 0 and at "
         "most 3600), got 1000000000.0"),
        ('[storage]\nraw-retention = "99999w"\n',
         "2: [storage] key 'raw-retention': expected a duration of at most 3650d, got '99999w'"),
        ("[storage]\nraw-retention = 315360001\n",
         "2: [storage] key 'raw-retention': expected a duration of at most 3650d, got 315360001"),
    ]
    for text, want in cases:
        assert str(error(text, tmp_path)) == f"{path}:{want}"
    cfg = config.loads('[processor]\nlookup-delay = 3600\nflow-lifetime = 86400\n'
                       '[storage]\nraw-retention = "3650d"\n')
    assert (cfg.processor.lookup_delay, cfg.storage.raw_retention) == (3600, 3650 * 86400)


def test_config_check_says_ok_and_what_the_file_holds_or_the_mistake(tmp_path):
    """`acctctl config check FILE` needs no daemon; `acctd --check` says the
    same (and looks the interfaces up: tests/netns/test_daemon_start.py)."""
    from click.testing import CliRunner

    from acctctl.main import main
    from acctd.daemon.main import main as acctd_main
    path = tmp_path / "acctd.toml"
    path.write_text(BASE + '[[interface]]\nname = "lo"\nrole = "lan"\n')
    for cmd, args in ((main, ["config", "check", str(path)]),
                      (acctd_main, ["--check", "--config", str(path)])):
        res = CliRunner().invoke(cmd, args)
        assert (res.exit_code, res.output) == (
            0, f"{path}: ok, 1 interface, 1 unit, 1 policy, 0 users\n")
    path.write_text(BASE + "[processor]\nlookup-delay = 0\n")
    for cmd, args, prog in ((main, ["config", "check", str(path)], "acctctl"),
                            (acctd_main, ["--check", "--config", str(path)], "acctd")):
        res = CliRunner().invoke(cmd, args)
        assert (res.exit_code, res.output) == (
            1, f"{prog}: {path}:10: [processor] key 'lookup-delay': expected seconds (an integer "
               "between 1 and 3600), got 0\n")


def test_interfaces(tmp_path):
    e = error('[[interface]]\nname = "eth0"\nrole = "lan"\nhook = "xdp"\n', tmp_path)
    assert (e.line, e.key) == (4, "hook") and "xdp-native, xdp-generic, tc" in str(e)
    e = error('[[interface]]\nname = "eth0"\nrole = "lan"\n[[interface]]\nname = "eth0"\n'
              'role = "wan"\n', tmp_path)
    assert (e.line, e.key) == (5, "name") and "listed twice" in str(e)


def test_storage_durations():
    for text, secs in (("90m", 5400), ("12h", 43200), ("2w", 1209600), ("3600", 3600)):
        cfg = config.loads(f'[storage]\nraw-retention = "{text}"\n')
        assert cfg.storage.raw_retention == secs
    assert config.loads("[storage]\nraw-retention = 60\n").storage.raw_retention == 60
    with pytest.raises(ConfigError, match="raw-retention"):
        config.loads('[storage]\nraw-retention = "soon"\n')


def test_toml_syntax_error_has_a_line(tmp_path):
    e = error(BASE + "name = \n", tmp_path)
    assert e.line == 9 and "not valid TOML" in str(e)


def test_unknown_section_and_data_sections(tmp_path):
    e = error(BASE + "[quotas]\nx = 1\n", tmp_path)
    assert e.line == 9 and "unknown section" in str(e)
    e = error(BASE + "quota = 5\n", tmp_path)  # a key of [[unit]], not a section
    assert e.key == "quota"
    cfg = config.loads('[quota]\npolicy = "ip"\n[quota.units.bob]\nraw = ["day 3M in"]\n'
                       '[billing.plan.1]\nname = "basic"\n' + BASE)
    assert cfg.quota.units["bob"]["raw"] == ("day 3M in",)
    assert cfg.billing.plan[1].name == "basic"


def test_oids_must_be_strings(tmp_path):
    e = error(BASE + "oid = 21949\n", tmp_path)
    assert e.key == "oid" and "oid string" in str(e)
    e = error(BASE + 'oid = "XYZ"\n', tmp_path)
    assert e.key == "oid" and "hex digits" in str(e)


def test_policy_target_table_and_relative_file(tmp_path):
    (tmp_path / "peers.txt").write_text("10.0.0.0/8\n")
    path = tmp_path / "acctd.toml"
    path.write_text('[[policy]]\nname = "peer"\ntarget = { file = "peers.txt", proto = "tcp" }\n')
    cfg = config.load(path)
    assert len(cfg.policies) == 1


def test_duplicate_address_points_at_the_second_unit(tmp_path):
    text = BASE + '\n[[unit]]\ntype = "cluster"\nname = "c"\nips = ["10.0.0.1", "192.168.0.1"]\n'
    e = error(text, tmp_path)
    assert (e.line, e.key) == (13, "ips") and "already belongs to unit 'server'" in str(e)


def secret(tmp_path, name, mode=0o600):
    p = tmp_path / name
    p.write_text("s3cret\n")
    p.chmod(mode)
    return p


def test_service_tables_point_at_their_own_keys(tmp_path):
    """Every table goes through one schema: the mistake's own key and line,
    never a key guessed from the message."""
    secret(tmp_path, "radius.secret", 0o644)
    e = error(BASE + '[radius]\nservers = ["127.0.0.1"]\nnas-ip = "192.0.2.1"\n'
              'secret-file = "radius.secret"\n', tmp_path)
    assert (e.line, e.key) == (12, "secret-file") and "chmod 600" in str(e)
    assert "[radius] key 'secret-file'" in str(e)
    secret(tmp_path, "smtp.pw", 0o640)
    e = error(BASE + '[alerter]\nsmtp-user = "acctd"\nsmtp-password-file = "smtp.pw"\n', tmp_path)
    assert (e.line, e.key) == (11, "smtp-password-file") and "accessible by group" in str(e)
    e = error(BASE + '[login]\nmin_inact = 100\nmax-inact = 90\n', tmp_path)
    assert (e.line, e.key) == (10, "min_inact") and "min_inact (100) exceeds max-inact (90)" in str(e)
    e = error(BASE + '[login]\ndelay = 2\nmax-inact = 5\n', tmp_path)  # min-inact's default
    assert (e.line, e.key) == (11, "max-inact") and "exceeds max-inact (5)" in str(e)
    secret(tmp_path, "coa.secret")
    e = error(BASE + '[coa]\nlisten = "127.0.0.1:3799"\n\n[[coa.clients]]\naddress = "10.0.0.0/8"\n'
              'secret-file = "coa.secret"\n\n[[coa.clients]]\nsecret-file = "coa.secret"\n'
              'address = 167772161\n',
              tmp_path)
    assert (e.line, e.key) == (18, "clients")
    assert "[coa] key 'clients[1].address': expected an IP address or prefix" in str(e)
    e = error(BASE + '[radius]\nservers = ["127.0.0.1"]\nsecret-file = "coa.secret"\n'
              'nas-ip = 5\n', tmp_path)
    assert (e.line, e.key) == (12, "nas-ip") and "expected an IP address, got 5" in str(e)
    e = error(BASE + '[coa]\nlisten = "127.0.0.1:3799"\n'
              'clients = [{ address = "nowhere", secret-file = "x" }]\n', tmp_path)
    assert (e.line, e.key) == (11, "clients")
    assert "[coa] key 'clients[0].address': expected an IP address or prefix" in str(e)
    secret(tmp_path, "c.pem")
    secret(tmp_path, "c.key", 0o644)
    e = error(BASE + '[server]\nlisten = "127.0.0.1:20001"\ntls-cert = "c.pem"\n'
              'tls-key = "c.key"\n', tmp_path)
    assert (e.line, e.key) == (12, "tls-key") and "chmod 600" in str(e)
    e = error(BASE + '[quota]\nnotify = { often = ["admin"] }\n', tmp_path)
    assert (e.line, e.key) == (10, "notify") and "soft, hard or return" in str(e)


def test_every_section_is_read_by_a_declared_table(tmp_path):
    """One schema for every table: no section is read by hand. Each section
    is read by the very table SECTIONS declares for it: a key it does not
    know is refused there, with that table's keys."""
    from acctd.config.schema import Table
    for name, (kind, table) in config.SECTIONS.items():
        assert issubclass(table, Table), name
        header = f"[[{name}]]" if kind is list else f"[{name}]"
        e = error(f"{header}\nno-such-key = 1\n", tmp_path)
        assert (e.line, e.key) == (2, "no-such-key"), name
        assert f"unknown key; expected one of {', '.join(sorted(table.keys()))}" in str(e), name
