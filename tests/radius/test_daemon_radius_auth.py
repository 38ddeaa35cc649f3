"""End to end: radtest logs a subscriber in at the daemon's Access-Request
server, the Accept gives her an auto-assign address, her session opens on
it, her real traffic (netns) is counted, and the Interim-Update and Stop
that reach a real FreeRADIUS's radacct carry acctd's counts."""

from __future__ import annotations

import datetime as dt
import os
import random

import pytest

from ..netns.topology import LINKS, Topology, remove_stale
from . import test_daemon_radius as base
from acctd.aaa.radius_accounting import RadiusService

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.peers]

SUB1, SRV = LINKS["sub1"], LINKS["srv"]

# test_daemon_radius's config, with a pool of one address, the
# Access-Request server, and erin instead of carol
CONFIG = base.CONFIG.replace('default-acct-policy = ["ip"]\n',
                             'default-acct-policy = ["ip"]\nauto-assign = ["{addr} {addr}"]\n'
                             ).replace('name = "carol"', 'name = "erin"') + """
[radius-auth]
listen = "127.0.0.1:{port}"
clients = [{{ address = "127.0.0.1", secret-file = "{secret}" }}]
"""


def test_accepted_session_is_counted_and_its_interims_carry_acctds_numbers(freeradius,
                                                                           tmp_path):
    from acctd import config
    from acctd.daemon.core import Daemon
    from acctd.kernel.build import Sizes

    from tests.ports import free_port
    from .test_radius_auth_radclient import parse, _peer
    import subprocess
    if os.geteuid() != 0:
        pytest.skip("needs root: namespaces and BPF")
    secret = tmp_path / "radius.secret"
    secret.write_text(freeradius.secret + "\n")
    secret.chmod(0o600)
    port = free_port()
    cfg_path = tmp_path / "acctd.toml"
    cfg_path.write_text(CONFIG.format(db=tmp_path / "acctd.duckdb", server=freeradius.address,
                                      secret=secret, port=port, addr=SUB1.v4()))
    clock = [dt.datetime.now(dt.timezone.utc)]
    remove_stale()
    with Topology() as topo:
        d = Daemon(config.load(str(cfg_path)),
                   Sizes(pin_root=f"/sys/fs/bpf/acctd-ra-{os.getpid()}-{random.randrange(1 << 30)}",
                         flows=4096, addrs=256), netns=topo.ns["gw"], clock=lambda: clock[0])
        try:
            d.start()
            d.call("login-set", unit="erin", words=["password", "erin-pw"])
            r = subprocess.run([_peer("radtest"), "-x", "erin", "erin-pw", f"127.0.0.1:{port}",
                                "0", freeradius.secret], capture_output=True, text=True,
                               timeout=30)
            code, attrs = parse(r.stdout + r.stderr)
            assert code == "Access-Accept" and attrs["Framed-IP-Address"] == SUB1.v4(), attrs
            p1 = topo.ping("sub1", SRV.v4(), count=5, size=100)
            assert p1.received == 5
            clock[0] += dt.timedelta(seconds=61)        # an interim is due
            d.drain()
            p2 = topo.ping("sub1", SRV.v4(), count=3, size=300)
            clock[0] += dt.timedelta(seconds=10)
            d.call("session-stop", user="erin")
            assert d.service(RadiusService).client.flush(15), "records still pending"
            (x,) = d.call("session-list")
        finally:
            d.close()
            d.dp.detach()
    assert (x["bytes_out"], x["bytes_in"]) == (
        p1.request.ip_bytes + p2.request.ip_bytes, p1.reply.ip_bytes + p2.reply.ip_bytes)
    reqs = freeradius.requests()
    assert [r["status"] for r in reqs] == ["Start", "Interim-Update", "Stop"]
    assert all(r["user"] == "erin" and r["ip"] == SUB1.v4() for r in reqs)
    interim = reqs[1]
    # RADIUS Input is what the NAS port received: the subscriber's out
    assert (int(interim["in_oct"]), int(interim["out_oct"])) == (p1.request.ip_bytes,
                                                                p1.reply.ip_bytes)
    (row,) = freeradius.radacct()
    assert (row["acctinputoctets"], row["acctoutputoctets"]) == (x["bytes_out"], x["bytes_in"])
