"""The export service's pure parts on crafted drains: the flow cache's
timeouts, the three encoders' headers, sequence numbers, templates and
times, the unit filter, the [[export]] table's errors."""

from __future__ import annotations

import socket
import struct

import numpy as np
import pytest

from acctd.config.loader import loads
from acctd.errors import ConfigError
from acctd.model.units import Unit, UnitSet
from acctd.model.addresses import parse_addr, parse_prefix
from acctd.services.export.ipfix import IpfixEncoder
from acctd.services.export.messages import Now, split_counters
from acctd.services.export.netflow_v5 import V5Encoder
from acctd.services.export.netflow_v9 import V9Encoder
from acctd.services.export.records import RECORD, FlowCache
from acctd.services.export.service import selected
from tests.flowgen import flows, many
from tests.unit.test_export_tcp import read_templates

S = 10**9
T0 = 1_000 * S                 # a monotonic "now"
WALL = 1_700_000_000 * S       # its epoch


def at(seconds: float) -> Now:
    return Now(T0 + int(seconds * S), WALL + int(seconds * S))


def one_flow(packets=10, bytes=1000, first=0.0, last=0.0):
    return flows([dict(src="10.0.0.2", dst="198.51.100.1", packets=packets, bytes=bytes,
                       first_ns=at(first).mono_ns, last_ns=at(last).mono_ns)])


# --- the flow cache ---------------------------------------------------------------

def test_a_moving_flow_gives_a_record_per_active_timeout_and_a_last_one_when_idle():
    cache = FlowCache(active_ns=60 * S, inactive_ns=15 * S)
    out = []
    for t in range(0, 150, 10):          # drains every 10 s, the flow moves until t=100
        if t <= 100:
            k, v = one_flow(packets=t + 1, bytes=100 * (t + 1), first=0, last=t)
            cache.add(k, v, at(t).mono_ns)
        out.append((t, cache.expire(at(t).mono_ns)))
    emitted = [(t, int(r["packets"][0]), int(r["bytes"][0])) for t, r in out if len(r)]
    # active timeout at 60 s from the start, again 60 s after the second
    # record began (at 70 s: its start is the last packet seen by the first),
    # then idle from 100 s: the last record at 115 s would be 120 s (a drain)
    assert [t for t, *_ in emitted] == [60, 120]
    assert sum(p for _, p, _ in emitted) == sum(t + 1 for t in range(0, 101, 10))
    assert sum(b for *_, b in emitted) == sum(100 * (t + 1) for t in range(0, 101, 10))
    assert len(cache) == 0
    first, second = (r for _, r in out if len(r))
    assert (first["start_ns"][0], first["end_ns"][0]) == (at(0).mono_ns, at(60).mono_ns)
    assert (second["start_ns"][0], second["end_ns"][0]) == (at(60).mono_ns, at(100).mono_ns)


def test_an_exported_flow_that_stops_is_forgotten_without_an_empty_record():
    cache = FlowCache(active_ns=10 * S, inactive_ns=15 * S)
    k, v = one_flow(first=0, last=0)
    cache.add(k, v, at(0).mono_ns)
    assert len(cache.expire(at(10).mono_ns)) == 1
    assert len(cache.expire(at(20).mono_ns)) == 0 and len(cache) == 0


def test_flush_sends_everything_pending():
    cache = FlowCache(active_ns=600 * S, inactive_ns=600 * S)
    k, v = many(50, at(0).mono_ns)
    cache.add(k, v, at(0).mono_ns)
    r = cache.flush()
    assert (int(r["bytes"].sum()), len(r), len(cache)) == (int(v["bytes"].sum()), 50, 0)


def test_split_counters_keeps_totals():
    rec = np.zeros(2, RECORD)
    rec["bytes"], rec["packets"] = [3 * 2**32 + 5, 7], [2**33, 1]
    out = split_counters(rec)
    assert len(out) == 5 and out["bytes"].max() < 2**32 and out["packets"].max() < 2**32
    assert (int(out["bytes"].sum()), int(out["packets"].sum())) == (3 * 2**32 + 12, 2**33 + 1)


