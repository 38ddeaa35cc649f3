"""A network-namespace topology for acctd's system tests: two subscribers and a
server behind a gateway, with traffic whose ground truth never comes from acctd.

    sub1 eth0 <-> lan1 ┐
    sub2 eth0 <-> lan2 ┼ gw (forwarding v4+v6) ─ wan0 <-> eth0 srv
                       ┘

Hosts are addressed by their logical name ("sub1", "sub2", "gw", "srv"); the
real namespace names carry the creating pid and a random suffix so parallel and
leftover runs never clash (see `remove_stale`).

Ground truth
------------
Interface counters on a veth are the reference: a veth counts every frame it
carries, once, at transmit time (the peer's rx counters are the same numbers),
whatever the receiving stack later does with it. `rx_bytes` is the Ethernet
frame without FCS, so for untagged frames the IP-layer bytes are
``rx_bytes - 14 * rx_packets``. Two things would spoil that, and both are
removed here: background traffic (no DAD, RA/RS, autoconf or link-local
addresses, permanent neighbour entries so no ARP/ND, MLD reports squeezed into
the first milliseconds, then `quiesce`), and GSO/GRO super-packets, which a
veth counts as one packet with one set of headers.

GSO/GRO runs (`segment_at_gateway`): the sender keeps TSO/GSO on and the
gateway's ingress keeps GRO on, so the gateway (where acctd's hooks sit) sees
the same super-packets as in production. The gateway's egress veth has TSO and
GSO off, which makes the kernel segment each forwarded super-packet in
`validate_xmit_skb` just before the veth transmits, so the receiver's rx
counters count real wire segments; GRO is off at the receiver so nothing is
merged again before anyone looks. Then, at the receiver,
``IP bytes = rx_bytes - 14 * rx_packets`` (`wire_ip_totals`). As an independent
check, `pcap_ip_totals(..., segment_mtu=...)` re-derives the same totals from
a capture of the super-packets at the gateway's ingress, expanding each TCP
packet into ``ceil(payload / mss)`` segments, each with its own IP and TCP
headers (mss = mtu - IP header - TCP header with options).
"""
from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import math
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Iterator

HOSTS = ("sub1", "sub2", "gw", "srv")
ETH_HLEN = 14
VLAN_HLEN = 4


@dataclass(frozen=True)
class Link:
    """One veth pair between a host and the gateway; the host is .2/::2, the gw .1/::1."""
    host: str
    host_if: str
    gw_if: str
    index: int  # goes into the MACs, so frames are recognisable in captures
    v4_prefix: str
    v6_prefix: str

    def v4(self, gw: bool = False) -> str:
        return f"{self.v4_prefix}.{1 if gw else 2}"

    def v6(self, gw: bool = False) -> str:
        return f"{self.v6_prefix}{1 if gw else 2}"

    def mac(self, gw: bool = False) -> str:
        return f"02:ac:00:{self.index:02x}:00:{1 if gw else 2:02x}"


LINKS = {
    "sub1": Link("sub1", "eth0", "lan1", 1, "10.1.0", "fd00:1::"),
    "sub2": Link("sub2", "eth0", "lan2", 2, "10.2.0", "fd00:2::"),
    "srv": Link("srv", "eth0", "wan0", 3, "192.0.2", "2001:db8::"),
}

# Applied to "default" before any veth exists, so every device is born quiet.
# The MLD intervals can't reach zero; 1 ms means the unavoidable reports on
# link-up are over long before `quiesce` has settled.
QUIET_SYSCTLS = {
    "net.ipv6.conf.all.accept_dad": 0,
    "net.ipv6.conf.default.accept_dad": 0,
    "net.ipv6.conf.default.accept_ra": 0,
    "net.ipv6.conf.default.autoconf": 0,
    "net.ipv6.conf.default.router_solicitations": 0,
    "net.ipv6.conf.default.addr_gen_mode": 1,  # no link-local address
    "net.ipv6.conf.default.mldv1_unsolicited_report_interval": 1,
    "net.ipv6.conf.default.mldv2_unsolicited_report_interval": 1,
    "net.ipv4.conf.all.arp_notify": 0,
}
GW_SYSCTLS = {
    "net.ipv4.ip_forward": 1,
    "net.ipv6.conf.all.forwarding": 1,
    "net.ipv6.conf.default.forwarding": 1,
}


