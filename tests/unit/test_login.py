"""The login service: set grammar and bounds, replies, timeouts, blocking, hook, show."""

import datetime as dt
import json

import pytest
from argon2 import PasswordHasher

from acctd.errors import NotFound
from acctd.services import login
from acctd.services.login import LoginError, LoginRecord, LoginTable, LoginSettings

T0 = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
UNITS = {"r546-1": "0246E8", "anb1": "022EB1", "nolog": "0A0001"}
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def at(s: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=s)


def find(key):
    return UNITS.get(key) or (key.upper() if key.upper() in UNITS.values() else None)


def service(hook=None, hasher=CHEAP, **settings):
    return LoginTable(LoginSettings(**settings), find, hasher=hasher, on_attempt=hook)


@pytest.fixture
def svc():
    s = service()
    s.set("r546-1", ["password", "123456"], now=T0)
    return s


# --- settings ----------------------------------------------------------------------

def test_settings_defaults_are_the_references():
    s = LoginSettings.from_mapping({})
    assert (s.default_inact, s.default_abs, s.min_inact, s.max_inact, s.min_abs, s.max_abs,
            s.min_passwd_length, s.delay, s.relogin, s.set_user_ip) == \
        (0, 0, 60, 43200, 60, 1036800, 3, 10, True, False)


def test_settings_from_mapping_both_spellings_and_netams_words():
    s = LoginSettings.from_mapping({"default-inact": 600, "max_inact": 3600,
                                    "min-passwd-length": 6, "relogin": "no",
                                    "set-user-ip": 1, "delay": 5,
                                    "units": {"h": {"password": "x"}}})
    assert (s.default_inact, s.max_inact, s.min_passwd_length, s.relogin, s.set_user_ip,
            s.delay) == (600, 3600, 6, False, True, 5)
    assert LoginSettings.from_mapping({"relogin": False, "set-user-ip": "yes"}).set_user_ip


@pytest.mark.parametrize("table, key", [
    ({"default-inact": -1}, "default-inact"),
    ({"default-inact": "600"}, "default-inact"),
    ({"max-abs": True}, "max-abs"),
    ({"relogin": "maybe"}, "relogin"),
    ({"min_inact": 100, "max_inact": 50}, "min_inact"),
    ({"default-inact": 30}, "default-inact"),        # below min-inact: set would refuse it
    ({"default-abs": 2_000_000}, "default-abs"),     # above max-abs
    ({"min-passwd-length": 0}, "min-passwd-length"),
    ({"delay": 0}, "delay"),
    ({"storage": 2}, "storage"),
    ({"max-inact": 100, "max_inact": 200}, "max_inact"),
    ({"units": 3}, "units"),
])
def test_settings_errors_name_the_key(table, key):
    with pytest.raises(ValueError, match=key):
        LoginSettings.from_mapping(table)


def test_config_sets_carries_raw_set_lines_only():
    table = {"units": {"h": {"password": "unitpw", "mac": "00:11:22:33:44:55"},
                       "r546-1": {"raw": ["password 123456 inact 300", "strict"]}}}
    assert login.config_sets(table["units"]) == [
        ("r546-1", [["password", "123456", "inact", "300"], ["strict"]])]


# --- set ---------------------------------------------------------------------------

def test_set_stores_an_argon2id_hash_never_the_password(svc):
    rec = svc.get("0246E8")
    assert rec.password.startswith("$argon2id$") and "123456" not in rec.password
    assert "123456" not in json.dumps(svc.to_dict())
    assert CHEAP.verify(rec.password, "123456")
    assert rec.last_changed == T0 and rec.curr_state == "closed"


def test_set_defaults_for_new_records_and_keeps_values_on_existing():
    s = service(default_inact=600, default_abs=7200)
    rec = s.set("anb1", ["password", "secret", "inact", "120"], now=T0)
    assert (rec.inact, rec.abs) == (120, 7200)
    rec = s.set("022eb1", ["password", "other"], now=at(5))  # by oid, any case
    assert (rec.inact, rec.abs, rec.last_changed) == (120, 7200, at(5))
    assert CHEAP.verify(rec.password, "other")
    rec = s.set("anb1", ["abs", "0", "mac", "0A-0B-0C-0D-0E-0F", "strict"], now=at(6))
    assert (rec.abs, rec.mac, rec.strict) == (0, "0a:0b:0c:0d:0e:0f", True)
    rec = s.set("anb1", ["nostrict", "mac", "none"], now=at(7))
    assert (rec.mac, rec.strict) == (None, False)


