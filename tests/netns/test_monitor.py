"""`monitor to storage` with real traffic through the daemon: the monitored
unit's flows are stored per remote peer with exact bytes and packets, read
back by `monitor query` (in the daemon and by acctctl from the database),
and an unmonitored unit's flows are not stored at all, until it is
monitored at run time."""

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
units = ["alice", "carol"]
[[policy]]
name = "ip"
target = "proto ip"
[[unit]]
type = "host"
name = "alice"
ip = "{alice}"
[[unit]]
type = "host"
name = "carol"
ip = "{carol}"
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
    cfg_path.write_text(CONFIG.format(db=db, alice=SUB1.v4(), carol=SUB1.v6(),
                                        bob=SUB2.v4()))
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
        ping6 = topo.ping("sub1", SRV.v6(), count=4, size=1000)      # carol's
        unseen = topo.send_udp("srv", SRV.v4(), "sub2", SUB2.v4(), 30, 300, sport=8080,
                               dport=40001)                    # bob's, not monitored yet
        d.drain()
        d.call("monitor-unit-add", unit="bob")
        more = topo.send_udp("srv", SRV.v4(), "sub1", SUB1.v4(), 7, 1000, sport=8080,
                             dport=40000)                       # a second drain's delta
        seen = topo.send_udp("srv", SRV.v4(), "sub2", SUB2.v4(), 4, 700, sport=8080,
                             dport=40001)                       # bob's, monitored now
        d.drain()

        got = d.call("monitor-query", unit="alice")["peers"]
        assert [(p["peer"], p["proto"], p["port"], p["bytes_in"], p["packets_in"],
                 p["bytes_out"], p["packets_out"]) for p in got] == [
            (SRV.v4(), 17, 8080, down.ip_bytes + more.ip_bytes, down.packets + more.packets,
             up.ip_bytes, up.packets),
            (SRV.v4(), 1, 0, ping.reply.ip_bytes, ping.reply.packets,
             ping.request.ip_bytes, ping.request.packets)]
        (six,) = d.call("monitor-query", unit="carol", peer=SRV.v6())["peers"]
        assert (six["proto"], six["bytes_in"], six["packets_in"], six["bytes_out"],
                six["packets_out"]) == (58, ping6.reply.ip_bytes, ping6.reply.packets,
                                        ping6.request.ip_bytes, ping6.request.packets)
        # bob's first 30 datagrams came before he was monitored: not stored; the 4 after are
        (b,) = d.call("monitor-query", unit="bob")["peers"]
        assert (b["bytes_in"], b["packets_in"], b["bytes_out"]) == (
            seen.ip_bytes, seen.packets, 0)
        assert unseen.packets == 30
        con = d.storage.con
        alice = int(d.snapshot.unit("alice").oid, 16)
        # every row is a drain's delta: alice's rows sum to what the query says
        assert con.execute("SELECT sum(bytes) FROM monitor WHERE dir = ? AND unit_oid = ?",
                           [int(abi.Dir.IN), alice]).fetchall() == [
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
