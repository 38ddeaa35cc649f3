"""The daemon as a RADIUS accounting client, with real traffic and a real
FreeRADIUS: a user's session reaches radacct as Start, Interim and Stop
with acctd's exact counts."""

from __future__ import annotations

import datetime as dt
import os
import random

import pytest

from ..netns.topology import LINKS, Topology, remove_stale

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.peers]

SUB1, SRV = LINKS["sub1"], LINKS["srv"]

CONFIG = """
[[interface]]
name = "lan1"
role = "lan"
hook = "tc"
[[interface]]
name = "wan0"
role = "wan"
hook = "tc"
[processor]
lookup-delay = 300
default-acct-policy = ["ip"]
[storage]
path = "{db}"
[radius]
servers = ["{server}"]
secret-file = "{secret}"
nas-ip = "192.0.2.1"
nas-identifier = "acctd-test"
interim-interval = 60
[[policy]]
name = "ip"
target = "proto ip"
[[unit]]
type = "user"
name = "carol"
"""


def test_session_start_interim_stop_reach_radacct(freeradius, tmp_path):
    from acctd import config
    from acctd.build import Sizes
    from acctd.daemon import Daemon
    if os.geteuid() != 0:
        pytest.skip("needs root: namespaces and BPF")
    secret = tmp_path / "radius.secret"
    secret.write_text(freeradius.secret + "\n")
    secret.chmod(0o600)
    cfg_path = tmp_path / "acctd.toml"
    cfg_path.write_text(CONFIG.format(db=tmp_path / "acctd.duckdb", server=freeradius.address,
                                      secret=secret))
    clock = [dt.datetime.now(dt.timezone.utc)]
    remove_stale()
    with Topology() as topo:
        d = Daemon(config.load(str(cfg_path)),
                   Sizes(pin_root=f"/sys/fs/bpf/acctd-rd-{os.getpid()}-{random.randrange(1 << 30)}",
                         flows=4096, addrs=256), netns=topo.ns["gw"], clock=lambda: clock[0])
        try:
            d.start()
            d.session_start("carol", SUB1.v4())
            p1 = topo.ping("sub1", SRV.v4(), count=5, size=100)
            clock[0] += dt.timedelta(seconds=61)        # an interim is due
            d.drain()
            p2 = topo.ping("sub1", SRV.v4(), count=3, size=300)
            clock[0] += dt.timedelta(seconds=10)
            d.session_stop("carol")                      # drains, then Stop
            assert d.radius.flush(15), "records still pending"
            x = d.session_list()[0]
            assert (x["bytes_out"], x["bytes_in"]) == (
                p1.request.ip_bytes + p2.request.ip_bytes, p1.reply.ip_bytes + p2.reply.ip_bytes)
        finally:
            d.close()
            d.dp.detach()
    (row,) = freeradius.radacct()
    assert row["username"] == "carol" and row["framedipaddress"] == SUB1.v4()
    # RADIUS Input is what the NAS port received: the subscriber's out
    assert (row["acctinputoctets"], row["acctoutputoctets"]) == (x["bytes_out"], x["bytes_in"])
    assert row["acctterminatecause"] == "User-Request" and row["acctstoptime"]
    kinds = [r["status"] for r in freeradius.requests()]
    assert kinds == ["Start", "Interim-Update", "Stop"]
