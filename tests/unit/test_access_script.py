"""access-script: real scripts in tmp_path receive the exact arguments, in
order; timeouts kill the process group; failures are logged and counted."""

from __future__ import annotations

import logging
import os
import shlex
import time
from pathlib import Path

import pytest

from acctd.services.access_script import AccessScript, validate


@pytest.fixture
def caught(caplog, monkeypatch):
    # log.setup() (run by other tests) stops propagation at "acctd"
    monkeypatch.setattr(logging.getLogger("acctd"), "propagate", True)
    caplog.set_level(logging.DEBUG, logger="acctd.access_script")
    return caplog


def script(tmp_path: Path, body: str, name: str = "hook") -> str:
    p = tmp_path / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(0o755)
    return str(p)


def recorder(tmp_path: Path, before: str = "") -> tuple[str, Path]:
    """A script that appends argc then each argument, NUL-terminated."""
    out = tmp_path / "calls"
    return script(tmp_path, before + f"printf '%s\\0' \"$#\" \"$@\" >> {shlex.quote(str(out))}\n"), out


def calls(out: Path) -> list[list[str]]:
    if not out.exists():
        return []
    fields = out.read_bytes().decode().split("\0")[:-1]
    got = []
    while fields:
        n = int(fields.pop(0))
        got.append(fields[:n])
        del fields[:n]
    return got


def run(s: AccessScript, *args) -> None:
    s.notify(*args)
    assert s.join(5)


# --- the argv contract ---------------------------------------------------------------

def test_receives_exact_arguments(tmp_path):
    path, out = recorder(tmp_path)
    s = AccessScript(path)
    run(s, "deny", "0a12f3", "10.0.0.5", "sys-deny,quota")
    run(s, "allow", "0a12f3", "2001:db8::5", "")
    run(s, "deny", "0b0001", "10.0.0.0/24", "quota")
    assert calls(out) == [["deny", "0a12f3", "10.0.0.5", "sys-deny,quota"],
                          ["allow", "0a12f3", "2001:db8::5", ""],
                          ["deny", "0b0001", "10.0.0.0/24", "quota"]]
    assert s.close(5)
    assert (s.runs, s.failures, s.timeouts) == (3, 0, 0)


def test_shell_characters_arrive_literally(tmp_path):
    path, out = recorder(tmp_path)
    x, y, z = (tmp_path / n for n in "XYZ")
    hostile = [f"a b;$(touch {x})", f"`touch {y}`", f"10.0.0.1 | touch {z}",
               "-n", "*", "'\"\\", "line\nbreak", "\t ", "адрес"]
    s = AccessScript(path)
    for h in hostile:
        s.notify("deny", h, h, h)
    assert s.join(5)
    assert calls(out) == [["deny", h, h, h] for h in hostile]
    assert not (x.exists() or y.exists() or z.exists())
    s.close(5)


def test_calls_run_in_order(tmp_path):
    path, out = recorder(tmp_path)
    s = AccessScript(path)
    sent = [("deny" if i % 2 == 0 else "allow", f"{i:06x}", f"10.0.{i}.1",
             "quota" if i % 2 == 0 else "") for i in range(40)]
    for c in sent:
        s.notify(*c)
    assert s.pending() > 0       # notify did not wait for the script
    assert s.join(5)
    assert s.pending() == 0
    assert calls(out) == [list(c) for c in sent]
    s.close(5)


def test_env_is_the_whole_environment(tmp_path):
    out = tmp_path / "env"
    path = script(tmp_path, f"echo \"$ACCT_X:${{HOME-unset}}\" > {shlex.quote(str(out))}\n")
    s = AccessScript(path, env={"ACCT_X": "42"})
    run(s, "deny", "0a12f3", "10.0.0.5", "quota")
    assert out.read_text() == "42:unset\n"
    s.close(5)


def test_stdin_is_devnull(tmp_path):
    out = tmp_path / "stdin"
    path = script(tmp_path, f"cat > {shlex.quote(str(out))}\n")
    s = AccessScript(path, timeout=2)
    run(s, "deny", "0a12f3", "10.0.0.5", "quota")
    assert out.read_text() == "" and s.timeouts == 0
    s.close(5)


def test_bad_action_is_refused(tmp_path):
    path, out = recorder(tmp_path)
    s = AccessScript(path)
    with pytest.raises(ValueError, match="deny or allow"):
        s.notify("block", "0a12f3", "10.0.0.5", "quota")
    s.close(5)
    assert calls(out) == []


# --- timeouts ------------------------------------------------------------------------

