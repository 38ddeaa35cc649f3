"""DuckDB storage: summaries by upsert-add, raw retention, reports, and a checkpoint
that commits with the rollups, so a SIGKILL anywhere neither loses nor doubles a byte.

Run as a module, this file is the crashing daemon of the SIGKILL tests:
    python -m tests.unit.test_storage DB LAST_STEP [KILL_AT_STATEMENT [TOPS]]
"""

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from acctd.kernel import abi
from acctd.kernel.drain import Deltas
from acctd.model.addresses import parse_addr
from acctd.model.policies import AcctPlan, PolicySet, PolicySpec, account, local_addrs
from acctd.model.units import Unit, UnitSet, oid_ints
from acctd.store import migrations
from acctd.store.database import Storage, StorageError
from acctd.store.rollup import ALL_TRAFFIC, UNATTRIBUTED, by_key, cells, rollup, to_us

BERLIN = ZoneInfo("Europe/Berlin")
UTC = dt.timezone.utc
# drains every 10 minutes from 2026-10-24 23:00 local: the run crosses the
# autumn DST change, the day and (at step 25) nothing else
T0 = dt.datetime(2026, 10, 24, 21, 0, tzinfo=UTC)
STEP = dt.timedelta(minutes=10)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# --- a deterministic kernel: N flows whose counters only grow ------------------------

N_FLOWS = 48
LOCALS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.9"]  # .9 belongs to no unit


def kernel_keys():
    f = np.zeros(N_FLOWS, abi.FLOW_KEY)
    i = np.arange(N_FLOWS)
    f["ifindex"], f["ip_ver"] = 2, 4
    f["dir"] = i % 2
    f["proto"] = np.where(i % 3 == 0, 17, 6)
    f["sport"], f["dport"] = 40000 + i, np.where(i % 4 == 0, 80, 443)
    for k in range(N_FLOWS):
        mine = np.frombuffer(parse_addr(LOCALS[k % len(LOCALS)]), np.uint8)
        peer = np.frombuffer(parse_addr(f"192.0.2.{k}"), np.uint8)
        f["saddr"][k], f["daddr"][k] = (mine, peer) if k % 2 == abi.Dir.OUT else (peer, mine)
    return f


def kernel_vals(step):
    """Counter values after `step` drains: flow i gains ((7i + 13j) % 5) + 1 packets at drain j."""
    i = np.arange(N_FLOWS)[:, None]
    j = np.arange(1, step + 1)[None, :]
    pk = (((7 * i + 13 * j) % 5) + 1).sum(axis=1).astype(np.uint64)
    v = np.zeros(N_FLOWS, abi.FLOW_VAL)
    v["packets"], v["bytes"] = pk, pk * 100
    return v


def kernel_addrs(step):
    k = np.zeros(len(LOCALS), abi.ADDR_KEY)
    for n, a in enumerate(LOCALS):
        k["addr"][n] = np.frombuffer(parse_addr(a), np.uint8)
    v = np.zeros(len(LOCALS), abi.ADDR_VAL)
    v["packets"][:, 0] = step * (np.arange(len(LOCALS)) + 1)
    v["drop_packets"][:, 1] = step
    return k, v


def model():
    us = UnitSet([Unit("host", f"h{n}", oid=f"02000{n + 1}", addrs=(parse_addr(a),))
                  for n, a in enumerate(LOCALS[:3])])
    ps = PolicySet([PolicySpec("web", "proto tcp port 80", oid="140001"),
                    PolicySpec("udp", "proto udp", oid="140002")])
    return us, AcctPlan(us, ps, default=["web", "udp"])


def open_db(path):
    return Storage(path, BERLIN, raw_retention=365 * 86400)


