"""A standing comparison, not run in CI (root; Debian pmacct, softflowd and
tcpreplay): the same blast of 64-byte UDP frames through a veth, counted in
turn by acctd (XDP on the receiving end), pmacctd and softflowd (libpcap on
it). For each: counted/received, and the CPU it spends per packet received:
acctd's from bpf_stats (run_time_ns of its program), the others' from
/proc/<pid>/stat (user + system time of their process group).

    python -m acctd.bench.peers [--flows 65536] [--addrs 1024] [--seconds 3]

Frames go to a MAC the receiver does not have, so its stack drops them
without replying: every hook and capture sees exactly the blast, nothing else.
JSON lines as `make bench` prints them, then a table on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

GEN_MAC, SINK_MAC = "02:00:00:77:00:01", "02:00:00:77:00:99"
DPORT = 9


def emit(name: str, value: float, unit: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 4), "unit": unit}), flush=True)


def run(*args: str, ns: str | None = None, **kw) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


@contextlib.contextmanager
def veth_pair():
    """Namespaces gen and mon, joined by veth g0 <-> m0; removed afterwards."""
    tag = f"acctd-peers-{os.getpid()}"
    gen, mon = f"{tag}-g", f"{tag}-m"
    try:
        for ns in (gen, mon):
            run("ip", "netns", "add", ns)
        run("ip", "link", "add", "g0", "netns", gen, "address", GEN_MAC,
            "type", "veth", "peer", "name", "m0", "netns", mon)
        run("ip", "link", "set", "lo", "up", ns=mon)
        for ns, dev in ((gen, "g0"), (mon, "m0")):
            # no IPv6: neighbour discovery and MLD would add frames to the blast
            run("sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1", ns=ns)
            run("ip", "link", "set", dev, "up", ns=ns)
        yield gen, mon
    finally:
        for ns in (gen, mon):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def write_pcap(path: str, flows: int, addrs: int) -> None:
    """One frame per flow: `flows` source ports spread over `addrs` sources."""
    from scapy.all import IP, UDP, Ether, Raw, wrpcap
    frames = []
    for i in range(flows):
        a = i % addrs
        frames.append(Ether(src=GEN_MAC, dst=SINK_MAC)
                      / IP(src=f"10.77.{a >> 8}.{a & 255}", dst="192.0.2.9")
                      / UDP(sport=1024 + i // addrs, dport=DPORT) / Raw(b"\0" * 18))
    wrpcap(path, frames)


def blast(gen: str, pcap: str, seconds: float) -> int:
    """tcpreplay at top speed for `seconds`; the frames it says it sent."""
    out = run("tcpreplay", "-i", "g0", "--topspeed", "--preload-pcap", "--loop", "0",
              "--duration", str(int(seconds)), pcap, ns=gen).stdout
    m = re.search(r"Actual: (\d+) packets", out)
    if not m:
        raise SystemExit(f"peers: cannot read tcpreplay's summary:\n{out}")
    return int(m.group(1))


def rx_packets(mon: str) -> int:
    link = json.loads(run("ip", "-s", "-j", "link", "show", "m0", ns=mon).stdout)[0]
    return int(link["stats64"]["rx"]["packets"])


def group_cpu_s(pgid: int) -> float:
    """User + system seconds of every process in a process group."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == pgid:  # fields[0] is the state: pgrp is the 5th field
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


class Peer:
    """A userspace peer started in the receiving namespace in its own group."""
    name = ""

    def __init__(self, mon: str, tmp: str):
        self.mon, self.tmp = mon, tmp
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.mon, *self.command()],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        time.sleep(1.5)  # capture open
        if self.proc.poll() is not None:
            raise SystemExit(f"peers: {self.name} exited at once ({self.proc.returncode})")

    def cpu_s(self) -> float:
        return group_cpu_s(self.proc.pid)

    def counted(self) -> int:
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


class Pmacctd(Peer):
    name = "pmacctd"

    def command(self) -> list[str]:
        self.pipe = os.path.join(self.tmp, "pmacct.pipe")
        conf = os.path.join(self.tmp, "pmacctd.conf")
        with open(conf, "w") as f:
            f.write(f"daemonize: false\npcap_interface: m0\nplugins: memory\n"
                    f"aggregate: src_host, dst_host, src_port, dst_port, proto\n"
                    f"imt_path: {self.pipe}\nimt_mem_pools_number: 0\n"
                    # the largest buffers between its core and plugin it takes
                    # without tuning the kernel: its drops are its own
                    "plugin_buffer_size: 102400\nplugin_pipe_size: 10240000\n")
        return ["pmacctd", "-f", conf]

    def counted(self) -> int:
        out = run("pmacct", "-p", self.pipe, "-s", "-O", "csv", ns=self.mon).stdout.splitlines()
        col = out[0].split(",").index("PACKETS")
        return sum(int(line.split(",")[col]) for line in out[1:] if line.strip())


