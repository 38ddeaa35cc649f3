"""sFlow v5: flow samples with raw packet headers, each standing for
`sampling_rate` packets. The datagram's nesting (samples of records of
variable length) is walked with bounds checked at every step, reading only
offsets; the packet headers themselves are decoded together, as one 2-D
numpy array, so the per-sample work stays a few integer reads. Counter
samples are skipped (acctd counts from flows)."""

from __future__ import annotations

import dataclasses
import struct

import numpy as np

from acctd.services.collector.records import RECORD, V4_MAPPED, Malformed, empty

U32 = struct.Struct(">I")
SNAP = 128              # header bytes looked at: Ethernet, 2 VLAN tags, IPv6, ports
MAX_SAMPLES = 1024      # a datagram of 64 KiB holds fewer
FLOW_SAMPLE, EXPANDED_FLOW_SAMPLE = 1, 3
RAW_HEADER = 1
ETHERNET, IPV4, IPV6 = 1, 11, 12


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """(records, datagram sequence)."""
    heads, seq = walk(data)
    return parse(heads), seq


def walk(data: bytes) -> tuple[Headers, int]:
    """The sampled packet headers of a datagram, not yet decoded (the
    listener decodes many datagrams' together), and its sequence."""
    end = len(data)
    if end < 8:
        raise Malformed("sflow: shorter than its header")
    version, atype = struct.unpack_from(">II", data, 0)
    if version != 5 or atype not in (1, 2):
        raise Malformed("sflow: bad version or agent address type")
    pos = 8 + (4 if atype == 1 else 16)
    if end < pos + 16:
        raise Malformed("sflow: header cut short")
    _sub, seq, _uptime, n = struct.unpack_from(">IIII", data, pos)
    pos += 16
    if n > MAX_SAMPLES:
        raise Malformed(f"sflow: {n} samples")
    heads = []  # (offset, length, rate, protocol)
    for _ in range(n):
        if end - pos < 8:
            raise Malformed("sflow: sample past the datagram")
        tag, slen = struct.unpack_from(">II", data, pos)
        body, send = pos + 8, pos + 8 + slen
        if slen % 4 or send > end:
            raise Malformed(f"sflow: sample of length {slen}")
        if tag in (FLOW_SAMPLE, EXPANDED_FLOW_SAMPLE):
            fixed = 32 if tag == FLOW_SAMPLE else 44
            if slen < fixed:
                raise Malformed("sflow: flow sample cut short")
            rate = U32.unpack_from(data, body + (8 if tag == FLOW_SAMPLE else 12))[0]
            nrec = U32.unpack_from(data, body + fixed - 4)[0]
            _flow_records(data, body + fixed, send, nrec, max(rate, 1), heads)
        pos = send  # counter samples and other enterprises' formats: skipped
    if pos != end:
        raise Malformed("sflow: bytes after the last sample")
    return _gather(data, heads), seq


def _flow_records(data, pos, end, nrec, rate, heads) -> None:
    if nrec > (end - pos) // 8:
        raise Malformed(f"sflow: {nrec} flow records in a short sample")
    for _ in range(nrec):
        if end - pos < 8:
            raise Malformed("sflow: flow record past its sample")
        tag, rlen = struct.unpack_from(">II", data, pos)
        body, rend = pos + 8, pos + 8 + rlen
        if rlen % 4 or rend > end:
            raise Malformed(f"sflow: flow record of length {rlen}")
        if tag == RAW_HEADER:
            if rlen < 16:
                raise Malformed("sflow: raw header record cut short")
            proto, _frame, _stripped, hlen = struct.unpack_from(">IIII", data, body)
            if hlen > rlen - 16:
                raise Malformed(f"sflow: header of {hlen} bytes in a record of {rlen}")
            if proto in (ETHERNET, IPV4, IPV6):
                heads.append((body + 16, hlen, rate, proto))
        pos = rend
    if pos != end:
        raise Malformed("sflow: bytes after the last flow record")


@dataclasses.dataclass
class Headers:
    """Sampled headers: SNAP bytes each (zero past their length), with
    their lengths, sampling rates and header protocols."""
    raw: bytes
    meta: list  # (length, rate, protocol) per header

    @staticmethod
    def join(parts: list[Headers]) -> Headers:
        return Headers(b"".join(p.raw for p in parts), [m for p in parts for m in p.meta])

    def __len__(self) -> int:
        return len(self.meta)