def run_daemon(db, last_step, tops=False):
    """The daemon loop: resume from the checkpoint, drain, account, commit
    (with `tops`, the period tops' rows too)."""
    us, plan = model()
    uo, po = oid_ints(us), oid_ints(plan.policies)
    flows, addrs = Deltas(), Deltas()
    ck = db.load_checkpoint()
    step = 0
    if ck:
        flows.seed(*ck["acct_flows"])
        addrs.seed(*ck["acct_addrs"])
        step = (db.last_drain - T0) // STEP
    keys = kernel_keys()
    for step in range(step + 1, last_step + 1):
        d = flows.update(keys, kernel_vals(step))
        ak, av = kernel_addrs(step)
        a = addrs.update(ak, av)
        ts = T0 + step * STEP
        c = account(d.keys, d.values["packets"], d.values["bytes"],
                    us.match(local_addrs(d.keys)), plan, ts.astimezone(BERLIN))
        by = by_key(d.keys, d.values, a.keys, a.values) if tops else None
        db.commit(rollup(cells(c, uo, po), ts, BERLIN, by),
                  {"acct_flows": flows.previous, "acct_addrs": addrs.previous},
                  matched={"acct_flows": (d.base, d.prev), "acct_addrs": (a.base, a.prev)})


class KillAt(Storage):
    """Storage that SIGKILLs its own process at the n-th SQL statement of its commits."""

    def __init__(self, *a, kill_at, **kw):
        super().__init__(*a, **kw)
        self.kill_at, self.n = kill_at, 0

    def _sql(self, sql, params=None):
        self.n += 1
        if self.n == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return super()._sql(sql, params)


def rollup_rows(db):
    return db.con.execute("SELECT kind::VARCHAR, epoch_us(period_start), unit_oid, policy_oid, "
                          "dir, packets, bytes FROM rollup ORDER BY ALL").fetchall()


def check_consistent(path, tops=False):
    """The file holds exactly the drains up to its checkpoint: returns that step.
    tops: the period tops were written, and hold exactly those drains too."""
    with open_db(path) as db:
        return check_consistent_open(db, tops)


def check_consistent_open(db, tops=False):
    ck = db.load_checkpoint()
    if not ck:
        assert db.con.execute("SELECT count(*) FROM rollup").fetchall() == [(0,)]
        assert db.con.execute("SELECT count(*) FROM raw").fetchall() == [(0,)]
        assert db.con.execute("SELECT count(*) FROM rollup_by").fetchall() == [(0,)]
        return 0
    step = (db.last_drain - T0) // STEP
    keys, vals = ck["acct_flows"]
    assert (keys == kernel_keys()).all()
    assert (vals == kernel_vals(step)).all()
    ak, av = ck["acct_addrs"]
    assert (av == kernel_addrs(step)[1]).all()
    want = int(vals["packets"].sum())
    # all traffic: each unit's total plus the unattributed row (hosts only, no groups)
    for kind in ("hour", "day", "week", "month"):
        got = db.con.execute("SELECT sum(packets), sum(bytes) FROM rollup WHERE kind = ? "
                             "AND policy_oid = 0", [kind]).fetchall()[0]
        assert got == (want, want * 100), kind
    got = db.con.execute("SELECT sum(packets) FROM raw WHERE policy_oid = 0").fetchall()
    assert got == [(want,)]
    assert db.con.execute("SELECT count(DISTINCT ts) FROM raw").fetchall() == [(step,)]
    # the period tops: the days' rows (rest rows included) add up to the counters
    for by, (p, b) in (("port", (want, want * 100)), ("vlan", (want, want * 100)),
                       ("addr", (int(av["packets"].sum()), 0))):
        got = db.con.execute("SELECT sum(packets_in + packets_out), sum(bytes_in + bytes_out) "
                             "FROM rollup_by WHERE keyed_by = ? AND kind = 'day'",
                             [by]).fetchall()[0]
        assert got == ((p, b) if tops else (None, None)), by
    return step


def reference(tmp_path, last_step, tops=False):
    path = tmp_path / "reference.duckdb"
    with open_db(path) as db:
        run_daemon(db, last_step, tops)
        return rollup_rows(db) + tops_rows(db)


