"""NeTAMS parity of the commands (issue 18, "Missing directives and
commands"): the scheduler runs any command, show list/perf/config oids/users,
rotate log, the debug categories. Against the real control server and the
stub daemon of test_cli_output (real services and storage, no kernel)."""

import json
import logging
import time

import pytest

from acctd.control import commands
from acctd.daemon import log as daemon_log
from acctd.services.scheduler import SchedulerService, request_from_argv

from . import test_cli_output
from .test_cli_output import CONFIG, acctctl

srv, fresh = test_cli_output.srv, test_cli_output.fresh  # its daemons, as fixtures here


# --- the scheduler runs any command ---------------------------------------------------

def _sample(cmd) -> list[str]:
    """The command's words with a value for each required argument."""
    from acctd.services.scheduler import _words_of
    words = list(_words_of(cmd))
    for a in cmd.args:
        if a.required:
            words += {"debug": ["on"], "schedule-add": ["time", "daily", "action", "flush"]}.get(
                cmd.name, ["1"] if a.type is int else ["x"])
    return words


def test_every_registry_command_is_schedulable_in_its_acctctl_words():
    structured = {c.name for c in commands.COMMANDS
                  if any(a.type is dict or a.items is dict for a in c.args)}
    assert structured == {"radius-import", "openvpn-event",   # wire hooks, not command lines
                          "billing-payments-import"}   # acctctl reads the file
    for cmd in commands.COMMANDS:
        if cmd.name in structured:
            with pytest.raises(ValueError, match="takes structured input"):
                request_from_argv(_sample(cmd))
            continue
        assert request_from_argv(_sample(cmd))["cmd"] == cmd.name, cmd.name


@pytest.mark.parametrize("line, request_", [
    # the reference's own example, typography and all
    ("service processor", None),
    ("unit host name pupkin sys\u2013deny", {"cmd": "sys-policy",
                                               "args": {"unit": "pupkin", "policy": "sys-deny"}}),
    ("unit user oid 0246E8 sys-allow", {"cmd": "sys-policy",
                                         "args": {"unit": "0246E8", "policy": "sys-allow"}}),
    ("exit", None),
    ("mac fixate", {"cmd": "mac-fixate", "args": {}}),
    ("mac fixate overwrite", {"cmd": "mac-fixate", "args": {"overwrite": True}}),
    ("mac control alert block", {"cmd": "mac-check", "args": {}}),
    ("show list", {"cmd": "list", "args": {}}),
    ("show list full name linux", {"cmd": "list", "args": {"unit": "linux"}}),
    ("show perf", {"cmd": "perf", "args": {}}),
    ("show perf /var/tmp/perflog.txt header",
     {"cmd": "perf-log", "args": {"file": "/var/tmp/perflog.txt", "header": True}}),
    ("show config unsecure oids", {"cmd": "config", "args": {"unsecure": True, "oids": True}}),
    ("show users", {"cmd": "users", "args": {}}),
    ("show version", {"cmd": "status", "args": {}}),
    ("show quota name alice", {"cmd": "quota-show", "args": {"unit": "alice"}}),
    ("debug quota", {"cmd": "debug", "args": {"on": True, "category": "quota"}}),
    ("no debug login", {"cmd": "debug", "args": {"on": False, "category": "login"}}),
    ("debug none", {"cmd": "debug", "args": {"on": False, "category": None}}),
    ("rotate log", {"cmd": "rotate-log", "args": {}}),
    ("stat alice month", {"cmd": "stat", "args": {"unit": "alice", "period": "month"}}),
    ("session stop ip 10.0.0.9", {"cmd": "session-stop", "args": {"ip": "10.0.0.9"}}),
    ("openvpn interval alice 0", {"cmd": "openvpn-interval",
                                  "args": {"user": "alice", "seconds": 0}}),
    ("quota set alice day 3G in", {"cmd": "quota-set",
                                   "args": {"argv": ["alice", "day", "3G", "in"]}}),
    ("html", {"cmd": "html", "args": {}}),
])
def test_reference_words_become_requests(line, request_):
    assert request_from_argv(line.split()) == request_


