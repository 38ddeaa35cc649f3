"""Units made at run time on one gateway are made on the others, with the
same oid (NOTIFY acctd_unit, and at connect)."""

import pytest

from acctd.model.addresses import format_addr
from acctd.services.runtime_units import UnitsService
from tests.central.gateways import cfg, gateway, status, wait

pytestmark = pytest.mark.peers


def test_a_unit_added_on_one_gateway_is_on_the_others_with_its_oid(central_dsn, tmp_path):
    with gateway(central_dsn, "gw-a", tmp_path) as a, gateway(central_dsn, "gw-b", tmp_path) as b:
        wait(lambda: status(a)["state"] == status(b)["state"] == "connected")
        made = a.service(UnitsService).add("host", "carol", "10.9.0.7")
        wait(lambda: "carol" in b.snapshot.base.index, timeout=2)
        carol = b.snapshot.unit("carol")
        assert (carol.oid, carol.type, [format_addr(x) for x in carol.addrs]) == \
            (made["oid"], "host", [made["ip"]])
        assert made["ip"] == "10.9.0.7"
    # a gateway that starts later makes it at connect
    with gateway(central_dsn, "gw-c", tmp_path) as c:
        wait(lambda: status(c)["state"] == "connected")
        assert c.snapshot.unit("carol").oid == made["oid"]


def test_a_unit_deleted_on_one_gateway_is_deleted_on_the_others(cluster, central_dsn,
                                                                tmp_path):
    with gateway(central_dsn, "gw-a", tmp_path) as a, gateway(central_dsn, "gw-b", tmp_path) as b:
        wait(lambda: status(a)["state"] == status(b)["state"] == "connected")
        a.service(UnitsService).add("host", "carol", "10.9.0.7")
        a.service(UnitsService).add("host", "dave", "10.9.0.8")
        wait(lambda: {"carol", "dave"} <= set(b.snapshot.base.index), timeout=2)
        assert b.service(UnitsService).delete("carol")["deleted"] == "carol"
        wait(lambda: "carol" not in a.snapshot.base.index, timeout=2)
        # deleted while the server is away: gone on the other after the reconnect
        cluster.kill9()
        try:
            wait(lambda: status(a)["state"] == "unreachable")
            a.service(UnitsService).delete("dave")
        finally:
            cluster.start()
        wait(lambda: "dave" not in b.snapshot.base.index, timeout=20)
        assert "carol" not in a.snapshot.base.index
    # a gateway that starts later makes neither; a name made again is made again
    with gateway(central_dsn, "gw-c", tmp_path) as c:
        wait(lambda: status(c)["state"] == "connected")
        with gateway(central_dsn, "gw-a", tmp_path) as a:
            wait(lambda: status(a)["state"] == "connected")
            made = a.service(UnitsService).add("host", "carol", "10.9.0.9")
            wait(lambda: "carol" in c.snapshot.base.index, timeout=2)
            assert c.snapshot.unit("carol").oid == made["oid"]
            assert "dave" not in c.snapshot.base.index


def test_a_unit_a_reload_drops_stays_on_the_others(central_dsn, tmp_path):
    with gateway(central_dsn, "gw-a", tmp_path) as a, gateway(central_dsn, "gw-b", tmp_path) as b:
        wait(lambda: status(a)["state"] == status(b)["state"] == "connected")
        made = a.service(UnitsService).add("host", "carol", "10.9.0.7")
        wait(lambda: "carol" in b.snapshot.base.index, timeout=2)
        # gw-a's config now has its own carol: the run-time one no longer fits there
        with a.lock:
            a.rebuild(cfg=cfg(central_dsn, "gw-a", '[[unit]]\ntype = "host"\nname = "carol"\n'
                                                   'ip = "10.9.0.70"\n'))
        assert "carol" not in [u.name for u in a.service(UnitsService).runtime]
        b.service(UnitsService).add("host", "dave", "10.9.0.8")   # a NOTIFY after it
        wait(lambda: "dave" in a.snapshot.base.index, timeout=2)
        assert [format_addr(x) for x in b.snapshot.unit("carol").addrs] == [made["ip"]]
        assert "carol" in [u.name for u in b.service(UnitsService).runtime]
