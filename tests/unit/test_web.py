"""The web console against the real daemon core, storage and control
socket (no kernel): the daemon checks each person's password and runs
their requests at their own level (acctd/control/delegation.py); a
subscriber sees only their own unit; logins, cookies and CSRF; downloads
carry the numbers of `acctctl --json`. The browser tier is
tests/netns/test_web_browser.py."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import os
import shutil
import tempfile
import time

import numpy as np
import pytest
from argon2 import PasswordHasher

from acctd.config import loads
from acctd.control import client
from acctd.control import server as ctl
from acctd.control.delegation import AttemptLimit, Delegations
from acctd.control.access import Level
from acctd.errors import BadRequest, PermissionDenied
from acctd.store.rollup import rollup
from acctd.web import metrics
from acctd.web.app import Daemon, create_app

from .daemon_stub import ALICE, daemon_stub

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 12, 2, 12, 30, tzinfo=UTC)
HASH = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
CONFIG = f"""
[[user]]
name = "ops"
level = "operator"
password = "{HASH.hash('ops-secret')}"
[[user]]
name = "watcher"
level = "viewer"
password = "{HASH.hash('watch-secret')}"
[[user]]
name = "nobody"
level = "viewer"
uid = 65534
""" + ALICE + '[[unit]]\ntype = "user"\nname = "bob"\nacct-policy = ["ip"]\n'


@pytest.fixture
def console():
    """A daemon (stub: real core, storage, dispatcher, socket) with two
    days of traffic for alice and bob, logins for both, and the console."""
    tmp = tempfile.mkdtemp(prefix="acctd-web-")
    os.chmod(tmp, 0o755)
    clock = [NOW]
    with daemon_stub(loads(CONFIG, "t.toml"), clock=lambda: clock[0]) as d:
        ip = int(d.snapshot.policies.policies[0].oid, 16)
        alice, bob = (int(d.snapshot.unit(n).oid, 16) for n in ("alice", "bob"))
        for when, a_in, b_in in ((NOW - dt.timedelta(days=1), 7000, 500),
                                 (NOW - dt.timedelta(hours=2), 3000, 1000), (NOW, 1234, 0)):
            rows = {"unit_oid": np.array([alice, alice, alice, bob, bob], np.uint32),
                    "policy_oid": np.array([0, ip, 0, 0, ip], np.uint32),
                    "dir": np.array([0, 0, 1, 0, 0], np.uint8),
                    "packets": np.array([5, 5, 2, 1, 1], np.uint64),
                    "bytes": np.array([a_in, a_in, 100, b_in, b_in], np.uint64)}
            d.storage.commit(rollup(rows, when, d.config.processor.zone), {})
        d.services["login"].table.hasher = HASH  # cheap argon2 in tests
        d.call("login-set", unit="alice", words=["password", "alice-pass"])
        d.call("login-set", unit="bob", words=["password", "bob-pass1"])
        try:
            with served(d, tmp) as (srv, app):
                os.chmod(srv.path, 0o666)  # the other-uid test reaches it (SO_PEERCRED decides)
                yield d, srv, app
        finally:
            shutil.rmtree(tmp)


@contextlib.contextmanager
def served(d, tmp):
    """The daemon's control socket under tmp, and the console in front of it."""
    srv = ctl.ControlServer(os.path.join(tmp, "ctl.sock"), d.dispatcher)
    srv.serve_in_thread()
    app = create_app(Daemon(srv.path))
    app.testing = True
    try:
        yield srv, app
    finally:
        srv.shutdown()
        srv.server_close()


def log_in(app, name: str, password: str, kind: str = "user", addr: str = "192.0.2.1"):
    c = app.test_client()
    page = c.get("/login").get_data(as_text=True)
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    r = c.post("/login", data={"name": name, "password": password, "kind": kind, "csrf": csrf},
               environ_base={"REMOTE_ADDR": addr})
    return c, r


def csrf_of(c, path: str) -> str:
    return c.get(path).get_data(as_text=True).split('name="csrf" value="', 1)[1].split('"', 1)[0]


# -- the daemon's side: tokens, levels, scope -------------------------------------------

