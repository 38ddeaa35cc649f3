"""One PostgreSQL cluster for the central tests' session (removed after);
each test gets its own database in it."""

import os
import uuid

import pytest

from acctd.bench.pgcluster import BINDIRS, Cluster


def unavailable(reason: str):
    """Skip where PostgreSQL cannot run; fail in CI (ACCTD_PEERS_REQUIRED=1)."""
    if os.environ.get("ACCTD_PEERS_REQUIRED") == "1":
        pytest.fail(f"peer required but unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def cluster():
    try:
        import psycopg
        del psycopg          # only whether it imports
    except ImportError:
        unavailable("needs psycopg 3 (pip install 'psycopg[binary]')")
    if not BINDIRS:
        unavailable("needs Debian's postgresql package")
    c = Cluster()
    try:
        c.initdb()
        c.start()
    except Exception as e:
        c.remove()
        unavailable(f"PostgreSQL did not start: {e}")
    yield c
    c.remove()


@pytest.fixture
def central_dsn(cluster):
    """A fresh database's DSN."""
    import psycopg
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(cluster.dsn(), autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    yield cluster.dsn(name)
