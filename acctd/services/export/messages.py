"""What the three encoders share: the clock pair, counters too big for a
field, and laying records out into messages with numpy.

A batch of records becomes one numpy array of whole messages (header, set
header, a fixed number of record slots), filled column by column; the
messages are then cut out of its buffer. Python works per message, never
per record.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from acctd.kernel import abi

MESSAGE_MAX = 1400          # bytes: fits a 1500-byte MTU with IPv6 and UDP headers
U32_MAX = 0xFFFF_FFFF


@dataclasses.dataclass(frozen=True)
class Now:
    """One moment on both clocks: the kernel's CLOCK_MONOTONIC (flow times,
    and since boot: the NetFlow sysUptime) and the epoch."""
    mono_ns: int
    wall_ns: int

    @classmethod
    def sample(cls) -> Now:
        return cls(time.monotonic_ns(), time.time_ns())

    def epoch_ms(self, mono_ns: np.ndarray) -> np.ndarray:
        """Epoch milliseconds of monotonic times."""
        return ((mono_ns.astype(np.int64) + (self.wall_ns - self.mono_ns)) // 1_000_000
                ).astype(np.uint64)

    @property
    def uptime_ms(self) -> int:
        return (self.mono_ns // 1_000_000) & U32_MAX

    @property
    def uptime_ms_at_second(self) -> int:
        """sysUptime at the whole second of the epoch (v9's header has
        seconds only: collectors take boot = unix_secs - sysUptime, so the
        two must be of the same instant)."""
        return ((self.mono_ns - self.wall_ns % 10**9) // 1_000_000) & U32_MAX


def uptime_ms(mono_ns: np.ndarray) -> np.ndarray:
    """sysUptime-relative milliseconds (NetFlow v5/v9 First and Last): the
    monotonic clock counts from boot, as a router's sysUptime does."""
    return ((mono_ns // 1_000_000) & U32_MAX).astype(np.uint32)


def split_counters(rec: np.ndarray, limit: int = U32_MAX) -> np.ndarray:
    """Records whose packets or bytes exceed `limit` (a 32-bit v5 field)
    become several records of the same flow that add up to the same totals."""
    need = np.maximum((rec["bytes"] + limit - 1) // limit, (rec["packets"] + limit - 1) // limit)
    need = np.maximum(need, 1).astype(np.int64)
    if (need == 1).all():
        return rec
    out = np.repeat(rec, need)
    k = np.repeat(need, need).astype(np.uint64)
    j = (np.arange(len(out)) - np.repeat(np.cumsum(need) - need, need)).astype(np.uint64)
    for f in ("bytes", "packets"):
        total = out[f]
        out[f] = total // k + (j < total % k)
    return out


def interfaces(key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input ifindex, output ifindex, flowDirection) of records' flow keys.
    The hooked interface faces the subscribers: a flow from a subscriber
    (out) enters it, a flow towards one (in) leaves it."""
    out = key["dir"] == abi.Dir.OUT
    zero = np.zeros(len(key), np.uint32)
    return (np.where(out, key["ifindex"], zero), np.where(out, zero, key["ifindex"]),
            np.where(out, 0, 1).astype(np.uint8))


ICMP_PROTOS = (1, 58)


def ports(key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source port, destination port, ICMP type and code) of flow keys.
    The kernel keeps ICMP type and code in the ports; a record carries them
    the NetFlow way, destination port type * 256 + code and source port 0
    (and in icmpTypeCode, where the format has it)."""
    icmp = np.isin(key["proto"], ICMP_PROTOS)
    code = np.where(icmp, (key["sport"].astype(np.uint16) << 8) | key["dport"], 0)
    return (np.where(icmp, 0, key["sport"]), np.where(icmp, code, key["dport"]), code)


def layout(header: np.dtype, record: np.dtype, n: int,
           per_message: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For n records: ceil(n / per_message) empty message headers, how many
    records each message holds (all full but the last), and the record
    slots to fill (contiguous; cut() joins them to the headers)."""
    m = max(1, -(-n // per_message))
    counts = np.full(m, per_message, np.int64)
    counts[-1] = n - per_message * (m - 1)
    return np.zeros(m, header), counts, np.zeros(m * per_message, record)


def cut(headers: np.ndarray, rows: np.ndarray, lengths: np.ndarray) -> list[memoryview]:
    """The messages: each header followed by its slots, `lengths` long.
    One buffer holds them all; the views keep it alive."""
    m, hs = len(headers), headers.dtype.itemsize
    per = rows.itemsize * (len(rows) // m)
    buf = np.empty((m, hs + per), np.uint8)
    buf[:, :hs] = headers.view(np.uint8).reshape(m, hs)
    buf[:, hs:] = rows.view(np.uint8).reshape(m, per)
    flat = memoryview(buf.reshape(-1))
    size = hs + per
    return [flat[i * size:i * size + length] for i, length in enumerate(lengths.tolist())]
