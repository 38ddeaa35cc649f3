"""`monitor to storage` with real traffic through the daemon: the monitored
unit's flows are stored per remote peer with exact bytes and packets, read
back by `monitor query` (in the daemon and by acctctl from the database),
and an unmonitored unit's flows are not stored at all."""

from __future__ import annotations

import json
import os
import random

import pytest
from click.testing import CliRunner

from .gateway import STORED
from .topology import LINKS
from acctd.kernel import abi

pytestmark = [pytest.mark.root, pytest.mark.netns]

SUB1, SUB2, SRV = LINKS["sub1"], LINKS["sub2"], LINKS["srv"]

CONFIG = STORED + """
[monitor]
units = ["alice"]
[[policy]]
name = "ip"
target = "proto ip"
[[unit]]
type = "host"
name = "alice"
ip = "{alice}"
[[unit]]
type = "host"
name = "bob"
ip = "{bob}"
"""


def test_monitored_flows_are_stored_per_peer_exactly(topo, tmp_path):
    from acctctl.main import main
    from acctd import config
    from acctd.daemon.core import Daemon
    from acctd.kernel.build import Sizes
    cfg_path = tmp_path / "acctd.toml"
    db = tmp_path / "acctd.duckdb"
    cfg_path.write_text(CONFIG.format(db=db, alice=SUB1.v4(), bob=SUB2.v4()))
    d = Daemon(config.load(str(cfg_path)),
               Sizes(pin_root=f"/sys/fs/bpf/acctd-m-{os.getpid()}-{random.randrange(1 << 30)}",
                     flows=4096, addrs=256), netns=topo.ns["gw"])
    try:
        d.start()
        down = topo.send_udp("srv", SRV.v4(), "sub1", SUB1.v4(), 20, 500, sport=8080,
                             dport=40000)
        up = topo.send_udp("sub1", SUB1.v4(), "srv", SRV.v4(), 5, 100, sport=40000,
                           dport=8080)
        ping = topo.ping("sub1", SRV.v4(), count=3, size=200)
        d.drain()
        more = topo.send_udp("srv", SRV.v4(), "sub1", SUB1.v4(), 7, 1000, sport=8080,
                             dport=40000)                       # a second drain's delta
        topo.send_udp("srv", SRV.v4(), "sub2", SUB2.v4(), 30, 300, sport=8080, dport=40001)
        d.drain()

        got = d.call("monitor-query", unit="alice")["peers"]
        assert [(p["peer"], p["proto"], p["port"], p["bytes_in"], p["packets_in"],
                 p["bytes_out"], p["packets_out"]) for p in got] == [
            (SRV.v4(), 17, 8080, down.ip_bytes + more.ip_bytes, down.packets + more.packets,
             up.ip_bytes, up.packets),
            (SRV.v4(), 1, 0, ping.reply.ip_bytes, ping.reply.packets,
             ping.request.ip_bytes, ping.request.packets)]
        # bob's 30 datagrams went through the same drains and were not stored
        bob = int(d.snapshot.unit("bob").oid, 16)
        con = d.storage.con
        assert con.execute("SELECT count(*) FROM monitor WHERE unit_oid = ?",
                           [bob]).fetchall() == [(0,)]
        alice = int(d.snapshot.unit("alice").oid, 16)
        assert con.execute("SELECT DISTINCT unit_oid FROM monitor").fetchall() == [(alice,)]
        # every row is a drain's delta: the table sums to what the query says
        assert con.execute("SELECT sum(bytes) FROM monitor WHERE dir = ?",
                           [int(abi.Dir.IN)]).fetchall() == [
            (down.ip_bytes + more.ip_bytes + ping.reply.ip_bytes,)]
    finally:
        d.close()
        d.dp.detach()
    # and acctctl reads the same answer from the database once the daemon is gone
    r = CliRunner().invoke(main, ["--db", str(db), "--config", str(cfg_path), "monitor",
                                  "query", "alice", "--port", "8080", "--json"])
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.output)["peers"]
    assert (row["bytes_in"], row["bytes_out"]) == (down.ip_bytes + more.ip_bytes, up.ip_bytes)