def tops_rows(db):
    return db.con.execute("SELECT keyed_by::VARCHAR, kind::VARCHAR, epoch_us(period_start), "
                          "key_hi, key_lo, packets_in, packets_out, bytes_in, bytes_out "
                          "FROM rollup_by ORDER BY ALL").fetchall()


# --- tests ------------------------------------------------------------------------

def test_commit_reopen_gives_back_checkpoint_and_rollups(tmp_path):
    path = tmp_path / "a.duckdb"
    with open_db(path) as db:
        run_daemon(db, 9)
        rows = rollup_rows(db)
    with open_db(path) as db:
        assert rollup_rows(db) == rows
        assert db.meta("schema_version") == str(migrations.VERSION)
        assert db.meta("abi_version") == str(abi.ABI_VERSION)
    assert check_consistent(path) == 9
    # exact hand numbers: h0 (10.0.0.1) has flows 0, 4, 8, ... ; flow 0 is UDP in, dport 80
    want_udp = int(kernel_vals(9)["packets"][0::12].sum())  # i % 12 == 0: h0, UDP
    with open_db(path) as db:
        got = db.con.execute("SELECT packets FROM rollup WHERE kind = 'month' AND unit_oid = "
                             "? AND policy_oid = ? AND dir = 0", [0x020001, 0x140002]).fetchall()
        assert got == [(want_udp,)]


def test_upsert_adds_and_resumed_run_equals_uninterrupted(tmp_path):
    path = tmp_path / "b.duckdb"
    for last in (3, 3, 11, 30):  # restarting with nothing new to do changes nothing
        with open_db(path) as db:
            run_daemon(db, last)
    with open_db(path) as db:
        assert rollup_rows(db) == reference(tmp_path, 30)
    assert check_consistent(path) == 30


def test_uncommitted_transaction_leaves_previous_commit(tmp_path):
    path = tmp_path / "c.duckdb"
    with open_db(path) as db:
        run_daemon(db, 4)
        before = rollup_rows(db)
        db.con.execute("BEGIN")
        db.con.execute("UPDATE rollup SET packets = packets + 1")
        db.con.execute("DELETE FROM checkpoint_vals")
    # closed without COMMIT
    with open_db(path) as db:
        assert rollup_rows(db) == before
    assert check_consistent(path) == 4


def test_failed_commit_rolls_back_and_connection_stays_usable(tmp_path):
    path = tmp_path / "d.duckdb"
    with open_db(path) as db:
        run_daemon(db, 2)
        before = rollup_rows(db)
        k, v = kernel_keys(), kernel_vals(3)
        r = rollup({"unit_oid": np.array([0x020001], np.uint32),
                    "policy_oid": np.array([ALL_TRAFFIC], np.uint32),
                    "dir": np.array([0], np.uint8), "packets": np.array([1], np.uint64),
                    "bytes": np.array([1], np.uint64)}, T0 + 3 * STEP, BERLIN)
        with pytest.raises(ValueError, match="48 keys, 47 values"):
            db.commit(r, {"acct_flows": (k, v[:47])})
        assert rollup_rows(db) == before
        run_daemon(db, 5)
    assert check_consistent(path) == 5


def test_checkpoint_of_another_layout_is_refused(tmp_path):
    with open_db(tmp_path / "e.duckdb") as db:
        run_daemon(db, 1)
        other = np.dtype([("packets", "<u4"), ("bytes", "<u8"), ("last_ns", "<u8")])
        with pytest.raises(StorageError, match="another layout"):
            db.load_checkpoint({"acct_flows": (abi.FLOW_KEY, other)})
        with pytest.raises(StorageError, match="another layout"):
            db.load_checkpoint({"acct_flows": (abi.ADDR_KEY, abi.FLOW_VAL)})
        assert set(db.load_checkpoint()) == {"acct_flows", "acct_addrs"}