@dataclass(frozen=True)
class LinkStats:
    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int
    rx_dropped: int = 0
    tx_dropped: int = 0


@dataclass(frozen=True)
class Traffic:
    """What crossed (or was sent), counted at the IP layer."""
    packets: int
    ip_bytes: int

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(self.packets + other.packets, self.ip_bytes + other.ip_bytes)


@dataclass(frozen=True)
class PingResult:
    transmitted: int
    received: int
    request: Traffic  # every echo request sent, fragments counted separately
    reply: Traffic  # the replies that came back


Snapshot = dict  # {(host, ifname): LinkStats}


class TopologyError(RuntimeError):
    pass


# --- pure helpers (no namespaces needed) -------------------------------------------

def wire_ip_totals(host: str, ifname: str, before: Snapshot, after: Snapshot,
                   direction: str = "rx", vlan_tags: int = 0) -> Traffic:
    """IP packets and bytes that crossed `ifname` between two `snapshot()`s.

    Exact only for frames of one known layout (Ethernet plus `vlan_tags` tags)
    and only when no super-packets crossed (see the module docstring)."""
    a, b = before[(host, ifname)], after[(host, ifname)]
    packets = getattr(b, f"{direction}_packets") - getattr(a, f"{direction}_packets")
    nbytes = getattr(b, f"{direction}_bytes") - getattr(a, f"{direction}_bytes")
    return Traffic(packets, nbytes - (ETH_HLEN + VLAN_HLEN * vlan_tags) * packets)


def echo_ip_lengths(size: int, v6: bool, mtu: int) -> list[int]:
    """IP total lengths of one ICMP echo with `size` payload bytes, fragmented
    the way Linux does it for a path of `mtu` (fragment data in multiples of 8)."""
    ip_hlen = 40 if v6 else 20
    l4 = 8 + size
    if ip_hlen + l4 <= mtu:
        return [ip_hlen + l4]
    frag_hlen = ip_hlen + (8 if v6 else 0)  # IPv6 adds a fragment header
    chunk = (mtu - frag_hlen) // 8 * 8
    sizes = [chunk] * (l4 // chunk) + ([l4 % chunk] if l4 % chunk else [])
    return [frag_hlen + s for s in sizes]


def udp_ip_len(payload_len: int, v6: bool) -> int:
    return (40 if v6 else 20) + 8 + payload_len


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def build_udp_frame(dst_mac: str, src_mac: str, src_ip: str, dst_ip: str,
                    vlan_ids: list[int] | tuple[int, ...] = (), payload_len: int = 64,
                    sport: int = 4000, dport: int = 9, outer_tpid: int = 0x88A8) -> bytes:
    """An Ethernet frame carrying UDP, by hand so the bytes are exactly known.

    One VLAN id gives an 802.1Q tag; two give QinQ with the outer tag's TPID
    `outer_tpid` (802.1ad) and an inner 802.1Q tag."""
    src, dst = ipaddress.ip_address(src_ip), ipaddress.ip_address(dst_ip)
    v6 = src.version == 6
    payload = bytes(i & 0xFF for i in range(payload_len))
    ulen = 8 + payload_len
    if v6:
        pseudo = src.packed + dst.packed + struct.pack("!IxxxB", ulen, 17)
        ucsum = _csum(pseudo + struct.pack("!HHHH", sport, dport, ulen, 0) + payload) or 0xFFFF
        l3 = struct.pack("!IHBB", 6 << 28, ulen, 17, 64) + src.packed + dst.packed
        ethertype = 0x86DD
    else:
        ucsum = 0  # "no checksum" is legal in IPv4 and keeps this short
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 0, 0x4000, 64, 17, 0,
                          src.packed, dst.packed)
        l3 = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
        ethertype = 0x0800
    udp = struct.pack("!HHHH", sport, dport, ulen, ucsum) + payload
    if len(vlan_ids) > 2:
        raise ValueError("at most two VLAN tags")
    tpids = {1: [0x8100], 2: [outer_tpid, 0x8100]}.get(len(vlan_ids), [])
    tags = b"".join(struct.pack("!HH", t, v & 0xFFF) for t, v in zip(tpids, vlan_ids))
    mac = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", ""))
    return mac + tags + struct.pack("!H", ethertype) + l3 + udp


