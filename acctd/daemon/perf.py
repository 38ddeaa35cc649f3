"""NeTAMS `show perf`: how long each drain took, by step, and what the
process used, for the last drains (in memory, as NeTAMS kept it)."""

from __future__ import annotations

import collections
import os
import resource
import time

KEEP = 100                  # drains remembered
STEPS = ("read", "account", "commit", "services")
HEADER = "TS DRAIN READ_MS ACCOUNT_MS COMMIT_MS SERVICES_MS TOTAL_MS ROWS FLOWS CPU_S RSS_KIB LOAD"


class DrainClock:
    """Times one drain's steps: `lap(step)` closes the step that ran since
    the previous lap."""

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.start = self._last = clock()
        self.ms: dict[str, float] = {}

    def lap(self, step: str) -> None:
        now = self.clock()
        self.ms[step] = self.ms.get(step, 0.0) + (now - self._last) * 1000
        self._last = now

    def total_ms(self) -> float:
        return (self._last - self.start) * 1000


class Perf:
    """The last KEEP drains' timings, oldest first."""

    def __init__(self, keep: int = KEEP):
        self.rows: collections.deque[dict] = collections.deque(maxlen=keep)

    def record(self, drain: int, ts: str, timer: DrainClock, rows: int, flows: int) -> dict:
        use = resource.getrusage(resource.RUSAGE_SELF)
        row = {"drain": drain, "ts": ts,
               **{f"{s}_ms": round(timer.ms.get(s, 0.0), 3) for s in STEPS},
               "total_ms": round(timer.total_ms(), 3), "rows": rows, "flows": flows,
               "cpu_s": round(use.ru_utime + use.ru_stime, 3), "rss_kib": _rss_kib(),
               "load": round(os.getloadavg()[0], 2)}
        self.rows.append(row)
        return row


def _rss_kib() -> int:
    """The resident set now (NeTAMS RES), from /proc."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        return 0


def line(row: dict) -> str:
    """A row as the perf log's line (HEADER's columns)."""
    return " ".join(str(row[k]) for k in ("ts", "drain", "read_ms", "account_ms", "commit_ms",
                                          "services_ms", "total_ms", "rows", "flows", "cpu_s",
                                          "rss_kib", "load"))