@pytest.mark.parametrize("words, message", [
    (["password", "12"], "at least 3 characters"),
    (["password", "123456", "inact", "59"], "inact must be 0 .* between 60 and 43200"),
    (["password", "123456", "inact", "43201"], "between 60 and 43200"),
    (["password", "123456", "abs", "1036801"], "abs must be 0 .* between 60 and 1036800"),
    (["password", "123456", "abs", "-5"], "whole number"),
    (["password", "123456", "inact"], "inact needs a value"),
    (["password", "123456", "mac", "00:11:22"], "mac: expected a MAC like"),
    (["password", "123456", "strict"], "strict needs a bound mac"),
    (["password", "123456", "quota", "1"], "unexpected word 'quota'"),
    (["inact", "600"], "set a password"),
])
def test_set_errors(words, message):
    s = service()
    with pytest.raises(LoginError, match=message):
        s.set("anb1", words, now=T0)
    assert s.get("022EB1") is None


def test_set_bounds_and_password_length_follow_the_settings():
    s = service(min_inact=10, max_inact=20, min_passwd_length=8)
    with pytest.raises(LoginError, match="at least 8"):
        s.set("anb1", ["password", "1234567"], now=T0)
    with pytest.raises(LoginError, match="between 10 and 20"):
        s.set("anb1", ["password", "12345678", "inact", "21"], now=T0)
    assert s.set("anb1", ["password", "12345678", "inact", "0"], now=T0).inact == 0  # 0 = off


def test_set_unknown_unit_and_failed_set_changes_nothing(svc):
    with pytest.raises(NotFound, match="^unknown unit 'nosuch'$"):
        svc.set("nosuch", ["password", "123456"], now=T0)
    before = svc.get("0246E8")
    with pytest.raises(LoginError):
        svc.set("r546-1", ["password", "abcdef", "inact", "1"], now=at(1))
    assert svc.get("0246E8") == before


# --- replies -----------------------------------------------------------------------

def test_reply_unknown_unit(svc):
    r = svc.login("r546-1a", "123456", now=T0)
    assert (r.ok, r.code, r.reason, r.oid) == (False, "unknown-unit", "unknown unit", None)
    assert r.reply == "FAIL: unit with name=r546-1a is not exist"
    assert svc.login("0FFFFF", "x", now=T0, by="oid").reply == \
        "FAIL: unit with oid=0FFFFF is not exist"


def test_reply_wrong_password(svc):
    r = svc.login("r546-1", "123", now=T0)
    assert (r.ok, r.code, r.reason, r.oid) == (False, "wrong-password", "wrong password", "0246E8")
    assert r.reply == "FAIL: password incorrect"


def test_reply_success_defaults_address_and_mac(svc):
    r = svc.login("r546-1", "123456", now=T0)
    assert (r.ok, r.code, r.reason, r.oid) == (True, "ok", "login success", "0246E8")
    assert r.reply == "OK: login success from ip:0.0.0.0, mac:00:00:00:00:00:00"
    assert (r.addr, r.mac, r.bind, r.relogin) == (None, None, None, False)


def test_reply_success_with_address_and_mac(svc):
    r = svc.login("r546-1", "123456", "10.0.0.5", "00-1A-2B-3C-4D-5E", now=T0)
    assert r.reply == "OK: login success from ip:10.0.0.5, mac:00:1a:2b:3c:4d:5e"
    rec = svc.get("0246E8")
    assert (rec.curr_state, rec.opened_at, rec.addr, rec.mac_seen) == \
        ("opened", T0, "10.0.0.5", "00:1a:2b:3c:4d:5e")


def test_reply_unit_without_login_record(svc):
    r = svc.login("nolog", "whatever", now=T0)
    assert (r.ok, r.code, r.oid) == (False, "no-login", "0A0001")
    assert r.reply == "FAIL: login is not set for unit nolog"


