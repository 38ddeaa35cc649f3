"""What the three encoders share: the clock pair, counters too big for a
field, and laying records out into messages with numpy.

A batch of records becomes one numpy array of whole messages (header, set
header, a fixed number of record slots), filled column by column; the
messages are then cut out of its buffer. Python works per message, never
per record.
"""

from __future__ import annotations

import dataclasses
import struct
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


def interfaces(rec: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input ifindex, output ifindex, flowDirection) of records. The hooked
    interface faces the subscribers: a flow from a subscriber (out) enters
    it, a flow towards one (in) leaves it."""
    out = rec["dir"] == abi.Dir.OUT
    zero = np.zeros(len(rec), np.uint32)
    return (np.where(out, rec["ifindex"], zero), np.where(out, zero, rec["ifindex"]),
            np.where(out, 0, 1).astype(np.uint8))


def layout(header: np.dtype, record: np.dtype, n: int, per_message: int,
           set_header: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An array of ceil(n / per_message) empty messages, how many records
    each holds (all full but the last), and the records' slots to fill
    (contiguous; cut() puts them into the messages)."""
    m = max(1, -(-n // per_message))
    fields = [("hdr", header)]
    if set_header:
        fields += [("set_id", ">u2"), ("set_len", ">u2")]
    fields.append(("rec", record, (per_message,)))
    msgs = np.zeros(m, np.dtype(fields))
    counts = np.full(m, per_message, np.int64)
    counts[-1] = n - per_message * (m - 1)
    return msgs, counts, np.zeros(m * per_message, record)


def cut(msgs: np.ndarray, rows: np.ndarray,
        lengths: np.ndarray) -> tuple[bytearray, list[tuple[int, int]]]:
    """The messages' buffer, with `rows` in their slots, and each message's
    (offset, length) in it."""
    msgs["rec"] = rows.reshape(len(msgs), -1)
    size = msgs.dtype.itemsize
    buf = bytearray(msgs.tobytes())
    return buf, [(i * size, int(length)) for i, length in enumerate(lengths)]


def patch_u32(buf: bytearray, offset: int, value: int) -> None:
    struct.pack_into(">I", buf, offset, value & U32_MAX)