@dataclass(frozen=True)
class PcapPacket:
    proto: int  # IP protocol (for IPv6, the first next-header)
    ip_len: int  # from the IP header, so true even when the capture was cut short
    hdr_len: int  # IP header, plus the TCP header for TCP

    @property
    def payload(self) -> int:
        return self.ip_len - self.hdr_len


def pcap_packets(path: str) -> Iterator[PcapPacket]:
    """The IP packets in a pcap of Ethernet frames, VLAN-tagged or not."""
    from scapy.utils import RawPcapReader  # the only scapy use; keeps import cheap

    with RawPcapReader(path) as reader:
        frames = [frame for frame, _meta in reader]
    for frame in frames:
        off, ethertype = 12, struct.unpack_from("!H", frame, 12)[0]
        while ethertype in (0x8100, 0x88A8):
            off += VLAN_HLEN
            ethertype = struct.unpack_from("!H", frame, off)[0]
        ip = frame[off + 2:]
        if ethertype == 0x0800:
            iphl, iplen, proto = (ip[0] & 0xF) * 4, struct.unpack_from("!H", ip, 2)[0], ip[9]
        elif ethertype == 0x86DD:
            # no extension headers in these tests (fragments would have one)
            iphl, iplen, proto = 40, 40 + struct.unpack_from("!H", ip, 4)[0], ip[6]
        else:
            continue
        tcp_hl = (ip[iphl + 12] >> 4) * 4 if proto == 6 and len(ip) > iphl + 12 else 0
        yield PcapPacket(proto, iplen, iphl + tcp_hl)


def pcap_ip_totals(path: str, segment_mtu: int | None = None) -> Traffic:
    """IP packets and bytes in a pcap, from the IP headers.

    With `segment_mtu`, each TCP packet counts as the segments a device with
    that MTU would emit for it: a GSO super-packet becomes ceil(payload/mss)
    packets, each with its own copy of the IP and TCP headers, where mss =
    segment_mtu - those headers (what TCP uses when the MTU limits it)."""
    total = Traffic(0, 0)
    for p in pcap_packets(path):
        segs = 1
        if segment_mtu is not None and p.proto == 6:
            segs = max(1, math.ceil(p.payload / (segment_mtu - p.hdr_len)))
        total += Traffic(segs, p.payload + segs * p.hdr_len)
    return total


# --- entering a namespace from Python ------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def remove_stale(prefix: str = "acctt") -> list[str]:
    """Delete namespaces left by earlier runs whose creating process is gone.

    Names embed the creator's pid, so a live parallel run is never touched."""
    removed = []
    for name in sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []:
        m = re.fullmatch(rf"{re.escape(prefix)}(\d+)x[0-9a-f]+-\w+", name)
        if m and not _pid_alive(int(m.group(1))):
            _kill_ns_pids(name)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
            removed.append(name)
    return removed


