"""Secret files (RADIUS and CoA shared secrets, the F-TICKS key, the OpenVPN
management password): one rule for all of them. A secret must be a regular
file that only its owner may read or write; its content is the secret,
less a trailing line ending. Errors are ValueErrors that start with `key`,
the config key that named the file, so the config loader can point at it."""

from __future__ import annotations

import os
import stat


def read_private(path: str, key: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as e:
        raise ValueError(f"{key} {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)  # the file opened, not whatever the name points at later
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{key} {path} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise ValueError(f"{key} {path} is accessible by group or others (mode {mode:04o}); "
                             f"chmod 600 it and let only acctd's user own it")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
    finally:
        os.close(fd)
    data = data.rstrip(b"\r\n")
    if not data:
        raise ValueError(f"{key} {path} is empty")
    return data
