"""The whole path in a real daemon (kernel datapath attached in the netns
topology): `acctctl unit bob sys-deny` -> the core's enforce() -> the
blocks-changed event -> the acl-server's nftables back-end, whose set in a
router namespace gets bob's address, and loses it at sys-allow. The
kernel's own block and the router's entry come from the same decision."""
from __future__ import annotations

import json
import time

import pytest

from tests.netns import test_enforce
from tests.netns.test_enforce import host, running, write_config
from tests.netns.topology import LINKS

from .rig import need, sh, until

pytestmark = [pytest.mark.root, pytest.mark.netns]

SUB1, SUB2 = LINKS["sub1"], LINKS["sub2"]
bed = test_enforce.bed      # the enforcement tests' topology and pinned build, as a fixture


def set_of(ns: str) -> set[str]:
    doc = json.loads(sh("ip", "netns", "exec", ns, "nft", "-j", "list", "set", "inet", "acctd",
                        "blocked").stdout)
    return {e if isinstance(e, str) else e["elem"]["val"]
            for item in doc["nftables"] for e in item.get("set", {}).get("elem", [])}


@pytest.fixture
def router_ns():
    import os
    import secrets
    need("nft")
    ns = f"aclD{os.getpid() % 100000}{secrets.token_hex(2)}"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "netns", "exec", ns, "nft", "-f", "-",
           input="table inet acctd {\n set blocked { type ipv4_addr; flags timeout; }\n}\n")
        yield ns
    finally:
        sh("ip", "netns", "del", ns, check=False)


def test_sys_deny_in_the_daemon_reaches_the_router_at_once(bed, router_ns, tmp_path):
    units = host("alice", SUB1.v4()) + host("bob", SUB2.v4())
    path = write_config(tmp_path, units)
    with open(path, "a") as f:
        f.write(f'\n[aclserver]\ndelay = 300\nexpiry = 600\n\n[[aclserver.backend]]\n'
                f'name = "r"\ntype = "nft"\nnetns = "{router_ns}"\ndynamic-name = "blocked"\n')
    with running(bed, path) as d:
        assert until(lambda: d.call("aclserver-show")["backends"][0]["resyncs"] == 1, 5)
        assert set_of(router_ns) == set()
        t = time.monotonic()
        # as `acctctl unit bob sys-deny` sends it
        assert d.call("sys-policy", unit="bob", policy="sys-deny")["sys_policy"] == ["sys-deny"]
        took = until(lambda: set_of(router_ns) == {SUB2.v4()}, 2, step=0.005)
        assert took is not None, d.call("aclserver-show")
        # the router holds it a moment before the pusher's bookkeeping says so
        assert until(lambda: d.call("aclserver-show")["backends"][0]["pushed"], 2) is not None
        b = d.call("aclserver-show")["backends"][0]
        assert b["pushed"] == {f"{SUB2.v4()}/32": "sys-deny"} and b["pending"] == {}
        d.call("sys-policy", unit="bob", policy="sys-allow")
        assert until(lambda: set_of(router_ns) == set(), 2, step=0.005) is not None
        print(f"\ndaemon sys-deny to the router's set: {(time.monotonic() - t) * 1000:.0f} ms "
              f"(block {took * 1000:.0f} ms)")
