"""The monitor service (NeTAMS `service monitor`): per-flow rows of the
monitored units with their peers, committed with the drain and pruned after
their retention; the units at run time, kept; the file destination; the
query and its CLI."""

import datetime as dt
import json

import numpy as np
import pytest
from click.testing import CliRunner

from acctd.config.loader import loads
from acctd.errors import ConfigError, NotFound
from acctd.kernel import abi
from acctd.model.addresses import parse_addr
from acctd.services.contract import Drain
from acctd.services.monitor import MonitorService
from acctd.services.scheduler import request_from_argv
from acctd.store import monitor as table
from acctd.store.database import Storage
from acctd.store.rollup import rollup, to_us

from .daemon_stub import daemon_stub

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 12, 2, 12, tzinfo=UTC)
IN, OUT = abi.Dir.IN, abi.Dir.OUT

UNITS = """
[[policy]]
name = "ip"
target = "proto ip"
[[unit]]
type = "group"
name = "staff"
[[unit]]
type = "host"
name = "alice"
ip = "10.0.0.1"
parents = ["staff"]
acct-policy = ["ip"]
[[unit]]
type = "host"
name = "bob"
ip = "10.0.0.2"
acct-policy = ["ip"]
[[unit]]
type = "host"
name = "carol"
ip = "10.0.0.3"
parents = ["staff"]
acct-policy = ["ip"]
"""


def config(monitor: str = 'units = ["alice"]', path: str = "<string>"):
    return loads("[monitor]\n" + monitor + "\n" + UNITS, path)


def flows(*rows):
    """rows: (dir, proto, src, sport, dst, dport, packets, bytes)."""
    k = np.zeros(len(rows), abi.FLOW_KEY)
    v = np.zeros(len(rows), abi.FLOW_VAL)
    for i, (d, proto, src, sport, dst, dport, packets, nbytes) in enumerate(rows):
        k[i]["ifindex"], k[i]["dir"], k[i]["proto"] = 3, d, proto
        k[i]["ip_ver"] = 6 if ":" in src else 4
        k[i]["sport"], k[i]["dport"] = sport, dport
        k[i]["saddr"] = np.frombuffer(parse_addr(src), np.uint8)
        k[i]["daddr"] = np.frombuffer(parse_addr(dst), np.uint8)
        v[i]["packets"], v[i]["bytes"] = packets, nbytes
    return k, v


# alice downloads from two web servers and resolves a name; bob downloads too
TRAFFIC = flows(
    (IN, 6, "198.51.100.7", 443, "10.0.0.1", 40000, 10, 15000),
    (OUT, 6, "10.0.0.1", 40000, "198.51.100.7", 443, 6, 400),
    (IN, 6, "203.0.113.9", 80, "10.0.0.1", 40002, 4, 5000),
    (OUT, 17, "10.0.0.1", 5353, "192.0.2.53", 53, 1, 60),
    (IN, 17, "192.0.2.53", 53, "10.0.0.1", 5353, 1, 120),
    (IN, 6, "198.51.100.7", 443, "10.0.0.2", 50000, 99, 99000),
)

EMPTY_ROWS = {"unit_oid": np.zeros(0, np.uint32), "policy_oid": np.zeros(0, np.uint32),
              "dir": np.zeros(0, np.uint8), "packets": np.zeros(0, np.uint64),
              "bytes": np.zeros(0, np.uint64)}


def drain(d, keys, vals, now=NOW, fail=False):
    """One drain's commit with the services' in_drain, then after_drain."""
    e = np.zeros(0)
    dr = Drain(now, d.snapshot, EMPTY_ROWS, keys, vals, e, e)

    def in_tx(tx):
        d.service(MonitorService).in_drain(dr, tx)
        if fail:
            raise RuntimeError("the disk is full")
    d.storage.commit(rollup(EMPTY_ROWS, now, d.config.processor.zone), {}, in_tx)
    d.service(MonitorService).after_drain(dr)


