"""Traffic reports (NeTAMS `send report`): the grammar, the last complete day
or week across DST, units with `+`, recipients, and the figures that reach
a real SMTP server (aiosmtpd) in English and Russian, from rows committed
to a real DuckDB file; through the control dispatcher and the scheduler."""

import datetime as dt
import email
import email.policy
import os
import time
import types
import zoneinfo

import numpy as np
import pytest

from acctd.config import loads
from acctd.control import client, commands
from acctd.control import server as ctl
from acctd.control.access import Level
from acctd.control.dispatch import Caller
from acctd.errors import AcctError, BadRequest, NotFound, PermissionDenied
from acctd.model.snapshot import Snapshot
from acctd.services import reports
from acctd.services.alerter import AlerterService, Mailer, MailSettings
from acctd.services.reports import ReportError, ReportsService, Request
from acctd.services.scheduler import (Scheduler, SchedulerService, parse_schedule,
                                      request_from_argv, split_action)
from acctd.store import queries, rollup
from acctd.store.database import Storage

from tests.ports import free_port

from .daemon_stub import daemon_stub

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
UTC = dt.timezone.utc
ADMINS = ("noc@isp.example", "boss@isp.example")

CONFIG = f"""
[processor]
time-zone = "Europe/Berlin"
default-acct-policy = ["ip"]

[[policy]]
name = "ip"
target = "proto ip"

[[policy]]
name = "web"
target = "proto tcp port 80"

[[policy]]
name = "old"
target = "proto udp"

[[unit]]
type = "group"
name = "LAN"

[[unit]]
type = "group"
name = "floor2"
parents = ["LAN"]

[[unit]]
type = "host"
name = "alice"
ip = "10.0.0.1"
parents = ["LAN"]
email = "alice@example.net"
acct-policy = ["web"]

[[unit]]
type = "host"
name = "bob"
ip = "10.0.0.2"
parents = ["floor2"]

[[unit]]
type = "host"
name = "carol"
ip = "10.0.0.3"
email = "carol@example.net"

[[user]]
name = "ops"
level = "operator"
uid = {os.geteuid() if os.geteuid() else 65533}

[[user]]
name = "noc"
level = "viewer"
uid = 65534
"""


def local(*a, fold=0):
    return dt.datetime(*a, tzinfo=BERLIN, fold=fold)


@pytest.fixture(scope="module")
def cfg():
    return loads(CONFIG, "reports.toml")


# --- the grammar ----------------------------------------------------------------------

def test_parse_the_reference_line_and_defaults():
    assert reports.parse("to {owner} on LAN+ period week".split()) == \
        Request(("{owner}",), ("LAN+",), "week")
    # the reference's own example; «» as the reference types them
    assert reports.parse(["to", "admin", "on", "LAN+"]) == Request(("admin",), ("LAN+",), "day")
    assert reports.parse(["to", "«{owner}»", "ADMIN", "x@y.example"]).to == \
        ("{owner}", "admin", "x@y.example")
    assert reports.parse([]) == Request() == Request((), (), "day")
    # as a control request: what the registry lets through rebuilds the same request
    a = commands.get("send-report").bind(reports.parse(["on", "bob", "period", "week"]).to_args())
    assert Request(tuple(a["to"]), tuple(a["on"]), a["period"]) == Request((), ("bob",), "week")


@pytest.mark.parametrize("words,error", [
    (["period", "month"], "period must be day or week"),
    (["to"], "nothing after 'to'"),
    (["on", "period", "day"], "nothing after 'on'"),
    (["LAN+"], "unexpected 'LAN\\+'"),
    (["period", "day", "period", "week"], "period given twice"),
    (["period", "day", "LAN"], "unexpected 'LAN'"),
    (["to", "noc"], "recipient 'noc'"),
    (["on", "+"], "unit '\\+'"),
])
def test_parse_errors_say_what_is_wrong(words, error):
    with pytest.raises(ReportError, match=error):
        reports.parse(words)


def test_json_args_are_checked_too():
    with pytest.raises(BadRequest, match="'to': expected list of str"):
        commands.get("send-report").bind({"to": "admin"})
    with pytest.raises(BadRequest, match="'on': expected list of str"):
        commands.get("send-report").bind({"on": [3]})
    with pytest.raises(ReportError, match="period"):
        Request(period="year")


# --- the period -----------------------------------------------------------------------