def test_logout_replies(svc):
    svc.login("r546-1", "123456", "10.0.0.5", now=T0)
    assert svc.logout("r546-1", "nope", now=at(1)).reply == "FAIL: password incorrect"
    assert svc.get("0246E8").opened
    r = svc.logout("r546-1", "123456", "10.0.0.5", now=at(2))
    assert (r.ok, r.reason, r.reply) == \
        (True, "logout success", "OK: logout success from ip:10.0.0.5, mac:00:00:00:00:00:00")
    assert svc.get("0246E8").curr_state == "closed" and svc.blocked() == {"0246E8"}
    assert svc.logout("r546-1", "123456", now=at(3)).ok  # again: still fine for scripts
    assert svc.logout("ghost", "x", now=at(3)).code == "unknown-unit"


def test_malformed_arguments_are_command_errors(svc):
    calls = []
    svc.on_attempt = lambda *a: calls.append(a)
    with pytest.raises(LoginError, match="IP address"):
        svc.login("r546-1", "123456", "10.0.0.300", now=T0)
    with pytest.raises(LoginError, match="mac: expected a MAC like"):
        svc.login("r546-1", "123456", mac="zz:zz", now=T0)
    assert calls == [] and not svc.get("0246E8").opened


# --- what a failure leaves alone ---------------------------------------------------

def test_wrong_password_changes_nothing(svc):
    svc.login("r546-1", "123456", "10.0.0.5", "00:00:00:00:00:01", now=T0)
    svc.expire(at(10), {"0246E8": at(9)})
    before = svc.get("0246E8")
    assert before.last_used == at(9)
    r = svc.login("r546-1", "wrong", "10.9.9.9", "00:00:00:00:00:02", now=at(20))
    assert not r.ok and svc.get("0246E8") == before
    svc.logout("r546-1", "123456", now=at(30))
    closed = svc.get("0246E8")
    svc.login("r546-1", "wrong", "10.9.9.9", now=at(40))
    assert svc.get("0246E8") == closed and svc.blocked() == {"0246E8"}


# --- relogin and strict MAC --------------------------------------------------------

def test_relogin_allowed_by_default_restarts_the_opening(svc):
    svc.login("r546-1", "123456", "10.0.0.5", now=T0)
    svc.expire(at(5), {"0246E8": at(4)})
    r = svc.login("r546-1", "123456", "10.0.0.6", now=at(10))
    assert r.ok and r.relogin
    rec = svc.get("0246E8")
    assert (rec.opened_at, rec.addr, rec.last_used) == (at(10), "10.0.0.6", None)


def test_relogin_no_refuses_a_logged_in_unit():
    s = service(relogin=False)
    s.set("r546-1", ["password", "123456"], now=T0)
    assert s.login("r546-1", "123456", "10.0.0.5", now=T0).ok
    r = s.login("r546-1", "123456", "10.0.0.6", now=at(1))
    assert (r.ok, r.code, r.reason, r.reply) == \
        (False, "already-logged-in", "already logged in", "FAIL: already logged in")
    assert s.get("0246E8").addr == "10.0.0.5" and s.get("0246E8").opened_at == T0
    s.logout("r546-1", "123456", now=at(2))
    assert s.login("r546-1", "123456", now=at(3)).ok


def test_strict_mac():
    s = service()
    s.set("r546-1", ["password", "123456", "mac", "00:11:22:33:44:55", "strict"], now=T0)
    for mac in (None, "00:11:22:33:44:56"):
        r = s.login("r546-1", "123456", "10.0.0.5", mac, now=T0)
        assert (r.ok, r.code, r.reason, r.reply) == \
            (False, "mac-mismatch", "mac mismatch", "FAIL: mac address mismatch")
    assert s.blocked() == {"0246E8"}
    # a wrong password is reported as such, whatever the MAC: the binding is not given away
    assert s.login("r546-1", "bad", mac="00:00:00:00:00:01", now=T0).code == "wrong-password"
    assert s.login("r546-1", "123456", mac="00-11-22-33-44-55", now=T0).ok
    s.set("r546-1", ["nostrict"], now=at(1))
    s.logout("r546-1", "123456", now=at(1))
    assert s.login("r546-1", "123456", mac="00:00:00:00:00:09", now=at(2)).ok