@pytest.mark.parametrize("line, error", [
    ("save", "cannot schedule 'save': acctd's configuration is its TOML file: edit it and "
             "`reload`; there is nothing to save"),
    ("rm -rf /", "cannot schedule 'rm -rf /': not an acctctl or NeTAMS command "
                 "(see `acctctl --help`)"),
    ("stat", "cannot schedule 'stat': stat: argument 'unit' is required"),
    ("openvpn interval alice soon", "cannot schedule 'openvpn interval alice soon': "
                                    "seconds: expected a number, got 'soon'"),
])
def test_what_cannot_run_is_refused_when_added_with_the_reason(line, error):
    with pytest.raises(ValueError) as e:
        request_from_argv(line.split())
    assert str(e.value) == error


def _run_now(daemon, oid):
    """Hand the entry to the scheduler's worker, as the loop's tick does."""
    sched = daemon.service(SchedulerService)
    if sched._thread is None:
        sched.serve()
    sched.queue.put(sched.schedule.get(oid))


def _wait(cond, what):
    deadline = time.monotonic() + 10
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_the_reference_example_blocks_the_unit_when_it_runs(fresh):
    """NeTAMS: schedule time at-23:30 action «service processor && unit host
    name pupkin sys-deny && exit», as the reference types it."""
    out = acctctl(fresh, "schedule", "add", "time", "at\u201323:30", "action",
                  "\u00abservice processor && unit host name alice sys\u2013deny && exit\u00bb")
    oid = out.split()[2]
    assert out == f"schedule entry {oid} added, first run 2026-03-04 23:30:00 UTC\n"
    assert acctctl(fresh, "schedule", "list") == (
        "OID | INTERVAL | LEFT | ACTION\n"
        f"{oid} | at-23:30 | 46800 | service processor && unit host name alice sys-deny "
        "&& exit\n")
    d = fresh.daemon
    _run_now(d, oid)
    _wait(lambda: d.commands.units(name="alice")[0]["sys_policy"] == ["sys-deny"],
          "the scheduled sys-deny did not block alice")


def test_a_command_above_the_callers_level_is_refused_when_added(fresh):
    from acctd.control.access import Level
    from acctd.control.dispatch import Caller
    from acctd.errors import PermissionDenied
    ops = Caller(4242, "ops", Level.OPERATOR)
    sched = fresh.daemon.service(SchedulerService)
    with pytest.raises(PermissionDenied) as e:
        sched.add('time daily action "flush && perf log /etc/motd header"', ops)
    assert str(e.value) == "cannot schedule 'perf-log': it needs level admin; ops is operator"
    assert sched.add('time daily action "flush && unit alice sys-deny"', ops)["oid"]
    assert [r["action"] for r in sched.list()] == ["flush && unit alice sys-deny"]


# --- show -----------------------------------------------------------------------------

def test_list_without_a_unit_lists_every_unit(srv):
    each = "".join(acctctl(srv, "list", name) for name in ("customers", "alice", "[red]bob"))
    assert acctctl(srv, "list") == each
    got = json.loads(acctctl(srv, "list", "--json"))
    assert [u["unit"] for u in got["units"]] == ["customers", "alice", "[red]bob"]
    assert got["units"][1] == json.loads(acctctl(srv, "list", "alice", "--json"))


def test_list_without_a_unit_offline(tmp_path):
    """`acctctl --db ... list`: every unit from the database alone."""
    from click.testing import CliRunner

    from acctctl.main import main
    from acctd.config import loads
    from acctd.store.database import Storage
    (tmp_path / "acctd.toml").write_text(CONFIG)
    cfg = loads(CONFIG, str(tmp_path / "acctd.toml"))
    with Storage(str(tmp_path / "acctd.duckdb"), test_cli_output.UTC) as st:
        test_cli_output.known_counts(st, cfg)

    def offline(*words):
        res = CliRunner().invoke(main, ["--db", str(tmp_path / "acctd.duckdb"), "--config",
                                        str(tmp_path / "acctd.toml"), "list", *words, "--json"])
        assert res.exit_code == 0, res.output
        return json.loads(res.output)
    got = offline()
    assert [u["unit"] for u in got["units"]] == ["customers", "alice", "[red]bob"]
    assert got["units"][1] == offline("alice")
    assert {p["policy"] for p in got["units"][1]["policies"]} == {"(all)", "ip", "web"}


