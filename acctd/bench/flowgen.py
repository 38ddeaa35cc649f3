"""Flow export packets built byte by byte (NetFlow v5, v9, IPFIX, sFlow
v5), for the collector's tests and benchmark: the wire formats written
out independently of the decoders that read them."""

from __future__ import annotations

import ipaddress
import struct

V5_REC = struct.Struct(">IIIHHIIIIHHBBBBHHBBH")


def _v4(a: str) -> int:
    return int(ipaddress.IPv4Address(a))


def v5(flows, *, seq=0, secs=1_700_000_000, uptime=100_000, sampling=0) -> bytes:
    """flows: (src, dst, sport, dport, proto, packets, bytes)."""
    out = [struct.pack(">HHIIIIBBH", 5, len(flows), uptime, secs, 0, seq, 0, 0, sampling)]
    for s, d, sp, dp, pr, pk, by in flows:
        out.append(V5_REC.pack(_v4(s), _v4(d), 0, 1, 2, pk, by, uptime - 5000, uptime - 10,
                               sp, dp, 0, 0x1B if pr == 6 else 0, pr, 0, 0, 0, 24, 24, 0))
    return b"".join(out)


# a v4 flow template: src, dst, sport, dport, proto, bytes (8), packets (8), first, last
V4_FIELDS = ((8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (1, 8), (2, 8), (22, 4), (21, 4))
V4_REC = struct.Struct(">IIHHBQQII")


def _template_set(set_id: int, tid: int, fields, enterprise=()) -> bytes:
    body = struct.pack(">HH", tid, len(fields) + len(enterprise))
    body += b"".join(struct.pack(">HH", ie, n) for ie, n in fields)
    body += b"".join(struct.pack(">HHI", ie | 0x8000, n, pen) for ie, n, pen in enterprise)
    return struct.pack(">HH", set_id, 4 + len(body)) + body


def _data_set(tid: int, flows, uptime: int, pad_to: int = 4) -> bytes:
    body = b"".join(V4_REC.pack(_v4(s), _v4(d), sp, dp, pr, by, pk, uptime - 5000, uptime - 10)
                    for s, d, sp, dp, pr, pk, by in flows)
    body += b"\0" * (-len(body) % pad_to)
    return struct.pack(">HH", tid, 4 + len(body)) + body


def v9(flows, *, tid=256, seq=0, secs=1_700_000_000, uptime=100_000, domain=0,
       template=True) -> bytes:
    sets = (_template_set(0, tid, V4_FIELDS) if template else b"") + _data_set(tid, flows, uptime)
    return struct.pack(">HHIIII", 9, len(flows) + template, uptime, secs, seq, domain) + sets


def ipfix_message(sets: bytes, *, seq=0, secs=1_700_000_000, domain=0) -> bytes:
    return struct.pack(">HHIII", 10, 16 + len(sets), secs, seq, domain) + sets


def ipfix(flows, *, tid=256, seq=0, domain=0, template=True, enterprise=()) -> bytes:
    """With `enterprise` ((ie, length, pen), ...) fields after the known ones,
    each record carries that many extra zero bytes."""
    sets = _template_set(2, tid, V4_FIELDS, enterprise) if template else b""
    extra = b"\0" * sum(n for _, n, _ in enterprise)
    body = b"".join(V4_REC.pack(_v4(s), _v4(d), sp, dp, pr, by, pk, 0, 0) + extra
                    for s, d, sp, dp, pr, pk, by in flows)
    sets += struct.pack(">HH", tid, 4 + len(body)) + body
    return ipfix_message(sets, seq=seq, domain=domain)


def ipfix_template(tid: int, fields, *, domain=0, set_id=2) -> bytes:
    return ipfix_message(_template_set(set_id, tid, fields), domain=domain)


def ipfix_sampling(rate: int, *, tid=300, domain=0) -> bytes:
    """An options template (scope: observation domain) and its record giving
    the sampling interval (IE 305, samplingPacketInterval)."""
    tmpl = struct.pack(">HHH", tid, 2, 1) + struct.pack(">HHHH", 149, 4, 305, 4)
    sets = struct.pack(">HH", 3, 4 + len(tmpl)) + tmpl
    rec = struct.pack(">II", domain, rate)
    sets += struct.pack(">HH", tid, 4 + len(rec)) + rec
    return ipfix_message(sets, domain=domain)


def _eth_ipv4(src: str, dst: str, sport: int, dport: int, proto: int, iplen: int) -> bytes:
    eth = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, iplen, 1, 0, 64, proto, 0,
                     ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return eth + ip + struct.pack(">HH", sport, dport) + b"\0" * 16


def sflow(samples, *, seq=0, agent="192.0.2.1") -> bytes:
    """samples: (src, dst, sport, dport, proto, iplen, rate): one flow sample
    each, with a raw Ethernet header, and one counter sample at the end."""
    out = []
    for i, (s, d, sp, dp, pr, iplen, rate) in enumerate(samples):
        hdr = _eth_ipv4(s, d, sp, dp, pr, iplen)
        hdr += b"\0" * (-len(hdr) % 4)
        rec = struct.pack(">IIII", 1, iplen + 14, 4, len(hdr)) + hdr
        recs = struct.pack(">II", 1, len(rec)) + rec
        body = struct.pack(">IIIIIIII", i, 1, rate, rate * (i + 1), 0, 1, 2, 1) + recs
        out.append(struct.pack(">II", 1, len(body)) + body)
    counters = struct.pack(">III", 0, 2, 0)  # a counter sample with no records
    out.append(struct.pack(">II", 2, len(counters)) + counters)
    head = struct.pack(">II4sIIII", 5, 1, ipaddress.IPv4Address(agent).packed, 0, seq, 1000,
                       len(out))
    return head + b"".join(out)