# --- set-user-ip ---------------------------------------------------------------------

def test_set_user_ip_binds_on_login_and_unbinds_on_logout():
    s = service(set_user_ip=True)
    s.set("r546-1", ["password", "123456"], now=T0)
    assert s.login("r546-1", "123456", now=T0).bind is None  # no address given
    assert s.login("r546-1", "123456", "10.0.0.5", now=T0).bind == "10.0.0.5"
    assert s.logout("r546-1", "123456", now=at(1)).unbind
    assert not s.logout("r546-1", "123456", now=at(2)).unbind  # was not logged in
    assert service().login("r546-1", "x", "10.0.0.5", now=T0).bind is None


def test_ipv6_address_is_normalised(svc):
    r = svc.login("r546-1", "123456", "2001:DB8::0:1", now=T0)
    assert r.addr == "2001:db8::1" and r.reply.startswith("OK: login success from ip:2001:db8::1,")


# --- timeouts, state and blocking --------------------------------------------------

def test_blocked_before_login_after_login_after_timeouts():
    s = service()
    s.set("r546-1", ["password", "123456", "inact", "60", "abs", "0"], now=T0)
    s.set("anb1", ["password", "abcdef", "inact", "0", "abs", "120"], now=T0)
    assert s.blocked() == {"0246E8", "022EB1"}  # "nolog" has no record: not ours to block
    s.login("r546-1", "123456", now=T0)
    s.login("anb1", "abcdef", now=T0)
    assert s.blocked() == set()
    assert s.expire(at(59)) == []
    assert s.expire(at(60)) == [("0246E8", "inactivity")]
    assert s.blocked() == {"0246E8"}
    assert s.expire(at(120)) == [("022EB1", "absolute")]
    assert s.blocked() == {"0246E8", "022EB1"}
    assert s.expire(at(500)) == []  # closed units do not expire twice


def test_inactivity_is_measured_from_the_last_counted_packet(svc):
    svc.set("r546-1", ["inact", "60"], now=T0)
    svc.login("r546-1", "123456", now=at(100))
    # a packet from before the login does not count: inactivity starts at the opening
    assert svc.expire(at(150), {"0246E8": at(50)}) == []
    assert svc.get("0246E8").last_used is None
    assert svc.expire(at(155), {"0246E8": at(140)}) == []
    assert svc.get("0246E8").last_used == at(140)
    assert svc.expire(at(199), {"0246E8": at(140)}) == []  # 59 s idle
    # last_seen missing this round: the remembered packet still counts
    assert svc.expire(at(199.5), {}) == []
    e = svc.expire(at(200), {"0246E8": at(140)})
    assert e == [("0246E8", "inactivity")] and (e[0].oid, e[0].cause) == ("0246E8", "inactivity")


def test_no_packets_means_inactivity_from_the_opening(svc):
    svc.set("r546-1", ["inact", "60"], now=T0)
    svc.login("r546-1", "123456", now=T0)
    assert svc.expire(at(60), {"0246E8": None}) == [("0246E8", "inactivity")]


def test_absolute_timeout_counts_from_the_opening_whatever_the_traffic(svc):
    svc.set("r546-1", ["inact", "60", "abs", "120"], now=T0)
    svc.login("r546-1", "123456", now=T0)
    for t in range(10, 120, 10):
        assert svc.expire(at(t), {"0246E8": at(t)}) == []
    assert svc.expire(at(120), {"0246E8": at(120)}) == [("0246E8", "absolute")]


def test_curr_state_is_reset_on_timeout(svc):
    svc.set("r546-1", ["abs", "60"], now=T0)
    svc.login("r546-1", "123456", "10.0.0.5", now=T0)
    assert svc.to_dict()["0246E8"]["curr_state"] == "opened"
    svc.expire(at(60))
    d = svc.to_dict()["0246E8"]
    # the reference's bug: curr_state stayed 1 after a timeout. The opening stays as history.
    assert d["curr_state"] == "closed"
    assert (d["opened_at"], d["addr"]) == (T0.isoformat(), "10.0.0.5")
    assert svc.login("r546-1", "123456", now=at(61)).relogin is False