def test_a_token_runs_at_the_persons_level_not_the_peers(console):
    d, srv, _ = console
    viewer = client.call(srv.path, "web-login", name="watcher", password="watch-secret")
    assert (viewer["level"], viewer["unit"]) == ("viewer", None)
    # the peer is root (admin); on the viewer's behalf an operator command is refused
    with pytest.raises(PermissionDenied, match="'flush' needs level operator; watcher is viewer"):
        client.call(srv.path, "flush", as_token=viewer["token"])
    ops = client.call(srv.path, "web-login", name="ops", password="ops-secret")
    assert client.call(srv.path, "flush", as_token=ops["token"]) == {"drain": 1}
    with pytest.raises(PermissionDenied, match="needs level admin; ops is operator"):
        client.call(srv.path, "users", as_token=ops["token"])
    assert client.call(srv.path, "web-logout", as_token=ops["token"], token=ops["token"]) == \
        {"ended": True}
    with pytest.raises(PermissionDenied, match="not logged in"):
        client.call(srv.path, "status", as_token=ops["token"])
    with pytest.raises(PermissionDenied, match="wrong user name or password"):
        client.call(srv.path, "web-login", name="ops", password="nope")


def test_a_token_is_useless_to_another_uid(console):
    d, srv, _ = console
    token = client.call(srv.path, "web-login", name="ops", password="ops-secret")["token"]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)  # a [[user]] viewer: it may connect, not use root's token
            try:
                client.call(srv.path, "flush", as_token=token)
                os.write(w, b"accepted")
            except PermissionDenied as e:
                os.write(w, str(e).encode())
        finally:
            os._exit(0)
    os.close(w)
    said = os.read(r, 1000).decode()
    os.waitpid(pid, 0)
    assert said == "permission denied: not logged in (the session ended or expired): log in again"


def test_a_subscriber_sees_only_their_own_unit(console):
    d, srv, _ = console
    alice = client.call(srv.path, "web-login", name="alice", password="alice-pass", unit=True)
    assert (alice["name"], alice["level"], alice["unit"]) == ("alice", "viewer", "alice")
    mine = client.call(srv.path, "series", as_token=alice["token"], view="day")
    assert mine["unit"] == "alice" and mine["total"] == {"in": 11234, "out": 300}
    with pytest.raises(PermissionDenied, match="alice may see only their own unit"):
        client.call(srv.path, "series", as_token=alice["token"], unit="bob")
    with pytest.raises(PermissionDenied, match="'status' is not for subscribers"):
        client.call(srv.path, "status", as_token=alice["token"])
    with pytest.raises(PermissionDenied, match="'list' is not for subscribers|only their own"):
        client.call(srv.path, "list", as_token=alice["token"], unit="bob")
    with pytest.raises(PermissionDenied, match="wrong unit name or password"):
        client.call(srv.path, "web-login", name="alice", password="bob-pass1", unit=True)


def test_failed_logins_are_limited_per_name():
    t = [0.0]
    limit = AttemptLimit(tries=3, window=60, clock=lambda: t[0])
    for _ in range(3):
        limit.check("user:ops")
        limit.failed("user:ops")
    with pytest.raises(PermissionDenied, match="too many failed logins for 'user:ops': try "
                                               "again in 60 s"):
        limit.check("user:ops")
    limit.check("user:other")
    t[0] = 61.0
    limit.check("user:ops")


def test_the_daemon_refuses_a_name_after_five_failures_even_with_the_right_password(console):
    d, srv, _ = console
    for _ in range(5):
        with pytest.raises(PermissionDenied, match="wrong"):
            client.call(srv.path, "web-login", name="ops", password="guess")
    with pytest.raises(PermissionDenied, match="too many failed logins for 'user:ops'"):
        client.call(srv.path, "web-login", name="ops", password="ops-secret")
    # another name is not affected
    assert client.call(srv.path, "web-login", name="watcher", password="watch-secret")["token"]


def test_tokens_expire_when_idle():
    t = [0.0]
    tokens = Delegations(clock=lambda: t[0])
    tok = tokens.issue(1000, "ops", Level.OPERATOR, None)
    assert tokens.resolve(tok, 1000) == ("ops", Level.OPERATOR, None, None)
    with pytest.raises(PermissionDenied):
        tokens.resolve(tok, 1001)
    assert tokens.drop(tok, 1001) is False  # only the uid it was given to ends it
    t[0] = 30 * 60 + 1
    with pytest.raises(PermissionDenied):
        tokens.resolve(tok, 1000)


# -- the console ---------------------------------------------------------------------

