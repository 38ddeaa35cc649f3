"""The control listeners: one JSON request per line, one JSON reply.

Who is asking comes from the kernel (SO_PEERCRED) on the local socket, never
from the request: uid 0 is admin, other peers map to the configured
[[user]]s by uid, user name or group, and anyone else is refused
(acctd/control/access.py). The optional TCP listener (NeTAMS service server)
always speaks TLS and checks each request's password. What a command may do
and at which level is in the registry (acctd/control/commands.py); serving
it is acctd/control/dispatch.py, shared by both listeners.
The socket is mode 0660, group "acctd" when that group exists.

Connections are bounded when they are accepted, before a byte of theirs is
read or a thread started: a Unix peer that is not root and no [[user]] is
answered "permission denied" and closed at once; a uid other than root
holds at most MAX_PER_UID connections, and the last ROOT_SLOTS of
MAX_CONNECTIONS are root's alone, so no user can lock root out.

Requests are bounded: a line over MAX_REQUEST bytes, nested deeper than
MAX_DEPTH, invalid UTF-8 or JSON, or an unknown command gets an error
reply; a request not complete within REQUEST_TIMEOUT is dropped, and so is
a reply the peer does not read within it. Every error reply carries a
code (acctd.errors.Code). The daemon carries on in every case, and what a
peer can provoke is logged once a minute at most (acctd.common.throttle).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import grp
import json
import logging
import os
import re
import socket
import socketserver
import struct
import threading
import time

from acctd.common.throttle import Throttle
from acctd.config.schema import Invalid, Table, choice, file_path, integer, secret_file, setting
from acctd.control.client import SOCKET_GROUP
from acctd.control.dispatch import Dispatcher, user_name
from acctd.errors import AcctError, BadRequest, Code, PermissionDenied, code_of

log = logging.getLogger("acctd.control")

DEFAULT_SOCKET = "/run/acctd/acctd.sock"
MAX_REQUEST = 64 * 1024
MAX_DEPTH = 32          # JSON nesting; json.loads would recurse into a RecursionError
REQUEST_TIMEOUT = 10.0
MAX_CONNECTIONS = 32    # open at once on the Unix socket, everyone together
MAX_PER_UID = 8         # open at once for one uid other than root
ROOT_SLOTS = 4          # the last of MAX_CONNECTIONS: root's alone
BACKLOG = socket.SOMAXCONN  # connections the kernel queues before accept (capped by net.core.somaxconn)


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

class Slots:
    """Connection slots: at most `total` open, at most `per_peer` for one
    peer (a uid, an address), and the last `reserved` only for a privileged
    one (root)."""

    def __init__(self, total: int, per_peer: int, reserved: int = 0):
        self.total, self.per_peer, self.reserved = total, per_peer, reserved
        self._held: dict[object, int] = {}
        self._lock = threading.Lock()

    def take(self, peer, who: str, privileged: bool = False) -> str | None:
        """None if a slot was taken; else why not."""
        with self._lock:
            mine, used = self._held.get(peer, 0), sum(self._held.values())
            if used >= self.total - (0 if privileged else self.reserved):
                kept = f", the last {self.reserved} kept for root" if self.reserved else ""
                return f"too many connections (max {self.total}{kept})"
            if not privileged and mine >= self.per_peer:
                return f"too many connections for {who} (max {self.per_peer})"
            self._held[peer] = mine + 1
            return None

    def give_back(self, peer) -> None:
        with self._lock:
            n = self._held.pop(peer) - 1
            if n:
                self._held[peer] = n


class _Listener:
    """What both listeners share: the dispatcher, the connection slots taken
    at accept (verify_request, in the accepting thread) and given back when
    the connection's thread ends."""

    dispatcher: Dispatcher
    slots: Slots
    throttled: Throttle   # what peers can provoke, logged once a minute at most

    def track(self, handler, info: dict | None) -> None:
        self.dispatcher.track(id(handler), info)

    def serve_in_thread(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, name="control", daemon=True)
        t.start()
        return t

    def verify_request(self, conn, client) -> bool:
        refusal = self.refusal(client)
        if refusal is None:
            return True
        code, text = refusal
        self.throttled.warning(f"refused {code}", "control: refused %s: %s", self.who(client), text)
        self.refuse(conn, code, text)
        return False  # socketserver closes it

    def process_request(self, conn, client) -> None:
        try:
            super().process_request(conn, client)
        except BaseException:  # no thread: nobody else gives the slot back
            self.slots.give_back(self.slot_of(client))
            raise

    def process_request_thread(self, conn, client) -> None:
        try:
            super().process_request_thread(conn, client)
        finally:
            self.slots.give_back(self.slot_of(client))


