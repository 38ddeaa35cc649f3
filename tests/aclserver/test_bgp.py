"""The BGP back-end against a real router: acctd's GoBGP speaker (in its
own namespace S) peers with BIRD 2 in the router namespace R. BIRD turns
routes carrying the blackhole community into kernel blackhole routes (the
next hop 192.0.2.1 resolves to a static blackhole, as on a Cisco with
Null0), so a blocked subscriber's real traffic through R stops. FlowSpec
rules land in BIRD's flow4 table (Linux does not enforce FlowSpec): the
test reads them back with birdc."""
from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
import time

import pytest

from acctd import config as config_mod
from acctd.kernel import abi
from acctd.services.aclserver.service import AclServerService
from tests.unit.daemon_stub import daemon_stub

from .rig import UNITS, ROUTER_S, SPEAKER, SUB, SUB6, Rig, need, report, sh, until

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.peers]

DENY = int(abi.SysPolicy.DENY)

BIRD = """
router id {router};
log "{log}" all;
protocol device {{}}
protocol static {{ ipv4; route 192.0.2.1/32 blackhole; }}
protocol static {{ ipv6; route 100::1/128 blackhole; }}
flow4 table flowtab;
flow6 table flowtab6;
protocol kernel {{ ipv4 {{ export filter {{ if dest = RTD_BLACKHOLE then accept; reject; }};
                          import none; }}; }}
protocol kernel {{ ipv6 {{ export filter {{ if dest = RTD_BLACKHOLE then accept; reject; }};
                          import none; }}; }}
protocol bgp acctd {{
  local {router} as 65001; neighbor {speaker} as 65002;
  hold time 9; start delay time 1; connect delay time 1; connect retry time 2;
  ipv4 {{ gateway recursive;
         import filter {{ if (65535,666) ~ bgp_community then {{ dest = RTD_BLACKHOLE; accept; }}
                         reject; }};
         export none; }};
  ipv6 {{ gateway recursive;
         import filter {{ if (65535,666) ~ bgp_community then {{ dest = RTD_BLACKHOLE; accept; }}
                         reject; }};
         export none; }};
  flow4 {{ table flowtab; import all; export none; }};
  flow6 {{ table flowtab6; import all; export none; }};
}}
"""

CONFIG = UNITS + """
[[unit]]
type = "host"
name = "carol"
ip = "10.77.1.4"
acct-policy = ["ip"]
bw = "8M in 4M out"

[aclserver]
delay = 3

[[aclserver.backend]]
name = "edge"
type = "bgp"
hostname = "{router}"
peer-as = 65001
local-as = 65002
router-id = "{speaker}"
netns = "{ns}"
flowspec = true
direction = "src"
max-rules = 10
listen-port = 179
"""