def _kill_ns_pids(name: str) -> None:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
    for pid in map(int, out.split()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# --- the topology ----------------------------------------------------------------------

@dataclass
class Capture:
    """A running or finished tcpdump; read `path` after the `with` block."""
    path: str
    proc: subprocess.Popen
    stats: str = ""  # tcpdump's closing report
    captured: int = 0
    lost: int = 0


class Topology:
    """Build with `with Topology() as t:` (or `up()`/`close()`); everything it
    created, processes included, is gone after `close()`, even after errors."""

    def __init__(self, prefix: str = "acctt"):
        tag = f"{prefix}{os.getpid()}x{secrets.token_hex(3)}"
        self.ns = {h: f"{tag}-{h}" for h in HOSTS}
        self.links = LINKS
        self._procs: list[subprocess.Popen] = []
        self._tmp = tempfile.TemporaryDirectory(prefix=f"{tag}-")
        self._created: list[str] = []

    # lifecycle

    def __enter__(self) -> Topology:
        return self.up()

    def __exit__(self, *exc) -> None:
        self.close()

    def up(self, quiesce: bool = True) -> Topology:
        try:
            self._build()
            if quiesce:
                self.quiesce()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        for host in HOSTS:
            self._run(["ip", "netns", "add", self.ns[host]])
            self._created.append(self.ns[host])
            self._sysctl(host, QUIET_SYSCTLS | (GW_SYSCTLS if host == "gw" else {}))
            self.ip(host, "link", "set", "lo", "up")
        for link in LINKS.values():
            # Created straight inside the namespaces: the names never exist in
            # the root namespace, so they can't clash with another run. Fixed
            # ifindexes (gw 11-13, hosts 21-23) that differ from the peer's:
            # when a veth's ifindex equals its peer's (both "2" in fresh
            # namespaces) linkwatch treats its carrier change as non-urgent and
            # the link needs up to a second to start passing traffic.
            self._run(["ip", "link", "add", "name", link.gw_if, "netns", self.ns["gw"],
                       "address", link.mac(gw=True), "index", str(10 + link.index),
                       "type", "veth", "peer", "name", link.host_if, "netns", self.ns[link.host],
                       "address", link.mac(), "index", str(20 + link.index)])
            for host, ifname, is_gw in ((link.host, link.host_if, False), ("gw", link.gw_if, True)):
                other = not is_gw
                self.ip(host, "addr", "add", f"{link.v4(is_gw)}/24", "dev", ifname)
                self.ip(host, "-6", "addr", "add", f"{link.v6(is_gw)}/64", "dev", ifname, "nodad")
                # Permanent entries for the other end: no ARP or ND, ever.
                for family, addr in (("-4", link.v4(other)), ("-6", link.v6(other))):
                    self.ip(host, family, "neigh", "replace", addr, "lladdr", link.mac(other),
                            "dev", ifname, "nud", "permanent")
                self.ip(host, "link", "set", ifname, "up")
            self.ip(link.host, "route", "add", "default", "via", link.v4(gw=True))
            self.ip(link.host, "-6", "route", "add", "default", "via", link.v6(gw=True))

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe:
                    pipe.close()
        self._procs.clear()
        # Anything that daemonised inside our namespaces is ours too.
        for name in self._created:
            _kill_ns_pids(name)
        for name in self._created:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self._created.clear()
        self._tmp.cleanup()

    # plumbing

    def ip(self, host: str, *args: str) -> str:
        return self._run(["ip", "-n", self.ns[host], *args]).stdout

    def ns_exec(self, host: str, argv: list[str], check: bool = True, timeout: float = 60,
                input: str | None = None) -> subprocess.CompletedProcess:
        return self._run(["ip", "netns", "exec", self.ns[host], *argv], check, timeout, input)

    def popen(self, host: str, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start a process in `host`; `close()` kills it if it's still running."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("text", True)
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns[host], *argv], **kwargs)
        self._procs.append(proc)
        return proc

    @staticmethod
    def _run(argv, check=True, timeout=60, input=None) -> subprocess.CompletedProcess:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
        if check and res.returncode != 0:
            raise TopologyError(f"{' '.join(argv)} -> {res.returncode}: {res.stderr.strip()}")
        return res

    def _sysctl(self, host: str, values: dict) -> None:
        self.ns_exec(host, ["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in values.items())])

    @contextlib.contextmanager
    def inside(self, host: str):
        """Run this thread inside `host`'s namespace, e.g. to attach a BPF
        program by ifname or open a socket there (sockets stay in the namespace
        they were created in after the block ends)."""
        with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{self.ns[host]}") as ns:
            _setns(ns.fileno())
            try:
                yield
            finally:
                _setns(home.fileno())

    # inspection and knobs

    def _links_json(self, host: str, ifname: str | None = None) -> list[dict]:
        dev = ["dev", ifname] if ifname else []
        return json.loads(self.ip(host, "-s", "-j", "link", "show", *dev))

    def ifindex(self, host: str, ifname: str) -> int:
        return self._links_json(host, ifname)[0]["ifindex"]

    def mac(self, host: str, ifname: str) -> str:
        return self._links_json(host, ifname)[0]["address"]

    def link_mtu(self, host: str, ifname: str) -> int:
        return self._links_json(host, ifname)[0]["mtu"]

    @staticmethod
    def _stats(entry: dict) -> LinkStats:
        rx, tx = entry["stats64"]["rx"], entry["stats64"]["tx"]
        return LinkStats(rx["packets"], rx["bytes"], tx["packets"], tx["bytes"],
                         rx["dropped"], tx["dropped"])

    def link_stats(self, host: str, ifname: str) -> LinkStats:
        return self._stats(self._links_json(host, ifname)[0])

    def snapshot(self) -> Snapshot:
        """Counters of every veth in the topology (loopbacks left out)."""
        return self._survey()[0]

    def _survey(self) -> tuple[Snapshot, bool]:
        """A snapshot, and whether every veth is operationally up."""
        entries = [(host, e) for host in HOSTS
                   for e in self._links_json(host) if e["ifname"] != "lo"]
        return ({(host, e["ifname"]): self._stats(e) for host, e in entries},
                all(e["operstate"] == "UP" for _, e in entries))

    def quiesce(self, settle: float = 0.3, timeout: float = 10.0) -> Snapshot:
        """Wait until every veth is up and no counter moves for `settle`
        seconds; return that snapshot.

        Carrier comes up asynchronously (through linkwatch), and IPv6 joins
        its multicast groups, with MLD reports, only then."""
        deadline = time.monotonic() + timeout
        last = now = self.snapshot()
        while time.monotonic() < deadline:
            time.sleep(settle)
            now, all_up = self._survey()
            if now == last and all_up:
                return now
            last = now
        moving = sorted(k for k in now if now[k] != last.get(k))
        raise TopologyError(f"counters still moving after {timeout}s: {moving}")

    def set_offloads(self, host: str, ifname: str, gro: bool | None = None,
                     gso: bool | None = None, tso: bool | None = None) -> None:
        opts = [(k, v) for k, v in (("gro", gro), ("gso", gso), ("tso", tso)) if v is not None]
        if opts:
            self.ns_exec(host, ["ethtool", "-K", ifname,
                                *(w for k, v in opts for w in (k, "on" if v else "off"))])

    def offloads(self, host: str, ifname: str) -> dict[str, bool]:
        out = self.ns_exec(host, ["ethtool", "-k", ifname]).stdout
        feats = dict(re.findall(r"^([\w-]+): (on|off)", out, re.M))
        return {"gro": feats["generic-receive-offload"] == "on",
                "gso": feats["generic-segmentation-offload"] == "on",
                "tso": feats["tcp-segmentation-offload"] == "on"}

    def set_mtu(self, host: str, ifname: str, mtu: int) -> None:
        self.ip(host, "link", "set", "dev", ifname, "mtu", str(mtu))

    def set_all_offloads(self, on: bool) -> None:
        """Segmentation and receive offloads on every veth, so counters count
        wire packets (off) or may count super-packets (on)."""
        for link in LINKS.values():
            self.set_offloads(link.host, link.host_if, gro=on, gso=on, tso=on)
            self.set_offloads("gw", link.gw_if, gro=on, gso=on, tso=on)

    def send_udp(self, src: str, src_addr: str, dst: str, dst_addr: str, count: int,
                 length: int, sport: int = 40000, dport: int = 5201) -> Traffic:
        """`count` UDP datagrams of `length` payload bytes. The receiver's socket
        stays open until everything settled, so no ICMP port unreachable comes
        back (a full receive buffer drops silently). IPv4 only."""
        with self.inside(dst):
            rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with self.inside(src):
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with rx, tx:
            rx.bind((dst_addr, dport))
            tx.bind((src_addr, sport))
            payload = bytes(length)
            for _ in range(count):
                assert tx.sendto(payload, (dst_addr, dport)) == length
            self.quiesce()
        return Traffic(count, count * (20 + 8 + length))

    def segment_at_gateway(self, sender: str, receiver: str) -> None:
        """Offloads for a GSO/GRO run from `sender` to `receiver` (hosts other
        than gw): super-packets up to the gateway, real segments after it. See
        the module docstring for why the receiver's counters are then exact."""
        s, r = LINKS[sender], LINKS[receiver]
        self.set_offloads(sender, s.host_if, gso=True, tso=True)
        self.set_offloads("gw", s.gw_if, gro=True)
        self.set_offloads("gw", r.gw_if, gso=False, tso=False)
        self.set_offloads(receiver, r.host_if, gro=False)

    @contextlib.contextmanager
    def capture(self, host: str, ifname: str, direction: str = "in", bpf_filter: str = "",
                snaplen: int = 128):
        """tcpdump `ifname` ("in", "out" or "inout") into a pcap for the duration
        of the block; read `.path` afterwards. Raises if the kernel dropped any.

        The default snaplen keeps every header of interest; the IP total-length
        field still tells the real size."""
        path = os.path.join(self._tmp.name, f"{host}-{ifname}-{secrets.token_hex(2)}.pcap")
        # --immediate-mode also makes libpcap use TPACKET_V2: with TPACKET_V3 the
        # tail of a capture sits in a ring block until it fills or times out (about
        # 1 s), and tcpdump drops it on SIGINT: thousands of packets, silently.
        # Direction goes through -Q, not the "inbound"/"outbound" filter keywords:
        # with those (libpcap 1.10.3, kernel 6.18) the first matching packet is
        # counted as received but never captured.
        proc = self.popen(host, ["tcpdump", "-i", ifname, "-Q", direction, "-nn", "-U",
                                 "--immediate-mode", "-Z", "root", "-B", "16384",
                                 "-s", str(snaplen), "-w", path,
                                 *([bpf_filter] if bpf_filter else [])])
        cap = Capture(path, proc)
        # tcpdump says "listening on" once the socket is bound; before that
        # packets would be missed silently.
        line = proc.stderr.readline()
        if "listening on" not in line:
            proc.kill()
            raise TopologyError(f"tcpdump failed: {line}{proc.stderr.read()}")
        try:
            yield cap
        finally:
            # SIGINT makes tcpdump exit without draining its ring, so first
            # wait until it has written everything (-U: a write per packet).
            size, stable_since = -1, time.monotonic()
            while time.monotonic() - stable_since < 0.2:
                time.sleep(0.05)
                if os.path.getsize(path) != size:
                    size, stable_since = os.path.getsize(path), time.monotonic()
            proc.send_signal(signal.SIGINT)
            cap.stats = proc.communicate(timeout=10)[1]
        counts = {k: int(v) for v, k in re.findall(
            r"(\d+) packets? (captured|received by filter|dropped by kernel)", cap.stats)}
        cap.captured = counts.get("captured", 0)
        # -Q filters in user space, so "received by filter" includes the other
        # direction and only compares with "captured" when both are wanted.
        cap.lost = counts.get("dropped by kernel", 0) + (
            counts.get("received by filter", 0) - cap.captured if direction == "inout" else 0)
        if cap.lost:
            raise TopologyError(f"capture lost packets: {cap.stats}")

    # traffic

    def ping(self, src: str, dst_addr: str, count: int = 10, size: int = 56,
             interval: float = 0.01, timeout: float = 30) -> PingResult:
        """`count` echo requests of `size` payload bytes. Echoes larger than
        the MTU of the sender's outgoing device are counted as the fragments
        Linux makes; that assumes the rest of the path has the same MTU."""
        v6 = ipaddress.ip_address(dst_addr).version == 6
        dev = json.loads(self.ip(src, "-j", "route", "get", dst_addr))[0]["dev"]
        mtu = self._links_json(src, dev)[0]["mtu"]
        out = self.ns_exec(src, ["ping", "-n", "-q", "-c", str(count), "-s", str(size),
                                 "-i", str(interval), "-W", "2", dst_addr],
                           check=False, timeout=timeout).stdout
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        if not m:
            raise TopologyError(f"ping output not understood: {out!r}")
        sent, got = int(m.group(1)), int(m.group(2))
        lens = echo_ip_lengths(size, v6, mtu)
        per_echo = Traffic(len(lens), sum(lens))
        return PingResult(sent, got, Traffic(sent * per_echo.packets, sent * per_echo.ip_bytes),
                          Traffic(got * per_echo.packets, got * per_echo.ip_bytes))

    def _iperf3(self, client: str, server: str, server_addr: str, extra: list[str],
                port: int, timeout: float) -> dict:
        srv = self.popen(server, ["iperf3", "-s", "-1", "-p", str(port), "-J"])
        try:
            self._wait_listening(server, port)
            res = self.ns_exec(client, ["iperf3", "-c", server_addr, "-p", str(port), "-J",
                                        "--get-server-output", *extra],
                               check=False, timeout=timeout)
            result = json.loads(res.stdout)
            if "error" in result:
                raise TopologyError(f"iperf3: {result['error']}")
            srv.wait(timeout=10)  # -1: the server exits after one test
            return result
        finally:
            if srv.poll() is None:
                srv.kill()
                srv.wait()

    def _wait_listening(self, host: str, port: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ns_exec(host, ["ss", "-Hltn", f"sport = :{port}"]).stdout.strip():
                return
            time.sleep(0.02)
        raise TopologyError(f"nothing listening on {host}:{port}")

    def iperf3_tcp(self, client: str, server: str, server_addr: str, nbytes: int,
                   reverse: bool = False, port: int = 5201, timeout: float = 60) -> dict:
        """Run `iperf3 -n nbytes`; returns iperf3's client JSON (with
        "server_output_json").

        Not a byte-exact transfer: iperf3 (3.12) counts what the client wrote
        (rounded up to whole 128 KiB blocks), and at the end the server closes
        the data connection with unread data, so a RST discards the tail; the
        receiver typically sees 65-95 % of it. The control connection to the
        same port adds a few small packets each way. Take ground truth from
        counters (`wire_ip_totals`), or use `tcp_transfer` for an exact payload."""
        return self._iperf3(client, server, server_addr,
                            ["-n", str(nbytes), *(["-R"] if reverse else [])], port, timeout)

    def tcp_transfer(self, client: str, server: str, server_addr: str, nbytes: int,
                     port: int = 5202, timeout: float = 60) -> int:
        """Send exactly `nbytes` of TCP payload from `client` to `server` and
        wait until the server has read all of it; returns what the server read.

        Ground truth on the wire (without retransmissions, see nstat
        TcpRetransSegs): the payload is `nbytes`, plus SYN, FIN and ACK
        segments without payload. Closing packets may trail the return, so
        take the after-snapshot with `quiesce()`."""
        v6 = ipaddress.ip_address(server_addr).version == 6
        family = socket.AF_INET6 if v6 else socket.AF_INET
        # Sockets keep the namespace they were made in: only creation needs setns.
        with self.inside(server):
            listener = socket.socket(family, socket.SOCK_STREAM)
        with self.inside(client):
            sender = socket.socket(family, socket.SOCK_STREAM)
        received: list[int] = []

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(timeout)
                n = 0
                while chunk := conn.recv(1 << 20):
                    n += len(chunk)
                received.append(n)

        with listener, sender:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((server_addr, port))
            listener.listen(1)
            listener.settimeout(timeout)
            sender.settimeout(timeout)
            thread = threading.Thread(target=serve, daemon=True)
            thread.start()
            sender.connect((server_addr, port))
            block = memoryview(bytes(1 << 20))
            left = nbytes
            while left:
                left -= sender.send(block[:min(left, len(block))])
            sender.shutdown(socket.SHUT_WR)
            sender.recv(1)  # EOF: the server read everything and closed (a FIN, no RST)
            thread.join(timeout)
        if not received:
            raise TopologyError("tcp_transfer: server did not finish")
        return received[0]

    def iperf3_timed(self, client: str, server: str, server_addr: str, seconds: int,
                     omit: int = 0, reverse: bool = False, port: int = 5201) -> dict:
        """Run a TCP iperf3 for `seconds` after `omit` seconds that are left
        out of its totals (slow start, a rate limiter's initial burst).
        Returns iperf3's client JSON (with "server_output_json"); with -R the
        client is the receiver."""
        extra = ["-t", str(seconds), "-O", str(omit), *(["-R"] if reverse else [])]
        return self._iperf3(client, server, server_addr, extra, port, seconds + omit + 30)

    def iperf3_udp(self, client: str, server: str, server_addr: str, nbytes: int,
                   length: int = 1200, bitrate: str = "200M", reverse: bool = False,
                   port: int = 5201, timeout: float = 60) -> dict:
        """Send at least `nbytes` as UDP datagrams of `length` payload bytes.

        Ground truth for the data: end.sum.packets datagrams of
        `udp_ip_len(length, v6)` IP bytes each (`iperf3_udp_traffic`). Besides
        them, iperf3 exchanges one 4-byte UDP datagram each way when the test
        starts, plus the TCP control connection."""
        return self._iperf3(client, server, server_addr,
                            ["-u", "-n", str(nbytes), "-l", str(length), "-b", bitrate,
                             *(["-R"] if reverse else [])], port, timeout)

    def send_vlan_frames(self, src: str, ifname: str, dst_mac: str, src_ip: str, dst_ip: str,
                         vlan_ids: list[int], count: int = 10, payload_len: int = 64,
                         outer_tpid: int = 0x88A8, dport: int = 9) -> Traffic:
        """Send `count` identical tagged UDP frames from a raw socket in `src`.

        Returns the IP packets and bytes sent; the frames are that plus
        14 + 4 * len(vlan_ids) bytes each. Size limits (EMSGSIZE otherwise):
        a packet socket allows MTU + 14 bytes, plus 4 only when the first
        TPID is 0x8100, so with an 802.1Q tag IP can be MTU bytes, with an
        802.1ad outer tag only MTU - 8 (MTU - 4 with outer_tpid=0x8100)."""
        frame = build_udp_frame(dst_mac, self.mac(src, ifname), src_ip, dst_ip, vlan_ids,
                                payload_len, dport=dport, outer_tpid=outer_tpid)
        with self.inside(src):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        with sock:
            sock.bind((ifname, 0))
            for _ in range(count):
                if sock.send(frame) != len(frame):
                    raise TopologyError("short raw send")
        return Traffic(count, count * (len(frame) - ETH_HLEN - VLAN_HLEN * len(vlan_ids)))


def iperf3_udp_traffic(result: dict, length: int, v6: bool) -> Traffic:
    """IP-layer ground truth of the datagrams an iperf3 UDP test sent."""
    packets = result["end"]["sum"]["packets"]
    return Traffic(packets, packets * udp_ip_len(length, v6))