def hours(bounds):
    return (bounds[1] - bounds[0]) / dt.timedelta(hours=1)


def test_day_is_yesterday_with_25_and_23_hours_across_dst():
    # Berlin: back on Sun 2026-10-25, forward on Sun 2026-03-29
    start, end = reports.last_period("day", local(2026, 10, 26, 9), BERLIN)
    assert (start, end) == (local(2026, 10, 25), local(2026, 10, 26))
    assert start.tzinfo == UTC and hours((start, end)) == 25
    assert hours(reports.last_period("day", local(2026, 3, 30, 0, 0, 1), BERLIN)) == 23
    # exactly at midnight (a `daily` schedule): the day that just ended
    assert reports.last_period("day", local(2026, 10, 26), BERLIN)[0] == local(2026, 10, 25)
    assert reports.last_period("day", local(2026, 10, 25, 23, 59), BERLIN)[0] == local(2026, 10, 24)


def test_week_is_the_last_complete_iso_week():
    # Monday 00:00 (a `weekly` schedule): Mon 19 .. Sun 25 Oct, 169 hours with the DST change
    b = reports.last_period("week", local(2026, 10, 26), BERLIN)
    assert b == (local(2026, 10, 19), local(2026, 10, 26)) and hours(b) == 169
    assert reports.last_period("week", local(2026, 10, 25, 23, 59), BERLIN)[0] == local(2026, 10, 12)
    assert hours(reports.last_period("week", local(2026, 4, 1), BERLIN)) == 167
    # across the new year: ISO week 53 of 2026 is Mon 28 Dec .. Sun 3 Jan
    assert reports.last_period("week", local(2027, 1, 1, 12), BERLIN) == \
        (local(2026, 12, 21), local(2026, 12, 28))
    assert reports.last_period("week", local(2027, 1, 4, 8), BERLIN) == \
        (local(2026, 12, 28), local(2027, 1, 4))


# --- units and recipients --------------------------------------------------------------

def names(cfg, idx):
    return [cfg.units.units[i].name for i in idx]


def test_unit_selection(cfg):
    sel = lambda *on: names(cfg, reports.select_units(cfg.units, on))  # noqa: E731
    assert sel() == ["alice", "carol"]                       # every unit with an e-mail
    assert sel("LAN+") == ["LAN", "floor2", "alice", "bob"]  # members of members too
    assert sel("floor2+") == ["floor2", "bob"]
    assert sel("LAN") == ["LAN"]
    assert sel("carol", "alice", "LAN+") == ["carol", "alice", "LAN", "floor2", "bob"]
    assert sel("bob+") == ["bob"]                            # a host has nothing below it
    assert sel(cfg.units.units[4].oid) == ["carol"]          # by oid
    with pytest.raises(NotFound, match="unknown unit 'LAM'"):
        sel("LAM+")


def test_recipients():
    a = reports.addresses
    assert a((), "alice@example.net", ADMINS) == ("alice@example.net", *ADMINS)
    assert a((), None, ADMINS) == ADMINS
    assert a(("{owner}",), None, ADMINS) == ()
    assert a(("{owner}",), "alice@example.net", ADMINS) == ("alice@example.net",)
    assert a(("admin",), "alice@example.net", ADMINS) == ADMINS
    assert a(("x@y.example", "{owner}", "admins"), "X@Y.example", ADMINS) == ("x@y.example", *ADMINS)


def test_policy_rows_list_idle_and_leftover_policies_and_take_the_total_apart():
    figures = {(1, 0): 100, (1, 1): 10, (3, 0): 7, (0, 0): 150, (0, 1): 11, (0x99, 1): 5}
    rows, total = reports.policy_rows([(1, "ip"), (2, "web")], figures, {3: "old"})
    assert rows == [("ip", 100, 10), ("web", 0, 0), ("old", 7, 0), ("000099", 0, 5)]
    assert total == (150, 11)   # all traffic, not the (overlapping) policies' sum
    assert reports.policy_rows([(1, "ip")], {}) == ([("ip", 0, 0)], None)


# --- figures from storage -----------------------------------------------------------------

def oid(cfg, kind, name):
    objs = cfg.units if kind == "unit" else cfg.policies
    return int(next(o.oid for o in objs if o.name == name), 16)


