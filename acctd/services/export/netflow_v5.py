"""NetFlow v5: a 24-byte header and up to 30 fixed 48-byte IPv4 records.

The header's flow_sequence counts the flows sent before the message;
engine_type and engine_id carry the observation domain's two low bytes.
IPv6 flows do not fit and are counted as skipped; counters above 32 bits
are split over several records of the same flow."""

from __future__ import annotations

import numpy as np

from acctd.services.export.encoder import Encoder
from acctd.services.export.messages import (Now, cut, interfaces, layout, ports,
                                            split_counters, uptime_ms)

HEADER = np.dtype([
    ("version", ">u2"), ("count", ">u2"), ("sys_uptime", ">u4"), ("unix_secs", ">u4"),
    ("unix_nsecs", ">u4"), ("flow_sequence", ">u4"), ("engine_type", "u1"),
    ("engine_id", "u1"), ("sampling", ">u2"),
])
RECORD = np.dtype([
    ("srcaddr", "u1", (4,)), ("dstaddr", "u1", (4,)), ("nexthop", "u1", (4,)),
    ("input", ">u2"), ("output", ">u2"), ("packets", ">u4"), ("octets", ">u4"),
    ("first", ">u4"), ("last", ">u4"), ("srcport", ">u2"), ("dstport", ">u2"),
    ("pad1", "u1"), ("tcp_flags", "u1"), ("prot", "u1"), ("tos", "u1"),
    ("src_as", ">u2"), ("dst_as", ">u2"), ("src_mask", "u1"), ("dst_mask", "u1"),
    ("pad2", ">u2"),
])
PER_MESSAGE = 30
assert HEADER.itemsize == 24 and RECORD.itemsize == 48


class V5Encoder(Encoder):
    format = "v5"

    def encode(self, records: np.ndarray, now: Now) -> list[memoryview]:
        v4 = records["key"]["ip_ver"] == 4
        self.skipped += int((~v4).sum())
        rec = split_counters(records[v4])
        if not len(rec):
            return []
        h, counts, slots = layout(HEADER, RECORD, len(rec), PER_MESSAGE)
        r = slots[:len(rec)]
        key = rec["key"]
        r["srcaddr"], r["dstaddr"] = key["saddr"][:, 12:], key["daddr"][:, 12:]
        in_if, out_if, _ = interfaces(key)
        r["input"], r["output"] = np.minimum(in_if, 0xFFFF), np.minimum(out_if, 0xFFFF)
        r["packets"], r["octets"] = rec["packets"], rec["bytes"]
        r["first"], r["last"] = uptime_ms(rec["start_ns"]), uptime_ms(rec["end_ns"])
        r["srcport"], r["dstport"], _ = ports(key)
        r["tcp_flags"], r["prot"], r["tos"] = rec["tcp_flags"] & 0xFF, key["proto"], key["tos"]
        h["version"], h["count"], h["sys_uptime"] = 5, counts, now.uptime_ms
        h["unix_secs"], h["unix_nsecs"] = now.wall_ns // 10**9, now.wall_ns % 10**9
        h["flow_sequence"] = (self.sequence + np.cumsum(counts) - counts) & 0xFFFF_FFFF
        h["engine_type"], h["engine_id"] = (self.domain >> 8) & 0xFF, self.domain & 0xFF
        out = cut(h, slots, HEADER.itemsize + counts * RECORD.itemsize)
        self.sequence = (self.sequence + len(rec)) & 0xFFFF_FFFF
        self.records += len(rec)
        self.messages += len(out)
        return out
