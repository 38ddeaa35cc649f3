"""The login service with real traffic and an injected clock: a login
record blocks in the kernel until the unit logs in; totals follow a user
across logins from different addresses; timeouts block again; a wrong
password changes nothing."""

from __future__ import annotations

import datetime as dt
import os
import random

import pytest

from .gateway import STORED, all_traffic
from .topology import LINKS
from acctd.services.login import LoginService

pytestmark = [pytest.mark.root, pytest.mark.netns]

SUB1, SUB2, SRV = LINKS["sub1"], LINKS["sub2"], LINKS["srv"]

CONFIG = STORED + """
[login]
set-user-ip = true
min-inact = 60
[fticks]
federation = "eduroam"
visinst = "acctd-test"
viscountry = "UY"
key-file = "{key}"
file = "{fticks}"
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



def test_login_blocks_binds_and_times_out(topo, tmp_path):
    from acctd import config
    from acctd.daemon.core import Daemon
    from acctd.kernel.build import Sizes
    cfg_path = tmp_path / "acctd.toml"
    key = tmp_path / "fticks.key"
    key.write_text("not-so-secret\n")
    key.chmod(0o600)
    fticks_log = tmp_path / "fticks.log"
    cfg_path.write_text(CONFIG.format(db=tmp_path / "acctd.duckdb", bob=SUB2.v4(), key=key,
                                      fticks=fticks_log))
    clock = [dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.timezone.utc)]
    d = Daemon(config.load(str(cfg_path)),
               Sizes(pin_root=f"/sys/fs/bpf/acctd-l-{os.getpid()}-{random.randrange(1 << 30)}",
                     flows=4096, addrs=256), netns=topo.ns["gw"], clock=lambda: clock[0])

    def bob_pings(n: int = 4) -> int:
        return topo.ping("sub2", SRV.v4(), count=n, size=56).received

    try:
        d.start()
        assert bob_pings() == 4                       # no login record: not managed
        d.call("login-set", unit="bob", words=["password", "s3cret", "inact", "120", "abs", "600"])
        assert bob_pings() == 0                       # a record: blocked until login
        bad = d.call("login", unit="bob", password="guess")
        assert (bad["ok"], bad["code"]) == (False, "wrong-password")
        assert bob_pings() == 0                       # a wrong password changes nothing
        ok = d.call("login", unit="bob", password="s3cret", ip=SUB2.v4())
        assert ok["ok"] and ok["reply"].startswith("OK: login success from ip:" + SUB2.v4())
        assert bob_pings() == 4
        # inactivity counts from the last counted packet, which the drain
        # places at its own time when the clock is injected (no real time
        # passes): the pings are seen at +100 s, nothing after
        clock[0] += dt.timedelta(seconds=100)
        d.drain()
        assert SUB2.v4() not in d.blocked()
        clock[0] += dt.timedelta(seconds=110)         # 110 s idle: still in
        d.drain()
        assert SUB2.v4() not in d.blocked()
        clock[0] += dt.timedelta(seconds=20)          # 130 s idle > inact 120
        d.drain()
        assert d.blocked()[SUB2.v4()] == ["sys-deny-login"]
        assert bob_pings() == 0
        bob = d.snapshot.unit("bob").oid
        assert d.service(LoginService).table.get(bob).curr_state == "closed"
        # logged in again: the absolute timeout (600 s) ends it despite traffic
        assert d.call("login", unit="bob", password="s3cret")["ok"]
        for _ in range(6):
            clock[0] += dt.timedelta(seconds=110)
            assert bob_pings(2) == 2
            d.drain()
        assert bob_pings() == 0                       # 660 s after login > abs 600

        # carol, a user unit: set-user-ip binds her to where she logs in from
        d.call("login-set", unit="carol", words=["password", "hunter22"])
        r = d.call("login", unit="carol", password="hunter22", ip=SUB1.v4())
        assert r["ok"] and [s["addr"] for s in d.call("session-list", open=True)] == [SUB1.v4()]
        p1 = topo.ping("sub1", SRV.v4(), count=5, size=100)
        assert p1.received == 5
        assert d.call("logout", unit="carol", password="hunter22")["ok"]
        assert d.call("session-list", open=True) == []
        assert d.call("login", unit="carol", password="hunter22", ip=SUB1.v6())["ok"]
        p2 = topo.ping("sub1", SRV.v6(), count=3, size=100)
        d.drain()
        assert all_traffic(d, "carol") == {
            "out": (p1.request.packets + p2.request.packets,
                    p1.request.ip_bytes + p2.request.ip_bytes),
            "in": (p1.reply.packets + p2.reply.packets, p1.reply.ip_bytes + p2.reply.ip_bytes)}
        shown = d.call("login-show", unit="carol")["text"]
        assert "carol" in shown and "opened" in shown
        # every login attempt left one F-TICKS line, and they read back to the
        # same counts: bob failed once and logged in twice, carol twice
        lines = fticks_log.read_text().splitlines()
        assert len(lines) == 5 and all(ln.startswith("F-TICKS/eduroam/1.0#") for ln in lines)
        assert "bob" not in fticks_log.read_text()        # user names are hashed
        rows = d.call("fticks-report")["rows"]          # recorded as they were written
        assert {r["result"]: r["logins"] for r in rows} == {"OK": 4, "FAIL": 1}
        assert d.call("fticks-import", paths=[str(fticks_log)])["duplicates"] == 5
        assert {r["viscountry"] for r in rows} == {"UY"}
    finally:
        d.close()
        d.dp.detach()