def _gone(pid: int) -> bool:
    """Dead: no such process, or a zombie nobody reaped (PID 1 in a container may not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_timeout_kills_the_process_group_and_the_next_call_runs(tmp_path, caught):
    pids = tmp_path / "pids"
    path, out = recorder(tmp_path, before=(
        'if [ "$4" = hang ]; then\n'
        f'  sleep 30 & echo "$$ $!" > {shlex.quote(str(pids))}\n'
        "  wait\n"
        "fi\n"))
    s = AccessScript(path, timeout=0.3)
    t0 = time.monotonic()
    s.notify("deny", "0a12f3", "10.0.0.5", "hang")
    s.notify("allow", "0a12f3", "10.0.0.5", "")
    assert s.join(5)
    assert time.monotonic() - t0 < 3
    leader, child = map(int, pids.read_text().split())
    deadline = time.monotonic() + 2
    while not (_gone(leader) and _gone(child)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _gone(leader) and _gone(child), "the script's background sleep survived"
    # the hung call recorded nothing; the next one ran
    assert calls(out) == [["allow", "0a12f3", "10.0.0.5", ""]]
    assert (s.runs, s.failures, s.timeouts) == (2, 0, 1)
    assert "timed out after 0.3s" in s.last_error
    assert any("timed out" in r.getMessage() and path in r.getMessage()
               and r.levelno == logging.WARNING for r in caught.records)
    s.close(5)


# --- failures ------------------------------------------------------------------------

def test_nonzero_exit_is_logged_and_counted(tmp_path, caught):
    path = script(tmp_path, "echo 'no route to firewall' >&2\necho second >&2\nexit 3\n")
    s = AccessScript(path)
    run(s, "deny", "0a12f3", "10.0.0.5", "sys-deny,quota")   # must not raise
    assert (s.runs, s.failures, s.timeouts) == (1, 1, 0)
    [rec] = [r for r in caught.records if r.levelno == logging.WARNING]
    msg = rec.getMessage()
    for part in (path, "'deny'", "'0a12f3'", "'10.0.0.5'", "'sys-deny,quota'",
                 "exit status 3", "no route to firewall | second"):
        assert part in msg
    assert "exit status 3" in s.last_error
    s.close(5)


def test_killed_by_signal_is_named(tmp_path, caught):
    s = AccessScript(script(tmp_path, "kill -TERM $$\n"))
    run(s, "deny", "0a12f3", "10.0.0.5", "quota")
    assert s.failures == 1 and "killed by SIGTERM" in s.last_error
    s.close(5)


def test_missing_script_is_logged_and_counted(tmp_path, caught):
    path = str(tmp_path / "nope")
    s = AccessScript(path)
    run(s, "deny", "0a12f3", "10.0.0.5", "quota")
    run(s, "allow", "0a12f3", "10.0.0.5", "")          # the worker survived
    assert (s.runs, s.failures) == (2, 2)
    msgs = [r.getMessage() for r in caught.records if r.levelno == logging.WARNING]
    assert len(msgs) == 2
    assert all(path in m and "cannot run" in m and "No such file" in m for m in msgs)
    s.close(5)


def test_not_executable_is_logged_and_counted(tmp_path, caught):
    path = script(tmp_path, "exit 0\n")
    os.chmod(path, 0o644)
    s = AccessScript(path)
    run(s, "deny", "0a12f3", "10.0.0.5", "quota")
    assert s.failures == 1 and "Permission denied" in s.last_error
    s.close(5)


def test_nul_in_an_argument_is_a_failure_not_an_exception(tmp_path, caught):
    path, out = recorder(tmp_path)
    s = AccessScript(path)
    run(s, "deny", "0a12f3", "10.0.0.5", "quo\0ta")
    run(s, "deny", "0a12f3", "10.0.0.5", "quota")
    assert s.failures == 1 and calls(out) == [["deny", "0a12f3", "10.0.0.5", "quota"]]
    s.close(5)


# --- shutdown and status -------------------------------------------------------------

def test_close_runs_queued_calls_then_refuses(tmp_path, caught):
    path, out = recorder(tmp_path)
    s = AccessScript(path)
    for i in range(5):
        s.notify("deny", f"{i:06x}", "10.0.0.5", "quota")
    assert s.close(5)
    assert len(calls(out)) == 5
    s.notify("allow", "000000", "10.0.0.5", "")        # logged, not raised
    assert s.dropped == 1 and len(calls(out)) == 5
    assert any("closed" in r.getMessage() for r in caught.records)


def test_close_is_bounded(tmp_path, caught):
    s = AccessScript(script(tmp_path, "sleep 30\n"), timeout=0.5)
    for _ in range(3):
        s.notify("deny", "0a12f3", "10.0.0.5", "quota")
    time.sleep(0.05)
    t0 = time.monotonic()
    assert not s.close(0.1)
    assert time.monotonic() - t0 < 2          # bounded: the script sleeps 30 s
    assert s.dropped == 2
    assert s.join(3) and s.timeouts == 1          # the running call ended by its own timeout


def test_status(tmp_path):
    path = script(tmp_path, "exit 1\n")
    s = AccessScript(path)
    run(s, "deny", "0a12f3", "10.0.0.5", "quota")
    st = s.status()
    assert st == {"path": path, "runs": 1, "failures": 1, "timeouts": 0, "dropped": 0,
                  "pending": 0, "last_error": "'deny' '0a12f3' '10.0.0.5' 'quota': exit status 1"}
    s.close(5)


# --- validate ------------------------------------------------------------------------

def test_validate(tmp_path):
    ok = script(tmp_path, "exit 0\n")
    assert validate(ok) is None
    link = tmp_path / "link"
    link.symlink_to(ok)
    assert validate(str(link)) is None
    assert validate("hook.sh") == "access-script must be an absolute path, got 'hook.sh'"
    assert validate(str(tmp_path / "nope")) == f"access-script {tmp_path}/nope does not exist"
    assert validate(str(tmp_path)) == f"access-script {tmp_path} is not a regular file"
    os.chmod(ok, 0o644)
    assert validate(ok) == f"access-script {ok} is not executable (mode 0644)"
