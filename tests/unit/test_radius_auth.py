"""RADIUS authorization (acctd.aaa.radius_auth) without sockets: the
daemon's services over real storage (daemon_stub) decide Access-Requests
built with acctd.aaa.radius; every outcome, the reply's attributes and
signatures, the retransmission cache, F-TICKS lines, and hostile input.
Against FreeRADIUS's radclient and radtest: tests/radius."""

import logging
import os

import pytest
from argon2 import PasswordHasher

from acctd.aaa import radius
from acctd.aaa.coa import parse_rate_limit
from acctd.aaa.radius_auth import AuthReceiver, RadiusAuthService, Verdict
from acctd.config import loads
from acctd.kernel.abi import SysPolicy
from acctd.services.login import LoginService
from .daemon_stub import daemon_stub

SECRET = b"auth secret / 2865"
SRC = ("127.0.0.1", 40000)
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)

CONFIG = """
[processor]
auto-assign = ["10.9.0.10 10.9.0.11"]
[[policy]]
name = "ip"
target = "proto ip"
[[unit]]
type = "user"
name = "alice"
acct-policy = ["ip"]
bw = "4M in 1M out"
[[unit]]
type = "host"
name = "pc"
ip = "10.1.0.5"
mac = "00:11:22:33:44:55"
[[unit]]
type = "user"
name = "bob"
[radius-auth]
listen = "127.0.0.1:0"
clients = [{{ address = "127.0.0.1", secret-file = "{secret}" }}]
interim-interval = 120
session-timeout = 3600
[fticks]
federation = "acctd"
file = "{fticks}"
raw-values = true
ap = "acctd.example"
"""


@pytest.fixture
def stub(tmp_path):
    secret = tmp_path / "auth.secret"
    secret.write_bytes(SECRET + b"\n")
    secret.chmod(0o600)
    cfg = loads(CONFIG.format(secret=secret, fticks=tmp_path / "fticks.log"), "t.toml")
    with daemon_stub(cfg, tmp_path=tmp_path) as d:
        d.service(LoginService).table.hasher = CHEAP
        for unit, pw in (("alice", "alice-pw"), ("pc", "pc-pw"), ("bob", "bob-pw")):
            d.call("login-set", unit=unit, words=["password", pw])
        d.drain_locked = lambda: {}   # no kernel: a binding change has nothing to drain
        d.fticks = tmp_path / "fticks.log"
        yield d


def receiver(d) -> AuthReceiver:
    svc = d.service(RadiusAuthService)
    return AuthReceiver(svc.settings, svc)


def ask(r, user, password, *attrs, ident=1, secret=SECRET, src=SRC, **kw):
    req = radius.access_request(ident, os.urandom(16), [("User-Name", user), *attrs], secret,
                                password=password, **kw)
    return req, r.handle(req, src)


def reply(req, out):
    p = radius.verify_response(out.reply, req, SECRET, require_message_authenticator=True)
    assert p.attributes[0][0] == radius.MESSAGE_AUTHENTICATOR   # first, as BlastRADIUS advises
    return p


def vsas(p):
    return dict(sub for raw in p.raw("Vendor-Specific") for sub in radius.decode_vsa(raw)[1])


def test_accept_carries_rate_pool_address_timeouts_and_opens_the_session(stub):
    r = receiver(stub)
    req, out = ask(r, "alice", "alice-pw", ("NAS-Identifier", "nas-7"))
    assert out.kind == "accept", out
    p = reply(req, out)
    assert p.code == radius.ACCESS_ACCEPT
    assert str(p.get("Framed-IP-Address")) == "10.9.0.10"      # the first free pool address
    assert (p.get("Session-Timeout"), p.get("Acct-Interim-Interval")) == (3600, 120)
    v = vsas(p)
    assert (v["WISPr-Bandwidth-Max-Down"], v["WISPr-Bandwidth-Max-Up"]) == (4_000_000, 1_000_000)
    # the CoA receiver reads the Mikrotik rate back as the same (in, out)
    assert parse_rate_limit(v["Mikrotik-Rate-Limit"]) == (4_000_000, 1_000_000)
    (s,) = stub.call("session-list", open=True)
    assert (s["user"], s["addr"]) == ("alice", "10.9.0.10")
    assert "alice" not in str(stub.service(LoginService).blocks())    # logged in
    line = stub.fticks.read_text().splitlines()[-1]
    assert "#RESULT=OK#PN=alice#AP=acctd.example#RP=nas-7#AN=radius#" in line
    # bob gets the next address of the pool
    req, out = ask(r, "bob", "bob-pw")
    assert str(reply(req, out).get("Framed-IP-Address")) == "10.9.0.11"


def test_wrong_password_and_unknown_user_get_one_message(stub):
    r = receiver(stub)
    for user, pw in (("alice", "nope"), ("mallory", "x"), ("alice", "alice-pw" + "x")):
        req, out = ask(r, user, pw)
        p = reply(req, out)
        assert (p.code, p.get("Reply-Message")) == (radius.ACCESS_REJECT,
                                                    "wrong user name or password")
    assert stub.call("session-list", open=True) == []
    lines = stub.fticks.read_text().splitlines()
    assert len(lines) == 3 and all("#RESULT=FAIL#" in x and "#RP=127.0.0.1#" in x for x in lines)


@pytest.mark.parametrize("word, why", [("sys-deny", "blocked: deny"),
                                       ("sys-deny-quota", "blocked: quota"),
                                       ("sys-deny-money", "blocked: money")])
