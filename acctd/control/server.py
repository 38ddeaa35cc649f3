"""The control listeners: one JSON request per line, one JSON reply.

Who is asking comes from the kernel (SO_PEERCRED) on the local socket, never
from the request: uid 0 is admin, other peers map to the configured
[[user]]s by uid, user name or group, and anyone else is refused
(acctd/control/access.py). The optional TCP listener (NeTAMS service server)
always speaks TLS and checks each request's password. What a command may do
and at which level is in the registry (acctd/control/commands.py); serving
it is acctd/control/dispatch.py, shared by both listeners.
The socket is mode 0660, group "acctd" when that group exists.

Requests are bounded: a line over MAX_REQUEST bytes, invalid UTF-8 or JSON,
or an unknown command gets an error reply; a request not complete within
REQUEST_TIMEOUT is dropped, and so is a connection over MAX_CONNECTIONS.
Every error reply carries a code (acctd.errors.Code). The daemon carries on
in every case.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import grp
import json
import logging
import os
import socket
import socketserver
import struct
import threading
import time

from acctd.config.schema import Invalid, Table, choice, file_path, integer, secret_file, setting
from acctd.control.client import SOCKET_GROUP
from acctd.control.dispatch import Dispatcher, user_name
from acctd.errors import AcctError, Code, PermissionDenied, code_of

log = logging.getLogger("acctd.control")

DEFAULT_SOCKET = "/run/acctd/acctd.sock"
MAX_REQUEST = 64 * 1024
REQUEST_TIMEOUT = 10.0
MAX_CONNECTIONS = 32


# -- the TCP listener's settings --------------------------------------------------------

def _listen(v, ctx) -> tuple[str, int]:
    host, _, port = v.rpartition(":") if isinstance(v, str) else ("", "", "")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise Invalid("expected host:port, e.g. 127.0.0.1:20001")
    return host.strip("[]"), int(port)


@dataclasses.dataclass(frozen=True)
class ServerSettings(Table):
    """The [server] table: the optional TCP listener (NeTAMS service server),
    off unless configured, TLS always, users with an argon2id password."""
    listen: tuple[str, int] = setting(check=_listen)
    tls_cert: str = setting(check=file_path("a PEM file"))
    tls_key: str = setting(check=secret_file())
    max_conn: int = setting(6, check=integer(1, what="a connection count"))
    login: str = setting("localhost", check=choice("localhost", "any"))  # localhost: loopback only

    @property
    def host(self) -> str:
        return self.listen[0]

    @property
    def port(self) -> int:
        return self.listen[1]


# -- the listeners ----------------------------------------------------------------------

class _Listener:
    """What both listeners share: the dispatcher, the connection slots."""

    dispatcher: Dispatcher

    def track(self, handler, info: dict | None) -> None:
        self.dispatcher.track(id(handler), info)

    def serve_in_thread(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, name="control", daemon=True)
        t.start()
        return t


class ControlServer(_Listener, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The local Unix socket: peers identified by the kernel (SO_PEERCRED)."""

    daemon_threads = True
    request_timeout = REQUEST_TIMEOUT

    def __init__(self, path: str, dispatcher: Dispatcher):
        self.dispatcher = dispatcher
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            os.unlink(path)  # a socket left by a killed daemon
        except FileNotFoundError:
            pass
        old = os.umask(0o177)
        try:
            super().__init__(path, _Handler)
        finally:
            os.umask(old)
        try:
            os.chown(path, -1, grp.getgrnam(SOCKET_GROUP).gr_gid)
            os.chmod(path, 0o660)
        except KeyError:
            os.chmod(path, 0o600)  # no acctd group: root only
        self.path = path

    def peer(self, handler) -> dict | None:
        """Who is on the other end of a Unix connection: the kernel says."""
        creds = handler.connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                              struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", creds)
        return {"pid": pid, "uid": uid, "gid": gid, "user": user_name(uid)}

    def serve_request(self, req: dict, peer: dict) -> object:
        return self.dispatcher.handle(req, self.dispatcher.peer(peer["uid"], peer["gid"]))