def test_zero_timeouts_never_expire(svc):
    svc.set("r546-1", ["inact", "0", "abs", "0"], now=T0)
    svc.login("r546-1", "123456", now=T0)
    assert svc.expire(at(10 ** 7)) == [] and svc.blocked() == set()


def test_close_and_remove(svc):
    calls = []
    svc.on_attempt = lambda *a: calls.append(a)
    assert not svc.close("0246E8")
    svc.login("r546-1", "123456", now=T0)
    assert svc.close("0246E8") and svc.blocked() == {"0246E8"}
    assert svc.remove("0246E8") and not svc.remove("0246E8")
    assert svc.blocked() == set() and len(calls) == 1  # close is not an attempt


# --- the hook ------------------------------------------------------------------------

def test_hook_gets_every_attempt():
    calls = []
    s = service(hook=lambda *a: calls.append(a), relogin=False)
    s.set("r546-1", ["password", "123456", "mac", "00:11:22:33:44:55", "strict"], now=T0)
    s.login("ghost", "x", "10.0.0.1", now=at(1))
    s.login("nolog", "x", now=at(2))
    s.login("r546-1", "bad", "10.0.0.5", now=at(3))
    s.login("r546-1", "123456", "10.0.0.5", "00:11:22:33:44:66", now=at(4))
    s.login("r546-1", "123456", "10.0.0.5", "00:11:22:33:44:55", now=at(5))
    s.login("r546-1", "123456", "10.0.0.5", "00:11:22:33:44:55", now=at(6))
    s.logout("r546-1", "bad", now=at(7))
    s.logout("r546-1", "123456", "10.0.0.5", now=at(8))
    assert calls == [
        ("ghost", False, "unknown unit", "10.0.0.1", None, at(1)),
        ("0A0001", False, "no login", None, None, at(2)),
        ("0246E8", False, "wrong password", "10.0.0.5", None, at(3)),
        ("0246E8", False, "mac mismatch", "10.0.0.5", "00:11:22:33:44:66", at(4)),
        ("0246E8", True, "login success", "10.0.0.5", "00:11:22:33:44:55", at(5)),
        ("0246E8", False, "already logged in", "10.0.0.5", "00:11:22:33:44:55", at(6)),
        ("0246E8", False, "wrong password", None, None, at(7)),
        ("0246E8", True, "logout success", "10.0.0.5", None, at(8)),
    ]


# --- show login ----------------------------------------------------------------------

def test_show_deadlines_in_words():
    s = service()
    s.set("r546-1", ["password", "123456", "inact", "0", "abs", "120"], now=T0)
    s.set("anb1", ["password", "abcdef", "inact", "60", "abs", "0"], now=T0)
    s.login("r546-1", "123456", "10.0.0.5", now=T0)
    s.login("anb1", "abcdef", now=at(8))
    s.expire(at(10), {"022EB1": at(9)})
    rows = s.show(at(14))
    assert [(r.oid, r.opened_ago, r.last_used_ago, r.abs_in, r.inact_in) for r in rows] == [
        ("022EB1", 6, 5, None, 55),
        ("0246E8", 14, None, 106, None),
    ]
    assert rows[1].abs_at == at(120) and rows[1].inact_at is None and rows[1].addr == "10.0.0.5"
    assert rows[0].inact_at == at(69)
    names = {v: k for k, v in UNITS.items()}
    assert login.format_show(rows, names.get) == (
        "anb1 (022EB1) opened 6 sec. ago, last used 5 sec. ago\n"
        "\tabsolute timeout off, inactivity timeout in 55 sec.\n"
        "r546-1 (0246E8) opened 14 sec. ago, no traffic counted since\n"
        "\tabsolute timeout in 106 sec., inactivity timeout off")
    json.dumps([r.to_dict() for r in rows])


