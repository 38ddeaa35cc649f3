"""The collector against real exporters: softflowd (NetFlow v5, v9, IPFIX)
and pmacctd (nfprobe: IPFIX, sfprobe: sFlow) watch the server's veth and
export to acctd on the gateway. UDP datagrams of known sizes are sent from
the subscribers to the server; the count of what was sent is the truth.

alice (sub1) counts from the router (ds-list = [1]) and bob (sub2) from
the kernel: both are seen by both, and each must be counted once."""

from __future__ import annotations

import os
import random
import shutil
import time

import pytest

from .gateway import STORED, Process, all_traffic
from .topology import LINKS
from acctd.services.collector.service import CollectorService
from tests.peer import missing_peer

pytestmark = [pytest.mark.root, pytest.mark.netns]

SUB1, SUB2, SRV = LINKS["sub1"], LINKS["sub2"], LINKS["srv"]

CONFIG = STORED + """
[[collector]]
id = 1
listen = "{gw}:{port}"
source = ["{srv}"]
[[collector]]
id = 2
type = "raw"
[[policy]]
name = "ip"
target = "proto ip"
[[unit]]
type = "host"
name = "alice"
ip = "{alice}"
ds-list = [1]
[[unit]]
type = "host"
name = "bob"
ip = "{bob}"
"""


@pytest.fixture
def gateway(topo, tmp_path):
    from acctd import config
    from acctd.daemon.core import Daemon
    from acctd.kernel.build import Sizes
    port = random.randrange(20000, 60000)
    cfg = tmp_path / "acctd.toml"
    cfg.write_text(CONFIG.format(db=tmp_path / "acctd.duckdb", gw=SRV.v4(gw=True), port=port,
                                 srv=SRV.v4(), alice=SUB1.v4(), bob=SUB2.v4()))
    sizes = Sizes(pin_root=f"/sys/fs/bpf/acctd-c-{os.getpid()}-{random.randrange(1 << 30)}",
                  flows=4096, addrs=256)
    d = Daemon(config.load(str(cfg)), sizes, netns=topo.ns["gw"])
    d.start()
    yield d, f"{SRV.v4(gw=True)}:{port}"
    d.close()
    d.dp.detach()


def received(d) -> int:
    st = d.service(CollectorService).status()["collector"]["sources"][0]
    return sum(e["records"] for e in st["exporters"].values())


def wait_records(d, before: int, timeout: float = 30.0) -> None:
    """Until records arrived and none more came for a second and a half."""
    end = time.monotonic() + timeout
    last, since = received(d), time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.1)
        now = received(d)
        if now != last:
            last, since = now, time.monotonic()
        elif now > before and time.monotonic() - since > 1.5:
            return
    raise AssertionError(f"no export arrived: {d.service(CollectorService).status()}")


def send(topo, n1: int, n2: int):
    a = topo.send_udp("sub1", SUB1.v4(), "srv", SRV.v4(), n1, 300, sport=41000, dport=7001)
    b = topo.send_udp("sub2", SUB2.v4(), "srv", SRV.v4(), n2, 500, sport=42000, dport=7002)
    return a, b


def check(d, a, b) -> None:
    """alice from the router only, bob from the kernel only: the router's
    records of bob are seen and not counted (unmatched)."""
    got_a, got_b = all_traffic(d, "alice"), all_traffic(d, "bob")
    st = d.service(CollectorService).status()["collector"]
    assert got_a == {"out": (a.packets, a.ip_bytes)}, st
    assert got_b == {"out": (b.packets, b.ip_bytes)}
    assert st["sources"][0]["unmatched"] > 0


@pytest.mark.peers
@pytest.mark.parametrize("version", ["5", "9", "10"])
def test_softflowd_totals_equal_what_was_sent(topo, gateway, tmp_path, version):
    """softflowd reads what tcpdump captured on the server's veth (-r): live,
    softflowd 1.1.0 with this libpcap sees packets only once a capture block
    fills, so a small test's last packets would never be exported. tcpdump
    itself runs in immediate mode and is stopped only once the file holds
    every packet sent: a capture block still in the ring at SIGTERM was lost
    (now and then the whole capture), and so were packets a full ring dropped."""
    if not shutil.which("softflowd") or not shutil.which("tcpdump"):
        missing_peer("needs softflowd and tcpdump (Debian softflowd, tcpdump)")
    d, dest = gateway
    pcap = tmp_path / "srv.pcap"
    # a small snap length: the ring's frames are sized by it, and at the
    # default (256 KiB) a 2 MiB buffer holds eight packets
    tcpdump = topo.popen("srv", ["tcpdump", "-i", "eth0", "--immediate-mode", "-U", "-n",
                                 "-s", "256", "-B", "8192", "-w", str(pcap), "udp", "and",
                                 "not", "port", dest.rsplit(":", 1)[1]])
    _wait_for(lambda: pcap.exists() and pcap.stat().st_size >= 24, "tcpdump to start")
    time.sleep(0.3)
    a, b = send(topo, 40, 25)
    _wait_for(lambda: _pcap_records(pcap) == a.packets + b.packets, "tcpdump to write them all")
    tcpdump.terminate()
    tcpdump.wait(10)
    before = received(d)
    sf = topo.ns_exec("srv", ["softflowd", "-r", str(pcap), "-n", dest, "-v", version,
                              "-c", "none", "-p", str(tmp_path / "sf.pid")], timeout=30)
    assert "flushed" in sf.stdout + sf.stderr or sf.returncode == 0, sf.stderr
    wait_records(d, before)
    d.drain()
    check(d, a, b)
    st = d.call("status")["services"]["collector"]["sources"][0]  # as acctctl status gets it
    ex = st["exporters"][SRV.v4()]
    assert (ex["malformed"], ex["lost"], ex["unknown_template"]) == (0, 0, 0)
    assert (ex["templates"] > 0) == (version != "5")


