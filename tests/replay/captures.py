"""Captures for the replay tier, generated at test time: the kinds of frame
third-party captures hold (IP options, IPv6 extension headers, QinQ,
fragments, jumbo frames) and the kinds they get wrong (records cut short by
a snaplen, as `editcap -s` makes them; headers whose lengths lie)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from scapy.all import (ICMP, IP, TCP, UDP, ARP, Dot1AD, Dot1Q, Ether, ICMPv6EchoRequest,
                       IPOption_NOP, IPOption_Router_Alert, IPv6, IPv6ExtHdrDestOpt,
                       IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, Jumbo, Raw)

# The frames go to a MAC nobody has: the stack behind the hooks drops them
# (PACKET_OTHERHOST) and never answers.
ETH = dict(src="02:00:5e:00:00:01", dst="02:00:5e:00:00:02")
SUBS = ("10.9.0.2", "10.9.0.3", "2001:db8:9::2", "2001:db8:9::3")
REMS = ("192.0.2.20", "198.51.100.7", "2001:db8:f::20")


@dataclass(frozen=True)
class Record:
    frame: bytes     # as captured: possibly cut short
    wire_len: int    # the frame's length on the wire


def write_pcap(path: str, records: list[Record]) -> None:
    """A classic pcap (microseconds, Ethernet), records 1 ms apart."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        for i, r in enumerate(records):
            f.write(struct.pack("<IIII", 1_700_000_000 + i // 1000, (i % 1000) * 1000,
                                len(r.frame), r.wire_len))
            f.write(r.frame)


def read_pcap(path: str) -> list[bytes]:
    """The captured bytes of every record (what tcpreplay sends)."""
    out = []
    with open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack_from("<I", data, 0)
    assert magic == 0xA1B2C3D4, "little-endian microsecond pcap expected"
    off = 24
    while off < len(data):
        _, _, caplen, _ = struct.unpack_from("<IIII", data, off)
        out.append(data[off + 16:off + 16 + caplen])
        off += 16 + caplen
    return out


def _ah(nh: int) -> bytes:
    """IPv6 AH with a 96-bit ICV: 24 bytes, length field 4."""
    return bytes([nh, 4, 0, 0]) + struct.pack("!II", 0x100, 1) + b"\x5a" * 12


def _set16(frame: bytes, off: int, value: int) -> bytes:
    return frame[:off] + struct.pack("!H", value) + frame[off + 2:]


def pay(n: int, c: bytes = b"x") -> Raw:
    return Raw(c * n)


