"""Errors an operator can act on. Kernel errno values are translated where
the kernel meets Python, so no caller has to guess what EPERM meant."""

from __future__ import annotations

import errno
import os


class AcctError(Exception):
    """Any acctd error with a message meant for the operator."""


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
