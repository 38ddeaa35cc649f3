"""The local control socket: one JSON request per line, one JSON reply.

Who is asking comes from the kernel (SO_PEERCRED), never from the request:
uid 0 is admin, other peers map to the configured [[user]]s by uid, user
name or group, and anyone else is refused (acctd/control/access.py). Levels:
- viewer: reads (units, policies, list, stat, rates, status);
- operator: also changes state (flush, units, quotas, send report);
- admin: everything (attach/detach, reload, debug, schedules).
The socket is mode 0660, group "acctd" when that group exists.

Requests are bounded: a line over MAX_REQUEST bytes, invalid UTF-8 or JSON,
or an unknown command gets an error reply; a request not complete within
REQUEST_TIMEOUT is dropped, and so is a connection over MAX_CONNECTIONS.
The daemon carries on in every case.

The client is acctd.control.server.client; the report queries are
acctd.store.queries.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import grp
import json
import logging
import os
import pwd
import socket
import socketserver
import struct
import threading
import time

from acctd.config.schema import Invalid, Table, choice, file_path, integer, secret_file, setting
from acctd.control.access import LEVELS, Access
from acctd.errors import AcctError
from acctd.store.queries import (filter_units, report_list, report_policies, report_stat,
                                 report_units)

log = logging.getLogger("acctd.control")

DEFAULT_SOCKET = "/run/acctd/acctd.sock"
MAX_REQUEST = 64 * 1024
REQUEST_TIMEOUT = 10.0
MAX_CONNECTIONS = 32
SOCKET_GROUP = "acctd"

# The least level each command needs.
COMMAND_LEVEL = {"units": "viewer", "policies": "viewer", "list": "viewer", "stat": "viewer",
                 "status": "viewer", "rates": "viewer", "flush": "operator", "reload": "admin", "debug": "admin",
                 "users": "admin", "config": "admin", "connections": "admin", "rotate": "admin", "schedule-list": "viewer",
                 "schedule-add": "operator", "schedule-del": "operator", "sys": "operator",
                 "quota-set": "operator", "quota-show": "viewer", "alerter": "viewer",
                 "send-report": "operator", "session-start": "operator",
                 "session-stop": "operator", "session-list": "viewer",
                 "session-kill-expired": "operator", "blocked": "viewer",
                 "login-set": "operator", "login": "operator", "logout": "operator",
                 "login-show": "viewer", "unit-add": "operator", "unit-del": "operator",
                 "mac-check": "viewer", "mac-fixate": "operator",
                 # the daemon reads the named files: as root, so admins only
                 "fticks-import": "admin", "fticks-report": "viewer", "radius-import": "operator",
                 "openvpn-event": "operator", "openvpn-interval": "operator",
                 "openvpn-clients": "viewer"}
SECRET_KEYS = ("password", "secret", "token", "key")


def require(cmd: str, level: str, who: str) -> str:
    need = COMMAND_LEVEL.get(cmd, "admin")
    if LEVELS.index(level) < LEVELS.index(need):
        raise PermissionError(f"{cmd!r} needs level {need}; {who} is {level}")
    return level


def config_text(path: str, unsecure: bool = False) -> str:
    """The config file as loaded, every secret masked unless asked not to."""
    import re
    with open(path) as f:
        text = f.read()
    if unsecure:
        return text
    keys = "|".join(SECRET_KEYS)
    return re.sub(rf'(?im)^(\s*[\w-]*(?:{keys})[\w-]*\s*=\s*).*$', r'\1"********"', text)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def request_from_argv(argv: list[str]) -> dict:
    """A scheduled command line (acctctl words) as a control request."""
    if not argv:
        raise ValueError("empty command")
    cmd, rest = argv[0], argv[1:]
    if cmd in ("flush", "reload", "units", "policies", "status"):
        return {"cmd": cmd, "args": {}}
    if cmd == "list" and len(rest) == 1:
        return {"cmd": "list", "args": {"unit": rest[0]}}
    if cmd == "stat" and len(rest) in (1, 2):
        return {"cmd": "stat", "args": {"unit": rest[0], "period": (rest[1:] or ["week"])[0]}}
    if cmd == "debug" and rest and rest[0] in ("on", "off"):
        return {"cmd": "debug", "args": {"on": rest[0] == "on", "category": (rest[1:] or [None])[0]}}
    if cmd == "session" and rest == ["kill-expired"]:
        return {"cmd": "session-kill-expired", "args": {}}
    if cmd == "send" and rest[:1] == ["report"]:
        from acctd.services import reports
        return {"cmd": "send-report", "args": reports.parse(rest[1:]).to_args()}
    raise ValueError(f"cannot schedule {' '.join(argv)!r}: use flush, reload, units, policies, "
                     "status, list UNIT, stat UNIT [week|month], debug on|off [CATEGORY], "
                     "session kill-expired or send report [to {owner}|admin|ADDRESS ...] [on UNIT[+] ...] [period day|week]")


class ScheduleRunner:
    """Runs due schedule entries on a worker thread, one at a time, each
    command with the permissions its owner has *now* (a removed or demoted
    user loses the power); the first failure ends the entry's && chain."""

    def __init__(self, server: "ControlServer"):
        import queue
        self.server = server
        self.queue: "queue.Queue" = queue.Queue()
        self.thread = threading.Thread(target=self._work, name="schedule", daemon=True)
        self.thread.start()

    def __call__(self, entry) -> None:
        self.queue.put(entry)

    def _work(self) -> None:
        while True:
            entry = self.queue.get()
            uid = entry.owner.uid
            gid = pwd.getpwuid(uid).pw_gid if uid in {p.pw_uid for p in pwd.getpwall()} else -1
            level = None
            if uid < 0:  # a TCP user: whatever level that user has now
                users = self.server.acctd.cfg.users
                level = next((u.level for u in users if u.name == entry.owner.name), "none")
            for argv in entry.commands:
                try:
                    if level == "none":
                        raise PermissionError(f"user {entry.owner.name} no longer exists")
                    self.server.handle(request_from_argv(argv), uid, gid, entry.owner.name, level)
                    log.info("schedule %s: %s done", entry.oid, " ".join(argv))
                except Exception as e:
                    log.error("schedule %s: %s failed: %s", entry.oid, " ".join(argv), e)
                    break


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


