"""Tests of the namespace topology itself: it must build, stay quiet, clean up,
and its traffic generators' ground truth must match what the interfaces saw."""
import math
import os
import subprocess
import time

import pytest

from .topology import (
    LINKS, Topology, Traffic, build_udp_frame, echo_ip_lengths, iperf3_udp_traffic,
    pcap_ip_totals, pcap_packets, remove_stale, udp_ip_len, wire_ip_totals,
)

# tests/conftest.py skips "root" tests, with a reason, when not root.
netns = [pytest.mark.root, pytest.mark.netns]

SRV = LINKS["srv"]


def ns_inode(name: str) -> int:
    return os.stat(f"/run/netns/{name}").st_ino


def processes_in(inodes: set[int]) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino in inodes:
                pids.append(int(pid))
        except OSError:
            pass  # exited meanwhile
    return pids


# --- pure helpers ------------------------------------------------------------------------

@pytest.mark.parametrize("vlan_ids,tpids",
                         [([], []), ([10], [0x8100]), ([10, 20], [0x88A8, 0x8100])])
@pytest.mark.parametrize("src,dst", [("10.1.0.2", "10.1.0.1"), ("fd00:1::2", "2001:db8::2")])
def test_build_udp_frame(vlan_ids, tpids, src, dst):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot1AD, Dot1Q, Ether

    frame = build_udp_frame("02:00:00:00:00:01", "02:00:00:00:00:02", src, dst, vlan_ids, 100)
    pkt = Ether(frame)
    tags = [layer for layer in (pkt.getlayer(Dot1AD), pkt.getlayer(Dot1Q)) if layer]
    assert [t.vlan for t in tags] == vlan_ids
    assert [pkt.type, *(t.type for t in tags)][:len(tpids)] == tpids
    v6 = ":" in src
    l3 = pkt[IPv6] if v6 else pkt[IP]
    ip_len = udp_ip_len(100, v6)
    assert len(frame) == 14 + 4 * len(vlan_ids) + ip_len and len(bytes(l3)) == ip_len
    # Checksums: what scapy computes itself (IPv4 UDP is sent without one).
    rebuilt = l3.copy()
    if not v6:
        del rebuilt.chksum
    if rebuilt[UDP].chksum:
        del rebuilt[UDP].chksum
    assert bytes(rebuilt) == bytes(l3)


def test_echo_ip_lengths():
    assert echo_ip_lengths(56, v6=False, mtu=1500) == [84]
    assert echo_ip_lengths(56, v6=True, mtu=1500) == [104]
    assert echo_ip_lengths(1472, v6=False, mtu=1500) == [1500]
    # 3008 bytes of ICMP: 1480 + 1480 + 48 (v4); 1448 + 1448 + 112 behind 48-byte headers (v6).
    assert echo_ip_lengths(3000, v6=False, mtu=1500) == [1500, 1500, 68]
    assert echo_ip_lengths(3000, v6=True, mtu=1500) == [1496, 1496, 160]


