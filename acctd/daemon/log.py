"""Logging: to stderr (the journal under systemd), with levels and
categories. A category is a logger under "acctd": acctd.daemon (the loop,
reloads), acctd.control (requests), acctd.kernel.datapath, acctd.storage,
and the NeTAMS `debug` words for services: acctd.quota, acctd.login,
acctd.scheduler, acctd.alerter, acctd.billing and acctd.aclserver (the
logger a billing or acl-server service must use). SIGUSR1 turns debugging
on for all, SIGUSR2 off, SIGWINCH logs the version (as net-acct's signals
did); `acctctl debug on|off
[CATEGORY]` does it per category."""

from __future__ import annotations

import logging
import sys
import time

from acctd.common import durable

CATEGORIES = ("daemon", "control", "datapath", "storage",
              "quota", "login", "scheduler", "alerter", "billing", "aclserver")
_ALIASES = {"alert": "alerter"}  # the reference's own word for the alerter
ROTATED_SUFFIX = "%Y-%m-%d_%H:%M"  # NeTAMS `rotate log`: the time of rotation


_log_file: str | None = None


def setup(debug: bool = False, path: str | None = None) -> None:
    """stderr (the journal) by default; a file with --log-file, which
    `acctctl rotate log` renames and starts anew."""
    global _log_file
    _log_file = path
    handler = logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("acctd")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def version_text() -> str:
    """acctd's version and the datapath ABI it speaks (`acctctl version`,
    and the log line SIGWINCH asks for, as nacctd printed its version id)."""
    from acctd import __version__
    from acctd.kernel.abi import ABI_VERSION
    return f"acctd {__version__} (datapath ABI v{ABI_VERSION})"


def log_version() -> None:
    logging.getLogger("acctd.daemon").info("%s", version_text())


def set_debug(on: bool, category: str | None = None) -> dict:
    category = _ALIASES.get(category, category)
    if category is not None and category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; one of {', '.join(CATEGORIES)}")
    name = "acctd" if category is None else f"acctd.{category}"
    logging.getLogger(name).setLevel(logging.DEBUG if on else logging.NOTSET if category else
                                     logging.INFO)
    return {"debug": on, "category": category or "all"}


def rotate(now: float | None = None) -> dict:
    """NeTAMS `rotate log`: move the log file to FILE.<%Y-%m-%d_%H:%M> and
    open a new one. A file logrotate already moved away is just reopened;
    stderr needs nothing."""
    if _log_file is None:
        return {"log": "stderr", "rotated": False,
                "note": "logging to stderr: the journal rotates it"}
    root = logging.getLogger("acctd")
    old = root.handlers[0]
    stamp = time.strftime(ROTATED_SUFFIX, time.localtime(now))
    old.acquire()  # no record half in the old file, half in the new
    try:
        try:
            moved_to = durable.rename_aside(_log_file, f"{_log_file}.{stamp}", numbered=True)
        except FileNotFoundError:
            moved_to = None  # moved away already (logrotate): reopen only
        new = logging.FileHandler(_log_file)
        new.setFormatter(old.formatter)
        root.handlers[:] = [new]
    finally:
        old.release()
    old.close()
    return {"log": _log_file, "rotated": True, "rotated_to": moved_to}

