"""IPFIX over TCP (RFC 7011 section 10.4) to a listener on loopback: each
connection starts with the templates, the stream is whole messages, a
collector that closes is reconnected and the records queued meanwhile
arrive, so the totals stay exact. The test decodes with its own reading of
the templates the stream announced."""

from __future__ import annotations

import socket
import struct
import threading
import time

from acctd.services.export.messages import Now
from acctd.services.export.service import Exporter, ExportSettings
from tests.flowgen import many


class Collector:
    """Accepts connections one after another; keeps each one's bytes."""

    def __init__(self, port: int = 0):
        self.srv = socket.create_server(("127.0.0.1", port))
        self.port = self.srv.getsockname()[1]
        self.streams: list[bytearray] = []
        self.conn: socket.socket | None = None

    def accept(self, timeout: float = 10.0) -> None:
        self.srv.settimeout(timeout)
        self.conn, _ = self.srv.accept()
        self.streams.append(bytearray())
        threading.Thread(target=self._read, args=(self.conn, self.streams[-1]),
                         daemon=True).start()

    @staticmethod
    def _read(conn: socket.socket, into: bytearray) -> None:
        while True:
            try:
                b = conn.recv(65536)
            except OSError:
                return
            if not b:
                return
            into += b

    def hang_up(self) -> None:
        self.conn.shutdown(socket.SHUT_RDWR)
        self.conn.close()


def read_templates(body: bytes, into: dict) -> None:
    """A template set's records: id -> [(element id, length)]."""
    k = 0
    while k + 4 <= len(body):
        tid, count = struct.unpack(">HH", body[k:k + 4])
        into[tid] = [struct.unpack(">HH", body[k + 4 + 4 * f:k + 8 + 4 * f])
                     for f in range(count)]
        k += 4 + 4 * count


def decode(stream: bytes) -> tuple[list[int], int, int]:
    """(set ids of the first message, packets, octets) of an IPFIX stream,
    through the templates it carries."""
    templates: dict[int, list[tuple[int, int]]] = {}
    packets = octets = 0
    first: list[int] = []
    i = 0
    while i < len(stream):
        version, length = struct.unpack(">HH", stream[i:i + 4])
        assert version == 10 and i + length <= len(stream)
        j, sets = i + 16, []
        while j < i + length:
            sid, slen = struct.unpack(">HH", stream[j:j + 4])
            body = stream[j + 4:j + slen]
            sets.append(sid)
            if sid == 2:
                read_templates(body, templates)
            elif sid >= 256 and sid in templates:
                fields = templates[sid]
                size = sum(n for _, n in fields)
                for r in range(0, len(body) - len(body) % size, size):
                    off = r
                    for ie, n in fields:
                        if ie in (1, 2):
                            v = int.from_bytes(body[off:off + n], "big")
                            octets += v if ie == 1 else 0
                            packets += v if ie == 2 else 0
                        off += n
            j += slen
        if not first:
            first = sets
        i += length
    return first, packets, octets