class Softflowd(Peer):
    name = "softflowd"

    def command(self) -> list[str]:
        self.ctl = os.path.join(self.tmp, "softflowd.ctl")
        return ["softflowd", "-d", "-i", "m0", "-c", self.ctl, "-n", f"127.0.0.1:{DPORT}"]

    def counted(self) -> int:
        out = run("softflowctl", "-c", self.ctl, "statistics", ns=self.mon).stdout
        return int(re.search(r"Packets processed: (\d+)", out).group(1))


def measure_peer(peer: Peer, gen: str, pcap: str, seconds: float) -> dict:
    peer.start()
    try:
        rx0, cpu0 = rx_packets(peer.mon), peer.cpu_s()
        sent = blast(gen, pcap, seconds)
        time.sleep(2)  # let the capture and the plugins catch up
        rx, cpu = rx_packets(peer.mon) - rx0, peer.cpu_s() - cpu0
        counted = peer.counted()
    finally:
        peer.stop()
    return {"sent": sent, "received": rx, "counted": counted, "ns_per_packet": cpu * 1e9 / rx}


def measure_acctd(mon: str, gen: str, pcap: str, seconds: float, flows: int) -> dict:
    from acctd.kernel import abi, drain, syscalls
    from acctd.kernel.build import Sizes
    from acctd.kernel.datapath import Datapath, Hook
    sizes = Sizes(pin_root=f"/sys/fs/bpf/acctd-peers-{os.getpid()}", flows=max(flows, 65536),
                  addrs=65536)
    dp = Datapath(sizes, netns=mon)
    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        stats_was = f.read().strip()
    try:
        dp.attach([Hook("m0", abi.Role.LAN, "xdp-native")])
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write("1")
        slot = next(iter(dp.hooked_slots().values()))[0]

        def state():
            ifs = drain.read(dp.maps["acct_ifaces"])[1][slot]
            return (int(ifs["packets"].sum()),
                    syscalls.prog_info(dp.prog_fds["acct_xdp"]).run_time_ns)
        rx0, (n0, t0) = rx_packets(mon), state()
        sent = blast(gen, pcap, seconds)
        rx, (n, t) = rx_packets(mon) - rx0, state()
    finally:
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write(stats_was)
        dp.detach()
    return {"sent": sent, "received": rx, "counted": n - n0, "ns_per_packet": (t - t0) / rx}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m acctd.bench.peers", description=__doc__.split("\n\n")[0])
    ap.add_argument("--flows", type=int, default=65536)
    ap.add_argument("--addrs", type=int, default=1024)
    ap.add_argument("--seconds", type=float, default=3)
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("peers: needs root (namespaces, XDP)")
    missing = [p for p in ("tcpreplay", "pmacctd", "pmacct", "softflowd", "softflowctl")
               if not shutil.which(p)]
    if missing:
        raise SystemExit(f"peers: needs {', '.join(missing)} (Debian tcpreplay, pmacct, softflowd)")
    results = {}
    with tempfile.TemporaryDirectory() as tmp, veth_pair() as (gen, mon):
        pcap = os.path.join(tmp, "blast.pcap")
        write_pcap(pcap, a.flows, a.addrs)
        results["acctd"] = measure_acctd(mon, gen, pcap, a.seconds, a.flows)
        for cls in (Pmacctd, Softflowd):
            results[cls.name] = measure_peer(cls(mon, tmp), gen, pcap, a.seconds)
    label = f"flows_{a.flows}_addrs_{a.addrs}"
    for name, r in results.items():
        emit(f"peers.counted_ratio.{label}.{name}", r["counted"] / r["received"], "ratio")
        emit(f"peers.cpu_ns_per_packet.{label}.{name}", r["ns_per_packet"], "ns")
    print(f"{'peer':<10} {'sent':>10} {'received':>10} {'counted':>10} {'counted/recv':>12} "
          f"{'CPU ns/pkt':>10}", file=sys.stderr)
    for name, r in results.items():
        print(f"{name:<10} {r['sent']:>10} {r['received']:>10} {r['counted']:>10} "
              f"{r['counted'] / r['received']:>12.3f} {r['ns_per_packet']:>10.0f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