def peers(d, unit="alice", **kw):
    return [(p["peer"], p["proto"], p["port"], p["bytes_in"], p["bytes_out"], p["packets_in"],
             p["packets_out"]) for p in d.call("monitor-query", unit=unit, **kw)["peers"]]


# -- rows ---------------------------------------------------------------------------

def test_rows_put_the_local_side_first_and_the_kernel_times_on_the_wall_clock():
    k, v = flows((IN, 6, "198.51.100.7", 443, "10.0.0.1", 40000, 2, 3000),
                 (OUT, 1, "10.0.0.1", 8, "2001:db8::1", 0, 1, 84))
    v["first_ns"] = [7_000_000_000, 0]
    v["last_ns"] = [9_500_000_000, 0]
    r = table.flow_rows(k, v, np.array([5, 5], np.uint32), wall_us=1_000_000_000,
                        mono_ns=10_000_000_000)
    assert r["local_port"].tolist() == [40000, 0] and r["remote_port"].tolist() == [443, 0]
    assert r["local_lo"][0] == int.from_bytes(parse_addr("10.0.0.1")[8:], "big")
    assert r["remote_hi"][1] == int.from_bytes(parse_addr("2001:db8::1")[:8], "big")
    # 3 s and 0.5 s before the drain; a time the kernel never set is the drain's
    assert r["first_us"].tolist() == [997_000_000, 1_000_000_000]
    assert r["last_us"].tolist() == [999_500_000, 1_000_000_000]


# -- storage --------------------------------------------------------------------------

def test_storage_holds_exact_per_peer_sums_of_the_monitored_unit_only():
    with daemon_stub(config(), clock=lambda: NOW) as d:
        drain(d, *TRAFFIC)
        drain(d, *TRAFFIC, now=NOW + dt.timedelta(minutes=5))   # a second drain's deltas
        assert peers(d) == [("198.51.100.7", 6, 443, 30000, 800, 20, 12),
                            ("203.0.113.9", 6, 80, 10000, 0, 8, 0),
                            ("192.0.2.53", 17, 53, 240, 120, 2, 2)]
        assert peers(d, "bob") == []            # bob is not monitored: nothing stored
        assert table.count(d.storage.con) == 10
        assert peers(d, peer="198.51.100.0/24") == [("198.51.100.7", 6, 443, 30000, 800, 20, 12)]
        assert peers(d, peer="192.0.2.53", port=53) == [("192.0.2.53", 17, 53, 240, 120, 2, 2)]
        assert peers(d, port=80) == [("203.0.113.9", 6, 80, 10000, 0, 8, 0)]
        assert peers(d, top=1) == [("198.51.100.7", 6, 443, 30000, 800, 20, 12)]
        assert peers(d, since="2026-12-02T12:04:00+00:00") == [
            ("198.51.100.7", 6, 443, 15000, 400, 10, 6), ("203.0.113.9", 6, 80, 5000, 0, 4, 0),
            ("192.0.2.53", 17, 53, 120, 60, 1, 1)]
        assert peers(d, until="2026-12-02T12:04:00+00:00")[0][3] == 15000


def test_a_group_is_monitored_with_its_members_and_queried_as_one():
    with daemon_stub(config('units = ["staff"]'), clock=lambda: NOW) as d:
        k, v = flows((IN, 6, "198.51.100.7", 443, "10.0.0.1", 1, 1, 100),
                     (IN, 6, "198.51.100.7", 443, "10.0.0.3", 2, 2, 200),
                     (IN, 6, "198.51.100.7", 443, "10.0.0.2", 3, 4, 400))
        drain(d, k, v)
        assert peers(d, "staff") == [("198.51.100.7", 6, 443, 300, 0, 3, 0)]
        assert peers(d, "carol") == [("198.51.100.7", 6, 443, 200, 0, 2, 0)]
        snap = d.snapshot
        assert d.service(MonitorService).monitored_oids() == frozenset(
            int(snap.unit(n).oid, 16) for n in ("staff", "alice", "carol"))


