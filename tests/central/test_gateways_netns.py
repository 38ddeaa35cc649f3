"""Two acctd gateways, each in its own namespace topology with real traffic
(tests/netns/topology.py), shipping to one PostgreSQL: a subscriber who
moves from gateway A to B mid-day has the exact sum in PostgreSQL, and a
shared day quota crossed by traffic split across them blocks in both
kernels."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import time

import psycopg
import pytest
from click.testing import CliRunner

from acctctl.main import main
from acctd.kernel.build import Sizes
from acctd.kernel.datapath import Datapath
from acctd.services.central import CentralService
from tests.central.gateways import wait
from tests.netns.conftest import TOOLS
from tests.netns.gateway import STORED
from tests.netns.topology import LINKS, Topology, remove_stale

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.peers]
SUB1, SRV = LINKS["sub1"], LINKS["srv"]
ECHO = 20 * (100 + 28)   # 20 pings of 100 bytes: IP bytes each way


@contextlib.contextmanager
def site(dsn: str, name: str, tmp_path, extra: str = ""):
    """One gateway: its own topology, pins and database, alice on sub1."""
    from acctd import config
    from acctd.daemon.core import Daemon
    from acctd.model import enforcement
    sizes = Sizes(pin_root=f"/sys/fs/bpf/acctd-central-{os.getpid()}-{secrets.token_hex(3)}",
                  flows=4096, addrs=256)
    path = tmp_path / f"{name}.toml"
    path.write_text(STORED.format(db=tmp_path / f"{name}.duckdb") + f"""
[[policy]]
name = "ip"
target = "proto ip"

[[unit]]
type = "host"
name = "alice"
ip = "{SUB1.v4()}"

