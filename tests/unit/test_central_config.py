"""[central] in the config: mistakes at their key's line; without it the
gateway keeps no outbox and shows no central status (as before)."""

import datetime as dt

import pytest

from acctd import config
from acctd.errors import ConfigError
from acctd.services.central import CentralService
from tests.unit.daemon_stub import ALICE, daemon_stub


def test_mistakes_name_the_key(tmp_path):
    p = tmp_path / "acctd.toml"
    p.write_text(ALICE + '\n[central]\ndsn = "host=db"\n')
    with pytest.raises(ConfigError, match=r"acctd.toml:\d+: \[central\] key 'gateway': required "
                                          "key is missing"):
        config.load(p)
    p.write_text(ALICE + '\n[central]\ndsn = "host=db"\ngateway = "a"\nretry = 0\n')
    with pytest.raises(ConfigError, match=r"acctd.toml:\d+: \[central\] key 'retry'"):
        config.load(p)


def test_without_central_no_outbox_and_no_status(tmp_path):
    import numpy as np

    from acctd.services.contract import Drain
    from acctd.store import rollup
    with daemon_stub(config.loads(ALICE), tmp_path=tmp_path) as d:
        svc = d.service(CentralService)
        rows = {"unit_oid": np.array([int(d.snapshot.unit("alice").oid, 16)], np.uint32),
                "policy_oid": np.zeros(1, np.uint32), "dir": np.zeros(1, np.uint8),
                "packets": np.ones(1, np.uint64), "bytes": np.full(1, 100, np.uint64)}
        now = dt.datetime(2026, 12, 2, 10, tzinfo=dt.timezone.utc)
        e = np.zeros(0)
        dr = Drain(now, d.snapshot, rows, e, e, e, e)
        with d.lock:
            d.storage.commit(rollup.rollup(rows, now, d.snapshot.config.processor.zone), {},
                             lambda tx: svc.in_drain(dr, tx))
            assert d.storage.con.execute("SELECT count(*) FROM central_outbox").fetchall() == \
                [(0,)]
        assert svc.status() is None and svc.blocks() == {} and svc.state == "off"