def test_rows_commit_with_the_drain_or_not_at_all():
    with daemon_stub(config(), clock=lambda: NOW) as d:
        with pytest.raises(RuntimeError):
            drain(d, *TRAFFIC, fail=True)
        assert table.count(d.storage.con) == 0
        drain(d, *TRAFFIC)
        assert table.count(d.storage.con) == 5


def test_retention_prunes_old_rows_in_bounded_steps():
    with daemon_stub(config('units = ["alice"]\nretention = "1d"'), clock=lambda: NOW) as d:
        for day in (3, 2):
            drain(d, *TRAFFIC, now=NOW - dt.timedelta(days=day))
        con = d.storage.con
        assert table.count(con) == 10
        assert table.prune(con, to_us(NOW - dt.timedelta(days=1)), step=3) == 3
        assert table.count(con) == 7
        # the oldest went first
        assert con.execute("SELECT count(*) FROM monitor WHERE ts < ?",
                           [dt.datetime(2026, 11, 29, 13)]).fetchall()[0][0] == 2
        drain(d, *TRAFFIC)              # the drain's own prune takes the rest
        assert table.count(con) == 5
        assert d.call("monitor-show")["rows_pruned"] == 7     # the service's own count


# -- units at run time ---------------------------------------------------------------

def test_units_added_and_removed_at_run_time_are_kept_across_a_restart(tmp_path):
    st = Storage(str(tmp_path / "acctd.duckdb"))
    try:
        with daemon_stub(config(), st, clock=lambda: NOW) as d:
            oid = d.snapshot.unit("bob").oid
            d.call("monitor-unit-add", unit=oid)
            shown = d.call("monitor-unit-remove", unit="alice")   # the config's own unit
            assert [u["name"] for u in shown["units"]] == ["bob"]
            with pytest.raises(NotFound, match="not monitored"):
                d.call("monitor-unit-remove", unit="carol")
            with pytest.raises(NotFound, match="no unit 'zed'"):
                d.call("monitor-unit-add", unit="zed")
        with daemon_stub(config(), st, clock=lambda: NOW) as d:
            assert [u["name"] for u in d.call("monitor-show")["units"]] == ["bob"]
            drain(d, *TRAFFIC)
            assert peers(d, "bob") == [("198.51.100.7", 6, 443, 99000, 0, 99, 0)]
            assert peers(d, "alice") == []
            d.call("monitor-unit-add", unit="alice")
            assert [u["name"] for u in d.call("monitor-show")["units"]] == ["alice", "bob"]
    finally:
        st.close()


def test_schedules_may_change_the_monitored_units_and_rotate():
    assert request_from_argv(["monitor", "unit", "add", "bob"]) == {
        "cmd": "monitor-unit-add", "args": {"unit": "bob"}}
    assert request_from_argv(["monitor", "unit", "remove", "bob"]) == {
        "cmd": "monitor-unit-remove", "args": {"unit": "bob"}}
    assert request_from_argv(["rotate", "monitor"]) == {"cmd": "rotate-monitor", "args": {}}


# -- config ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, error", [
    ('units = ["zed"]', "t.toml:2: [monitor] key 'units[0]': no unit 'zed' (a name or an oid)"),
    ('to = ["file"]', 't.toml:2: [monitor] key \'to\': `to` has "file": give the file, e.g. file = '
                      '"/var/log/acctd/monitor"'),
    ('to = ["stdout"]', "t.toml:2: [monitor] key 'to[0]': expected one of storage, file, netflow, "
                        "got 'stdout'"),
    ('file = "m.log"', 't.toml:2: [monitor] key \'file\': a file is given but `to` has no "file"'),
])
def test_config_mistakes_name_their_line(tmp_path, text, error):
    with pytest.raises(ConfigError) as e:
        config(text, str(tmp_path / "t.toml"))
    assert str(e.value).replace(str(tmp_path) + "/", "") == error