class Bird:
    def __init__(self, rig: Rig, tmp):
        self.rig, self.tmp = rig, tmp
        self.conf, self.ctl, self.pid = tmp / "bird.conf", str(tmp / "bird.ctl"), tmp / "bird.pid"
        self.conf.write_text(BIRD.format(router=ROUTER_S, speaker=SPEAKER,
                                         log=tmp / "bird.log"))

    def start(self):
        sh("ip", "netns", "exec", self.rig.R, "bird", "-c", str(self.conf), "-s", self.ctl,
           "-P", str(self.pid))

    def stop(self):
        if self.pid.exists():
            try:
                os.kill(int(self.pid.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.pid.unlink()

    def cmd(self, *words) -> str:
        return sh("birdc", "-s", self.ctl, *words, check=False).stdout

    def established(self) -> bool:
        return "Established" in self.cmd("show", "protocols", "acctd")


def blackholes(rig: Rig, v: str = "-4") -> set[str]:
    out = sh("ip", "-n", rig.R, v, "route", "show", "type", "blackhole").stdout.split("\n")
    return {ln.split()[1] for ln in out if ln.strip()} - {"192.0.2.1", "100::1"}


@pytest.fixture
def router(tmp_path):
    need("bird", "birdc", "gobgpd", "gobgp", "ping")
    rig = Rig()
    bird = Bird(rig, tmp_path)
    try:
        bird.start()
        yield rig, bird
    finally:
        bird.stop()
        rig.close()


def test_rtbh_blocks_real_traffic_flowspec_reaches_the_router_and_resync_after_restart(
        router, tmp_path):
    rig, bird = router
    text = CONFIG.format(router=ROUTER_S, speaker=SPEAKER, ns=rig.S)
    cfg = config_mod.loads(text, str(tmp_path / "acctd.toml"))
    with daemon_stub(cfg, tmp_path=tmp_path) as d:
        svc = d.service(AclServerService)
        svc.serve()
        pusher = svc.pushers[0]
        assert until(bird.established, 20, step=0.1) is not None, bird.cmd("show", "protocols")
        assert until(lambda: blackholes(rig) == {"10.77.1.3"}, 10) is not None, blackholes(rig)
        assert pusher.wait_idle(10), pusher.status()
        assert rig.reaches()
        # FlowSpec: discard for bob as a source, carol's bw as a traffic-rate (bytes/s)
        flows = bird.cmd("show", "route", "table", "flowtab", "all")
        assert "flow4 { src 10.77.1.3/32; }" in flows
        assert "flow4 { src 10.77.1.4/32; }" in flows
        assert "(generic, 0x80060000, 0x0)" in flows            # traffic-rate 0: discard
        # carol's 4M out as a traffic-rate of 500000 bytes/s (an IEEE float)
        rate = struct.unpack(">I", struct.pack(">f", 500000.0))[0]
        assert f"(generic, 0x80060000, 0x{rate:x})" in flows
        st = svc.show()["backends"][0]
        assert st["pushed"] == {"10.77.1.3/32": "sys-deny", "10.77.1.4/32": "bw"}
        # up once a check (every second) saw the session established
        assert until(lambda: svc.show()["backends"][0]["up"], 3) is not None
        assert svc.show()["backends"][0]["router_uptime"] is not None

        alice = d.snapshot.unit("alice").oid
        block_ms = []
        for _ in range(5):
            svc.blocks_changed({SUB: (0, DENY, alice)})
            t = until(lambda: not rig.reaches(wait=0.05), 2.0, step=0)
            assert t is not None, "alice still reachable 2 s after the block"
            block_ms.append(t * 1000)
            assert SUB in blackholes(rig)
            svc.blocks_changed({SUB: (DENY, 0, alice)})
            assert until(lambda: rig.reaches(wait=0.05), 2.0, step=0) is not None
            assert SUB not in blackholes(rig)
        print()
        report("aclserver.block_ms.bgp", block_ms)
        assert max(block_ms) < 2000

        # IPv6: a /128 blackhole stops ping6 through the router; FlowSpec for IPv6 (RFC 8956)
        # (the first ping6 may wait for neighbour discovery on a loaded machine)
        assert until(lambda: rig.reaches(SUB6), 5) is not None
        svc.blocks_changed({SUB6: (0, DENY, alice)})
        assert until(lambda: not rig.reaches(SUB6, wait=0.05), 2.0, step=0) is not None
        assert blackholes(rig, "-6") == {SUB6}
        assert f"flow6 {{ src {SUB6}/128; }}" in bird.cmd("show", "route", "table", "flowtab6")
        svc.blocks_changed({SUB6: (DENY, 0, alice)})
        assert until(lambda: rig.reaches(SUB6, wait=0.05), 2.0, step=0) is not None
        assert blackholes(rig, "-6") == set()

        # the router restarts and forgets: the session comes back and acctd resyncs
        svc.blocks_changed({SUB: (0, DENY, alice)})
        assert until(lambda: SUB in blackholes(rig), 2) is not None
        resyncs = pusher.status()["resyncs"]
        bird.stop()
        sh("ip", "-n", rig.R, "route", "flush", "proto", "bird")   # a reboot loses them
        assert rig.reaches()
        bird.start()
        up = until(bird.established, 20, step=0.1)
        assert up is not None, bird.cmd("show", "protocols")
        # within delay (3 s) of the session's return: the router holds the set again
        t = until(lambda: blackholes(rig) == {SUB, "10.77.1.3"}, 3, step=0.05)
        assert t is not None, f"not resynced: {blackholes(rig)} {pusher.status()}"
        assert not rig.reaches()
        assert until(lambda: pusher.status()["resyncs"] > resyncs, 3) is not None
        print(f"router restart: session back after {up:.1f} s, routes {t:.2f} s later")


KILLED = """
import sys, time
from acctd.services.aclserver.bgp import BgpBackend
from acctd.services.aclserver.enforcer import Entry
b = BgpBackend("edge", sys.argv[1], neighbor=sys.argv[2], peer_as=65001, local_as=65002,
               router_id=sys.argv[3], netns=sys.argv[4])
b.connect()
b.apply(Entry(sys.argv[5] + "/32", "sys-deny"))
print("applied", flush=True)
time.sleep(600)
"""


def test_killed_acctd_takes_its_routes_with_it(router, tmp_path):
    """SIGKILL of the process driving the speaker: gobgpd dies with it
    (PR_SET_PDEATHSIG), the session drops and the router withdraws the block."""
    rig, bird = router
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED), str(tmp_path),
                          ROUTER_S, SPEAKER, rig.S, SUB], stdout=subprocess.PIPE, env=env,
                         text=True)
    try:
        assert p.stdout.readline().strip() == "applied"
        assert until(lambda: SUB in blackholes(rig), 20, step=0.1) is not None
        assert not rig.reaches()
    finally:
        p.kill()
        p.wait()
    t0 = time.monotonic()
    assert until(lambda: SUB not in blackholes(rig), 5, step=0.05) is not None
    assert rig.reaches()
    print(f"\nkilled: blackhole gone after {time.monotonic() - t0:.2f} s")
