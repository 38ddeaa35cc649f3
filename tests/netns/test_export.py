"""Export from real drains: traffic through the testbed's gateway, the
daemon in-process with three [[export]] tables (IPFIX of one unit to
nfcapd, v9 of all traffic to nfacctd, v5 of all traffic to a second
nfcapd). What each collector decodes equals what acctd accounted, to the
byte and packet, IPv6 included."""

from __future__ import annotations

import os
import random

import pytest

from .gateway import STORED, all_traffic
from .topology import LINKS
from tests.peers.collectors import Nfacctd, Nfcapd

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.peers]

SUB1, SUB2, SRV = LINKS["sub1"], LINKS["sub2"], LINKS["srv"]

CONFIG = STORED + """
[[policy]]
name = "ip"
target = "proto ip"
[[unit]]
type = "cluster"
name = "alice"
ips = ["{alice}", "{alice6}"]
[[unit]]
type = "host"
name = "bob"
ip = "{bob}"
[[export]]
format = "ipfix"
destination = "127.0.0.1:{ipfix}"
units = ["alice"]
[[export]]
format = "v9"
destination = "127.0.0.1:{v9}"
[[export]]
format = "v5"
destination = "127.0.0.1:{v5}"
"""


def totals(flows) -> tuple[int, int]:
    return sum(f["packets"] for f in flows), sum(f["bytes"] for f in flows)


def test_collectors_total_what_acctd_accounted(topo, tmp_path):
    from acctd import config
    from acctd.daemon.core import Daemon
    from acctd.kernel.build import Sizes
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    with Nfcapd(tmp_path / "a") as ipfix, Nfcapd(tmp_path / "b") as v5, \
            Nfacctd(tmp_path) as v9:
        cfg_path = tmp_path / "acctd.toml"
        cfg_path.write_text(CONFIG.format(db=tmp_path / "acctd.duckdb", alice=SUB1.v4(),
                                          alice6=SUB1.v6(), bob=SUB2.v4(), ipfix=ipfix.port,
                                          v9=v9.port, v5=v5.port))
        d = Daemon(config.load(str(cfg_path)),
                   Sizes(pin_root=f"/sys/fs/bpf/acctd-x-{os.getpid()}-{random.randrange(1 << 30)}",
                         flows=4096, addrs=256), netns=topo.ns["gw"])
        try:
            d.start()
            topo.ping("sub1", SRV.v4(), count=5, size=300)
            topo.send_udp("sub2", SUB2.v4(), "srv", SRV.v4(), count=20, length=100, dport=53)
            d.drain()
            topo.ping("sub1", SRV.v6(), count=4, size=120)
            topo.send_udp("sub1", SUB1.v4(), "srv", SRV.v4(), count=7, length=900, dport=5001)
            d.drain()
            alice, bob = all_traffic(d, "alice"), all_traffic(d, "bob")
        finally:
            d.close()           # the exporters send their cached flows' last records
            d.dp.detach()
        acct = {u: tuple(map(sum, zip(t.get("in", (0, 0)), t.get("out", (0, 0))))) for u, t in
                (("alice", alice), ("bob", bob))}
        everything = tuple(map(sum, zip(acct["alice"], acct["bob"])))
        got_ipfix, got_v5 = ipfix.flows(), v5.flows()
        got_v9 = v9.flows(expect_bytes=everything[1])
    assert totals(got_ipfix) == acct["alice"]
    assert totals(got_v9) == everything
    v6 = totals([f for f in got_ipfix if ":" in f["sa"]])
    assert v6[0] == 8                                   # the ping6: 4 requests, 4 replies
    assert totals(got_v5) == (everything[0] - v6[0], everything[1] - v6[1])   # v5: IPv4 only
