"""Numbered schema migrations (acctd/store/migrations.py): a database made by
the acctd of schema 1, with its rows, comes out at the current version with
every row kept, each unit oid one UINTEGER, and each table by its one name."""

import datetime as dt

import duckdb
import pytest

from acctd.kernel import abi
from acctd.store import migrations
from acctd.store.database import Storage, StorageError

T0 = dt.datetime(2026, 11, 1, 12, 0)

# What the daemon of schema 1 left: its base tables plus those made on first use.
SCHEMA_1 = """
CREATE TYPE period AS ENUM ('hour', 'day', 'week', 'month');
CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
CREATE TABLE raw (ts TIMESTAMP NOT NULL, unit_oid UINTEGER NOT NULL, policy_oid UINTEGER NOT NULL,
    dir UTINYINT NOT NULL, packets UBIGINT NOT NULL, bytes UBIGINT NOT NULL);
CREATE TABLE summary (kind period NOT NULL, period_start TIMESTAMP NOT NULL,
    unit_oid UINTEGER NOT NULL, policy_oid UINTEGER NOT NULL, dir UTINYINT NOT NULL,
    packets UBIGINT NOT NULL, bytes UBIGINT NOT NULL,
    PRIMARY KEY (kind, period_start, unit_oid, policy_oid, dir));
CREATE TABLE checkpoint (map VARCHAR NOT NULL, chunk INTEGER NOT NULL, n INTEGER NOT NULL,
    key_type VARCHAR NOT NULL, val_type VARCHAR NOT NULL, keys BLOB NOT NULL,
    vals BLOB NOT NULL, PRIMARY KEY (map, chunk));
CREATE TABLE syspolicy (unit_oid UINTEGER PRIMARY KEY, bits UINTEGER NOT NULL);
CREATE TABLE quota (unit_oid VARCHAR PRIMARY KEY, spec VARCHAR NOT NULL);
CREATE TABLE quota_state (id INTEGER PRIMARY KEY, state VARCHAR NOT NULL);
CREATE TABLE sessions (id BIGINT PRIMARY KEY, unit_oid VARCHAR NOT NULL, addr VARCHAR NOT NULL,
    source VARCHAR NOT NULL, start TIMESTAMP NOT NULL, mac VARCHAR NOT NULL,
    nas VARCHAR NOT NULL, port VARCHAR NOT NULL, stop TIMESTAMP, stop_cause VARCHAR NOT NULL,
    packets_in UBIGINT NOT NULL, packets_out UBIGINT NOT NULL,
    bytes_in UBIGINT NOT NULL, bytes_out UBIGINT NOT NULL);
CREATE TABLE login (unit_oid VARCHAR PRIMARY KEY, record VARCHAR NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1'), ('abi_version', '2'), ('last_drain', '7');
INSERT INTO summary VALUES ('month', '2026-11-01', 131585, 0, 1, 10, 1000),
                           ('day', '2026-11-01', 131585, 0, 1, 10, 1000);
INSERT INTO syspolicy VALUES (131585, 1);
INSERT INTO quota VALUES ('020201', '{"unit": "alice"}');
INSERT INTO quota_state VALUES (1, '{"units": {}}');
INSERT INTO sessions VALUES (1, '020201', '10.0.0.2', 'login', '2026-11-01 10:00:00', '', '', '',
    NULL, '', 1, 2, 3, 4);
INSERT INTO login VALUES ('020201', '{"oid": "020201"}');
"""


def old_database(path) -> None:
    con = duckdb.connect(str(path))
    con.execute(SCHEMA_1)
    con.close()