# --- encoders --------------------------------------------------------------------

def records(n: int, v6_every: int = 0):
    cache = FlowCache(0, 0)
    k, v = many(n, at(0).mono_ns, v6_every=v6_every)
    cache.add(k, v, at(0).mono_ns)
    return cache.expire(at(0).mono_ns), v


def test_v5_headers_count_flows_and_carry_the_domain():
    rec, v = records(100)
    enc = V5Encoder(domain=0x0102)
    msgs = [bytes(m) for m in enc.encode(rec, at(0))]
    heads = [struct.unpack(">HHIIIIBBH", m[:24]) for m in msgs]
    assert [h[1] for h in heads] == [30, 30, 30, 10]
    assert [h[5] for h in heads] == [0, 30, 60, 90]          # flows before each message
    assert {(h[0], h[6], h[7]) for h in heads} == {(5, 1, 2)}
    assert heads[0][2] == (T0 // 10**6) & 0xFFFFFFFF        # sysUptime: ms since boot
    assert heads[0][3] == WALL // S
    assert [len(m) for m in msgs] == [24 + 48 * c for c in (30, 30, 30, 10)]
    octets = sum(struct.unpack(">I", m[24 + 48 * i + 20:24 + 48 * i + 24])[0]
                 for m in msgs for i in range((len(m) - 24) // 48))
    assert octets == int(v["bytes"].sum())
    assert enc.encode(rec, at(1))[0][16:20] == struct.pack(">I", 100)


def sets_of(msg: bytes, header: int):
    """(set id, body) of each set in a message."""
    out, i = [], header
    while i < len(msg):
        sid, length = struct.unpack(">HH", msg[i:i + 4])
        assert length >= 4 and i + length <= len(msg)
        out.append((sid, msg[i + 4:i + length]))
        i += length
    return out


def test_ipfix_sequence_counts_data_records_and_templates_come_every_n_messages():
    rec, v = records(500, v6_every=5)
    enc = IpfixEncoder(domain=42, template_packets=4, template_refresh_s=0)
    msgs = [bytes(m) for m in enc.encode(rec, at(0))]
    seq, kinds, records_seen = 0, [], 0
    for m in msgs:
        version, length, export, sequence, domain = struct.unpack(">HHIII", m[:16])
        assert (version, length, export, domain) == (10, len(m), WALL // S, 42)
        assert sequence == seq
        sets = sets_of(m, 16)
        if sets[0][0] == 2:
            kinds.append("T")
            assert [s for s, _ in sets] == [2, 3, 258]
            seq += 1                     # the options data record
        else:
            kinds.append("D")
            ((sid, body),) = sets
            size = enc.flow_templates[4 if sid == 256 else 6].dtype.itemsize
            assert len(body) % size == 0
            seq += len(body) // size
            records_seen += len(body) // size
    assert records_seen == 500
    assert "".join(kinds).startswith("TDDDDTDDDDT")
    assert enc.sequence == seq


def test_ipfix_times_are_epoch_milliseconds_of_the_monotonic_clock():
    k, v = one_flow(first=-3.5, last=-0.25)
    cache = FlowCache(0, 0)
    cache.add(k, v, at(0).mono_ns)
    enc = IpfixEncoder(domain=1)
    (m,) = [bytes(x) for x in enc.encode(cache.expire(at(0).mono_ns), at(0))]
    (sid, body), = sets_of(m, 16)
    octets, packets, start, end = struct.unpack(">QQQQ", body[:32])
    assert (octets, packets) == (1000, 10)
    assert (start, end) == ((WALL - 3_500 * 10**6) // 10**6, (WALL - 250 * 10**6) // 10**6)


def test_v9_sequence_counts_messages_and_sets_are_padded():
    rec, v = records(100, v6_every=3)
    enc = V9Encoder(domain=9, template_packets=0, template_refresh_s=60)
    msgs = [bytes(m) for m in enc.encode(rec, at(0))]
    assert [struct.unpack(">I", m[12:16])[0] for m in msgs] == list(range(len(msgs)))
    assert sets_of(msgs[0], 20)[0][0] == 0        # templates first
    for m in msgs:
        assert struct.unpack(">I", m[16:20])[0] == 9
        for _, body in sets_of(m, 20):
            assert (len(body) + 4) % 4 == 0
    later = [bytes(m) for m in enc.encode(rec, at(30))]
    assert sets_of(later[0], 20)[0][0] != 0          # no template within the refresh time
    again = [bytes(m) for m in enc.encode(rec, at(61))]
    assert sets_of(again[0], 20)[0][0] == 0          # the timer's template


@pytest.mark.parametrize("cls, head, template_set", [(IpfixEncoder, 16, 2), (V9Encoder, 20, 0)])
def test_both_vlans_of_an_802_1ad_flow_are_exported(cls, head, template_set):
    """vlanId (58) and dot1qVlanId (243) carry the outer tag, dot1qCustomerVlanId
    (245) the inner one, read through the template as a collector would."""
    k, v = flows([dict(src="10.0.0.2", dst="198.51.100.1", vlan=100, inner_vlan=2001),
                  dict(src="2001:db8::2", dst="2001:db8:1::1", vlan=7, inner_vlan=3)])
    cache = FlowCache(0, 0)
    cache.add(k, v, at(0).mono_ns)
    msgs = [bytes(m) for m in cls(1, 100, 300).encode(cache.expire(at(0).mono_ns), at(0))]
    templates, got = {}, []
    for m in msgs:
        for sid, body in sets_of(m, head):
            if sid == template_set:
                read_templates(body, templates)
            elif sid in templates:
                off, fields = 0, {}
                for ie, n in templates[sid]:
                    fields[ie] = int.from_bytes(body[off:off + n], "big")
                    off += n
                got.append((fields[58], fields[243], fields[245]))
    assert sorted(got) == [(7, 7, 3), (100, 100, 2001)]


def test_options_record_says_no_sampling():
    enc = IpfixEncoder(domain=5)
    (m,) = enc.templates(at(0))
    sets = dict(sets_of(m, 16))
    scope, messages, flows_, interval, algorithm = struct.unpack(">IQQIB", sets[258])
    assert (scope, interval, algorithm) == (5, 1, 0)


# --- which flows ------------------------------------------------------------------

def units():
    return UnitSet([Unit(name="office", type="group"),
                    Unit(name="alice", type="host", addrs=(parse_addr("10.0.0.2"),),
                         parents=("office",)),
                    Unit(name="bob", type="host", addrs=(parse_addr("10.0.0.3"),)),
                    Unit(name="lan", type="net", nets=(parse_prefix("10.0.0.0/24"),))])


def test_selected_by_names_groups_and_direction():
    k, _ = flows([dict(src="10.0.0.2", dst="203.0.113.1"),              # alice out
                  dict(src="203.0.113.1", dst="10.0.0.3", dir="in"),    # bob in
                  dict(src="203.0.113.1", dst="10.0.0.2", dir="out"),   # out: local is src
                  dict(src="10.0.0.9", dst="203.0.113.1")])             # lan
    u = units()
    assert selected(k, u, "all", None).tolist() == [True] * 4
    assert selected(k, u, ("office",), None).tolist() == [True, False, False, False]
    assert selected(k, u, ("bob", "lan"), None).tolist() == [False, True, False, True]
    oid = int(u.units[u.index["bob"]].oid, 16)
    assert selected(k, u, "monitored", frozenset({oid})).tolist() == [False, True, False, False]
    assert selected(k, u, "monitored", None).tolist() == [False] * 4


# --- the [[export]] table -----------------------------------------------------------

BASE = '[[interface]]\nname = "eth1"\nrole = "lan"\n\n[[unit]]\nname = "alice"\ntype = "host"\nip = "10.0.0.2"\n'


def test_export_table_read():
    cfg = loads(BASE + '\n[[export]]\nformat = "ipfix"\ndestination = ["127.0.0.1:4739", '
                '"[::1]:4739"]\nactive-timeout = "2m"\nunits = ["alice"]\n')
    (e,) = cfg.export
    assert (e.format, e.destination, e.active_timeout, e.inactive_timeout, e.units,
            e.udp_rate) == ("ipfix", ("127.0.0.1:4739", "[::1]:4739"), 120, 15, ("alice",), 10_000)


@pytest.mark.parametrize("text, line, message", [
    ('format = "v7"\ndestination = "h:1"', 11, "[[export]] #1 key 'format': expected one of v5, v9, ipfix"),
    ('format = "v5"\ndestination = "h:99999"', 12, "key 'destination': expected host:port (port 1 to 65535)"),
    ('format = "v9"\ndestination = "h:1"\ntransport = "tcp"', 13, "key 'transport': TCP carries IPFIX only"),
    ('format = "v9"\ndestination = "h:1"\nunits = ["carol"]', 13, "key 'units': no unit named 'carol'"),
    ('format = "v9"', 10, "key 'destination': required key is missing"),
    ('format = "v9"\ndestination = "h:1"\nudp-rate = -5', 13,
     "key 'udp-rate': expected an integer (an integer between 0 and 10000000), got -5"),
])
def test_export_table_errors_name_the_line_and_key(text, line, message):
    with pytest.raises(ConfigError) as e:
        loads(BASE + "\n[[export]]\n" + text + "\n", "acctd.toml")
    assert e.value.line == line
    assert message in str(e.value)


def test_status_is_one_line_per_stream():
    from cli.operations import _fields
    from acctd.services.export.service import Exporter, ExportSettings
    e = Exporter(ExportSettings(format="v9", destination=("127.0.0.1:9", "[::1]:9"),
                                units=("alice", "bob")), "test")
    st = e.status()
    assert list(st) == ["127.0.0.1:9", "[::1]:9"]
    assert _fields(st["[::1]:9"]) == (
        "units alice bob, flows_cached 0, transport udp, messages_sent 0, errors 0, "
        "messages_queued 0, messages_dropped 0, "
        "format v9, domain 1, sequence 0, messages 0, records 0, skipped 0")


def test_v9_header_uptime_is_of_the_same_instant_as_its_whole_seconds():
    """Collectors take boot = unix_secs * 1000 - sysUptime: with the header's
    seconds truncated, sysUptime must be of that same truncated instant, or
    every flow time would be off by up to a second."""
    rec, _ = records(3)
    now = Now(T0 + 123_456_789, WALL + 700_000_000)      # 0.7 s past a whole second
    (m,) = [bytes(x) for x in V9Encoder(domain=1).encode(rec, now)]
    uptime, secs = struct.unpack(">II", m[4:12])
    boot_ms = secs * 1000 - uptime
    assert abs(boot_ms - (now.wall_ns - now.mono_ns) / 10**6) < 1     # within the ms rounding


def test_reload_keeps_an_unchanged_exporter_and_flushes_a_changed_one():
    from acctd.services.export.service import ExportService, ExportSettings
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    dest = (f"127.0.0.1:{sock.getsockname()[1]}",)
    a = ExportSettings(format="v5", destination=dest, active_timeout=600, inactive_timeout=600)
    svc = ExportService(None, (a,))
    svc.serve()
    (old,) = svc.exporters
    k, v = one_flow(packets=3, bytes=300)
    old.add(k, v, at(0))                  # cached: not due for ten minutes
    svc.reload((a,))
    assert svc.exporters == [old] and len(old.cache) == 1
    svc.reload((ExportSettings(format="v5", destination=dest),))
    assert svc.exporters[0] is not old
    msg = sock.recv(2000)                 # the changed table's last record went out
    assert struct.unpack(">HH", msg[:4]) == (5, 1) and msg[24 + 16:24 + 24] == \
        struct.pack(">II", 3, 300)
    svc.close()
    sock.close()


def test_the_stored_cache_follows_the_memory_one_drain_by_drain(tmp_path):
    """Drains that add flows, make some due (kept, zeroed) and some idle
    (gone): after each, the rows written (only the changed ones) read back
    as the cache in memory, exactly; after a reboot (the monotonic clock
    behind the stored times) the times come back clamped to now."""
    from acctd.store import export as stored
    from acctd.store.database import Storage
    cache = FlowCache(active_ns=20 * S, inactive_ns=15 * S)
    rng = np.random.default_rng(1)
    with Storage(tmp_path / "e.duckdb") as st:
        for t in range(0, 60, 5):
            k, v = many(40 + t, at(t).mono_ns)        # a growing set of flows, 5 s apart
            v["first_ns"], v["last_ns"] = at(t).mono_ns, at(t).mono_ns
            keep = rng.random(len(k)) < 0.6       # flows pause, some long enough to go idle
            cache.add(k[keep], v[keep], at(t).mono_ns)
            cache.expire(at(t).mono_ns)
            st.con.execute("BEGIN")
            stored.write(st.con, "x", *cache.changes())
            st.con.execute("COMMIT")
            back = stored.load(st.con, "x", RECORD)
            mine = cache.entries
            assert sorted(map(bytes, back)) == sorted(map(bytes, mine)), t
        assert stored.exporters(st.con) == {"x": len(cache)}
        again = FlowCache(active_ns=20 * S, inactive_ns=15 * S)
        again.restore(stored.load(st.con, "x", RECORD), at(10).mono_ns)   # "rebooted"
        assert (again.entries["end_ns"] <= at(10).mono_ns).all() and len(again) == len(cache)
        assert int(again.flush()["bytes"].sum()) == int(cache.flush()["bytes"].sum())
        stored.drop(st.con, "x")
        assert stored.exporters(st.con) == {}


def test_a_failed_drain_leaves_the_cache_as_stored(tmp_path):
    """A drain whose transaction rolls back gives its deltas again in the
    next one (the daemon reseeds): the cache is read back from the store,
    so the collector gets them once; a clean close sends the cached flows
    and empties the store."""
    import threading
    import time
    import types

    from acctd.services.contract import Drain
    from acctd.services.export.service import ExportService, ExportSettings
    from acctd.store import export as stored
    from acctd.store.database import Storage
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    dest = (f"127.0.0.1:{sock.getsockname()[1]}",)
    with Storage(tmp_path / "e.duckdb") as st:
        core = types.SimpleNamespace(storage=st, lock=threading.RLock())
        svc = ExportService(core, (ExportSettings(format="v5", destination=dest,
                                                  active_timeout=600, inactive_timeout=600),))
        svc.serve()
        k, v = one_flow(packets=3, bytes=300)
        v["first_ns"] = v["last_ns"] = time.monotonic_ns()     # the service's clock is real
        d = Drain(None, types.SimpleNamespace(units=None), {}, k, v, None, None)
        st.con.execute("BEGIN")
        svc.in_drain(d, st)
        st.con.execute("ROLLBACK")
        svc.drain_failed()
        st.con.execute("BEGIN")
        svc.in_drain(d, st)               # the same deltas, again
        st.con.execute("COMMIT")
        svc.after_drain(d)
        assert stored.exporters(st.con) == {svc.exporters[0].ident: 1}
        svc.close()
        msg = sock.recv(2000)
        assert struct.unpack(">HH", msg[:4]) == (5, 1) and msg[24 + 16:24 + 24] == \
            struct.pack(">II", 3, 300)
        assert stored.exporters(st.con) == {}
    sock.close()
