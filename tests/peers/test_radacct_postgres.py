"""radacct over PostgreSQL: a throwaway server (initdb + postgres in a temp
directory, Unix socket only, run as the `postgres` user when we are root),
FreeRADIUS's own PostgreSQL schema (inet and timestamptz columns), rows as
rlm_sql's queries write them, read through psycopg2 and imported."""

import datetime as dt
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from acctd.aaa import radius_import as ri
from acctd.store.database import Storage
from tests.peer import missing_peer

pytestmark = pytest.mark.peers

try:
    import psycopg2
except ImportError:  # collected anyway: the fixture says why it cannot run
    psycopg2 = None
SCHEMA = Path("/etc/freeradius/3.0/mods-config/sql/main/postgresql/schema.sql")
BINDIRS = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
UTC = dt.timezone.utc


def t(*a):
    return dt.datetime(*a, tzinfo=UTC)


@pytest.fixture(scope="module")
def pg():
    if psycopg2 is None:
        missing_peer("needs psycopg2 (Debian python3-psycopg2)")
    if not BINDIRS or not SCHEMA.exists():
        missing_peer("needs Debian's postgresql and freeradius packages")
    bindir = BINDIRS[-1]
    prefix: list[str] = []
    d = tempfile.mkdtemp(prefix="acctd-pg-")
    if os.geteuid() == 0:           # the server refuses to run as root
        pw = pwd.getpwnam("postgres")
        os.chown(d, pw.pw_uid, pw.pw_gid)
        # setpriv execs (runuser would fork): the server stays our child, and we reap it
        prefix = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups",
                  "--"]
    data = os.path.join(d, "data")
    try:
        subprocess.run([*prefix, f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120)
    except subprocess.CalledProcessError as e:
        shutil.rmtree(d, ignore_errors=True)
        missing_peer(f"initdb failed: {e.stderr.decode(errors='replace')}")
    log = open(os.path.join(d, "log"), "wb")
    server = subprocess.Popen([*prefix, f"{bindir}/postgres", "-D", data, "-k", d,
                               "-c", "listen_addresses=", "-F"], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg2.connect(host=d, user="postgres", dbname="postgres").close()
                break
            except psycopg2.OperationalError:
                if server.poll() is not None or time.monotonic() > deadline:
                    missing_peer(f"PostgreSQL did not start: {Path(d, 'log').read_text()}")
                time.sleep(0.05)
        yield d
    finally:
        server.send_signal(signal.SIGINT)       # fast shutdown
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def radacct(pg):
    con = psycopg2.connect(host=pg, user="postgres", dbname="postgres")
    cur = con.cursor()
    cur.execute("DROP TABLE IF EXISTS radacct CASCADE")
    cur.execute(SCHEMA.read_text())
    # as rlm_sql's postgresql queries write them: TO_TIMESTAMP(epoch), NULLIF(..., '')::inet
    ins = ("INSERT INTO radacct (AcctSessionId, AcctUniqueId, UserName, NASIPAddress, NASPortId, "
           "AcctStartTime, AcctStopTime, AcctSessionTime, AcctInputOctets, AcctOutputOctets, "
           "CallingStationId, AcctTerminateCause, FramedIPAddress, FramedIPv6Address) VALUES "
           "(%s, %s, %s, %s::inet, %s, TO_TIMESTAMP(%s), TO_TIMESTAMP(%s), %s, %s, %s, %s, %s, "
           "NULLIF(%s, '')::inet, NULLIF(%s, '')::inet)")
    e = lambda *a: int(t(*a).timestamp())  # noqa: E731
    cur.executemany(ins, [
        ("A1", "u1", "alice", "192.0.2.1", "eth0.100", e(2024, 3, 1, 10), e(2024, 3, 1, 11),
         3600, 1_500_000, 20_000_000, "00-11-22-33-44-55", "User-Request", "10.0.0.5", ""),
        ("H1", "u2", "bob", "192.0.2.3", "ppp5", e(2024, 3, 3, 8), e(2024, 3, 3, 9), 3600,
         6_000_000_000, 7_000_000_000, "0011.2233.4466", "Session-Timeout", "", "2001:db8::5"),
        ("H2", "u3", "carol", "192.0.2.3", "ppp6", e(2024, 3, 3, 10), None, 300, 10, 20, "", "",
         "10.0.2.2", ""),
        ("H3", "u4", "dave", "192.0.2.3", "ppp7", e(2024, 2, 1, 10), e(2024, 2, 1, 11), 3600,
         1, 2, "", "NAS-Reboot", "10.0.2.3", ""),
    ])
    con.commit()
    yield con
    con.close()


def test_read_and_import_radacct_from_postgres(radacct, tmp_path):
    recs = list(ri.read_radacct(radacct, since=t(2024, 3, 1)))
    assert sorted(r["session_id"] for r in recs) == ["A1", "H1", "H2"]
    sessions = ri.to_sessions(recs)
    assert [(s["user"], s["addr"], s["mac"], s["nas"], s["start"], s["stop"], s["bytes_in"],
             s["bytes_out"], s["stop_cause"]) for s in sessions] == [
        ("alice", "10.0.0.5", "00:11:22:33:44:55", "192.0.2.1", t(2024, 3, 1, 10),
         t(2024, 3, 1, 11), 20_000_000, 1_500_000, "user-request"),
        ("bob", "2001:db8::5", "00:11:22:33:44:66", "192.0.2.3", t(2024, 3, 3, 8),
         t(2024, 3, 3, 9), 7_000_000_000, 6_000_000_000, "session-timeout"),
        ("carol", "10.0.2.2", "", "192.0.2.3", t(2024, 3, 3, 10), None, 20, 10, ""),
    ]
    with Storage(tmp_path / "acct.duckdb") as st:
        oids = {"alice": "0A0001", "bob": "0A0002", "carol": "0A0003"}
        counts = ri.import_sessions(st.con, sessions, oids.get)
        assert counts == {"imported": 2, "duplicates": 0, "open": 1, "unknown_users": 0,
                          "unknown": {}}
        assert counts["unknown"] == {}
        # everything again, dave now known: only his February session is new
        oids["dave"] = "0A0004"
        again = ri.import_sessions(st.con, ri.to_sessions(ri.read_radacct(radacct)), oids.get)
        assert again == {"imported": 1, "duplicates": 2, "open": 1, "unknown_users": 0,
                         "unknown": {}}
        assert [(s.unit_oid, s.addr, s.stop_cause) for s in st.sessions()] == [
            ("0A0004", "10.0.2.3", "nas-reboot"), ("0A0002", "2001:db8::5", "session-timeout"),
            ("0A0001", "10.0.0.5", "user-request")]