[central]
dsn = "{dsn}"
gateway = "{name}"
retry = 1
{extra}""")
    with Topology() as topo:
        topo.set_all_offloads(False)
        d = Daemon(config.load(str(path)), sizes, netns=topo.ns["gw"])
        try:
            d.start()
            wait(lambda: d.service(CentralService).state == "connected")
            yield topo, d
        finally:
            if d.enforcer is not None:
                d.enforcer.apply(enforcement.plan(d.snapshot, {}, None))
            d.close()
            Datapath(sizes, netns=topo.ns["gw"]).detach()


@pytest.fixture
def bed():
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)}")
    remove_stale()


def day_total(dsn: str, oid: str) -> dict[str, int]:
    with psycopg.connect(dsn) as c:
        rows = c.execute(
            "SELECT g.name, r.dir, sum(r.bytes) FROM raw r JOIN gateway g ON g.id = r.gateway_id "
            "WHERE r.unit_oid = %s AND r.policy_oid = 0 AND r.ts >= date_trunc('day', now()) "
            "GROUP BY 1, 2 ORDER BY 1, 2", (int(oid, 16),)).fetchall()
    return {f"{g}/{'in' if d == 0 else 'out'}": int(b) for g, d, b in rows}


def shipped(d) -> bool:
    st = d.call("status")["services"]["central"]
    return st["backlog_drains"] == 0 and st["shipped_seq"] >= 1


def test_a_subscriber_moving_between_gateways_sums_exactly(bed, central_dsn, tmp_path):
    """Three gateways: alice behind A, then B, then C, the same day."""
    with contextlib.ExitStack() as stack:
        sites = [stack.enter_context(site(central_dsn, f"gw-{n}", tmp_path)) for n in "abc"]
        for (topo, d), count in zip(sites, (20, 40, 60)):
            assert topo.ping("sub1", SRV.v4(), count=count, size=100).received == count
            d.drain()
        wait(lambda: all(shipped(d) for _, d in sites))
        oid = sites[0][1].snapshot.unit("alice").oid
        assert day_total(central_dsn, oid) == {
            "gw-a/in": ECHO, "gw-a/out": ECHO, "gw-b/in": 2 * ECHO, "gw-b/out": 2 * ECHO,
            "gw-c/in": 3 * ECHO, "gw-c/out": 3 * ECHO}
        r = CliRunner().invoke(main, ["--central", central_dsn, "list", "alice", "--json"])
        day = {p["dir"]: p["day"]["bytes"] for p in json.loads(r.output)["policies"]
               if p["policy"] == "(all)"}
        assert day == {"in": 6 * ECHO, "out": 6 * ECHO}


def test_a_shared_day_quota_crossed_across_two_gateways_blocks_in_both(bed, central_dsn,
                                                                       tmp_path):
    with site(central_dsn, "gw-a", tmp_path) as (ta, a), \
            site(central_dsn, "gw-b", tmp_path) as (tb, b):
        for d in (a, b):   # 3K out a day, wherever she is
            d.call("quota-set", argv=["alice", "policy", "ip", "day", "3K", "out"])
        assert ta.ping("sub1", SRV.v4(), count=20, size=100).received == 20   # 2560 B out
        a.drain()
        assert a.blocked() == {}
        wait(lambda: shipped(a))
        wait(lambda: b.service(CentralService).elsewhere)
        assert tb.ping("sub1", SRV.v4(), count=10, size=100).received == 10   # 1280 B more
        t = time.monotonic()
        b.drain()
        assert b.blocked() == {SUB1.v4(): ["sys-deny-quota"]}
        wait(lambda: a.blocked() == {SUB1.v4(): ["sys-deny-quota"]}, timeout=5, step=0.01)
        assert time.monotonic() - t < 2.0
        assert ta.ping("sub1", SRV.v4(), count=3, size=100).received == 0
        assert tb.ping("sub1", SRV.v4(), count=3, size=100).received == 0


@contextlib.contextmanager
def pg_behind_veth():
    """A PostgreSQL in a namespace of its own, reached over a veth whose
    host end the test can down (the link goes silent: no RST, no FIN)."""
    import subprocess
    from acctd.bench.pgcluster import Cluster
    tag = secrets.token_hex(3)
    ns, host_if = f"acctc{os.getpid()}x{tag}-pg", f"acpg{tag}"

    def run(*argv):
        subprocess.run(argv, check=True, capture_output=True)
    run("ip", "netns", "add", ns)
    c = None
    try:
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
        run("ip", "addr", "add", "10.231.0.1/30", "dev", host_if)
        run("ip", "link", "set", host_if, "up")
        run("ip", "-n", ns, "addr", "add", "10.231.0.2/30", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        run("ip", "-n", ns, "link", "set", "lo", "up")
        c = Cluster(listen="10.231.0.2")
        c.initdb()
        c.start(netns=ns)
        yield c, (lambda up: run("ip", "link", "set", host_if, "up" if up else "down"))
    finally:
        if c is not None:
            c.remove()
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_the_postgres_link_down_while_traffic_flows(bed, tmp_path):
    with pg_behind_veth() as (pg, link), site(pg.dsn(), "gw-a", tmp_path) as (ta, a):
        assert ta.ping("sub1", SRV.v4(), count=20, size=100).received == 20
        a.drain()
        wait(lambda: shipped(a))
        link(False)
        for _ in range(2):
            assert ta.ping("sub1", SRV.v4(), count=20, size=100).received == 20
            a.drain()
        st = wait(lambda: (s := a.call("status")["services"]["central"])["state"] ==
                  "unreachable" and s, timeout=15)
        assert st["backlog_drains"] == 2
        assert a.call("quota-show")["text"] == ""   # still answering, from DuckDB
        link(True)
        st = wait(lambda: (s := a.call("status")["services"]["central"])["caught_up"]
                  and s["caught_up"]["done_at"] and s, timeout=20)
        assert st["caught_up"]["drains"] == 2 and st["backlog_drains"] == 0
        oid = a.snapshot.unit("alice").oid
        assert day_total(pg.dsn(), oid) == {"gw-a/in": 3 * ECHO, "gw-a/out": 3 * ECHO}
        with psycopg.connect(pg.dsn()) as c:
            seqs = [r[0] for r in c.execute("SELECT DISTINCT seq FROM raw ORDER BY 1")]
        assert seqs == [1, 2, 3]


def test_an_operators_block_on_one_gateway_reaches_the_others_kernel(bed, central_dsn, tmp_path):
    with site(central_dsn, "gw-a", tmp_path) as (ta, a), \
            site(central_dsn, "gw-b", tmp_path) as (tb, b):
        assert tb.ping("sub1", SRV.v4(), count=2).received == 2
        t = time.monotonic()
        a.set_sys_policy("alice", "sys-deny")
        wait(lambda: b.blocked() == {SUB1.v4(): ["sys-deny"]}, timeout=5, step=0.01)
        assert time.monotonic() - t < 2.0
        assert tb.ping("sub1", SRV.v4(), count=3).received == 0
        a.set_sys_policy("alice", "sys-allow")
        wait(lambda: b.blocked() == {}, timeout=5, step=0.01)
        assert tb.ping("sub1", SRV.v4(), count=2).received == 2