def test_show_lists_every_record_or_one_unit_in_any_state(svc):
    assert [(r.oid, r.state) for r in svc.show(T0)] == [("0246E8", "closed")]
    (row,) = svc.show(T0, "0246E8")
    assert (row.state, row.opened_ago) == ("closed", None)
    assert login.format_show([row]) == "0246E8 (0246E8) closed, never opened"
    svc.login("r546-1", "123456", now=T0)
    svc.logout("r546-1", "123456", now=at(5))
    (row,) = svc.show(at(30), "0246E8")
    assert login.format_show([row]) == "0246E8 (0246E8) closed, last opened 30 sec. ago"
    assert svc.show(T0, "0A0001") == []


def test_show_clamps_overdue_deadlines_to_zero(svc):
    svc.set("r546-1", ["abs", "60"], now=T0)
    svc.login("r546-1", "123456", now=T0)
    assert svc.show(at(90))[0].abs_in == 0  # expire has not run yet


# --- persistence ---------------------------------------------------------------------

def test_to_dict_from_dict_round_trip(svc):
    svc.set("anb1", ["password", "abcdef", "inact", "60", "mac", "00:11:22:33:44:55",
                     "strict"], now=T0)
    svc.login("anb1", "abcdef", "10.0.0.7", "00:11:22:33:44:55", now=at(1))
    svc.expire(at(5), {"022EB1": at(4)})
    d = json.loads(json.dumps(svc.to_dict()))
    again = service()
    again.load(d)
    assert again.records == svc.records
    assert again.blocked() == {"0246E8"}
    assert again.login("anb1", "abcdef", mac="00:11:22:33:44:55", now=at(6)).ok
    assert LoginRecord.from_dict(svc.get("0246E8").to_dict()) == svc.get("0246E8")


@pytest.mark.parametrize("change, message", [
    ({"password": "123456"}, "argon2id"),
    ({"curr_state": "1"}, "curr_state"),
    ({"inact": -1}, "inact"),
    ({"opened_at": "yesterday"}, "opened_at"),
    ({"strict": True}, "strict"),
    ({"color": "red"}, "color"),
])
def test_from_dict_rejects_bad_records(svc, change, message):
    d = svc.get("0246E8").to_dict() | change
    with pytest.raises(ValueError, match=message):
        LoginRecord.from_dict(d)


def test_load_rejects_a_record_under_another_oid(svc):
    with pytest.raises(ValueError, match="holds oid"):
        service().load({"022EB1": svc.get("0246E8").to_dict()})


def test_a_hash_with_old_parameters_is_upgraded_on_login(svc):
    old = svc.get("0246E8").password
    stronger = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    s = LoginTable(LoginSettings(), find, [svc.get("0246E8")], hasher=stronger)
    assert s.login("r546-1", "123456", now=T0).ok
    new = s.get("0246E8").password
    assert new != old and not stronger.check_needs_rehash(new)
    assert stronger.verify(new, "123456")
    assert s.login("r546-1", "bad", now=T0).code == "wrong-password"


def test_the_default_hasher_is_argon2id_with_default_parameters():
    h = LoginTable(find=find).hasher
    assert isinstance(h, PasswordHasher) and h.time_cost == PasswordHasher().time_cost


def test_sys_deny_auth_refuses_a_login_with_the_right_password():
    """sys-deny-auth blocks the unit and its logins: the password is right,
    the login fails until sys-allow-auth; the other reasons leave logins be."""
    from acctd.config import loads
    from acctd.services.login import LoginService

    from .daemon_stub import daemon_stub
    cfg = loads('[[unit]]\ntype = "host"\nname = "ana"\nip = "10.0.0.5"\n'
                'sys-policy = ["sys-deny-auth"]\n')
    with daemon_stub(cfg) as d:
        d.service(LoginService).table.hasher = CHEAP
        d.call("login-set", unit="ana", words=["password", "secret"])
        r = d.call("login", unit="ana", password="secret")
        assert (r["ok"], r["code"], r["reply"]) == \
            (False, "auth-denied", "FAIL: authentication denied (sys-deny-auth)")
        got = d.call("sys-policy", unit="ana", policy="sys-allow-auth")
        assert got["sys_policy"] == ["sys-deny-login"]   # the record's own block stays
        assert d.call("login", unit="ana", password="secret")["ok"]
