"""Quota service: the NeTAMS `set` grammar, the soft/hard/return check across
period boundaries (injected clock), and `show quota` rows and layout."""

import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest

from acctd.common.display import format_bytes
from acctd.kernel import abi
from acctd.services.quota import (DEFAULT_NOTIFY, MAX_AMOUNT, MULTIPLIER, OWNER, SYS_POLICY,
                                  QuotaError, QuotaSettings, QuotaSpec, check, effective,
                                  format_set, format_show, parse_amount,
                                  parse_set, recipients, show_quota, usage_from_totals, used)

BERLIN = ZoneInfo("Europe/Berlin")
UTC = dt.timezone.utc
K, M, G = 1024, 1024 ** 2, 1024 ** 3


def local(*a):
    return dt.datetime(*a, tzinfo=BERLIN).astimezone(UTC)


# --- grammar -----------------------------------------------------------------------

@pytest.mark.parametrize("name,month", [("12", 150), ("13_1", 100), ("15_2", 120)])
def test_reference_netamsctl_examples(name, month):
    s = parse_set(f"set name {name} day 3M in month {month}M in")
    assert (s.unit, s.by) == (name, "name")
    assert s.limits == {("day", "in"): 3 * M, ("month", "in"): month * M}
    assert s.active and s.policy is None and s.soft_threshold is None and s.notify == {}


def test_acctctl_form_and_all_keywords():
    s = parse_set("quota set avm policy all-ip block-policy deny soft-threshold 75 inactive "
                  "hour 300 in 800 out week 1G sum notify soft {owner} notify hard {owner} admin "
                  "notify return admin month 2G out")
    assert (s.unit, s.by, s.policy, s.block_policy, s.soft_threshold, s.active) == \
        ("avm", None, "all-ip", "deny", 75, False)
    assert s.limits == {("hour", "in"): 300, ("hour", "out"): 800, ("week", "sum"): G,
                        ("month", "out"): 2 * G}
    assert s.notify == {"soft": (OWNER,), "hard": (OWNER, "admin"), "return": ("admin",)}


def test_reference_typography():
    # en dashes and guillemets as the reference prints them
    s = parse_set("set oid 0246E8 soft\u2013treshold 60 block\u2013policy \u00abno-web\u00bb "
                  "notify soft \u00ab{owner}\u00bb notify hard \u00ab{none}\u00bb")
    assert (s.unit, s.by, s.soft_threshold, s.block_policy) == ("0246E8", "oid", 60, "no-web")
    assert s.notify == {"soft": (OWNER,), "hard": ()}
    argv = ["quota", "set", "avm", "notify", "hard", "\u00ab{owner}\u00bb", "admin", "day", "3M", "in"]
    s = parse_set(argv)
    assert s.notify == {"hard": (OWNER, "admin")} and s.limits == {("day", "in"): 3 * M}


def test_set_changes_only_what_it_names_and_zero_resets():
    base = parse_set("set name user1 day 3M in month 100M in soft-treshold 70")
    s = parse_set("set name user1 month 0 in", base)  # the reference's reset example
    assert s.limits == {("day", "in"): 3 * M} and s.soft_threshold == 70
    s = parse_set("set name user1 active notify soft admin", parse_set("set name user1 inactive"))
    assert s.active and s.notify == {"soft": ("admin",)}
    assert parse_set("set name user1 notify", s).notify == {}  # back to the service default


def test_suffixes_are_binary():
    assert MULTIPLIER == {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}
    assert [parse_amount(x) for x in ("300", "3k", "3M", "2G", "100MB")] == \
        [300, 3 * K, 3 * M, 2 * G, 100 * M]