def _gather(data: bytes, heads) -> Headers:
    raw = bytearray(SNAP * len(heads))
    for i, (off, hlen, _, _) in enumerate(heads):
        n = min(hlen, SNAP)
        raw[i * SNAP:i * SNAP + n] = data[off:off + n]
    return Headers(bytes(raw), [(hlen, rate, proto) for _, hlen, rate, proto in heads])


def parse(heads: Headers) -> np.ndarray:
    """The packet headers (Ethernet or IP) of all samples at once."""
    if not len(heads):
        return empty()
    hlen, rate, proto = np.array(heads.meta, np.int64).reshape(-1, 3).T
    b = np.frombuffer(heads.raw, np.uint8).reshape(-1, SNAP).astype(np.int64)
    n = len(hlen)
    rows = np.arange(n)

    def u16(at):
        at = np.minimum(at, SNAP - 2)
        return (b[rows, at] << 8) | b[rows, at + 1]

    # where IP starts: after Ethernet and up to two VLAN tags
    l3 = np.zeros(n, np.int64)
    etype = np.where(proto == IPV4, 0x0800, 0x86DD)
    eth = proto == ETHERNET
    l3[eth] = 14
    et = u16(np.full(n, 12))
    for _ in range(2):
        tagged = eth & np.isin(et, (0x8100, 0x88A8))
        l3[tagged] += 4
        et = np.where(tagged, u16(l3 - 2), et)
    etype = np.where(eth, et, etype)
    v4 = (etype == 0x0800) & (l3 + 20 <= hlen) & ((b[rows, np.minimum(l3, SNAP - 1)] >> 4) == 4)
    v6 = (etype == 0x86DD) & (l3 + 40 <= hlen) & ((b[rows, np.minimum(l3, SNAP - 1)] >> 4) == 6)
    ok = v4 | v6
    out = np.zeros(int(ok.sum()), RECORD)
    b, l3, hlen, rate, v4, rows = b[ok], l3[ok], hlen[ok], rate[ok], v4[ok], np.arange(int(ok.sum()))
    if not len(out):
        return out
    at = l3[:, None]
    ihl = (b[rows, np.minimum(l3, SNAP - 1)] & 0xF) * 4
    out["ip_ver"] = np.where(v4, 4, 6)
    out["tos"] = np.where(v4, b[rows, np.minimum(l3 + 1, SNAP - 1)],
                          ((b[rows, l3] & 0xF) << 4) | (b[rows, np.minimum(l3 + 1, SNAP - 1)] >> 4))
    out["bytes"] = np.where(v4, u16(l3 + 2), u16(l3 + 4) + 40)
    out["proto"] = np.where(v4, b[rows, np.minimum(l3 + 9, SNAP - 1)],
                            b[rows, np.minimum(l3 + 6, SNAP - 1)])
    sa = np.where(v4[:, None], at + np.r_[[12] * 12, 12, 13, 14, 15], at + 8 + np.arange(16))
    da = np.where(v4[:, None], at + np.r_[[16] * 12, 16, 17, 18, 19], at + 24 + np.arange(16))
    sa, da = np.minimum(sa, SNAP - 1), np.minimum(da, SNAP - 1)
    out["saddr"] = np.take_along_axis(b, sa, 1)
    out["daddr"] = np.take_along_axis(b, da, 1)
    out["saddr"][v4, :12] = V4_MAPPED
    out["daddr"][v4, :12] = V4_MAPPED
    frag = np.where(v4, u16(l3 + 6) & 0x1FFF, 0)
    l4 = np.where(v4, l3 + ihl, l3 + 40)
    ported = np.isin(out["proto"], (6, 17)) & (frag == 0) & (l4 + 4 <= hlen)
    out["sport"] = np.where(ported, u16(l4), 0)
    out["dport"] = np.where(ported, u16(l4 + 2), 0)
    tcp = (out["proto"] == 6) & (frag == 0) & (l4 + 14 <= hlen)
    out["tcp_flags"] = np.where(tcp, b[rows, np.minimum(l4 + 13, SNAP - 1)], 0)
    out["packets"] = 1
    out["sampling"] = rate
    return out
