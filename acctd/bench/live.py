"""`make bench`: the datapath's per-packet cost under live traffic.

BPF_PROG_RUN (acctd.bench.datapath) repeats packets from a small, cache-warm
set; a link with 64k subscribers does not. Here a generator (blast.c,
compiled now) in one network namespace sends through a veth pair into
another, whose end is hooked as a LAN interface, and the kernel's own
statistics (kernel.bpf_stats_enabled=1: run_time_ns / run_cnt of the
attached program) give the cost per packet. Each case runs the acctd
program, then an XDP_PASS or TC_OK program on the same traffic: the
baseline of the same run, since the machine is shared and noisy.

Figures, for each case (flows_1, flows_64k_1kaddr: 64k flows over 1,024
addresses, addrs_64k: 65,536 addresses, one flow each):
- datapath.live_ns.<case>.{xdp,tc}: acct_xdp (native) / acct_tc_ingress;
- datapath.live_ns.<case>.{xdp_pass,tc_ok}: the empty programs;
- datapath.live_x_baseline.<case>.{xdp,tc}: the ratio of the two;
- datapath.live_counted_ratio.<case>: packets the per-address counters
  gained over packets that reached the hooked interface, both hooks
  together. Must be 1.0: the accounting is exact at this rate.
And datapath.live_mem_ns.dependent_load_64mb: one cache and TLB miss at
this moment (a pointer chase, blast.c). The empty programs touch no memory,
so they do not show how loaded the machine's memory is; this does, and a
hash lookup in a 64k-entry table costs a few such misses in a row.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path

from acctd.bench.datapath import emit
from acctd.kernel import abi, datapath as dpmod
from acctd.kernel.build import Sizes
from acctd.kernel.datapath import Datapath, Hook

CASES = (("flows_1", 1, 1), ("flows_64k_1kaddr", 65536, 1024), ("addrs_64k", 65536, 65536))
WARM_S = 0.7     # every flow and address inserted before measuring
MEASURE_S = 2.0
STATS = "/proc/sys/kernel/bpf_stats_enabled"


def build_blast(out: Path) -> Path:
    exe = out / "blast"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(Path(__file__).with_name("blast.c"))],
                   check=True)
    return exe


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


@contextlib.contextmanager
def veth_pair(tag: str):
    """Namespaces gen-<tag> (veth g0) and acct-<tag> (veth a0), IPv6 off so
    nothing but the generator's frames crosses."""
    gen, acct = f"acctbench-gen-{tag}", f"acctbench-acct-{tag}"
    try:
        for ns in (gen, acct):
            sh("ip", "netns", "add", ns)
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
               "net.ipv6.conf.default.disable_ipv6=1")
        sh("ip", "-n", gen, "link", "add", "g0", "type", "veth", "peer", "a0", "netns", acct)
        sh("ip", "-n", gen, "link", "set", "g0", "up")
        sh("ip", "-n", acct, "link", "set", "a0", "up")
        yield gen, acct
    finally:
        for ns in (gen, acct):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)


def mem_ns(blast: Path) -> float:
    out = subprocess.run([str(blast), "chase", str(64 << 20)], check=True, capture_output=True,
                         text=True)
    return float(out.stdout.split()[0])


