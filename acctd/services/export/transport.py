"""Sending an encoder's messages: UDP to one collector (a lost datagram is
the collector's to notice through the sequence numbers), or IPFIX over TCP
(RFC 7011 section 10.4: templates once at the start of each connection, no
refresh; a dropped connection is reconnected with backoff by a thread of
its own, the records queued meanwhile, up to a bound, then dropped and
counted)."""

from __future__ import annotations

import collections
import logging
import select
import socket
import threading
from collections.abc import Callable

import numpy as np

from acctd.common.throttle import Throttle
from acctd.services.export.encoder import Encoder
from acctd.services.export.messages import Now

log = logging.getLogger("acctd.export")
throttled = Throttle(log)

QUEUE_RECORDS = 1_000_000        # records held for a TCP collector that is away
BACKOFF_S = (0.5, 1, 2, 5, 10, 30)


def split_destination(text: str) -> tuple[str, int]:
    """"host:port" or "[v6 address]:port" -> (host, port); ValueError says why."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"expected [address]:port for an IPv6 address, got {text!r}")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port (port 1 to 65535), got {text!r}")
    return host, int(port)


def resolve(host: str, port: int, kind: int) -> tuple:
    family, _, _, _, addr = socket.getaddrinfo(host, port, type=kind)[0]
    return family, addr


class UdpSender:
    """One collector over UDP; the encoder's messages go out as they come."""

    def __init__(self, destination: str, encoder: Encoder):
        self.destination, self.encoder = destination, encoder
        self.sent = self.errors = 0
        self.sock: socket.socket | None = None
        self.addr = None

    def open(self) -> None:
        try:
            family, self.addr = resolve(*split_destination(self.destination), socket.SOCK_DGRAM)
            self.sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as e:
            self.errors += 1
            throttled.warning("resolve", "export to %s: %s", self.destination, e)

    def send(self, records: np.ndarray, now: Now) -> None:
        messages = self.encoder.encode(records, now)
        if self.sock is None:
            self.open()
            if self.sock is None:
                return
        for m in messages:
            try:
                self.sock.sendto(m, self.addr)
                self.sent += 1
            except OSError as e:    # a refused port, a full buffer: the message is lost
                self.errors += 1
                throttled.warning("udp", "export to %s: %s", self.destination, e)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def status(self) -> dict:
        return {"destination": self.destination, "transport": "udp", "messages_sent": self.sent,
                "errors": self.errors, **self.encoder.status()}


class TcpSender:
    """One IPFIX collector over TCP, served by its own thread."""

    def __init__(self, destination: str, encoder: Encoder,
                 clock: Callable[[], Now] = Now.sample, queue_records: int = QUEUE_RECORDS):
        self.destination, self.encoder, self.clock = destination, encoder, clock
        self.queue_records = queue_records
        self.sent = self.errors = self.dropped = self.connects = 0
        self.connected = False
        self._queue: collections.deque[np.ndarray] = collections.deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"export {self.destination}",
                                        daemon=True)
        self._thread.start()

    def send(self, records: np.ndarray, now: Now) -> None:
        if not len(records):
            return
        with self._cond:
            room = self.queue_records - self._queued
            if room < len(records):
                self.dropped += len(records) - max(room, 0)
                throttled.warning("tcp-queue", "export to %s: collector away, records dropped",
                                  self.destination)
                records = records[:max(room, 0)]
            if len(records):
                self._queue.append(records)
                self._queued += len(records)
                self._cond.notify()

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued if connected (within timeout), then stop."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def status(self) -> dict:
        return {"destination": self.destination, "transport": "tcp", "connected": self.connected,
                "connects": self.connects, "messages_sent": self.sent, "errors": self.errors,
                "records_dropped": self.dropped, "records_queued": self._queued,
                **self.encoder.status()}

    def _run(self) -> None:
        attempt = 0
        while True:
            with self._cond:
                if self._stop and (not self._queue or attempt):
                    return
            try:
                family, addr = resolve(*split_destination(self.destination), socket.SOCK_STREAM)
                with socket.socket(family, socket.SOCK_STREAM) as sock:
                    sock.settimeout(5)
                    sock.connect(addr)
                    self.connected, attempt = True, 0
                    self.connects += 1
                    self._write(sock, self.encoder.templates(self.clock()))
                    self._serve(sock)
                    return
            except OSError as e:
                self.errors += 1
                throttled.warning("tcp", "export to %s: %s", self.destination, e)
            finally:
                self.connected = False
            with self._cond:
                self._cond.wait_for(lambda: self._stop, BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
            attempt += 1

    def _serve(self, sock: socket.socket) -> None:
        """Send queued records until stopped and drained; an error raises
        (the batch being sent is kept for the next connection)."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stop)
                if not self._queue:
                    return
                records = self._queue[0]
            self._check_open(sock)
            self._write(sock, self.encoder.encode(records, self.clock()))
            with self._cond:
                self._queue.popleft()
                self._queued -= len(records)

    @staticmethod
    def _check_open(sock: socket.socket) -> None:
        """A collector never sends: readable means it closed (or reset).
        Asked before each batch, so a batch is not written into a connection
        already gone (the first write after the peer's close succeeds)."""
        if select.select([sock], [], [], 0)[0]:
            raise ConnectionResetError("the collector closed the connection")

    def _write(self, sock: socket.socket, messages) -> None:
        for m in messages:
            sock.sendall(m)
            self.sent += 1
