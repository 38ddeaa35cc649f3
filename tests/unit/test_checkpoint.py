"""The checkpoint by slot (acctd/store/checkpoint.py) with flows ending and
starting at every drain: it loads exactly the counters of the last commit,
whether it found the slots by the drain's own join (drain.Delta) or by key;
a kill -9 at any statement leaves that commit or the one before; and the file
holds at most twice the live flows.

Run as a module, this file is the crashing daemon of the kill test:
    python -m tests.unit.test_checkpoint DB LAST_STEP KILL_AT_STATEMENT
"""

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from acctd.kernel import abi
from acctd.kernel.drain import Deltas
from acctd.store import checkpoint
from acctd.store.database import Storage
from acctd.store.rollup import rollup
from tests.unit.test_storage import KillAt

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
STEP = dt.timedelta(minutes=1)
TYPES = {"acct_flows": (abi.FLOW_KEY, abi.FLOW_VAL)}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL_CHUNK = 8  # several counter rows from a few dozen flows


# --- a kernel whose flows end and start: flow i is born at drain i // 4 and
# --- lives 1 to 5 drains; at each drain it gains (i % 3) + 1 packets

def born(i):
    return i // 4


def dies(i):
    return born(i) + i % 5


def kernel(step):
    """The read at drain `step`: live flows in hash-bucket-like order (the new
    ones among the old), with counters since their birth."""
    ids = np.array([i for i in range(4 * step + 4) if born(i) <= step <= dies(i)], np.int64)
    ids = ids[np.argsort((ids * 2654435761) % (1 << 32), kind="stable")]
    keys = np.zeros(len(ids), abi.FLOW_KEY)
    keys["ifindex"], keys["ip_ver"], keys["proto"] = 2, 4, 17
    keys["sport"], keys["dport"] = ids, 53
    vals = np.zeros(len(ids), abi.FLOW_VAL)
    vals["packets"] = (step - ids // 4 + 1) * (ids % 3 + 1)
    vals["bytes"] = vals["packets"] * 100
    vals["last_ns"] = step  # not a counter: never checkpointed
    return keys, vals


def truth(step):
    keys, vals = kernel(step)
    return dict(zip(keys["sport"].tolist(), vals["packets"].tolist()))


def gained(step):
    """Packets the flows gained at drain `step`: what its deltas must add up to."""
    return sum(i % 3 + 1 for i in range(4 * step + 4) if born(i) <= step <= dies(i))


def nothing():
    return {c: np.zeros(0, t) for c, t in (("unit_oid", np.uint32), ("policy_oid", np.uint32),
                                          ("dir", np.uint8), ("packets", np.uint64),
                                          ("bytes", np.uint64))}


def loaded(db):
    k, v = db.load_checkpoint(TYPES)["acct_flows"]
    assert not v["last_ns"].any()
    got = dict(zip(k["sport"].tolist(), v["packets"].tolist()))
    assert len(got) == len(k)  # each key once
    assert (v["bytes"] == v["packets"] * 100).all()
    return got


def slots(db):
    return db.con.execute("SELECT count(*) FROM checkpoint_keys WHERE map = 'acct_flows'"
                          ).fetchall()[0][0]


def drain(db, deltas, step, matched=True):
    """One drain of the daemon: deltas against the last read, then the commit."""
    keys, vals = kernel(step)
    d = deltas.update(keys, vals)
    db.commit(rollup(nothing(), T0 + step * STEP, UTC), {"acct_flows": (keys, vals)},
              matched={"acct_flows": (d.base, d.prev)} if matched else None)
    return int(d.values["packets"].sum())


def resume(db):
    """Where a (re)started daemon begins: the loaded checkpoint and its step."""
    deltas = Deltas()
    ck = db.load_checkpoint(TYPES)
    if not ck:
        return deltas, -1
    deltas.seed(*ck["acct_flows"])
    return deltas, (db.last_drain - T0) // STEP


# --- tests ------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["the drains' join", "by key", "reloaded each drain"])
def test_churning_flows_load_exactly_and_the_file_stays_within_twice_the_live(
        tmp_path, monkeypatch, how):
    monkeypatch.setattr(checkpoint, "CHUNK", SMALL_CHUNK)
    path = tmp_path / "c.duckdb"
    with Storage(path, UTC) as db:
        deltas = Deltas()
        sizes = []
        for step in range(40):
            counted = drain(db, deltas, step, matched=how != "by key")
            assert counted == gained(step)  # every packet once, new flows and old
            live = len(kernel(step)[0])
            sizes.append(slots(db))
            assert live <= sizes[-1] <= 2 * live + 4  # 4: one drain's new flows
            if how == "reloaded each drain":  # the Image the load leaves, and the join by key
                assert loaded(db) == truth(step)
                deltas, _ = resume(db)
        # slots were appended (no rewrite) and the map written afresh, both
        assert any(b > a for a, b in zip(sizes, sizes[1:]))
        assert any(b < a for a, b in zip(sizes, sizes[1:]))
    with Storage(path, UTC) as db:
        assert loaded(db) == truth(39)


def test_a_quiet_map_writes_no_row_and_a_busy_one_only_its_counters(tmp_path):
    path = tmp_path / "q.duckdb"
    keys, vals = kernel(3)

    def rows_written(vals_now):
        before = len(calls)
        db.commit(rollup(nothing(), T0, UTC), {"acct_flows": (keys, vals_now)})
        return [c for c in calls[before:] if "checkpoint" in c]
    calls = []
    with Storage(path, UTC) as db:
        db._sql = lambda sql, params=None, run=db._sql: calls.append(sql) or run(sql, params)
        rows_written(vals)
        # nothing moved: no key and no counter row is written
        assert [c for c in rows_written(vals) if "INSERT" in c] == []
        moved = vals.copy()
        moved["packets"] += 1
        moved["bytes"] += 100
        written = rows_written(moved)
        assert [c.split(" (")[0] for c in written if "INSERT" in c] == \
            ["INSERT INTO checkpoint_vals VALUES"]
    with Storage(path, UTC) as db:
        assert loaded(db) == {k: v + 1 for k, v in truth(3).items()}


@pytest.mark.parametrize("which", ["an old flow", "a new flow"])
def test_a_key_read_twice_loads_twice_in_the_order_read(tmp_path, which):
    """A reaped flow the datapath made again before the read: both entries,
    the one read first also loaded first (the one the next drain's deltas find)."""
    with Storage(tmp_path / "t.duckdb", UTC) as db:
        deltas = Deltas()
        drain(db, deltas, 3)
        keys, vals = kernel(4)
        old = np.isin(keys["sport"], kernel(3)[0]["sport"])
        i = np.flatnonzero(old == (which == "an old flow"))[0]
        keys = np.concatenate([keys, keys[i:i + 1]])
        vals = np.concatenate([vals, vals[i:i + 1]])
        vals["packets"][-1] += 1000
        d = deltas.update(keys, vals)
        db.commit(rollup(nothing(), T0 + 4 * STEP, UTC), {"acct_flows": (keys, vals)},
                  matched={"acct_flows": (d.base, d.prev)})
        k, v = db.load_checkpoint(TYPES)["acct_flows"]
    twice = np.flatnonzero(k["sport"] == keys["sport"][i])
    assert v["packets"][twice].tolist() == [vals["packets"][i], vals["packets"][i] + 1000]
    assert sorted(zip(k["sport"].tolist(), v["packets"].tolist())) == \
        sorted(zip(keys["sport"].tolist(), vals["packets"].tolist()))


def test_a_failed_commit_leaves_the_file_and_the_next_one_writes_from_it(tmp_path):
    with Storage(tmp_path / "f.duckdb", UTC) as db:
        deltas = Deltas()
        for step in range(6):
            drain(db, deltas, step)
        keys, vals = kernel(6)
        with pytest.raises(ValueError, match="values"):
            db.commit(rollup(nothing(), T0 + 6 * STEP, UTC), {"acct_flows": (keys, vals[:-1])})
        assert loaded(db) == truth(5)
        deltas, step = resume(db)  # as the daemon does after a failed drain
        assert step == 5
        for step in range(6, 12):
            assert drain(db, deltas, step) == gained(step)
            assert loaded(db) == truth(step)


def spawn(path, last_step, kill_at):
    return subprocess.Popen([sys.executable, "-m", "tests.unit.test_checkpoint", str(path),
                             str(last_step), str(kill_at)], cwd=ROOT)


def test_a_kill_at_any_statement_leaves_the_last_commit_or_the_one_before(tmp_path):
    """Each child resumes a copy of one database (with dead slots) and dies at
    statement n of its commits, n = 1 ... 60: about six commits, new keys
    appended in most, the map written afresh in some."""
    base = tmp_path / "base.duckdb"
    assert spawn(base, 8, 0).wait(timeout=60) == 0
    kids = []
    for n in range(1, 61):
        path = tmp_path / f"k{n}.duckdb"
        shutil.copy(base, path)
        kids.append((path, spawn(path, 30, n)))
        if n % 15 == 0:  # fifteen at a time: each is a Python with numpy and DuckDB
            for _, p in kids[-15:]:
                p.wait(timeout=60)
    steps = []
    for path, p in kids:
        assert p.wait(timeout=60) == -signal.SIGKILL
        with Storage(path, UTC) as db:
            step = (db.last_drain - T0) // STEP
            assert loaded(db) == truth(step)
            deltas, _ = resume(db)
            # and a start from what survived counts on exactly (here with
            # counter rows of the default size: the file's small ones are rewritten)
            assert drain(db, deltas, step + 1) == gained(step + 1)
            assert loaded(db) == truth(step + 1)
        steps.append(step)
    assert steps == sorted(steps) and steps[0] == 8 and steps[-1] >= 12


if __name__ == "__main__":
    db_path, last, kill = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    checkpoint.CHUNK = SMALL_CHUNK
    store = KillAt(db_path, UTC, kill_at=kill) if kill else Storage(db_path, UTC)
    d, at = resume(store)
    for s in range(at + 1, last + 1):
        drain(store, d, s)
    store.close()
