"""acctd's Access-Request server (acctd.aaa.radius_auth) against
FreeRADIUS's radtest and radclient: the daemon's services over real storage
(no kernel: tests/unit/daemon_stub), its server on a free loopback port,
one outcome per test. radclient verifies a reply's Response Authenticator
and Message-Authenticator and prints nothing for one that fails them, so a
printed reply is a valid one. radtest adds a Message-Authenticator;
radclient only where the input lists one.

A real FreeRADIUS in front, relaying to acctd as its home server, is the
last test. The end-to-end run (real traffic counted, Interim-Updates into a real
FreeRADIUS's radacct) is in test_daemon_radius_auth.py."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time

import pytest
from argon2 import PasswordHasher

from acctd.aaa.coa import parse_rate_limit
from acctd.aaa.radius_auth import RadiusAuthService
from acctd.config import loads
from acctd.services.login import LoginService
from ..unit.daemon_stub import daemon_stub
from ..unit.test_radius_auth import CONFIG as UNIT_CONFIG
from tests.peer import missing_peer
from tests.ports import free_port

from .conftest import _peer, radiusd_paths

pytestmark = pytest.mark.peers

SECRET = "auth test secret / 2865"
# the unit tests' config (alice with a bw, pc with a MAC, bob), on a real port
CONFIG = UNIT_CONFIG.replace('listen = "127.0.0.1:0"', 'listen = "127.0.0.1:{port}"')


@pytest.fixture(scope="module")
def acctd(tmp_path_factory):
    _peer("radclient")
    tmp = tmp_path_factory.mktemp("radius-auth")
    secret = tmp / "auth.secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    port = free_port()
    cfg = loads(CONFIG.format(port=port, secret=secret, fticks=tmp / "fticks.log"), "t.toml")
    with daemon_stub(cfg, tmp_path=tmp) as d:
        d.drain_locked = lambda: {}   # no kernel: a binding change has nothing to drain
        d.service(LoginService).table.hasher = PasswordHasher(time_cost=1, memory_cost=8,
                                                              parallelism=1)
        for unit in ("alice", "pc"):
            d.call("login-set", unit=unit, words=["password", f"{unit}-pw"])
        d.service(RadiusAuthService).serve()
        d.port, d.fticks = port, tmp / "fticks.log"
        try:
            yield d
        finally:
            d.service(RadiusAuthService).close()


@pytest.fixture(autouse=True)
def fresh(acctd):
    """Each test starts with nobody logged in or blocked."""
    for s in acctd.call("session-list", open=True):
        acctd.call("session-stop", user=s["user"])
    for unit in ("alice", "pc"):
        acctd.set_sys_policy(unit, "sys-allow")
        acctd.service(LoginService).table.close(acctd.snapshot.unit(unit).oid)


def fticks(d) -> list[str]:
    return d.fticks.read_text().splitlines() if d.fticks.exists() else []


def parse(out: str) -> tuple[str | None, dict[str, str]]:
    m = re.search(r"^Received (\S+) Id \d+ .*\n((?:\t.*\n)*)", out, re.M)
    if m is None:
        assert "No reply from server" in out, out
        return None, {}
    attrs = dict(line.strip().split(" = ", 1) for line in m.group(2).splitlines())
    assert attrs.pop("Message-Authenticator").startswith("0x"), out   # in every reply
    return m.group(1), attrs


def radtest(d, user: str, password: str, *extra: str, port: int | None = None):
    """radtest USER PASSWORD: (reply code or None, reply attributes)."""
    r = subprocess.run([_peer("radtest"), "-x", *extra, user, password,
                        f"127.0.0.1:{port or d.port}", "0", SECRET],
                       capture_output=True, text=True, timeout=30)
    return parse(r.stdout + r.stderr)


def radclient(d, attrs: str, port: int | None = None):
    r = subprocess.run([_peer("radclient"), "-x", "-r", "1", "-t", "1",
                        f"127.0.0.1:{port or d.port}", "auth", SECRET], input=attrs,
                       capture_output=True, text=True, timeout=30)
    return parse(r.stdout + r.stderr)


def test_good_password_is_accepted_with_rate_address_and_interim(acctd):
    before = len(fticks(acctd))
    code, attrs = radtest(acctd, "alice", "alice-pw")
    assert code == "Access-Accept", attrs
    assert attrs["Framed-IP-Address"] == "10.9.0.10"
    assert attrs["Acct-Interim-Interval"] == "120"
    assert (attrs["WISPr-Bandwidth-Max-Down"], attrs["WISPr-Bandwidth-Max-Up"]) == (
        "4000000", "1000000")
    assert parse_rate_limit(attrs["Mikrotik-Rate-Limit"].strip('"')) == (4_000_000, 1_000_000)
    assert [(s["user"], s["addr"]) for s in acctd.call("session-list", open=True)] == [
        ("alice", "10.9.0.10")]
    (line,) = fticks(acctd)[before:]
    assert "#RESULT=OK#PN=alice#AP=acctd.example#RP=127.0.0.1#AN=radius#" in line


def test_wrong_password_is_rejected(acctd):
    code, attrs = radtest(acctd, "alice", "not-it")
    assert (code, attrs) == ("Access-Reject",
                             {"Reply-Message": '"wrong user name or password"'})
    assert "#RESULT=FAIL#PN=alice#" in fticks(acctd)[-1]
    assert acctd.call("session-list", open=True) == []


@pytest.mark.parametrize("word, why", [("sys-deny", "blocked: deny"),
                                       ("sys-deny-quota", "blocked: quota")])
def test_blocked_and_quota_blocked_are_rejected_saying_why(acctd, word, why):
    acctd.set_sys_policy("alice", word)
    code, attrs = radtest(acctd, "alice", "alice-pw")
    assert (code, attrs) == ("Access-Reject", {"Reply-Message": f'"{why}"'})
    assert "#RESULT=FAIL#PN=alice#" in fticks(acctd)[-1]


def test_mac_mismatch_is_rejected_and_the_right_mac_accepted(acctd):
    base = 'User-Name = "pc"\nUser-Password = "pc-pw"\nMessage-Authenticator = 0x00\n'
    code, attrs = radclient(acctd, base + 'Calling-Station-Id = "00-11-22-33-44-66"\n')
    assert (code, attrs) == ("Access-Reject", {
        "Reply-Message": '"MAC mismatch: Calling-Station-Id 00-11-22-33-44-66"'})
    code, attrs = radclient(acctd, base + 'Calling-Station-Id = "00-11-22-33-44-55"\n')
    assert code == "Access-Accept" and attrs["Framed-IP-Address"] == "10.1.0.5"   # its own


def test_chap_is_rejected_saying_why(acctd):
    code, attrs = radtest(acctd, "alice", "alice-pw", "-t", "chap")
    assert code == "Access-Reject"
    assert attrs["Reply-Message"].startswith('"CHAP is not accepted')


def test_unlisted_client_and_missing_message_authenticator_get_no_reply(acctd):
    stats = acctd.service(RadiusAuthService).server.stats
    before = dict(stats)
    code, _ = radclient(acctd, 'User-Name = "alice"\nUser-Password = "alice-pw"\n'
                               'Message-Authenticator = 0x00\n'
                               'Packet-Src-IP-Address = 127.0.0.2\n')
    assert code is None
    code, _ = radclient(acctd, 'User-Name = "alice"\nUser-Password = "alice-pw"\n')
    assert code is None
    assert stats["unlisted-source"] - before.get("unlisted-source", 0) >= 1
    assert stats["no-message-authenticator"] - before.get("no-message-authenticator", 0) >= 1
    assert acctd.call("session-list", open=True) == []


class DropFirstReply:
    """A UDP relay in front of acctd that loses the first reply, so radclient
    retransmits (the same Identifier and Request Authenticator)."""

    def __init__(self, target: int):
        self.target = target
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind(("127.0.0.1", 0))
        self.port = self.front.getsockname()[1]
        self.requests = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        self.front.settimeout(10)
        self.back.settimeout(5)
        dropped = False
        try:
            while True:
                data, client = self.front.recvfrom(4096)
                self.requests += 1
                self.back.sendto(data, ("127.0.0.1", self.target))
                reply = self.back.recv(4096)
                if dropped:
                    self.front.sendto(reply, client)
                dropped = True
        except OSError:
            pass


def test_a_retransmission_is_answered_from_the_cache(acctd):
    stats = acctd.service(RadiusAuthService).server.stats
    before, lines = stats["retransmission"], len(fticks(acctd))
    relay = DropFirstReply(acctd.port)
    r = subprocess.run([_peer("radclient"), "-x", "-r", "3", "-t", "1",
                        f"127.0.0.1:{relay.port}", "auth", SECRET],
                       input='User-Name = "alice"\nUser-Password = "alice-pw"\n'
                             'Message-Authenticator = 0x00\n',
                       capture_output=True, text=True, timeout=30)
    code, _ = parse(r.stdout + r.stderr)
    assert code == "Access-Accept", r.stdout + r.stderr
    assert relay.requests == 2 and stats["retransmission"] == before + 1
    assert len(fticks(acctd)) == lines + 1          # decided once
    assert len(acctd.call("session-list", open=True)) == 1


PROXY_CONF = """
proxy_requests = yes
log {{
	destination = files
	file = {d}/log/radius.log
	colourise = no
}}
security {{
	allow_core_dumps = no
	max_attributes = 200
	reject_delay = 0
	status_server = no
}}
thread pool {{
	start_servers = 2
	max_servers = 4
	min_spare_servers = 1
	max_spare_servers = 3
	max_requests_per_server = 0
}}
client localhost {{
	ipaddr = 127.0.0.1
	secret = "{front}"
	require_message_authenticator = yes
}}
proxy server {{
	default_fallback = no
}}
# acctd as the home server: FreeRADIUS only relays
home_server acctd {{
	type = auth
	ipaddr = 127.0.0.1
	port = {home}
	secret = "{secret}"
	response_window = 5
	status_check = none
}}
home_server_pool acctd_pool {{
	type = fail-over
	home_server = acctd
}}
realm acctd {{
	auth_pool = acctd_pool
	nostrip
}}
modules {{
}}
server default {{
	listen {{
		type = auth
		ipaddr = 127.0.0.1
		port = {port}
	}}
	authorize {{
		update control {{
			&Proxy-To-Realm := "acctd"
		}}
	}}
	authenticate {{
	}}
	post-proxy {{
	}}
}}
"""


def test_freeradius_in_front_proxies_to_acctd(acctd, tmp_path):
    """A real FreeRADIUS relays Access-Requests to acctd as its home server:
    the NAS (radtest) talks to FreeRADIUS with its own secret and gets
    acctd's answer, attributes and Reply-Message included."""
    exe = shutil.which("freeradius", path="/usr/sbin:/usr/bin")
    if exe is None:
        missing_peer("freeradius not installed (apt-get install freeradius)")
    d = tmp_path / "raddb"
    (d / "log").mkdir(parents=True)
    (d / "run").mkdir()
    port = free_port()
    (d / "radiusd.conf").write_text(radiusd_paths(d) + PROXY_CONF.format(
        d=d, front="front secret", home=acctd.port, secret=SECRET, port=port))
    out = open(d / "log" / "stdout.log", "wb")
    proc = subprocess.Popen([exe, "-f", "-d", str(d), "-l", "stdout"], stdout=out,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    out.close()
    try:
        log = d / "log" / "stdout.log"
        end = time.monotonic() + 15
        while "Ready to process requests" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < end, log.read_text()
            time.sleep(0.1)

        def via_proxy(password):
            r = subprocess.run([_peer("radtest"), "-x", "alice", password,
                                f"127.0.0.1:{port}", "0", "front secret"],
                               capture_output=True, text=True, timeout=30)
            return parse(r.stdout + r.stderr)
        code, attrs = via_proxy("alice-pw")
        assert code == "Access-Accept", attrs
        assert (attrs["Framed-IP-Address"], attrs["Acct-Interim-Interval"]) == ("10.9.0.10",
                                                                               "120")
        acctd.call("session-stop", user="alice")
        acctd.service(LoginService).table.close(acctd.snapshot.unit("alice").oid)
        code, attrs = via_proxy("wrong")
        assert (code, attrs) == ("Access-Reject",
                                 {"Reply-Message": '"wrong user name or password"'})
        assert "#RP=127.0.0.1#AN=radius#" in fticks(acctd)[-1]
    finally:
        proc.terminate()
        proc.wait(10)
