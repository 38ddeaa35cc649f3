"""The UDP listener of one `[[collector]]`: packets from accepted exporters
are decoded (the format is told by the version word), counted per
exporter, and handed on as records. Nothing an exporter sends stops it: a
packet a decoder refuses is counted `malformed` and dropped whole."""

from __future__ import annotations

import ctypes
import dataclasses
import ipaddress
import logging
import socket
import threading
import time

import numpy as np

from acctd.common.throttle import Throttle
from acctd.services.collector import netflow5, netflow9, sflow
from acctd.services.collector.records import Malformed
from acctd.services.collector.templates import Store

log = logging.getLogger("acctd.collector")

MAX_EXPORTERS = 1024    # per listener, when `source` is a prefix
SFLOW5 = b"\0\0\0\5"
SFLOW_BATCH = 1024      # sFlow samples decoded together (and at every drain)


@dataclasses.dataclass
class Exporter:
    """What `acctctl status` shows of one exporter."""
    packets: int = 0
    records: int = 0
    malformed: int = 0
    unknown_template: int = 0
    refused_templates: int = 0
    unmatched: int = 0      # records of addresses no unit of this source has
    last_error: str = ""
    # what the exporter's sequence numbers say never arrived (UDP loses, and
    # is not retransmitted), in the sequence's own unit: v5 and IPFIX
    # records, v9 and sFlow packets
    lost: int = 0
    next: dict = dataclasses.field(default_factory=dict, repr=False)  # domain -> expected

    def sequenced(self, domain: int, seq: int, advance: int | None) -> None:
        want = self.next.get(domain)
        if want is not None:
            gap = (seq - want) & 0xFFFFFFFF
            if 0 < gap < 1 << 20:  # ahead: lost; far off: reordered or restarted
                self.lost += gap
        if advance is None:
            self.next.pop(domain, None)
        elif domain in self.next or len(self.next) < 64:
            self.next[domain] = (seq + advance) & 0xFFFFFFFF


def decode(data: bytes, exporter: str, store: Store) -> tuple[np.ndarray, netflow9.Result | None]:
    """Any export packet -> records (and, for v9/IPFIX, what happened to
    templates). Raises Malformed, and only that, for what it refuses."""
    records, res, _ = decode_sequenced(data, exporter, store)
    return records, res


def decode_sequenced(data: bytes, exporter: str, store: Store):
    """decode(), and the packet's place in its exporter's sequence:
    (domain, sequence number, what this packet advances it by, or None
    when that cannot be known: data sets before their template)."""
    if len(data) < 4:
        raise Malformed("shorter than any header")
    version = int.from_bytes(data[:2], "big")
    if version == 5:
        recs, seq = netflow5.decode(data)
        return recs, None, (0, seq, len(recs))  # v5 counts flows
    if version == 9:
        res = netflow9.decode_v9(data, exporter, store)
        return res.records, res, (res.domain, res.sequence, 1)  # v9 counts packets
    if version == 10:
        res = netflow9.decode_ipfix(data, exporter, store)
        known = not (res.unknown_template or res.skipped_varlen)
        return res.records, res, (res.domain, res.sequence, res.data_records if known else None)
    if version == 0 and int.from_bytes(data[:4], "big") == 5:
        recs, seq = sflow.decode(data)
        return recs, None, (0, seq, 1)
    raise Malformed(f"unknown export version {version}")


def udp_socket(host: str, port: int, netns: str | None) -> socket.socket:
    """A bound UDP socket, made in `netns` (the hooked interfaces' namespace,
    where the exporters send) when one is given: a socket stays in the
    namespace it was made in, and setns() moves only the thread calling it,
    so a thread of its own makes it there."""
    def make():
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            s.bind((host, port))
        except OSError:
            s.close()
            raise
        return s
    if not netns:
        return make()
    got: dict = {}

    def inside():
        try:
            with open(f"/run/netns/{netns}") as f:
                if _libc.setns(f.fileno(), 0x40000000) != 0:  # CLONE_NEWNET
                    raise OSError(ctypes.get_errno(), f"setns {netns}")
            got["sock"] = make()
        except OSError as e:
            got["error"] = e
    t = threading.Thread(target=inside)
    t.start()
    t.join()
    if "error" in got:
        raise got["error"]
    return got["sock"]


