"""Table-driven BPF_PROG_RUN fixtures for the datapath.

Each case: a packet, the program it runs through (on the loopback device,
configured as a LAN interface), optional preloaded state, the verdict, and
the exact change of every map. A map or field not listed must not move.
Expected byte counts come from scapy's own lengths, not from acctd.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
from scapy.all import (ARP, ICMP, IP, TCP, UDP, Dot1AD, Dot1Q, Ether, ICMPv6EchoRequest,
                       IPOption_Router_Alert, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment,
                       IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, Jumbo, Raw)

from acctd.kernel import abi, syscalls, drain
from acctd.model.addresses import format_addr, parse_addr

from .conftest import LO_IFINDEX, LO_SLOT, set_class, set_role
from .maps_diff import changes, health, snapshot

pytestmark = [pytest.mark.root, pytest.mark.kernel]

SUB = "10.0.0.2"          # a subscriber (local) address
SUB6 = "2001:db8:1::2"
REM = "192.0.2.10"        # somewhere upstream
REM6 = "2001:db8:ff::10"
ETH = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")

XDP_DROP, XDP_PASS = 1, 2
TC_ACT_OK, TC_ACT_SHOT = 0, 2
PASS = {"acct_xdp": XDP_PASS, "acct_tc_ingress": TC_ACT_OK, "acct_tc_egress": TC_ACT_OK}
DROP = {"acct_xdp": XDP_DROP, "acct_tc_ingress": TC_ACT_SHOT, "acct_tc_egress": TC_ACT_SHOT}


@dataclass
class Case:
    name: str
    pkt: bytes
    expect: dict                      # map -> key -> field -> delta (see maps_diff)
    prog: str = "acct_xdp"
    drop: bool = False
    ctx: bytes | None = None
    preload: Callable | None = None   # (datapath) -> None
    role: abi.Role = abi.Role.LAN


def ip_len(pkt) -> int:
    return len(pkt[IP]) if IP in pkt else len(pkt[IPv6])


def accounted(pkt, *, local, remote, direction, proto, ver=4, sport=0, dport=0,
              vlan=(0, 0), port_slot, packets=1, nbytes=None, extra_health=None,
              tos=0) -> dict:
    """The map changes of one accounted packet."""
    n = ip_len(pkt) if nbytes is None else nbytes
    d = int(direction)

    def pair(v):
        out = [0, 0]
        out[d] = v
        return out

    src, dst = (local, remote) if direction == abi.Dir.OUT else (remote, local)
    h = health(flow_new=1, **(extra_health or {}))
    exp = {
        "acct_addrs": {local: {"packets": pair(packets), "bytes": pair(n)}},
        "acct_flows": {(LO_IFINDEX, d, ver, proto, tos, vlan[0], vlan[1], sport, dport, src, dst):
                       {"packets": packets, "bytes": n}},
        "acct_vlans": {vlan[0]: {"packets": pair(packets), "bytes": pair(n)}},
        "acct_ports": {port_slot: {"packets": pair(packets), "bytes": pair(n)}},
        "acct_ifaces": {LO_SLOT: {"packets": pair(packets), "bytes": pair(n), "health": h}},
    }
    if vlan[1]:
        exp["acct_vlans"][abi.VLAN_SLOTS + vlan[1]] = {"packets": pair(packets), "bytes": pair(n)}
    return exp


def health_only(frame: bytes, **named) -> dict:
    bytes_vec = [0] * abi.HEALTH_MAX
    for n in named:
        bytes_vec[abi.Health[n.upper()]] = len(frame)
    return {"acct_ifaces": {LO_SLOT: {"health": health(**named), "health_bytes": bytes_vec}}}


TCP_ = abi.PORT_TCP_BASE
UDP_ = abi.PORT_UDP_BASE
PROTO_ = abi.PORT_PROTO_BASE
OUT, IN = abi.Dir.OUT, abi.Dir.IN


def _case(name, pkt, prog="acct_xdp", **acct):
    return Case(name, bytes(pkt), accounted(pkt, **acct), prog=prog)


def _gso_ctx(segs: int, size: int) -> bytes:
    ctx = bytearray(192)  # struct __sk_buff: gso_segs at 164, gso_size at 176
    ctx[164:168] = segs.to_bytes(4, "little")
    ctx[176:180] = size.to_bytes(4, "little")
    return bytes(ctx)


def _block(addr, sys_policy):
    def preload(dp):
        set_class(dp, addr, sys_policy=sys_policy)
    return preload


def drops(cause: abi.Drop, direction: abi.Dir, n: int) -> list:
    out = [[0, 0] for _ in range(abi.DROP_MAX)]
    out[cause][direction] = n
    return out


def build_cases() -> list[Case]:
    c = []
    p = Ether(**ETH) / IP(src=SUB, dst=REM) / TCP(sport=40001, dport=80, flags="S") / Raw(b"x" * 100)
    c.append(_case("ipv4-tcp-out-xdp", p, local=SUB, remote=REM, direction=OUT, proto=6,
                   sport=40001, dport=80, port_slot=TCP_ + 80))
    p = Ether(**ETH) / IP(src=REM, dst=SUB) / UDP(sport=53, dport=40002) / Raw(b"d" * 60)
    c.append(_case("ipv4-udp-in-tc-egress", p, prog="acct_tc_egress", local=SUB, remote=REM,
                   direction=IN, proto=17, sport=53, dport=40002, port_slot=UDP_ + 53))
    p = Ether(**ETH) / IP(src=SUB, dst=REM) / ICMP(type=8, code=0, id=7) / Raw(b"p" * 56)
    c.append(_case("ipv4-icmp-echo", p, local=SUB, remote=REM, direction=OUT, proto=1,
                   sport=8, dport=0, port_slot=PROTO_ + 1))
    p = Ether(**ETH) / IPv6(src=SUB6, dst=REM6) / TCP(sport=40003, dport=443) / Raw(b"y" * 33)
    c.append(_case("ipv6-tcp-out-tc-ingress", p, prog="acct_tc_ingress", local=SUB6, remote=REM6,
                   direction=OUT, proto=6, ver=6, sport=40003, dport=443, port_slot=TCP_ + 443))
    p = Ether(**ETH) / IPv6(src=SUB6, dst=REM6) / UDP(sport=40004, dport=4500) / Raw(b"u" * 10)
    c.append(_case("ipv6-udp-out", p, local=SUB6, remote=REM6, direction=OUT, proto=17, ver=6,
                   sport=40004, dport=4500, port_slot=UDP_ + 4500))
    p = Ether(**ETH) / IPv6(src=REM6, dst=SUB6) / ICMPv6EchoRequest(id=1) / Raw(b"q" * 8)
    c.append(_case("icmpv6-echo-in-tc-egress", p, prog="acct_tc_egress", local=SUB6, remote=REM6,
                   direction=IN, proto=58, ver=6, sport=128, dport=0, port_slot=PROTO_ + 58))
    # DSCP EF with an ECN mark: the flow keeps the DSCP bits only
    p = Ether(**ETH) / IP(src=SUB, dst=REM, tos=0xB9) / UDP(sport=40020, dport=5004)
    c.append(_case("ipv4-dscp", p, local=SUB, remote=REM, direction=OUT, proto=17,
                   sport=40020, dport=5004, port_slot=UDP_ + 5004, tos=0xB8))
    p = Ether(**ETH) / IPv6(src=SUB6, dst=REM6, tc=0x2A) / UDP(sport=40021, dport=5004)
    c.append(_case("ipv6-traffic-class", p, local=SUB6, remote=REM6, direction=OUT, proto=17,
                   ver=6, sport=40021, dport=5004, port_slot=UDP_ + 5004, tos=0x28))
    p = Ether(**ETH) / Dot1Q(vlan=100) / IP(src=SUB, dst=REM) / UDP(sport=40005, dport=1194)
    c.append(_case("vlan-802.1q", p, local=SUB, remote=REM, direction=OUT, proto=17,
                   sport=40005, dport=1194, vlan=(100, 0), port_slot=UDP_ + 1194))
    p = (Ether(**ETH) / Dot1AD(vlan=200) / Dot1Q(vlan=300) / IP(src=SUB, dst=REM)
         / TCP(sport=40006, dport=22) / Raw(b"z" * 7))
    c.append(_case("qinq-802.1ad", p, local=SUB, remote=REM, direction=OUT, proto=6,
                   sport=40006, dport=22, vlan=(200, 300), port_slot=TCP_ + 22))
    p = (Ether(**ETH) / IP(src=SUB, dst=REM, options=[IPOption_Router_Alert()])
         / TCP(sport=40007, dport=8080) / Raw(b"o" * 5))
    c.append(_case("ipv4-options", p, local=SUB, remote=REM, direction=OUT, proto=6,
                   sport=40007, dport=8080, port_slot=TCP_ + 8080))
    p = Ether(**ETH) / IP(src=SUB, dst=REM, flags="MF", frag=0, proto=17) / UDP(sport=40008, dport=5060, len=2000) / Raw(b"f" * 200)
    c.append(_case("ipv4-first-fragment", p, local=SUB, remote=REM, direction=OUT, proto=17,
                   sport=40008, dport=5060, port_slot=UDP_ + 5060))
    p = Ether(**ETH) / IP(src=SUB, dst=REM, frag=185, proto=17, id=99) / Raw(b"g" * 300)
    c.append(_case("ipv4-non-first-fragment", p, local=SUB, remote=REM, direction=OUT, proto=17,
                   port_slot=UDP_ + 0, extra_health={"not_first_frag": 1}))
    p = (Ether(**ETH) / IPv6(src=SUB6, dst=REM6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting()
         / IPv6ExtHdrDestOpt() / TCP(sport=40009, dport=25) / Raw(b"e" * 3))
    c.append(_case("ipv6-ext-headers", p, local=SUB6, remote=REM6, direction=OUT, proto=6, ver=6,
                   sport=40009, dport=25, port_slot=TCP_ + 25))
    p = (Ether(**ETH) / IPv6(src=SUB6, dst=REM6) / IPv6ExtHdrFragment(offset=0, m=1, id=5)
         / UDP(sport=40010, dport=53) / Raw(b"h" * 64))
    c.append(_case("ipv6-first-fragment", p, local=SUB6, remote=REM6, direction=OUT, proto=17,
                   ver=6, sport=40010, dport=53, port_slot=UDP_ + 53))
    p = (Ether(**ETH) / IPv6(src=SUB6, dst=REM6) / IPv6ExtHdrFragment(offset=100, m=0, id=5, nh=17)
         / Raw(b"i" * 64))
    c.append(_case("ipv6-non-first-fragment", p, local=SUB6, remote=REM6, direction=OUT, proto=17,
                   ver=6, port_slot=UDP_ + 0, extra_health={"not_first_frag": 1}))
    p = Ether(**ETH) / IP(src=SUB, dst=REM) / UDP(sport=40011, dport=9) / Raw(b"J" * 8958)
    assert len(p) == 9000
    c.append(_case("jumbo-9000", p, local=SUB, remote=REM, direction=OUT, proto=17,
                   sport=40011, dport=9, port_slot=UDP_ + 9))
    # A GSO super-packet at TC: 4 segments of 800 payload bytes, each with
    # its own 20-byte IP and 20-byte TCP header on the wire.
    p = Ether(**ETH) / IP(src=SUB, dst=REM) / TCP(sport=40012, dport=5201, flags="A") / Raw(b"G" * 3200)
    exp = accounted(p, local=SUB, remote=REM, direction=OUT, proto=6, sport=40012, dport=5201,
                    port_slot=TCP_ + 5201, packets=4, nbytes=4 * (20 + 20 + 800))
    c.append(Case("gso-tc-ingress", bytes(p), exp, prog="acct_tc_ingress", ctx=_gso_ctx(4, 800)))
    c += exactness_cases()

    # Not accountable: counted in health, passed.
    arp = bytes(Ether(src=ETH["src"], dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=SUB, pdst="10.0.0.1"))
    c.append(Case("arp", arp, health_only(arp, non_ip=1)))
    cut_tag = bytes(Ether(**ETH) / Dot1Q(vlan=5) / IP(src=SUB, dst=REM))[:16]
    cut_tag += b"\0" * (14 - len(cut_tag)) if len(cut_tag) < 14 else b""
    c.append(Case("truncated-vlan-tag", cut_tag, health_only(cut_tag, truncated=1)))
    cut_ip = bytes(Ether(**ETH) / IP(src=SUB, dst=REM) / UDP())[:14 + 10]
    c.append(Case("truncated-ipv4", cut_ip, health_only(cut_ip, truncated=1)))
    cut_ip6 = bytes(Ether(**ETH) / IPv6(src=SUB6, dst=REM6) / UDP())[:14 + 30]
    c.append(Case("truncated-ipv6", cut_ip6, health_only(cut_ip6, truncated=1)))
    bad = bytearray(bytes(Ether(**ETH) / IP(src=SUB, dst=REM) / UDP(sport=1, dport=2)))
    bad[14] = 0x43  # version 4, IHL 3 (< 5)
    c.append(Case("malformed-ihl", bytes(bad), health_only(bytes(bad), malformed=1)))

    # Enforcement: a blocked address is dropped and counted apart.
    p = Ether(**ETH) / IP(src="10.0.0.66", dst=REM) / TCP(sport=40014, dport=80)
    n = ip_len(p)
    c.append(Case("blocked-address-dropped", bytes(p), {
        "acct_addrs": {"10.0.0.66": {"drop_packets": drops(abi.Drop.BLOCK, OUT, 1),
                                     "drop_bytes": drops(abi.Drop.BLOCK, OUT, n)}},
        "acct_ifaces": {LO_SLOT: {"drop_packets": drops(abi.Drop.BLOCK, OUT, 1),
                                  "drop_bytes": drops(abi.Drop.BLOCK, OUT, n)}},
    }, drop=True, preload=_block("10.0.0.66", abi.SysPolicy.QUOTA)))
    # sys-deny-auth and sys-deny-block are reasons like the others
    for last, reason in ((68, abi.SysPolicy.AUTH), (69, abi.SysPolicy.BLOCK)):
        addr = f"10.0.0.{last}"
        p = Ether(**ETH) / IP(src=addr, dst=REM) / TCP(sport=40000 + last, dport=80)
        n = ip_len(p)
        c.append(Case(f"blocked-{reason.name.lower()}-dropped", bytes(p), {
            "acct_addrs": {addr: {"drop_packets": drops(abi.Drop.BLOCK, OUT, 1),
                                  "drop_bytes": drops(abi.Drop.BLOCK, OUT, n)}},
            "acct_ifaces": {LO_SLOT: {"drop_packets": drops(abi.Drop.BLOCK, OUT, 1),
                                      "drop_bytes": drops(abi.Drop.BLOCK, OUT, n)}},
        }, drop=True, preload=_block(addr, reason)))
    p = Ether(**ETH) / IP(src="10.0.0.67", dst=REM) / TCP(sport=40015, dport=80)
    c.append(Case("sys-allow-overrides-drop", bytes(p),
                  accounted(p, local="10.0.0.67", remote=REM, direction=OUT, proto=6,
                            sport=40015, dport=80, port_slot=TCP_ + 80),
                  preload=_block("10.0.0.67", abi.SysPolicy.QUOTA | abi.SysPolicy.ALLOW)))
    # WAN: interface statistics only, never accounting; but it enforces.
    p = Ether(**ETH) / IP(src=REM, dst="10.0.0.70") / UDP(sport=53, dport=40016)
    n = ip_len(p)
    c.append(Case("wan-counts-no-accounting", bytes(p), {
        "acct_ifaces": {LO_SLOT: {"packets": [1, 0], "bytes": [n, 0]}}}, role=abi.Role.WAN))
    p = Ether(**ETH) / IP(src=REM, dst="10.0.0.71") / UDP(sport=53, dport=40017)
    n = ip_len(p)
    c.append(Case("wan-enforces-block", bytes(p), {
        # a WAN hook never creates address entries: the drop counts per interface
        "acct_ifaces": {LO_SLOT: {"drop_packets": drops(abi.Drop.BLOCK, IN, 1),
                                  "drop_bytes": drops(abi.Drop.BLOCK, IN, n)}},
    }, drop=True, role=abi.Role.WAN, preload=_block("10.0.0.71", abi.SysPolicy.DENY)))
    return c


def _tiny_fragment(ip, l4: bytes, pad_to: int = 0) -> bytes:
    """A first fragment whose IP packet ends inside the L4 header (`l4`: its
    first bytes), optionally with Ethernet padding after it."""
    frame = bytes(Ether(**ETH) / ip / Raw(l4))
    return frame + b"\0" * max(0, pad_to - len(frame))


def _ah(nh: int) -> bytes:
    """An IPv6 Authentication Header with a 96-bit ICV: (4 + 2) * 4 = 24 bytes."""
    return bytes([nh, 4, 0, 0]) + (0x1234).to_bytes(4, "big") + (7).to_bytes(4, "big") + b"\xa5" * 12


def _set_len(frame: bytes, offset: int, value: int) -> bytes:
    """The frame with a 16-bit length field rewritten (a header that lies)."""
    return frame[:offset] + value.to_bytes(2, "big") + frame[offset + 2:]


TC_PROGS = ("acct_tc_ingress", "acct_tc_egress")


def exactness_cases() -> list[Case]:
    """README "What is counted": lengths are checked against the frame,
    IPv6 AH is walked, a tiny first fragment keeps its ports."""
    c = []
    # IP lengths beyond the frame: malformed, never accounted, at every hook.
    v4 = bytes(Ether(**ETH) / IP(src=REM, dst=SUB) / UDP(sport=53, dport=40030) / Raw(b"L" * 58))
    assert len(v4) == 100
    v6 = bytes(Ether(**ETH) / IPv6(src=REM6, dst=SUB6) / UDP(sport=53, dport=40031) / Raw(b"L" * 38))
    assert len(v6) == 100
    for prog in ("acct_xdp",) + TC_PROGS:
        claim = _set_len(v4, 14 + 2, 65535)
        c.append(Case(f"ipv4-length-beyond-frame-{prog}", claim, health_only(claim, malformed=1),
                      prog=prog))
        claim = _set_len(v6, 14 + 4, 65535 - 40)
        c.append(Case(f"ipv6-length-beyond-frame-{prog}", claim, health_only(claim, malformed=1),
                      prog=prog))
        # by one byte: the last byte of the claimed packet is missing
        claim = _set_len(v4, 14 + 2, 100 - 14 + 1)
        c.append(Case(f"ipv4-length-one-beyond-{prog}", claim, health_only(claim, malformed=1),
                      prog=prog))
    # A capture cut short (snaplen, editcap -s): the IP header claims the whole packet.
    full = Ether(**ETH) / IP(src=SUB, dst=REM) / TCP(sport=40013, dport=80) / Raw(b"t" * 40)
    cut = bytes(full)[:14 + 20 + 8]
    c.append(Case("cut-frame-malformed", cut, health_only(cut, malformed=1)))
    # Ethernet padding after a short packet: the IP length counts, not the frame.
    p = Ether(**ETH) / IP(src=SUB, dst=REM) / UDP(sport=40032, dport=7) / Raw(b"p" * 2)
    padded = bytes(p) + b"\0" * (60 - len(p))
    c.append(Case("ipv4-padded-frame", padded, accounted(
        p, local=SUB, remote=REM, direction=OUT, proto=17, sport=40032, dport=7,
        port_slot=UDP_ + 7)))
    # Length 0: a BIG TCP packet at TC (GSO), else malformed.
    for prog in ("acct_xdp", "acct_tc_ingress"):
        zero = _set_len(v4, 14 + 2, 0)
        c.append(Case(f"ipv4-length-0-not-gso-{prog}", zero, health_only(zero, malformed=1),
                      prog=prog))
        zero = _set_len(v6, 14 + 4, 0)
        c.append(Case(f"ipv6-length-0-no-jumbo-{prog}", zero, health_only(zero, malformed=1),
                      prog=prog))
    for ver, (ip, off) in ((4, (IP(src=SUB, dst=REM), 14 + 2)),
                           (6, (IPv6(src=SUB6, dst=REM6), 14 + 4))):
        # 3 segments of 1000 payload bytes; the headers' length field is 0
        p = Ether(**ETH) / ip / TCP(sport=40033, dport=5201, flags="A") / Raw(b"B" * 3000)
        hdrs = (20 if ver == 4 else 40) + 20
        exp = accounted(p, local=SUB if ver == 4 else SUB6, remote=REM if ver == 4 else REM6,
                        direction=OUT, proto=6, ver=ver, sport=40033, dport=5201,
                        port_slot=TCP_ + 5201, packets=3, nbytes=3 * (hdrs + 1000))
        c.append(Case(f"big-tcp-ipv{ver}-length-0-gso", _set_len(bytes(p), off, 0), exp,
                      prog="acct_tc_ingress", ctx=_gso_ctx(3, 1000)))
    # An IPv6 jumbogram: payload length 0 and the Jumbo option's length instead.
    body = TCP(sport=40034, dport=80) / Raw(b"j" * 50)
    jumbo = IPv6ExtHdrHopByHop(options=[Jumbo(jumboplen=8 + len(body))])
    p = Ether(**ETH) / IPv6(src=SUB6, dst=REM6, plen=0) / jumbo / body
    c.append(_case("ipv6-jumbo-option", p, local=SUB6, remote=REM6, direction=OUT, proto=6, ver=6,
                   sport=40034, dport=80, port_slot=TCP_ + 80, nbytes=40 + 8 + len(body)))
    p = (Ether(**ETH) / IPv6(src=SUB6, dst=REM6, plen=0)
         / IPv6ExtHdrHopByHop(options=[Jumbo(jumboplen=70000)]) / body)
    c.append(Case("ipv6-jumbo-beyond-frame", bytes(p), health_only(bytes(p), malformed=1)))
    # IPv6 AH is an extension header: filed under the protocol after it.
    for sport, prog in enumerate(("acct_xdp", "acct_tc_ingress"), 40035):  # one flow each
        p = (Ether(**ETH) / IPv6(src=SUB6, dst=REM6, nh=51) / Raw(_ah(6))
             / TCP(sport=sport, dport=443) / Raw(b"a" * 20))
        c.append(_case(f"ipv6-ah-{prog}", p, prog=prog, local=SUB6, remote=REM6, direction=OUT,
                       proto=6, ver=6, sport=sport, dport=443, port_slot=TCP_ + 443))
    p = (Ether(**ETH) / IPv6(src=SUB6, dst=REM6) / IPv6ExtHdrHopByHop(nh=51) / Raw(_ah(17))
         / UDP(sport=40040, dport=500) / Raw(b"k" * 9))
    c.append(_case("ipv6-hop-by-hop-then-ah", p, local=SUB6, remote=REM6, direction=OUT,
                   proto=17, ver=6, sport=40040, dport=500, port_slot=UDP_ + 500))
    # A tiny first fragment: the ports from the 4 bytes that hold them;
    # still accounted, and counted as truncated.
    for sport, (name, pad) in enumerate((("", 0), ("-padded", 60)), 40037):
        ip = IP(src=SUB, dst=REM, flags="MF", proto=6, id=3)
        f = _tiny_fragment(ip, bytes(TCP(sport=sport, dport=25))[:8], pad)
        c.append(Case(f"tiny-first-fragment-tcp{name}", f, accounted(
            IP(f[14:14 + 28]), local=SUB, remote=REM, direction=OUT, proto=6, sport=sport,
            dport=25, port_slot=TCP_ + 25, extra_health={"truncated": 1})))
    ip6 = IPv6(src=SUB6, dst=REM6) / IPv6ExtHdrFragment(offset=0, m=1, id=9, nh=17)
    f = _tiny_fragment(ip6, bytes(UDP(sport=40039, dport=123))[:4])
    c.append(Case("tiny-first-fragment-udp-v6", f, accounted(
        IPv6(f[14:]), local=SUB6, remote=REM6, direction=OUT, proto=17, ver=6, sport=40039,
        dport=123, port_slot=UDP_ + 123, extra_health={"truncated": 1})))
    f = _tiny_fragment(IP(src="10.0.0.3", dst=REM, flags="MF", proto=6, id=4), bytes(TCP(sport=40041))[:3])
    c.append(Case("fragment-without-ports", f, accounted(
        IP(f[14:]), local="10.0.0.3", remote=REM, direction=OUT, proto=6, port_slot=TCP_ + 0,
        extra_health={"truncated": 1})))
    return c


CASES = build_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fixture(datapath, case: Case):
    if case.preload:
        case.preload(datapath)
    set_role(datapath, case.role)
    try:
        before = snapshot(datapath)
        ret, _, _ = syscalls.prog_test_run(datapath.prog_fds[case.prog], case.pkt, ctx=case.ctx)
        after = snapshot(datapath)
    finally:
        set_role(datapath, abi.Role.LAN)
    assert ret == (DROP if case.drop else PASS)[case.prog]
    assert changes(before, after) == case.expect


def test_tcp_flags_are_ored_and_times_kept(datapath):
    base = Ether(**ETH) / IP(src="10.0.0.80", dst=REM)
    fd = datapath.prog_fds["acct_xdp"]
    for flags in ("S", "A", "PA", "F"):
        syscalls.prog_test_run(fd, bytes(base / TCP(sport=41000, dport=80, flags=flags)))
    keys, vals = drain.read(datapath.maps["acct_flows"])
    mine = [v for k, v in zip(keys, vals)
            if format_addr(k["saddr"]) == "10.0.0.80" and k["sport"] == 41000]
    assert len(mine) == 1
    v = mine[0]
    assert v["packets"] == 4
    assert v["tcp_flags"] == 0x02 | 0x10 | 0x08 | 0x01
    assert 0 < v["first_ns"] <= v["last_ns"]


def test_block_reaches_a_live_address_and_keeps_its_counters(datapath):
    """An address already in the table caches its class per CPU; a change
    (class written, acct_meta.gen bumped) takes effect at the next packet,
    and the counters are never rewritten."""
    addr = "10.0.0.90"
    pkt = bytes(Ether(**ETH) / IP(src=addr, dst=REM) / UDP(sport=41001, dport=7) / Raw(b"v" * 22))
    n = ip_len(IP(pkt[14:]))
    fd = datapath.prog_fds["acct_xdp"]
    for _ in range(3):
        assert syscalls.prog_test_run(fd, pkt)[0] == XDP_PASS
    key = np.zeros(1, abi.ADDR_KEY)
    key["addr"] = np.frombuffer(parse_addr(addr), np.uint8)

    def value():
        return drain.reduce_percpu(datapath.maps["acct_addrs"].lookup(key[0])[None])[0]

    set_class(datapath, addr, sys_policy=abi.SysPolicy.DENY)
    assert syscalls.prog_test_run(fd, pkt)[0] == XDP_DROP
    set_class(datapath, addr, sys_policy=0)
    assert syscalls.prog_test_run(fd, pkt)[0] == XDP_PASS
    v = value()
    assert list(v["packets"]) == [0, 4] and list(v["bytes"]) == [0, 4 * n]
    assert v["drop_packets"].tolist() == drops(abi.Drop.BLOCK, OUT, 1)