def run_stats(fd: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) the kernel keeps for a program."""
    got = {}
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            k, _, v = line.partition(":")
            got[k] = v.strip()
    return int(got["run_time_ns"]), int(got["run_cnt"])


def attributed(dp: Datapath) -> int:
    _, v = dp.maps["acct_addrs"].read_all()
    return int(v["packets"].sum()) if len(v) else 0


def clear(dp: Datapath) -> None:
    for name in ("acct_addrs", "acct_flows"):
        keys, _ = dp.maps[name].read_all()
        if len(keys):
            dp.maps[name].delete_batch(keys)


class Live:
    def __init__(self, dp: Datapath, blast: Path, gen: str, warm_s: float = WARM_S,
                 measure_s: float = MEASURE_S):
        self.dp, self.blast, self.gen = dp, blast, gen
        self.warm_s, self.measure_s = warm_s, measure_s
        from bcc import BPF
        self._bpf = BPF(text=b"int tc_ok(struct __sk_buff *skb) { return 0; }")
        self.tc_ok = self._bpf.load_func(b"tc_ok", BPF.SCHED_CLS).fd

    def send(self, nflows: int, naddrs: int, seconds: float) -> int:
        """Frames that reached the hooked end."""
        out = subprocess.run(["ip", "netns", "exec", self.gen, str(self.blast), "g0", str(nflows),
                              str(naddrs), str(seconds)], check=True, capture_output=True, text=True)
        sent, dropped = map(int, out.stdout.split())
        return sent - dropped

    def hook_baseline(self, hook: str) -> int:
        with self.dp._ipr() as ipr:
            idx = ipr.link_lookup(ifname="a0")[0]
            if hook == "xdp":
                fd = self.dp.prog_fds["acct_xdp_empty"]
                dpmod._xdp_set(ipr, idx, fd, dpmod.XDP_FLAGS_DRV_MODE, None)
            else:
                fd = self.tc_ok
                dpmod._tc_set(ipr, idx, dpmod.TC_H_INGRESS_PARENT, fd, "tc_ok", -1)
        return fd

    def measure(self, fd: int, nflows: int, naddrs: int) -> tuple[float, int, int]:
        """(ns per run, frames delivered, packets the addresses gained)."""
        self.send(nflows, naddrs, self.warm_s)
        t0, c0 = run_stats(fd)
        a0 = attributed(self.dp)
        delivered = self.send(nflows, naddrs, self.measure_s)
        t1, c1 = run_stats(fd)
        return (t1 - t0) / max(c1 - c0, 1), delivered, attributed(self.dp) - a0

    def case(self, label: str, nflows: int, naddrs: int) -> None:
        clear(self.dp)
        delivered = counted = 0
        for hook, mode, prog, base in (("xdp", "xdp-native", "acct_xdp", "xdp_pass"),
                                       ("tc", "tc", "acct_tc_ingress", "tc_ok")):
            self.dp.attach([Hook("a0", abi.Role.LAN, mode)])
            ns, d, c = self.measure(self.dp.prog_fds[prog], nflows, naddrs)
            delivered += d
            counted += c
            base_ns, _, _ = self.measure(self.hook_baseline(hook), nflows, naddrs)
            emit(f"datapath.live_ns.{label}.{hook}", ns, "ns")
            emit(f"datapath.live_ns.{label}.{base}", base_ns, "ns")
            emit(f"datapath.live_x_baseline.{label}.{hook}", ns / base_ns, "x")
        emit(f"datapath.live_counted_ratio.{label}", counted / delivered, "ratio")

    def close(self) -> None:
        self._bpf.cleanup()


def run(cases=CASES, warm_s: float = WARM_S, measure_s: float = MEASURE_S) -> None:
    """Emits the figures of each (label, flows, addresses) case."""
    tag = str(os.getpid())
    with open(STATS) as f:
        stats_was = f.read().strip()
    with tempfile.TemporaryDirectory() as tmp, veth_pair(tag) as (gen, acct):
        blast = build_blast(Path(tmp))
        # sized as a site with 64k subscribers and 64k flows between drains
        dp = Datapath(Sizes(pin_root=f"/sys/fs/bpf/acctd-live-{tag}", flows=65536, addrs=65536),
                      netns=acct)
        live = None
        try:
            with open(STATS, "w") as f:
                f.write("1")
            dp.attach([Hook("a0", abi.Role.LAN, "xdp-native")])
            live = Live(dp, blast, gen, warm_s, measure_s)
            emit("datapath.live_mem_ns.dependent_load_64mb", mem_ns(blast), "ns")
            for label, nflows, naddrs in cases:
                live.case(label, nflows, naddrs)
        finally:
            with open(STATS, "w") as f:
                f.write(stats_was)
            if live:
                live.close()
            dp.detach()


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("bench: needs root (namespaces, hooks)")
    run()


if __name__ == "__main__":
    main()
