"""The daemon as a RADIUS accounting client, with real traffic and a real
FreeRADIUS: a user's session reaches radacct as Start, Interim and Stop
with acctd's exact counts."""

from __future__ import annotations

import datetime as dt
import os
import random

import numpy as np
import pytest

from ..netns.topology import LINKS, Topology, remove_stale
from acctd.aaa.openvpn import OpenVpnService
from acctd.aaa.radius_accounting import RadiusService

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


COA = """
[coa]
listen = "127.0.0.1:{port}"
clients = [{{ address = "127.0.0.1", secret-file = "{secret}" }}]
"""


def test_disconnect_ends_and_blocks_and_coa_sets_the_rate(freeradius, radclient, tmp_path):
    """radclient against the daemon's [coa] receiver: a Disconnect-Request
    ends carol's session (Stop reaches radacct as Admin-Reset) and blocks
    her in the kernel; a CoA with WISPr rates gives her address a rate limit."""
    from acctd import config
    from acctd.daemon.core import Daemon
    from acctd.kernel import abi
    from acctd.kernel.build import Sizes
    from acctd.model.addresses import parse_addr

    from tests.ports import free_port
    from .test_coa_radclient import request, send
    if os.geteuid() != 0:
        pytest.skip("needs root: namespaces and BPF")
    secret = tmp_path / "radius.secret"
    secret.write_text(freeradius.secret + "\n")
    secret.chmod(0o600)
    coa_secret = tmp_path / "coa.secret"
    coa_secret.write_text("coa secret\n")
    coa_secret.chmod(0o600)
    port = free_port()
    cfg_path = tmp_path / "acctd.toml"
    cfg_path.write_text(CONFIG.format(db=tmp_path / "acctd.duckdb", server=freeradius.address,
                                      secret=secret) + COA.format(port=port, secret=coa_secret))
    remove_stale()
    with Topology() as topo:
        d = Daemon(config.load(str(cfg_path)),
                   Sizes(pin_root=f"/sys/fs/bpf/acctd-rc-{os.getpid()}-{random.randrange(1 << 30)}",
                         flows=4096, addrs=256), netns=topo.ns["gw"])
        try:
            d.start()
            d.call("session-start", user="carol", ip=SUB1.v4())
            assert topo.ping("sub1", SRV.v4(), count=3).received == 3
            nas = ("NAS-IP-Address = 192.0.2.1",)
            code, _, out = send(radclient, port, "disconnect",
                                request('User-Name = "carol"', *nas), secret="coa secret")
            assert code == "Disconnect-ACK", out
            assert d.call("session-list", open=True) == [] and d.service(OpenVpnService).blocked("carol")
            d.call("session-start", user="carol", ip=SUB1.v4())          # blocked wherever she appears
            assert topo.ping("sub1", SRV.v4(), count=3).received == 0
            d.set_sys_policy("carol", "sys-allow")
            code, _, out = send(radclient, port, "coa", request(
                'User-Name = "carol"', *nas, "WISPr-Bandwidth-Max-Down = 4000000",
                "WISPr-Bandwidth-Max-Up = 1000000"), secret="coa secret")
            assert code == "CoA-ACK", out
            cls = d.enforcer.kernel_classes()[(parse_addr(SUB1.v4()), 128)]
            assert cls[4] and cls[5]                     # policers in and out
            pol = d.dp.maps["acct_policers"]
            rates = [8e9 / (int(pol.lookup(np.uint32(i))["ns_per_byte"]) >> abi.POLICER_SHIFT)
                     for i in cls[4:6]]
            assert [round(r, -3) for r in rates] == [4_000_000, 1_000_000]
            code, _, out = send(radclient, port, "disconnect",
                                request('User-Name = "nobody"', *nas), secret="coa secret")
            assert code == "Disconnect-NAK", out
            assert d.service(RadiusService).client.flush(15)
        finally:
            d.close()
            d.dp.detach()
    rows = freeradius.radacct()
    assert rows[0]["acctterminatecause"] == "Admin-Reset"


def test_session_start_interim_stop_reach_radacct(freeradius, tmp_path):
    from acctd import config
    from acctd.daemon.core import Daemon
    from acctd.kernel.build import Sizes
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
            d.call("session-start", user="carol", ip=SUB1.v4())
            p1 = topo.ping("sub1", SRV.v4(), count=5, size=100)
            clock[0] += dt.timedelta(seconds=61)        # an interim is due
            d.drain()
            p2 = topo.ping("sub1", SRV.v4(), count=3, size=300)
            clock[0] += dt.timedelta(seconds=10)
            d.call("session-stop", user="carol")                      # drains, then Stop
            assert d.service(RadiusService).client.flush(15), "records still pending"
            x = d.call("session-list")[0]
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
