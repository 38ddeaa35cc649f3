"""Fixtures for the real-OpenVPN tests: a PKI made once per session, and per
test a fresh namespace pair (`vpn`) whose servers, clients and management
clients are all stopped afterwards, whatever happened.

They skip with the reason when not root or openvpn is missing, except with
ACCTD_PEERS_REQUIRED=1, when they fail instead (CI installs Debian's
openvpn and runs as root, so a skip there would hide a regression)."""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from . import rig
from tests.peer import missing_peer

def pytest_configure(config):
    if not any(line.split(":")[0].strip() == "peers" for line in config.getini("markers")):
        config.addinivalue_line(
            "markers", "peers: runs real peer programs (an OpenVPN server and client) in "
                       "network namespaces; needs root")


@pytest.fixture(scope="session")
def openvpn_peers():
    why = rig.have_openvpn()
    if why:
        missing_peer(why)


@pytest.fixture(scope="session")
def pki(openvpn_peers, tmp_path_factory) -> Path:
    return rig.make_pki(tmp_path_factory.mktemp("pki"))


class Events:
    """What a ManagementClient's callbacks reported, with a way to wait."""

    def __init__(self):
        self.items: list[tuple[str, tuple]] = []
        self.cv = threading.Condition()

    def callback(self, kind: str):
        def cb(*args):
            with self.cv:
                self.items.append((kind, args))
                self.cv.notify_all()
        return cb

    def of(self, kind: str) -> list[tuple]:
        with self.cv:
            return [a for k, a in self.items if k == kind]

    def wait(self, kind: str, pred=lambda args: True, timeout: float = 15.0,
             skip: int = 0) -> tuple:
        """The first `kind` event after the first `skip` that satisfies pred."""
        end = time.monotonic() + timeout
        with self.cv:
            while True:
                hits = [a for a in self.of(kind)[skip:] if pred(a)]
                if hits:
                    return hits[0]
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {kind} event within {timeout} s; got {self.items}")
                self.cv.wait(left)


class Vpn:
    """One test's OpenVPN world: the namespace pair, a directory with the PKI."""

    def __init__(self, pair: rig.Pair, d: Path):
        self.pair, self.d = pair, d
        self.managers = []

    def script(self) -> Path:
        return rig.env_dump_script(self.d)

    def hook_env(self, kind: str) -> dict:
        """The environment of the last `kind` script run."""
        return rig.read_env(self.d, kind)

    def server(self, **kw) -> rig.Server:
        return rig.Server(self.pair, self.d, **kw).start()

    def client(self, cn: str = "alice", wait: bool = True,
               auth: tuple[str, str] | None = None) -> rig.Client:
        return rig.Client(self.pair, self.d, cn, auth=auth).start(wait)

    def management(self, table: dict, is_blocked=None, attach: bool = True):
        """A started ManagementClient for an [openvpn] table and its Events.
        Its thread lives in the server's namespace, where 127.0.0.1:7505 is."""
        from acctd.aaa.openvpn import ManagementClient, OpenVpnSettings
        events = Events()
        mc = ManagementClient(OpenVpnSettings.from_mapping(table, base=self.d),
                              on_start=events.callback("start"),
                              on_interim=events.callback("interim"),
                              on_stop=events.callback("stop"), is_blocked=is_blocked)
        self.managers.append(mc)
        with self.pair.inside(self.pair.server):
            mc.start()
        if attach:
            assert mc.wait_attached(10), f"not attached: {mc.last_error}"
        return mc, events

    def password_file(self, password: str) -> str:
        p = self.d / "acctd-mgmt.pw"
        p.write_text(password + "\n")
        p.chmod(0o600)
        return str(p)


@pytest.fixture
def vpn(pki, tmp_path):
    rig.remove_stale()
    d = tmp_path / "vpn"
    shutil.copytree(pki, d)
    with rig.Pair() as pair:
        v = Vpn(pair, d)
        try:
            yield v
        finally:
            for mc in v.managers:
                mc.stop()