def test_amounts_are_exact_whole_bytes_up_to_1_eib():
    assert [parse_amount(x) for x in ("1.5G", "0.1K", "2.25m", "1073741824G")] == \
        [3 * G // 2, 102, 2 * M + M // 4, 1024 ** 6]
    assert MAX_AMOUNT == 1024 ** 6
    assert parse_set("set x day 1.5G in").limits == {("day", "in"): 1610612736}
    # the largest is shown as what it is, not a float's 99999999999999991611392.00G
    assert format_bytes(MAX_AMOUNT) == "1.00 EiB"
    for bad in ("99999999999999999999999G", "1073741825G", "1.G", ".5G", "1e3", "-1"):
        with pytest.raises(QuotaError) as e:
            parse_set(f"set x day {bad} in")
        assert str(e.value) == ("expected an amount in bytes like 300, 3M or 1.5G, at most "
                                f"1073741824G (1 EiB), got {bad!r}")
        assert e.value.pos == 3


def test_config_quota_units_are_read_as_set_commands(tmp_path):
    from acctd.config import ConfigError, loads
    head = '[[unit]]\ntype = "user"\nname = "bob"\n[quota]\npolicy = "ip"\n'
    cfg = loads(head + '[quota.units.bob]\nraw = ["day 1.5G in", "month 3M sum"]\n')
    assert cfg.quota.units["bob"]["raw"] == ("day 1.5G in", "month 3M sum")
    with pytest.raises(ConfigError) as e:
        loads(head + '[quota.units.bob]\nraw = ["day 1G in", "day 99999999999999999999999G in"]\n',
              str(tmp_path / "acctd.toml"))
    assert str(e.value) == (
        f"{tmp_path}/acctd.toml:7: [quota] key 'units.bob.raw[1]': expected an amount in bytes "
        "like 300, 3M or 1.5G, at most 1073741824G (1 EiB), got '99999999999999999999999G'")
    with pytest.raises(ConfigError) as e:
        loads(head + '[quota.units.bob]\nday = "3M in"\n', str(tmp_path / "acctd.toml"))
    assert str(e.value) == (f"{tmp_path}/acctd.toml:6: [quota] key 'units.bob': expected a "
                            "table with raw = [\"day 3M in\", ...], got {'day': '3M in'}")


@pytest.mark.parametrize("cmd,token,expected", [
    ("show name x", "show", "'set'"),
    ("set", None, "a unit"),
    ("set name", None, "the unit's name"),
    ("set name x day", None, "an amount after day"),
    ("set name x day 3X in", "3X", "an amount in bytes"),
    ("set name x day 3M both", "both", "in, out or sum after day 3M"),
    ("set name x day 3M", None, "in, out or sum"),
    ("set name x soft-treshold 120", "120", "0 to 100"),
    ("set name x notify always {owner}", "always", "soft, hard or return"),
    ("set name x notify hard", None, "recipients after notify hard"),
    ("set name x notify hard {none} admin", "{none}", "{none} alone"),
    ("set name x year 3M in", "year", "hour, day, week or month"),
    ("set name x policy", None, "a policy name"),
])
def test_errors_name_the_token_and_what_was_expected(cmd, token, expected):
    with pytest.raises(QuotaError) as e:
        parse_set(cmd)
    assert e.value.token == token and expected in e.value.expected
    assert expected in str(e.value)


def test_round_trips():
    s = parse_set("set name 'a b' policy http soft-treshold 75 notify hard {owner} admin "
                  "notify return {none} hour 300 in day 3M sum month 1536K out")
    assert parse_set(format_set(s)) == s
    assert QuotaSpec.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert "month 1536K out" in format_set(s) and "notify return {none}" in format_set(s)


def test_defaults_merge():
    d = QuotaSettings.from_mapping({"policy": "http", "soft-threshold": 75,
                                   "notify": {"hard": ("{owner}", "admin")}})
    assert (d.soft_threshold, d.delay) == (75, 10)
    assert d.notify == {**DEFAULT_NOTIFY, "hard": (OWNER, "admin")}
    e = effective(parse_set("set name u notify soft admin day 1M in"), d)
    assert (e.policy, e.soft_threshold, e.block_policy) == ("http", 75, None)
    assert e.notify == {"soft": ("admin",), "hard": (OWNER, "admin"), "return": (OWNER,)}
    e = effective(parse_set("set name u policy all-ip soft-treshold 0"), QuotaSettings())
    assert (e.policy, e.soft_threshold) == ("all-ip", 0)
    assert effective(QuotaSpec("u"), QuotaSettings(), first_policy="ip").policy == "ip"


def test_recipients():
    users = {"admin": "root@localhost", "01327B": "root@localhost"}
    assert recipients((OWNER, "admin", "01327B", "nobody"), "u@a.ru", users) == \
        ["u@a.ru", "root@localhost"]
    assert recipients((OWNER,), "", users) == []


# --- the check ---------------------------------------------------------------------

SPECS = {"0246E8": parse_set("set name avm hour 1000 in day 1M sum")}
D = QuotaSettings(policy="all-ip")


class Clock:
    """Drive check() as the daemon would, every `delay` seconds."""

    def __init__(self, specs=SPECS, defaults=D):
        self.specs, self.defaults, self.state = specs, defaults, None

    def run(self, now, usage):
        r = check(self.specs, self.defaults, usage, json.loads(json.dumps(self.state)),
                  now, BERLIN)
        self.state = r.state
        return r


def kinds(r):
    return [(e.kind, e.period, e.dir) for e in r.events]


def test_soft_then_hard_then_return_at_the_next_hour():
    c = Clock()
    t = local(2026, 11, 21, 16, 50)
    r = c.run(t, {"0246E8": {"hour": (700, 0), "day": (700, 0)}})
    assert r.events == () and r.block == () and not r.blocked
    r = c.run(t + dt.timedelta(seconds=10), {"0246E8": {"hour": (801, 5), "day": (801, 5)}})
    assert kinds(r) == [("soft", "hour", "in")]
    assert r.events[0].ratio == pytest.approx(80.1) and r.block == ()
    r = c.run(t + dt.timedelta(seconds=20), {"0246E8": {"hour": (1001, 5), "day": (1001, 5)}})
    assert kinds(r) == [("hard", "hour", "in")]
    assert r.block == ("0246E8",) and r.blocked == {"0246E8"}
    hard = r.events[0]
    assert (hard.used, hard.quota, hard.notify) == (1001, 1000, (OWNER,))
    assert hard.period_start == local(2026, 11, 21, 16).isoformat()
    assert SYS_POLICY == abi.SysPolicy.QUOTA
    # still over, drains keep coming: nothing new, still blocked
    for s in (30, 40, 590):  # up to 16:59:50
        r = c.run(t + dt.timedelta(seconds=s), {"0246E8": {"hour": (1500, 9), "day": (1500, 9)}})
        assert r.events == () and r.block == () and r.unblock == () and r.blocked == {"0246E8"}
    # 17:00:05 local: a new hour, its bucket is nearly empty
    r = c.run(local(2026, 11, 21, 17, 0, 5), {"0246E8": {"hour": (10, 0), "day": (1510, 9)}})
    assert kinds(r) == [("return", "hour", "in")]
    assert r.unblock == ("0246E8",) and not r.blocked
    assert r.events[0].period_start == local(2026, 11, 21, 17).isoformat()
    r = c.run(local(2026, 11, 21, 17, 0, 15), {"0246E8": {"hour": (20, 0), "day": (1520, 9)}})
    assert r.events == () and r.unblock == ()
    # and the new hour can be exceeded again: soft and hard are new for it
    r = c.run(local(2026, 11, 21, 17, 30), {"0246E8": {"hour": (2000, 0), "day": (3000, 9)}})
    assert kinds(r) == [("hard", "hour", "in")] and r.block == ("0246E8",)


def test_a_longer_period_keeps_the_block_across_the_hour():
    c = Clock()
    c.run(local(2026, 11, 21, 16, 50), {"0246E8": {"hour": (900, 0), "day": (M, 1)}})
    assert c.state["units"]["0246E8"]["blocked"]
    r = c.run(local(2026, 11, 21, 17, 0, 5), {"0246E8": {"hour": (0, 0), "day": (M, 1)}})
    assert r.events == () and r.unblock == () and r.blocked == {"0246E8"}
    r = c.run(local(2026, 11, 22, 0, 0, 5), {"0246E8": {"hour": (0, 0), "day": (0, 0)}})
    assert kinds(r) == [("return", "day", "sum")] and r.unblock == ("0246E8",)


def test_straight_past_hard_gives_one_notice_and_soft_zero_disables_soft():
    c = Clock()
    r = c.run(local(2026, 11, 21, 16, 0, 10), {"0246E8": {"hour": (5000, 0)}})
    assert kinds(r) == [("hard", "hour", "in")]
    specs = {"0246E8": parse_set("set name avm soft-treshold 0 hour 1000 in")}
    r = Clock(specs).run(local(2026, 11, 21, 16, 0, 10), {"0246E8": {"hour": (999, 0)}})
    assert r.events == ()


def test_sum_is_in_plus_out():
    assert used({"day": (600, 500)}, "day", "sum") == 1100
    assert used({}, "week", "sum") == 0
    specs = {"0246E8": parse_set("set name avm day 1000 sum")}
    r = Clock(specs).run(local(2026, 11, 21, 16), {"0246E8": {"day": (600, 401)}})
    assert kinds(r) == [("hard", "day", "sum")] and r.events[0].used == 1001
    r = Clock(specs).run(local(2026, 11, 21, 16), {"0246E8": {"day": (600, 400)}})
    assert kinds(r) == [("soft", "day", "sum")] and r.block == ()


def test_usage_from_storage_rows():
    rows = [{"policy_oid": 0x146633, "dir": 0, "flow": (1, 10), "hour": (2, 100), "day": (3, 200),
             "week": (4, 300), "month": (5, 400)},
            {"policy_oid": 0x146633, "dir": 1, "flow": (1, 1), "hour": (1, 7), "day": (1, 8),
             "week": (1, 9), "month": (1, 10)},
            {"policy_oid": 0x147C83, "dir": 0, "flow": (0, 0), "hour": (9, 999), "day": (9, 999),
             "week": (9, 999), "month": (9, 999)}]
    assert usage_from_totals(rows, 0x146633) == {"hour": (100, 7), "day": (200, 8),
                                                 "week": (300, 9), "month": (400, 10)}
    assert usage_from_totals(rows, 0x999999)["month"] == (0, 0)


def test_inactive_never_blocks_and_going_inactive_lets_through():
    specs = {"0246E8": parse_set("set name avm inactive hour 1000 in")}
    r = Clock(specs).run(local(2026, 11, 21, 16), {"0246E8": {"hour": (10 ** 9, 10 ** 9)}})
    assert r.events == () and r.block == () and not r.blocked
    c = Clock()
    c.run(local(2026, 11, 21, 16), {"0246E8": {"hour": (5000, 0)}})
    c.specs = {"0246E8": parse_set("set name avm inactive", SPECS["0246E8"])}
    r = c.run(local(2026, 11, 21, 16, 0, 10), {"0246E8": {"hour": (5000, 0)}})
    assert r.unblock == ("0246E8",) and r.events == () and not r.blocked


def test_raising_the_quota_returns_and_removed_record_unblocks():
    c = Clock()
    c.run(local(2026, 11, 21, 16), {"0246E8": {"hour": (5000, 0)}})
    c.specs = {"0246E8": parse_set("set name avm hour 10K in")}
    r = c.run(local(2026, 11, 21, 16, 0, 10), {"0246E8": {"hour": (5000, 0)}})
    assert kinds(r) == [("return", "hour", "in")] and r.unblock == ("0246E8",)
    c = Clock()
    c.run(local(2026, 11, 21, 16), {"0246E8": {"hour": (5000, 0)}})
    c.specs = {}
    r = c.run(local(2026, 11, 21, 16, 0, 10), {})
    assert r.unblock == ("0246E8",) and r.state["units"] == {}


def test_units_are_independent_and_state_survives_json():
    specs = {"0246E8": parse_set("set name avm hour 1000 in"),
             "056255": parse_set("set name AA hour 1000 in")}
    c = Clock(specs)
    r = c.run(local(2026, 11, 21, 16), {"0246E8": {"hour": (2000, 0)}, "056255": {"hour": (10, 0)}})
    assert r.block == ("0246E8",) and r.blocked == {"0246E8"}
    assert json.loads(json.dumps(r.state)) == r.state
    # a restart: the persisted state is all the check needs to not repeat the hard notice
    r = c.run(local(2026, 11, 21, 16, 5), {"0246E8": {"hour": (2100, 0)}, "056255": {"hour": (10, 0)}})
    assert r.events == () and r.block == () and r.blocked == {"0246E8"}


# --- show quota --------------------------------------------------------------------

def test_show_quota_reproduces_the_reference():
    specs = {"0246E8": parse_set("set name avm hour 300 in 800 out month 2G out"),
             "056255": parse_set("set name AA day 1M in")}
    names = {"0246E8": "avm", "056255": "AA"}
    acct = {"0246E8": ("all-ip", "tcp"), "056255": ("tcp",)}
    usage = {"0246E8": {"hour": (420, 420), "month": (0, 23352)}}
    c = Clock(specs)
    c.run(local(2026, 11, 21, 16), usage)
    rows = show_quota(specs, D, names, usage, c.state, acct)
    assert [(r.oid, r.blocked, r.acct_present, len(r.lines)) for r in rows] == \
        [("0246E8", True, True, 3), ("056255", False, False, 0)]
    assert [(ln.ratio, ln.ok) for ln in rows[0].lines] == \
        [(140.0, False), (52.5, True), (pytest.approx(100 * 23352 / (2 * G)), True)]
    assert format_show(rows) == (
        "QUOTA: avm policy all-ip set sys-deny-quota\n"
        "UNIT 0246E8 (avm) SYST: sys-deny-quota ACCT is present\n"
        "HOUR in: 420 B, quota 300 B, ratio 140.00% -> [-]\n"
        "HOUR out: 420 B, quota 800 B, ratio 52.50% -> [+]\n"
        "MONTH out: 22.8 KiB, quota 2.00 GiB, ratio 0.00% -> [+]\n"
        "QUOTA: AA policy all-ip set sys-deny-quota\n"
        "UNIT 056255 (AA) SYST: ACCT is NOT present\n")
    one = show_quota(specs, D, names, usage, c.state, acct, only="avm")
    assert [r.oid for r in one] == ["0246E8"]


def test_show_quota_list_and_options():
    specs = {"0246E8": parse_set("set name avm block-policy nonet soft-treshold 75 hour 1K in"),
             "056255": parse_set("set name AA inactive day 1M in")}
    rows = show_quota(specs, D, {"0246E8": "avm", "056255": "AA"}, {}, None)
    assert format_show(rows, list_only=True) == "UNIT 0246E8 (avm)\n"
    text = format_show(rows).splitlines()
    assert text[0] == "QUOTA: avm policy all-ip set block-policy nonet soft-treshold 75"
    assert text[2] == "HOUR in: 0 B, quota 1.00 KiB, ratio 0.00% -> [+]"
    assert "QUOTA: AA policy all-ip set sys-deny-quota inactive" in format_show(rows)
    assert format_show([]) == ""


# --- the service, in the real core (daemon_stub: no kernel) ------------------------

def test_a_quota_of_a_unit_gone_from_the_config_still_blocks_and_mails_nothing(tmp_path):
    """bob's quota outlives bob in the config (a reload dropped him); when his
    counts pass it, the block is still decided and enforce() asked, and the
    notice that has no unit to name is skipped, not an error that would
    hold up the block."""
    import numpy as np

    from acctd.config import loads
    from acctd.services.alerter import AlerterService
    from acctd.services.contract import Drain
    from acctd.services.quota import QuotaService
    from acctd.store.rollup import rollup

    from .daemon_stub import daemon_stub

    def config(*names):
        return loads('[alerter]\nsmtp-server = "127.0.0.1"\nadmins = ["noc@isp.example"]\n'
                     '[[policy]]\nname = "ip"\ntarget = "proto ip"\n' + "".join(
                         f'[[unit]]\ntype = "user"\nname = "{n}"\nacct-policy = ["ip"]\n'
                         for n in names))
    cfg = config("alice", "bob")
    now = dt.datetime(2026, 12, 2, 12, tzinfo=UTC)
    with daemon_stub(cfg, tmp_path=tmp_path, clock=lambda: now) as d:
        d.call("quota-set", argv=["bob", "day", "1K", "in"])
        bob, ip = int(d.snapshot.unit("bob").oid, 16), int(cfg.policies.policies[0].oid, 16)
        with d.lock:
            d.rebuild(cfg=config("alice"))
        assert "bob" not in [u.name for u in d.snapshot.units]
        rows = {"unit_oid": np.array([bob, bob], np.uint32),
                "policy_oid": np.array([0, ip], np.uint32),
                "dir": np.zeros(2, np.uint8), "packets": np.array([3, 3], np.uint64),
                "bytes": np.array([4 * K, 4 * K], np.uint64)}
        d.storage.commit(rollup(rows, now, d.config.processor.zone), {})
        enforced = d.enforced
        empty = np.zeros(0)
        d.service(QuotaService).after_drain(Drain(now, d.snapshot, rows, empty, empty, empty,
                                                  empty))
        assert d.service(QuotaService).held() == {f"{bob:06X}"}
        assert d.enforced == enforced + 1
        assert d.service(AlerterService).mailer.queue() == []


def test_quota_set_over_the_socket_is_exact_and_bounded(tmp_path):
    """acctctl quota set through a real control server into real storage:
    1.5G is stored as the integer 1610612736; an amount over 1 EiB is a bad
    request with one line, and nothing is stored."""
    from click.testing import CliRunner

    from acctctl.main import main
    from acctd.config import loads
    from acctd.control import server as ctl
    from acctd.control.client import call
    from acctd.errors import Code, code_of

    from .daemon_stub import ALICE, daemon_stub

    with daemon_stub(loads(ALICE), tmp_path=tmp_path) as d:
        srv = ctl.ControlServer(str(tmp_path / "ctl.sock"), d.dispatcher)
        srv.serve_in_thread()
        try:
            ok = CliRunner().invoke(main, ["--socket", srv.path, "quota", "set", "alice",
                                           "day", "1.5G", "in"])
            assert ok.exit_code == 0, ok.output
            oid = d.snapshot.unit("alice").oid
            assert d.storage.quotas()[oid]["limits"] == {"day in": 1610612736}
            bad = CliRunner().invoke(main, ["--socket", srv.path, "quota", "set", "alice",
                                            "month", "99999999999999999999999G", "in"])
            assert (bad.exit_code, bad.output) == (1, (
                "acctctl: expected an amount in bytes like 300, 3M or 1.5G, at most "
                "1073741824G (1 EiB), got '99999999999999999999999G'\n"))
            assert d.storage.quotas()[oid]["limits"] == {"day in": 1610612736}
            with pytest.raises(Exception) as e:  # the reply's code, as any client sees it
                call(srv.path, "quota-set", argv=["alice", "day", "1073741825G", "in"])
            assert code_of(e.value) == Code.BAD_REQUEST
        finally:
            srv.shutdown()
            srv.server_close()