def test_pcap_ip_totals_expands_super_packets(tmp_path):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    opts = [("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]  # 32-byte TCP header
    gso = Ether() / IP(dst="192.0.2.2") / TCP(options=opts) / (b"x" * 10000)
    ack = Ether() / IP(dst="10.1.0.2") / TCP(options=opts)
    wrpcap(str(tmp_path / "t.pcap"), [gso, ack])
    # mss = 1500 - 20 - 32 = 1448, so 10000 bytes make 7 segments.
    assert pcap_ip_totals(str(tmp_path / "t.pcap")) == Traffic(2, 10052 + 52)
    assert pcap_ip_totals(str(tmp_path / "t.pcap"), segment_mtu=1500) == Traffic(8, 10000 + 8 * 52)


# --- lifecycle ---------------------------------------------------------------------------

def root_netns(fn):
    """The marks of tests that build a topology (the pure tests above run anywhere)."""
    for mark in netns:
        fn = mark(fn)
    return fn


@root_netns
def test_shape(topology):
    t = topology
    assert t.ns_exec("gw", ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
    assert t.ns_exec("gw", ["sysctl", "-n", "net.ipv6.conf.all.forwarding"]).stdout.strip() == "1"
    for link in LINKS.values():
        assert t.mac(link.host, link.host_if) == link.mac()
        assert t.mac("gw", link.gw_if) == link.mac(gw=True)
        neigh = t.ip(link.host, "neigh", "show", "dev", link.host_if) + \
            t.ip(link.host, "-6", "neigh", "show", "dev", link.host_if)
        assert f"{link.v4(gw=True)} lladdr {link.mac(gw=True)} PERMANENT" in neigh
        assert f"{link.v6(gw=True)} lladdr {link.mac(gw=True)} PERMANENT" in neigh
        # No link-local addresses: nothing to do DAD or ND for.
        assert "fe80" not in t.ip(link.host, "-6", "addr", "show", "dev", link.host_if)
    assert [t.ifindex("gw", link.gw_if) for link in LINKS.values()] == [11, 12, 13]
    assert [t.ifindex(link.host, link.host_if) for link in LINKS.values()] == [21, 22, 23]


@root_netns
def test_quiet_after_up(topology):
    before = topology.snapshot()
    time.sleep(1.5)
    assert topology.snapshot() == before


@root_netns
def test_close_leaves_nothing_behind_even_after_errors():
    t = Topology()
    with pytest.raises(RuntimeError, match="boom"):
        with t:
            names = set(t.ns.values())
            inodes = {ns_inode(n) for n in names}
            tracked = t.popen("srv", ["sleep", "300"])
            # A daemonised process nobody tracks must go too.
            t.ns_exec("sub1", ["sh", "-c", "sleep 300 >/dev/null 2>&1 &"])
            assert len(processes_in(inodes)) >= 2
            raise RuntimeError("boom")
    assert tracked.poll() is not None
    assert not os.path.exists(t._tmp.name)  # pcaps and the like
    assert not names & set(os.listdir("/run/netns"))
    assert processes_in(inodes) == []
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(n in listed for n in names)


@root_netns
def test_two_topologies_side_by_side():
    with Topology() as a, Topology() as b:
        assert not set(a.ns.values()) & set(b.ns.values())
        for t in (a, b):
            before = t.quiesce()
            assert t.ping("sub1", SRV.v4(), count=3).received == 3
            after = t.quiesce()
            assert wire_ip_totals("srv", "eth0", before, after).packets == 3


@root_netns
def test_failed_build_cleans_up(monkeypatch):
    t = Topology()
    real_sysctl = t._sysctl

    def failing_sysctl(host, values):
        real_sysctl(host, values)
        if host == "gw":
            raise RuntimeError("sysctl failed")

    monkeypatch.setattr(t, "_sysctl", failing_sysctl)
    with pytest.raises(RuntimeError):
        t.up()
    assert not set(t.ns.values()) & set(os.listdir("/run/netns"))


@root_netns
def test_remove_stale_spares_live_runs():
    dead = "acctt999999999x00dead-gw"  # above pid_max, so never alive
    subprocess.run(["ip", "netns", "add", dead], check=True)
    with Topology() as live:
        removed = remove_stale()
        assert dead in removed
        assert set(live.ns.values()) <= set(os.listdir("/run/netns"))
    assert dead not in os.listdir("/run/netns")


@root_netns
def test_inside_enters_and_returns(topology):
    home = os.stat("/proc/thread-self/ns/net").st_ino
    with topology.inside("gw"):
        assert os.stat("/proc/thread-self/ns/net").st_ino == ns_inode(topology.ns["gw"])
    assert os.stat("/proc/thread-self/ns/net").st_ino == home


@root_netns
def test_offloads_and_mtu(topology):
    t = topology
    t.set_offloads("gw", "wan0", gro=True, gso=False, tso=False)
    assert t.offloads("gw", "wan0") == {"gro": True, "gso": False, "tso": False}
    t.set_offloads("gw", "wan0", gso=True, tso=True)
    assert t.offloads("gw", "wan0") == {"gro": True, "gso": True, "tso": True}
    t.set_mtu("gw", "wan0", 1400)
    assert t._links_json("gw", "wan0")[0]["mtu"] == 1400


# --- traffic and its ground truth ----------------------------------------------------------

@root_netns
@pytest.mark.parametrize("src", ["sub1", "sub2"])
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("size", [56, 3000])  # 3000: fragmented both ways
def test_ping_counters_match_ground_truth(topology, src, v6, size):
    t = topology
    before = t.quiesce()
    res = t.ping(src, SRV.v6() if v6 else SRV.v4(), count=20, size=size)
    after = t.quiesce()
    assert (res.transmitted, res.received) == (20, 20)
    per_echo = echo_ip_lengths(size, v6, 1500)
    assert res.request == Traffic(20 * len(per_echo), 20 * sum(per_echo))
    lan = LINKS[src].gw_if
    for host, ifname, direction, truth in [
        (src, "eth0", "tx", res.request), ("gw", lan, "rx", res.request),
        ("gw", "wan0", "tx", res.request), ("srv", "eth0", "rx", res.request),
        ("srv", "eth0", "tx", res.reply), ("gw", lan, "tx", res.reply),
        (src, "eth0", "rx", res.reply),
    ]:
        seen = wire_ip_totals(host, ifname, before, after, direction)
        assert seen == truth, (host, ifname, direction)
    # Nothing else moved anywhere.
    other = "sub2" if src == "sub1" else "sub1"
    assert after[(other, "eth0")] == before[(other, "eth0")]


def _gso_run(t, sender, receiver, transfer):
    """Run `transfer` with segmentation forced at the gateway; return the
    receiver's counter totals, the gateway-ingress capture re-segmented, and
    the receiver's capture."""
    t.segment_at_gateway(sender, receiver)
    gw_in, rcv_if = LINKS[sender].gw_if, LINKS[receiver].host_if
    before = t.quiesce()
    with t.capture("gw", gw_in, "in") as gw_cap, t.capture(receiver, rcv_if, "in") as rcv_cap:
        result = transfer()
    after = t.quiesce()
    # A full veth ring (NAPI mode, with GRO on) would drop silently but count it here.
    assert [k for k in after if (after[k].rx_dropped, after[k].tx_dropped)
            != (before[k].rx_dropped, before[k].tx_dropped)] == []
    counters = wire_ip_totals(receiver, rcv_if, before, after)
    gw_naive = wire_ip_totals("gw", gw_in, before, after)
    return result, counters, gw_naive, gw_cap.path, rcv_cap.path


@root_netns
@pytest.mark.parametrize("reverse", [False, True], ids=["upload", "download"])
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_iperf3_tcp_segmented_at_gateway(topology, reverse, v6):
    t = topology
    sender, receiver = ("srv", "sub1") if reverse else ("sub1", "srv")
    addr = SRV.v6() if v6 else SRV.v4()
    result, counters, gw_naive, gw_pcap, rcv_pcap = _gso_run(
        t, sender, receiver, lambda: t.iperf3_tcp("sub1", "srv", addr, 20_000_000, reverse=reverse))
    assert result["end"]["sum_sent"]["bytes"] >= 20_000_000
    # The gateway saw super-packets: far fewer packets than on the wire after it.
    assert gw_naive.packets * 5 < counters.packets
    assert gw_naive.ip_bytes < counters.ip_bytes  # one set of headers per super-packet
    # Receiver counters == gateway-ingress capture cut into MTU-sized segments.
    assert pcap_ip_totals(gw_pcap, segment_mtu=1500) == counters
    # ... == the receiver's own capture, in which every packet fits the MTU.
    rcv = list(pcap_packets(rcv_pcap))
    assert Traffic(len(rcv), sum(p.ip_len for p in rcv)) == counters
    assert counters.packets > 5000 and max(p.ip_len for p in rcv) <= 1500
    # The server read at most what crossed the wire (iperf3's tail is lost to a RST).
    received = result["end"]["sum_received"]["bytes"]
    assert received <= sum(p.payload for p in rcv)


@root_netns
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_tcp_transfer_is_byte_exact(topology, v6):
    t = topology
    n = 10_000_001
    got, counters, _, gw_pcap, rcv_pcap = _gso_run(
        t, "sub1", "srv", lambda: t.tcp_transfer("sub1", "srv", SRV.v6() if v6 else SRV.v4(), n))
    assert got == n
    retrans = t.ns_exec("sub1", ["nstat", "-az", "TcpRetransSegs"]).stdout.split()
    if retrans[-2] == "0":  # all payload crossed once: the capture adds up exactly
        assert sum(p.payload for p in pcap_packets(rcv_pcap)) == n
    assert pcap_ip_totals(gw_pcap, segment_mtu=1500) == counters


@root_netns
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_iperf3_udp_ground_truth(topology, v6):
    t = topology
    length, nbytes = 1200, 1_200_000
    with t.capture("srv", "eth0", "in", bpf_filter="udp") as cap:
        result = t.iperf3_udp("sub1", "srv", SRV.v6() if v6 else SRV.v4(), nbytes, length=length)
    truth = iperf3_udp_traffic(result, length, v6)
    assert truth.packets == math.ceil(nbytes / length)
    data = [p for p in pcap_packets(cap.path) if p.ip_len == udp_ip_len(length, v6)]
    assert Traffic(len(data), sum(p.ip_len for p in data)) == truth
    # No iperf3 left running on either side.
    for host in ("sub1", "srv"):
        pids = subprocess.run(["ip", "netns", "pids", t.ns[host]], capture_output=True, text=True)
        assert pids.stdout.strip() == ""


@root_netns
@pytest.mark.parametrize("vlan_ids", [[100], [100, 200]], ids=["dot1q", "qinq"])
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_vlan_frames_reach_gateway(topology, vlan_ids, v6):
    t = topology
    lan1 = LINKS["sub1"]
    src, dst = (lan1.v6(), SRV.v6()) if v6 else (lan1.v4(), SRV.v4())
    before = t.quiesce()
    with t.capture("gw", "lan1", "in") as cap:
        sent = t.send_vlan_frames("sub1", "eth0", lan1.mac(gw=True), src, dst, vlan_ids,
                                  count=25, payload_len=200)
    after = t.quiesce()
    assert sent == Traffic(25, 25 * udp_ip_len(200, v6))
    assert wire_ip_totals("gw", "lan1", before, after, vlan_tags=len(vlan_ids)) == sent
    assert pcap_ip_totals(cap.path) == sent
    # Dropped by the gateway's stack: nothing was forwarded.
    assert after[("gw", "wan0")] == before[("gw", "wan0")]
