"""Units made at run time, with real traffic: a burst of 5,000 new
addresses inside a net with auto-units, `unit add ... ip auto`, and MAC
control against the gateway's neighbour table."""

from __future__ import annotations

import os
import random
import socket
import time

import pytest

from .gateway import HOOKS
from .topology import LINKS, build_udp_frame
from acctd.services.runtime_units import UnitsService

pytestmark = [pytest.mark.root, pytest.mark.netns]

SUB1, SUB2, SRV = LINKS["sub1"], LINKS["sub2"], LINKS["srv"]

CONFIG = HOOKS + """
[processor]
lookup-delay = 300
default-acct-policy = ["ip"]
auto-assign = ["10.2.0.100 10.2.0.101"]
auto-units = ["1 type host naming prefix2 pc group auto"]
mac-control = "block"
[storage]
path = "{db}"
[[policy]]
name = "ip"
target = "proto ip"
[[unit]]
type = "group"
name = "auto"
[[unit]]
type = "net"
name = "lan1net"
net = "10.1.0.0/16"
auto-units = 1
[[unit]]
type = "host"
name = "bob"
ip = "{bob}"
mac = "{bob_mac}"
"""

BURST = 5000
PAYLOAD = 32
IP_LEN = 20 + 8 + PAYLOAD


def burst_addrs() -> list[str]:
    return [f"10.1.{1 + i // 250}.{1 + i % 250}" for i in range(BURST)]


def send_burst(topo) -> None:
    """One UDP datagram from each burst address, as raw frames from sub1."""
    gw_mac = topo.mac("gw", SUB1.gw_if)
    host_mac = topo.mac("sub1", SUB1.host_if)
    frames = [build_udp_frame(gw_mac, host_mac, a, SRV.v4(), payload_len=PAYLOAD)
              for a in burst_addrs()]
    with topo.inside("sub1"):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    with s:
        s.bind((SUB1.host_if, 0))
        for f in frames:
            s.send(f)
    topo.quiesce()


@pytest.fixture
def daemon(topo, tmp_path):
    from acctd import config
    from acctd.daemon.core import Daemon
    from acctd.kernel.build import Sizes
    cfg_path = tmp_path / "acctd.toml"
    cfg_path.write_text(CONFIG.format(db=tmp_path / "acctd.duckdb", bob=SUB2.v4(),
                                      bob_mac=topo.mac("sub2", SUB2.host_if)))
    d = Daemon(config.load(str(cfg_path)),
               Sizes(pin_root=f"/sys/fs/bpf/acctd-a-{os.getpid()}-{random.randrange(1 << 30)}",
                     flows=16384, addrs=8192), netns=topo.ns["gw"])
    d.start()
    yield d
    d.close()
    d.dp.detach()


def month_rows(d, oids) -> tuple[int, int, int]:
    """(units with rows, packets, bytes) of the out direction, all traffic."""
    ints = [int(o, 16) for o in oids]
    return d.storage.con.execute(
        "SELECT count(DISTINCT unit_oid), coalesce(sum(packets), 0), coalesce(sum(bytes), 0) "
        "FROM rollup WHERE kind = 'month' AND policy_oid = 0 AND dir = 1 "
        "AND list_contains($o, unit_oid)", {"o": ints}).fetchall()[0]


def test_burst_of_new_addresses_makes_units_and_loses_no_byte(topo, daemon):
    d = daemon
    send_burst(topo)
    t = time.perf_counter()
    d.drain()   # the first traffic counts for the net; the units are made
    made_s = time.perf_counter() - t
    made = [u for u in d.service(UnitsService).runtime if u.parents == ("auto",)]
    assert len(made) == BURST
    assert {u.name for u in made} >= {"pc1.1", "pc20.250"}
    net = d.snapshot.units.units[d.snapshot.units.find("lan1net")].oid
    assert month_rows(d, [net]) == (1, BURST, BURST * IP_LEN)
    send_burst(topo)
    d.drain()   # now each address counts for its own unit
    assert month_rows(d, [u.oid for u in made]) == (BURST, BURST, BURST * IP_LEN)
    assert month_rows(d, [net]) == (1, BURST, BURST * IP_LEN)
    print(f"\n5,000 new addresses: drain + unit creation took {made_s:.2f} s")
    # units made at run time come back after a restart
    d.close()
    from acctd.daemon.core import Daemon
    d2 = Daemon(d.config, d.dp.sizes, netns=topo.ns["gw"])
    d2.start()
    try:
        assert len([u for u in d2.service(UnitsService).runtime if u.parents == ("auto",)]) == BURST
    finally:
        d2.close()


def test_unit_add_ip_auto_and_mac_control(topo, daemon):
    d = daemon
    # ip auto: the next free address of the pool, skipping owned ones
    assert d.call("unit-add", kind="host", name="kiosk", ip="auto")["ip"] == "10.2.0.100"
    assert d.call("unit-add", kind="user", name="guest", ip="auto")["ip"] == "10.2.0.101"
    with pytest.raises(Exception, match="exhausted"):
        d.call("unit-add", kind="host", name="third", ip="auto")
    assert d.call("unit-del", name="kiosk")["deleted"] == "kiosk"

    def bob_pings() -> int:
        return topo.ping("sub2", SRV.v4(), count=3, size=56).received

    assert bob_pings() == 3
    assert d.call("mac-check")["mismatched"] == {}
    # bob's address now answers from another MAC: blocked (reason mac). The
    # testbed's neighbour entries are permanent (a quiet wire), so the test
    # writes what the gateway would have learnt
    good = topo.mac("sub2", SUB2.host_if)

    def neighbour(mac: str) -> None:
        topo.ip("sub2", "link", "set", SUB2.host_if, "address", mac)
        topo.ip("gw", "neigh", "replace", SUB2.v4(), "lladdr", mac, "dev", SUB2.gw_if,
                "nud", "permanent")

    neighbour("02:ac:00:99:00:02")
    got = d.call("mac-check")["mismatched"]
    assert [(m["unit"], m["seen"]) for m in got.values()] == [("bob", "02:ac:00:99:00:02")]
    assert d.blocked()[SUB2.v4()] == ["sys-deny-mac"]
    assert bob_pings() == 0
    # the right MAC is back: the block lifts
    neighbour(good)
    assert d.call("mac-check")["mismatched"] == {}
    assert SUB2.v4() not in d.blocked()
    assert bob_pings() == 3
