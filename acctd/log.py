"""Logging: to stderr (the journal under systemd), with levels and
categories. A category is a logger under "acctd": acctd.daemon (the loop,
reloads), acctd.control (requests), acctd.datapath, acctd.storage.
SIGUSR1 turns debugging on for all, SIGUSR2 off (as net-acct's signals
did); `acctctl debug on|off [CATEGORY]` does it per category."""

from __future__ import annotations

import logging
import sys

CATEGORIES = ("daemon", "control", "datapath", "storage")


def setup(debug: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
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
