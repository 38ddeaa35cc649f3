"""Errors an operator can act on, each with a machine-readable code that
travels in control replies (acctctl's exit code comes from it, never from
the message). Kernel errno values are translated where the kernel meets
Python, so no caller has to guess what EPERM meant."""

from __future__ import annotations

import enum
import errno
import os


class Code(enum.StrEnum):
    """What kind of failure a control reply reports."""
    ERROR = "error"                # anything else an operator can act on
    NOT_FOUND = "not-found"        # no such unit, policy, session, schedule entry ...
    PERMISSION = "permission"      # the caller's level does not allow it
    NOT_ATTACHED = "not-attached"  # no datapath pinned
    NOT_RUNNING = "not-running"    # no daemon answers (client side)
    BAD_REQUEST = "bad-request"    # malformed or impossible arguments
    CONFLICT = "conflict"          # the state forbids it now (already taken, in use)
    INTERNAL = "internal"          # a bug: logged with its traceback


class AcctError(Exception):
    """Any acctd error with a message meant for the operator."""

    code = Code.ERROR


class NotFound(AcctError, KeyError):
    """Something named does not exist. A KeyError too, for lookups."""

    code = Code.NOT_FOUND

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class PermissionDenied(AcctError):
    code = Code.PERMISSION


class NotAttached(AcctError):
    code = Code.NOT_ATTACHED


class NotRunning(AcctError):
    code = Code.NOT_RUNNING


class BadRequest(AcctError, ValueError):
    code = Code.BAD_REQUEST


class Conflict(AcctError, ValueError):
    code = Code.CONFLICT


def code_of(e: BaseException) -> Code:
    """The code a control reply gives for an exception."""
    if isinstance(e, AcctError):
        return e.code
    if isinstance(e, PermissionError):
        return Code.PERMISSION
    if isinstance(e, ValueError):  # the model's and the parsers' refusals
        return Code.BAD_REQUEST
    if isinstance(e, (TimeoutError, RuntimeError)):
        return Code.ERROR
    return Code.INTERNAL


class ConfigError(AcctError, ValueError):
    """A configuration mistake; str() is "file:line: where: what was expected"."""

    def __init__(self, msg: str, path: str = "", line: int | None = None, key: str | None = None):
        self.path, self.line, self.key, self.reason = path, line, key, msg
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {msg}" if where else msg)


class BpfError(AcctError):
    """A bpf(2)/netlink failure, with what to do about it."""

    _HINTS = {
        errno.EPERM: "needs root (or CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON)",
        errno.EACCES: "the verifier or a permission check refused it",
        errno.E2BIG: "map full",
        errno.ENOSPC: "map full",
        errno.ENOENT: "not found",
        errno.ENODEV: "no such interface",
        errno.EOPNOTSUPP: "not supported by this driver or kernel "
                          "(try hook = \"xdp-generic\" or \"tc\")",
        errno.EBUSY: "another program is attached there "
                     "(detach it, or use a different hook mode)",
        errno.EEXIST: "already exists",
        errno.EINVAL: "invalid argument (kernel too old for this feature?)",
    }

    def __init__(self, err: int, message: str):
        super().__init__(message)
        self.errno = err

    @classmethod
    def from_errno(cls, err: int, what: str) -> "BpfError":
        hint = cls._HINTS.get(err, os.strerror(err))
        return cls(err, f"{what}: {hint} [{errno.errorcode.get(err, err)}]")

    def with_context(self, context: str) -> "BpfError":
        return BpfError(self.errno, f"{context}: {self}")
