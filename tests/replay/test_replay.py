"""Replay tier: generated captures sent with tcpreplay through a hooked
veth, in each ingress hook mode. The totals, per-address, per-port, per-VLAN
and health counters must equal, exactly, what the capture itself says they
should be (truth.py, a parser that shares nothing with acctd)."""

from __future__ import annotations

import re
import time

import pytest

from tests.netns.test_datapath import COUNTERS, delta as section_delta

from . import captures, truth

pytestmark = [pytest.mark.root, pytest.mark.netns]

# Native XDP on a veth takes frames of one page only (the programs are not
# multi-buffer): its runs use a smaller MTU and leave the jumbo frames out.
MTU = {"tc": 9000, "xdp-generic": 9000, "xdp-native": 3000}


def replay(wire, path: str, count: int) -> None:
    res = wire.run("tcpreplay", "--pps=4000", "-i", "rpa", path)
    sent = re.search(r"Successful packets:\s+(\d+)", res.stdout)
    failed = re.search(r"Failed packets:\s+(\d+)", res.stdout)
    assert sent and failed, res.stdout + res.stderr
    assert (int(sent.group(1)), int(failed.group(1))) == (count, 0), res.stdout + res.stderr


def settled(reader) -> dict:
    """The counters once they stop moving (native XDP hands frames on from NAPI)."""
    last = reader.totals()
    for _ in range(25):
        time.sleep(0.1)
        now = reader.totals()
        if now == last:
            return now
        last = now
    return last


def delta(before: dict, after: dict) -> dict:
    out = {section: section_delta(before, after, section) for section in ("addrs", "ports", "vlans")}
    out["health"] = {k: v - before["health"][k] for k, v in after["health"].items()
                     if k != "flow_new" and v != before["health"][k]}
    return out


def run(wire, tmp_path, mode: str, mtu: int, records: list[captures.Record],
        name: str) -> tuple[dict, dict]:
    """Replays `records` through the wire hooked in `mode`: (what acctd
    counted, what the capture says)."""
    from acctd.kernel.reader import Reader

    path = str(tmp_path / f"{name}.pcap")
    captures.write_pcap(path, records)
    frames = captures.read_pcap(path)  # the truth reads the file tcpreplay reads
    wire.hook(mode, mtu)
    reader = Reader(wire.dp)
    before = settled(reader)
    replay(wire, path, len(frames))
    after = settled(reader)
    got = delta(before, after)
    want = truth.expected(frames)
    got["totals"] = {f: after["totals"][f] - before["totals"][f] for f in COUNTERS}
    want["totals"] = {f: sum(r[f] for r in want["addrs"].values()) for f in COUNTERS}
    return got, want


@pytest.mark.parametrize("mode", ["tc", "xdp-generic", "xdp-native"])
def test_replayed_capture_counts_exactly(wire, tmp_path, mode):
    records = captures.frames(MTU[mode])
    got, want = run(wire, tmp_path, mode, MTU[mode], records, f"mixed-{mode}")
    # the capture holds what it should: every kind of outcome, jumbo frames where they fit
    kinds = {truth.classify(r.frame).kind for r in records}
    assert kinds == {"accounted", "malformed", "truncated", "non_ip"}
    assert any(len(r.frame) >= 9000 for r in records) == (MTU[mode] >= 9000)
    assert got == want


def test_frames_up_to_64k_at_tc(wire, tmp_path):
    """Frames a packet socket sends non-linear (about 4 KB and more), up to
    the largest IP packet, accounted exactly at TC, ingress and egress."""
    from scapy.all import IP, UDP, TCP, Dot1Q, Ether, IPv6, Raw

    e = Ether(**captures.ETH)
    pkts = [e / IP(src="10.9.1.2", dst="192.0.2.30") / UDP(sport=40200, dport=9) / Raw(b"a" * (n - 28))
            for n in (3900, 4000, 4096, 16384, 65535)]
    pkts += [e / IPv6(src="2001:db8:9::5", dst="2001:db8:f::30") / TCP(sport=40201, dport=80)
             / Raw(b"b" * (65535 - 40 - 20)),
             e / Dot1Q(vlan=60) / IP(src="10.9.1.3", dst="192.0.2.30") / TCP(sport=40202, dport=443)
             / Raw(b"c" * (30000 - 40))]
    records = [captures.Record(bytes(p), len(bytes(p))) for p in pkts]
    got, want = run(wire, tmp_path, "tc", 65535, records, "large")
    assert want["health"] == {}
    assert got == want
