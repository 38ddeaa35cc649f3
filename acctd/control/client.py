"""The control client: one JSON request to the daemon's Unix socket or TLS
listener, one reply."""

from __future__ import annotations

import json
import socket

from acctd.control.server import SOCKET_GROUP
from acctd.errors import AcctError


class NotRunning(AcctError):
    pass


def call_tcp(address: str, cmd: str, user: str, password: str, cafile: str | None = None,
             timeout: float = 130.0, **args) -> object:
    """The same request over the TLS listener; the server's certificate is
    checked against `cafile` (or the system's CAs)."""
    import ssl
    host, _, port = address.rpartition(":")
    ctx = ssl.create_default_context(cafile=cafile)
    try:
        raw = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    except OSError as e:
        raise NotRunning(f"cannot reach acctd at {address}: {e}") from None
    with ctx.wrap_socket(raw, server_hostname=host.strip("[]")) as s:
        s.sendall((json.dumps({"cmd": cmd, "args": args,
                               "auth": {"user": user, "password": password}}) + "\n").encode())
        return _reply(s)


def _reply(s) -> object:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    reply = json.loads(buf or b'{"ok": false, "error": "no reply"}')
    if not reply.get("ok"):
        raise AcctError(reply.get("error", "request failed"))
    return reply["result"]


def call(path: str, cmd: str, timeout: float = 130.0, **args) -> object:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        raise NotRunning(f"acctd is not running (no socket at {path}); start it, or read "
                         "the database directly with `acctctl --db FILE ...`") from None
    except PermissionError:
        raise AcctError(f"permission denied on {path}: ask for a [[user]] entry and "
                        f"membership of group {SOCKET_GROUP!r}") from None
    with s:
        s.sendall((json.dumps({"cmd": cmd, "args": args}) + "\n").encode())
        return _reply(s)
