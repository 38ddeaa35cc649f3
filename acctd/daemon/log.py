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

import dataclasses
import logging
import sys
import time

from acctd.common import durable
from acctd.config.schema import Invalid, Table, setting, strings
from acctd.services.contract import Service

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
    if category is None and not on:  # off for all (NeTAMS `debug none`): every category too
        for c in CATEGORIES:
            logging.getLogger(f"acctd.{c}").setLevel(logging.NOTSET)
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



# --- [log]: the categories debugged from the start ------------------------------------

def _categories(v, ctx) -> tuple[str, ...]:
    items = strings("debug categories")(v, ctx)
    out = []
    for c in items:
        c = _ALIASES.get(c, c)
        if c != "all" and c not in CATEGORIES:
            raise Invalid(f"unknown category {c!r}; one of all, {', '.join(CATEGORIES)}")
        out.append(c)
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class LogSettings(Table):
    """The [log] table: `debug = ["quota", "login"]` (or ["all"])."""
    debug: tuple[str, ...] = setting((), check=_categories)


class LogService(Service):
    """Applies [log] debug at start and at each reload. A category the
    config no longer lists goes back off; what `acctctl debug` or SIGUSR1
    turned on by hand is left as it is."""

    name = "log"

    def __init__(self, core, settings: LogSettings | None):
        super().__init__(core, settings)
        self.applied: tuple[str, ...] = ()

    @staticmethod
    def settings_of(config):
        return config.log

    def start(self) -> None:
        self._apply()

    def reload(self, settings: LogSettings | None) -> None:
        self.settings = settings
        self._apply()

    def _apply(self) -> None:
        want = self.settings.debug if self.settings else ()
        for c in self.applied:
            if c not in want:
                set_debug(False, None if c == "all" else c)
        for c in want:
            set_debug(True, None if c == "all" else c)
        self.applied = want
