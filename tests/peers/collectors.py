"""Real flow collectors from Debian, started by a test on loopback: nfcapd
(read back with nfdump) and nfacctd (pmacct, read back through its memory
table with the pmacct client). Each reports the flows it decoded; the tests
compare their totals with what acctd sent."""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import time

from tests.ports import free_port
from tests.peer import missing_peer


def _wait_udp_bound(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Until something listens on the UDP port (the collector is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"collector exited: {proc.stdout.read()!r}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return
        time.sleep(0.05)
    raise RuntimeError(f"collector did not bind UDP port {port}")


class Collector:
    """A peer process that a `with` block always ends."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError


class Nfcapd(Collector):
    """nfcapd on 127.0.0.1; flows() stops it (it writes its file at exit)
    and reads the file back with nfdump."""

    def __init__(self, tmp_path, port: int | None = None, socket_buffer: int | None = 4194304):
        if not (shutil.which("nfcapd") and shutil.which("nfdump")):
            missing_peer("nfcapd/nfdump not installed (Debian package nfdump)")
        self.dir = tmp_path / "nfcapd"
        self.dir.mkdir()
        self.port = port or free_port()
        # -B: a socket buffer that holds a whole batch sent unpaced (the
        # default, about 200 KB, overflows at ~150 datagrams sent at once);
        # None: the default, as an operator's nfcapd runs
        buffer = ["-B", str(socket_buffer)] if socket_buffer else []
        self.proc = subprocess.Popen(
            ["nfcapd", "-w", str(self.dir), "-p", str(self.port), "-b", "127.0.0.1", "-t", "3600",
             *buffer],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        _wait_udp_bound(self.port, self.proc)

    def stop(self) -> str:
        if self.proc.poll() is None:
            time.sleep(0.3)         # the last datagrams are read before the signal
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=20)
        return out

    def flows(self) -> list[dict]:
        """Every flow record nfdump reads back: its csv columns (sa, da, sp,
        dp, pr, stos, in, out, dir, svln ...) with int packets and bytes."""
        self.log = self.stop()
        r = subprocess.run(["nfdump", "-R", str(self.dir), "-o", "csv", "-N"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        if not any(line.startswith("ts,") for line in lines):
            return []       # no flows: nfdump prints no header
        start = next(i for i, line in enumerate(lines) if line.startswith("ts,"))
        body = []
        for line in lines[start + 1:]:
            if not line[:1].isdigit():
                break
            body.append(line)
        out = []
        for d in csv.DictReader(io.StringIO("\n".join([lines[start], *body]))):
            d["packets"], d["bytes"] = int(d["ipkt"]), int(d["ibyt"])
            out.append(d)
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Nfacctd(Collector):
    """nfacctd on 127.0.0.1 with its print plugin: every second the flows
    aggregated by source, destination and protocol are appended to a CSV
    file (each write holds what came since the one before). (The memory
    plugin's client cuts long answers short.)"""

    def __init__(self, tmp_path):
        if not shutil.which("nfacctd"):
            missing_peer("nfacctd not installed (Debian package pmacct)")
        self.dir = tmp_path / "nfacctd"
        self.dir.mkdir()
        self.port = free_port()
        self.out = self.dir / "flows.csv"
        conf = self.dir / "nfacctd.conf"
        conf.write_text(f"daemonize: false\nnfacctd_ip: 127.0.0.1\nnfacctd_port: {self.port}\n"
                        "plugins: print\naggregate: src_host, dst_host, proto\n"
                        f"print_output: csv\nprint_output_file: {self.out}\n"
                        "print_output_file_append: true\nprint_refresh_time: 1\n")
        self.log = self.dir / "nfacctd.log"
        with open(self.log, "w") as log:
            # its own session: close() ends the core and its plugin together
            self.proc = subprocess.Popen(["nfacctd", "-f", str(conf)], stdout=log,
                                         stderr=subprocess.STDOUT, text=True,
                                         start_new_session=True)
        # the plugin is ready once it has purged its (empty) cache: flows
        # sent to the core before that are lost
        deadline = time.monotonic() + 10
        while "Purging cache - END" not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nfacctd did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def flows(self, expect_bytes: int | None = None, timeout: float = 10.0) -> list[dict]:
        """The rows written so far (src, dst, proto, packets, bytes); with
        expect_bytes, polled until their total reaches it or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            rows = []
            text = self.out.read_text() if self.out.exists() else ""
            for row in csv.DictReader(line for line in io.StringIO(text)
                                      if not line.startswith("SRC_IP") or not rows):
                if row.get("SRC_IP") in (None, "SRC_IP"):
                    continue
                rows.append({"src": row["SRC_IP"], "dst": row["DST_IP"],
                             "proto": row["PROTOCOL"], "packets": int(row["PACKETS"]),
                             "bytes": int(row["BYTES"])})
            total = sum(d["bytes"] for d in rows)
            if expect_bytes is None or total >= expect_bytes or time.monotonic() > deadline:
                return rows
            time.sleep(0.2)

    def close(self) -> None:
        """Kill the core and its plugin (their output has been read; a
        SIGTERM makes the plugin wait for a core that is gone)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
