"""NetFlow v5 (Cisco's fixed format): a 24-byte header and up to 30 records
of 48 bytes, decoded with one np.frombuffer."""

from __future__ import annotations

import numpy as np

from acctd.services.collector.records import RECORD, Malformed, put_v4

HEADER = np.dtype([
    ("version", ">u2"), ("count", ">u2"), ("uptime_ms", ">u4"), ("unix_secs", ">u4"),
    ("unix_nsecs", ">u4"), ("sequence", ">u4"), ("engine_type", "u1"), ("engine_id", "u1"),
    ("sampling", ">u2"),
])
FLOW = np.dtype([
    ("srcaddr", ">u4"), ("dstaddr", ">u4"), ("nexthop", ">u4"), ("input", ">u2"),
    ("output", ">u2"), ("packets", ">u4"), ("bytes", ">u4"), ("first", ">u4"), ("last", ">u4"),
    ("sport", ">u2"), ("dport", ">u2"), ("pad1", "u1"), ("tcp_flags", "u1"), ("proto", "u1"),
    ("tos", "u1"), ("src_as", ">u2"), ("dst_as", ">u2"), ("src_mask", "u1"), ("dst_mask", "u1"),
    ("pad2", ">u2"),
])
MAX_COUNT = 30  # Cisco's limit: a v5 packet never holds more


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """(records, sequence of the header). The length must be exactly the
    header plus `count` records: anything else is refused."""
    if len(data) < HEADER.itemsize:
        raise Malformed("v5: shorter than its header")
    h = np.frombuffer(data, HEADER, 1)[0]
    n = int(h["count"])
    if h["version"] != 5 or not 1 <= n <= MAX_COUNT:
        raise Malformed(f"v5: bad version or record count {n}")
    if len(data) != HEADER.itemsize + n * FLOW.itemsize:
        raise Malformed(f"v5: {len(data)} bytes for {n} records")
    f = np.frombuffer(data, FLOW, n, HEADER.itemsize)
    out = np.zeros(n, RECORD)
    put_v4(out, "saddr", f["srcaddr"])
    put_v4(out, "daddr", f["dstaddr"])
    for k in ("packets", "bytes", "sport", "dport", "proto", "tos", "tcp_flags"):
        out[k] = f[k]
    # times: sysUpTime-relative, made absolute from the header's clock
    boot_ms = int(h["unix_secs"]) * 1000 + int(h["unix_nsecs"]) // 10**6 - int(h["uptime_ms"])
    out["first_ms"] = boot_ms + f["first"].astype(np.int64)
    out["last_ms"] = boot_ms + f["last"].astype(np.int64)
    out["ip_ver"] = 4
    interval = int(h["sampling"]) & 0x3FFF  # the top two bits are the mode
    out["sampling"] = max(interval, 1)
    return out, int(h["sequence"])
