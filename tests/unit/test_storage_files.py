"""The database's files: owner-only whatever the umask (they hold password
hashes), the WAL folded into the file by regular checkpoints, and a damaged
file or WAL reported in one line by the real processes that open it
(`acctctl --db` here; the daemon in tests/netns/test_daemon_start.py)."""

import json
import os
import pathlib
import re
import stat
import subprocess
import sys

import duckdb
import pytest

from acctd.store.database import Storage, StorageError

from .test_storage import BERLIN, ROOT, open_db, run_daemon

CONFIG = """
[[policy]]
name = "web"
target = "proto tcp port 80"

[[unit]]
type = "host"
name = "h1"
oid = "020001"
ip = "10.0.0.1"
acct-policy = ["web"]
"""


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_state_dir_database_and_wal_are_owner_only_under_umask_022(tmp_path, umask_022):
    state = tmp_path / "lib" / "acctd"
    path = state / "acctd.duckdb"
    with open_db(path) as db:
        run_daemon(db, 2)  # two commits: the WAL holds them
        assert os.path.getsize(f"{path}.wal") > 0
        assert (mode(state), mode(path), mode(f"{path}.wal")) == (0o700, 0o600, 0o600)
        db.checkpoint_every = 0  # the next commit folds the WAL: DuckDB deletes the file ...
        run_daemon(db, 3)
        assert os.path.getsize(f"{path}.wal") == 0
        assert mode(f"{path}.wal") == 0o600  # ... and the next one is ours, owner-only
        db.checkpoint_every = 3600
        run_daemon(db, 4)
        assert os.path.getsize(f"{path}.wal") > 0 and mode(f"{path}.wal") == 0o600


def test_a_database_made_readable_by_an_older_acctd_is_made_owner_only(tmp_path, umask_022):
    path = tmp_path / "acctd.duckdb"
    duckdb.connect(str(path)).close()
    os.chmod(path, 0o644)
    os.chmod(tmp_path, 0o755)
    with open_db(path):
        assert (mode(path), mode(f"{path}.wal")) == (0o600, 0o600)
    assert mode(tmp_path) == 0o755  # a directory that exists is the operator's


def test_commits_fold_the_wal_into_the_file_by_size_and_by_age(tmp_path):
    path = tmp_path / "acctd.duckdb"
    with Storage(path, BERLIN, raw_retention=365 * 86400, checkpoint_every=3600) as db:
        run_daemon(db, 20)
        held = os.path.getsize(f"{path}.wal")
        assert held > 20_000  # 20 drains in the WAL alone: under both limits
        file_size = os.path.getsize(path)
        db.wal_limit = held  # the next commit passes the size limit
        run_daemon(db, 21)
        assert os.path.getsize(f"{path}.wal") == 0
        assert os.path.getsize(path) > file_size
        db.wal_limit = 1 << 30
        run_daemon(db, 22)
        assert 0 < os.path.getsize(f"{path}.wal") < held / 10
        db.checkpoint_every = 0  # the age limit: commits older than this are folded
        run_daemon(db, 23)
        assert os.path.getsize(f"{path}.wal") == 0
    # what a kill -9 right now would leave is the file alone: all 23 drains
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(DISTINCT ts) FROM raw").fetchall() == [(23,)]


# --- damaged files, through a real acctctl process ------------------------------------

def database(tmp_path, crashed: bool = True):
    """A database whose daemon committed three drains and died (kill -9):
    the drains are in the WAL, which the next open replays; not `crashed`,
    a daemon that stopped: all in the file."""
    path = tmp_path / "acctd.duckdb"
    end = "os._exit(0)" if crashed else "db.close()"
    code = ("import os, sys; from tests.unit.test_storage import open_db, run_daemon; "
            f"db = open_db(sys.argv[1]); run_daemon(db, 3); {end}")
    subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, check=True,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert os.path.exists(f"{path}.wal") == crashed
    (tmp_path / "acctd.toml").write_text(CONFIG)
    return path


