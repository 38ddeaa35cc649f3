"""Sending an encoder's messages: UDP to one collector, paced (a lost
datagram is the collector's to notice through the sequence numbers), or
IPFIX over TCP (RFC 7011 section 10.4: templates once at the start of each
connection, no refresh; a dropped connection is reconnected with backoff
by a thread of its own, the records queued meanwhile, up to a bound, then
dropped and counted).

TCP tells the application nothing of what the peer received, but the
kernel knows what the peer's TCP acknowledged: SIOCOUTQ is what was
written and not yet acknowledged, even after a reset. So the messages
written on a connection are held until their last byte is acknowledged,
and after a broken connection the rest (the one cut halfway included) is
sent again on the next, whole: none twice, none lost, but what a collector
acknowledged and did not read before it died (its receive buffer). A batch
may carry a tag (the exporter's spool row, acctd/store/export.py): `acked`
is the highest tag whose batch the collector acknowledged whole."""

from __future__ import annotations

import collections
import fcntl
import logging
import select
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable

import numpy as np

from acctd.common.throttle import Throttle
from acctd.services.export.encoder import Encoder
from acctd.services.export.messages import Now

log = logging.getLogger("acctd.export")
throttled = Throttle(log)

QUEUE_RECORDS = 1_000_000        # records held for a TCP collector that is away
BACKOFF_S = (0.5, 1, 2, 5, 10, 30)
WATCH_S = 0.2                    # how often a quiet connection with messages in flight is checked
UDP_RATE = 10_000                # datagrams per second to one collector, by default
UDP_BURST = 32                   # datagrams sent back to back between the pacer's waits
UDP_QUEUE = 65_536               # datagrams held for the pacer (about 90 MB at most)


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
    """One collector over UDP. A drain makes its records due at once, and a
    collector's socket buffer holds a few hundred datagrams (a stock nfcapd
    kept 13,693 of 30,000 records sent back to back in 1,394), so a thread
    of the sender's own sends them at `rate` datagrams per second,
    UDP_BURST at a time. The messages are encoded by the caller, in order;
    beyond UDP_QUEUE waiting the newest are dropped and counted. rate 0
    sends as they come."""

    def __init__(self, destination: str, encoder: Encoder, rate: int = UDP_RATE,
                 queue: int = UDP_QUEUE):
        self.destination, self.encoder = destination, encoder
        self.rate, self.queue_limit = rate, queue
        self.sent = self.errors = self.dropped = 0
        self.sock: socket.socket | None = None
        self.addr = None
        self._queue: collections.deque[bytes] = collections.deque()
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        try:
            family, self.addr = resolve(*split_destination(self.destination), socket.SOCK_DGRAM)
            self.sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as e:
            self.errors += 1
            throttled.warning("resolve", "export to %s: %s", self.destination, e)
        if self.rate and self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"export {self.destination}")
            self._thread.start()

    def send(self, records: np.ndarray, now: Now, tag: int | None = None) -> None:
        """tag: a TCP batch's spool row; UDP confirms nothing, so none is kept."""
        messages = self.encoder.encode(records, now)
        if self.sock is None:
            self.open()
            if self.sock is None:
                return
        if not self.rate:
            for m in messages:
                self._put(m)
            return
        with self._cond:
            room = self.queue_limit - len(self._queue)
            if room < len(messages):
                self.dropped += len(messages) - max(room, 0)
                throttled.warning("udp-queue", "export to %s: more than %d datagrams waiting "
                                  "at %d/s, the newest dropped (raise udp-rate)",
                                  self.destination, self.queue_limit, self.rate)
                messages = messages[:max(room, 0)]
            self._queue.extend(messages)
            self._cond.notify()

    def _run(self) -> None:
        due = time.monotonic()      # when the next burst may go
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stop)
                if not self._queue:
                    return
                burst = [self._queue.popleft() for _ in range(min(UDP_BURST, len(self._queue)))]
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            else:
                due = now       # idle time is not saved up for a longer burst
            due += len(burst) / self.rate
            for m in burst:
                self._put(m)

    def _put(self, m: bytes) -> None:
        try:
            self.sock.sendto(m, self.addr)
            self.sent += 1
        except OSError as e:    # a refused port, a full buffer: the message is lost
            self.errors += 1
            throttled.warning("udp", "export to %s: %s", self.destination, e)

    def close(self, timeout: float = 5.0) -> None:
        """Send what waits (within timeout: the rest is dropped), then stop."""
        if self._thread is not None:
            with self._cond:
                self._stop = True
                self._cond.notify()
            self._thread.join(timeout)
            with self._cond:
                if self._queue:
                    self.dropped += len(self._queue)
                    log.warning("export to %s: %d datagrams not sent in %g s at close",
                                self.destination, len(self._queue), timeout)
                    self._queue.clear()
            if self._thread.is_alive():     # in its last burst
                self._thread.join()
            self._thread = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def status(self) -> dict:
        return {"destination": self.destination, "transport": "udp", "messages_sent": self.sent,
                "errors": self.errors, "messages_queued": len(self._queue),
                "messages_dropped": self.dropped, **self.encoder.status()}