def test_checkpoint_keeps_counters_only(tmp_path):
    keys, vals = kernel_keys(), kernel_vals(3)
    vals["first_ns"], vals["last_ns"], vals["tcp_flags"] = 5, 7, 0x12
    with open_db(tmp_path / "j.duckdb") as db:
        db.commit(rollup(cells_none(), T0, BERLIN), {"acct_flows": (keys, vals)})
        k, v = db.load_checkpoint()["acct_flows"]
    assert v.dtype == abi.FLOW_VAL and (k == keys).all()
    assert (v["packets"] == vals["packets"]).all() and (v["bytes"] == vals["bytes"]).all()
    assert not v["first_ns"].any() and not v["last_ns"].any() and not v["tcp_flags"].any()


def test_checkpoint_spans_chunks_and_keeps_empty_maps(tmp_path, monkeypatch):
    monkeypatch.setattr("acctd.store.checkpoint.CHUNK", 5)
    with open_db(tmp_path / "f.duckdb") as db:
        run_daemon(db, 2)  # 48 flows: 10 chunks
        assert db.con.execute("SELECT count(*) FROM checkpoint_vals WHERE map = 'acct_flows'"
                              ).fetchall() == [(10,)]
        assert check_consistent_open(db) == 2
        db.commit(rollup(cells_none(), T0 + 3 * STEP, BERLIN),
                  {"acct_flows": (kernel_keys()[:0], kernel_vals(0)[:0]),
                   "acct_addrs": kernel_addrs(2)})
        ck = db.load_checkpoint()
        assert len(ck["acct_flows"][0]) == 0 and len(ck["acct_addrs"][0]) == 4


def cells_none():
    return {"unit_oid": np.zeros(0, np.uint32), "policy_oid": np.zeros(0, np.uint32),
            "dir": np.zeros(0, np.uint8), "packets": np.zeros(0, np.uint64),
            "bytes": np.zeros(0, np.uint64)}


def test_raw_retention_deletes_old_rows_at_commit(tmp_path):
    with Storage(tmp_path / "g.duckdb", BERLIN, raw_retention=3600) as db:
        run_daemon(db, 12)  # two hours of drains, 10 minutes apart
        ts = [r[0] for r in db.con.execute("SELECT DISTINCT epoch_us(ts) FROM raw ORDER BY 1")
              .fetchall()]
        # kept: the last drain and everything up to an hour before it, inclusive
        assert ts == [to_us(T0 + s * STEP) for s in range(6, 13)]
        # summaries are not subject to retention
        assert db.con.execute("SELECT count(DISTINCT period_start) FROM rollup "
                              "WHERE kind = 'hour'").fetchall() == [(3,)]


def test_reports(tmp_path):
    with open_db(tmp_path / "h.duckdb") as db:
        run_daemon(db, 26)
        now = T0 + 26 * STEP  # 2026-10-25 01:20 UTC: 02:20 local, the second time
        vals = [kernel_vals(s)["packets"].astype(np.int64) for s in range(27)]
        h0 = np.arange(N_FLOWS) % 4 == 0  # the flows of unit 020001
        dirs = np.arange(N_FLOWS) % 2

        def total(s0, s1, d):  # h0's packets of drains s0+1 .. s1 in direction d
            return int((vals[s1] - vals[s0])[h0 & (dirs == d)].sum())

        rows = {(r["policy_oid"], r["dir"]): r for r in db.unit_totals("020001", now)}
        # h0's flows: i % 4 == 0, so all in and to port 80; UDP when i % 3 == 0
        assert set(rows) == {(0, 0), (0x140001, 0), (0x140002, 0)}
        web = rows[0x140001, 0]
        assert web["month"][0] == int(vals[26][h0 & (np.arange(N_FLOWS) % 3 != 0)].sum())
        r = rows[0, 0]
        # drains end at T0 + 10 min * s; the hour from 01:00 UTC holds s = 24, 25, 26
        assert r["flow"] == (total(25, 26, 0), 100 * total(25, 26, 0))
        assert r["hour"][0] == total(23, 26, 0)
        # the local day began 2026-10-24 22:00 UTC: s = 6 onwards
        assert r["day"][0] == total(5, 26, 0)
        assert r["week"][0] == r["month"][0] == total(0, 26, 0)

        st = [x for x in db.stat(0x020001, "week", now) if x["policy_oid"] == 0]
        assert [x["label"] for x in st] == ["2026-10-24T23:00:00+02:00",
                                            "2026-10-25T00:00:00+02:00",
                                            "2026-10-25T01:00:00+02:00",
                                            "2026-10-25T02:00:00+02:00",
                                            "2026-10-25T02:00:00+01:00"]
        assert sum(x["packets"] for x in st) == total(0, 26, 0)
        assert st[-1]["packets"] == total(23, 26, 0)
        assert st[-2]["packets"] == total(17, 23, 0)  # the first 02:00
        assert db.stat("020001", "month", now) == db.stat("020001", "week", now)
        with pytest.raises(ValueError, match="week"):
            db.stat("020001", "year", now)

        rep = db.month_report(now)
        assert rep["unit_oid"].tolist()[0] == UNATTRIBUTED  # sorted by unit
        mine = rep["unit_oid"] == 0x020001
        assert rep["policy_oid"][mine].tolist() == [0, 0x140001, 0x140002]
        assert int(rep["packets"][rep["policy_oid"] == 0].sum()) == int(vals[26].sum())
        assert db.unit_totals("02FFFF", now) == []


