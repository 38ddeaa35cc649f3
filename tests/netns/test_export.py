"""Export from real drains: traffic through the testbed's gateway, the
daemon in-process with three [[export]] tables (IPFIX of one unit to
nfcapd, v9 of all traffic to nfacctd, v5 of all traffic to a second
nfcapd). What each collector decodes equals what acctd accounted, to the
byte and packet, IPv6 included."""

from __future__ import annotations

import os
import random
import time

import pytest

from .gateway import STORED, Process, all_traffic
from .topology import LINKS
from tests.peers.collectors import Nfacctd, Nfcapd

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.peers]

SUB1, SUB2, SRV = LINKS["sub1"], LINKS["sub2"], LINKS["srv"]

UNITS = STORED + """
[[policy]]
name = "ip"
target = "proto ip"
[[unit]]
type = "cluster"
name = "alice"
ips = ["{alice}", "{alice6}"]
[[unit]]
type = "host"
name = "bob"
ip = "{bob}"
"""

CONFIG = UNITS + """
[[export]]
format = "ipfix"
destination = "127.0.0.1:{ipfix}"
units = ["alice"]
[[export]]
format = "v9"
destination = "127.0.0.1:{v9}"
[[export]]
format = "v5"
destination = "127.0.0.1:{v5}"
"""


def totals(flows) -> tuple[int, int]:
    return sum(f["packets"] for f in flows), sum(f["bytes"] for f in flows)


def test_collectors_total_what_acctd_accounted(topo, tmp_path):
    from acctd import config
    from acctd.daemon.core import Daemon
    from acctd.kernel.build import Sizes
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    with Nfcapd(tmp_path / "a") as ipfix, Nfcapd(tmp_path / "b") as v5, \
            Nfacctd(tmp_path) as v9:
        cfg_path = tmp_path / "acctd.toml"
        cfg_path.write_text(CONFIG.format(db=tmp_path / "acctd.duckdb", alice=SUB1.v4(),
                                          alice6=SUB1.v6(), bob=SUB2.v4(), ipfix=ipfix.port,
                                          v9=v9.port, v5=v5.port))
        d = Daemon(config.load(str(cfg_path)),
                   Sizes(pin_root=f"/sys/fs/bpf/acctd-x-{os.getpid()}-{random.randrange(1 << 30)}",
                         flows=4096, addrs=256), netns=topo.ns["gw"])
        try:
            d.start()
            topo.ping("sub1", SRV.v4(), count=5, size=300)
            topo.send_udp("sub2", SUB2.v4(), "srv", SRV.v4(), count=20, length=100, dport=53)
            d.drain()
            topo.ping("sub1", SRV.v6(), count=4, size=120)
            topo.send_udp("sub1", SUB1.v4(), "srv", SRV.v4(), count=7, length=900, dport=5001)
            d.drain()
            alice, bob = all_traffic(d, "alice"), all_traffic(d, "bob")
        finally:
            d.close()           # the exporters send their cached flows' last records
            d.dp.detach()
        acct = {u: tuple(map(sum, zip(t.get("in", (0, 0)), t.get("out", (0, 0))))) for u, t in
                (("alice", alice), ("bob", bob))}
        everything = tuple(map(sum, zip(acct["alice"], acct["bob"])))
        got_ipfix, got_v5 = ipfix.flows(), v5.flows()
        got_v9 = v9.flows(expect_bytes=everything[1])
    assert totals(got_ipfix) == acct["alice"]
    assert totals(got_v9) == everything
    v6 = totals([f for f in got_ipfix if ":" in f["sa"]])
    assert v6[0] == 8                                   # the ping6: 4 requests, 4 replies
    assert totals(got_v5) == (everything[0] - v6[0], everything[1] - v6[1])   # v5: IPv4 only


KILL_CONFIG = UNITS + """
[[export]]
format = "ipfix"
destination = "127.0.0.1:{port}"
units = ["alice"]
active-timeout = 600
inactive-timeout = 1
"""


def across_a_kill(topo, acctd, killed=lambda: None, started=lambda: None) -> tuple[int, int]:
    """acctd as a process exporting alice's flows: flow A is drained and
    goes idle (its record due), flow B is drained (cached, not yet due),
    acctd is killed with SIGKILL (then killed()), started again (then
    started()), flow C is drained and acctd stops (its last records).
    Returns alice's (packets, bytes) as acctd accounted them."""
    import signal

    def flow(sport: int, count: int, length: int) -> None:
        topo.send_udp("sub1", SUB1.v4(), "srv", SRV.v4(), count=count, length=length,
                      sport=sport, dport=5001)
    try:
        acctd.start()
        flow(40001, 5, 300)
        acctd.ctl("flush")
        time.sleep(1.5)
        acctd.ctl("flush")                # A idle: its record due
        flow(40002, 7, 900)
        acctd.ctl("flush")                # B committed, cached
        assert acctd.kill() == -signal.SIGKILL
        killed()
        acctd.start()
        started()
        flow(40003, 3, 100)
        acctd.ctl("flush")
        got = acctd.ctl("list", "alice", "--json")["policies"]
        acct = tuple(sum(p["month"][f] for p in got if p["policy"] == "(all)")
                     for f in ("packets", "bytes"))
        assert acctd.kill(signal.SIGTERM) == 0     # the cached flows' last records
    finally:
        acctd.close()
    assert acct[0] == 15
    return acct


