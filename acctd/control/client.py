"""The control client: one JSON request to the daemon's Unix socket or TLS
listener, one reply. An error reply becomes the AcctError of its code, so
callers (acctctl's exit codes) look at the code, never at the text."""

from __future__ import annotations

import json
import socket

from acctd import errors
from acctd.errors import AcctError, Code, NotRunning, PermissionDenied

SOCKET_GROUP = "acctd"   # the group that may use the socket

# the error class of each code that has one of its own
_ERRORS = {cls.code: cls for cls in (errors.NotFound, errors.PermissionDenied,
                                     errors.NotAttached, errors.NotRunning, errors.BadRequest,
                                     errors.Conflict)}


class RemoteError(AcctError):
    """An error reply whose code has no class of its own (error, internal)."""

    def __init__(self, message: str, code: Code):
        super().__init__(message)
        self.code = code


def call_tcp(address: str, cmd: str, user: str, password: str, cafile: str | None = None, /,
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
    reply = json.loads(buf or b'{"ok": false, "code": "error", "error": "no reply"}')
    if not reply.get("ok"):
        try:
            code = Code(reply.get("code", "error"))
        except ValueError:
            code = Code.ERROR
        message = reply.get("error", "request failed")
        cls = _ERRORS.get(code)
        raise cls(message) if cls else RemoteError(message, code)
    return reply["result"]


def call(path: str, cmd: str, /, timeout: float = 130.0, **args) -> object:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        raise NotRunning(f"acctd is not running (no socket at {path}); start it, or read "
                         "the database directly with `acctctl --db FILE ...`") from None
    except PermissionError:
        raise PermissionDenied(f"permission denied on {path}: ask for a [[user]] entry and "
                               f"membership of group {SOCKET_GROUP!r}") from None
    with s:
        s.sendall((json.dumps({"cmd": cmd, "args": args}) + "\n").encode())
        return _reply(s)