# -- file ------------------------------------------------------------------------------

def test_file_holds_the_monitored_units_lines_as_nacctd_or_json(tmp_path):
    path = tmp_path / "monitor.log"
    cfg = config(f'units = ["alice"]\nto = ["file"]\nfile = "{path}"\n'
                 'fields = ["proto", "src", "sport", "dst", "dport", "packets", "bytes", "user"]')
    with daemon_stub(cfg, clock=lambda: NOW) as d:
        d.ifnames = lambda: {3: "lan1"}                       # no kernel here
        drain(d, TRAFFIC[0][[0, 5]], TRAFFIC[1][[0, 5]])     # alice's flow, bob's
        assert table.count(d.storage.con) == 0          # not "storage"
    assert path.read_text() == "6\t198.51.100.7\t443\t10.0.0.1\t40000\t10\t15000\talice\n"

    json_path = tmp_path / "monitor.jsonl"
    cfg = config(f'to = ["file"]\nfile = "{json_path}"\nformat = "json"\n'
                 'fields = ["time", "proto", "src", "dport", "bytes", "user", "dir"]')
    with daemon_stub(cfg, clock=lambda: NOW) as d:   # no unit listed: every flow
        d.ifnames = lambda: {3: "lan1"}
        drain(d, TRAFFIC[0][[0, 5]], TRAFFIC[1][[0, 5]])
        got = d.call("rotate-monitor")
    assert got["rotated_to"].startswith(f"{json_path}.")
    stamp = got["rotated_to"][len(f"{json_path}."):]
    assert dt.datetime.strptime(stamp, "%Y-%m-%d_%H:%M")      # NeTAMS's suffix
    lines = [json.loads(x) for x in open(got["rotated_to"])]
    assert lines == [
        {"time": int(NOW.timestamp()), "proto": 6, "src": "198.51.100.7", "dport": 40000,
         "bytes": 15000, "user": "alice", "dir": "in"},
        {"time": int(NOW.timestamp()), "proto": 6, "src": "198.51.100.7", "dport": 50000,
         "bytes": 99000, "user": "bob", "dir": "in"}]
    assert json_path.read_text() == ""


# -- acctctl ---------------------------------------------------------------------------

def test_acctctl_monitor_query_from_the_database_as_csv(tmp_path):
    from acctctl.main import main
    cfg_path = tmp_path / "acctd.toml"
    db = tmp_path / "acctd.duckdb"
    cfg_path.write_text('[monitor]\nunits = ["alice"]\n' + UNITS)
    cfg = loads(cfg_path.read_text(), str(cfg_path))
    st = Storage(str(db))
    with daemon_stub(cfg, st, clock=lambda: NOW) as d:
        drain(d, *TRAFFIC)
    st.close()
    r = CliRunner().invoke(main, ["--db", str(db), "--config", str(cfg_path), "monitor",
                                  "query", "alice", "--csv", "--peer", "192.0.2.0/24"])
    assert r.exit_code == 0, r.output
    assert r.output == (
        "peer,proto,port,bytes_in,bytes_out,packets_in,packets_out,first,last\n"
        "192.0.2.53,17,53,120,60,1,1,2026-12-02T12:00:00+00:00,2026-12-02T12:00:00+00:00\n")
    r = CliRunner().invoke(main, ["--db", str(db), "--config", str(cfg_path), "monitor",
                                  "query", "alice", "--csv", "--from", "2026-12-02T12:00:01Z"])
    assert r.output == "peer,proto,port,bytes_in,bytes_out,packets_in,packets_out,first,last\n"
    r = CliRunner().invoke(main, ["--db", str(db), "--config", str(cfg_path), "monitor",
                                  "query", "alice", "--json", "--to", "2026-12-02T12:00:01Z",
                                  "--port", "53"])
    assert [p["bytes_in"] for p in json.loads(r.output)["peers"]] == [120]
    r = CliRunner().invoke(main, ["--db", str(db), "--config", str(cfg_path), "monitor",
                                  "query", "alice", "--from", "yesterday"])
    assert (r.exit_code, r.output) == (1, "acctctl: --from: expected a time like 2026-01-31 "
                                          "or 2026-01-31T12:00, got 'yesterday'\n")
    r = CliRunner().invoke(main, ["--db", str(db), "--config", str(cfg_path), "monitor",
                                  "query", "alice", "--peer", "nonsense"])
    assert r.exit_code == 1
    assert r.output == "acctctl: --peer: 'nonsense' does not appear to be an IPv4 or IPv6 " \
                       "address\n"


