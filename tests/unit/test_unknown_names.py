"""Naming what does not exist is a "not-found" reply that says so, through
the registry and the real handlers, never an internal error (they once were
KeyError tracebacks in the log)."""

import logging

import pytest

from acctd.config import loads
from acctd.control.access import Level
from acctd.control.dispatch import Caller
from acctd.errors import Code, NotFound, code_of

from .daemon_stub import ALICE, daemon_stub

CONFIG = ALICE

ROOT = Caller(0, "root", Level.ADMIN)


@pytest.mark.parametrize("cmd, args", [
    ("quota-set", {"argv": ["nobody", "day", "1M", "in"]}),
    ("quota-show", {"unit": "nobody"}),
    ("sys-policy", {"unit": "nobody", "policy": "sys-deny"}),
    ("session-start", {"user": "nobody", "ip": "10.0.0.9"}),
    ("session-stop", {"user": "nobody"}),
    ("session-list", {"user": "nobody"}),
    ("login-set", {"unit": "nobody", "words": ["password", "s3cret"]}),
    ("login-show", {"unit": "nobody"}),
    ("list", {"unit": "nobody"}),
    ("stat", {"unit": "nobody"}),
])
def test_an_unknown_unit_is_not_found_everywhere(tmp_path, caplog, cmd, args):
    with daemon_stub(loads(CONFIG, str(tmp_path / "acctd.toml")), tmp_path=tmp_path) as d:
        with caplog.at_level(logging.WARNING), pytest.raises(Exception) as e:
            d.dispatcher.handle({"cmd": cmd, "args": args}, ROOT)
    assert "unknown unit 'nobody'" in str(e.value)
    assert code_of(e.value) == Code.NOT_FOUND and isinstance(e.value, NotFound)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_unknown_schedule_entry_and_command_are_not_found(tmp_path):
    with daemon_stub(loads(CONFIG, str(tmp_path / "acctd.toml")), tmp_path=tmp_path) as d:
        with pytest.raises(NotFound, match="no schedule entry 08ABCD"):
            d.dispatcher.handle({"cmd": "schedule-del", "args": {"oid": "08ABCD"}}, ROOT)
        with pytest.raises(NotFound, match="unknown command 'frobnicate'"):
            d.dispatcher.handle({"cmd": "frobnicate"}, ROOT)
