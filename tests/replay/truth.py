"""Ground truth for the replay tier, from the capture alone: what README
"What is counted" says each frame adds, worked out by a parser of its own
(it shares no code with acctd and reads no acctd state)."""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter, defaultdict
from dataclasses import dataclass, field

VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
EXT_HEADERS = (0, 43, 44, 51, 60)   # hop-by-hop, routing, fragment, AH, destination options
EXT_WALK = 6
PORTED = (6, 17, 136, 132, 33)      # TCP, UDP, UDP-Lite, SCTP, DCCP: L4 header with ports
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}


@dataclass
class Frame:
    """What one frame counts as: `kind` is "accounted" or a health counter."""
    kind: str
    src: str = ""
    dst: str = ""
    nbytes: int = 0
    port: str = ""
    vlans: tuple = ()
    health: list = field(default_factory=list)   # counters an accounted packet also bumps


def _addr(b: bytes) -> str:
    return str(ipaddress.ip_address(b))


def _l4(proto: int, seg: bytes, f: Frame) -> tuple[int, int]:
    if proto in PORTED:
        need = 20 if proto == 6 else 8
        if len(seg) < need:
            f.health.append("truncated")
        return struct.unpack_from("!HH", seg) if len(seg) >= 4 else (0, 0)
    if proto in (1, 58):
        if len(seg) < 2:
            f.health.append("truncated")
            return 0, 0
        return seg[0], seg[1]
    return 0, 0


def _port(proto: int, sport: int, dport: int) -> str:
    if proto in (6, 17):
        return f"{PROTO_NAMES[proto]}/{min(sport, dport)}"
    return PROTO_NAMES.get(proto, f"proto-{proto}")


def classify(frame: bytes) -> Frame:
    if len(frame) < 14:
        return Frame("truncated")
    (etype,) = struct.unpack_from("!H", frame, 12)
    off, vlans = 14, []
    while etype in VLAN_TPIDS and len(vlans) < 2:
        if off + 4 > len(frame):
            return Frame("truncated")
        tci, etype = struct.unpack_from("!HH", frame, off)
        vlans.append(tci & 0xFFF)
        off += 4
    ip = frame[off:]
    if etype == 0x0800:
        return _ipv4(ip, tuple(vlans))
    if etype == 0x86DD:
        return _ipv6(ip, tuple(vlans))
    return Frame("non_ip")


def _ipv4(ip: bytes, vlans: tuple) -> Frame:
    if len(ip) < 20:
        return Frame("truncated")
    ver, ihl, tot = ip[0] >> 4, (ip[0] & 15) * 4, struct.unpack_from("!H", ip, 2)[0]
    if ver != 4 or ihl < 20 or tot < ihl or tot > len(ip):   # tot 0 too: no GSO here
        return Frame("malformed")
    proto, frag = ip[9], struct.unpack_from("!H", ip, 6)[0] & 0x1FFF
    f = Frame("accounted", _addr(ip[12:16]), _addr(ip[16:20]), tot, vlans=vlans)
    if frag:
        f.health.append("not_first_frag")
        sport = dport = 0
    else:
        sport, dport = _l4(proto, ip[ihl:tot], f)
    f.port = _port(proto, sport, dport)
    return f


def _ipv6(ip: bytes, vlans: tuple) -> Frame:
    if len(ip) < 40:
        return Frame("truncated")
    if ip[0] >> 4 != 6:
        return Frame("malformed")
    plen, nh = struct.unpack_from("!H", ip, 4)[0], ip[6]
    if plen and 40 + plen > len(ip):
        return Frame("malformed")
    hl, first, jumbo = 40, True, 0
    for i in range(EXT_WALK):
        if nh not in EXT_HEADERS:
            break
        if hl + 8 > len(ip):
            return Frame("truncated")
        eh = ip[hl:hl + 8]
        if nh == 44:
            first = first and not struct.unpack_from("!H", eh, 2)[0] & 0xFFF8
            size = 8
        elif nh == 51:
            size = (eh[1] + 2) * 4
        else:
            if i == 0 and nh == 0 and not plen and eh[2] == 0xC2 and eh[3] == 4:
                jumbo = struct.unpack_from("!I", eh, 4)[0]
            size = (eh[1] + 1) * 8
        nh, hl = eh[0], hl + size
    length = 40 + plen if plen else 40 + jumbo if jumbo else 0
    if not length or length > len(ip) or hl > length:
        return Frame("malformed")
    f = Frame("accounted", _addr(ip[8:24]), _addr(ip[24:40]), length, vlans=vlans)
    sport = dport = 0
    if nh in EXT_HEADERS:
        f.health.append("ext_hdr_limit")
    elif not first:
        f.health.append("not_first_frag")
    else:
        sport, dport = _l4(nh, ip[hl:length], f)
    f.port = _port(nh, sport, dport)
    return f


def _row():
    return dict.fromkeys(("packets_in", "packets_out", "bytes_in", "bytes_out"), 0)


def expected(frames: list[bytes], hooks: tuple[str, ...] = ("out", "in")) -> dict:
    """What the replay must add, as acctd's Reader reports it: each frame
    passes one LAN hook per entry of `hooks`, which counts it in that
    direction (out: for its source address, in: for its destination)."""
    addrs, ports, vlans = defaultdict(_row), defaultdict(_row), defaultdict(_row)
    health = Counter()
    for raw in frames:
        f = classify(raw)
        for d in hooks:
            if f.kind != "accounted":
                health[f.kind] += 1
                continue
            health.update(f.health)
            rows = [addrs[f.src if d == "out" else f.dst], ports[f.port]]
            outer, inner = (f.vlans + (0, 0))[:2]
            rows.append(vlans[str(outer) if outer else "untagged"])
            if inner:
                rows.append(vlans[f"inner-{inner}"])
            for r in rows:
                r[f"packets_{d}"] += 1
                r[f"bytes_{d}"] += f.nbytes
    return {"addrs": dict(addrs), "ports": dict(ports), "vlans": dict(vlans), "health": dict(health)}