def test_login_cookies_and_csrf(console):
    d, srv, app = console
    c = app.test_client()
    r = c.get("/unit/alice")
    assert r.status_code == 302 and r.headers["Location"] == "/login?next=/unit/alice"
    pre = c.get("/login").headers.get_all("Set-Cookie")
    assert any(h.startswith("acctd_login=") and "HttpOnly" in h and "SameSite=Strict" in h
               for h in pre)
    r = c.post("/login", data={"name": "ops", "password": "ops-secret", "kind": "user"})
    assert r.status_code == 403 and "CSRF" in r.get_data(as_text=True)
    c, r = log_in(app, "ops", "ops-secret")
    assert r.status_code == 302 and r.headers["Location"] == "/"
    cookie = next(h for h in r.headers.get_all("Set-Cookie") if h.startswith("acctd_session="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    # a state-changing form without the session's CSRF token is refused, with it done
    assert c.post("/unit/bob/block", data={"action": "sys-deny"}).status_code == 403
    assert d.call("units", name="bob")[0]["sys_policy"] == ["sys-deny-login"]  # its login record
    r = c.post("/unit/bob/block", data={"action": "sys-deny", "csrf": csrf_of(c, "/unit/bob")})
    assert r.status_code == 302
    assert d.call("units", name="bob")[0]["sys_policy"] == ["sys-deny", "sys-deny-login"]
    r = c.post("/logout", data={"csrf": csrf_of(c, "/unit/bob")})
    assert r.status_code == 302 and c.get("/unit/bob").status_code == 302


def test_secure_cookie_behind_tls(console):
    d, srv, _ = console
    app = create_app(Daemon(srv.path), secure=True)
    _, r = log_in(app, "ops", "ops-secret")
    cookie = next(h for h in r.headers.get_all("Set-Cookie") if h.startswith("acctd_session="))
    assert "Secure" in cookie


def test_a_viewer_gets_the_daemons_refusal_for_an_operator_form(console):
    d, srv, app = console
    c, _ = log_in(app, "watcher", "watch-secret")
    page = c.get("/unit/bob").get_data(as_text=True)
    assert "Block</button>" not in page  # not offered; and refused by the daemon if sent
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    r = c.post("/unit/bob/block", data={"action": "sys-deny", "csrf": csrf})
    assert r.status_code == 403
    assert "&#39;sys-policy&#39; needs level operator; watcher is viewer" in r.get_data(as_text=True)
    assert d.call("units", name="bob")[0]["sys_policy"] == ["sys-deny-login"]


def test_a_subscriber_is_refused_at_another_subscribers_page(console):
    d, srv, app = console
    c, r = log_in(app, "alice", "alice-pass", kind="unit")
    assert r.headers["Location"] == "/unit/alice"
    assert c.get("/").headers["Location"] == "/unit/alice"
    assert c.get("/unit/alice").status_code == 200
    r = c.get("/unit/bob")
    assert r.status_code == 403
    assert "alice may see only their own unit" in r.get_data(as_text=True)
    assert c.get("/unit/bob?format=csv&table=series").status_code == 403
    assert c.get("/sessions").status_code == 403


def test_csv_and_json_carry_the_numbers_of_acctctl_json(console):
    d, srv, app = console
    c, _ = log_in(app, "watcher", "watch-secret")
    want = d.call("series", unit="alice", view="hour")
    r = c.get("/unit/alice?view=hour&format=csv&table=series")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert r.headers["Content-Disposition"] == 'attachment; filename="unit-alice-series.csv"'
    got = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    assert [(x["start"], x["policy"], x["dir"], int(x["packets"]), int(x["bytes"])) for x in got] \
        == [(x["start"], x["policy"], x["dir"], x["packets"], x["bytes"]) for x in want["rows"]]
    assert [int(x["bytes"]) for x in got] == [3000, 100, 3000, 1234, 100, 1234]
    tables = json.loads(c.get("/unit/alice?view=hour&format=json").get_data())
    assert tables["series"] == [{k: x[k] for k in ("start", "policy", "dir", "packets", "bytes")}
                                for x in want["rows"]]
    # yesterday against today, and the 95th percentile of today so far: two
    # busy 5-minute samples of 162, both in the top 5 % dropped
    cmp_ = {x["dir"]: x for x in tables["compare"]}
    assert (cmp_["in"]["now"], cmp_["in"]["previous"]) == (4234, 7000)
    assert cmp_["in"]["p95_bps"] == 0 and want["p95_sample_s"] == 300


def test_period_and_view_are_in_the_url(console):
    d, srv, app = console
    c, _ = log_in(app, "watcher", "watch-secret")
    page = c.get("/unit/alice?view=day").get_data(as_text=True)
    assert 'href="?view=hour"' in page and 'href="?view=day&amp;back=1"' in page
    chart = json.loads(page.split('id="chart-data">', 1)[1].split("</script>", 1)[0])
    all_in = next(s for s in chart["series"] if s["label"] == "(all) in")
    assert len(chart["x"]) == 31 and all_in["data"] == [7000, 4234] + [0] * 29  # December
    month = json.loads(c.get("/unit/alice?view=month&format=json").get_data())
    assert [x["bytes"] for x in month["series"] if x["policy"] == "(all)"] == [11234, 300]


def test_the_account_page_says_billing_is_not_configured(console):
    d, srv, app = console
    c, _ = log_in(app, "ops", "ops-secret")
    page = c.get("/account").get_data(as_text=True)
    assert "billing is not configured" in page


def test_login_attempts_are_limited_per_client_address(console):
    d, srv, app = console
    for i in range(10):
        _, r = log_in(app, f"nobody{i}", "x", addr="198.51.100.7")
        assert r.status_code == 403
    _, r = log_in(app, "ops", "ops-secret", addr="198.51.100.7")
    assert r.status_code == 403 and "too many failed logins for &#39;198.51.100.7&#39;" in \
        r.get_data(as_text=True)
    assert log_in(app, "ops", "ops-secret", addr="198.51.100.8")[1].status_code == 302


def test_top_units_and_totals_of_a_period(console):
    d, srv, _ = console
    month = d.call("top-units", period="month")
    assert [(u["unit"], u["bytes_in"], u["bytes_out"]) for u in month["units"]] == \
        [("alice", 11234, 300), ("bob", 1500, 0)]
    assert month["total"] == {"in": 12734, "out": 300, "units": 2}
    day = d.call("top-units", period="day", limit=1)
    assert [u["unit"] for u in day["units"]] == ["alice"] and day["total"]["in"] == 4234 + 1000
    assert d.call("top-units", period="day", back=1)["total"] == {"in": 7500, "out": 100,
                                                                  "units": 2}


def test_how_far_back_is_bounded(console):
    d, srv, _ = console
    assert d.call("series", unit="alice", view="hour", back=1000)["rows"] == []
    with pytest.raises(BadRequest, match="back: at most 1000 periods, got 1001"):
        d.call("top-units", period="day", back=1001)


def test_rates_between_two_snapshots():
    from acctd.web.pages import top_rates
    row = {"packets_in": 0, "packets_out": 0}
    prev = {"ts": 10.0, "addrs": [{"addr": "10.0.0.1", "unit": "a", **row, "bytes_in": 1000,
                                   "bytes_out": 0},
                                  {"addr": "10.0.0.2", "unit": "b", **row, "bytes_in": 9000,
                                   "bytes_out": 0}], "ports": {}, "vlans": {}}
    cur = {"ts": 12.0, "addrs": [{"addr": "10.0.0.1", "unit": "a", **row, "bytes_in": 3000,
                                  "bytes_out": 500},
                                 # re-created (counters went down): all of it is new
                                 {"addr": "10.0.0.2", "unit": "b", **row, "bytes_in": 4000,
                                  "bytes_out": 0}], "ports": {}, "vlans": {}}
    r = top_rates(prev, cur, 10)
    assert r["addrs"] == [{"key": "10.0.0.2", "unit": "b", "bps_in": 16000, "bps_out": 0},
                          {"key": "10.0.0.1", "unit": "a", "bps_in": 8000, "bps_out": 2000}]
    assert r["gateway"] == [{"bps_in": 24000, "bps_out": 2000}]


def test_the_units_page_filters_by_name_and_links_each_unit(console):
    d, srv, app = console
    c, _ = log_in(app, "watcher", "watch-secret")
    page = c.get("/units?q=ali").get_data(as_text=True)
    assert '<a href="/unit/alice">alice</a>' in page and "/unit/bob" not in page
    rows = json.loads(c.get("/units?q=ali&format=json").get_data())["units"]
    assert [(r["name"], r["type"]) for r in rows] == [("alice", "user")]


def test_acctd_web_refuses_a_bad_listen_address_in_one_line():
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "acctd.web.main", "--listen", "8080"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.splitlines()[-1] == ("acctd-web: error: argument --listen: expected "
                                         "host:port, e.g. 127.0.0.1:8080, got '8080'")


BILLING = """
[billing]
currency = "EUR"
[billing.subplan.1]
policy = "ip"
fee = "30.00"
spread = "monthly"
included = "unlimited"
[billing.plan.2]
name = "home"
subplans = [1]
"""


def test_the_account_page_shows_billings_replies(tmp_path):
    """With [billing]: the account list, one account's balance, its ledger
    and its plan, as the billing service answers them."""
    with daemon_stub(loads(CONFIG + BILLING, "t.toml"), clock=lambda: NOW) as d:
        d.call("billing-account-create", name="acme",
               words=["plan", "2", "unit", "name", "alice", "add", "balance", "add", "20.00"])

        def daemon(cmd, token=None, /, **args):
            if cmd == "web-login":
                return {"token": "t", "name": "ops", "level": "operator", "unit": None}
            return d.call(cmd, **args)
        app = create_app(daemon)
        c, _ = log_in(app, "ops", "x")
        page = c.get("/account").get_data(as_text=True)
        assert '<a href="/account?name=acme">acme</a>' in page
        assert "billing is not configured" not in page
        one = json.loads(c.get("/account?name=acme&format=json").get_data())
        assert [r["amount"] for r in one["ledger"]] == ["20.00"]
        assert {"what": "balance", "value": "20.00"} in one["account"]
        assert [p["number"] for p in one["plan"]] == [2]


def test_the_hotspot_page_logs_a_unit_in_from_the_clients_address(console):
    """NeTAMS login.cgi: the unit's password opens its access from the
    client's address; the console (a viewer) gets no right from it."""
    d, srv, app = console
    c = app.test_client()
    page = c.get("/hotspot", environ_base={"REMOTE_ADDR": "10.9.0.5"}).get_data(as_text=True)
    assert "From 10.9.0.5" in page
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    form = {"user": "alice", "password": "alice-pass", "action": "login", "csrf": csrf}
    r = c.post("/hotspot", data=form, environ_base={"REMOTE_ADDR": "10.9.0.5"})
    assert r.status_code == 200
    assert "OK: login success from ip:10.9.0.5" in r.get_data(as_text=True)
    rows = {x["oid"]: x for x in d.call("login-show")["rows"]}
    alice = rows[d.snapshot.unit("alice").oid]
    assert (alice["state"], alice["addr"]) == ("opened", "10.9.0.5")
    assert "sys-deny-login" not in d.call("units", name="alice")[0]["sys_policy"]
    r = c.post("/hotspot", data=form | {"password": "wrong-one"},
               environ_base={"REMOTE_ADDR": "10.9.0.5"})
    assert r.status_code == 403 and "wrong user name or password" in r.get_data(as_text=True)
    assert c.post("/hotspot", data=form | {"csrf": "x"}).status_code == 403
    r = c.post("/hotspot", data=form | {"action": "logout"}, environ_base={"REMOTE_ADDR": "10.9.0.5"})
    assert "OK: logout success" in r.get_data(as_text=True)
    # a subscriber's token logs in only its own unit
    tok = client.call(srv.path, "web-login", name="alice", password="alice-pass", unit=True)
    with pytest.raises(PermissionDenied, match="alice may see only their own unit"):
        client.call(srv.path, "login", as_token=tok["token"], unit="bob", password="bob-pass1")


def test_the_hotspot_and_the_captive_portal_are_one_login_page(console):
    """The console's /hotspot and [captive]'s own server (its HTTP handler
    on loopback, without the nftables part) serve the same page and both
    ask the login service's portal: the same words, and one limit of
    failures per name whichever page they come from."""
    import re
    import threading
    import urllib.error
    import urllib.parse
    import urllib.request
    from http.server import HTTPServer

    from acctd.aaa import captive
    d, srv, app = console
    httpd = HTTPServer(("127.0.0.1", 0), captive._Page)
    httpd.portal = d.services["captive"]._portal
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_port}"

    def at_captive(form=None):
        data = urllib.parse.urlencode(form).encode() if form else None
        try:
            with urllib.request.urlopen(url + ("/login" if form else "/"), data, 5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
    c = app.test_client()
    local = {"REMOTE_ADDR": "127.0.0.1"}

    def at_hotspot(form=None):
        if form is None:
            r = c.get("/hotspot", environ_base=local)
        else:
            csrf = c.get("/hotspot", environ_base=local).get_data(as_text=True).split(
                'name="csrf" value="', 1)[1].split('"', 1)[0]
            r = c.post("/hotspot", data=form | {"csrf": csrf}, environ_base=local)
        return r.status_code, r.get_data(as_text=True)

    def same(page: str) -> str:   # what only the console adds: its CSRF, style, form's path
        page = re.sub(r' *<input type="hidden" name="csrf" value="[^"]*">\n', "", page)
        page = re.sub(r'<link rel="stylesheet" href="[^"]*">\n', "", page)
        return page.replace('action="/hotspot"', 'action="/login"')
    try:
        status, page = at_captive()
        assert status == 200 and same(at_hotspot()[1]) == page
        assert '<h1 id="title">Log in to use the network</h1>' in page
        assert '<p id="from">From 127.0.0.1</p>' in page
        wrong = {"user": "bob", "password": "nope", "action": "login"}
        for ask in (at_captive, at_hotspot, at_captive, at_hotspot, at_captive):
            status, page = ask(wrong)
            assert status == 403 and '<p id="message" class="error">wrong user name or ' \
                'password</p>' in page
        for ask in (at_hotspot, at_captive):   # five failures for bob, wherever they came from
            status, page = ask(wrong | {"password": "bob-pass1"})
            assert status == 429 and "too many failed logins for &#39;portal:bob&#39;" in page
        status, page = at_captive({"user": "alice", "password": "alice-pass", "action": "login"})
        assert status == 200 and '<h1 id="title">Logged in</h1>' in page
        assert "OK: login success from ip:127.0.0.1" in page
        alice = {x["oid"]: x for x in d.call("login-show")["rows"]}[d.snapshot.unit("alice").oid]
        assert (alice["state"], alice["addr"]) == ("opened", "127.0.0.1")
        status, page = at_hotspot({"user": "alice", "password": "alice-pass",
                                   "action": "logout"})
        assert status == 200 and '<h1 id="title">Logged out</h1>' in page
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_acctctl_login_portal_says_what_the_page_says(console):
    from click.testing import CliRunner

    from acctctl.main import main
    d, srv, _ = console

    def portal(password: str, *extra: str):
        r = CliRunner().invoke(main, ["--socket", srv.path, "login", "portal", "alice", "--ip",
                                      "10.9.0.7", "--password-file", "-", *extra],
                               input=password + "\n")
        return r.exit_code, r.output
    assert portal("nope") == (1, "wrong user name or password\n")
    assert portal("alice-pass") == (0, "OK: login success from ip:10.9.0.7, "
                                       "mac:00:00:00:00:00:00\n")
    assert portal("alice-pass", "--logout") == (0, "OK: logout success from ip:10.9.0.7, "
                                                   "mac:00:00:00:00:00:00\n")


# -- /metrics: no login, an allowed address instead ---------------------------------------

def test_metrics_refuse_an_address_not_allowed(console):
    _, srv, _ = console
    app = create_app(Daemon(srv.path), metrics_allow=metrics.parse_allow("127.0.0.0/8,::1"))
    r = app.test_client().get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.9"})
    assert r.status_code == 403
    assert "may not scrape /metrics" in r.get_data(as_text=True)
    # nobody may by default, and the other pages still want a login
    r = create_app(Daemon(srv.path)).test_client().get(
        "/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert r.status_code == 403
    assert metrics.allowed("::ffff:127.0.0.1", metrics.parse_allow("127.0.0.0/8"))
    assert not metrics.allowed("not-an-address", metrics.parse_allow("0.0.0.0/0"))


def test_acctd_web_refuses_a_bad_allow_list(capsys):
    from acctd.web.main import main
    with pytest.raises(SystemExit) as e:
        main(["--metrics-allow", "10.0.0.0/33"])
    assert e.value.code == 2
    assert "argument --metrics-allow: '10.0.0.0/33' does not appear to be an IPv4 or IPv6 " \
        "network" in capsys.readouterr().err


# -- static HTML reports: the [html] table ------------------------------------------------

def test_an_html_mistake_names_its_line_and_key():
    from acctd.errors import ConfigError
    with pytest.raises(ConfigError) as e:
        loads(ALICE + '[html]\npath = "/srv/www"\nclient-pages = "most"\n', "t.toml")
    line = (ALICE + "[html]\npath").count("\n") + 2
    assert str(e.value) == (f"t.toml:{line}: [html] key 'client-pages': expected \"all\", "
                            "\"groups\", \"none\" or a list of group names, got 'most'")
    with pytest.raises(ConfigError) as e:
        loads(ALICE + '[html]\npath = "/srv/www"\nclient-pages = ["alice"]\n', "t.toml")
    assert str(e.value) == (f"t.toml:{line}: [html] key 'client-pages[0]': no group named "
                            "'alice'")


# -- a billing account's holder (NeTAMS account-pages) -------------------------------------

@pytest.fixture
def holders(tmp_path):
    """The real billing and invoicing services behind the console: account
    acme holds alice and was created in November (postpaid, so November's
    invoice is issued when December comes), account beta holds bob."""
    from acctd.services.billing.invoicing import InvoicingService
    clock = [NOW - dt.timedelta(days=20)]
    with daemon_stub(loads(CONFIG + BILLING, "t.toml"), tmp_path=tmp_path,
                     clock=lambda: clock[0]) as d:
        d.services["login"].table.hasher = HASH
        d.call("billing-account-create", name="acme", words=[
            "plan", "2", "unit", "name", "alice", "add", "balance", "add", "20.00",
            "password", "acme-pass"])
        d.call("billing-account-create", name="beta", words=[
            "plan", "2", "unit", "name", "bob", "add", "password", "beta-pass"])
        d.call("billing-terms", account="acme", words=["postpaid"])
        clock[0] = NOW
        d.service(InvoicingService).tick()
        with served(d, str(tmp_path)) as (srv, app):
            yield d, srv, app


def test_an_account_holder_logs_in_with_billings_password_and_sees_only_their_own(holders):
    d, srv, app = holders
    c, r = log_in(app, "acme", "acme-pass", kind="account")
    assert r.status_code == 302 and r.headers["Location"] == "/account"
    assert c.get("/").headers["Location"] == "/account"
    page = c.get("/account").get_data(as_text=True)
    assert "Accounts: acme" in page and "bal: 20.00" in page
    assert '<a href="/unit/alice">alice</a>' in page and "/unit/bob" not in page
    mine = json.loads(c.get("/account?format=json").get_data())
    assert {"what": "balance", "value": "20.00"} in mine["account"]
    assert [x["amount"] for x in mine["ledger"]] == ["20.00"]
    assert [p["number"] for p in mine["plan"]] == [2]
    assert c.get("/unit/alice").status_code == 200
    # every other account, unit and table is refused, by the daemon
    for path in ("/account?name=beta", "/account?name=beta&format=csv&table=ledger",
                 "/unit/bob", "/unit/bob?format=csv&table=series", "/units", "/sessions",
                 "/account/beta/invoice/2026-11"):
        r = c.get(path)
        assert r.status_code == 403, path
    assert "acme may see only their own account" in c.get("/account?name=beta").get_data(
        as_text=True)
    assert "acme may see only their own account&#39;s units (alice)" in \
        c.get("/unit/bob").get_data(as_text=True)
    tok = client.call(srv.path, "web-login", name="acme", password="acme-pass", account=True)
    assert (tok["name"], tok["level"], tok["unit"], tok["account"]) == \
        ("acme", "viewer", None, "acme")
    with pytest.raises(PermissionDenied, match="acme may see only their own plan"):
        client.call(srv.path, "billing-plan", as_token=tok["token"], plan=2, what="list")
    with pytest.raises(PermissionDenied, match="'billing-account-set' needs level operator"):
        client.call(srv.path, "billing-account-set", as_token=tok["token"], account="acme",
                    words=["balance", "add", "100"])
    with pytest.raises(PermissionDenied, match="wrong account name or password"):
        client.call(srv.path, "web-login", name="acme", password="beta-pass", account=True)
    with pytest.raises(PermissionDenied, match="wrong account name or password"):
        client.call(srv.path, "web-login", name="nobody", password="x", account=True)


def test_an_unknown_account_name_costs_a_password_check_too(holders):
    """No probing for account names by the time an answer takes: an unknown
    name (or an account without a password) pays the argon2 work a wrong
    password does (here a hasher of about 50 ms, against ~1 ms without)."""
    from acctd.services.billing.service import BillingService
    d, srv, app = holders
    d.services["login"].table.hasher = PasswordHasher(time_cost=2, memory_cost=32768,
                                                      parallelism=1)
    d.call("billing-account-set", account="acme", words=["password", "acme-pass2"])
    billing = d.service(BillingService)

    def took(name):
        t = time.perf_counter()
        with pytest.raises(PermissionDenied, match="wrong account name or password"):
            billing.verify(name, "not-it")
        return time.perf_counter() - t
    known = min(took("acme") for _ in range(3))
    for name in ("nobody", "beta-typo"):
        assert min(took(name) for _ in range(3)) > known / 3, name


def test_every_subscriber_command_is_scoped_by_an_argument_the_daemon_fixes():
    """A command a subscriber may send takes the unit or account the
    dispatcher pins to theirs (billing-plan: their plan), else it would
    answer about everyone."""
    from acctd.control import commands
    from acctd.control.delegation import ACCOUNT, SUBSCRIBER
    for name, scope in [(n, "unit") for n in SUBSCRIBER] + [(n, "account") for n in ACCOUNT]:
        takes = {a.name for a in commands.get(name).args}
        assert name == "billing-plan" or {"unit", scope} & takes, name


def test_an_account_holder_sees_and_downloads_their_own_invoices(holders):
    d, srv, app = holders
    acme = d.call("billing-account", account="acme")["account"]["oid"]
    c, _ = log_in(app, "acme", "acme-pass", kind="account")
    bills = json.loads(c.get("/account?format=json").get_data())["invoices"]
    assert [(x["number"], x["month"], x["amount_due"]) for x in bills] == \
        [(f"202611-{acme}", "2026-11", "0.00")]
    page = c.get("/account").get_data(as_text=True)
    link = f'<a href="/account/acme/invoice/2026-11">202611-{acme}</a>'
    assert link in page
    r = c.get("/account/acme/invoice/2026-11")
    assert r.status_code == 200 and r.mimetype == "text/plain"
    assert r.headers["Content-Disposition"] == f'attachment; filename="invoice-202611-{acme}.txt"'
    assert r.get_data(as_text=True).startswith(f"Invoice 202611-{acme}  account acme ({acme})  "
                                               "month 2026-11\n")


def test_the_holder_blocks_their_own_account_and_undoes_only_that(holders):
    """NeTAMS beblock from the account page (CSRF-protected): billing blocks
    the account's units (sys-deny-money, the kernel's bit); the holder's
    unblock lifts only their own block, never the operator's."""
    from acctd.kernel import abi
    from acctd.services.billing.service import BillingService
    d, srv, app = holders
    alice = d.snapshot.unit("alice").oid
    c, _ = log_in(app, "acme", "acme-pass", kind="account")
    page = c.get("/account").get_data(as_text=True)
    assert 'id="beblock-button"' in page
    assert c.post("/account/beblock", data={"action": "beblock"}).status_code == 403  # no CSRF
    assert d.call("billing-account", account="acme")["account"]["status"] == "active"
    r = c.post("/account/beblock", data={"action": "beblock", "csrf": csrf_of(c, "/account")})
    assert r.status_code == 302
    assert d.call("billing-account", account="acme")["account"]["blocked_for"] == "beblock"
    assert d.service(BillingService).blocks() == {alice: abi.SysPolicy.MONEY}
    assert d.call("units", name="alice", sys_policy=True)[0]["sys_policy"] == ["sys-deny-money"]
    assert 'id="unblock-button"' in c.get("/account").get_data(as_text=True)
    r = c.post("/account/beblock", data={"action": "unblock", "csrf": csrf_of(c, "/account")})
    assert r.status_code == 302 and d.service(BillingService).blocks() == {}
    # the operator's block: the holder can neither lift it nor turn it into their own
    d.call("billing-account-set", account="acme", words=["block"])
    page = c.get("/account").get_data(as_text=True)
    assert 'id="admin-block"' in page and "unblock-button" not in page
    csrf = csrf_of(c, "/account")
    for action in ("unblock", "beblock"):
        r = c.post("/account/beblock", data={"action": action, "csrf": csrf})
        assert r.status_code == 409
        assert "account acme is blocked by the operator: only they can unblock it" in \
            r.get_data(as_text=True)
    assert d.call("billing-account", account="acme")["account"]["status"] == "block"
    assert d.service(BillingService).blocks() == {alice: abi.SysPolicy.MONEY}
    # and another account is not theirs to block
    tok = client.call(srv.path, "web-login", name="acme", password="acme-pass", account=True)
    with pytest.raises(PermissionDenied, match="acme may see only their own account"):
        client.call(srv.path, "billing-beblock", as_token=tok["token"], account="beta")
