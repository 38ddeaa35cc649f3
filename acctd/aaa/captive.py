"""The captive portal (NeTAMS's login.cgi): a subscriber whose address is
blocked for its login only is shown an HTTP login page; logging in there
is the login service's `login` from that address, and the block lifts.

How the subscriber's HTTP reaches the page, and why this way:
- the kernel program lets a unit blocked for reason login (and nothing
  else) send and receive TCP with remote port 80 (acct_class flag
  ACCT_CLASS_PORTAL, set on every unit's class while [captive] is
  configured); all its other traffic stays dropped;
- an nftables table `acctd_captive` in the gateway's network namespace
  DNATs TCP port 80 from the addresses in its set `login` to the page's
  `listen` address; acctd keeps that set equal to the kernel's login-only
  blocks (blocks_changed), so a logged-in subscriber's HTTP goes out again.
Rewriting packets in the BPF program instead would mean connection
tracking of our own; nftables already has it (the replies are un-NATed),
and the kernel program only needs to stop dropping one port.

The page is a small HTTP/1.0 server on its own thread: GET shows the form,
POST /login checks it. Requests are bounded (8 KiB, 5 s), one at a time;
the login service's argon2 check and its limit per name pace password
guessing. The page and what it says are the console's /hotspot's
(acctd/web/portal.py, the login service's portal): one login page.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import ctypes
import logging
import os
import subprocess
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

from acctd.aaa.coa import listen_address
from acctd.config.schema import Table, free_text, setting
from acctd.services.contract import Core, Service
from acctd.web import portal

log = logging.getLogger("acctd.captive")

TABLE = "acctd_captive"
MAX_BODY = 8192
TIMEOUT = 5.0

ACTION = "/login"


@dataclasses.dataclass(frozen=True)
class CaptiveSettings(Table):
    """The [captive] table: where the page listens (an address of the
    gateway the subscribers reach), the LAN interface the DNAT applies to."""
    listen: tuple[str, int] = setting(check=listen_address(8080))
    interface: str = setting("", check=free_text())   # "": any


def nft_rules(s: CaptiveSettings) -> str:
    """The nftables table, as `nft -f` reads it."""
    host, port = s.listen
    iif = f'iifname "{s.interface}" ' if s.interface else ""
    return (f"table ip {TABLE} {{\n"
            f"  set login {{ type ipv4_addr; }}\n"
            f"  chain pre {{ type nat hook prerouting priority dstnat;\n"
            f"    {iif}ip saddr @login tcp dport 80 dnat to {host}:{port}\n"
            f"  }}\n}}\n")


class _Page(BaseHTTPRequestHandler):
    server_version = "acctd-captive"
    protocol_version = "HTTP/1.0"
    timeout = TIMEOUT

    def log_message(self, *args) -> None:   # one line per request would flood the log
        pass

    def _send(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(200, portal.render(ACTION, self.client_address[0]))

    def do_POST(self) -> None:
        addr = self.client_address[0]
        try:
            n = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            n = -1
        if not 0 <= n <= MAX_BODY:
            return self._send(413, portal.render(ACTION, addr, {"ok": False,
                                                                "message": "request too large"}))
        form = urllib.parse.parse_qs(self.rfile.read(n).decode("utf-8", "replace"))
        out = (form.get("action") or [""])[0] == "logout"
        reply = self.server.portal((form.get("user") or [""])[0],
                                   (form.get("password") or [""])[0], addr, out)
        self._send(reply["status"], portal.render(ACTION, addr, reply, out))


class CaptiveService(Service):
    """[captive] in the daemon: the page's server and the nftables DNAT of
    the subscribers blocked for their login only."""

    name = "captive"
    reload_under_lock = False   # its server's thread waits for the core's lock

    def __init__(self, core: Core, settings: CaptiveSettings | None):
        super().__init__(core, settings)
        self.httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.redirected: set[str] = set()

    @staticmethod
    def settings_of(config):
        return config.captive

    def _nft(self, script: str, check: bool = True) -> None:
        ns = self.core.netns
        argv = (["nsenter", f"--net=/run/netns/{ns}"] if ns else []) + ["nft", "-f", "-"]
        r = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=10)
        if check and r.returncode:
            raise RuntimeError(f"captive: nft: {r.stderr.strip()}")

    def serve(self) -> None:
        if self.settings is None:
            return
        self._nft(f"table ip {TABLE}\ndelete table ip {TABLE}\n" + nft_rules(self.settings))
        host, port = self.settings.listen
        with in_netns(self.core.netns):   # the socket stays in the gateway's namespace
            self.httpd = HTTPServer((host, port), _Page)
        self.httpd.portal = self._portal
        self.httpd.timeout = TIMEOUT
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="acctd-captive",
                                        daemon=True)
        self._thread.start()
        self.redirected = set()
        self._sync()
        log.info("captive: login page on %s:%d", host, port)

    def reload(self, settings) -> None:
        self.restart(settings)

    def close(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
            self._nft(f"delete table ip {TABLE}\n", check=False)

    def status(self) -> dict | None:
        return {"captive": {"redirected": len(self.redirected)}} if self.httpd else None

    def blocks_changed(self, moved) -> None:
        if self.httpd is None:
            return
        try:
            self._sync()
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            # enforcement goes on; until the set is right again a login-blocked
            # host's HTTP reaches the real server instead of the page
            log.error("captive: the DNAT set not updated: %s", e)

    def _sync(self) -> None:
        """The set `login` := the IPv4 hosts the kernel blocks for their login only."""
        from acctd.kernel import abi
        with self.core.lock:
            blocks = self.core.enforcer.kernel_blocks() if self.core.enforcer else {}
        want = {p for p, b in blocks.items() if b & abi.SYS_DENY_MASK == abi.SysPolicy.LOGIN
                and ipaddress.ip_network(p, strict=False).version == 4}
        add, drop = want - self.redirected, self.redirected - want
        lines = [f"add element ip {TABLE} login {{ {', '.join(sorted(add))} }}"] if add else []
        if drop:
            lines.append(f"delete element ip {TABLE} login {{ {', '.join(sorted(drop))} }}")
        if lines:
            self._nft("\n".join(lines) + "\n")
            self.redirected = want

    def _portal(self, user: str, password: str, addr: str, logout: bool) -> dict:
        from acctd.errors import AcctError
        from acctd.services.login import LoginService
        try:
            return self.core.service(LoginService).portal(user, password, addr, logout)
        except AcctError as e:
            return {"ok": False, "status": 400, "message": str(e)}


class in_netns:
    """Enter a named network namespace for this thread, and leave it (a
    socket keeps the namespace it was made in)."""

    def __init__(self, name: str | None):
        self.name = name
        self.home: int | None = None

    def __enter__(self):
        if self.name:
            self.home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
            try:
                _setns(fd)
            finally:
                os.close(fd)
        return self

    def __exit__(self, *exc):
        if self.home is not None:
            try:
                _setns(self.home)
            finally:
                os.close(self.home)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, 0x40000000) != 0:   # CLONE_NEWNET
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")
