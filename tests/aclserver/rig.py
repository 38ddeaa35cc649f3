"""A router between a subscriber and the world, in namespaces of their own:

    C (subscriber 10.77.1.2, 2001:db8:77:1::2) -- R (router) -- W (world 10.77.2.2, ::2)
                                                  |
                                                  S (acctd's BGP speaker 10.77.3.2)

Names carry the test's pid and a random tag, so parallel runs never meet;
close() removes everything. `reaches()` sends one real ping from W to C
through R: what a block at the router stops."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time

import pytest
from tests.peer import missing_peer

SUB, SUB6, WORLD = "10.77.1.2", "2001:db8:77:1::2", "10.77.2.2"
ROUTER_S, SPEAKER = "10.77.3.1", "10.77.3.2"

# The subscribers both router tests block: alice (free at start) and bob
# (sys-deny in the config, so the start's resync pushes him).
UNITS = f"""
[[policy]]
name = "ip"
target = "proto ip"

[[unit]]
type = "host"
name = "alice"
ip = "{SUB}"
acct-policy = ["ip"]

[[unit]]
type = "host"
name = "bob"
ip = "10.77.1.3"
acct-policy = ["ip"]
sys-policy = ["sys-deny"]
"""


def sh(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=30)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {p.stderr.strip()}")
    return p


class Rig:
    def __init__(self):
        if os.geteuid() != 0:
            pytest.skip("needs root: creates network namespaces")
        tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.ns = {k: f"acl{k}{tag}" for k in "CRWS"}
        self.C, self.R, self.W, self.S = (self.ns[k] for k in "CRWS")
        try:
            self._build(tag)
        except BaseException:
            self.close()
            raise

    def _build(self, tag: str) -> None:
        for n in self.ns.values():
            sh("ip", "netns", "add", n)
            sh("ip", "-n", n, "link", "set", "lo", "up")
        for i, (peer, raddr, paddr) in enumerate(
                (("C", "10.77.1.1/24", SUB + "/24"), ("W", "10.77.2.1/24", WORLD + "/24"),
                 ("S", ROUTER_S + "/24", SPEAKER + "/24")), 1):
            r_if, p_if = f"r{i}{tag}"[:15], f"p{i}{tag}"[:15]
            sh("ip", "link", "add", r_if, "netns", self.R, "type", "veth", "peer", p_if,
               "netns", self.ns[peer])
            sh("ip", "-n", self.R, "addr", "add", raddr, "dev", r_if)
            sh("ip", "-n", self.ns[peer], "addr", "add", paddr, "dev", p_if)
            if peer in "CW":
                net = "2001:db8:77:1::" if peer == "C" else "2001:db8:77:2::"
                sh("ip", "-n", self.R, "addr", "add", net + "1/64", "dev", r_if, "nodad")
                sh("ip", "-n", self.ns[peer], "addr", "add", net + "2/64", "dev", p_if,
                   "nodad")
            for n, dev in ((self.R, r_if), (self.ns[peer], p_if)):
                sh("ip", "-n", n, "link", "set", dev, "up")
        sh("ip", "-n", self.C, "route", "add", "default", "via", "10.77.1.1")
        sh("ip", "-n", self.W, "route", "add", "default", "via", "10.77.2.1")
        sh("ip", "-n", self.C, "-6", "route", "add", "default", "via", "2001:db8:77:1::1")
        sh("ip", "-n", self.W, "-6", "route", "add", "default", "via", "2001:db8:77:2::1")
        sh("ip", "netns", "exec", self.R, "sysctl", "-qw", "net.ipv4.ip_forward=1",
           "net.ipv6.conf.all.forwarding=1")

    def reaches(self, addr: str = SUB, wait: float = 0.5) -> bool:
        """One ping from the world to `addr` through the router."""
        p = sh("ip", "netns", "exec", self.W, "ping", "-n", "-c1", f"-W{wait}", addr,
               check=False)
        return p.returncode == 0

    def close(self) -> None:
        for n in self.ns.values():
            pids = subprocess.run(["ip", "netns", "pids", n], capture_output=True,
                                  text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


def need(*tools: str) -> None:
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        missing_peer(f"missing {', '.join(missing)} (Debian: {' '.join(missing)})")


def report(name: str, ms: list[float]) -> None:
    """The measured times, as `make bench` prints its figures (run with -s to see them)."""
    import json
    import statistics
    for stat, v in (("median", statistics.median(ms)), ("max", max(ms))):
        print(json.dumps({"name": f"{name}.{stat}", "value": round(v, 1), "unit": "ms"}))


def until(pred, timeout: float, step: float = 0.01) -> float | None:
    """Seconds until pred() held, or None after `timeout`."""
    t0 = time.monotonic()
    while True:
        if pred():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            return None
        time.sleep(step)