def _pcap_records(path) -> int:
    """Whole records in a classic pcap file (24-byte header, 16-byte record headers)."""
    data = path.read_bytes()
    n, off = 0, 24
    while off + 16 <= len(data):
        incl = int.from_bytes(data[off + 8:off + 12], "little")
        if off + 16 + incl > len(data):
            break
        n, off = n + 1, off + 16 + incl
    return n


def _wait_for(cond, what: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _pmacctd(topo, tmp_path, plugin: str, dest: str):
    if not shutil.which("pmacctd"):
        missing_peer("needs pmacctd (Debian pmacct)")
    conf = tmp_path / f"pmacctd-{plugin}.conf"
    port = dest.rsplit(":", 1)[1]
    lines = ["daemonize: false", "pcap_interface: eth0", f"pcap_filter: udp and not port {port}",
             f"plugins: {plugin}", "aggregate: src_host, dst_host, src_port, dst_port, proto, tos"]
    if plugin == "nfprobe":
        lines += [f"nfprobe_receiver: {dest}", "nfprobe_version: 10",
                  "nfprobe_timeouts: udp=1:maxlife=1:expint=1:general=1"]
    else:
        lines += [f"sfprobe_receiver: {dest}", "sampling_rate: 1"]
    conf.write_text("\n".join(lines) + "\n")
    return topo.popen("srv", ["pmacctd", "-f", str(conf)])


@pytest.mark.peers
@pytest.mark.parametrize("plugin", ["nfprobe", "sfprobe"])
def test_pmacctd_totals_equal_what_was_sent(topo, gateway, tmp_path, plugin):
    d, dest = gateway
    pm = _pmacctd(topo, tmp_path, plugin, dest)
    time.sleep(1.5)
    assert pm.poll() is None, pm.stderr.read()
    before = received(d)
    a, b = send(topo, 30, 20)
    wait_records(d, before)  # nfprobe: flows expire 1 s after their last packet
    pm.terminate()
    pm.wait(10)
    d.drain()
    check(d, a, b)


def test_rawdata_is_committed_once_through_the_pipeline(gateway):
    """NeTAMS rawdata: counts from outside, in the unit's total and the
    named policy's row, committed before the command returns."""
    from acctd.errors import BadRequest, NotFound
    d, _ = gateway
    r = d.call("rawdata", unit="bob", argv=["ip", "in", "1000", "out", "2500"])
    assert r == {"unit": "bob", "policy": "ip", "in": 1000, "out": 2500}
    assert all_traffic(d, "bob") == {"in": (0, 1000), "out": (0, 2500)}
    from acctd.store.queries import report_list
    rows = report_list(d.storage, d.snapshot, "bob", d.clock())["policies"]
    assert {(x["policy"], x["dir"]): x["month"]["bytes"] for x in rows} == {
        ("(all)", "in"): 1000, ("(all)", "out"): 2500, ("ip", "in"): 1000, ("ip", "out"): 2500}
    d.drain()  # nothing more: once
    assert all_traffic(d, "bob") == {"in": (0, 1000), "out": (0, 2500)}
    with pytest.raises(NotFound):
        d.call("rawdata", unit="nobody", argv=["in", "1"])
    with pytest.raises(BadRequest):
        d.call("rawdata", unit="bob", argv=["in", "x"])


def test_kill_9_loses_only_what_was_not_committed_and_doubles_nothing(topo, tmp_path):
    """acctd as a process: NetFlow v5 from the server's address, a flush
    (committed), more, kill -9 before the next drain, a restart, more and
    a flush. The committed packets count once, the ones the dead process
    held are lost (UDP is not sent again), the later ones count."""
    import socket

    from acctd.bench import flowgen
    port = random.randrange(20000, 60000)
    acctd = Process(topo, tmp_path, CONFIG.format(
        db=tmp_path / "acctd.duckdb", gw=SRV.v4(gw=True), port=port, srv=SRV.v4(),
        alice=SUB1.v4(), bob=SUB2.v4()), "ck")

    def export(seq: int, nbytes: int):
        with topo.inside("srv"):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with s:
            s.bind((SRV.v4(), 0))
            s.sendto(flowgen.v5([(SUB1.v4(), SRV.v4(), 40000, 80, 6, 10, nbytes)], seq=seq),
                     (SRV.v4(gw=True), port))

    def received() -> int:
        st = acctd.ctl("status", "--json")["services"]["collector"]["sources"][0]
        return sum(e["records"] for e in st["exporters"].values())

    def alice_out() -> int:
        got = acctd.ctl("list", "alice", "--json")["policies"]
        return sum(p["month"]["bytes"] for p in got if p["policy"] == "(all)" and p["dir"] == "out")

    try:
        acctd.start()
        export(0, 1000)
        _wait_for(lambda: received() == 1, "the first export")
        acctd.ctl("flush")
        export(1, 20000)
        _wait_for(lambda: received() == 2, "the second export")
        acctd.kill()
        acctd.start()
        export(2, 300000)
        _wait_for(lambda: received() == 1, "the export after the restart")
        acctd.ctl("flush")
        assert alice_out() == 1000 + 300000
    finally:
        acctd.close()
