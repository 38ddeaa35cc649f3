"""The nftables back-end against a real router namespace: acctd's service
(in a daemon without a kernel, tests/unit/daemon_stub.py) keeps a named
set equal to the blocks, and real pings through the router stop and
resume. The set's drop rule is the operator's, as on a real router."""
from __future__ import annotations

import json
import time

import pytest

from acctd import config as config_mod
from acctd.kernel import abi
from acctd.services.aclserver.service import AclServerService
from tests.unit.daemon_stub import daemon_stub

from .rig import UNITS, SUB, SUB6, Rig, need, report, sh, until

pytestmark = [pytest.mark.root, pytest.mark.netns]

DENY = int(abi.SysPolicy.DENY)
QUOTA = int(abi.SysPolicy.QUOTA)

RULESET = """
table inet acctd {
    set blocked { type ipv4_addr; flags timeout; }
    set blocked6 { type ipv6_addr; flags timeout; }
    chain guard {
        type filter hook forward priority 0;
        ip daddr @blocked drop
        ip6 daddr @blocked6 drop
    }
}
"""

CONFIG = UNITS + """
[[unit]]
type = "host"
name = "infra"
ip = "10.77.1.130"
acct-policy = ["ip"]
sys-policy = ["sys-deny"]

[aclserver]
delay = 2
expiry = 30
never-block = ["10.77.1.128/25"]

[[aclserver.backend]]
name = "r1"
type = "nft"
netns = "{ns}"
dynamic-name = "blocked"
set6 = "blocked6"
"""


def elements(rig: Rig, name: str = "blocked") -> dict[str, int]:
    """The set as the router holds it: address -> seconds left."""
    doc = json.loads(sh("ip", "netns", "exec", rig.R, "nft", "-j", "list", "set", "inet",
                        "acctd", name).stdout)
    out = {}
    for item in doc["nftables"]:
        for e in item.get("set", {}).get("elem", []):
            out[e["elem"]["val"]] = e["elem"].get("expires")
    return out


@pytest.fixture
def rig():
    need("nft", "ping")
    r = Rig()
    try:
        sh("ip", "netns", "exec", r.R, "nft", "-f", "-", input=RULESET)
        # left by an earlier acctd: the first resync must remove it
        sh("ip", "netns", "exec", r.R, "nft", "add", "element", "inet", "acctd", "blocked",
           "{ 10.77.1.99 timeout 1h }")
        yield r
    finally:
        r.close()


def test_nft_set_follows_the_blocks_and_traffic_stops_and_resumes(rig, tmp_path):
    cfg = config_mod.loads(CONFIG.replace("{ns}", rig.R),
                           str(tmp_path / "acctd.toml"))
    with daemon_stub(cfg, tmp_path=tmp_path) as d:
        svc = d.service(AclServerService)
        svc.serve()
        pusher = svc.pushers[0]
        assert pusher.wait_idle(10), pusher.status()
        # at start: bob pushed with the expiry, the stale entry gone, infra refused
        els = elements(rig)
        assert set(els) == {"10.77.1.3"} and 25 <= els["10.77.1.3"] <= 30
        st = svc.show()["backends"][0]
        assert st["pushed"] == {"10.77.1.3/32": "sys-deny"}
        assert st["refused"] == {"10.77.1.130/32": "never-block 10.77.1.128/25"}
        assert st["pending"] == {} and st["last_error"] == "" and st["up"]
        assert rig.reaches()

        alice = d.snapshot.unit("alice").oid
        block_ms, unblock_ms = [], []
        for _ in range(5):
            svc.blocks_changed({SUB: (0, DENY | QUOTA, alice)})
            t = until(lambda: not rig.reaches(wait=0.05), 2.0, step=0)
            assert t is not None, "alice's traffic still passes the router 2 s after the block"
            block_ms.append(t * 1000)
            assert "10.77.1.2" in elements(rig)
            assert pusher.status()["pushed"]["10.77.1.2/32"] == "sys-deny,sys-deny-quota"
            svc.blocks_changed({SUB: (DENY | QUOTA, 0, alice)})
            t = until(lambda: rig.reaches(wait=0.05), 2.0, step=0)
            assert t is not None, "alice's traffic still dropped 2 s after the unblock"
            unblock_ms.append(t * 1000)
            assert set(elements(rig)) == {"10.77.1.3"}
        print()
        report("aclserver.block_ms.nft", block_ms)
        report("aclserver.unblock_ms.nft", unblock_ms)
        assert max(block_ms) < 2000

        # IPv6 goes to its own set
        svc.blocks_changed({SUB6: (0, DENY, alice)})
        assert until(lambda: SUB6 in elements(rig, "blocked6"), 2.0) is not None

        # someone deletes the entry on the router: the next resync (delay 2 s) puts it back
        sh("ip", "netns", "exec", rig.R, "nft", "flush", "set", "inet", "acctd", "blocked")
        assert until(lambda: "10.77.1.3" in elements(rig), 5.0) is not None
        assert until(lambda: pusher.status()["resyncs"] >= 2, 1) is not None

        # the expiry is refreshed while the block holds: 3 s on, bob's entry
        # has been given its 30 s again (a crashed acctd: gone 30 s later)
        time.sleep(3)
        n = pusher.status()["resyncs"]
        assert until(lambda: pusher.status()["resyncs"] > n, 4) is not None
        assert elements(rig)["10.77.1.3"] >= 28
