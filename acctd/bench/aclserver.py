"""`make bench`, the acl-server: time from a block's decision (the
blocks-changed event reaching the pusher) to the router holding it, as
JSON lines: aclserver.block_ms.nft (the element in an nftables set of a
router namespace) and aclserver.block_ms.bgp (the blackhole route BIRD put
into a router namespace's kernel from what acctd's GoBGP announced), median
and max of ROUNDS. Needs root and Debian's nftables, bird2 and gobgpd;
without them it says so on stderr and prints nothing. (tests/aclserver
measures the same to the first dropped ping.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from acctd.bench.control import emit
from acctd.services.aclserver.enforcer import Entry, Pusher

ROUNDS = 20
ADDR = "10.78.1.2/32"
ROUTER, SPEAKER = "10.78.3.1", "10.78.3.2"
BIRD = """router id {r};
protocol device {{}}
protocol static {{ ipv4; route 192.0.2.1/32 blackhole; }}
protocol kernel {{ ipv4 {{ export filter {{ if dest = RTD_BLACKHOLE then accept; reject; }};
                          import none; }}; }}
protocol bgp acctd {{
  local {r} as 65001; neighbor {s} as 65002;
  start delay time 1; connect delay time 1; connect retry time 2;
  ipv4 {{ gateway recursive; export none;
         import filter {{ if (65535,666) ~ bgp_community then {{ dest = RTD_BLACKHOLE; accept; }}
                         reject; }}; }};
}}
"""


def sh(*argv: str, input: str | None = None) -> str:
    return subprocess.run(argv, capture_output=True, text=True, input=input, check=True,
                          timeout=30).stdout


@contextlib.contextmanager
def namespaces(*names: str):
    tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
    made = [f"aclb{n}{tag}" for n in names]
    try:
        for ns in made:
            sh("ip", "netns", "add", ns)
        yield made
    finally:
        for ns in made:
            for pid in subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                      text=True).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def rounds(pusher: Pusher, held) -> list[float]:
    """ms from change() to held() being true, blocking and unblocking ROUNDS times."""
    out = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        pusher.change({ADDR: Entry(ADDR, "sys-deny")})
        while not held():
            if time.perf_counter() - t > 10:
                raise RuntimeError("the router never got the block")
        out.append((time.perf_counter() - t) * 1000)
        pusher.change({ADDR: None})
        while held():
            time.sleep(0.001)
    return out


def bench_nft() -> list[float]:
    from acctd.services.aclserver.nft import NftBackend
    with namespaces("R") as (r,):
        sh("ip", "netns", "exec", r, "nft", "-f", "-",
           input="table inet acctd {\n set blocked { type ipv4_addr; flags timeout; }\n}\n")
        p = Pusher(NftBackend("bench", "inet", "acctd", "blocked", None,
                              ("ip", "netns", "exec", r), expiry=600), 3600)
        p.set_desired({}, resync=True)
        p.start()
        try:
            p.wait_idle(10)
            return rounds(p, lambda: "10.78.1.2" in sh("ip", "netns", "exec", r, "nft",
                                                       "list", "set", "inet", "acctd",
                                                       "blocked"))
        finally:
            p.close()


def bench_bgp() -> list[float]:
    from acctd.services.aclserver.bgp import BgpBackend
    with namespaces("R", "S") as (r, s), tempfile.TemporaryDirectory() as tmp:
        sh("ip", "link", "add", "vr" + r[-6:], "netns", r, "type", "veth", "peer",
           "vs" + r[-6:], "netns", s)
        for ns, dev, addr in ((r, "vr" + r[-6:], ROUTER), (s, "vs" + r[-6:], SPEAKER)):
            sh("ip", "-n", ns, "addr", "add", addr + "/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        conf = os.path.join(tmp, "bird.conf")
        with open(conf, "w") as f:
            f.write(BIRD.format(r=ROUTER, s=SPEAKER))
        sh("ip", "netns", "exec", r, "bird", "-c", conf, "-s", os.path.join(tmp, "bird.ctl"))
        b = BgpBackend("bench", tmp, neighbor=ROUTER, peer_as=65001, local_as=65002,
                       router_id=SPEAKER, netns=s, listen_port=179)
        p = Pusher(b, 3600)
        p.set_desired({}, resync=True)
        p.start()
        try:
            deadline = time.monotonic() + 30
            while not p.status()["up"]:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no BGP session: {p.status()['last_error']}")
                time.sleep(0.1)
            return rounds(p, lambda: "10.78.1.2" in sh("ip", "-n", r, "route", "show",
                                                       "type", "blackhole"))
        finally:
            p.close()


def main() -> None:
    logging.getLogger("acctd.aclserver").setLevel(logging.ERROR)  # the session's coming up
    missing = [t for t in ("nft", "bird", "gobgpd", "gobgp", "setpriv") if not shutil.which(t)]
    if os.geteuid() != 0 or missing:
        print("aclserver bench skipped: " + ("needs root" if os.geteuid() != 0 else
              f"missing {', '.join(missing)}"), file=sys.stderr)
        return
    for kind, run in (("nft", bench_nft), ("bgp", bench_bgp)):
        ms = run()
        emit(f"aclserver.block_ms.{kind}.median", statistics.median(ms), "ms")
        emit(f"aclserver.block_ms.{kind}.max", max(ms), "ms")


if __name__ == "__main__":
    main()
