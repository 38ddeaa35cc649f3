"""A real FreeRADIUS for the RADIUS accounting tests: a minimal config tree
written into tmp_path, SQL accounting into SQLite with the radacct schema
Debian ships, a linelog of every Accounting-Request it accepted, and the
server started as `freeradius -f -d DIR -l stdout` (stdout into a file) on
a free loopback port; a test whose server logged an error fails.

Needs Debian's `freeradius` (server, rlm_sql_sqlite) and `freeradius-utils`
(radclient). Without them the tests skip, unless ACCTD_PEERS_REQUIRED=1,
where a missing peer is a failure. The port is unprivileged and the server
keeps the invoking user, but Debian's SQL schema and queries under
/etc/freeradius are readable only by root and the freerad group.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from acctd.aaa import radius
from tests.peer import missing_peer
from tests.ports import free_port

DEBIAN_SQL = Path("/etc/freeradius/3.0/mods-config/sql/main/sqlite")
SECRET = "acctd test secret / 7e1f"
PACKAGES = "freeradius freeradius-utils"

# One line per Accounting-Request the server processed, written before SQL.
# %I is the packet's Identifier.
LOG_FIELDS = ("id", "session", "status", "event", "delay", "in_oct", "in_giga", "out_oct",
              "out_giga", "in_pkt", "out_pkt", "time", "cause", "user", "ip", "ip6", "prefix6",
              "nas_ip", "nas_id", "ma")
_LOG_FORMAT = "|".join((
    "%I", "%{Acct-Session-Id}", "%{Acct-Status-Type}", "%{integer:Event-Timestamp}",
    "%{Acct-Delay-Time}", "%{Acct-Input-Octets}", "%{Acct-Input-Gigawords}",
    "%{Acct-Output-Octets}", "%{Acct-Output-Gigawords}", "%{Acct-Input-Packets}",
    "%{Acct-Output-Packets}", "%{Acct-Session-Time}", "%{Acct-Terminate-Cause}",
    "%{User-Name}", "%{Framed-IP-Address}", "%{Framed-IPv6-Address}", "%{Framed-IPv6-Prefix}",
    "%{NAS-IP-Address}", "%{NAS-Identifier}",
    "%{Message-Authenticator}"))


def radiusd_paths(d: Path) -> str:
    """The head of a radiusd.conf whose tree, logs and state are all in `d`."""
    return f"""
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = {d}
sbindir = /usr/sbin
logdir = {d}/log
raddbdir = {d}
radacctdir = {d}/radacct
name = freeradius
confdir = {d}
modconfdir = {d}/mods-config
run_dir = {d}/run
db_dir = {d}
libdir = /usr/lib/freeradius
pidfile = {d}/run/radiusd.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 4096
hostname_lookups = no
"""


def _radiusd_conf(d: Path, port: int) -> str:
    return radiusd_paths(d) + f"""

log {{
	destination = files
	file = {d}/log/radius.log
	colourise = no
	auth = no
}}

security {{
	allow_core_dumps = no
	max_attributes = 200
	reject_delay = 0
	status_server = yes
}}

thread pool {{
	start_servers = 2
	max_servers = 4
	min_spare_servers = 1
	max_spare_servers = 3
	max_requests_per_server = 0
	auto_limit_acct = no
}}

client localhost {{
	ipaddr = 127.0.0.1
	proto = udp
	secret = "{SECRET}"
	require_message_authenticator = yes
	nas_type = other
}}

modules {{
	# xlats the queries use: %{{tolower:}}, %{{md5:}}
	expr {{
	}}
	sql {{
		dialect = "sqlite"
		driver = "rlm_sql_sqlite"
		sqlite {{
			filename = "{d}/radacct.db"
			busy_timeout = 2000
			bootstrap = "{DEBIAN_SQL}/schema.sql"
		}}
		radius_db = "radius"
		acct_table1 = "radacct"
		acct_table2 = "radacct"
		postauth_table = "radpostauth"
		authcheck_table = "radcheck"
		groupcheck_table = "radgroupcheck"
		authreply_table = "radreply"
		groupreply_table = "radgroupreply"
		usergroup_table = "radusergroup"
		read_groups = no
		read_clients = no
		delete_stale_sessions = no
		pool {{
			# a connection for every server thread: with fewer, a request
			# finds none free, fails, and gets no reply
			start = 4
			min = 4
			max = 4
			spare = 4
			uses = 0
			retry_delay = 1
			lifetime = 0
			idle_timeout = 60
		}}
		client_table = "nas"
		group_attribute = "SQL-Group"
		$INCLUDE {DEBIAN_SQL}/queries.conf
	}}
	always unsigned {{
		rcode = reject
	}}
	linelog requests {{
		filename = {d}/requests.log
		permissions = 0600
		format = "{_LOG_FORMAT}"
	}}
}}

