"""NeTAMS `access-script`: run an admin's program whenever a unit is denied or
allowed, so an outside firewall, RADIUS or billing system can follow along.

The argv contract, called once per address of the unit:

    argv[1]  action   "deny" or "allow"
    argv[2]  oid      the unit's oid, 6 hex digits ("0a12f3")
    argv[3]  address  IPv4 or IPv6 text ("10.0.0.5", "2001:db8::5"), or a
                      prefix for net units ("10.0.0.0/24")
    argv[4]  reason   comma-separated words ("sys-deny,quota"); "" on allow

The arguments go straight to execve, never through a shell, so nothing in
them is interpreted. stdin is /dev/null; stdout is discarded and the first
lines of stderr are logged when the program fails. Calls run one at a time,
in the order notify() was called, on a worker thread: a deny followed by an
allow of the same unit reaches the program in that order. A call that
outlives `timeout` is killed with its whole process group. Failures are
logged and counted, never raised to the caller.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Mapping

from acctd.kernel import abi
from acctd.model import sys_policy
from acctd.services.contract import Core, Service

log = logging.getLogger("acctd.access_script")

ACTIONS = ("deny", "allow")
STDERR_LINES = 3          # how much of a failing script's stderr goes to the log
STDERR_CHARS = 300
REAP_GRACE = 1.0          # after SIGKILL, how long to wait for the pipes to close


def validate(path: str) -> str | None:
    """Why `path` cannot be an access-script, or None when it can. Checked at
    config load so a typo fails there, not at the first deny."""
    if not os.path.isabs(path):
        return f"access-script must be an absolute path, got {path!r}"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"access-script {path} does not exist"
    except OSError as e:
        return f"access-script {path}: {e.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return f"access-script {path} is not a regular file"
    # root passes os.access(X_OK) on any x bit, and on none for a plain file
    if not st.st_mode & 0o111 or not os.access(path, os.X_OK):
        return f"access-script {path} is not executable (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _status(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def _head(stderr: bytes) -> str:
    """The first non-empty lines of stderr, on one log line."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    text = " | ".join(lines[:STDERR_LINES])
    return text[:STDERR_CHARS] + ("…" if len(text) > STDERR_CHARS else "")


