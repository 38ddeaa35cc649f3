"""The control client: one JSON request to the daemon's Unix socket or TLS
listener, one reply. An error reply becomes the AcctError of its code, so
callers (acctctl's exit codes) look at the code, never at the text."""

from __future__ import annotations

import json
import socket
import time

from acctd import errors
from acctd.errors import AcctError, Code, NotRunning, PermissionDenied

SOCKET_GROUP = "acctd"   # the group that may use the socket
CONNECT_PATIENCE = 5.0   # seconds to keep trying while the daemon's listen queue is full

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
    try:
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    except socket.timeout:
        raise AcctError(f"acctd did not answer within {s.gettimeout():.0f} s") from None
    except OSError as e:  # reset after a refusal whose reply we already have, or before any
        if not buf:
            raise AcctError(f"acctd closed the connection without a reply: {e}") from None
    try:
        reply = json.loads(buf or b'{"ok": false, "code": "error", "error": "no reply"}')
    except ValueError:
        raise AcctError(f"acctd sent a reply that is not JSON: {buf[:80]!r}") from None
    if not reply.get("ok"):
        try:
            code = Code(reply.get("code", "error"))
        except ValueError:
            code = Code.ERROR
        message = reply.get("error", "request failed")
        cls = _ERRORS.get(code)
        raise cls(message) if cls else RemoteError(message, code)
    return reply["result"]


def _connect(s, path: str) -> None:
    """connect(2), waiting out a full listen queue: a Unix socket answers
    EAGAIN at once instead of queueing us (a burst of clients, a busy
    daemon), so we try again for CONNECT_PATIENCE seconds."""
    give_up = time.monotonic() + CONNECT_PATIENCE
    pause = 0.005
    while True:
        try:
            return s.connect(path)
        except BlockingIOError:
            if time.monotonic() >= give_up:
                raise AcctError(f"acctd at {path} accepts no connection: its queue stayed full "
                                f"for {CONNECT_PATIENCE:g} s (overloaded or stuck?); try "
                                "again, or see its log") from None
            time.sleep(pause)
            pause = min(pause * 2, 0.1)


def call(path: str, cmd: str, /, timeout: float = 130.0, as_token: str | None = None,
         **args) -> object:
    """One request on the Unix socket; with as_token, on behalf of the person
    the daemon gave that token to (acctd/control/delegation.py)."""
    request = {"cmd": cmd, "args": args} | ({"as": as_token} if as_token is not None else {})
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        _connect(s, path)
    except (FileNotFoundError, ConnectionRefusedError):
        s.close()
        raise NotRunning(f"acctd is not running (no socket at {path}); start it, or read "
                         "the database directly with `acctctl --db FILE ...`") from None
    except PermissionError:
        s.close()
        raise PermissionDenied(f"permission denied on {path}: ask for a [[user]] entry and "
                               f"membership of group {SOCKET_GROUP!r}") from None
    except BaseException:
        s.close()
        raise
    with s:
        try:
            s.sendall((json.dumps(request) + "\n").encode())
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before our request was read: the reply says why
        return _reply(s)