def commit(st, cfg, ts, rows):
    """One drain at `ts`: rows of (unit, policy or None for all traffic, bytes in, bytes out)."""
    cols = {k: [] for k in ("unit_oid", "policy_oid", "dir", "packets", "bytes")}
    for unit, policy, b_in, b_out in rows:
        for d, b in enumerate((b_in, b_out)):
            cols["unit_oid"].append(oid(cfg, "unit", unit))
            cols["policy_oid"].append(rollup.ALL_TRAFFIC if policy is None else oid(cfg, "policy", policy))
            cols["dir"].append(d)
            cols["packets"].append(1)
            cols["bytes"].append(b)
    types_ = {"unit_oid": np.uint32, "policy_oid": np.uint32, "dir": np.uint8,
              "packets": np.uint64, "bytes": np.uint64}
    cols = {k: np.array(v, types_[k]) for k, v in cols.items()}
    st.commit(rollup.rollup(cols, ts, BERLIN), {})


# Sunday 2026-10-25 (25 hours) is "yesterday" on Monday the 26th; the week is 19-25 Oct.
NOW = local(2026, 10, 26, 9)
DAY = {"ip": (3_000_000, 50_000), "web": (600_000, 5_000), "total": (3_300_000, 52_000)}
WEEK = {"ip": (10_000_000, 120_000), "web": (600_000, 5_000), "old": (4_000, 0),
        "total": (10_304_000, 122_000)}


@pytest.fixture
def storage(tmp_path, cfg):
    with Storage(tmp_path / "acctd.duckdb", BERLIN) as st:
        # the first hour of Sunday (CEST) and its last (CET, after the change)
        commit(st, cfg, local(2026, 10, 25, 0, 30), [
            ("alice", "ip", 1_000_000, 20_000), ("alice", "web", 600_000, 5_000),
            ("alice", None, 1_100_000, 21_000), ("bob", "ip", 500, 50), ("bob", None, 500, 50),
            ("LAN", None, 1_100_500, 21_050)])
        commit(st, cfg, local(2026, 10, 25, 23, 30), [
            ("alice", "ip", 2_000_000, 30_000), ("alice", None, 2_200_000, 31_000)])
        # Saturday: in the week, not the day; "old" was in alice's list then
        commit(st, cfg, local(2026, 10, 24, 23, 50), [
            ("alice", "ip", 7_000_000, 70_000), ("alice", "old", 4_000, 0),
            ("alice", None, 7_004_000, 70_000)])
        # outside both: Monday after midnight, and the Sunday before the week
        commit(st, cfg, local(2026, 10, 26, 0, 10), [("alice", "ip", 1, 1), ("alice", None, 1, 1)])
        commit(st, cfg, local(2026, 10, 18, 23, 50), [("alice", "ip", 2, 2), ("alice", None, 2, 2)])
        yield st


def test_period_figures_sum_the_summaries_of_the_period(cfg, storage):
    alice, ip = oid(cfg, "unit", "alice"), oid(cfg, "policy", "ip")
    day = queries.period_figures(storage, "day", reports.last_period("day", NOW, BERLIN)[0])
    week = queries.period_figures(storage, "week", reports.last_period("week", NOW, BERLIN)[0])
    assert (day[alice][(ip, 0)], day[alice][(ip, 1)]) == DAY["ip"]
    assert (day[alice][(0, 0)], day[alice][(0, 1)]) == DAY["total"]
    assert (week[alice][(ip, 0)], week[alice][(ip, 1)]) == WEEK["ip"]
    assert oid(cfg, "unit", "carol") not in week


def test_build_rows_per_unit(cfg, storage):
    start = reports.last_period("week", NOW, BERLIN)[0]
    figures = queries.period_figures(storage, "week", start)
    out, skipped = reports.build(Snapshot.build(cfg), reports.parse(["to", "{owner}", "on", "LAN+", "period", "week"]),
                                 ADMINS, figures, start)
    # groups have no e-mail of their own, nor has bob: {owner} alone reaches only alice
    assert [r.unit for r in out] == ["alice"]
    assert [s["unit"] for s in skipped] == ["LAN", "floor2", "bob"]
    (r,) = out
    assert r.to == ("alice@example.net",) and r.start == local(2026, 10, 19)
    assert r.rows == (("ip", *WEEK["ip"]), ("web", *WEEK["web"]), ("old", *WEEK["old"]))
    assert r.total == WEEK["total"]