_libc = ctypes.CDLL(None, use_errno=True)


class Listener:
    """One socket, one thread. `deliver(records, exporter)` gets each
    packet's records; `accepted` are the exporters' networks."""

    def __init__(self, host: str, port: int, accepted, store: Store, deliver,
                 clock: str = "remote", netns: str | None = None):
        self.sock = udp_socket(host, port, netns)
        self.sock.settimeout(0.5)
        self.address = self.sock.getsockname()[:2]
        self.accepted = tuple(accepted)
        self.store = store
        self.deliver = deliver
        self.clock = clock
        self.exporters: dict[str, Exporter] = {}
        self._verdicts: dict[str, bool] = {}   # address -> accepted, as checked once
        self._sflow: list[sflow.Headers] = []  # walked, not yet decoded
        self._sflow_n = 0
        self._sflow_lock = threading.Lock()
        self.refused = 0          # packets from addresses not in `source`
        self.last_refused = ""
        self._stop = threading.Event()
        self._warn = Throttle(log)
        self._thread = threading.Thread(target=self._run, name=f"collector:{port}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _accepts(self, addr: str) -> bool:
        known = self._verdicts.get(addr)
        if known is None:
            known = self._check(addr)
            if len(self._verdicts) >= 4 * MAX_EXPORTERS:  # bounded, whoever sends
                self._verdicts.clear()
            self._verdicts[addr] = known
        return known

    def _check(self, addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr.split("%")[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.accepted)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            self.handle(data, peer[0])

    def handle(self, data: bytes, addr: str) -> None:
        if not self._accepts(addr):
            self.refused += 1
            self.last_refused = addr
            return
        ex = self.exporters.get(addr)
        if ex is None:
            if len(self.exporters) >= MAX_EXPORTERS:
                self.refused += 1
                return
            ex = self.exporters[addr] = Exporter()
        ex.packets += 1
        if data[:4] == SFLOW5:  # decoded many datagrams together: flush()
            try:
                heads, seq = sflow.walk(data)
            except Malformed as e:
                self._malformed(ex, addr, str(e))
                return
            ex.records += len(heads)
            ex.sequenced(0, seq, 1)
            with self._sflow_lock:
                self._sflow.append(heads)
                self._sflow_n += len(heads)
                if self._sflow_n < SFLOW_BATCH:
                    return
            self.flush()
            return
        try:
            records, res, seq = decode_sequenced(data, addr, self.store)
        except Malformed as e:
            self._malformed(ex, addr, str(e))
            return
        except Exception as e:  # a decoder bug must not stop the listener either
            self._malformed(ex, addr, f"decoder error: {e!r}")
            return
        ex.sequenced(*seq)
        if res is not None:
            ex.unknown_template += res.unknown_template
            ex.refused_templates += res.refused_templates
        if len(records):
            if self.clock == "local":
                now = int(time.time() * 1000)
                records["first_ms"] = records["last_ms"] = now
            ex.records += len(records)
            self.deliver(records, addr, ex)

    def flush(self) -> None:
        """The sFlow headers held, decoded as one batch and handed on."""
        with self._sflow_lock:
            held, self._sflow, self._sflow_n = self._sflow, [], 0
        if not held:
            return
        records = sflow.parse(sflow.Headers.join(held))
        if len(records):
            if self.clock == "local":
                records["first_ms"] = records["last_ms"] = int(time.time() * 1000)
            self.deliver(records, None, None)

    def _malformed(self, ex: Exporter, addr: str, why: str) -> None:
        ex.malformed += 1
        ex.last_error = why
        self._warn.warning("malformed", "collector %s:%d: malformed packet from %s: %s "
                           "(counted; `acctctl status` shows how many)", *self.address, addr, why)

    def status(self) -> dict:
        return {"listen": f"{self.address[0]}:{self.address[1]}", "refused": self.refused,
                "last_refused": self.last_refused,
                "exporters": {a: {k: v for k, v in dataclasses.asdict(e).items() if k != "next"}
                              | {"templates": self.store.count(a)}
                              for a, e in sorted(self.exporters.items())}}

