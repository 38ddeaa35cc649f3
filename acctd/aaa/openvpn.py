"""OpenVPN accounting: sessions of user units from an OpenVPN server, through
its management interface or, for servers without one, its
client-connect/client-disconnect scripts (`acctctl openvpn-hook`).

The user unit is named by the client's certificate common name; its
session address is the VPN address the server gave it
(ifconfig_pool_remote_ip, else ifconfig_pool_remote_ip6).

What OpenVPN 2.6 tells a management client, and what acctd makes of it
----------------------------------------------------------------------
- `>CLIENT:ESTABLISHED,CID` + ENV block: the client is up with its VPN
  address: a session starts (on_start).
- `>BYTECOUNT_CLI:CID,IN,OUT` after `bytecount N`: the client instance's
  link counters since it connected. OpenVPN prints one only when a packet
  *from* that client arrives at least N whole seconds after its previous
  one, so an idle client gets none (the status poll covers it).
- `>CLIENT:DISCONNECT,CID` + ENV (bytes_sent, bytes_received,
  time_duration): printed ONLY when the server runs with
  --management-client-auth (OpenVPN sends it for clients that went through
  >CLIENT:CONNECT). Without it, a client that leaves simply vanishes from
  `status 3`, so acctd polls `status 3` every status-interval seconds; the
  server keeps a leaving client listed, its counters frozen, for the 5 s of
  its delayed exit, so a poll interval of at most 5 s still sees the final
  counters of a client that said goodbye (explicit-exit-notify) or was
  killed. The stop time is when the poll noticed.
- `>CLIENT:CONNECT,CID,KID` / `>CLIENT:REAUTH,CID,KID` + ENV
  (--management-client-auth): the server waits for `client-auth-nt` or
  `client-deny`; a blocked unit is denied (the client sees AUTH_FAILED and
  exits unless it has --auth-retry). Certificate-only clients need
  --auth-user-pass-optional on such a server.
- `>HOLD:` (--management-hold): released once bytecount is set, so no
  client connects before acctd listens.
- The same common name may reconnect before its old instance is gone:
  sessions are keyed by client id (CID), never by name.

Counters are the unit's view, as everywhere in acctd: bytes_in = towards the
client = OpenVPN's bytes sent (BYTECOUNT_CLI's second number), bytes_out =
from the client = OpenVPN's bytes received (the first), both cumulative
since the client connected. They are transport-level bytes, not tunnel
bytes: each data packet costs its tunnel IP length plus 24 bytes with
AES-256-GCM (opcode+peer-id 4, packet-id 4, tag 16), and the TLS control
channel and keepalive pings count too.

Per-client interim intervals (the accounting-server behaviour of the
OPENVPN_PLUGIN_ACCOUNTING proposal, which never landed in OpenVPN):
`bytecount` is global, so acctd asks at the GCD of all intervals in use and
passes a report on only when the client's own interval has elapsed,
counted in whole seconds as OpenVPN counts them; set_interval() changes a
client's interval while it is connected, from its next report on.

Threading: ManagementClient runs one background thread that reads, answers
client-auth requests, polls and reconnects with backoff. Callbacks run on
that thread, never under its lock; is_blocked runs while the server waits
for an answer, so it must be quick. kill() and set_interval() may be called
from any thread, callbacks included.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import logging
import math
import os
import socket
import threading
import time
import types
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from acctd.common import durable
from acctd.config.schema import Check, Invalid, Table, file_path, setting, table_of
from acctd.errors import BadRequest
from acctd.services.contract import Core, Service

log = logging.getLogger("acctd.openvpn")

INTERVAL_MIN = 1
INTERVAL_MAX = 86400
DEFAULT_INTERVAL = 60   # the plugin proposal: "a default value of 60 second"
DEFAULT_STATUS_INTERVAL = 5.0      # the server's delayed exit: see the module doc
DEFAULT_BACKOFF = 1.0
DEFAULT_BACKOFF_MAX = 60.0
CONNECT_TIMEOUT = 10.0
DENY_REASON = "blocked by acctd"   # in the server's log
DENY_CLIENT_REASON = "access blocked"  # the client sees AUTH_FAILED,access blocked
PASSWORD_PROMPT = "ENTER PASSWORD:"
MULTILINE = ("status", "version", "help")  # commands whose reply ends with END
ENV_KINDS = ("CLIENT:CONNECT", "CLIENT:REAUTH", "CLIENT:ESTABLISHED", "CLIENT:DISCONNECT",
             "CLIENT:CR_RESPONSE")
STATUS_COLUMNS = {"cn": "Common Name", "real": "Real Address", "addr": "Virtual Address",
                  "addr6": "Virtual IPv6 Address", "received": "Bytes Received",
                  "sent": "Bytes Sent", "since": "Connected Since (time_t)", "cid": "Client ID"}


# --- settings ----------------------------------------------------------------------

def _interval(key: str, v: Any) -> int:
    """Whole seconds; 0 turns interims off ("a value of 0 will disable
    accounting information to be sent", the plugin proposal)."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{key}: expected whole seconds, got {v!r}")
    if v != 0 and not INTERVAL_MIN <= v <= INTERVAL_MAX:
        raise ValueError(f"{key}: must be 0 (no interims) or {INTERVAL_MIN}-{INTERVAL_MAX} "
                         f"seconds, got {v}")
    return v


def _interval_check(v, ctx) -> int:
    try:
        return _interval("", v)
    except ValueError as e:
        raise Invalid(str(e).removeprefix(": ")) from None


def _seconds(allow_zero: bool = False) -> Check:
    def check(v, ctx) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
            raise Invalid(f"expected seconds, got {v!r}")
        if v < 0 or (v == 0 and not allow_zero) or v > INTERVAL_MAX:
            low = "0" if allow_zero else "more than 0"
            raise Invalid(f"must be {low} and at most {INTERVAL_MAX} seconds, got {v}")
        return float(v)
    return check


def parse_management(text: Any, base: str | os.PathLike = ".") -> tuple:
    """"127.0.0.1:7505", "[::1]:7505", "localhost:7505" -> ("tcp", host, port);
    "unix:/run/openvpn/mgmt.sock" -> ("unix", path), relative paths taken
    relative to `base`. The host must be an address or localhost: a config
    check never waits for DNS."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"expected \"HOST:PORT\" or \"unix:PATH\", got {text!r}")
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise ValueError("unix: needs a socket path")
        return ("unix", str(Path(base, path)))
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected \"HOST:PORT\" or \"unix:PATH\", got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IP address or localhost") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"port must be 1-65535, got {port!r}")
    return ("tcp", host, int(port))


def read_password_file(path: str, key: str = "password-file:") -> str:
    """The management password: the file's first line, as OpenVPN reads it
    (acctd.common.secret_files: an owner-only file)."""
    from acctd.common.secret_files import read_private
    first = read_private(path, key).decode("utf-8").split("\n", 1)[0].rstrip("\r")
    if not first:
        raise ValueError(f"{key} {path}: the first line is empty".lstrip())
    return first


def _password_file(v, ctx) -> str:
    p = file_path("a path to the management password")(v, ctx)
    try:
        read_password_file(p, "")
    except ValueError as e:
        raise Invalid(str(e).strip()) from None
    return p


@dataclasses.dataclass(frozen=True)
class OpenVpnSettings(Table):
    """An [openvpn] table. management None: script mode only (no client)."""
    # ("tcp", host, port) | ("unix", path)
    management: tuple | None = setting(None, check=lambda v, ctx: parse_management(v, ctx.base_dir))
    password_file: str | None = setting(None, check=_password_file)
    interim_interval: int = setting(DEFAULT_INTERVAL, check=_interval_check)
    intervals: Mapping[str, int] = setting(   # common name -> seconds
        default_factory=lambda: types.MappingProxyType({}),
        check=table_of(_interval_check, "a table of common name = seconds"))
    # 0: only after (re)connecting
    status_interval: float = setting(DEFAULT_STATUS_INTERVAL, check=_seconds(allow_zero=True))
    reconnect_backoff: float = setting(DEFAULT_BACKOFF, check=_seconds())   # first retry, doubling
    reconnect_backoff_max: float = setting(DEFAULT_BACKOFF_MAX, check=_seconds())

    def finish(self, ctx) -> "OpenVpnSettings":
        if self.reconnect_backoff_max < self.reconnect_backoff:
            raise Invalid(f"{self.reconnect_backoff_max:g} is less than reconnect-backoff "
                          f"({self.reconnect_backoff:g})", "reconnect-backoff-max")
        return self

    def password(self) -> str | None:
        return read_password_file(self.password_file) if self.password_file else None


# --- the management protocol: lines into messages -----------------------------------

class Prompt(NamedTuple):
    text: str                          # "ENTER PASSWORD:" (no newline follows)


class Notification(NamedTuple):
    """A real-time message: ">KIND:ARGS". CLIENT:* and BYTECOUNT_CLI args are
    split at commas; other kinds keep their text as one argument."""
    kind: str
    args: tuple[str, ...]
    env: Mapping[str, str] | None = None


class Reply(NamedTuple):
    command: str | None                # what it answers (None: unsolicited)
    lines: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return bool(self.lines) and not self.lines[0].startswith("ERROR")


class ProtocolError(Exception):
    pass


def _command_kind(command: str) -> str:
    word = command.split(None, 1)[0] if command.strip() else ""
    return "multi" if word in MULTILINE else "single"


class Parser:
    """Management-interface output into Prompt, Notification and Reply
    messages. Notifications may arrive between any two lines, even within a
    multi-line reply; an ENV block is never split. Replies are matched to
    commands in the order they were sent (expect() each one as it goes out)."""

    def __init__(self):
        self._buf = b""
        self._pending: deque[str] = deque()
        self._reply: list[str] = []
        self._env_head: tuple[str, tuple[str, ...]] | None = None
        self._env: dict[str, str] = {}

    def expect(self, command: str) -> None:
        self._pending.append(command)

    def pending(self, word: str) -> bool:
        """Is a `word` command sent and not yet answered?"""
        return any(c.split(None, 1)[:1] == [word] for c in self._pending)

    def feed(self, data: bytes) -> list:
        self._buf += data
        out: list = []
        *lines, self._buf = self._buf.split(b"\n")
        for raw in lines:
            self._line(raw.decode("utf-8", "replace").rstrip("\r"), out)
        if self._buf.decode("utf-8", "replace") == PASSWORD_PROMPT:
            self._buf = b""
            out.append(Prompt(PASSWORD_PROMPT))
        elif len(self._buf) > 1 << 20:
            raise ProtocolError("a line longer than 1 MiB from the management interface")
        return out

    def _line(self, line: str, out: list) -> None:
        if line.startswith(">"):
            kind, _, rest = line[1:].partition(":")
            if kind == "CLIENT":
                sub, _, rest = rest.partition(",")
                kind = f"CLIENT:{sub}"
                if kind == "CLIENT:ENV":
                    if self._env_head is None:
                        log.debug("ENV line outside a CLIENT block ignored")
                    elif rest == "END":
                        out.append(Notification(*self._env_head, types.MappingProxyType(self._env)))
                        self._env_head, self._env = None, {}
                    else:
                        k, _, v = rest.partition("=")
                        self._env[k] = v
                    return
                args = tuple(rest.split(",")) if rest else ()
                if kind in ENV_KINDS:
                    self._env_head, self._env = (kind, args), {}
                    return
                out.append(Notification(kind, args))
            elif kind == "BYTECOUNT_CLI":
                out.append(Notification(kind, tuple(rest.split(","))))
            else:
                out.append(Notification(kind, (rest,)))
            return
        command = self._pending[0] if self._pending else None
        if command is not None and _command_kind(command) == "multi":
            if not self._reply and line.startswith("ERROR"):
                self._pending.popleft()
                out.append(Reply(command, (line,)))
                return
            self._reply.append(line)
            if line == "END":
                self._pending.popleft()
                out.append(Reply(command, tuple(self._reply)))
                self._reply = []
            return
        if command is not None:
            self._pending.popleft()
        out.append(Reply(command, (line,)))

    def prompt_answers_password(self) -> bool:
        """A Prompt while the password is still unanswered means it was wrong."""
        if self._pending and self._pending[0] == PASSWORD_PROMPT:
            self._pending.popleft()
            return True
        return False


def parse_status(lines: tuple[str, ...] | list[str]) -> list[dict]:
    """`status 3` (tabs) or `status 2` (commas) into one dict per CLIENT_LIST
    row, named by its HEADER: cn, real, addr, addr6 (may be ""), received,
    sent (ints), since (time_t), cid (int)."""
    header: dict[str, int] | None = None
    rows = []
    for line in lines:
        sep = "\t" if "\t" in line else ","
        f = line.split(sep)
        if f[0] == "HEADER" and len(f) > 1 and f[1] == "CLIENT_LIST":
            header = {name: i - 1 for i, name in enumerate(f[1:], 1)}
        elif f[0] == "CLIENT_LIST":
            if header is None:
                raise ProtocolError("CLIENT_LIST before its HEADER")
            get = {k: f[header[col]] if header.get(col, len(f)) < len(f) else ""
                   for k, col in STATUS_COLUMNS.items()}
            try:
                rows.append({"cn": get["cn"], "real": get["real"], "addr": get["addr"],
                             "addr6": get["addr6"], "received": int(get["received"]),
                             "sent": int(get["sent"]), "since": int(get["since"]),
                             "cid": int(get["cid"])})
            except ValueError:
                raise ProtocolError(f"unreadable CLIENT_LIST row: {line!r}") from None
    return rows


def _quote(s: str) -> str:
    """A management-command argument: double quotes, backslash escapes."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- the pure core: clients, intervals, blocking -------------------------------------

@dataclasses.dataclass
class VpnClient:
    """One connected OpenVPN client instance (one session)."""
    cid: int
    common_name: str
    addr: str                   # ifconfig_pool_remote_ip, "" if none
    addr6: str                  # ifconfig_pool_remote_ip6, "" if none
    real_addr: str              # trusted_ip (or trusted_ip6)
    real_port: int | None
    start: float                # time_unix: when OpenVPN established it
    bytes_in: int = 0           # towards the client (OpenVPN's bytes sent)
    bytes_out: int = 0          # from the client (OpenVPN's bytes received)
    reported: int = 0           # whole second of the last interim (or the start)
    killed: bool = False

    @property
    def vpn_addr(self) -> str:
        return self.addr or self.addr6


class Event(NamedTuple):
    """What the core tells the caller; args as the matching callback takes them:
    start (common_name, vpn_addr, real_addr, cid, time),
    interim (common_name, cid, bytes_in, bytes_out, time),
    stop (common_name, cid, bytes_in, bytes_out, duration, time)."""
    kind: str
    args: tuple


def ask_blocked(is_blocked: Callable[[str], bool] | None, common_name: str) -> bool:
    if is_blocked is None:
        return False
    try:
        return bool(is_blocked(common_name))
    except Exception:  # a broken callback must not lock every client out
        log.exception("is_blocked(%r) failed; allowing", common_name)
        return False


def _int(env: Mapping[str, str], key: str) -> int | None:
    try:
        return int(env[key])
    except (KeyError, ValueError):
        return None


class Tracker:
    """The management client's state machine, without sockets or threads:
    messages in, (commands to send, events) out. `now` is the caller's clock
    (Unix seconds)."""

    def __init__(self, interim_interval: int = DEFAULT_INTERVAL,
                 intervals: Mapping[str, int] | None = None,
                 is_blocked: Callable[[str], bool] | None = None,
                 check_login: Callable[[str, str], str | None] | None = None):
        self.default = _interval("interim-interval", interim_interval)
        self.configured = dict(intervals or {})
        self.overrides: dict[str, int] = {}
        self.is_blocked = is_blocked
        # (username, password) -> why they may not connect, None when they may
        self.check_login = check_login
        self._login: tuple[str | None] | None = None    # its answer asked beforehand
        self.clients: dict[int, VpnClient] = {}
        self.refused: set[int] = set()      # established while blocked: killed, never started
        self.attached = False
        self.synced = False                 # the first status reply after attaching is in
        self.asked: int | None = None       # the bytecount interval OpenVPN has
        self.client_auth = False            # seen a >CLIENT:CONNECT
        self._verdicts: Mapping[str, bool] | None = None

    # intervals

    def interval(self, common_name: str) -> int:
        return self.overrides.get(common_name, self.configured.get(common_name, self.default))

    def base_interval(self) -> int:
        """What OpenVPN is asked for: the GCD of every interval in use, so each
        client's interval is a whole number of reports (0s drop out of a GCD;
        all 0 is `bytecount 0`, which stops the reports)."""
        return math.gcd(self.default, *{**self.configured, **self.overrides}.values())

    def _bytecount(self) -> list[str]:
        base = self.base_interval()
        if not self.attached or base == self.asked:
            return []
        self.asked = base
        return [f"bytecount {base}"]

    def set_interval(self, common_name: str, seconds: int | None) -> list[str]:
        """Change a client's interval (None: back to the configuration); its
        next report is due `seconds` after its last one."""
        if seconds is None:
            self.overrides.pop(common_name, None)
        else:
            self.overrides[common_name] = _interval(f"interval of {common_name}", seconds)
        return self._bytecount()

    def _due(self, c: VpnClient, now: float) -> bool:
        every = self.interval(c.common_name)
        return every > 0 and int(now) - c.reported >= every

    # blocking

    def blocked(self, common_name: str) -> bool:
        if self._verdicts is not None and common_name in self._verdicts:
            return self._verdicts[common_name]
        return ask_blocked(self.is_blocked, common_name)

    @staticmethod
    def names(msg) -> list[str]:
        """The common names handling `msg` asks is_blocked about, so a caller
        can ask first, outside its locks (verdicts= of handle())."""
        if isinstance(msg, Notification) and msg.kind in (
                "CLIENT:CONNECT", "CLIENT:REAUTH", "CLIENT:ESTABLISHED"):
            env = msg.env or {}
            return [env.get("common_name") or env.get("username", "")]
        if isinstance(msg, Reply) and msg.command and msg.command.startswith("status") and msg.ok:
            try:
                return sorted({r["cn"] for r in parse_status(msg.lines)})
            except ProtocolError:
                return []
        return []

    def kill(self, common_name: str) -> list[str]:
        """client-kill every instance of `common_name` not yet killed. The
        server restarts the client (RESTART), whose reconnect is refused
        while the unit stays blocked; the session stops when the server
        reports the instance gone, with its final counters."""
        cmds = []
        for c in self.clients.values():
            if c.common_name == common_name and not c.killed:
                c.killed = True
                cmds.append(f"client-kill {c.cid}")
        return cmds

    # the connection

    def attach(self) -> list[str]:
        """The management interface greeted us: ask for byte counts and list
        the clients (resync)."""
        self.attached, self.synced, self.asked = True, False, None
        return self._bytecount() + ["status 3"]

    def detach(self) -> None:
        """The connection is gone; sessions stay open until a status shows
        whether their clients are."""
        self.attached = self.synced = False
        self.asked = None

    # messages

    def handle(self, msg, now: float, verdicts: Mapping[str, bool] | None = None,
               login: tuple[str | None] | None = None) -> tuple[list[str], list[Event]]:
        """One message in; commands to send and events out. verdicts: is_blocked
        answers asked beforehand (for names(msg)); None: ask is_blocked now.
        login: (ask_login(msg),) asked beforehand; None: ask now."""
        self._verdicts, self._login = verdicts, login
        try:
            return self._handle(msg, now)
        finally:
            self._verdicts = self._login = None

    def ask_login(self, msg) -> str | None:
        """Why a CLIENT:CONNECT's username and password are refused (None: they
        are not, or there is no check_login). Before is_blocked: a login
        lifts the unit's login block."""
        if self.check_login is None or not isinstance(msg, Notification) or \
                msg.kind != "CLIENT:CONNECT":
            return None
        env = msg.env or {}
        name = env.get("username") or env.get("common_name", "")
        try:
            return self.check_login(name, env.get("password", ""))
        except Exception:  # noqa: BLE001 - fail closed: a broken check lets nobody in
            log.exception("check_login(%r) failed; refusing", name)
            return "login check failed"

    def _handle(self, msg, now: float) -> tuple[list[str], list[Event]]:
        if isinstance(msg, Notification):
            return self._notification(msg, now)
        if isinstance(msg, Reply):
            if msg.command and msg.command.startswith("status"):
                if msg.ok:
                    return self.resync(parse_status(msg.lines), now)
                log.warning("status: %s", msg.lines[0])
            elif not msg.ok:
                log.warning("%s: %s", (msg.command or "?").split()[0], msg.lines[0])
        return [], []

    def _notification(self, n: Notification, now: float) -> tuple[list[str], list[Event]]:
        kind, args, env = n.kind, n.args, n.env or {}
        if kind == "INFO":
            return (self.attach(), []) if not self.attached else ([], [])
        if kind == "HOLD":
            return ["hold release"], []
        if kind in ("CLIENT:CONNECT", "CLIENT:REAUTH"):
            self.client_auth = True
            cid, kid = args[0], args[1]
            cn = env.get("common_name") or env.get("username", "")
            why = self._login[0] if self._login is not None else self.ask_login(n)
            if why:
                log.info("%s refused (cid %s): %s", cn, cid, why)
                return [f"client-deny {cid} {kid} {_quote(why)} {_quote(why)}"], []
            if self.blocked(cn):
                log.info("%s refused (cid %s): unit blocked", cn, cid)
                return [f"client-deny {cid} {kid} {_quote(DENY_REASON)} "
                        f"{_quote(DENY_CLIENT_REASON)}"], []
            return [f"client-auth-nt {cid} {kid}"], []
        if kind == "CLIENT:ESTABLISHED":
            return self._established(int(args[0]), env, now)
        if kind == "CLIENT:DISCONNECT":
            cid = int(args[0])
            self.refused.discard(cid)
            c = self.clients.pop(cid, None)
            if c is None:
                return [], []   # denied at CONNECT or refused: never a session
            sent, received = _int(env, "bytes_sent"), _int(env, "bytes_received")
            if sent is not None and received is not None:
                c.bytes_in, c.bytes_out = sent, received
            duration = _int(env, "time_duration")
            return [], [self._stop(c, now, float(duration) if duration is not None else None)]
        if kind == "BYTECOUNT_CLI":
            c = self.clients.get(int(args[0]))
            if c is None:
                return [], []
            c.bytes_out, c.bytes_in = int(args[1]), int(args[2])
            return [], self._interim(c, now)
        return [], []

    def _established(self, cid: int, env: Mapping[str, str], now: float
                     ) -> tuple[list[str], list[Event]]:
        cn = env.get("common_name") or env.get("username", "")
        if self.blocked(cn):
            # no client-auth on this server, or blocked since CONNECT: HALT, so
            # the client stops instead of reconnecting to be killed again
            log.info("%s killed at connect (cid %d): unit blocked", cn, cid)
            self.refused.add(cid)
            return [f"client-kill {cid} HALT"], []
        t = _int(env, "time_unix")
        start = float(t) if t is not None else now
        c = VpnClient(cid, cn, env.get("ifconfig_pool_remote_ip", ""),
                      env.get("ifconfig_pool_remote_ip6", ""),
                      env.get("trusted_ip") or env.get("trusted_ip6", ""),
                      _int(env, "trusted_port"), start, reported=int(start))
        self.clients[cid] = c
        return [], [self._start(c)]

    def _start(self, c: VpnClient) -> Event:
        return Event("start", (c.common_name, c.vpn_addr, c.real_addr, c.cid, c.start))

    def _interim(self, c: VpnClient, now: float) -> list[Event]:
        if not self._due(c, now):
            return []
        c.reported = int(now)
        return [Event("interim", (c.common_name, c.cid, c.bytes_in, c.bytes_out, now))]

    def _stop(self, c: VpnClient, now: float, duration: float | None = None) -> Event:
        if duration is None:
            duration = max(0.0, now - c.start)
        return Event("stop", (c.common_name, c.cid, c.bytes_in, c.bytes_out, duration, now))

    def resync(self, rows: list[dict], now: float) -> tuple[list[str], list[Event]]:
        """A `status 3` listing: start clients not known yet (connected while
        acctd was away), stop those gone (with their last known counters),
        update counters (an interim when due), and kill blocked ones. Rows
        without a VPN address are clients still authenticating."""
        cmds: list[str] = []
        events: list[Event] = []
        listed = set()
        for r in rows:
            cid = r["cid"]
            if not (r["addr"] or r["addr6"]) or cid in self.refused:
                listed.add(cid)
                continue
            listed.add(cid)
            c = self.clients.get(cid)
            if c is not None and (c.common_name != r["cn"] or int(c.start) != r["since"]):
                # another server process reuses client ids from 0
                events.append(self._stop(self.clients.pop(cid), now))
                c = None
            if c is None:
                host, _, port = r["real"].rpartition(":")
                c = VpnClient(cid, r["cn"], r["addr"], r["addr6"], host.strip("[]"),
                              int(port) if port.isdigit() else None, float(r["since"]),
                              reported=r["since"])
                self.clients[cid] = c
                events.append(self._start(c))
            c.bytes_in, c.bytes_out = r["sent"], r["received"]
            events += self._interim(c, now)
            if not c.killed and self.blocked(c.common_name):
                cmds += self.kill(c.common_name)
        for cid in [cid for cid in self.clients if cid not in listed]:
            events.append(self._stop(self.clients.pop(cid), now))
        self.refused &= listed
        self.synced = True
        return cmds, events


# --- the client: socket, thread, reconnects ------------------------------------------

class ManagementClient:
    """Attach to an OpenVPN server's management interface and turn what it
    says into session events (see the module doc). start() runs it on a
    background thread that reconnects with backoff; stop() ends it."""

    def __init__(self, settings: OpenVpnSettings, *,
                 on_start: Callable[[str, str, str, int, float], Any] | None = None,
                 on_interim: Callable[[str, int, int, int, float], Any] | None = None,
                 on_stop: Callable[[str, int, int, int, float, float], Any] | None = None,
                 is_blocked: Callable[[str], bool] | None = None,
                 check_login: Callable[[str, str], str | None] | None = None,
                 clock: Callable[[], float] = time.time):
        if settings.management is None:
            raise ValueError("management: no management interface configured")
        self.settings = settings
        self.callbacks = {"start": on_start, "interim": on_interim, "stop": on_stop}
        self.clock = clock
        self.tracker = Tracker(settings.interim_interval, settings.intervals, is_blocked,
                               check_login)
        self._lock = threading.RLock()      # tracker state and writes to the socket
        self._conn: tuple[socket.socket, Parser] | None = None
        self._stopping = threading.Event()
        self._synced = threading.Event()
        self._thread: threading.Thread | None = None
        self.connects = 0                   # successful attaches, for health and tests
        self.last_error = ""

    # public API

    def start(self) -> "ManagementClient":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="acctd-openvpn", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn[0].shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def attached(self) -> bool:
        """Connected, greeted and resynced."""
        return self._synced.is_set()

    def wait_attached(self, timeout: float | None = None) -> bool:
        return self._synced.wait(timeout)

    def interval(self, common_name: str) -> int:
        with self._lock:
            return self.tracker.interval(common_name)

    def set_interval(self, common_name: str, seconds: int | None) -> None:
        """The client's interim interval from its next report on (None: the
        configured one); applies to later connections of that name too."""
        with self._lock:
            self._send_all(self.tracker.set_interval(common_name, seconds))

    def kill(self, common_name: str) -> int:
        """Disconnect every client of `common_name` (client-kill); their
        sessions stop when the server reports them gone. Returns how many
        were killed; 0 when detached (the next resync kills a client whose
        unit is_blocked)."""
        with self._lock:
            if self._conn is None or not self.tracker.attached:
                return 0
            cmds = self.tracker.kill(common_name)
            self._send_all(cmds)
            return len(cmds)

    def clients(self) -> list[VpnClient]:
        with self._lock:
            return [dataclasses.replace(c) for c in self.tracker.clients.values()]

    # the thread

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            attached_before = self.connects
            try:
                sock = self._connect()
            except OSError as e:
                self._failed(f"cannot connect to {self._where()}: {e.strerror or e}")
            else:
                try:
                    self._serve(sock)
                except (OSError, ProtocolError, ValueError) as e:
                    if not self._stopping.is_set():
                        self._failed(str(e) or type(e).__name__)
                finally:
                    with self._lock:
                        self._conn = None
                        self.tracker.detach()
                    self._synced.clear()
                    sock.close()
            failures = 1 if self.connects != attached_before else failures + 1
            if self._stopping.wait(durable.backoff(failures, self.settings.reconnect_backoff,
                                                   self.settings.reconnect_backoff_max)):
                break

    def _failed(self, why: str) -> None:
        if why != self.last_error:
            log.warning("openvpn management: %s", why)
        self.last_error = why

    def _where(self) -> str:
        m = self.settings.management
        return f"unix:{m[1]}" if m[0] == "unix" else f"{m[1]}:{m[2]}"

    def _connect(self) -> socket.socket:
        m = self.settings.management
        if m[0] == "unix":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.settimeout(CONNECT_TIMEOUT)
                s.connect(m[1])
            except OSError:
                s.close()
                raise
        else:
            s = socket.create_connection((m[1], m[2]), CONNECT_TIMEOUT)
        return s

    def _serve(self, sock: socket.socket) -> None:
        parser = Parser()
        with self._lock:
            self._conn = (sock, parser)
        next_poll = math.inf
        password_sent = False
        while not self._stopping.is_set():
            now = time.monotonic()
            if self.tracker.synced and self.settings.status_interval > 0:
                if next_poll == math.inf:
                    next_poll = now + self.settings.status_interval
                elif now >= next_poll:
                    with self._lock:
                        if not parser.pending("status"):  # never pile polls up
                            self._send("status 3")
                    next_poll = now + self.settings.status_interval
            sock.settimeout(max(0.05, min(next_poll - now, 1.0)))
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise ConnectionError("the management interface closed the connection")
            events: list[Event] = []
            with self._lock:
                msgs = parser.feed(data)
            for msg in msgs:
                # is_blocked and check_login may take the daemon's locks: never
                # ask them under ours; the login first (it may lift a block)
                login = (self.tracker.ask_login(msg),)
                verdicts = {cn: ask_blocked(self.tracker.is_blocked, cn)
                            for cn in Tracker.names(msg)}
                with self._lock:
                    if isinstance(msg, Prompt):
                        if password_sent and parser.prompt_answers_password():
                            raise ProtocolError("management password rejected")
                        pw = self.settings.password()
                        if pw is None:
                            raise ProtocolError("the management interface asks for a password: "
                                                "set password-file")
                        parser.expect(PASSWORD_PROMPT)
                        sock.sendall(pw.encode() + b"\n")
                        password_sent = True
                        continue
                    if isinstance(msg, Reply) and msg.command == PASSWORD_PROMPT:
                        continue   # SUCCESS: password is correct
                    was_synced = self.tracker.synced
                    cmds, evs = self.tracker.handle(msg, self.clock(), verdicts, login)
                    self._send_all(cmds)
                    events += evs
                    if self.tracker.synced and not was_synced:
                        self.connects += 1
                        self.last_error = ""
                        log.info("openvpn management: attached to %s, %d client(s)",
                                 self._where(), len(self.tracker.clients))
            synced = self.tracker.synced
            self._dispatch(events)   # outside the lock: callbacks may call kill()
            if synced:
                self._synced.set()

    def _send(self, command: str) -> None:
        """Under self._lock, with a live connection."""
        if self._conn is None:
            return
        sock, parser = self._conn
        parser.expect(command)
        sock.sendall(command.encode() + b"\n")

    def _send_all(self, commands: list[str]) -> None:
        for c in commands:
            self._send(c)

    def _dispatch(self, events: list[Event]) -> None:
        for e in events:
            cb = self.callbacks.get(e.kind)
            if cb is None:
                continue
            try:
                cb(*e.args)
            except Exception:
                log.exception("openvpn %s callback failed for %s", e.kind, e.args[0])


# --- script mode: acctctl openvpn-hook ------------------------------------------------

class HookExit(enum.IntEnum):
    """acctctl openvpn-hook's exit status. OpenVPN refuses the client when a
    client-connect script exits non-zero (so an error or an unreachable
    daemon refuses: accounting fails closed); after client-disconnect it
    only logs a non-zero status."""
    OK = 0
    REFUSED = 1        # the daemon refused the session (the unit is blocked)
    ERROR = 2          # bad environment, or the daemon could not be asked


class HookError(ValueError):
    pass


def _env_int(environ: Mapping[str, str], key: str) -> int:
    v = environ.get(key)
    if v is None or v == "":
        raise HookError(f"{key} is not set")
    try:
        n = int(v)
    except ValueError:
        raise HookError(f"{key}: not a whole number: {v!r}") from None
    if n < 0:
        raise HookError(f"{key}: negative: {n}")
    return n


def hook_auth(environ: Mapping[str, str], via_file: str | None) -> dict:
    """The event of an --auth-user-pass-verify script: {"event": "auth",
    "user", "password"}, the password from the file OpenVPN names as the
    script's argument (via-file: username and password lines) or, via-env
    (--script-security 3), from `password`."""
    user, password = environ.get("username", ""), environ.get("password")
    if via_file:
        try:
            with open(via_file, encoding="utf-8", errors="replace") as f:
                lines = f.read(4096).splitlines()
        except OSError as e:
            raise HookError(f"{via_file}: {e.strerror}") from None
        if len(lines) < 2:
            raise HookError(f"{via_file}: expected a username line and a password line")
        user, password = lines[0], lines[1]
    if not user:
        raise HookError("username is not set")
    if password is None:
        raise HookError("no password: use --auth-user-pass-verify CMD via-file (or via-env "
                        "with --script-security 3)")
    return {"event": "auth", "source": "openvpn", "user": user, "password": password}


def hook_main(environ: Mapping[str, str], via_file: str | None = None) -> dict:
    """The event a client-connect or client-disconnect script reports, from
    the environment OpenVPN gives it (--script-security 2):

        start: {"event": "start", "source": "openvpn", "user", "addr",
                "addr6", "real_addr", "real_port", "time"}
        stop:  the same plus "bytes_in" (bytes_sent: towards the client),
               "bytes_out" (bytes_received), "duration" (time_duration) and
               "time" = time_unix + time_duration (time_unix is when the
               client connected, in both scripts).

    user is common_name (username when there is none); addr is
    ifconfig_pool_remote_ip, addr6 ifconfig_pool_remote_ip6, at least one
    must be set. Raises HookError naming the variable that is missing or
    wrong; the caller exits with HookExit.ERROR then. Scripts get no
    interim updates: OpenVPN has no accounting hook (the proposal in its
    ticket #15 was never merged)."""
    kind = environ.get("script_type", "")
    if kind == "user-pass-verify":
        return hook_auth(environ, via_file)
    if kind not in ("client-connect", "client-disconnect"):
        raise HookError(f"script_type must be user-pass-verify, client-connect or "
                        f"client-disconnect, got {kind!r} (run acctctl openvpn-hook as "
                        "OpenVPN's --auth-user-pass-verify, --client-connect and "
                        "--client-disconnect)")
    user = environ.get("common_name") or environ.get("username") or ""
    if not user:
        raise HookError("common_name is not set")
    addr = environ.get("ifconfig_pool_remote_ip", "")
    addr6 = environ.get("ifconfig_pool_remote_ip6", "")
    for key, a in (("ifconfig_pool_remote_ip", addr), ("ifconfig_pool_remote_ip6", addr6)):
        if a:
            try:
                ipaddress.ip_address(a)
            except ValueError:
                raise HookError(f"{key}: not an address: {a!r}") from None
    if not addr and not addr6:
        raise HookError("ifconfig_pool_remote_ip is not set (no VPN address for the session)")
    real = environ.get("trusted_ip") or environ.get("trusted_ip6") or ""
    port = environ.get("trusted_port", "")
    start = _env_int(environ, "time_unix")
    event = {"event": "start", "source": "openvpn", "user": user, "addr": addr or addr6,
             "addr6": addr6, "real_addr": real,
             "real_port": int(port) if port.isdigit() else None, "time": float(start)}
    if kind == "client-disconnect":
        duration = _env_int(environ, "time_duration")
        event.update(event="stop", bytes_in=_env_int(environ, "bytes_sent"),
                     bytes_out=_env_int(environ, "bytes_received"), duration=float(duration),
                     time=float(start + duration), cause="user-request")
    return event


# --- the service ------------------------------------------------------------------------

class OpenVpnService(Service):
    """OpenVPN in the daemon. With a management interface, a client's
    ESTABLISHED starts a session for the user unit named by its common name
    at its VPN address, its DISCONNECT (or its absence from the status)
    ends it, and bytecount reports are kept as the NAS's figures; a blocked
    unit is refused at connect and killed when blocked. Without one, the
    client-connect/-disconnect scripts call `acctctl openvpn-hook`."""

    name = "openvpn"
    reload_under_lock = False  # its management thread waits for the core's lock

    def __init__(self, core: Core, settings: OpenVpnSettings | None):
        super().__init__(core, settings)
        self.client: ManagementClient | None = None
        self._logged_in: set[str] = set()   # unit oids check_login let in since their connect

    @staticmethod
    def settings_of(config):
        return config.openvpn

    def serve(self) -> None:
        s = self.settings
        if s is None or s.management is None:
            return
        self.client = ManagementClient(s, on_start=self._start, on_interim=self._interim,
                                       on_stop=self._stop, is_blocked=self.blocked,
                                       check_login=self.check_login)
        self.client.start()

    def reload(self, settings: OpenVpnSettings | None) -> None:
        self.restart(settings)

    def close(self) -> None:
        if self.client is not None:
            self.client.stop()
            self.client = None

    def status(self) -> dict | None:
        if self.client is None:
            return None
        return {"openvpn": {"attached": self.client.attached,
                            "clients": len(self.client.clients()),
                            "last_error": self.client.last_error}}

    def blocked(self, name: str) -> bool:
        """Whether the unit may not pass now (any block, its groups' included)."""
        from acctd.kernel import abi
        from acctd.model import sys_policy
        with self.core.lock:
            snap = self.core.snapshot
            try:
                i = snap.find(name)
            except KeyError:
                return False
            bits = self.core.sys_policy_bits().get(i, 0)  # its groups' included
        return sys_policy.verdict(bits) == abi.Verdict.DROP

    def check_login(self, name: str, password: str) -> str | None:
        """Why `name` may not connect with `password`, or None. A unit with a
        login record (`acctctl login set`) needs its password, and the
        login opens it (the login block lifts); the unit's other blocks
        refuse it. One without a record (certificate only) is refused
        while blocked. Every refusal and login is an F-TICKS line."""
        from acctd.services.login import LoginService
        login = self.core.service(LoginService)
        with self.core.lock:
            try:
                oid = self.core.snapshot.unit(name).oid
            except KeyError:
                return "no such user"
            managed = login.table.get(oid) is not None
        if not managed:
            if self.blocked(name):
                self.core.login_attempted(oid, False, "blocked", None, None, "openvpn")
                return "access blocked"
            return None
        res = login.admit(name, password, None, None, login.other_blocks, "openvpn", None)
        if not res.ok:
            return "access blocked" if res.code == "blocked" else "wrong user name or password"
        self._logged_in.add(oid)   # its connect is this line, not a second one
        login.follow(oid, None, None)
        return None

    def blocks_changed(self, moved) -> None:
        """Blocks that moved to drop: their OpenVPN clients are disconnected."""
        if self.client is None:
            return
        from acctd.kernel import abi
        from acctd.model import sys_policy
        now_blocked = {p for p, (_old, new, _oid) in moved.items()
                       if sys_policy.verdict(new) == abi.Verdict.DROP}
        snap = self.core.snapshot
        for oid, x in list(self._sessions().open.items()):
            if x.source == "openvpn" and x.addr in now_blocked:
                self.client.kill(snap.name_of(oid))

    def _sessions(self):
        from acctd.services.sessions import SessionsService
        return self.core.service(SessionsService)

    def _user(self, cn: str):
        try:
            u = self.core.snapshot.unit(cn)
        except KeyError:
            log.warning("openvpn: no unit named %r (common name)", cn)
            return None
        if u.type != "user":
            log.warning("openvpn: %s is a %s, not a user unit", cn, u.type)
            return None
        return u

    def _start(self, cn, vpn_addr, real_addr, cid, when) -> None:
        u = self._user(cn)
        if u is None or not vpn_addr:
            return
        if u.oid in self._logged_in:
            self._logged_in.discard(u.oid)
        else:
            self.core.login_attempted(u.oid, True, "openvpn connect", vpn_addr, None, "openvpn")
        self._sessions().changes([{"user": u.name, "addr": vpn_addr, "nas": "openvpn",
                                   "port": str(cid)}], "openvpn")

    def _interim(self, cn, cid, bytes_in, bytes_out, when) -> None:
        u = self._user(cn)
        x = self._sessions().open.get(u.oid) if u is not None else None
        if x is not None and x.source == "openvpn":
            with self.core.lock:
                x.nas_bytes_in, x.nas_bytes_out = bytes_in, bytes_out
                self.core.storage.set_session_nas_bytes(x.id, bytes_in, bytes_out)

    def _stop(self, cn, cid, bytes_in, bytes_out, duration, when) -> None:
        u = self._user(cn)
        x = self._sessions().open.get(u.oid) if u is not None else None
        if x is None or x.source != "openvpn" or x.port != str(cid):
            return  # an older instance of a client that reconnected already
        with self.core.lock:
            self.core.storage.set_session_nas_bytes(x.id, bytes_in, bytes_out)
        self._sessions().changes([{"user": u.name, "addr": None, "cause": "user-request"}],
                                 "openvpn")

    # -- commands ---------------------------------------------------------------------

    def hook_event(self, event: dict) -> dict:
        """`acctctl openvpn-hook` (client-connect/-disconnect scripts, for
        servers without management): a start binds, refused when blocked; a
        stop ends the session with the server's byte counts."""
        u = self._user(str(event.get("user", "")))
        if u is None:
            return {"allowed": False, "reason": "no such user unit"}
        if event.get("event") == "auth":
            why = self.check_login(u.name, str(event.get("password", "")))
            return {"allowed": why is None, "reason": why}
        sessions = self._sessions()
        if event.get("event") == "start":
            if self.blocked(u.name):
                self.core.login_attempted(u.oid, False, "blocked", event.get("addr"), None,
                                          "openvpn")
                return {"allowed": False, "reason": "blocked"}
            if u.oid in self._logged_in:
                self._logged_in.discard(u.oid)
            else:
                self.core.login_attempted(u.oid, True, "openvpn connect", event.get("addr"),
                                          None, "openvpn")
            addr = event.get("addr") or event.get("addr6")
            sessions.changes([{"user": u.name, "addr": addr, "nas": "openvpn"}], "openvpn")
            return {"allowed": True}
        x = sessions.open.get(u.oid)
        if x is not None and x.source == "openvpn":
            with self.core.lock:
                self.core.storage.set_session_nas_bytes(x.id, int(event.get("bytes_in") or 0),
                                                        int(event.get("bytes_out") or 0))
            sessions.changes([{"user": u.name, "addr": None,
                               "cause": event.get("cause") or "user-request"}], "openvpn")
        return {"allowed": True}

    def _client(self) -> ManagementClient:
        if self.client is None:
            raise BadRequest("no [openvpn] management interface configured")
        return self.client

    def set_interval(self, user: str, seconds: int | None = None) -> dict:
        client = self._client()
        client.set_interval(user, seconds)  # None: back to the configuration; 0: off
        return {"user": user, "interval": client.interval(user)}

    def clients(self) -> list[dict]:
        return [{"user": c.common_name, "cid": c.cid, "vpn_addr": c.vpn_addr,
                 "bytes_in": c.bytes_in, "bytes_out": c.bytes_out}
                for c in self._client().clients()]
