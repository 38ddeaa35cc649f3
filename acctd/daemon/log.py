"""Logging: to stderr (the journal under systemd), with levels and
categories. A category is a logger under "acctd": acctd.daemon.core (the loop,
reloads), acctd.control.server (requests), acctd.kernel.datapath, acctd.store.database.
SIGUSR1 turns debugging on for all, SIGUSR2 off (as net-acct's signals
did); `acctctl debug on|off [CATEGORY]` does it per category."""

from __future__ import annotations

import logging
import sys

CATEGORIES = ("daemon", "control", "datapath", "storage")


_log_file: str | None = None


def setup(debug: bool = False, path: str | None = None) -> None:
    """stderr (the journal) by default; a file with --log-file, which
    `acctctl rotate log` reopens after it was moved away."""
    global _log_file
    _log_file = path
    handler = logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("acctd")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def set_debug(on: bool, category: str | None = None) -> dict:
    if category is not None and category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; one of {', '.join(CATEGORIES)}")
    name = "acctd" if category is None else f"acctd.{category}"
    logging.getLogger(name).setLevel(logging.DEBUG if on else logging.NOTSET if category else
                                     logging.INFO)
    return {"debug": on, "category": category or "all"}


def rotate() -> dict:
    """Reopen the log file (after logrotate moved it); stderr needs nothing."""
    if _log_file is None:
        return {"log": "stderr", "rotated": False,
                "note": "logging to stderr: the journal rotates it"}
    root = logging.getLogger("acctd")
    old = root.handlers[0]
    new = logging.FileHandler(_log_file)
    new.setFormatter(old.formatter)
    root.handlers[:] = [new]
    old.close()
    return {"log": _log_file, "rotated": True}
