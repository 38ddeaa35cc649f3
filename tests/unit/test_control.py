"""The control socket: permissions from SO_PEERCRED, and malformed or
abusive requests answered (or dropped) within the limits while the server
keeps serving. A real server on a real Unix socket; the daemon behind it is
replaced by the state the requests here read (config only, no kernel)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from acctd.config import loads
from acctd.control import client
from acctd.control import server as ctl
from acctd.daemon.commands import config_text
from acctd.services.scheduler import request_from_argv
from .daemon_stub import daemon_stub

CONFIG = """
[[policy]]
name = "all-ip"
target = "proto ip"

[[unit]]
type = "host"
name = "alice"
ip = "10.0.0.1"

[[user]]
name = "noc"
level = "viewer"
uid = 65534

[[user]]
name = "ops"
level = "operator"
uid = 65533
"""


@pytest.fixture
def server():
    # a directory other uids may enter (pytest's tmp_path is root-only)
    tmp = tempfile.mkdtemp(prefix="acctd-ctl-")
    os.chmod(tmp, 0o755)
    with daemon_stub(loads(CONFIG, "t.toml")) as d:
        srv = ctl.ControlServer(os.path.join(tmp, "ctl.sock"), d.dispatcher)
        srv.request_timeout = 1.0
        srv.serve_in_thread()
        os.chmod(srv.path, 0o666)  # let the other-uid clients reach it; the check is SO_PEERCRED
        yield srv
        srv.shutdown()
        srv.server_close()
    shutil.rmtree(tmp)


def raw(path: str, data: bytes, wait: float = 5.0) -> bytes:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(wait)
    s.connect(path)
    with s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may close on an oversized request before reading it all
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    return out


def test_root_is_admin_and_gets_answers(server):
    assert client.call(server.path, "units")[0]["name"] == "alice"
    assert client.call(server.path, "flush") == {"drain": 1}


def test_truncated_json_gets_an_error(server):
    reply = json.loads(raw(server.path, b'{"cmd": "units"'))
    assert reply["ok"] is False and "bad request" in reply["error"]
    assert reply["code"] == "bad-request"
    assert client.call(server.path, "units")  # still serving


def test_ten_megabyte_line_is_refused_quickly(server):
    t = time.monotonic()
    reply = raw(server.path, b'{"cmd": "' + b"x" * 10_000_000 + b'"}\n')
    assert time.monotonic() - t < 5
    assert json.loads(reply)["error"] == f"request over {ctl.MAX_REQUEST} bytes"
    assert client.call(server.path, "units")


def test_invalid_utf8_gets_an_error(server):
    reply = json.loads(raw(server.path, b'{"cmd": "\xff\xfe"}\n'))
    assert reply["ok"] is False and "bad request" in reply["error"]


def test_binary_garbage_and_wrong_shapes_get_errors(server):
    for data, code in ((b"\x00\x01\x02\n", "bad-request"), (b"[1, 2]\n", "bad-request"),
                       (b'{"cmd": 5}\n', "bad-request"), (b'{"cmd": "nope"}\n', "not-found"),
                       (b'{"cmd": "list", "args": {}}\n', "bad-request"),
                       (b'{"cmd": "list", "args": {"unit": 7}}\n', "bad-request"),
                       (b'{"cmd": "units", "args": {"colour": "red"}}\n', "bad-request"),
                       (b'{"cmd": "list", "args": {"unit": "nobody"}}\n', "not-found")):
        reply = json.loads(raw(server.path, data))
        assert reply["ok"] is False and reply["code"] == code, (data, reply)
    assert "unknown unit 'nobody'" in reply["error"]


def test_idle_connection_is_dropped_and_others_are_served(server):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(server.path)
    with s:
        s.sendall(b'{"cmd": ')  # and then nothing
        assert client.call(server.path, "units")  # served meanwhile
        s.settimeout(5)
        t = time.monotonic()
        assert s.recv(100) == b""  # dropped without a reply
        assert time.monotonic() - t < 3


def _as_uid(path: str, uid: int, cmd: str) -> dict:
    """A client process with another uid, so the server sees its real credentials."""
    code = ("import json, socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]);"
            "s.sendall((json.dumps({'cmd': sys.argv[2]}) + '\\n').encode()); print(s.recv(65536).decode())")
    res = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                          sys.executable, "-c", code, path, cmd],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                reason="needs root and setpriv to connect as other uids")


@needs_root
@pytest.mark.root
def test_viewer_reads_but_cannot_change(server):
    assert _as_uid(server.path, 65534, "units")["ok"] is True
    denied = _as_uid(server.path, 65534, "flush")
    assert denied["ok"] is False and "needs level operator" in denied["error"]
    assert denied["code"] == "permission"


@needs_root
@pytest.mark.root
def test_operator_may_flush(server):
    assert _as_uid(server.path, 65533, "flush") == {"ok": True, "result": {"drain": 1}}


@needs_root
@pytest.mark.root
def test_unknown_uid_is_refused(server):
    reply = _as_uid(server.path, 4242, "units")
    assert reply["ok"] is False and "uid 4242 is not an acctd user" in reply["error"]
    assert reply["code"] == "permission"


def test_config_show_masks_secrets(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[radius]\nsecret = "s3cr3t"\nserver-password = "pw"\nname = "x"\n')
    text = config_text(str(p))
    assert "s3cr3t" not in text and "pw" not in text and 'name = "x"' in text
    assert config_text(str(p), unsecure=True) == p.read_text()


def test_scheduled_command_lines_become_requests():
    assert request_from_argv(["flush"]) == {"cmd": "flush", "args": {}}
    assert request_from_argv(["stat", "alice", "month"]) == \
        {"cmd": "stat", "args": {"unit": "alice", "period": "month"}}
    with pytest.raises(ValueError, match="cannot schedule"):
        request_from_argv(["rm", "-rf", "/"])
