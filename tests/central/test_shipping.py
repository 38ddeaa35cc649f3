"""Drains shipped to a real PostgreSQL: exactly once, in order, by COPY into
month partitions, retention by dropping them; a newer schema refused."""

import datetime as dt

import psycopg
import pytest

from acctd.services.central import schema, ship
from tests.central.gateways import UTC, commit_drain, gateway, status, wait

pytestmark = pytest.mark.peers


def pg_rows(dsn):
    with psycopg.connect(dsn) as c:
        return c.execute(
            "SELECT g.name, r.seq, r.ts, r.unit_oid, r.policy_oid, r.dir, r.packets, r.bytes "
            "FROM raw r JOIN gateway g ON g.id = r.gateway_id ORDER BY 1, 2, 4, 5, 6").fetchall()


def test_drains_reach_postgres_once_in_month_partitions(central_dsn, tmp_path):
    t1 = dt.datetime(2026, 11, 30, 23, 59, 30, tzinfo=UTC)
    t2 = dt.datetime(2026, 12, 1, 0, 0, 30, tzinfo=UTC)
    with gateway(central_dsn, "gw-a", tmp_path) as d:
        commit_drain(d, t1, [("alice", 0, 0, 10, 1500), ("alice", "ip", 0, 10, 1500)])
        commit_drain(d, t2, [("alice", 0, 1, 3, 300), ("bob", 0, 0, 1, 60)])
        commit_drain(d, t2 + dt.timedelta(seconds=30), [])
        st = wait(lambda: (s := status(d))["backlog_drains"] == 0 and s["shipped_seq"] == 3
                  and s)
        assert st["state"] == "connected" and st["shipped_drains"] == 3
        a, b = int(d.snapshot.unit("alice").oid, 16), int(d.snapshot.unit("bob").oid, 16)
        ip = int(d.snapshot.policies.policies[0].oid, 16)
    assert pg_rows(central_dsn) == [
        ("gw-a", 1, t1, a, 0, 0, 10, 1500), ("gw-a", 1, t1, a, ip, 0, 10, 1500),
        ("gw-a", 2, t2, a, 0, 1, 3, 300), ("gw-a", 2, t2, b, 0, 0, 1, 60)]
    with psycopg.connect(central_dsn, autocommit=True) as c:
        parts = [r[0] for r in c.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'raw'::regclass ORDER BY 1").fetchall()]
        assert parts == ["raw_202611", "raw_202612"]
        assert c.execute("SELECT version FROM acctd_schema").fetchone() == (schema.VERSION,)
        # the outbox row shipped again (a kill after PostgreSQL's COMMIT,
        # before the outbox's DELETE): stored already, nothing added
        gw = c.execute("SELECT id FROM gateway WHERE name = 'gw-a'").fetchone()[0]
        blob = ship.pack({"unit_oid": [a], "policy_oid": [0], "dir": [1], "packets": [3],
                          "bytes": [300]})
        assert ship.ship(c, gw, [(2, int(t2.timestamp() * 1e6), blob)]) == (3, 0)
        # retention: one month kept before January's
        assert ship.drop_old_partitions(c, 1, dt.datetime(2027, 1, 15, tzinfo=UTC)) == \
            ["raw_202611"]
    assert [r[1] for r in pg_rows(central_dsn)] == [2, 2]


def test_a_newer_central_schema_is_refused_and_drains_wait(central_dsn, tmp_path):
    with psycopg.connect(central_dsn, autocommit=True) as c:
        schema.migrate(c)
        c.execute("UPDATE acctd_schema SET version = 99")
    now = dt.datetime(2026, 12, 2, 10, tzinfo=UTC)
    with gateway(central_dsn, "gw-a", tmp_path) as d:
        commit_drain(d, now, [("alice", 0, 0, 1, 100)])
        st = wait(lambda: (s := status(d))["state"] == "refused" and s)
        assert st["error"] == ("central schema version 99 is newer than this acctd (3): "
                               "upgrade acctd on this gateway; it will not write to that server")
        assert st["backlog_drains"] == 1 and st["shipped_drains"] == 0
    assert pg_rows(central_dsn) == []


def test_a_second_database_under_a_used_gateway_name_is_refused(central_dsn, tmp_path):
    now = dt.datetime(2026, 12, 2, 10, tzinfo=UTC)
    with gateway(central_dsn, "gw-a", tmp_path / "one") as d:
        for i in range(2):
            commit_drain(d, now, [("alice", 0, 0, 1, 100)])
        wait(lambda: status(d)["shipped_seq"] == 2)
    with gateway(central_dsn, "gw-a", tmp_path / "two") as d:
        st = wait(lambda: (s := status(d))["state"] == "refused" and s)
        assert st["error"] == (
            "gateway 'gw-a' has shipped drains up to 2 and this database has made 0: another "
            "gateway uses that name (or this database is new or restored); give this one its "
            "own gateway name")


def test_the_gateway_drops_partitions_past_retention(central_dsn, tmp_path):
    with psycopg.connect(central_dsn, autocommit=True) as c:
        schema.migrate(c)
        for m in (dt.datetime(2025, 1, 1, tzinfo=UTC), ship.month_of(dt.datetime.now(UTC))):
            with c.transaction():
                ship.ensure_partitions(c, [m])
    old = "raw_202501"
    with gateway(central_dsn, "gw-a", tmp_path, retention_months=2) as d:
        wait(lambda: status(d)["state"] == "connected")
        with psycopg.connect(central_dsn) as c:
            parts = wait(lambda: (p := [r[0] for r in c.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'raw'::regclass").fetchall()]) and old not in p and p)
    assert parts == [ship.partition_name(ship.month_of(dt.datetime.now(UTC)))]


def test_another_kind_rides_the_same_outbox_in_order(central_dsn, tmp_path, monkeypatch):
    """How the billing ledger will ship: a row of its own kind, enqueued in a
    commit's transaction, stored by its shipper between the drains around it."""
    from acctd.services.central import CentralService
    now = dt.datetime(2026, 12, 2, 10, tzinfo=UTC)
    with psycopg.connect(central_dsn, autocommit=True) as c:
        c.execute("CREATE TABLE other_kind (gateway_id smallint, seq bigint, entry text)")

    def store(conn, gateway_id, items):
        for seq, _, payload in items:
            conn.execute("INSERT INTO other_kind VALUES (%s, %s, %s)",
                         (gateway_id, seq, payload.decode()))
    monkeypatch.setitem(ship.SHIPPERS, 7, store)
    with gateway(central_dsn, "gw-a", tmp_path) as d:
        svc = d.service(CentralService)
        commit_drain(d, now, [("alice", 0, 0, 1, 100)])
        with d.lock:
            d.storage.con.execute("BEGIN")
            svc.enqueue(d.storage, 7, now, 1, b"alice pays 5")
            d.storage.con.execute("COMMIT")
        commit_drain(d, now, [("alice", 0, 0, 1, 200)])
        wait(lambda: status(d)["shipped_seq"] == 3)
        monkeypatch.delitem(ship.SHIPPERS, 7)
        with d.lock:
            d.storage.con.execute("BEGIN")
            svc.enqueue(d.storage, 7, now, 1, b"bob pays 3")
            d.storage.con.execute("COMMIT")
        commit_drain(d, now, [("alice", 0, 0, 1, 300)])
        st = wait(lambda: (s := status(d))["state"] == "refused" and s)
        assert st["error"] == ("the outbox holds rows of kind 7, which this acctd cannot ship; "
                               "they wait")
        assert st["shipped_seq"] == 3 and st["backlog_drains"] == 2
    with psycopg.connect(central_dsn) as c:
        assert c.execute("SELECT seq, entry FROM other_kind").fetchall() == [(2, "alice pays 5")]
    assert [(r[1], r[7]) for r in pg_rows(central_dsn)] == [(1, 100), (3, 200)]


def test_central_turned_on_by_a_reload(central_dsn, tmp_path):
    from acctd import config
    from acctd.services.central import CentralService
    from tests.unit.daemon_stub import ALICE, daemon_stub
    path = tmp_path / "acctd.toml"
    path.write_text(ALICE)
    with daemon_stub(config.load(str(path)), tmp_path=tmp_path) as d:
        assert d.service(CentralService).status() is None
        path.write_text(ALICE + f'\n[central]\ndsn = "{central_dsn}"\ngateway = "gw-r"\n')
        d.reload()
        commit_drain(d, dt.datetime(2026, 12, 2, 10, tzinfo=UTC), [("alice", 0, 0, 1, 100)])
        wait(lambda: (s := status(d))["state"] == "connected" and s["shipped_seq"] == 1)
        path.write_text(ALICE)
        d.reload()
        assert d.service(CentralService).status() is None
        assert d.service(CentralService)._thread is None
    assert [r[:2] for r in pg_rows(central_dsn)] == [("gw-r", 1)]