def test_ipfix_over_tcp_reconnects_and_loses_nothing():
    col = Collector()
    e = Exporter(ExportSettings(format="ipfix", destination=(f"127.0.0.1:{col.port}",),
                                transport="tcp", active_timeout=0, inactive_timeout=0), "test")
    e.open()
    try:
        col.accept()
        now = Now.sample()
        k, v = many(400, now.mono_ns, v6_every=3)
        e.add(k[:200], v[:200], now)
        e.committed(now)
        deadline = time.monotonic() + 10
        while decode(bytes(col.streams[0]))[2] < int(v["bytes"][:200].sum()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        col.hang_up()
        time.sleep(0.1)
        e.add(k[200:], v[200:], now)       # queued until the exporter is back
        e.committed(now)
        col.accept()
    finally:
        e.close()
    time.sleep(0.2)
    one, two = (decode(bytes(s)) for s in col.streams)
    assert one[0][0] == 2 and two[0][0] == 2            # templates open each connection
    assert (one[1] + two[1], one[2] + two[2]) == (int(v["packets"].sum()), int(v["bytes"].sum()))
    assert e.senders[0].status()["connects"] == 2


def test_every_udp_destination_gets_the_whole_stream():
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
        s.settimeout(2)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    e = Exporter(ExportSettings(format="ipfix", destination=tuple(
        f"127.0.0.1:{s.getsockname()[1]}" for s in socks), active_timeout=0,
        inactive_timeout=0), "test")
    e.open()
    now = Now.sample()
    k, v = many(300, now.mono_ns, v6_every=4)
    e.add(k, v, now)
    e.committed(now)
    e.close()
    for s in socks:
        stream = bytearray()
        for _ in range(e.senders[0].sent):
            stream += s.recv(65536)
        s.close()
        first, packets, octets = decode(bytes(stream))
        assert first[0] == 2 and (packets, octets) == (int(v["packets"].sum()),
                                                       int(v["bytes"].sum()))


def spooling_service(st, port: int, **kw):
    """The export service over a real DuckDB, IPFIX over TCP to port."""
    import types

    from acctd.services.export.service import ExportService
    core = types.SimpleNamespace(storage=st, lock=threading.RLock())
    svc = ExportService(core, (ExportSettings(
        format="ipfix", destination=(f"127.0.0.1:{port}",), transport="tcp",
        active_timeout=0, inactive_timeout=0, **kw),))
    svc.serve()
    return svc


def drain(svc, st, k, v, fail: bool = False) -> None:
    """One drain of these flows through the service, committed (or rolled back)."""
    import types

    from acctd.services.contract import Drain
    d = Drain(None, types.SimpleNamespace(units=None), {}, k, v, None, None)
    st.con.execute("BEGIN")
    svc.in_drain(d, st)
    if fail:
        st.con.execute("ROLLBACK")
        svc.drain_failed()
        return
    st.con.execute("COMMIT")
    svc.after_drain(d)


def test_records_a_tcp_collector_did_not_acknowledge_wait_in_the_spool(tmp_path):
    """Two drains while the collector is away (and one that rolls back), a
    clean stop: the records stay spooled. The next start sends them first,
    once, to the collector now there; acknowledged, they leave the spool at
    the service's tick, also when the drain that deleted them first rolled
    back."""
    from acctd.store import export as stored
    from acctd.store.database import Storage
    from tests.ports import free_port
    port = free_port()
    now = Now.sample()
    k, v = many(400, now.mono_ns, v6_every=3)
    with Storage(tmp_path / "e.duckdb") as st:
        svc = spooling_service(st, port)
        (ident,) = [e.ident for e in svc.exporters]
        drain(svc, st, k[:150], v[:150])
        drain(svc, st, k[150:300], v[150:300], fail=True)      # its rows go again
        drain(svc, st, k[150:300], v[150:300])
        svc.tick()
        assert stored.spools(st.con) == {ident: 300}
        (st_,) = svc.status()["export"].values()
        assert (st_["connected"], st_["records_spooled"]) == (False, 300)
        svc.close()
        assert stored.spools(st.con) == {ident: 300}
    col = Collector(port)
    with Storage(tmp_path / "e.duckdb") as st:
        svc = spooling_service(st, port)
        col.accept()
        deadline = time.monotonic() + 10
        while decode(bytes(col.streams[0]))[2] < int(v["bytes"][:300].sum()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.1)                                         # acknowledged
        drain(svc, st, k[:0], v[:0], fail=True)                # its deletes roll back
        assert stored.spools(st.con) == {ident: 300}

        def spool_empties() -> None:
            deadline = time.monotonic() + 5
            while stored.spools(st.con):
                assert time.monotonic() < deadline
                svc.tick()
                time.sleep(0.02)
        spool_empties()
        drain(svc, st, k[300:], v[300:])
        deadline = time.monotonic() + 10
        while decode(bytes(col.streams[0]))[2] < int(v["bytes"].sum()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        spool_empties()
        svc.close()
        assert stored.spools(st.con) == {}
    time.sleep(0.1)
    assert len(col.streams) == 1
    first, packets, octets = decode(bytes(col.streams[0]))
    assert first[0] == 2 and (packets, octets) == (int(v["packets"].sum()), int(v["bytes"].sum()))
    col.srv.close()


def test_the_spool_holds_what_the_queue_would_and_counts_the_rest(tmp_path):
    from acctd.store import export as stored
    from acctd.store.database import Storage
    from tests.ports import free_port
    now = Now.sample()
    k, v = many(100, now.mono_ns)
    with Storage(tmp_path / "e.duckdb") as st:
        svc = spooling_service(st, free_port())
        svc.exporters[0].senders[0].queue_records = 60
        drain(svc, st, k[:50], v[:50])
        drain(svc, st, k[50:], v[50:])
        (s,) = svc.status()["export"].values()
        assert (s["records_spooled"], s["records_spool_dropped"]) == (60, 40)
        assert sum(stored.spools(st.con).values()) == 60
        svc.close()