def test_changes_need_an_operator_and_reads_a_viewer():
    from acctd.control.access import Level
    from acctd.control.dispatch import Caller
    from acctd.errors import PermissionDenied
    with daemon_stub(config(), clock=lambda: NOW) as d:
        viewer = Caller(1000, "noc", Level.VIEWER)
        with pytest.raises(PermissionDenied, match="'monitor-unit-add' needs level operator"):
            d.dispatcher.handle({"cmd": "monitor-unit-add", "args": {"unit": "bob"}}, viewer)
        assert d.dispatcher.handle({"cmd": "monitor-query", "args": {"unit": "alice"}},
                                   viewer)["peers"] == []
        ops = Caller(1001, "ops", Level.OPERATOR)
        d.dispatcher.handle({"cmd": "monitor-unit-add", "args": {"unit": "bob"}}, ops)
        assert [u["name"] for u in d.call("monitor-show")["units"]] == ["alice", "bob"]


def test_acctctl_monitor_over_the_control_socket(tmp_path):
    import threading

    from acctctl.main import main
    from acctd.control import server as ctl
    path = tmp_path / "m.log"
    cfg = config(f'units = ["alice"]\nto = ["storage", "file", "netflow"]\nfile = "{path}"')
    with daemon_stub(cfg, clock=lambda: NOW) as d:
        d.ifnames = lambda: {3: "lan1"}
        drain(d, *TRAFFIC)
        s = ctl.ControlServer(str(tmp_path / "ctl.sock"), d.dispatcher)
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.01},
                         daemon=True).start()

        def acctctl(*args, code=0):
            r = CliRunner().invoke(main, ["--socket", s.path, *args], env={"COLUMNS": "80"})
            assert r.exit_code == code, r.output
            return r.output
        try:
            assert acctctl("monitor", "unit", "add", "carol") == (
                f"monitored units: alice ({d.snapshot.unit('alice').oid}), "
                f"carol ({d.snapshot.unit('carol').oid})\n"
                "to: storage file netflow\n"
                "storage: 5 rows stored, 0 pruned, retention 2592000 s\n"
                f"file: {path} (nacctd), 5 lines, 0 queued, 0 errors\n"
                "netflow: sent by the export service\n")
            assert acctctl("monitor", "unit", "remove", "zed", code=1) == \
                "acctctl: no unit 'zed'\n"
            got = acctctl("monitor", "query", "alice", "--top", "2")
            assert got.splitlines()[0].strip() == "alice (020435): peers"
            assert "\n".join(got.splitlines()[1:]) + "\n" == """\
┏━━━━━━━━━━━━━━┳━━━━━━━┳━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━┓
┃ peer         ┃ proto ┃ port ┃ bytes_in ┃ bytes_out ┃ packets_in ┃ packets_out ┃ first                   ┃ last                    ┃
┡━━━━━━━━━━━━━━╇━━━━━━━╇━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━┩
│ 198.51.100.7 │     6 │  443 │ 14.6 KiB │     400 B │         10 │           6 │ 2026-12-02 12:00:00 UTC │ 2026-12-02 12:00:00 UTC │
│ 203.0.113.9  │     6 │   80 │ 4.88 KiB │       0 B │          4 │           0 │ 2026-12-02 12:00:00 UTC │ 2026-12-02 12:00:00 UTC │
└──────────────┴───────┴──────┴──────────┴───────────┴────────────┴─────────────┴─────────────────────────┴─────────────────────────┘
"""
        finally:
            s.shutdown()
            s.server_close()


