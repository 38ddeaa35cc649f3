"""A real OpenVPN server and client for acctd's tests: a throwaway PKI, two
network namespaces joined by a veth pair, and the two openvpn processes.

    client ns: veth 10.99.0.2 ── veth 10.99.0.1 :server ns
               tun0 10.8.0.x       tun0 10.8.0.1, management on 127.0.0.1:7505
                                   (or a Unix socket in the test's directory)

The management interface listens inside the server's namespace; a Python
thread that should reach it over TCP is started `inside()` that namespace
(a socket, and a thread, keep the namespace they were made in).

A quiet tunnel, so that the tunnel's counters are the ground truth:
OpenVPN's keepalive is left off, and IPv6 router solicitations are off in
both namespaces (the client's RS has a link-local source, which the server
drops as a "bad source address" after counting it on the link).

Namespace names carry the creating pid ("acovpn<pid>x<hex>-s"); namespaces
whose creator is gone are removed (`remove_stale`), never a live run's.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

PREFIX = "acovpn"
SERVER_ADDR = "10.99.0.1"
CLIENT_ADDR = "10.99.0.2"
TUN_NET = "10.8.0.0 255.255.255.0"
TUN_NET6 = "fd00:8::/64"
SERVER_TUN = "10.8.0.1"
MGMT_PORT = 7505
PORT = 1194
READY = "Initialization Sequence Completed"


ENV_DUMP = """#!/bin/sh
# the environment OpenVPN gives client-connect/client-disconnect scripts
env -0 > "{d}/env.$script_type.tmp" && mv "{d}/env.$script_type.tmp" "{d}/env.$script_type"
exit 0
"""


def env_dump_script(d: Path) -> Path:
    """A --client-connect/--client-disconnect script that keeps the
    environment of its last run of each kind in d/env.<script_type>."""
    p = d / "env-dump.sh"
    p.write_text(ENV_DUMP.format(d=d))
    p.chmod(0o755)
    return p


def read_env(d: Path, kind: str, timeout: float = 10.0) -> dict:
    """What env_dump_script recorded for `kind` (client-connect, ...)."""
    path = d / f"env.{kind}"
    end = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > end:
            raise TimeoutError(f"OpenVPN never ran the {kind} script")
        time.sleep(0.05)
    return dict(kv.split("=", 1) for kv in path.read_text().split("\0") if "=" in kv)


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path, clients=("alice", "bob")) -> Path:
    """A P-256 CA, a server certificate (serverAuth, for --remote-cert-tls
    server) and one client certificate per name (clientAuth, CN = the name),
    valid for two days. About 0.2 s."""
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=acctd-test-ca", cwd=d)
    for name, eku in (("server", "serverAuth"), *((c, "clientAuth") for c in clients)):
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}", cwd=d)
        (d / f"{name}.ext").write_text(
            f"extendedKeyUsage={eku}\nkeyUsage=digitalSignature,keyAgreement\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
                "-extfile", f"{name}.ext", cwd=d)
    for key in d.glob("*.key"):
        key.chmod(0o600)
    return d


# --- namespaces ----------------------------------------------------------------------

# namespace plumbing shared with the netns testbed
from ..netns.topology import _kill_ns_pids, _pid_alive, _setns  # noqa: E402


def remove_stale() -> list[str]:
    removed = []
    for name in sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []:
        m = re.fullmatch(rf"{PREFIX}(\d+)x[0-9a-f]+-[sc]", name)
        if m and not _pid_alive(int(m.group(1))):
            _kill_ns_pids(name)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
            removed.append(name)
    return removed


def sh(*argv: str, check: bool = True) -> str:
    r = subprocess.run(argv, capture_output=True, text=True)
    if check and r.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip() or r.returncode}")
    return r.stdout


class Pair:
    """Two namespaces, `server` and `client`, joined by a veth pair."""

    def __init__(self):
        tag = f"{PREFIX}{os.getpid()}x{secrets.token_hex(3)}"
        self.server, self.client = f"{tag}-s", f"{tag}-c"
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "Pair":
        try:
            for ns in (self.server, self.client):
                sh("ip", "netns", "add", ns)
                sh("ip", "-n", ns, "link", "set", "lo", "up")
                # no router solicitations on the tun devices openvpn creates later
                sh("ip", "netns", "exec", ns, "sysctl", "-qw",
                   "net.ipv6.conf.default.router_solicitations=0",
                   "net.ipv6.conf.all.router_solicitations=0")
            sh("ip", "link", "add", "ovs0", "netns", self.server, "type", "veth",
               "peer", "name", "ovc0", "netns", self.client)
            for ns, dev, addr in ((self.server, "ovs0", SERVER_ADDR),
                                  (self.client, "ovc0", CLIENT_ADDR)):
                sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
                sh("ip", "-n", ns, "link", "set", dev, "up")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for p in reversed(self.procs):
            stop_process(p)
        for ns in (self.server, self.client):
            _kill_ns_pids(ns)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    @contextlib.contextmanager
    def inside(self, ns: str):
        """Run this thread inside `ns`; threads started meanwhile stay there."""
        with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{ns}") as there:
            _setns(there.fileno())
            try:
                yield
            finally:
                _setns(home.fileno())

    def run(self, ns: str, *argv: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", ns, *argv], **kw)

    def popen(self, ns: str, *argv: str, **kw) -> subprocess.Popen:
        # `ip netns exec` execs the program, so the pid is the program's own
        p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kw)
        self.procs.append(p)
        return p

    def tun_counters(self, ns: str, dev: str = "tun0") -> dict:
        """rx/tx bytes and packets of a tun device (IP packets, no link header)."""
        j = json.loads(sh("ip", "-n", ns, "-j", "-s", "link", "show", dev))[0]["stats64"]
        return {"rx_bytes": j["rx"]["bytes"], "rx_packets": j["rx"]["packets"],
                "tx_bytes": j["tx"]["bytes"], "tx_packets": j["tx"]["packets"]}


def stop_process(p: subprocess.Popen, timeout: float = 5.0) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_log(path: Path, text: str, timeout: float = 15.0, proc: subprocess.Popen | None = None,
             start: int = 0) -> int:
    """Wait until `text` appears in the log after offset `start`; returns the
    offset just after it."""
    end = time.monotonic() + timeout
    while True:
        data = path.read_text(errors="replace") if path.exists() else ""
        i = data.find(text, start)
        if i >= 0:
            return i + len(text)
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{path.name}: openvpn exited ({proc.returncode}) before {text!r}:\n"
                               + data[-2000:])
        if time.monotonic() > end:
            raise TimeoutError(f"{path.name}: no {text!r} within {timeout} s:\n" + data[-2000:])
        time.sleep(0.05)


class Server:
    """`openvpn --server` in the server namespace. mgmt: "tcp" (127.0.0.1:7505
    inside the namespace) or "unix" (mgmt.sock in `d`)."""

    def __init__(self, pair: Pair, d: Path, mgmt: str = "tcp", password: str | None = None,
                 client_auth: bool = False, hold: bool = False, script: Path | None = None,
                 extra: tuple[str, ...] = ()):
        self.pair, self.d = pair, d
        self.log = d / "server.log"
        self.sock = d / "mgmt.sock"
        argv = ["openvpn", "--mode", "server", "--tls-server", "--dev", "tun0",
                "--topology", "subnet", "--server", *TUN_NET.split(), "--server-ipv6", TUN_NET6,
                "--ca", "ca.crt", "--cert", "server.crt", "--key", "server.key", "--dh", "none",
                "--data-ciphers", "AES-256-GCM", "--proto", "udp", "--local", SERVER_ADDR,
                "--lport", str(PORT), "--verb", "3", "--cd", str(d), "--log", str(self.log)]
        mg = ["127.0.0.1", str(MGMT_PORT)] if mgmt == "tcp" else [str(self.sock), "unix"]
        if password is not None:
            pw = d / "mgmt.pw"
            pw.write_text(password + "\n")
            pw.chmod(0o600)
            mg.append(str(pw))
        argv += ["--management", *mg]
        if client_auth:
            # certificate-only clients send no username/password
            argv += ["--management-client-auth", "--auth-user-pass-optional"]
        if hold:
            argv += ["--management-hold"]
        if script is not None:
            argv += ["--script-security", "2", "--client-connect", str(script),
                     "--client-disconnect", str(script)]
        self.argv = argv + list(extra)
        self.proc: subprocess.Popen | None = None

    def start(self, ready: bool = True) -> "Server":
        self.log.unlink(missing_ok=True)   # a restart must not find the last one's lines
        self.proc = self.pair.popen(self.pair.server, *self.argv, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        wait_log(self.log, "MANAGEMENT: " if not ready else READY, proc=self.proc)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(5)


class Client:
    """`openvpn --client` with `cn`'s certificate in the client namespace."""

    def __init__(self, pair: Pair, d: Path, cn: str, dev: str = "tun0",
                 auth: tuple[str, str] | None = None):
        self.pair, self.d, self.cn = pair, d, cn
        self.log = d / f"client-{cn}.log"
        self.argv = ["openvpn", "--client", "--dev", dev, "--proto", "udp",
                     "--remote", SERVER_ADDR, str(PORT), "--nobind", "--ca", "ca.crt",
                     "--cert", f"{cn}.crt", "--key", f"{cn}.key", "--remote-cert-tls", "server",
                     "--explicit-exit-notify", "1", "--verb", "3", "--cd", str(d),
                     "--log", str(self.log)]
        if auth is not None:   # --auth-user-pass: username and password lines
            f = d / f"auth-{cn}.txt"
            f.write_text(f"{auth[0]}\n{auth[1]}\n")
            f.chmod(0o600)
            self.argv += ["--auth-user-pass", str(f)]
        self.proc: subprocess.Popen | None = None
        self.mark = 0

    def start(self, wait: bool = True) -> "Client":
        self.proc = self.pair.popen(self.pair.client, *self.argv, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        if wait:
            self.wait_up()
        return self

    def wait_up(self, timeout: float = 15.0) -> None:
        self.mark = wait_log(self.log, READY, timeout, self.proc, self.mark)

    def stop(self) -> None:
        """SIGTERM: the client tells the server it is leaving (explicit-exit-notify)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


def have_openvpn() -> str | None:
    """Why the real tests can't run here, or None."""
    if os.geteuid() != 0:
        return "needs root: network namespaces and tun devices"
    missing = [t for t in ("openvpn", "openssl", "ip") if not shutil.which(t)]
    if missing:
        return f"missing {', '.join(missing)} (Debian: apt-get install openvpn)"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    return None
