"""HA: a libpq multi-host DSN with target_session_attrs=read-write over a
primary and a streaming-replication standby. The primary dies while the
gateway ships; the standby, which had stopped receiving (as an asynchronous
standby behind by a few drains would be), is promoted; the gateway finds
it, learns its lower shipped_seq and ships the drains it lacks again from
the outbox (keep-shipped): every drain there exactly once."""

import datetime as dt
import os
import subprocess

import psycopg
import pytest

from acctd.bench.pgcluster import Cluster
from tests.central.gateways import UTC, commit_drain, gateway, status, wait

pytestmark = pytest.mark.peers
# drains half an hour ago: well inside keep-shipped (3600 s) however long a
# loaded machine takes, so the outbox still holds 4 and 5 at the promotion
NOW = dt.datetime.now(UTC) - dt.timedelta(minutes=30)


@pytest.fixture
def pair(cluster):   # (the session cluster only to skip where PostgreSQL cannot run)
    primary = Cluster()
    standby = Cluster()
    try:
        primary.initdb()
        primary.start()
        os.chmod(standby.dir, 0o700)
        subprocess.run([*standby.prefix, f"{standby.bindir}/pg_basebackup", "-D", standby.data,
                        "-R", "-X", "stream", "-h", primary.dir, "-p", str(primary.port),
                        "-U", "postgres"], check=True, capture_output=True, timeout=120)
        standby.start()
        yield primary, standby
    finally:
        standby.remove()
        primary.remove()


def seqs(dsn):
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT seq, count(*) FROM raw GROUP BY 1 ORDER BY 1").fetchall()


def test_standby_promoted_while_shipping(pair, tmp_path):
    primary, standby = pair
    dsn = (f"host=127.0.0.1,127.0.0.1 port={primary.port},{standby.port} user=postgres "
           "dbname=postgres target_session_attrs=read-write")
    with gateway(dsn, "gw-a", tmp_path, keep_shipped=3600) as d:
        for i in range(3):
            commit_drain(d, NOW + dt.timedelta(seconds=30 * i), [("alice", 0, 0, 1, 100 + i)])
        wait(lambda: status(d)["shipped_seq"] == 3)
        with psycopg.connect(standby.dsn(), autocommit=True) as s:
            wait(lambda: seqs(standby.dsn()) == [(1, 1), (2, 1), (3, 1)])
            s.execute("ALTER SYSTEM SET primary_conninfo = ''")   # it falls behind from here
            s.execute("SELECT pg_reload_conf()")
            wait(lambda: not s.execute("SELECT count(*) FROM pg_stat_wal_receiver")
                 .fetchone()[0])
        for i in range(3, 5):
            commit_drain(d, NOW + dt.timedelta(seconds=30 * i), [("alice", 0, 0, 1, 100 + i)])
        wait(lambda: status(d)["shipped_seq"] == 5)
        primary.kill9()
        commit_drain(d, NOW + dt.timedelta(seconds=150), [("alice", 0, 0, 1, 105)])
        with psycopg.connect(standby.dsn(), autocommit=True) as s:
            s.execute("SELECT pg_promote()")
        st = wait(lambda: (s := status(d))["state"] == "connected" and s["shipped_seq"] == 6
                  and s["backlog_drains"] == 0 and s, timeout=30)
        assert st["caught_up"]["drains"] == 3    # 4 and 5 again, and 6
    assert seqs(standby.dsn()) == [(i, 1) for i in range(1, 7)]