# -- server --------------------------------------------------------------------------

class _Dispatch:
    """What both listeners share: the commands, the levels, the list of
    connections. Subclasses say who the peer is (`peer`) and how a request
    proves it (`serve_request`)."""

    acctd = None
    flushes = None

    def connections(self) -> list[dict]:
        with self._conns_lock:
            return sorted(self._conns.values(), key=lambda c: c["since"])

    def track(self, handler, info: dict | None) -> None:
        with self._conns_lock:
            if info is None:
                self._conns.pop(id(handler), None)
            else:
                self._conns[id(handler)] = info

    def serve_in_thread(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, name="control", daemon=True)
        t.start()
        return t

    def handle(self, req: dict, uid: int = 0, gid: int = 0, user: str | None = None,
               level: str | None = None) -> object:
        """Serve one request. Unix peers come with uid/gid (SO_PEERCRED);
        TCP users (uid -1) with the name and level their password proved."""
        d = self.acctd
        cmd = req.get("cmd")
        args = req.get("args") or {}
        if not isinstance(cmd, str) or not isinstance(args, dict):
            raise ValueError('expected {"cmd": "...", "args": {...}}')
        access = Access(getattr(d.cfg, "users", ()))  # users follow reloads
        if level is None:
            level = require(cmd, access.of_peer(uid, gid), f"uid {uid}")
        else:
            require(cmd, level, f"user {user}")
        who = user or _user_name(uid)
        if cmd == "flush":
            return self.flushes.request()
        if cmd == "status":
            return d.status()
        if cmd == "rates":
            return d.rates_snapshot()
        if cmd == "users":
            return [{"name": u.name, "level": u.level, "uid": u.uid, "unix_user": u.unix_user,
                     "unix_group": u.unix_group} for u in d.cfg.users]
        if cmd == "config":
            return {"path": d.cfg.path, "text": config_text(d.cfg.path, bool(args.get("unsecure")))}
        if cmd == "schedule-list":
            return d.scheduler.list()
        if cmd == "schedule-add":
            from acctd.services.scheduler import parse_schedule, split_action
            spec = parse_schedule(str(args.get("spec", "")))
            for argv in split_action(spec.action):  # refused now, not at 3 a.m.
                request_from_argv(argv)
            e = d.scheduler.add(spec, (uid, who))
            return {"oid": e.oid, "due": e.due.isoformat()}
        if cmd == "schedule-del":
            oid = str(args.get("oid", ""))
            entry = d.scheduler.get(oid)  # unknown oid: an error naming it
            if (entry.owner.uid, entry.owner.name) != (uid, who) and level != "admin":
                raise PermissionError(f"schedule {oid} belongs to {entry.owner.name}; only it or an "
                                      "admin may delete it")
            d.scheduler.delete(oid)
            return {"deleted": oid}
        if cmd == "reload":
            self.flushes.ask_reload()
            return {"reload": "requested"}
        if cmd == "debug":
            from acctd.daemon import log as acctd_log
            return acctd_log.set_debug(bool(args.get("on")), args.get("category"))
        if cmd == "units":
            rows = report_units(d.cfg, getattr(d, "units", None))
            if d.storage is not None:
                from acctd.model import sys_policy
                bits = d.syspolicy_bits()
                for i, row in enumerate(rows):
                    row["sys_policy"] = sys_policy.words(bits.get(i, 0))
            return filter_units(rows, args)
        if cmd == "alerter":
            if d.mailer is None:
                raise AcctError("no [alerter] in the configuration: mail is off")
            return [dataclasses.asdict(r) for r in d.mailer.queue()]
        if cmd == "send-report":
            from acctd.services import reports
            return d.send_reports(reports.Request.from_args(args))
        if cmd == "quota-set":
            return d.set_quota([str(a) for a in args.get("argv", [])])
        if cmd == "quota-show":
            return d.show_quota(args.get("unit"), bool(args.get("list")))
        if cmd == "session-start":
            return d.session_start(str(args.get("user", "")), args.get("ip"), args.get("port"),
                                   args.get("nas"), args.get("mac"))
        if cmd == "session-stop":
            return d.session_stop(str(args.get("user", "")), str(args.get("cause") or "user-request"))
        if cmd == "session-list":
            return d.session_list(bool(args.get("open")), args.get("user"), args.get("limit", 100))
        if cmd == "session-kill-expired":
            return d.kill_expired()
        if cmd == "login-set":
            return d.login_set(str(args.get("unit", "")), [str(w) for w in args.get("words", [])])
        if cmd in ("login", "logout"):
            return d.login_unit(str(args.get("unit", "")), str(args.get("password", "")),
                                args.get("ip"), args.get("mac"), out=cmd == "logout")
        if cmd == "login-show":
            return d.show_login(args.get("unit"))
        if cmd == "unit-add":
            return d.unit_add(str(args.get("kind", "")), str(args.get("name", "")), args.get("ip"),
                              tuple(args.get("parents") or ()), str(args.get("email") or ""))
        if cmd == "unit-del":
            return d.unit_del(str(args.get("name", "")))
        if cmd == "mac-check":
            return d.mac_check()
        if cmd == "mac-fixate":
            return d.mac_fixate(bool(args.get("overwrite")))
        if cmd == "fticks-import":
            return d.fticks_import([str(p) for p in args.get("paths", [])])
        if cmd == "fticks-report":
            return d.fticks_report(args.get("since"))
        if cmd == "radius-import":
            return d.radius_import(list(args.get("sessions", [])))
        if cmd == "openvpn-event":
            return d.openvpn_hook(dict(args.get("event") or {}))
        if cmd == "openvpn-interval":
            if d.openvpn is None:
                raise AcctError("no [openvpn] management interface configured")
            secs = args.get("seconds")
            d.openvpn.set_interval(str(args.get("user", "")), int(secs) if secs else None)
            return {"user": args.get("user"), "interval": d.openvpn.interval(str(args.get("user")))}
        if cmd == "openvpn-clients":
            if d.openvpn is None:
                raise AcctError("no [openvpn] management interface configured")
            return [{"user": c.common_name, "cid": c.cid, "vpn_addr": c.vpn_addr,
                     "bytes_in": c.bytes_in, "bytes_out": c.bytes_out} for c in d.openvpn.clients()]
        if cmd == "blocked":
            with d.lock:
                return d.blocked()
        if cmd == "sys":
            return d.set_syspolicy(str(args.get("unit", "")), str(args.get("policy", "")))
        if cmd == "connections":
            return self.connections()
        if cmd == "rotate":
            if args.get("what") == "flowlog":
                return d.rotate_flowlog()
            from acctd.daemon import log as acctd_log
            return acctd_log.rotate()
        if cmd == "policies":
            return report_policies(d.cfg)
        if cmd == "list":
            with d.lock:
                return report_list(d.storage, d.cfg, str(args.get("unit", "")), d.clock(),
                                   d.checks, d.matches)
        if cmd == "stat":
            with d.lock:
                return report_stat(d.storage, d.cfg, str(args.get("unit", "")),
                                   str(args.get("period", "week")), d.clock())
        raise AcctError(f"unknown command {cmd!r}")


