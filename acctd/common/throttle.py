"""Log lines that anyone can provoke (a refused peer, a malformed request),
written at most once a minute per kind, so repeating them cannot flood
the log; the ones held back are counted into the next line of that kind."""

from __future__ import annotations

import logging
import threading
import time


class Throttle:
    """Kinds are a fixed set of names the caller chooses (never text from
    the peer), so the table stays small."""

    def __init__(self, logger: logging.Logger, every: float = 60.0, clock=time.monotonic):
        self.log, self.every, self.clock = logger, every, clock
        self._last: dict[str, tuple[float, int]] = {}  # kind -> (logged at, held back since)
        self._lock = threading.Lock()

    def warning(self, kind: str, msg: str, *args) -> None:
        self.emit(logging.WARNING, kind, msg, *args)

    def emit(self, level: int, kind: str, msg: str, *args, exc_info=None) -> None:
        with self._lock:
            now = self.clock()
            at, held = self._last.get(kind, (None, 0))
            if at is not None and now - at < self.every:
                self._last[kind] = (at, held + 1)
                return
            self._last[kind] = (now, 0)
        if held:
            msg += " (and %d more like it in the last %d s)"
            args += (held, round(now - at))
        self.log.log(level, msg, *args, exc_info=exc_info)