def unacknowledged(sock: socket.socket) -> int:
    """Bytes written to sock that its peer has not acknowledged (SIOCOUTQ)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]


class TcpSender:
    """One IPFIX collector over TCP, served by its own thread."""

    def __init__(self, destination: str, encoder: Encoder,
                 clock: Callable[[], Now] = Now.sample, queue_records: int = QUEUE_RECORDS):
        self.destination, self.encoder, self.clock = destination, encoder, clock
        self.queue_records = queue_records
        self.sent = self.errors = self.dropped = self.connects = self.resent = 0
        self.connected = False
        self.acked = -1     # the highest batch tag acknowledged whole
        self._queue: collections.deque[tuple[np.ndarray, int | None]] = collections.deque()
        self._queued = 0
        # the messages of the batch taken from the queue not yet written,
        # and those written on this connection and not yet acknowledged
        # (the connection's byte count at their end), each with the tag of
        # the batch it ends (None: not a batch's last): the thread's own
        self._unsent: collections.deque[tuple[memoryview, int | None]] = collections.deque()
        self._unacked: collections.deque[tuple[int, memoryview, int | None]] = \
            collections.deque()
        self._written = 0
        self._cond = threading.Condition()
        self._stop = False
        self._stop_by = 0.0
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"export {self.destination}",
                                        daemon=True)
        self._thread.start()

    def send(self, records: np.ndarray, now: Now, tag: int | None = None) -> None:
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
                self._queue.append((records, tag))
                self._queued += len(records)
                self._cond.notify()

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued if connected and wait for its acknowledgement
        (within timeout), then stop."""
        with self._cond:
            self._stop = True
            self._stop_by = time.monotonic() + timeout
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def status(self) -> dict:
        return {"destination": self.destination, "transport": "tcp", "connected": self.connected,
                "connects": self.connects, "messages_sent": self.sent, "errors": self.errors,
                "records_dropped": self.dropped, "records_queued": self._queued,
                "messages_resent": self.resent,
                **self.encoder.status()}

    def _run(self) -> None:
        attempt = 0
        while True:
            with self._cond:
                if self._stop and ((not self._queue and not self._unsent) or attempt):
                    return
            try:
                family, addr = resolve(*split_destination(self.destination), socket.SOCK_STREAM)
                with socket.socket(family, socket.SOCK_STREAM) as sock:
                    sock.settimeout(5)
                    sock.connect(addr)
                    self.connected, attempt = True, 0
                    self.connects += 1
                    self._written = 0
                    try:
                        for m in self._templates():
                            self._put(sock, m)
                        self._serve(sock)
                    except OSError:
                        self._take_back(sock)
                        raise
                    return
            except OSError as e:
                self.errors += 1
                throttled.warning("tcp", "export to %s: %s", self.destination, e)
            finally:
                self.connected = False
            with self._cond:
                self._cond.wait_for(lambda: self._stop, BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
            attempt += 1

    def _templates(self) -> list[bytes]:
        """The templates a connection opens with. Messages left from the
        last one go first after them: the templates take the first one's
        sequence number (IPFIX: bytes 8-12) and the left ones move on by
        the templates' options records (one each), so the stream counts
        on as the encoder does."""
        out = self.encoder.templates(self.clock())
        if not self._unsent:
            return out
        seq = struct.unpack_from(">I", self._unsent[0][0], 8)[0]
        opened = []
        for m in out:
            opened.append(m[:8] + struct.pack(">I", seq) + m[12:])
            seq = (seq + 1) & 0xFFFF_FFFF
        moved = collections.deque()
        for m, tag in self._unsent:
            b = bytearray(m)
            struct.pack_into(">I", b, 8, (struct.unpack_from(">I", b, 8)[0] + len(out))
                             & 0xFFFF_FFFF)
            moved.append((memoryview(b), tag))
        self._unsent = moved
        return opened

    def _serve(self, sock: socket.socket) -> None:
        """Send queued records until stopped and drained; an error raises
        (what was not acknowledged is sent again on the next connection)."""
        while True:
            if not self._unsent:
                with self._cond:    # messages not acknowledged: watch for a reset meanwhile
                    self._cond.wait_for(lambda: self._queue or self._stop,
                                        WATCH_S if self._unacked else None)
                    head = self._queue[0] if self._queue else None
                if head is None:
                    if self._stop:
                        self._last_acks(sock)
                        return
                    self._acknowledged(sock)
                    self._check_open(sock)
                    continue
                records, tag = head
                self._check_open(sock)
                messages = self.encoder.encode(records, self.clock())
                if messages:
                    self._unsent.extend((m, None) for m in messages[:-1])
                    self._unsent.append((messages[-1], tag))
                elif tag is not None and not self._unacked:   # nothing to send
                    self.acked = tag
                with self._cond:
                    self._queue.popleft()
                    self._queued -= len(records)
            m, tag = self._unsent[0]
            self._put(sock, m)
            self._unsent.popleft()
            self._unacked.append((self._written, m, tag))
            self._acknowledged(sock)

    def _last_acks(self, sock: socket.socket) -> None:
        """At close: until the collector acknowledged everything written (or
        the close's time is up), so the spool keeps only what it did not."""
        while self._unacked and time.monotonic() < self._stop_by:
            self._acknowledged(sock)
            if self._unacked:
                time.sleep(0.005)

    def _acknowledged(self, sock: socket.socket) -> None:
        """The messages the peer acknowledged to their end are let go."""
        acked = self._written - unacknowledged(sock)
        while self._unacked and self._unacked[0][0] <= acked:
            tag = self._unacked.popleft()[2]
            if tag is not None:
                self.acked = tag

    @staticmethod
    def _check_open(sock: socket.socket) -> None:
        """A collector never sends: readable means it closed (or reset).
        Asked before each batch, so a batch is not written into a connection
        already gone (the first write after the peer's close succeeds)."""
        if select.select([sock], [], [], 0)[0]:
            raise ConnectionResetError("the collector closed the connection")

    def _put(self, sock: socket.socket, m) -> None:
        """One message written, its bytes counted as the kernel takes them."""
        view = memoryview(m)
        while view:
            n = sock.send(view)
            self._written += n
            view = view[n:]
        self.sent += 1

    def _take_back(self, sock: socket.socket) -> None:
        """After an error: the messages whose end the peer did not
        acknowledge go back in front of the unsent ones."""
        try:
            acked = self._written - unacknowledged(sock)
        except OSError:
            acked = 0       # not known: everything held goes again
        back = [(m, tag) for end, m, tag in self._unacked if end > acked]
        self._unacked.clear()
        self.resent += len(back)
        self._unsent.extendleft(reversed(back))
