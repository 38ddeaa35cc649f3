"""Login records across gateways: a password set on one gateway logs the
unit in on another, and the login's state (opened, closed) is everywhere
(NOTIFY acctd_login, and at connect); the last change wins."""

import numpy as np
import pytest

from acctd.kernel.abi import SysPolicy
from acctd.services.login import LoginService
from acctd.services.runtime_units import UnitsService
from tests.central.gateways import gateway, status, wait
from tests.central.test_ledger import bits

pytestmark = pytest.mark.peers


def record(d, unit: str = "alice"):
    with d.lock:
        return d.service(LoginService).table.get(d.snapshot.unit(unit).oid)


def test_a_password_set_on_one_gateway_logs_the_unit_in_on_another(cluster, central_dsn,
                                                                   tmp_path):
    with gateway(central_dsn, "gw-a", tmp_path) as a, gateway(central_dsn, "gw-b", tmp_path) as b:
        wait(lambda: status(a)["state"] == status(b)["state"] == "connected")
        a.service(LoginService).set("alice", ["password", "s3cret", "mac", "02:00:00:00:00:0a"])
        # b has the record (blocked until the unit logs in), the hash and the MAC
        wait(lambda: bits(b, "alice") == SysPolicy.LOGIN, timeout=2)
        rec = record(b)
        assert rec.password == record(a).password and rec.password.startswith("$argon2id$")
        assert rec.mac == "02:00:00:00:00:0a"
        assert b.service(LoginService).login("alice", "wrong")["ok"] is False
        assert b.service(LoginService).login("alice", "s3cret")["reply"].startswith(
            "OK: login success")
        # opened on b: a's record is opened too, and neither kernel holds alice
        wait(lambda: record(a).curr_state == "opened", timeout=2)
        wait(lambda: bits(a, "alice") == bits(b, "alice") == 0, timeout=2)
        # a logout on a while the server is away reaches b after the reconnect
        cluster.kill9()
        try:
            wait(lambda: status(a)["state"] == "unreachable")
            assert a.service(LoginService).logout("alice", "s3cret")["ok"] is True
        finally:
            cluster.start()
        wait(lambda: record(b).curr_state == "closed", timeout=20)
        wait(lambda: bits(b, "alice") == SysPolicy.LOGIN, timeout=2)
    # a gateway that starts later has the record at connect
    with gateway(central_dsn, "gw-c", tmp_path) as c:
        wait(lambda: status(c)["state"] == "connected")
        wait(lambda: record(c) is not None and record(c).curr_state == "closed")
        assert c.service(LoginService).login("alice", "s3cret")["ok"] is True


def test_the_login_of_a_unit_made_at_run_time_reaches_the_others(central_dsn, tmp_path):
    with gateway(central_dsn, "gw-a", tmp_path) as a, gateway(central_dsn, "gw-b", tmp_path) as b:
        wait(lambda: status(a)["state"] == status(b)["state"] == "connected")
        a.service(UnitsService).add("host", "carol", "10.9.0.7")
        a.service(LoginService).set("carol", ["password", "pw-carol"])   # at once
        wait(lambda: "carol" in b.snapshot.base.index and record(b, "carol") is not None,
             timeout=2)
        assert b.service(LoginService).login("carol", "pw-carol")["ok"] is True


def test_set_user_ip_binds_the_address_on_every_gateway(central_dsn, tmp_path):
    """set-user-ip with [central]: bob logs in on a from 10.9.9.9, so b (his
    traffic may pass either gateway) binds the address to bob too; a logout
    on b ends the session on a. Both as the sessions service holds them
    and as the snapshot accounts the address."""
    from acctd.model.addresses import parse_addr
    from acctd.services.sessions import SessionsService
    login = "[login]\nset-user-ip = true\n"

    def holder(d) -> tuple[str | None, str | None]:
        """(the address of bob's open session, the unit 10.9.9.9 counts for)"""
        with d.lock:
            x = d.service(SessionsService).open.get(d.snapshot.unit("bob").oid)
            i = d.snapshot.units.match(np.frombuffer(parse_addr("10.9.9.9"), np.uint8)[None])[0]
            return (x.addr if x else None), (d.snapshot.units.units[i].name if i >= 0 else None)

    with gateway(central_dsn, "gw-a", tmp_path, extra=login) as a, \
            gateway(central_dsn, "gw-b", tmp_path, extra=login) as b:
        wait(lambda: status(a)["state"] == status(b)["state"] == "connected")
        a.service(LoginService).set("bob", ["password", "pw-bob"])
        wait(lambda: record(b, "bob") is not None, timeout=2)
        assert holder(a) == holder(b) == (None, None)
        assert a.service(LoginService).login("bob", "pw-bob", ip="10.9.9.9")["ok"] is True
        assert holder(a) == ("10.9.9.9", "bob")
        wait(lambda: holder(b) == ("10.9.9.9", "bob"), timeout=2)
        assert bits(b, "bob") == 0
        assert b.service(LoginService).logout("bob", "pw-bob", ip="10.9.9.9")["ok"] is True
        assert holder(b) == (None, None)
        wait(lambda: holder(a) == (None, None), timeout=2)
        wait(lambda: bits(a, "bob") == SysPolicy.LOGIN, timeout=2)
