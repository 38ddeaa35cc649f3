"""Sessions with real traffic: a user unit's counts follow the address it
holds, exactly, across logout, a new address and a daemon restart."""

from __future__ import annotations

import os
import random

import pytest

from .gateway import STORED, all_traffic
from .topology import LINKS, Traffic
from acctd.services.sessions import SessionsService

pytestmark = [pytest.mark.root, pytest.mark.netns]

SUB1, SUB2, SRV = LINKS["sub1"], LINKS["sub2"], LINKS["srv"]

CONFIG = STORED + """
[session]
start = ["{hook}", "start"]
stop = ["{hook}", "stop"]
ports = {{ "nas1:7" = "{sub1v6}" }}
[[policy]]
name = "ip"
target = "proto ip"
[[unit]]
type = "user"
name = "carol"
[[unit]]
type = "host"
name = "bob"
ip = "{bob}"
"""



@pytest.fixture
def daemon_factory(topo, tmp_path):
    from acctd import config
    from acctd.daemon.core import Daemon
    from acctd.kernel.build import Sizes
    hook = tmp_path / "hook.sh"
    log = tmp_path / "hook.log"
    hook.write_text(f'#!/bin/sh\necho "$1 $user $ip $nasip $nasfqdn $nasport" >> {log}\n')
    hook.chmod(0o755)
    cfg_path = tmp_path / "acctd.toml"
    cfg_path.write_text(CONFIG.format(db=tmp_path / "acctd.duckdb", hook=hook, bob=SUB2.v4(),
                                      sub1v6=SUB1.v6()))
    sizes = Sizes(pin_root=f"/sys/fs/bpf/acctd-s-{os.getpid()}-{random.randrange(1 << 30)}",
                  flows=4096, addrs=256)
    made = []

    def make():
        d = Daemon(config.load(str(cfg_path)), sizes, netns=topo.ns["gw"])
        d.start()
        made.append(d)
        return d

    yield make, log
    for d in made:
        d.close()
    if made:
        made[-1].dp.detach()


def test_counts_follow_the_user_across_addresses_and_a_restart(topo, daemon_factory):
    make, log = daemon_factory
    d = make()
    # carol at sub1's IPv4 address: her traffic is hers
    d.call("session-start", user="carol", ip=SUB1.v4(), nas="192.0.2.77", port="3")
    p1 = topo.ping("sub1", SRV.v4(), count=6, size=100)
    d.drain()
    assert all_traffic(d, "carol") == {"out": (p1.request.packets, p1.request.ip_bytes),
                                       "in": (p1.reply.packets, p1.reply.ip_bytes)}
    # logged out: the address's traffic is nobody's
    d.call("session-stop", user="carol")
    topo.ping("sub1", SRV.v4(), count=4, size=100)
    # logged in again, now by NAS port, at sub1's IPv6 address; then a restart
    # in the middle of the session: the binding comes back from the database
    d.call("session-start", user="carol", port="7", nas="nas1")
    p2 = topo.ping("sub1", SRV.v6(), count=5, size=200)
    d.close()
    d = make()
    assert [s["addr"] for s in d.call("session-list", open=True)] == [SUB1.v6()]
    p3 = topo.ping("sub1", SRV.v6(), count=3, size=200)
    d.drain()
    want_out = Traffic(p1.request.packets + p2.request.packets + p3.request.packets,
                       p1.request.ip_bytes + p2.request.ip_bytes + p3.request.ip_bytes)
    want_in = Traffic(p1.reply.packets + p2.reply.packets + p3.reply.packets,
                      p1.reply.ip_bytes + p2.reply.ip_bytes + p3.reply.ip_bytes)
    assert all_traffic(d, "carol") == {"out": (want_out.packets, want_out.ip_bytes),
                                       "in": (want_in.packets, want_in.ip_bytes)}
    # the sessions hold the same exact counts, and say how they ended
    rows = {r["id"]: r for r in d.call("session-list")}
    first, second = rows[1], rows[2]
    assert (first["addr"], first["stop_cause"], first["bytes_out"], first["bytes_in"]) == \
        (SUB1.v4(), "user-request", p1.request.ip_bytes, p1.reply.ip_bytes)
    assert first["duration"] is not None and first["nas"] == "192.0.2.77"
    assert (second["addr"], second["stop"], second["port"]) == (SUB1.v6(), None, "7")
    assert (second["bytes_out"], second["packets_in"]) == \
        (p2.request.ip_bytes + p3.request.ip_bytes, p2.reply.packets + p3.reply.packets)
    # an address that belongs to a host cannot be taken
    with pytest.raises(ValueError, match="belongs to host unit bob"):
        d.call("session-start", user="carol", ip=SUB2.v4())
    # the hook commands saw each start and stop, with the values as given
    d.call("session-stop", user="carol")
    for r in d.service(SessionsService).runners.values():
        assert r.join(10)
    assert log.read_text().splitlines() == [
        f"start carol {SUB1.v4()} 192.0.2.77  3",
        f"stop carol {SUB1.v4()} 192.0.2.77  3",
        f"start carol {SUB1.v6()} nas1 nas1 7",
        f"stop carol {SUB1.v6()} nas1 nas1 7",
    ]