def frames(mtu: int) -> list[Record]:
    """One of each kind, sized to fit an interface of `mtu` (the largest IP
    packet a packet socket may send there; an 802.1ad outer tag costs 8)."""
    s4, s4b, s6, s6b = SUBS
    r4, r4b, r6 = REMS
    out: list = []
    e = Ether(**ETH)
    # plain TCP, UDP, ICMP both ways round (the hook sees either address first)
    out += [e / IP(src=s4, dst=r4) / TCP(sport=40100, dport=80, flags="S"),
            e / IP(src=r4, dst=s4) / TCP(sport=80, dport=40100, flags="SA") / pay(1200),
            e / IP(src=s4b, dst=r4b) / UDP(sport=5353, dport=53) / pay(40),
            e / IP(src=s4, dst=r4) / ICMP(type=8) / pay(56),
            e / IPv6(src=s6, dst=r6) / TCP(sport=40101, dport=443, flags="PA") / pay(700),
            e / IPv6(src=s6b, dst=r6) / UDP(sport=40102, dport=4500) / pay(10),
            e / IPv6(src=s6, dst=r6) / ICMPv6EchoRequest() / pay(32)]
    # IP options, TCP options
    out += [e / IP(src=s4, dst=r4, options=[IPOption_Router_Alert()]) / UDP(sport=40103, dport=5004),
            e / IP(src=s4b, dst=r4, options=[IPOption_NOP()] * 40) / TCP(
                sport=40104, dport=22, options=[("MSS", 1460), ("SAckOK", b""), ("NOP", None),
                                                ("WScale", 7), ("Timestamp", (1, 2))]) / pay(99)]
    # IPv6 extension headers: a chain, AH, fragments, one too many to walk
    out += [e / IPv6(src=s6, dst=r6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting()
            / IPv6ExtHdrDestOpt() / TCP(sport=40105, dport=25) / pay(5),
            e / IPv6(src=s6b, dst=r6, nh=51) / Raw(_ah(6)) / TCP(sport=40106, dport=993) / pay(60),
            e / IPv6(src=s6, dst=r6) / IPv6ExtHdrDestOpt(nh=51) / Raw(_ah(17))
            / UDP(sport=40107, dport=500) / pay(30),
            e / IPv6(src=s6, dst=r6) / IPv6ExtHdrFragment(m=1, id=7) / UDP(sport=40108, dport=53)
            / pay(64),
            e / IPv6(src=s6, dst=r6) / IPv6ExtHdrFragment(offset=9, id=7, nh=17) / pay(48),
            e / IPv6(src=s6b, dst=r6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
            / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
            / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt(nh=6) / TCP(sport=40109, dport=80)]
    # VLANs: 802.1Q, QinQ (802.1ad and the old 0x9100 outer tag)
    out += [e / Dot1Q(vlan=10) / IP(src=s4, dst=r4) / UDP(sport=40110, dport=1194) / pay(300),
            e / Dot1AD(vlan=20) / Dot1Q(vlan=30) / IP(src=s4b, dst=r4) / TCP(sport=40111, dport=80)
            / pay(500),
            e / Dot1AD(vlan=20) / Dot1Q(vlan=31) / IPv6(src=s6, dst=r6) / UDP(sport=40112, dport=123),
            Ether(type=0x9100, **ETH) / Dot1Q(vlan=40) / Dot1Q(vlan=41) / IP(src=s4, dst=r4b)
            / UDP(sport=40113, dport=161) / pay(20)]
    # IPv4 fragments: first, later, a tiny first one (padded, as on a wire)
    out += [e / IP(src=s4, dst=r4, flags="MF", id=5) / UDP(sport=40114, dport=5060, len=3000)
            / pay(1000),
            e / IP(src=s4, dst=r4, frag=126, id=5, proto=17) / pay(1000),
            e / IP(src=s4b, dst=r4, flags="MF", id=6, proto=6) / Raw(bytes(TCP(sport=40115, dport=143))[:8])]
    # the same packet cut at each layer, and headers that lie about lengths
    whole = bytes(e / IP(src=s4, dst=r4) / TCP(sport=40116, dport=80) / pay(400))
    whole6 = bytes(e / Dot1Q(vlan=50) / IPv6(src=s6, dst=r6) / UDP(sport=40117, dport=53) / pay(400))
    records = [Record(bytes(f), len(bytes(f))) for f in out]
    tiny = records[-1].frame   # the tiny fragment, padded as an Ethernet wire pads it
    records[-1] = Record(tiny + bytes(60 - len(tiny)), 60)
    for cut in (20, 40, 54, 64, 96, 200):
        records.append(Record(whole[:cut], len(whole)))
    for cut in (30, 60, 64, 100):
        records.append(Record(whole6[:cut], len(whole6)))
    lies = [_set16(whole, 14 + 2, 65535), _set16(whole, 14 + 2, 0), _set16(whole, 14 + 2, 10),
            _set16(whole6, 18 + 4, 60000), _set16(whole6, 18 + 4, 0),
            bytes(e / IPv6(src=s6, dst=r6, plen=0) / IPv6ExtHdrHopByHop(options=[Jumbo(jumboplen=90000)])
                  / UDP(sport=40118, dport=9) / pay(50)),
            bytes(Ether(src=ETH["src"], dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=s4, pdst="10.9.0.1"))]
    records += [Record(f, len(f)) for f in lies]
    # large frames: 4 KB (a packet socket sends those non-linear) and jumbo
    for size, src, dst in ((4000, s4, r4), (9000, s6b, r6), (8000, s4b, r4b)):
        ip = IP(src=src, dst=dst) if ":" not in src else IPv6(src=src, dst=dst)
        l3 = 20 if ":" not in src else 40
        if size <= mtu:
            f = bytes(e / ip / UDP(sport=40120, dport=9) / pay(size - l3 - 8, b"J"))
            records.append(Record(f, len(f)))
    return records