def test_rollup_rows_are_added_to_or_created_in_one_commit(tmp_path):
    """The upsert: a commit with cells that exist and cells that are new adds
    to the first and creates the second; one whose cells all exist only adds."""
    def commit(db, units, packets, minute):
        n = len(units)
        r = rollup({"unit_oid": np.array(units, np.uint32), "policy_oid": np.zeros(n, np.uint32),
                    "dir": np.zeros(n, np.uint8), "packets": np.array(packets, np.uint64),
                    "bytes": 10 * np.array(packets, np.uint64)},
                   T0 + dt.timedelta(minutes=minute), BERLIN)
        db.commit(r, {})

    def hours(db):
        return db.con.execute("SELECT unit_oid, packets, bytes FROM rollup WHERE kind = 'hour' "
                              "ORDER BY unit_oid").fetchall()
    with open_db(tmp_path / "u.duckdb") as db:
        commit(db, [1, 2], [5, 7], 1)
        commit(db, [2, 3], [11, 13], 2)
        assert hours(db) == [(1, 5, 50), (2, 18, 180), (3, 13, 130)]
        commit(db, [3, 1], [1, 2], 3)
        assert hours(db) == [(1, 7, 70), (2, 18, 180), (3, 14, 140)]
        assert db.con.execute("SELECT count(*) FROM rollup").fetchall() == [(3 * 4,)]
        # one cell given twice (rows by hand: rawdata, tests): added up, new or not
        commit(db, [4, 2, 4, 2], [1, 2, 3, 4], 4)
        assert hours(db) == [(1, 7, 70), (2, 24, 240), (3, 14, 140), (4, 4, 40)]
        assert db.con.execute("SELECT count(*) FROM raw WHERE unit_oid = 4").fetchall() == [(2,)]


def test_wrong_schema_version_is_refused(tmp_path):
    path = tmp_path / "i.duckdb"
    with open_db(path) as db:
        db.con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StorageError, match="schema version 99"):
        open_db(path)


def spawn(path, last_step, kill_at=0, tops=False, **kw):
    return subprocess.Popen([sys.executable, "-m", "tests.unit.test_storage", str(path),
                             str(last_step), str(kill_at), *(["tops"] if tops else [])],
                            cwd=ROOT, **kw)


class Counted(Storage):
    """Storage that counts the SQL statements of its commits."""

    n = 0

    def _sql(self, sql, params=None):
        self.n += 1
        return super()._sql(sql, params)


def statements_of_a_resumed_commit(path) -> int:
    with open_db(path) as db:
        run_daemon(db, 1)
    with Counted(path, BERLIN, raw_retention=365 * 86400) as db:
        run_daemon(db, 2)
        return db.n