class AccessScript:
    """The configured program and the worker thread that runs it.

    `env` is the program's whole environment (None: the daemon's own).
    Counters are for `acctctl status`: `runs` calls executed, of which
    `failures` could not start or exited non-zero and `timeouts` were killed;
    `dropped` calls were never run (notify after close, or left at close)."""

    def __init__(self, path: str, timeout: float = 10.0, log: logging.Logger | None = None,
                 env: Mapping[str, str] | None = None):
        self.path = path
        self.timeout = timeout
        self.log = log if log is not None else logging.getLogger("acctd.access_script")
        self.env = dict(env) if env is not None else None
        self.runs = self.failures = self.timeouts = self.dropped = 0
        self.last_error = ""
        # unbounded: an entry is a few strings, and dropping one would leave
        # the outside system believing a stale deny or allow
        self._queue: collections.deque[tuple[tuple[str, ...], dict]] = collections.deque()
        self._running = False
        self._closing = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="access-script", daemon=True)
        self._thread.start()

    # the caller's side

    def notify(self, action: str, oid: str, addr: str, reason: str) -> None:
        """Queue one call; returns at once. Only a bad `action` raises: that
        is the caller's bug, not the script's."""
        if action not in ACTIONS:
            raise ValueError(f"access-script action must be deny or allow, got {action!r}")
        self.call((action, str(oid), str(addr), str(reason)))

    def call(self, args, env: Mapping[str, str] | None = None) -> None:
        """Queue a run with any arguments and extra environment variables (the
        session-start/stop hooks use this; values are never interpreted)."""
        call = (tuple(str(a) for a in args), dict(env or {}))
        with self._cond:
            if self._closing:
                self.dropped += 1
                self.log.warning("access-script %s: closed, not running %s",
                                 self.path, " ".join(map(repr, call[0])))
                return
            self._queue.append(call)
            self._cond.notify_all()

    def pending(self) -> int:
        """Calls queued or running."""
        with self._cond:
            return len(self._queue) + self._running

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every queued call has run; False if `timeout` came first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue or self._running:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 30.0) -> bool:
        """Refuse new calls, let queued ones finish for up to `timeout`, stop
        the thread. Calls still queued then are dropped (a running one is
        bounded by its own timeout). True if everything ran."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            return True
        with self._cond:
            left = len(self._queue)
            self._queue.clear()
            self.dropped += left
        self.log.warning("access-script %s: %d call(s) dropped at shutdown", self.path, left)
        return False

    def status(self) -> dict:
        with self._cond:
            return {"path": self.path, "runs": self.runs, "failures": self.failures,
                    "timeouts": self.timeouts, "dropped": self.dropped,
                    "pending": len(self._queue) + self._running,
                    "last_error": self.last_error}

    # the worker's side

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:  # closing, and nothing left
                    return
                call = self._queue.popleft()
                self._running = True
            try:
                self._run(call)
            except Exception as e:  # noqa: BLE001 - the thread must outlive any one call
                self._failed(call[0], f"internal error: {e!r}")
            finally:
                with self._cond:
                    self._running = False
                    self._cond.notify_all()

    def _run(self, queued: tuple[tuple[str, ...], dict]) -> None:
        call, extra = queued
        with self._cond:
            self.runs += 1
        argv = [self.path, *call]
        env = self.env
        if extra:
            env = {**(os.environ if env is None else env), **extra}
        try:
            proc = subprocess.Popen(argv, shell=False, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    close_fds=True, env=env,
                                    # its own process group, so a timeout kills
                                    # what a shell script started too
                                    start_new_session=True)
        except (OSError, ValueError) as e:  # missing, not executable, NUL in an argument
            self._failed(call, f"cannot run: {getattr(e, 'strerror', None) or e}")
            return
        try:
            _, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            with self._cond:
                self.timeouts += 1
            self._failed(call, f"timed out after {self.timeout:g}s, killed", count=False)
            return
        if proc.returncode != 0:
            self._failed(call, _status(proc.returncode), _head(err))
        else:
            self.log.debug("access-script %s %s: ok", self.path, " ".join(map(repr, call)))

    def _kill(self, proc: subprocess.Popen) -> None:
        # the leader is not reaped yet, so its pid (the group id) cannot have
        # been reused by an unrelated process
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.communicate(timeout=REAP_GRACE)
        except subprocess.TimeoutExpired:
            # a grandchild left the group (setsid) holding our pipes: stop reading
            for f in (proc.stdout, proc.stderr):
                if f:
                    f.close()
            proc.wait()

    def _failed(self, call, what: str, stderr: str = "", count: bool = True) -> None:
        msg = f"{' '.join(map(repr, call))}: {what}" + (f": {stderr}" if stderr else "")
        with self._cond:
            if count:
                self.failures += 1
            self.last_error = msg
        self.log.warning("access-script %s %s", self.path, msg)


# --- the service ----------------------------------------------------------------------

class AccessScriptService(Service):
    """NeTAMS `access-script`: run whenever a unit's address becomes blocked
    or unblocked, as `SCRIPT deny|allow OID ADDRESS REASONS`."""

    name = "access_script"

    def __init__(self, core: Core, settings: tuple[str, float]):
        super().__init__(core, settings)    # ([processor] access-script, its timeout)
        self.script: AccessScript | None = None

    @staticmethod
    def settings_of(config):
        p = config.processor
        return p.access_script, p.access_script_timeout

    def start(self) -> None:
        self.reload(self.settings)

    def reload(self, settings: tuple[str, float]) -> None:
        self.settings = settings
        cur = self.script
        if cur is not None and (cur.path, cur.timeout) == settings:
            return
        if cur is not None:
            cur.close()
        path, timeout = settings
        self.script = AccessScript(path, timeout) if path else None

    def close(self) -> None:
        if self.script is not None:
            self.script.close()

    def status(self) -> dict | None:
        return {"access_script": self.script.status()} if self.script is not None else None

    def blocks_changed(self, moved) -> None:
        if self.script is None:
            return
        for text, (old, new, oid) in moved.items():
            was, now = sys_policy.verdict(old), sys_policy.verdict(new)
            if was != now:
                deny = now == abi.Verdict.DROP
                self.script.notify("deny" if deny else "allow", oid, text,
                                   ",".join(sys_policy.words(new)) if deny else "")