# --- through the daemon and the dispatcher, to a real SMTP server ---------------------------

aiosmtpd = pytest.importorskip("aiosmtpd")
from aiosmtpd.controller import Controller  # noqa: E402


class Sink:
    def __init__(self):
        self.got = []

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.got.append((tuple(envelope.rcpt_tos), msg))
        return "250 OK queued"


@pytest.fixture
def smtp():
    port = free_port()
    sink = Sink()
    ctl = Controller(sink, hostname="127.0.0.1", port=port)
    ctl.start()
    yield types.SimpleNamespace(port=port, sink=sink)
    ctl.stop()


@pytest.fixture
def acctd(tmp_path, cfg, storage, smtp):
    """A ControlServer over a kernel-less Daemon: real storage, mailer and
    scheduler, the real reports service."""
    def build(language="en", mail=True):
        d.service(AlerterService).mailer = Mailer(
            MailSettings(host="127.0.0.1", port=smtp.port, timeout=5, sender="acctd@isp.example",
                         admins=ADMINS, language=language), tmp_path / "outbox") if mail else None
        return srv
    with daemon_stub(cfg, storage, clock=lambda: NOW.astimezone(UTC)) as d:
        d.service(SchedulerService).schedule = Scheduler(BERLIN, clock=d.clock)
        srv = ctl.ControlServer(str(tmp_path / "ctl.sock"), d.dispatcher)
        srv.daemon = d
        srv.serve_in_thread()
        yield build
        srv.shutdown()
        srv.server_close()


def mailer(srv):
    return srv.daemon.service(AlerterService).mailer


def delivered(srv, smtp):
    mailer(srv).deliver_due(time.time() + 1)
    return {m["To"]: (rcpts, m) for rcpts, m in smtp.sink.got}


def line(body, first):
    (ln,) = [ln for ln in body.splitlines() if ln.split()[:1] == [first]]
    return ln


@pytest.mark.parametrize("language,subject,total", [
    ("en", "[acctd] alice: daily traffic report for 2026-10-25", "total"),
    ("ru", "[acctd] alice: суточный отчёт о трафике за 2026-10-25", "итого"),
])
def test_default_daily_report_reaches_owners_and_admins(acctd, smtp, language, subject, total):
    srv = acctd(language)
    res = client.call(srv.path, "send-report")     # over the socket, as acctctl does
    assert res["period"] == "day" and res["start"] == "2026-10-25T00:00:00+02:00"
    assert res["end"] == "2026-10-26T00:00:00+01:00"
    assert [(q["unit"], q["to"]) for q in res["queued"]] == \
        [("alice", ["alice@example.net", *ADMINS]), ("carol", ["carol@example.net", *ADMINS])]
    got = delivered(srv, smtp)
    rcpts, msg = got[", ".join(["alice@example.net", *ADMINS])]
    assert rcpts == ("alice@example.net", *ADMINS) and msg["Subject"] == subject
    body = msg.get_content()
    assert "oid " + srv.daemon.snapshot.units.units[2].oid in body
    for name, (b_in, b_out) in (("ip", DAY["ip"]), ("web", DAY["web"]), (total, DAY["total"])):
        ln = line(body, name)
        assert f" {b_in} (" in ln and f" {b_out} (" in ln, ln
    assert "old" not in body            # no traffic under it that day, not in alice's list
    # carol had no traffic: her policy lines and total are zero
    _, msg = got[", ".join(["carol@example.net", *ADMINS])]
    assert line(msg.get_content(), "ip").split()[1:] == ["0", "(0", "B)", "0", "(0", "B)"]


@pytest.mark.parametrize("language,subject", [
    ("en", "[acctd] alice: weekly traffic report, week of 2026-10-19"),
    ("ru", "[acctd] alice: недельный отчёт о трафике с 2026-10-19"),
])
def test_weekly_report_to_admins_on_a_group_and_its_members(acctd, smtp, language, subject):
    srv = acctd(language)
    res = srv.daemon.call("send-report", **Request(("admin",), ("LAN+",), "week").to_args())
    assert [q["unit"] for q in res["queued"]] == ["LAN", "floor2", "alice", "bob"]
    assert all(q["to"] == list(ADMINS) for q in res["queued"]) and res["skipped"] == []
    delivered(srv, smtp)
    assert len(smtp.sink.got) == 4
    body = {m["Subject"]: m.get_content() for _, m in smtp.sink.got}[subject]
    for name, (b_in, b_out) in WEEK.items():
        ln = line(body, name if name != "total" else ("total" if language == "en" else "итого"))
        assert f" {b_in} (" in ln and f" {b_out} (" in ln, ln