def test_sigkill_inside_commit_at_every_kind_of_statement(tmp_path):
    """Kill at statement n of the commits: before, inside and just after a COMMIT."""
    # A commit that resumed from a checkpoint is BEGIN, raw, rollup update,
    # rollup insert, retention, a delete and an insert of the flows' changed
    # counter row, the same for the addresses', the two deletes of maps no
    # longer named, meta, COMMIT (no key is new: nothing appended).
    n = statements_of_a_resumed_commit(tmp_path / "count.duckdb")
    assert n == 13
    path = tmp_path / "k.duckdb"
    assert spawn(path, 1).wait(timeout=30) == 0  # a database with a checkpoint
    # Each child resumes, commits once, then dies at statement r of its second
    # commit, having run the ones before it: r = 1 is "right after a COMMIT
    # returned", r = n "everything but the COMMIT".
    steps = [1]
    for r in range(1, n + 1):
        p = spawn(path, 40, n + r)
        assert p.wait(timeout=30) == -signal.SIGKILL
        steps.append(check_consistent(path))
    assert steps == list(range(1, n + 2))  # exactly the first commit of each child survived
    assert spawn(path, 40).wait(timeout=30) == 0
    assert check_consistent(path) == 40
    with open_db(path) as db:
        assert rollup_rows(db) == reference(tmp_path, 40)


def test_sigkill_at_each_statement_of_the_first_commits_with_the_period_tops(tmp_path):
    """With the period tops (their upsert, the first day's trims, tops_open):
    a kill at any one of the first 30 statements, each on a database of its
    own, leaves the drains up to the checkpoint and their tops, exactly."""
    kids = [(tmp_path / f"s{n}.duckdb", n) for n in range(1, 31)]
    procs = [spawn(path, 3, n, tops=True) for path, n in kids]
    codes = [p.wait(timeout=60) for p in procs]
    assert codes.count(-signal.SIGKILL) == len(kids)  # three commits take more statements
    steps = [check_consistent(path, tops=True) for path, _ in kids]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] >= 1


@pytest.mark.parametrize("tops", [False, True], ids=["rollups", "with-period-tops"])
def test_sigkill_at_random_moments(tmp_path, tops):
    """An outside SIGKILL at seeded random delays while the daemon commits in a loop
    (and with the period tops, acctd.store.rollup.BY, which commit with it)."""
    path = tmp_path / "r.duckdb"
    rnd = random.Random(3)
    steps = [0]
    for _ in range(4):
        p = spawn(path, 10_000, tops=tops, stdout=subprocess.PIPE)
        assert p.stdout.readline() == b"ready\n"  # imported, database open
        if len(steps) == 1:  # one writer: while the daemon runs, nobody else opens the file
            with pytest.raises(StorageError, match="cannot open .*lock"):
                open_db(path)
        # a commit takes a few ms here, so this lands anywhere in one of them
        time.sleep(0.05 + rnd.random() * 0.15)
        p.send_signal(signal.SIGKILL)
        assert p.wait(timeout=30) == -signal.SIGKILL
        p.stdout.close()
        steps.append(check_consistent(path, tops))
    assert steps == sorted(steps) and steps[-1] > steps[1] > 0
    step = steps[-1]
    assert spawn(path, step + 3, tops=tops).wait(timeout=30) == 0
    assert check_consistent(path, tops) == step + 3
    with open_db(path) as db:
        assert rollup_rows(db) + tops_rows(db) == reference(tmp_path, step + 3, tops)
        assert bool(tops_rows(db)) == tops


if __name__ == "__main__":
    db_path, last, kill = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if kill:
        store = KillAt(db_path, BERLIN, raw_retention=365 * 86400, kill_at=kill)
    else:
        store = open_db(db_path)
    print("ready", flush=True)
    run_daemon(store, last, sys.argv[4:] == ["tops"])
    store.close()
