"""A reload through the real core and services (no kernel: daemon_stub):
every service gets its new table; the ones whose threads never wait for
the core's lock are reconfigured under it, so no session event or command
sees a service half reconfigured; CoA and OpenVPN, whose threads do wait
for it, after it is released; then enforcement is re-applied."""

import json

from acctd import config
from acctd.daemon.core import SERVICES
from acctd.services.login import LoginService

from .daemon_stub import ALICE, daemon_stub

UNITS = ALICE


def test_reload_hands_every_service_its_table_under_the_lock_servers_after(tmp_path,
                                                                          monkeypatch):
    path = tmp_path / "acctd.toml"
    path.write_text(UNITS + "\n[login]\ndefault-inact = 600\n")
    with daemon_stub(config.load(str(path)), tmp_path=tmp_path) as d:
        d.drain = lambda: {}  # no kernel to drain
        assert d.service(LoginService).settings.default_inact == 600
        path.write_text(UNITS + "\n[login]\ndefault-inact = 900\n")
        seen = {}
        for cls in SERVICES:
            def reload(self, settings, real=cls.reload):
                seen[self.name] = d.lock._is_owned()
                real(self, settings)
            monkeypatch.setattr(cls, "reload", reload)
        enforced = d.enforced
        d.reload()
        assert seen == {cls.name: cls.name not in ("coa", "openvpn", "radius_auth", "captive",
                                                  "central")
                        for cls in SERVICES}
        assert d.service(LoginService).settings.default_inact == 900
        assert d.enforced == enforced + 1


def test_unit_add_builds_the_model_once_and_unit_del_drains_once(tmp_path, monkeypatch):
    """`unit add` builds its snapshot once (the check that it fits is the
    build); `unit del` of a unit in session drains once, ends the session as
    admin-reset and makes one new snapshot."""
    from acctd.model.snapshot import Snapshot

    with daemon_stub(config.loads(UNITS), tmp_path=tmp_path) as d:
        drains = []
        d.drain_locked = lambda: drains.append(1) or {}
        builds = []
        build = Snapshot.build.__func__
        monkeypatch.setattr(Snapshot, "build", classmethod(
            lambda cls, *a, **k: builds.append(1) or build(cls, *a, **k)))
        d.call("unit-add", kind="user", name="carol")
        assert (len(builds), len(drains)) == (1, 1)
        d.call("session-start", user="carol", ip="10.0.0.9")
        del drains[:], builds[:]
        assert d.call("unit-del", name="carol")["deleted"] == "carol"
        assert len(drains) == 1 and len(builds) == 1
        rows = d.call("session-list")
        assert [(r["addr"], r["stop_cause"]) for r in rows] == [("10.0.0.9", "admin-reset")]


def test_whether_fw_policies_move_with_the_clock_is_worked_out_once_per_config(tmp_path,
                                                                              monkeypatch):
    """A session's start or stop rebinds the snapshot but lists no other
    fw-policy: the drains after it do not walk every unit again; a reload does."""
    from acctd.model import enforcement

    path = tmp_path / "acctd.toml"
    path.write_text(UNITS)
    with daemon_stub(config.load(str(path)), tmp_path=tmp_path) as d:
        d.drain_locked = d.drain = lambda: {}
        walks = []
        real = enforcement.time_dependent
        monkeypatch.setattr(enforcement, "time_dependent",
                            lambda *a: walks.append(1) or real(*a))
        assert d._fw_time_dependent() is False
        d.call("session-start", user="alice", ip="10.0.0.9")
        assert d._fw_time_dependent() is False
        assert len(walks) == 1
        d.reload()
        assert d._fw_time_dependent() is False
        assert len(walks) == 2


def test_acctctl_reload_answers_the_daemons_verdict(tmp_path):
    """Through the control socket, as an operator sees it: a config the daemon
    refuses is named with file:line, exit 1, and the running one stays; a
    good one says what changed."""
    from click.testing import CliRunner

    from acctctl.main import main
    from acctd.control.server import ControlServer

    path = tmp_path / "acctd.toml"
    path.write_text(UNITS)
    with daemon_stub(config.load(str(path)), tmp_path=tmp_path) as d:
        srv = ControlServer(str(tmp_path / "ctl.sock"), d.dispatcher)
        srv.serve_in_thread()
        try:
            def reload(*args):
                return CliRunner().invoke(main, ["--socket", srv.path, "reload", *args])
            path.write_text(UNITS + '[[unit]]\ntype = "user"\nname = "bob"\n'
                            "[processor]\nlookup-delay = 100000\n")
            res = reload()
            assert (res.exit_code, res.output) == (1, (
                f"acctctl: reload refused, the running configuration stays: {path}:14: "
                "[processor] key 'lookup-delay': expected seconds (an integer between 1 and "
                "3600), got 100000\n"))
            assert [u.name for u in d.snapshot.units] == ["alice"]
            path.write_text(UNITS + '[[unit]]\ntype = "user"\nname = "bob"\n')
            res = reload()
            assert (res.exit_code, res.output) == (0, f"reloaded {path}: units changed\n")
            assert [u.name for u in d.snapshot.units] == ["alice", "bob"]
            res = reload("--json")
            assert res.exit_code == 0
            assert json.loads(res.output) == {"reloaded": str(path), "changed": [], "units": 2,
                                              "policies": 1, "users": 0}
        finally:
            srv.shutdown()
            srv.server_close()


def test_a_reload_reads_the_as_table_again_and_says_the_policies_changed(tmp_path):
    import numpy as np

    from acctd.model.addresses import parse_addr, split_addrs
    table = tmp_path / "pfx2as.txt"
    table.write_text("8.8.8.0 24 15169\n")
    path = tmp_path / "acctd.toml"
    path.write_text('[processor]\nas-table = "pfx2as.txt"\n[[policy]]\nname = "g"\n'
                    'target = "as 15169"\n' + UNITS.replace('["ip"]', '["ip", "g"]'))
    dns = np.frombuffer(parse_addr("9.9.9.9"), np.uint8)

    def origin(d):
        return d.snapshot.policies.as_table.lookup(*split_addrs(dns)).tolist()
    with daemon_stub(config.load(str(path)), tmp_path=tmp_path) as d:
        d.drain = lambda: {}  # no kernel to drain
        assert origin(d) == [0]
        assert d.reload()["changed"] == []
        table.write_text("9.9.9.0 24 15169\n")
        assert d.reload()["changed"] == ["policies"]
        assert origin(d) == [15169]