def test_config_show_oids_names_each_unit_and_policy_oid(srv):
    policies = {p["name"]: p["oid"] for p in json.loads(acctctl(srv, "policies", "--json"))}
    units = {u["name"]: u["oid"] for u in json.loads(acctctl(srv, "units", "--json"))}
    assert policies.keys() == {"ip", "web"} and units["alice"] == "020435"
    want = CONFIG
    for name, oid in [*policies.items(), *units.items()]:
        want = want.replace(f'name = "{name}"\n', f'name = "{name}"  # oid {oid}\n')
    assert acctctl(srv, "config", "show", "--oids") == want
    assert acctctl(srv, "config", "show") == CONFIG


ROW = {"drain": 7, "ts": "2026-03-04T10:30:00+00:00", "read_ms": 0.25, "account_ms": 1.5,
       "commit_ms": 12.125, "services_ms": 0.5, "total_ms": 14.375, "rows": 12, "flows": 3,
       "cpu_s": 2.5, "rss_kib": 81234, "load": 0.5}
LINE = "2026-03-04T10:30:00+00:00 7 0.25 1.5 12.125 0.5 14.375 12 3 2.5 81234 0.5"


def test_perf_prints_the_last_drains_and_logs_a_line(fresh, tmp_path):
    from acctd.daemon import perf
    assert acctctl(fresh, "perf") == perf.HEADER + "\n"
    fresh.daemon.perf.rows.append(ROW)
    assert acctctl(fresh, "perf") == f"{perf.HEADER}\n{LINE}\n"
    assert json.loads(acctctl(fresh, "perf", "--json")) == [ROW]
    path = tmp_path / "perflog.txt"
    assert acctctl(fresh, "perf", "log", str(path), "--header") == \
        f"2 line(s) written to {path}\n"
    assert acctctl(fresh, "perf", "log", str(path)) == f"1 line(s) written to {path}\n"
    assert path.read_text() == f"{perf.HEADER}\n{LINE}\n{LINE}\n"
    assert acctctl(fresh, "perf", "log", str(tmp_path / "no" / "f"), code=1) == \
        f"acctctl: perf log {tmp_path}/no/f: No such file or directory\n"


def test_a_drain_clock_adds_up_its_steps():
    from acctd.daemon import perf
    ticks = iter([10.0, 10.001, 10.003, 10.0035, 10.010])
    c = perf.DrainClock(clock=lambda: next(ticks))
    for step in ("read", "account", "commit", "services"):
        c.lap(step)
    row = perf.Perf(keep=2).record(3, "t", c, rows=5, flows=2)
    assert {k: row[k] for k in ("read_ms", "account_ms", "commit_ms", "services_ms",
                                "total_ms", "rows", "flows")} == {
        "read_ms": 1.0, "account_ms": 2.0, "commit_ms": 0.5, "services_ms": 6.5,
        "total_ms": 10.0, "rows": 5, "flows": 2}
    assert row["rss_kib"] > 0


def test_users_lists_every_user_and_its_level(tmp_path):
    from acctd.config import loads
    from acctd.control import server as ctl

    from .daemon_stub import daemon_stub
    cfg = loads(CONFIG + """
[[user]]
name = "anton"
level = "admin"
unix-user = "root"

[[user]]
name = "noc"
level = "viewer"
uid = 4242
""", str(tmp_path / "acctd.toml"))
    import threading
    with daemon_stub(cfg, tmp_path=tmp_path) as d:
        s = ctl.ControlServer(str(tmp_path / "ctl.sock"), d.dispatcher)
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.01},
                         daemon=True).start()
        try:
            assert acctctl(s, "users") == """\
                      users                       
┏━━━━━━━┳━━━━━━━━┳━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━━━┓
┃ name  ┃ level  ┃ uid  ┃ unix-user ┃ unix-group ┃
┡━━━━━━━╇━━━━━━━━╇━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━━━┩
│ anton │ admin  │ -    │ root      │ -          │
│ noc   │ viewer │ 4242 │ -         │ -          │
└───────┴────────┴──────┴───────────┴────────────┘
"""
        finally:
            s.shutdown()
            s.server_close()


# --- rotate log -----------------------------------------------------------------------

