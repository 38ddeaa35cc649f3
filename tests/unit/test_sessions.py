"""Sessions (pure parts and their storage): charges from one drain's rows,
the hook environment, and the sessions table."""

import datetime as dt

import numpy as np

from acctd.model import sessions
from acctd.services import sessions as service
from acctd.store import rollup
from acctd.store.database import Storage

T0 = dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.timezone.utc)


def test_charges_take_each_open_sessions_all_traffic_rows():
    cols = {"unit_oid": np.array([0x020001, 0x020001, 0x020001, 0x020002, 0x020003], np.uint32),
            "policy_oid": np.array([0, 0, 0x140001, 0, 0], np.uint32),
            "dir": np.array([0, 1, 1, 1, 0], np.uint8),
            "packets": np.array([3, 4, 4, 5, 6], np.uint64),
            "bytes": np.array([300, 400, 400, 500, 600], np.uint64)}
    got = service.charges(cols, {"020001": 7, "020002": 8})
    # policy rows are not added again; a unit without a session is nobody's
    assert got == {7: (3, 4, 300, 400), 8: (0, 5, 0, 500)}
    assert service.charges(cols, {}) == {}
    assert rollup.ALL_TRAFFIC == 0


def test_hook_env_never_resolves_an_address():
    assert service.hook_env("carol", "10.0.0.2", "192.0.2.7", "3", "") == {
        "user": "carol", "ip": "10.0.0.2", "nasip": "192.0.2.7", "nasfqdn": "",
        "nasport": "3", "mac": ""}
    assert service.hook_env("carol", "10.0.0.2", "nas1.example")["nasfqdn"] == "nas1.example"


def test_sessions_table_round_trip_and_charges_in_the_commit(tmp_path):
    st = Storage(str(tmp_path / "a.duckdb"), dt.timezone.utc)
    s = sessions.Session(0, "020001", "10.0.0.2", "command", T0, mac="02:00:00:00:00:01")
    sid = st.start_session(s)
    assert sid == 1 and st.start_session(sessions.Session(0, "020002", "::1", "file", T0)) == 2
    st.stop_session(1, T0 + dt.timedelta(minutes=5), "user-request")
    rows = {x.id: x for x in st.sessions()}
    assert rows[1].duration == 300 and rows[1].stop_cause == "user-request"
    assert [x.id for x in st.sessions(open_only=True)] == [2]
    assert rows[1].to_row()["start"] == T0.isoformat()
    cols = {"unit_oid": np.array([0x020002], np.uint32), "policy_oid": np.array([0], np.uint32),
            "dir": np.array([1], np.uint8), "packets": np.array([2], np.uint64),
            "bytes": np.array([4], np.uint64)}
    st.commit(rollup.rollup(cols, T0, dt.timezone.utc), {},
              lambda tx: tx.charge_sessions({2: (1, 2, 3, 4)}))
    x = st.sessions(open_only=True)[0]
    assert (x.packets_in, x.packets_out, x.bytes_in, x.bytes_out) == (1, 2, 3, 4)
    st.close()