class ControlServer(_Listener, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The local Unix socket: peers identified by the kernel (SO_PEERCRED)
    when accepted; the client address handed along is that peer."""

    daemon_threads = True
    request_timeout = REQUEST_TIMEOUT
    request_queue_size = BACKLOG

    def __init__(self, path: str, dispatcher: Dispatcher):
        self.dispatcher = dispatcher
        self.slots = Slots(MAX_CONNECTIONS, MAX_PER_UID, ROOT_SLOTS)
        self.throttled = Throttle(log)
        socket_dir(path)
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
        self._inode = os.stat(path).st_ino

    def server_close(self) -> None:
        """Also removes the socket file, if it is still ours."""
        super().server_close()
        try:
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass

    def get_request(self):
        conn, _ = self.socket.accept()
        return conn, self._identify(conn)

    def _identify(self, conn) -> dict:
        """Who is on the other end: the kernel says; their level from the users now."""
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError as e:  # gone already
            return {"uid": -1, "who": "a peer", "refused": PermissionDenied(str(e))}
        pid, uid, gid = struct.unpack("3i", creds)
        name = user_name(uid)
        peer = {"pid": pid, "uid": uid, "gid": gid, "user": name,
                "who": f"uid {uid} ({name + ', ' if name != str(uid) else ''}pid {pid})"}
        try:
            peer["caller"] = self.dispatcher.peer(uid, gid)
        except PermissionDenied as e:
            peer["refused"] = e
        return peer

    def refusal(self, peer: dict) -> tuple[Code, str] | None:
        if "refused" in peer:
            return Code.PERMISSION, f"permission denied: {peer['refused']}"
        uid = peer["uid"]
        why = self.slots.take(uid, f"uid {uid}", privileged=uid == 0)
        return None if why is None else (Code.CONFLICT, why)

    @staticmethod
    def refuse(conn, code: Code, text: str) -> None:
        """The reply, never waiting: the accepting thread serves everyone."""
        try:
            conn.setblocking(False)
            conn.send(_line({"ok": False, "code": str(code), "error": text}))
        except OSError:
            pass

    @staticmethod
    def who(peer: dict) -> str:
        return peer["who"]

    @staticmethod
    def slot_of(peer: dict):
        return peer["uid"]

    def peer(self, handler) -> dict | None:
        return handler.client_address

    def serve_request(self, req: dict, peer: dict) -> object:
        caller = peer["caller"]
        if req.get("as") is not None:  # on someone's behalf: acctd/control/delegation.py
            caller = self.dispatcher.delegated(req["as"], caller)
        return self.dispatcher.handle(req, caller)


def socket_dir(path: str) -> None:
    """The socket's directory must exist; only the default one (the
    service's RuntimeDirectory, missing outside systemd) is created."""
    where = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(where):
        return
    if where != os.path.dirname(DEFAULT_SOCKET):
        raise AcctError(f"control socket {path}: directory {where} does not exist (create it, "
                        f"or leave --socket out for {DEFAULT_SOCKET})")
    os.makedirs(where, mode=0o755, exist_ok=True)


class TcpControlServer(_Listener, socketserver.ThreadingMixIn, socketserver.TCPServer):
    """The optional TCP listener (NeTAMS `service server`): TLS always, every
    request carries {"auth": {"user", "password"}} checked against the
    user's argon2id hash, `login = "localhost"` refuses non-loopback peers.
    Same commands, limits and levels as the Unix socket; a peer over
    max-conn is closed before TLS (a reply in clear would not reach it)."""

    daemon_threads = True
    allow_reuse_address = True
    request_timeout = REQUEST_TIMEOUT
    request_queue_size = BACKLOG

    def __init__(self, settings: ServerSettings, dispatcher: Dispatcher):
        import ssl
        self.dispatcher, self.settings = dispatcher, settings
        self.slots = Slots(settings.max_conn, settings.max_conn)
        self.throttled = Throttle(log)
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

    def refusal(self, client_address) -> tuple[Code, str] | None:
        if self.settings.login == "localhost":
            import ipaddress
            if not ipaddress.ip_address(client_address[0]).is_loopback:
                return Code.PERMISSION, 'not a loopback address (login = "localhost")'
        why = self.slots.take(None, "")  # per_peer = total: only the total counts
        return None if why is None else (Code.CONFLICT, why)

    @staticmethod
    def refuse(conn, code: Code, text: str) -> None:
        pass  # closed before TLS: nothing it could read

    @staticmethod
    def who(client_address) -> str:
        return client_address[0]

    @staticmethod
    def slot_of(client_address):
        return None  # max-conn counts every peer together

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
        return {"address": handler.client_address[0], "user": None,
                "who": handler.client_address[0]}

    def serve_request(self, req: dict, peer: dict) -> object:
        auth = req.get("auth")
        if not isinstance(auth, dict):
            raise PermissionDenied('the TCP listener needs "auth": {"user", "password"}')
        caller = self.dispatcher.password(str(auth.get("user", "")), str(auth.get("password", "")))
        return self.dispatcher.handle(req, caller)


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
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
        try:
            req = parse_request(line)
        except BadRequest as e:
            self.server.throttled.warning("bad request", "control: bad request from %s: %s", peer["who"], e)
            return self._fail(Code.BAD_REQUEST, str(e))
        try:
            self._reply({"ok": True, "result": self.server.serve_request(req, peer)})
        except Exception as e:  # a bug must cost one request, not the daemon
            code = code_of(e)
            if code == Code.INTERNAL:
                self.server.throttled.emit(logging.ERROR, f"internal {req.get('cmd')}",
                               "control request %r failed", req.get("cmd"), exc_info=True)
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
                if not buf:
                    return None  # gone without a word (a probe: is acctd running?)
                break  # EOF: what came is the request (a truncated one fails to parse)
            buf += chunk
        return buf.split(b"\n", 1)[0] if b"\n" in buf else buf

    def _reply(self, msg: dict) -> None:
        try:
            self.connection.settimeout(self.server.request_timeout)  # a peer that never reads
            self.wfile.write(_line(msg))
        except OSError:
            pass


def _line(msg: dict) -> bytes:
    return (json.dumps(msg, default=str) + "\n").encode()


# a JSON string (its brackets do not nest) or a bracket
_NESTING = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def parse_request(line: bytes) -> dict:
    """One request line as a JSON object; BadRequest says what is wrong.
    The nesting is measured before json.loads sees it."""
    if len(line) > MAX_REQUEST:
        raise BadRequest(f"request over {MAX_REQUEST} bytes")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"bad request: {e}") from None
    depth = 0
    for m in _NESTING.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise BadRequest(f"bad request: nested deeper than {MAX_DEPTH}")
        elif c in "]}":
            depth -= 1
    try:
        req = json.loads(text)
    except ValueError as e:
        raise BadRequest(f"bad request: {e}") from None
    if not isinstance(req, dict):
        raise BadRequest("bad request: expected a JSON object")
    return req