class TcpControlServer(_Listener, socketserver.ThreadingMixIn, socketserver.TCPServer):
    """The optional TCP listener (NeTAMS `service server`): TLS always, every
    request carries {"auth": {"user", "password"}} checked against the
    user's argon2id hash, `login = "localhost"` refuses non-loopback peers.
    Same commands, limits and levels as the Unix socket."""

    daemon_threads = True
    allow_reuse_address = True
    request_timeout = REQUEST_TIMEOUT

    def __init__(self, settings: ServerSettings, dispatcher: Dispatcher):
        import ssl
        self.dispatcher, self.settings = dispatcher, settings
        self.slots = threading.BoundedSemaphore(settings.max_conn)
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            self.tls.load_cert_chain(settings.tls_cert, settings.tls_key)
        except (OSError, ssl.SSLError) as e:
            raise AcctError(f"[server] tls-cert/tls-key: cannot load {settings.tls_cert}: {e}") from None
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        self.address_family = family
        try:
            socketserver.TCPServer.__init__(self, (settings.host, settings.port), _Handler)
        except OSError as e:
            raise AcctError(f"[server] listen {settings.host}:{settings.port}: {e}") from None

    def verify_request(self, request, client_address) -> bool:
        if self.settings.login == "localhost":
            import ipaddress
            return ipaddress.ip_address(client_address[0]).is_loopback
        return True

    def peer(self, handler) -> dict | None:
        """TLS first (in the handler's thread, bounded), then the request."""
        import ssl
        try:
            handler.connection.settimeout(self.request_timeout)
            handler.connection = self.tls.wrap_socket(handler.connection, server_side=True)
        except (OSError, ssl.SSLError) as e:
            log.info("TLS handshake with %s failed: %s", handler.client_address[0], e)
            return None
        handler.rfile = handler.connection.makefile("rb")
        handler.wfile = socketserver._SocketWriter(handler.connection)
        return {"address": handler.client_address[0], "user": None}

    def serve_request(self, req: dict, peer: dict) -> object:
        auth = req.get("auth")
        if not isinstance(auth, dict):
            raise PermissionDenied('the TCP listener needs "auth": {"user", "password"}')
        caller = self.dispatcher.password(str(auth.get("user", "")), str(auth.get("password", "")))
        return self.dispatcher.handle(req, caller)


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        if not self.server.slots.acquire(blocking=False):
            return self._reply({"ok": False, "code": Code.CONFLICT,
                                "error": f"too many connections (max {MAX_CONNECTIONS})"})
        try:
            self._serve()
        finally:
            self.server.slots.release()

    def _serve(self) -> None:
        peer = self.server.peer(self)
        if peer is None:
            return  # refused before any request (TLS handshake failed or timed out)
        self.server.track(self, {k: peer[k] for k in ("pid", "uid", "user", "address") if k in peer}
                          | {"since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
        try:
            self._request(peer)
        finally:
            self.server.track(self, None)

    def _request(self, peer: dict) -> None:
        line = self._read_line()
        if line is None:
            return  # timed out or gone: drop it
        if len(line) > MAX_REQUEST:
            return self._fail(Code.BAD_REQUEST, f"request over {MAX_REQUEST} bytes")
        try:
            req = json.loads(line.decode("utf-8"))
            if not isinstance(req, dict):
                raise ValueError("expected a JSON object")
        except (UnicodeDecodeError, ValueError) as e:
            return self._fail(Code.BAD_REQUEST, f"bad request: {e}")
        try:
            self._reply({"ok": True, "result": self.server.serve_request(req, peer)})
        except Exception as e:  # a bug must cost one request, not the daemon
            code = code_of(e)
            if code == Code.INTERNAL:
                log.exception("control request %r failed", req.get("cmd"))
                return self._fail(code, f"internal error: {e}")
            text = str(e)
            self._fail(code, f"permission denied: {text}" if code == Code.PERMISSION else text)

    def _fail(self, code: Code, error: str) -> None:
        self._reply({"ok": False, "code": str(code), "error": error})

    def _read_line(self) -> bytes | None:
        """One request line, within the whole-request deadline (a client
        trickling bytes cannot hold a thread forever). A line over the size
        limit is returned as soon as it is known to be too long."""
        deadline = time.monotonic() + self.server.request_timeout
        buf = b""
        while b"\n" not in buf and len(buf) <= MAX_REQUEST:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.connection.settimeout(left)
            try:
                chunk = self.connection.recv(65536)
            except (socket.timeout, OSError):
                return None
            if not chunk:
                break  # EOF: what came is the request (a truncated one fails to parse)
            buf += chunk
        return buf.split(b"\n", 1)[0] if b"\n" in buf else buf

    def _reply(self, msg: dict) -> None:
        try:
            self.wfile.write((json.dumps(msg, default=str) + "\n").encode())
        except OSError:
            pass