@pytest.fixture
def log_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    root = logging.getLogger("acctd")
    saved = root.handlers[:], root.level, root.propagate
    monkeypatch.setattr(daemon_log, "_log_file", daemon_log._log_file)  # setup() sets it
    path = tmp_path / "acctd.log"
    daemon_log.setup(path=str(path))
    daemon_log.set_debug(False)   # whatever an earlier test turned on
    yield path
    for h in root.handlers:
        h.close()
    root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]
    monkeypatch.delenv("TZ")
    time.tzset()


def test_rotate_log_moves_the_file_aside_with_the_time_and_starts_anew(log_file):
    log = logging.getLogger("acctd.daemon")
    at = 1772620200.0  # 2026-03-04 10:30:00 UTC
    log.info("before")
    assert daemon_log.rotate(now=at) == {"log": str(log_file), "rotated": True,
                                         "rotated_to": f"{log_file}.2026-03-04_10:30"}
    log.info("after")
    assert daemon_log.rotate(now=at + 20)["rotated_to"] == f"{log_file}.2026-03-04_10:30.1"
    log.info("last")
    assert (log_file.parent / "acctd.log.2026-03-04_10:30").read_text() == \
        "INFO acctd.daemon: before\n"
    assert (log_file.parent / "acctd.log.2026-03-04_10:30.1").read_text() == \
        "INFO acctd.daemon: after\n"
    assert log_file.read_text() == "INFO acctd.daemon: last\n"


def test_rotate_log_after_logrotate_moved_it_reopens(log_file):
    log_file.rename(log_file.parent / "moved")
    assert daemon_log.rotate()["rotated_to"] is None
    logging.getLogger("acctd.daemon").info("again")
    assert log_file.read_text() == "INFO acctd.daemon: again\n"


# --- debug categories -----------------------------------------------------------------

@pytest.mark.parametrize("category, module", [
    ("quota", "acctd.services.quota"), ("login", "acctd.services.login"),
    ("scheduler", "acctd.services.scheduler"), ("alerter", "acctd.services.alerter"),
    ("billing", None), ("aclserver", None)])
def test_debug_category_turns_on_that_service_alone(log_file, category, module):
    import importlib
    logger = importlib.import_module(module).log if module else \
        logging.getLogger(f"acctd.{category}")
    assert logger.name == f"acctd.{category}"
    others = [logging.getLogger(f"acctd.{c}") for c in daemon_log.CATEGORIES if c != category]
    try:
        assert daemon_log.set_debug(True, category) == {"debug": True, "category": category}
        logger.debug("one")
        for o in others:
            o.debug("not this")
        assert log_file.read_text() == f"DEBUG acctd.{category}: one\n"
    finally:
        daemon_log.set_debug(False, category)
    logger.debug("off again")
    assert log_file.read_text() == f"DEBUG acctd.{category}: one\n"


def test_debug_off_for_all_turns_every_category_off(log_file):
    daemon_log.set_debug(True, "quota")
    daemon_log.set_debug(True, "storage")
    daemon_log.set_debug(False)
    logging.getLogger("acctd.quota").debug("hidden")
    logging.getLogger("acctd.storage").debug("hidden")
    assert log_file.read_text() == ""


def test_debug_names_its_categories(fresh):
    assert acctctl(fresh, "debug", "on", "alert") == "debug on for alerter\n"
    assert acctctl(fresh, "debug", "off", "alerter") == "debug off for alerter\n"
    assert acctctl(fresh, "debug", "on", "bogus", code=1) == (
        "acctctl: unknown category 'bogus'; one of daemon, control, datapath, storage, quota, "
        "login, scheduler, alerter, billing, aclserver\n")


def test_log_debug_from_the_config_follows_reloads():
    from acctd.daemon.log import LogService, LogSettings
    quota, login = logging.getLogger("acctd.quota"), logging.getLogger("acctd.login")
    svc = LogService(None, LogSettings(debug=("quota",)))
    try:
        svc.start()
        assert (quota.level, login.level) == (logging.DEBUG, logging.NOTSET)
        svc.reload(LogSettings(debug=("login",)))
        assert (quota.level, login.level) == (logging.NOTSET, logging.DEBUG)
        svc.reload(None)
        assert (quota.level, login.level) == (logging.NOTSET, logging.NOTSET)
    finally:
        quota.setLevel(logging.NOTSET)
        login.setLevel(logging.NOTSET)