def test_without_a_monitor_table_nothing_is_monitored_or_changed():
    with daemon_stub(loads(UNITS), clock=lambda: NOW) as d:
        from acctd.errors import BadRequest
        with pytest.raises(BadRequest, match=r"no \[monitor\] in the configuration"):
            d.call("monitor-unit-add", unit="alice")
        assert d.service(MonitorService).monitored_oids() == frozenset()
        assert d.call("monitor-show")["configured"] is False
        drain(d, *TRAFFIC)
        assert table.count(d.storage.con) == 0


def test_a_reload_takes_the_new_list_and_keeps_the_run_time_changes(tmp_path):
    from acctd import config as config_mod
    path = tmp_path / "acctd.toml"
    path.write_text('[monitor]\nunits = ["alice"]\n' + UNITS)
    log = tmp_path / "m.log"
    with daemon_stub(config_mod.load(str(path)), tmp_path=tmp_path, clock=lambda: NOW) as d:
        d.drain = d.drain_locked = lambda: {}               # no kernel to drain
        d.ifnames = lambda: {3: "lan1"}
        d.call("monitor-unit-add", unit="bob")
        d.call("unit-add", kind="user", name="dave")        # a unit made at run time
        d.call("monitor-unit-add", unit="dave")
        path.write_text(f'[monitor]\nunits = ["carol"]\nto = ["storage", "file"]\n'
                        f'file = "{log}"\n' + UNITS)
        d.reload()
        assert [u["name"] for u in d.call("monitor-show")["units"]] == ["carol", "bob", "dave"]
        snap = d.snapshot
        assert d.service(MonitorService).monitored_oids() == frozenset(
            int(snap.unit(n).oid, 16) for n in ("carol", "bob", "dave"))
        drain(d, *TRAFFIC)
        assert log.read_text().count("\n") == 1               # bob's one flow
        assert peers(d, "bob") == [("198.51.100.7", 6, 443, 99000, 0, 99, 0)]


def test_the_readme_example_is_a_valid_monitor_table():
    import pathlib
    import re
    readme = (pathlib.Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Monitoring a unit", 1)[1]
    block = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    cfg = loads(block + UNITS + '[[unit]]\ntype = "host"\nname = "dan"\noid = "0A12F3"\n'
                'ip = "10.0.0.9"\n')
    assert cfg.monitor.units == ("alice", "0A12F3") and cfg.monitor.retention == 30 * 86400
    assert cfg.monitor.to == ("storage", "file") and cfg.monitor.format == "nacctd"


def test_an_export_of_the_monitored_units_takes_the_monitors_units():
    """[[export]] units = "monitored" follows the monitor, run-time changes
    included; without [monitor] it exports nothing."""
    from acctd.services.export.service import monitored_oids, selected
    k, _ = flows((abi.Dir.IN, 17, "192.0.2.9", 53, "10.0.0.1", 4000, 1, 100),
                 (abi.Dir.IN, 17, "192.0.2.9", 53, "10.0.0.2", 4000, 1, 100))
    with daemon_stub(config()) as d:
        units = d.snapshot.units
        assert selected(k, units, "monitored", monitored_oids(d)).tolist() == [True, False]
        d.call("monitor-unit-add", unit="bob")
        assert selected(k, units, "monitored", monitored_oids(d)).tolist() == [True, True]
    with daemon_stub(loads(UNITS, "<string>")) as d:
        assert monitored_oids(d) == frozenset()