def test_kill_9_neither_loses_nor_doubles_what_was_committed(topo, tmp_path):
    """IPFIX to nfcapd across a kill: nfcapd totals exactly what acctd
    accounted: B's committed deltas come back with the cache, A is not
    sent again."""
    with Nfcapd(tmp_path) as col:
        acct = across_a_kill(topo, Process(topo, tmp_path, KILL_CONFIG.format(
            db=tmp_path / "acctd.duckdb", alice=SUB1.v4(), alice6=SUB1.v6(), bob=SUB2.v4(),
            port=col.port), "xk"))
        flows = col.flows()
    assert totals(flows) == acct
    assert sorted((int(f["sp"]), f["packets"]) for f in flows) == \
        [(40001, 5), (40002, 7), (40003, 3)]


def test_kill_9_keeps_what_a_tcp_collector_away_did_not_acknowledge(topo, tmp_path):
    """IPFIX over TCP to a collector that is not there when A's record is
    due (it is spooled) nor when acctd is killed; it comes up before acctd
    starts again (the spooled record goes first). The collector totals
    exactly what acctd accounted, on one connection."""
    from tests.ports import free_port
    from tests.unit.test_export_tcp import Collector, decode
    port = free_port()
    acctd = Process(topo, tmp_path, KILL_CONFIG.format(
        db=tmp_path / "acctd.duckdb", alice=SUB1.v4(), alice6=SUB1.v6(), bob=SUB2.v4(),
        port=port) + 'transport = "tcp"\n', "xt")
    col = []

    def killed() -> None:
        col.append(Collector(port))

    try:
        acct = across_a_kill(topo, acctd, killed, lambda: col[0].accept())
        time.sleep(0.3)
    finally:
        for c in col:
            c.srv.close()
    assert len(col[0].streams) == 1
    _, packets, octets = decode(bytes(col[0].streams[0]))
    assert (packets, octets) == acct


def whole_messages(stream: bytes) -> bytes:
    """The IPFIX messages a stream holds whole (a reset may cut the last)."""
    i = 0
    while i + 4 <= len(stream):
        length = int.from_bytes(stream[i + 2:i + 4], "big")
        if i + length > len(stream):
            break
        i += length
    return stream[:i]