policy {{
	# Debian's policy.d/accounting acct_unique, without the Class branch
	acct_unique {{
		update request {{
			&Acct-Unique-Session-Id := "%{{md5:%{{User-Name}},%{{Acct-Session-ID}},%{{%{{NAS-IPv6-Address}}:-%{{NAS-IP-Address}}}},%{{NAS-Identifier}},%{{NAS-Port-ID}},%{{NAS-Port}}}}"
		}}
	}}
}}

server default {{
	listen {{
		type = acct
		ipaddr = 127.0.0.1
		port = {port}
	}}
	preacct {{
		# FreeRADIUS 3.2's require_message_authenticator covers Access-Request
		# only; this server demands it of accounting too (BlastRADIUS-style
		# hardening): a request without one gets no reply.
		if (!&Message-Authenticator) {{
			unsigned
		}}
		acct_unique
	}}
	accounting {{
		requests
		sql
	}}
}}
"""


class FreeRadius:
    """One FreeRADIUS server: its config tree, database and log in `dir`."""

    def __init__(self, d: Path, port: int):
        self.dir, self.port, self.secret = d, port, SECRET
        self.db = d / "radacct.db"
        self.log = d / "requests.log"
        self.stdout = d / "log" / "stdout.log"
        self.proc: subprocess.Popen | None = None
        (d / "log").mkdir(parents=True, exist_ok=True)
        (d / "run").mkdir(exist_ok=True)
        (d / "radiusd.conf").write_text(_radiusd_conf(d, port))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        assert self.proc is None
        out = open(self.stdout, "ab")
        self.proc = subprocess.Popen([shutil.which("freeradius", path="/usr/sbin:/usr/bin")
                                      or "freeradius", "-f", "-d", str(self.dir), "-l", "stdout"],
                                     stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"freeradius exited at start:\n{self.stdout.read_text()}")
            if self.status_server(0.2):
                return
        self.stop()
        raise RuntimeError(f"freeradius did not answer Status-Server in {timeout} s:\n"
                           f"{self.stdout.read_text()}")

    def stop(self) -> None:
        """SIGTERM and wait: the server is gone, its port closed."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def status_server(self, timeout: float) -> bool:
        """RFC 5997 probe on the accounting port: True if a signed
        Accounting-Response came back."""
        req = radius.status_server(1, os.urandom(16), self.secret)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(req, ("127.0.0.1", self.port))
            try:
                data = s.recv(4096)
            except (socket.timeout, ConnectionRefusedError):
                return False
        p = radius.verify_response(data, req, self.secret)
        return p.code == radius.ACCOUNTING_RESPONSE

    def radacct(self) -> list[dict]:
        if not self.db.exists():
            return []
        with contextlib.closing(sqlite3.connect(self.db)) as c:
            c.row_factory = sqlite3.Row
            return [dict(r) for r in c.execute("SELECT * FROM radacct ORDER BY radacctid")]

    def errors(self) -> list[str]:
        return [line for line in self.stdout.read_text().splitlines() if ": Error: " in line]

    def requests(self) -> list[dict]:
        """Every Accounting-Request the server processed, in order."""
        if not self.log.exists():
            return []
        return [dict(zip(LOG_FIELDS, line.split("|")))
                for line in self.log.read_text().splitlines()]


def _peer(tool: str) -> str:
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/bin")
    if path is None:
        missing_peer(f"{tool} not installed (apt-get install {PACKAGES})")
    return path


@pytest.fixture
def radclient() -> str:
    return _peer("radclient")


@pytest.fixture
def freeradius(tmp_path):
    _peer("freeradius")
    _peer("radclient")
    for f in ("schema.sql", "queries.conf"):
        if not os.access(DEBIAN_SQL / f, os.R_OK):
            missing_peer(f"cannot read {DEBIAN_SQL / f}: needs root or the freerad group "
                         f"(and apt-get install {PACKAGES})")
    server = FreeRadius(tmp_path / "raddb", free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
    assert server.errors() == [], "FreeRADIUS logged errors"
