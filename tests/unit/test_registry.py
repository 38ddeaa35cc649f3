"""The command registry (acctd/control/commands.py): every command is
declared once, with a handler that exists and takes exactly its arguments,
and an acctctl entry with --help; acctctl's exit codes come from the reply's
code, never from its text."""

import ast
import inspect
import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from acctctl.common import Exit, exit_code
from acctctl.main import main
from acctd import errors
from acctd.control import commands
from acctd.control.client import RemoteError
from acctd.control.dispatch import Dispatcher
from acctd.daemon.commands import CoreCommands
from acctd.daemon.core import SERVICES
from acctd.services.contract import Service

TARGETS = {"core": CoreCommands, "control": Dispatcher, **{s.name: s for s in SERVICES}}
HOOKS = {n for n, v in vars(Service).items() if callable(v) and not n.startswith("_")}
CLI = Path(__file__).resolve().parents[2] / "cli"


def walk(group: click.Group, path=()):
    for name, cmd in group.commands.items():
        yield (*path, name), cmd
        if isinstance(cmd, click.Group):
            yield from walk(cmd, (*path, name))


def test_names_are_unique_and_levels_set():
    assert len(commands.REGISTRY) == len(commands.COMMANDS)
    for c in commands.COMMANDS:
        assert c.level in commands.Level and c.target in TARGETS, c.name


@pytest.mark.parametrize("cmd", commands.COMMANDS, ids=lambda c: c.name)
def test_handler_exists_and_takes_exactly_the_declared_arguments(cmd):
    cls = TARGETS[cmd.target]
    assert cmd.method not in HOOKS or cls is CoreCommands or cls is Dispatcher, \
        f"{cmd.handler} would be called as a hook too"
    fn = getattr(cls, cmd.method)
    params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
    want = [a.name for a in cmd.args] + (["caller"] if cmd.caller else [])
    assert [p.name for p in params] == want, cmd.handler
    for p, a in zip(params, cmd.args):   # optional arguments have a default in the handler too
        assert a.required or p.default is not inspect.Parameter.empty, (cmd.name, a.name)


def test_every_command_has_an_acctctl_entry_with_help():
    entries = dict(walk(main))
    runner = CliRunner()
    for c in commands.COMMANDS:
        assert c.cli in entries, f"{c.name}: no `acctctl {' '.join(c.cli)}`"
        res = runner.invoke(main, [*c.cli, "--help"])
        assert res.exit_code == 0 and "Usage:" in res.output, c.name
    for path, cmd in entries.items():  # and every entry, groups included, has help
        assert cmd.help, path
        assert runner.invoke(main, [*path, "--help"]).exit_code == 0, path


def test_acctctl_asks_only_registered_commands_and_asks_them_all():
    """Every name acctctl sends is in the registry, and every command in the
    registry is sent by some acctctl command."""
    import importlib
    asked = set()
    for p in CLI.glob("*.py"):
        module = importlib.import_module(f"acctctl.{p.stem}")
        for fdef in ast.parse(p.read_text()).body:
            for node in ast.walk(fdef):
                if not isinstance(node, ast.Call):
                    continue
                fn = getattr(node.func, "id", None)
                if fn == "ask":
                    name = node.args[1]
                    if isinstance(name, ast.JoinedStr):  # ask(ctx, f"rotate-{what}"): each choice
                        prefix = name.values[0].value
                        command = getattr(module, fdef.name)
                        asked |= {prefix + c for param in command.params
                                  if isinstance(param.type, click.Choice)
                                  for c in param.type.choices}
                    elif isinstance(name, ast.Constant):
                        asked.add(name.value)
                elif fn == "_login_cmd":                 # ask(ctx, cmd) with cmd given here
                    asked.add(node.args[0].value)
    assert asked <= set(commands.REGISTRY), asked - set(commands.REGISTRY)
    assert set(commands.REGISTRY) <= asked, set(commands.REGISTRY) - asked


def test_arguments_are_checked_before_any_handler():
    c = commands.get("session-list")
    assert c.bind({}) == {"open": False, "user": None, "limit": 100}
    with pytest.raises(errors.BadRequest, match="'limit': expected int"):
        c.bind({"limit": "9"})
    with pytest.raises(errors.BadRequest, match="'limit': expected at least 0, got -1"):
        c.bind({"limit": -1})  # DuckDB's own error, an internal one, before
    assert c.bind({"limit": 0})["limit"] == 0
    with pytest.raises(errors.BadRequest, match="unknown argument"):
        c.bind({"colour": 1})
    with pytest.raises(errors.BadRequest, match="'user' is required"):
        commands.get("session-start").bind({})
    with pytest.raises(errors.NotFound, match="unknown command 'nope'"):
        commands.get("nope")


@pytest.mark.parametrize("error, code", [
    (errors.PermissionDenied("x"), Exit.PERMISSION),
    (errors.NotAttached("x"), Exit.NOT_ATTACHED),
    (errors.NotRunning("x"), Exit.NOT_RUNNING),
    (errors.NotFound("x"), Exit.ERROR),
    (RemoteError("permission denied: looks like one, is not", errors.Code.INTERNAL), Exit.ERROR),
    (errors.AcctError("no acctd datapath pinned (text that once chose the code)"), Exit.ERROR),
])
def test_exit_codes_come_from_the_code_not_the_text(error, code):
    assert exit_code(error) == code


@pytest.mark.parametrize("code, exit", [
    ("permission", Exit.PERMISSION), ("not-attached", Exit.NOT_ATTACHED),
    ("not-running", Exit.NOT_RUNNING), ("not-found", Exit.ERROR), ("bad-request", Exit.ERROR),
    ("conflict", Exit.ERROR), ("internal", Exit.ERROR), ("no-such-code", Exit.ERROR),
])
def test_a_reply_code_becomes_acctctls_exit_code(code, exit):
    """A reply off the wire, through the client and acctctl's run(): the
    exit code follows the code, the message is printed as sent."""
    import socket

    from acctctl.common import run
    from acctd.control import client
    a, b = socket.socketpair()
    with a, b:
        b.sendall(json.dumps({"ok": False, "code": code, "error": "not-attached, says the text"}
                             ).encode() + b"\n")
        with pytest.raises(SystemExit) as e:
            run(lambda: client._reply(a))
    assert e.value.code == exit
