"""One PostgreSQL cluster for the central tests' session (removed after);
each test gets its own database in it."""

import uuid

import pytest

from acctd.bench.pgcluster import BINDIRS, Cluster
from tests.peer import missing_peer


@pytest.fixture(scope="session")
def cluster():
    try:
        import psycopg
        del psycopg          # only whether it imports
    except ImportError:
        missing_peer("needs psycopg 3 (pip install 'psycopg[binary]')")
    if not BINDIRS:
        missing_peer("needs Debian's postgresql package")
    c = Cluster()
    try:
        c.initdb()
        c.start()
    except Exception as e:
        c.remove()
        missing_peer(f"PostgreSQL did not start: {e}")
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