def acctctl_list(tmp_path, path):
    return subprocess.run([sys.executable, "-m", "acctctl.main", "--db", str(path), "--config",
                           str(tmp_path / "acctd.toml"), "list", "h1", "--json"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def damage(path, offset: int, n: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(bytes(range(256)) * (n // 256) + bytes(range(n % 256)))


KEEPS_COUNTING = ("or restore a copy, then start acctd again; the kernel keeps counting "
                  "meanwhile (the pinned maps persist)")


def damaged_db_line(path, prog="acctctl") -> str:
    return (rf"{prog}: {re.escape(str(path))}: the database is damaged \(Corrupt database file: "
            r"computed checksum \d+ does not match stored checksum \d+ in block at location "
            r"\d+\): move it aside, with acctd\.duckdb\.wal if there is one, "
            rf"{re.escape(KEEPS_COUNTING)}\n")


def damaged_wal_line(path, reason: str, prog="acctctl") -> str:
    return (rf"{prog}: {re.escape(str(path))}\.wal: the write-ahead log is damaged \({reason}\): "
            r"move it aside \(the next drain accounts the traffic since the last checkpoint; "
            r"other changes since then are lost\) "
            rf"{re.escape(KEEPS_COUNTING)}\n")


def test_acctctl_db_reads_the_crashed_database_through_its_wal(tmp_path):
    path = database(tmp_path)
    assert os.path.getsize(f"{path}.wal") > 1000
    res = acctctl_list(tmp_path, path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["unit"] == "h1"


def test_acctctl_db_on_a_damaged_database_file_says_what_to_do_in_one_line(tmp_path):
    path = database(tmp_path, crashed=False)
    damage(path, 12288, 1 << 16)  # the first blocks after the headers
    res = acctctl_list(tmp_path, path)
    assert "Traceback" not in res.stderr
    assert re.fullmatch(damaged_db_line(path), res.stderr), res.stderr
    assert (res.returncode, res.stdout) == (1, "")


def test_acctctl_db_on_a_damaged_wal_says_what_to_do_in_one_line(tmp_path):
    path = database(tmp_path)
    damage(f"{path}.wal", os.path.getsize(f"{path}.wal") // 2, 64)
    res = acctctl_list(tmp_path, path)
    assert "Traceback" not in res.stderr
    reason = (r"Corrupt WAL file: entry at byte position \d+ computed checksum \d+ does not "
              r"match stored checksum \d+")
    assert re.fullmatch(damaged_wal_line(path, reason), res.stderr), res.stderr
    assert (res.returncode, res.stdout) == (1, "")


def test_a_block_damaged_anywhere_is_one_line_at_the_open_or_at_the_read_that_meets_it(tmp_path):
    """DuckDB reads a block when a query first needs it: the checkpoint or
    the raw rows can be found damaged after a clean open. Every block of a
    real database damaged in turn: the daemon's reads and a commit either
    work or stop with the one line, found at the open or later."""
    path = tmp_path / "acctd.duckdb"
    with open_db(path) as db:
        run_daemon(db, 30)
    whole = path.read_bytes()
    found = []
    for offset in range(12288, len(whole), 256 << 10):  # DuckDB's blocks are 256 KiB
        path.write_bytes(whole)
        pathlib.Path(f"{path}.wal").unlink(missing_ok=True)  # the last round's
        damage(path, offset, 4096)
        where = "open"
        try:
            with open_db(path) as db, db.reported():
                where = "later"
                db.load_checkpoint(), db.sessions(), db.sys_policies(), db.quotas()
                run_daemon(db, 31)  # reads the checkpoint, deletes old raw rows, commits
            where = "nowhere"
        except StorageError as e:
            assert re.fullmatch(damaged_db_line(path), f"acctctl: {e}\n"), e
        found.append(where)
    assert {"open", "later"} <= set(found), found


def test_a_damaged_block_met_while_replaying_the_wal_blames_the_database():
    """DuckDB says "replaying WAL" for what it meets during the replay, the
    file's own blocks included: the file named is the one damaged."""
    from acctd.store.database import damage as said
    wal = ('Failure while replaying WAL file "/x/acctd.duckdb.wal": Corrupt WAL file: entry at '
           'byte position 92 computed checksum 1 does not match stored checksum 2')
    db = ('Failure while replaying WAL file "/x/acctd.duckdb.wal": Corrupt database file: '
          'computed checksum 1 does not match stored checksum 2 in block at location 1585152')
    assert str(said("/x/acctd.duckdb", Exception(wal))).startswith(
        "/x/acctd.duckdb.wal: the write-ahead log is damaged (Corrupt WAL file: entry at byte "
        "position 92 computed checksum 1 does not match stored checksum 2): move it aside")
    assert str(said("/x/acctd.duckdb", Exception(db))).startswith(
        "/x/acctd.duckdb: the database is damaged (Corrupt database file: computed checksum 1 "
        "does not match stored checksum 2 in block at location 1585152): move it aside, with "
        "acctd.duckdb.wal if there is one, or restore a copy")
    assert said("/x/acctd.duckdb", Exception("IO Error: Could not set lock on file")) is None
