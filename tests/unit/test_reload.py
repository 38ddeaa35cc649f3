"""A reload through the real core and services (no kernel: daemon_stub):
every service gets its new table; the ones whose threads never wait for
the core's lock are reconfigured under it, so no session event or command
sees a service half reconfigured; CoA and OpenVPN, whose threads do wait
for it, after it is released; then enforcement is re-applied."""

from acctd import config
from acctd.daemon.core import SERVICES
from acctd.services.login import LoginService

from .daemon_stub import daemon_stub

UNITS = """
[[policy]]
name = "ip"
target = "proto ip"

[[unit]]
type = "user"
name = "alice"
acct-policy = ["ip"]
"""


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
        assert seen == {cls.name: cls.name not in ("coa", "openvpn") for cls in SERVICES}
        assert d.service(LoginService).settings.default_inact == 900
        assert d.enforced == enforced + 1