def test_without_alerter_the_error_says_what_to_add(acctd):
    srv = acctd(mail=False)
    with pytest.raises(AcctError, match=r"send report needs an \[alerter\] table in the config"):
        client.call(srv.path, "send-report", period="week")
    with pytest.raises(AcctError, match=r"needs an \[alerter\] table"):
        srv.daemon.service(ReportsService).send()


def test_viewers_may_not_send_reports(acctd):
    srv = acctd()
    handle = srv.daemon.dispatcher.handle
    with pytest.raises(PermissionDenied, match="needs level operator"):
        handle({"cmd": "send-report", "args": {}}, Caller(-1, "noc", Level.VIEWER))
    assert handle({"cmd": "send-report", "args": {}}, Caller(-1, "ops", Level.OPERATOR))["queued"]


def test_unknown_unit_queues_nothing(acctd):
    srv = acctd()
    with pytest.raises(AcctError, match="unknown unit 'nobody'"):
        client.call(srv.path, "send-report", on=["alice", "nobody+"])
    assert mailer(srv).queue() == []


# --- as a scheduled action ------------------------------------------------------------------

SPEC = 'time weekly action "send report to {owner} on LAN+ period week"'


def test_the_scheduler_accepts_send_report():
    (argv,) = split_action(parse_schedule(SPEC).action)
    assert argv == ["send", "report", "to", "{owner}", "on", "LAN+", "period", "week"]
    assert request_from_argv(argv) == {
        "cmd": "send-report", "args": {"to": ["{owner}"], "on": ["LAN+"], "period": "week"}}
    with pytest.raises(ValueError, match="recipient 'nobody'"):
        request_from_argv(["send", "report", "to", "nobody"])
    e = Scheduler(BERLIN).add(SPEC, (0, "root"))
    assert e.timing.text == "weekly" and e.commands == [argv]


def test_schedule_add_checks_the_action_and_the_entry_sends_when_due(acctd):
    srv = acctd()
    with pytest.raises(AcctError, match="cannot schedule 'shutdown': stop the daemon"):
        client.call(srv.path, "schedule-add", spec='time daily action "flush && shutdown"')
    with pytest.raises(AcctError, match="period must be day or week"):
        client.call(srv.path, "schedule-add", spec='time daily action "send report period month"')
    sched = srv.daemon.service(SchedulerService)
    assert sched.schedule.list() == []
    sched.schedule.clock = lambda: local(2026, 10, 25, 12).astimezone(UTC)
    added = client.call(srv.path, "schedule-add", spec=SPEC)
    assert added["due"] == "2026-10-25T23:00:00+00:00"     # Monday 00:00 CET
    (entry,) = sched.schedule.due(local(2026, 10, 26).astimezone(UTC))
    sched.serve()                # its worker runs what the loop's tick hands it
    sched.queue.put(entry)
    deadline = time.monotonic() + 10
    while not mailer(srv).queue():
        assert time.monotonic() < deadline, "the scheduled report was not queued"
        time.sleep(0.02)
    (q,) = mailer(srv).queue()
    assert q.to == ("alice@example.net",) and "weekly" in q.subject


# --- acctctl --------------------------------------------------------------------------------

def test_acctctl_send_report(acctd):
    from click.testing import CliRunner

    from acctctl.main import main
    srv = acctd()
    res = CliRunner().invoke(main, ["--socket", srv.path, "send", "report", "to", "{owner}",
                                    "on", "LAN+", "period", "week"])
    assert res.exit_code == 0, res.output
    out = res.output.splitlines()
    assert out[0] == ("week from 2026-10-19T00:00:00+02:00 to 2026-10-26T00:00:00+01:00: "
                      "1 report(s) queued")
    assert out[1].startswith("  alice: alice@example.net (") and len(out) == 5
    assert out[2:] == [f"  {u}: skipped, no e-mail and no other recipient"
                       for u in ("LAN", "floor2", "bob")]
    bad = CliRunner().invoke(main, ["--socket", srv.path, "send", "report", "period", "year"])
    assert bad.exit_code == 2 and "period must be day or week" in bad.output
