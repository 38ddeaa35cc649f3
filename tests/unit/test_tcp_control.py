"""The optional TCP listener: TLS always, argon2id passwords, levels, and a
peer that does not speak TLS gets nothing. Real TLS, real sockets, a real
certificate made by openssl for the test."""

import json
import shutil
import socket
import subprocess

import pytest
from argon2 import PasswordHasher

from acctd.config import loads
from acctd.control import client
from acctd.control import server as ctl
from acctd.errors import AcctError

from tests.ports import free_port

from .daemon_stub import daemon_stub

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl for a test certificate")


@pytest.fixture
def tcp(tmp_path):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(tmp_path / "k.pem"), "-out", str(tmp_path / "c.pem")],
                   check=True, capture_output=True)
    port = free_port()
    ph = PasswordHasher()
    cfg = loads(f"""
[server]
listen = "127.0.0.1:{port}"
tls-cert = "{tmp_path / 'c.pem'}"
tls-key = "{tmp_path / 'k.pem'}"

[[unit]]
type = "host"
name = "alice"
ip = "10.0.0.1"

[[user]]
name = "noc"
level = "viewer"
password = "{ph.hash('viewer-secret')}"

[[user]]
name = "ops"
level = "operator"
password = "{ph.hash('operator-secret')}"
""", str(tmp_path / "t.toml"))
    with daemon_stub(cfg) as d:
        srv = ctl.TcpControlServer(cfg.server, d.dispatcher)
        srv.request_timeout = 2.0
        srv.serve_in_thread()
        yield f"127.0.0.1:{port}", str(tmp_path / "c.pem")
        srv.shutdown()
        srv.server_close()


def test_right_password_reads(tcp):
    addr, ca = tcp
    assert client.call_tcp(addr, "units", "noc", "viewer-secret", ca)[0]["name"] == "alice"


def test_wrong_password_and_unknown_user_are_refused_alike(tcp):
    addr, ca = tcp
    for user, pw in (("noc", "nope"), ("mallory", "viewer-secret")):
        with pytest.raises(AcctError, match="permission denied: wrong user name or password"):
            client.call_tcp(addr, "units", user, pw, ca)


def test_levels_apply(tcp):
    addr, ca = tcp
    with pytest.raises(AcctError, match="needs level operator"):
        client.call_tcp(addr, "flush", "noc", "viewer-secret", ca)
    assert client.call_tcp(addr, "flush", "ops", "operator-secret", ca) == {"drain": 1}


def test_plain_tcp_gets_nothing(tcp):
    addr, _ = tcp
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(json.dumps({"cmd": "units"}).encode() + b"\n")
        data = b""
        try:
            while chunk := s.recv(4096):
                data += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    assert b"alice" not in data and b'"ok"' not in data


def test_config_refuses_a_plain_password(tmp_path):
    from acctd.errors import ConfigError
    with pytest.raises(ConfigError, match=r"t.toml:4: .*password.*argon2id"):
        loads('[[user]]\nname = "x"\nlevel = "admin"\npassword = "hunter2"\n', str(tmp_path / "t.toml"))


def test_acctctl_reads_the_password_file_once_and_asks_with_it_every_time(tcp, tmp_path):
    """`acctctl --connect ... top` asks again and again: every request
    carries the password (a file read a second time gives "")."""
    import click

    from acctctl.common import ask
    addr, ca = tcp
    pw = tmp_path / "pw"
    pw.write_text("viewer-secret\n")
    with open(pw) as f:
        ctx = click.Context(click.Command("acctctl"), obj={
            "connect": addr, "user": "noc", "password_file": f, "cafile": ca,
            "db": None, "socket": None})
        for _ in range(3):
            assert ask(ctx, "units")[0]["name"] == "alice"