def test_schema_1_is_upgraded_and_keeps_every_row(tmp_path):
    path = tmp_path / "old.duckdb"
    old_database(path)
    with pytest.raises(StorageError,
                       match=f"schema version 1, this acctd reads {migrations.VERSION}: start acctd"):
        Storage(path, read_only=True)
    with Storage(path) as st:
        assert st.meta("schema_version") == str(migrations.VERSION) == "12"
        assert st.meta("last_drain") == "7"
        assert st.con.execute("SELECT count(*) FROM rollup").fetchall() == [(2,)]
        tables = {r[0] for r in st.con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert {"rollup", "sys_policy", "unit_mac"} <= tables
        assert not {"summary", "syspolicy"} & tables
        types = st.con.execute("SELECT table_name, data_type FROM duckdb_columns() "
                               "WHERE column_name = 'unit_oid'").fetchall()
        assert {t for _, t in types} == {"UINTEGER"} and len(types) == 9   # 7, account_unit, monitor
        assert st.sys_policies() == {"020201": 1}
        assert st.quotas() == {"020201": {"unit": "alice"}}
        assert st.login_records() == {"020201": {"oid": "020201"}}
        (x,) = st.sessions(open_only=True)
        assert (x.unit_oid, x.addr, x.bytes_out) == ("020201", "10.0.0.2", 4)
        assert st.sessions(unit_oid="020201")[0].id == 1
    with Storage(path, read_only=True) as st:   # now it can be read without the daemon
        assert st.quota_state() == {"units": {}}


def test_a_new_database_runs_every_step_and_a_newer_one_is_refused(tmp_path):
    path = tmp_path / "new.duckdb"
    con = duckdb.connect(str(path))
    assert migrations.upgrade(con, abi.ABI_VERSION) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    assert migrations.upgrade(con, abi.ABI_VERSION) == []     # nothing twice
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(StorageError, match="schema version 99 is newer than this acctd"):
        Storage(path)


def test_a_failing_step_leaves_the_version_it_had(tmp_path, monkeypatch):
    path = tmp_path / "old.duckdb"
    old_database(path)

    def broken(con):
        con.execute("ALTER TABLE summary RENAME TO rollup")
        raise RuntimeError("power cut")
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS[:2], (3, broken)))
    with pytest.raises(RuntimeError, match="power cut"):
        Storage(path)
    con = duckdb.connect(str(path))
    assert migrations.version_of(con) == 2   # step 2 is in, step 3 is not
    assert con.execute("SELECT count(*) FROM summary").fetchall() == [(2,)]
    con.close()


def test_the_checkpoint_of_schema_1_is_read_by_slot_and_written_on(tmp_path):
    """Step 11 keeps the whole-table checkpoint's chunks as slot rows: the
    counters load as they were, and the next commit writes on from them."""
    import numpy as np

    from acctd.store.checkpoint import counter_type, pack, type_text
    from acctd.store.rollup import rollup
    path = tmp_path / "old.duckdb"
    old_database(path)
    keys = np.zeros(5, abi.FLOW_KEY)
    keys["sport"] = np.arange(5) + 1000
    vals = np.zeros(5, abi.FLOW_VAL)
    vals["packets"], vals["bytes"] = np.arange(5) + 1, (np.arange(5) + 1) * 100
    con = duckdb.connect(str(path))
    for chunk, sl in ((0, slice(0, 3)), (1, slice(3, 5))):
        con.execute("INSERT INTO checkpoint VALUES ('acct_flows', ?, ?, ?, ?, ?, ?)",
                    [chunk, len(keys[sl]), type_text(abi.FLOW_KEY),
                     type_text(counter_type(abi.FLOW_VAL)), keys[sl].tobytes(),
                     pack(vals[sl]).tobytes()])
    con.close()
    with Storage(path) as st:
        k, v = st.load_checkpoint()["acct_flows"]
        assert (k == keys).all() and (v["packets"] == vals["packets"]).all()
        assert (v["bytes"] == vals["bytes"]).all()
        # flow 1 gone, flow 5 new, the rest moved
        k2 = np.concatenate([keys[[0, 2, 3, 4]], keys[:1]])
        k2["sport"][-1] = 2000
        v2 = np.zeros(5, abi.FLOW_VAL)
        v2["packets"] = [10, 30, 40, 50, 7]
        none = {c: np.zeros(0, t) for c, t in (("unit_oid", np.uint32), ("policy_oid", np.uint32),
                                              ("dir", np.uint8), ("packets", np.uint64),
                                              ("bytes", np.uint64))}
        st.commit(rollup(none, dt.datetime(2026, 11, 1, 13, tzinfo=dt.timezone.utc), dt.timezone.utc),
                  {"acct_flows": (k2, v2)})
    with Storage(path) as st:
        k, v = st.load_checkpoint()["acct_flows"]
    got = sorted(zip(k["sport"].tolist(), v["packets"].tolist()))
    assert got == [(1000, 10), (1002, 30), (1003, 40), (1004, 50), (2000, 7)]