def data_sequences(stream: bytes) -> list[tuple[int, int]]:
    """(sequence number, data records) of each message with a flow set."""
    from acctd.services.export.ipfix import IpfixEncoder
    size = {t.id: t.dtype.itemsize for t in IpfixEncoder(1).flow_templates.values()}
    out, i = [], 0
    while i < len(stream):
        length, seq = int.from_bytes(stream[i + 2:i + 4], "big"), \
            int.from_bytes(stream[i + 8:i + 12], "big")
        sid, slen = int.from_bytes(stream[i + 16:i + 18], "big"), \
            int.from_bytes(stream[i + 18:i + 20], "big")
        if sid >= 256:
            out.append((seq, (slen - 4) // size[sid]))
        i += length
    return out


def test_ipfix_over_tcp_resends_exactly_what_a_reset_cut(topo):
    """A batch of 20,000 records to a TCP collector in the server's
    namespace; midway its input is dropped (what is in flight stays
    unacknowledged), it reads what it has and resets. The exporter sends
    again, on the next connection, exactly the messages not acknowledged:
    the two streams add up to the batch, no record twice, and the second
    stream's sequence numbers go on from the first's."""
    import socket
    import struct

    from acctd.services.export.messages import Now
    from acctd.services.export.service import Exporter, ExportSettings
    from tests.flowgen import many
    from tests.unit.test_export_tcp import Collector, decode

    class Slow(Collector):
        """Reads 16 KB every 10 ms through a small buffer: the batch takes
        about a second, so the cut falls inside it."""
        def __init__(self):
            super().__init__()
            self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)

        @staticmethod
        def _read(conn, into):
            while True:
                try:
                    b = conn.recv(16384)
                except OSError:
                    return
                if not b:
                    return
                into += b
                time.sleep(0.01)

    with topo.inside("srv"):
        col = Slow()
        e = Exporter(ExportSettings(format="ipfix", destination=(f"127.0.0.1:{col.port}",),
                                    transport="tcp", active_timeout=0, inactive_timeout=0),
                     "test")
        e.open()                        # its thread (and socket) in the namespace too
    nft = ["nft", "add", "rule", "inet", "cut", "input", "tcp", "dport", str(col.port), "drop"]

    def settled(stream: bytearray) -> None:
        size, still = -1, 0
        while still < 6:                # 0.3 s without a byte
            still = still + 1 if len(stream) == size else 0
            size = len(stream)
            time.sleep(0.05)
    try:
        col.accept()
        now = Now.sample()
        k, v = many(20_000, now.mono_ns, v6_every=3)
        e.add(k, v, now)
        e.committed(now)
        deadline = time.monotonic() + 10
        while len(col.streams[0]) < 300_000:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        topo.ns_exec("srv", ["nft", "add", "table", "inet", "cut"])
        topo.ns_exec("srv", ["nft", "add", "chain", "inet", "cut", "input",
                             "{ type filter hook input priority 0 ; }"])
        topo.ns_exec("srv", nft)
        settled(col.streams[0])
        col.conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        col.conn.shutdown(socket.SHUT_RD)   # its reader returns (nothing on the wire)
        time.sleep(0.1)
        col.conn.close()                # a reset
        topo.ns_exec("srv", ["nft", "delete", "table", "inet", "cut"])
        col.accept()
        deadline = time.monotonic() + 10
        while not col.streams[1]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        settled(col.streams[1])
    finally:
        e.close()
        topo.ns_exec("srv", ["nft", "delete", "table", "inet", "cut"], check=False)
    one, two = (whole_messages(bytes(s)) for s in col.streams)
    assert len(one) < 1_000_000 and e.senders[0].status()["messages_resent"] > 0
    a, b = decode(one), decode(two)
    assert (a[1] + b[1], a[2] + b[2]) == (int(v["packets"].sum()), int(v["bytes"].sum()))
    seq_one, seq_two = data_sequences(one), data_sequences(two)
    # the options record of each connection's templates counts one
    assert seq_two[0][0] == sum(n for _, n in seq_one) + 2
    assert all(s + n == t for (s, n), (t, _) in zip(seq_two, seq_two[1:]))


def test_an_802_1ad_flows_inner_vlan_reaches_the_collector(topo, tmp_path):
    """QinQ frames (outer 200, inner 300) from alice through the gateway's
    hook: the IPFIX record of their flow carries vlanId and dot1qVlanId
    200, dot1qCustomerVlanId 300, and their packets."""
    import socket

    from acctd import config
    from acctd.daemon.core import Daemon
    from acctd.kernel.build import Sizes
    from tests.unit.test_export_tcp import read_templates
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    cfg_path = tmp_path / "acctd.toml"
    cfg_path.write_text((UNITS + '[[export]]\nformat = "ipfix"\ndestination = '
                         '"127.0.0.1:{port}"\n').format(
        db=tmp_path / "acctd.duckdb", alice=SUB1.v4(), alice6=SUB1.v6(), bob=SUB2.v4(),
        port=rx.getsockname()[1]))
    d = Daemon(config.load(str(cfg_path)),
               Sizes(pin_root=f"/sys/fs/bpf/acctd-xv-{os.getpid()}-{random.randrange(1 << 30)}",
                     flows=4096, addrs=256), netns=topo.ns["gw"])
    try:
        d.start()
        topo.send_vlan_frames("sub1", "eth0", SUB1.mac(gw=True), SUB1.v4(), SRV.v4(),
                              [200, 300], count=15, payload_len=300, outer_tpid=0x88A8)
        topo.quiesce()
        d.drain()
    finally:
        d.close()               # the cached flow's last record
        d.dp.detach()
    templates, got = {}, []
    with rx:
        while True:
            try:
                m = rx.recv(65536)
            except TimeoutError:
                break
            i = 16
            while i < len(m):
                sid, slen = int.from_bytes(m[i:i + 2], "big"), int.from_bytes(m[i + 2:i + 4], "big")
                body = m[i + 4:i + slen]
                if sid == 2:
                    read_templates(body, templates)
                elif sid in (256, 257):
                    size = sum(n for _, n in templates[sid])
                    for r in range(0, len(body) - len(body) % size, size):
                        off, f = r, {}
                        for ie, n in templates[sid]:
                            f[ie] = int.from_bytes(body[off:off + n], "big")
                            off += n
                        got.append(f)
                i += slen
            if got:
                rx.settimeout(0.5)
    assert [(f[2], f[58], f[243], f[245]) for f in got if f[245]] == [(15, 200, 200, 300)]