class ControlServer(_Dispatch, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The local Unix socket: peers identified by the kernel (SO_PEERCRED)."""

    daemon_threads = True

    request_timeout = REQUEST_TIMEOUT

    def __init__(self, path: str, daemon, flushes):
        self.acctd, self.flushes = daemon, flushes
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._conns: dict[int, dict] = {}  # id(handler) -> who and since when
        self._conns_lock = threading.Lock()
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
        return {"pid": pid, "uid": uid, "gid": gid, "user": _user_name(uid)}

    def serve_request(self, req: dict, peer: dict) -> object:
        return self.handle(req, peer["uid"], peer["gid"])

class TcpControlServer(_Dispatch, socketserver.ThreadingMixIn, socketserver.TCPServer):
    """The optional TCP listener (NeTAMS `service server`): TLS always, every
    request carries {"auth": {"user", "password"}} checked against the
    user's argon2id hash, `login = "localhost"` refuses non-loopback peers.
    Same commands, limits and levels as the Unix socket."""

    daemon_threads = True
    allow_reuse_address = True
    request_timeout = REQUEST_TIMEOUT

    def __init__(self, settings, daemon, mailbox):
        import ssl
        self.acctd, self.flushes, self.settings = daemon, mailbox, settings
        self.slots = threading.BoundedSemaphore(settings.max_conn)
        self._conns: dict[int, dict] = {}
        self._conns_lock = threading.Lock()
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
            raise PermissionError('the TCP listener needs "auth": {"user", "password"}')
        name, password = str(auth.get("user", "")), str(auth.get("password", ""))
        level = Access(self.acctd.cfg.users).by_password(name, password)
        return self.handle(req, -1, -1, name, level)


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        if not self.server.slots.acquire(blocking=False):
            return self._reply({"ok": False, "error": f"too many connections (max {MAX_CONNECTIONS})"})
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
            return self._reply({"ok": False, "error": f"request over {MAX_REQUEST} bytes"})
        try:
            req = json.loads(line.decode("utf-8"))
            if not isinstance(req, dict):
                raise ValueError("expected a JSON object")
        except (UnicodeDecodeError, ValueError) as e:
            return self._reply({"ok": False, "error": f"bad request: {e}"})
        try:
            self._reply({"ok": True, "result": self.server.serve_request(req, peer)})
        except PermissionError as e:
            self._reply({"ok": False, "error": f"permission denied: {e}"})
        except (AcctError, ValueError, TimeoutError, RuntimeError) as e:
            self._reply({"ok": False, "error": str(e)})
        except Exception as e:  # a bug must cost one request, not the daemon
            log.exception("control request %r failed", req.get("cmd"))
            self._reply({"ok": False, "error": f"internal error: {e}"})

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
