"""The daemon and a real OpenVPN server: a client's connection becomes a
session of the user unit named by its certificate, with the VPN address
and the server's byte counts; blocking the unit disconnects the client and
refuses it; acctctl openvpn-hook does the same from scripts."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import pytest
from acctd.aaa.openvpn import OpenVpnService

pytestmark = [pytest.mark.peers, pytest.mark.slow]

CONFIG = """
[processor]
lookup-delay = 300
[storage]
path = "{db}"
[openvpn]
management = "unix:{sock}"
interim-interval = 1
status-interval = 1
[[unit]]
type = "user"
name = "alice"
"""


def wait_for(pred, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise TimeoutError("condition not met")


def test_daemon_sessions_from_the_management_interface(vpn, tmp_path):
    from acctd import config
    from acctd.daemon.core import Daemon
    from acctd.kernel.build import Sizes
    srv = vpn.server(mgmt="unix", client_auth=True)
    cfg = tmp_path / "acctd.toml"
    cfg.write_text(CONFIG.format(db=tmp_path / "acctd.duckdb", sock=srv.sock))
    d = Daemon(config.load(str(cfg)),
               Sizes(pin_root=f"/sys/fs/bpf/acctd-ov-{os.getpid()}-{random.randrange(1 << 30)}",
                     flows=1024, addrs=64))
    try:
        d.start()
        client = d.service(OpenVpnService).client
        assert client.wait_attached(10), client.last_error
        cli = vpn.client("alice")
        (s,) = wait_for(lambda: d.call("session-list", open=True))
        assert (s["user"], s["addr"], s["source"]) == ("alice", "10.8.0.2", "openvpn")
        vpn.pair.run(vpn.pair.client, "ping", "-c", "3", "-i", "0.2", "10.8.0.1")
        wait_for(lambda: (d.call("session-list", open=True) or [{}])[0].get("nas_bytes_out"))
        # blocked: the client is disconnected and its reconnect refused
        d.set_sys_policy("alice", "sys-deny")
        stopped = wait_for(lambda: [x for x in d.call("session-list") if x["stop"]])
        assert stopped[0]["stop_cause"] == "user-request" and stopped[0]["nas_bytes_out"] > 0
        assert cli.proc.wait(15) == 0
        assert "AUTH_FAILED" in cli.log.read_text()
        assert d.call("session-list", open=True) == []
    finally:
        d.close()
        d.dp.detach()


def test_openvpn_hook_script_mode(tmp_path):
    """acctctl openvpn-hook with OpenVPN's script environment against a real
    daemon socket (no OpenVPN needed: the environment is what it sets)."""
    from acctd import config
    from acctd.control.server import ControlServer
    from acctd.daemon.core import Daemon
    from acctd.kernel.build import Sizes
    if os.geteuid() != 0:
        pytest.skip("needs root to load the BPF programs")
    cfg = tmp_path / "acctd.toml"
    cfg.write_text(CONFIG.replace('[openvpn]\nmanagement = "unix:{sock}"\n', "[openvpn]\n")
                   .format(db=tmp_path / "acctd.duckdb"))
    d = Daemon(config.load(str(cfg)),
               Sizes(pin_root=f"/sys/fs/bpf/acctd-oh-{os.getpid()}-{random.randrange(1 << 30)}",
                     flows=1024, addrs=64))
    d.start()
    srv = ControlServer(str(tmp_path / "ctl.sock"), d.dispatcher)
    srv.serve_in_thread()
    bindir = os.path.dirname(sys.executable)

    def hook(kind: str, **env) -> int:
        e = {"PATH": os.environ["PATH"], "script_type": kind, "common_name": "alice",
             "ifconfig_pool_remote_ip": "10.8.0.6", "trusted_ip": "198.51.100.7",
             "trusted_port": "40000", "time_unix": str(int(time.time())), **env}
        return subprocess.run([f"{bindir}/acctctl", "--socket", srv.path, "openvpn-hook"],
                              env=e, capture_output=True, text=True, timeout=30).returncode
    try:
        assert hook("client-connect") == 0
        assert [x["addr"] for x in d.call("session-list", open=True)] == ["10.8.0.6"]
        assert hook("client-disconnect", bytes_sent="5000", bytes_received="700",
                    time_duration="12") == 0
        (x,) = d.call("session-list")
        assert (x["nas_bytes_in"], x["nas_bytes_out"], x["stop"] is not None) == (5000, 700, True)
        d.set_sys_policy("alice", "sys-deny")
        assert hook("client-connect") == 1              # refused while blocked
        assert d.call("session-list", open=True) == []
    finally:
        srv.shutdown()
        srv.server_close()
        d.close()
        d.dp.detach()
