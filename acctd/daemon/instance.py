"""One acctd per control socket and per database: which one runs already.
Asked of the running daemon itself, so nothing can go stale the way a pid
file does: its socket accepts a connection and the kernel names the
process listening (SO_PEERCRED); DuckDB holds an fcntl lock on its file,
and F_GETLK names the holder."""

from __future__ import annotations

import fcntl
import os
import socket
import struct

from acctd.errors import AcctError

_FLOCK = "hhqqi"  # struct flock: l_type, l_whence, l_start, l_len, l_pid (Linux, 64-bit off_t)


def listening_pid(socket_path: str) -> int | None:
    """The pid of the process serving this socket, if one does."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2.0)
    with s:
        try:
            s.connect(socket_path)
        except BlockingIOError:
            return -1  # its queue is full: someone serves it, too busy to say who
        except OSError:
            return None  # no socket, or nobody listening (left by a killed daemon)
        creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", creds)[0]


def locking_pid(db_path: str) -> int | None:
    """The pid of another process holding DuckDB's lock on this file."""
    try:
        fd = os.open(db_path, os.O_RDONLY)
    except OSError:
        return None  # no database yet: nobody has it
    try:
        got = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
    except OSError:
        return None
    finally:
        os.close(fd)
    kind, _, _, _, pid = struct.unpack(_FLOCK, got)
    return None if kind == fcntl.F_UNLCK else pid


def refuse_second(socket_path: str, db_path: str) -> None:
    """AcctError "acctd already running as pid N" if a daemon serves this
    socket or holds this database."""
    for pid, what in ((listening_pid(socket_path), f"serving {socket_path}"),
                      (locking_pid(db_path), f"holding {db_path}")):
        if pid is not None:
            who = f"as pid {pid}" if pid > 0 else "(too busy to say its pid)"
            raise AcctError(f"acctd already running {who}, {what}; stop it first "
                            "(systemctl stop acctd, or kill -TERM that pid)")
