"""A throwaway PostgreSQL for the central tests and benchmark (the
tests/peers rig: initdb in a temp dir, run as the `postgres` user when we
are root), on its own TCP port, which a test may kill -9 and start again
on the same data."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

BINDIRS = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, listen: str = "127.0.0.1", port: int | None = None, data: str | None = None):
        self.bindir = BINDIRS[-1]
        self.listen, self.port = listen, port or free_port()
        self.dir = tempfile.mkdtemp(prefix="acctd-central-pg-")
        self.data = data or os.path.join(self.dir, "data")
        self.prefix: list[str] = []
        if os.geteuid() == 0:   # the server refuses to run as root
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.prefix = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
                           "--init-groups", "--"]
        self.server: subprocess.Popen | None = None
        self.logf = None

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.listen} port={self.port} user=postgres dbname={dbname}"

    def initdb(self) -> None:
        subprocess.run([*self.prefix, f"{self.bindir}/initdb", "-D", self.data, "-A", "trust",
                        "-U", "postgres", "-E", "UTF8", "--no-sync"], check=True,
                       capture_output=True, timeout=120)
        with open(os.path.join(self.data, "pg_hba.conf"), "a") as f:
            f.write("host all all 10.0.0.0/8 trust\n")   # the test's veth networks

    def start(self, wait: bool = True, netns: str | None = None) -> None:
        self.logf = open(os.path.join(self.dir, "log"), "ab")
        ns = ["ip", "netns", "exec", netns] if netns else []
        self.server = subprocess.Popen(
            [*ns, *self.prefix, f"{self.bindir}/postgres", "-D", self.data, "-k", self.dir,
             "-c", f"listen_addresses={self.listen}", "-p", str(self.port), "-F",
             "-c", "max_connections=50", "-c", "wal_level=replica",
             "-c", "max_wal_senders=4"], stdout=self.logf, stderr=self.logf)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        import psycopg
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(host=self.dir, port=self.port, user="postgres",
                                dbname="postgres").close()
                return
            except psycopg.OperationalError:
                if self.server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start: {self.log()}")
                time.sleep(0.05)

    def log(self) -> str:
        return Path(self.dir, "log").read_text(errors="replace")

    def kill9(self) -> None:
        """SIGKILL of the postmaster and its backends at once (as a crash does).
        Stopped first: a backend it forked after the listing would outlive it
        and keep the next postmaster from starting (shared memory in use)."""
        os.kill(self.server.pid, signal.SIGSTOP)
        _until(lambda: _state(self.server.pid) in ("T", None))   # a signal lands later
        children = [int(p) for p in subprocess.run(
            ["pgrep", "-P", str(self.server.pid)], capture_output=True, text=True).stdout.split()]
        for pid in [*children, self.server.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.server.wait()
        # gone or a zombie: a backend still dying holds the shared memory
        # the next postmaster refuses to start beside
        _until(lambda: all(_state(p) in ("Z", None) for p in children))
        self.logf.close()

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGINT)   # fast shutdown
            try:
                self.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        if self.logf:
            self.logf.close()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _state(pid: int) -> str | None:
    """A process's state letter (R, S, T, Z ...), None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _until(done, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.005)
