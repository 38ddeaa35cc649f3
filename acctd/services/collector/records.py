"""What every flow decoder produces: one numpy record per flow, the same
columns whatever the wire format, and the error a decoder raises for input
it refuses (counted per exporter by the listener, never fatal)."""

from __future__ import annotations

import numpy as np

# Addresses as the datapath keeps them (16 bytes, IPv4 mapped); counts are
# as exported, before renormalisation; `sampling` is the 1-in-N rate that
# applies (1: unsampled); times are Unix milliseconds (0: not exported).
RECORD = np.dtype([
    ("saddr", "u1", (16,)), ("daddr", "u1", (16,)),
    ("packets", "<u8"), ("bytes", "<u8"), ("first_ms", "<u8"), ("last_ms", "<u8"),
    ("sport", "<u2"), ("dport", "<u2"), ("ip_ver", "u1"), ("proto", "u1"), ("tos", "u1"),
    ("tcp_flags", "u1"), ("sampling", "<u4"),
])

V4_MAPPED = np.array([0] * 10 + [0xFF, 0xFF], np.uint8)


class Malformed(ValueError):
    """Input a decoder refuses as a whole (nothing of the packet is accounted)."""


def empty() -> np.ndarray:
    return np.zeros(0, RECORD)


def put_v4(out: np.ndarray, field: str, be_u32: np.ndarray) -> None:
    """Big-endian IPv4 addresses (as read off the wire) into mapped 16-byte
    form (`out` is zeroed: only the mapping's 0xFFFF and the address are set)."""
    out[field][:, 10:12] = 0xFF
    out[field][:, 12:] = np.ascontiguousarray(be_u32).view(np.uint8).reshape(-1, 4)
