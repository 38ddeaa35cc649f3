"""The local control socket: one JSON request per line, one JSON reply.

Root only for now (mode 0600); users and permission levels come later.
Requests are small and bounded: a line over MAX_REQUEST bytes, invalid JSON
or an unknown command gets an error reply, and a client idle for longer
than IDLE_TIMEOUT is dropped; the daemon carries on either way.

Also the client side (`call`) and the report functions, which work on a
Storage handle, so `acctctl --db FILE` gives the same answers with the
daemon stopped.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import socketserver
import threading

from acctd import rollup
from acctd.errors import AcctError

DEFAULT_SOCKET = "/run/acctd/acctd.sock"
MAX_REQUEST = 64 * 1024
IDLE_TIMEOUT = 10.0


# -- reports (shared by the daemon and acctctl --db) ------------------------------

def _policy_name(cfg, oid: int) -> str:
    if oid == rollup.ALL_TRAFFIC:
        return "(all)"
    if cfg is not None:
        i = cfg.policies.by_oid.get(f"{oid:06X}")
        if i is not None:
            return cfg.policies.policies[i].name
    return f"{oid:06X}"


def _unit(cfg, name: str):
    try:
        return cfg.units.units[cfg.units.find(name)]
    except KeyError:
        raise AcctError(f"unknown unit {name!r} (see `acctctl units`)") from None


def report_units(cfg) -> list[dict]:
    from acctd.units import format_addr, format_prefix
    return [{"name": u.name, "oid": u.oid, "type": u.type, "email": u.email,
             "addrs": [format_addr(a) for a in u.addrs],
             "nets": [format_prefix(*n) for n in u.nets],
             "parents": list(u.parents), "acct_policy": list(u.acct_policy)} for u in cfg.units]


def report_policies(cfg) -> list[dict]:
    return [{"name": p.name, "oid": p.oid, "target": p.target if isinstance(p.target, str)
             else json.dumps(p.target)} for p in cfg.policies]


def report_list(storage, cfg, unit: str, now: dt.datetime, checks=None, matches=None) -> dict:
    """NeTAMS `show list full`: per policy and direction, flow/hour/day/week/month;
    with the daemon's counters, per acct entry its checks and matches (flows,
    since the daemon started: in memory, as in NeTAMS)."""
    u = _unit(cfg, unit)
    rows = storage.unit_totals(u.oid, now)
    out = []
    for r in rows:
        out.append({"policy": _policy_name(cfg, r["policy_oid"]),
                    "dir": "in" if r["dir"] == 0 else "out",
                    **{k: {"packets": r[k][0], "bytes": r[k][1]}
                       for k in ("flow", "hour", "day", "week", "month")}})
    rep = {"unit": u.name, "oid": u.oid, "policies": out}
    if checks is not None:
        i = cfg.units.find(unit)
        lo, hi = cfg.plan.entry_ptr[i], cfg.plan.entry_ptr[i + 1]
        rep["checks"] = [{"policy": cfg.policies.policies[cfg.plan.entry_policy[e]].name,
                          "check": int(checks[e]), "match": int(matches[e])} for e in range(lo, hi)]
    return rep


def report_stat(storage, cfg, unit: str, period: str, now: dt.datetime) -> dict:
    """NeTAMS `show stat`: hourly rows of the week or month."""
    u = _unit(cfg, unit)
    rows = storage.stat(u.oid, period, now)
    return {"unit": u.name, "oid": u.oid, "period": period,
            "rows": [{"hour": r["label"], "policy": _policy_name(cfg, r["policy_oid"]),
                      "dir": "in" if r["dir"] == 0 else "out",
                      "packets": r["packets"], "bytes": r["bytes"]} for r in rows]}


# -- server --------------------------------------------------------------------------

class ControlServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, daemon, flushes):
        self.acctd, self.flushes = daemon, flushes
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
        os.chmod(path, 0o600)
        self.path = path

    def serve_in_thread(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, name="control", daemon=True)
        t.start()
        return t

    def handle(self, req: dict) -> object:
        d = self.acctd
        cmd = req.get("cmd")
        args = req.get("args") or {}
        now = d.clock()
        if cmd == "flush":
            return self.flushes.request()
        if cmd == "units":
            return report_units(d.cfg)
        if cmd == "policies":
            return report_policies(d.cfg)
        if cmd == "list":
            with d.lock:
                return report_list(d.storage, d.cfg, str(args.get("unit", "")), now,
                                   d.checks, d.matches)
        if cmd == "stat":
            with d.lock:
                return report_stat(d.storage, d.cfg, str(args.get("unit", "")),
                                   str(args.get("period", "week")), now)
        raise AcctError(f"unknown command {cmd!r}")


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.connection.settimeout(IDLE_TIMEOUT)
        try:
            line = self.rfile.readline(MAX_REQUEST + 1)
        except (socket.timeout, OSError):
            return
        if len(line) > MAX_REQUEST:
            return self._reply({"ok": False, "error": f"request over {MAX_REQUEST} bytes"})
        try:
            req = json.loads(line.decode("utf-8"))
            if not isinstance(req, dict):
                raise ValueError("expected a JSON object")
        except (UnicodeDecodeError, ValueError) as e:
            return self._reply({"ok": False, "error": f"bad request: {e}"})
        try:
            self._reply({"ok": True, "result": self.server.handle(req)})
        except (AcctError, ValueError, TimeoutError, RuntimeError) as e:
            self._reply({"ok": False, "error": str(e)})

    def _reply(self, msg: dict) -> None:
        try:
            self.wfile.write((json.dumps(msg, default=str) + "\n").encode())
        except OSError:
            pass


# -- client --------------------------------------------------------------------------

class NotRunning(AcctError):
    pass


def call(path: str, cmd: str, timeout: float = 130.0, **args) -> object:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        raise NotRunning(f"acctd is not running (no socket at {path}); start it, or read "
                         "the database directly with `acctctl --db FILE ...`") from None
    except PermissionError:
        raise AcctError(f"permission denied on {path}: the control socket is root only") from None
    with s:
        s.sendall((json.dumps({"cmd": cmd, "args": args}) + "\n").encode())
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
