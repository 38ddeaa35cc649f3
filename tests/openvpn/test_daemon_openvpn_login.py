"""OpenVPN checks passwords against the login records: the daemon and a
real OpenVPN server and client (--auth-user-pass), through the management
interface (--management-client-auth) and through `acctctl openvpn-hook`
as --auth-user-pass-verify. A good password connects, a wrong one gets
AUTH_FAILED, a blocked unit is refused, and each writes an F-TICKS line."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

from . import test_daemon_openvpn as base
from .test_daemon_openvpn import wait_for

pytestmark = [pytest.mark.peers, pytest.mark.slow]

# test_daemon_openvpn's config, the management line filled in per test
CONFIG = base.CONFIG.replace('management = "unix:{sock}"', "{management}") + """
[[unit]]
type = "user"
name = "bob"
[fticks]
federation = "acctd"
file = "{fticks}"
raw-values = true
ap = "acctd.example"
"""

WRAPPER = """#!/bin/sh
# acctctl of this tree, for OpenVPN's scripts
PYTHONPATH={tree} exec {python} -m cli.main --socket {sock} openvpn-hook "$@"
"""


def daemon(tmp_path: Path, management: str):
    from acctd import config
    from acctd.daemon.core import Daemon
    from acctd.kernel.build import Sizes
    from acctd.services.login import LoginService
    from argon2 import PasswordHasher
    cfg = tmp_path / "acctd.toml"
    cfg.write_text(CONFIG.format(db=tmp_path / "acctd.duckdb", management=management,
                                 fticks=tmp_path / "fticks.log"))
    d = Daemon(config.load(str(cfg)),
               Sizes(pin_root=f"/sys/fs/bpf/acctd-ol-{os.getpid()}-{random.randrange(1 << 30)}",
                     flows=1024, addrs=64))
    d.start()
    d.service(LoginService).table.hasher = PasswordHasher(time_cost=1, memory_cost=8,
                                                          parallelism=1)
    for unit in ("alice", "bob"):
        d.call("login-set", unit=unit, words=["password", f"{unit}-pw"])
    d.set_sys_policy("bob", "sys-deny")
    return d


def fticks(tmp_path: Path) -> list[str]:
    f = tmp_path / "fticks.log"
    return f.read_text().splitlines() if f.exists() else []


def refused(cli) -> bool:
    assert cli.proc.wait(20) == 0      # AUTH_FAILED: the client gives up (no --auth-retry)
    return "AUTH_FAILED" in cli.log.read_text()


def outcomes(vpn, d, tmp_path):
    """The three cases against whichever path the server uses."""
    cli = vpn.client("alice", auth=("alice", "alice-pw"))
    (s,) = wait_for(lambda: d.call("session-list", open=True))
    assert (s["user"], s["addr"]) == ("alice", "10.8.0.2")
    assert vpn.pair.run(vpn.pair.client, "ping", "-c", "2", "-i", "0.2", "10.8.0.1",
                        capture_output=True).returncode == 0
    (ok,) = fticks(tmp_path)
    assert "#RESULT=OK#PN=alice#AP=acctd.example#AN=openvpn#" in ok
    cli.stop()
    wait_for(lambda: d.call("session-list", open=True) == [])
    assert refused(vpn.client("alice", wait=False, auth=("alice", "wrong")))
    assert refused(vpn.client("bob", wait=False, auth=("bob", "bob-pw")))
    assert d.call("session-list", open=True) == []
    lines = fticks(tmp_path)[1:]
    assert ["#RESULT=FAIL#PN=alice#" in lines[0], "#RESULT=FAIL#PN=bob#" in lines[1]] == \
        [True, True], lines


def test_management_client_auth_checks_the_password(vpn, tmp_path):
    srv = vpn.server(mgmt="unix", client_auth=True)
    d = daemon(tmp_path, f'management = "unix:{srv.sock}"')
    try:
        from acctd.aaa.openvpn import OpenVpnService
        client = d.service(OpenVpnService).client
        assert client.wait_attached(10), client.last_error
        outcomes(vpn, d, tmp_path)
    finally:
        d.close()
        d.dp.detach()


def test_auth_user_pass_verify_script_checks_the_password(vpn, tmp_path):
    from acctd.control.server import ControlServer
    d = daemon(tmp_path, "")
    srv = ControlServer(str(tmp_path / "ctl.sock"), d.dispatcher)
    srv.serve_in_thread()
    hook = tmp_path / "acctctl-hook.sh"
    hook.write_text(WRAPPER.format(tree=Path(__file__).resolve().parents[2],
                                   python=sys.executable, sock=srv.path))
    hook.chmod(0o755)
    try:
        vpn.server(mgmt="unix", extra=(
            "--script-security", "2", "--auth-user-pass-verify", str(hook), "via-file",
            "--client-connect", str(hook), "--client-disconnect", str(hook)))
        outcomes(vpn, d, tmp_path)
    finally:
        srv.shutdown()
        srv.server_close()
        d.close()
        d.dp.detach()