def test_blocked_unit_is_rejected_saying_why(stub, word, why):
    stub.set_sys_policy("alice", word)
    r = receiver(stub)
    req, out = ask(r, "alice", "alice-pw")
    p = reply(req, out)
    assert (p.code, p.get("Reply-Message")) == (radius.ACCESS_REJECT, why)
    assert stub.call("session-list", open=True) == []
    # its login block stays: a reject does not log in
    assert stub.service(LoginService).blocks()[stub.snapshot.unit("alice").oid] == \
        SysPolicy.LOGIN
    # a wrong password says nothing of the block
    req, out = ask(r, "alice", "wrong")
    assert reply(req, out).get("Reply-Message") == "wrong user name or password"


def test_the_units_mac_must_be_the_calling_station(stub):
    r = receiver(stub)
    for csi in (None, "00-11-22-33-44-66", "junk"):
        attrs = [("Calling-Station-Id", csi)] if csi else []
        req, out = ask(r, "pc", "pc-pw", *attrs)
        p = reply(req, out)
        assert p.code == radius.ACCESS_REJECT
        assert p.get("Reply-Message") == f"MAC mismatch: Calling-Station-Id {csi or 'missing'}"
    req, out = ask(r, "pc", "pc-pw", ("Calling-Station-Id", "00-11-22-33-44-55"))
    p = reply(req, out)
    assert p.code == radius.ACCESS_ACCEPT and str(p.get("Framed-IP-Address")) == "10.1.0.5"


def test_blastradius_unlisted_malformed_and_wrong_secret_get_no_reply(stub, caplog):
    r = receiver(stub)
    _, out = ask(r, "alice", "alice-pw", with_message_authenticator=False)
    assert (out.kind, out.reason) == ("discard", "no-message-authenticator")
    _, out = ask(r, "alice", "alice-pw", secret=b"other secret")
    assert (out.kind, out.reason) == ("discard", "bad-message-authenticator")
    _, out = ask(r, "alice", "alice-pw", src=("127.0.0.2", 40000))
    assert (out.kind, out.reason) == ("discard", "unlisted-source")
    # a flood of junk: never raises, one log line a minute for each reason
    caplog.set_level(logging.WARNING, "acctd.radius_auth")
    caplog.clear()
    for n in range(2000):
        out = r.handle(os.urandom(n % 300), SRC)
        assert out.reply is None
    assert sum(r.stats.values()) == 2003
    assert len([x for x in caplog.records if x.name == "acctd.radius_auth"]) <= 3
    assert stub.call("session-list", open=True) == []


def test_chap_is_refused_and_a_retransmission_gets_the_cached_reply(stub):
    r = receiver(stub)
    req, out = ask(r, "alice", None, ("CHAP-Password", bytes(17)), ("CHAP-Challenge", bytes(16)))
    assert reply(req, out).get("Reply-Message").startswith("CHAP is not accepted")
    req, first = ask(r, "alice", "alice-pw")
    lines = len(stub.fticks.read_text().splitlines())
    again = r.handle(req, SRC)
    assert (again.kind, again.reply) == ("resend", first.reply)
    assert len(stub.fticks.read_text().splitlines()) == lines       # not decided again
    assert len(stub.call("session-list", open=True)) == 1


def test_an_account_source_is_asked_first(stub):
    svc = stub.service(RadiusAuthService)
    svc.sources.append(lambda req: Verdict(True, "", (("Session-Timeout", 60),))
                       if req.user == "acct-42" else None)
    r = receiver(stub)
    req, out = ask(r, "acct-42", "whatever")
    assert reply(req, out).get("Session-Timeout") == 60
    req, out = ask(r, "alice", "alice-pw")
    assert reply(req, out).code == radius.ACCESS_ACCEPT


def test_settings_need_clients_and_owner_only_secrets(tmp_path):
    from acctd.errors import ConfigError
    secret = tmp_path / "s"
    secret.write_text("x\n")
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match="accessible by group or others"):
        loads(f'[radius-auth]\nclients = [{{ address = "127.0.0.1", secret-file = "{secret}" }}]\n')
    with pytest.raises(ConfigError, match="key 'clients': expected a list of"):
        loads("[radius-auth]\nclients = []\n")


def test_login_rules_abs_timeout_and_a_coa_rate_reach_the_reply(tmp_path):
    """relogin = no refuses a second Accept; the record's abs is the
    Session-Timeout; a rate a CoA set replaces the unit's bw."""
    from acctd.aaa.coa import CoaService
    secret = tmp_path / "auth.secret"
    secret.write_bytes(SECRET + b"\n")
    secret.chmod(0o600)
    cfg = loads(CONFIG.format(secret=secret, fticks=tmp_path / "fticks.log")
                + "[login]\nrelogin = false\n", "t.toml")
    with daemon_stub(cfg, tmp_path=tmp_path) as d:
        d.drain_locked = lambda: {}
        d.service(LoginService).table.hasher = CHEAP
        d.call("login-set", unit="pc", words=["password", "pc-pw", "abs", "900"])
        d.service(CoaService).rates[d.snapshot.unit("pc").oid] = [2_000_000, 500_000]
        r = receiver(d)
        mac = ("Calling-Station-Id", "00:11:22:33:44:55")
        req, out = ask(r, "pc", "pc-pw", mac)
        p = reply(req, out)
        assert (p.code, p.get("Session-Timeout")) == (radius.ACCESS_ACCEPT, 900)
        v = vsas(p)
        assert (v["WISPr-Bandwidth-Max-Down"], v["WISPr-Bandwidth-Max-Up"]) == (2_000_000,
                                                                                500_000)
        req, out = ask(r, "pc", "pc-pw", mac)
        assert reply(req, out).get("Reply-Message") == "already logged in"
