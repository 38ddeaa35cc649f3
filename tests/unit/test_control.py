"""The control socket: permissions from SO_PEERCRED, unknown peers refused
when accepted, connection slots per uid with root's kept, the listen
queue, and malformed or abusive requests answered (or dropped) within the
limits while the server keeps serving. A real server on a real Unix
socket, clients of other uids in forked or setpriv'd processes; the daemon
behind it is the stub's (config only, no kernel)."""

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from acctd.config import loads
from acctd.control import client
from acctd.control import server as ctl
from acctd.daemon.commands import config_text
from acctd.errors import AcctError, BadRequest
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
                       (b'{"cmd": "stat", "args": {}}\n', "bad-request"),
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
    code = ("import json, socket, sys\ns = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
            "try: s.sendall((json.dumps({'cmd': sys.argv[2]}) + '\\n').encode())\n"
            "except BrokenPipeError: pass  # refused before reading: the reply waits\n"
            "print(s.recv(65536).decode())")
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
    assert text == '[radius]\nsecret = "********"\nserver-password = "********"\nname = "x"\n'
    assert config_text(str(p), unsecure=True) == p.read_text()


def test_config_show_masks_the_passwords_inside_carried_login_lines(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[login.units.alice]\nraw = ["password s3cret inact 600",\n'
                 '       "mac 02:00:00:00:00:01 PASSWORD \'hunter2\' strict"]\n')
    assert config_text(str(p)) == ('[login.units.alice]\nraw = ["password ******** inact 600",\n'
                                   '       "mac 02:00:00:00:00:01 PASSWORD ******** strict"]\n')


def test_scheduled_command_lines_become_requests():
    assert request_from_argv(["flush"]) == {"cmd": "flush", "args": {}}
    assert request_from_argv(["stat", "alice", "month"]) == \
        {"cmd": "stat", "args": {"unit": "alice", "period": "month"}}
    with pytest.raises(ValueError, match="cannot schedule"):
        request_from_argv(["rm", "-rf", "/"])


# -- who may hold a connection, and what a connection may send ---------------------------

@contextlib.contextmanager
def as_uid(uid: int, fn):
    """fn() in a forked child with this uid (so SO_PEERCRED names it); yields
    what fn returned (JSON), the child kept alive, its connections open,
    until the block ends."""
    out_r, out_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: raw sockets only, then _exit
        try:
            os.close(out_r)
            os.close(hold_w)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            try:
                res = fn()
            except BaseException as e:
                res = {"child failed": repr(e)}
            os.write(out_w, json.dumps(res).encode())
            os.close(out_w)
            os.read(hold_r, 1)  # EOF when the parent is done
        finally:
            os._exit(0)
    os.close(out_w)
    os.close(hold_r)
    try:
        data = b""
        while chunk := os.read(out_r, 65536):
            data += chunk
        yield json.loads(data)
    finally:
        os.close(hold_w)
        os.waitpid(pid, 0)
        os.close(out_r)


_held = []  # the child's connections, open until it exits


def hold(path: str, n: int, send: bytes = b"") -> list:
    """n connections, each sending `send`; what each got within half a
    second (None: nothing yet, the connection is open and waiting)."""
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        if send:
            try:
                s.sendall(send)
            except OSError:
                pass  # refused before it read us: the reply is waiting
        _held.append(s)
    time.sleep(0.5)
    got = []
    for s in _held[-n:]:
        s.setblocking(False)
        try:
            data = s.recv(65536)
            got.append(json.loads(data) if data else "closed")
        except BlockingIOError:
            got.append(None)
    return got


def _refused_uid(uid):
    return {"ok": False, "code": "permission",
            "error": f"permission denied: uid {uid} is not an acctd user (add a [[user]] with "
                     "this uid)"}


def _too_many(uid):
    return {"ok": False, "code": "conflict",
            "error": f"too many connections for uid {uid} (max {ctl.MAX_PER_UID})"}


@needs_root
@pytest.mark.root
def test_an_unknown_peer_is_answered_and_closed_at_once(server, caplog):
    server.request_timeout = 30  # a silent known peer would wait this long
    with caplog.at_level(logging.INFO), as_uid(4242, lambda: hold(server.path, 20)) as got:
        pass
    # the reply was there within half a second, without a byte sent; then EOF
    assert got == [_refused_uid(4242)] * 20
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1, refused  # once, not 20 times
    assert re.fullmatch(r"control: refused uid 4242 \(pid \d+\): permission denied: uid 4242 is "
                        r"not an acctd user \(add a \[\[user\]\] with this uid\)", refused[0])


@needs_root
@pytest.mark.root
def test_a_user_holding_its_slots_locks_out_neither_root_nor_other_users(server):
    server.request_timeout = 30
    n = ctl.MAX_CONNECTIONS + 1
    with as_uid(65534, lambda: hold(server.path, n)) as got:
        # the first MAX_PER_UID are open and waiting; the rest refused at once
        assert got == [None] * ctl.MAX_PER_UID + [_too_many(65534)] * (n - ctl.MAX_PER_UID)
        assert client.call(server.path, "units")[0]["name"] == "alice"
        assert _as_uid(server.path, 65533, "units")["ok"] is True
        conns = client.call(server.path, "connections")
        assert [c["uid"] for c in conns].count(65534) == ctl.MAX_PER_UID


@needs_root
@pytest.mark.root
def test_silent_connections_time_out_and_give_their_slots_back(server):
    with as_uid(65534, lambda: hold(server.path, ctl.MAX_PER_UID + 1)) as got:
        assert got[-1] == _too_many(65534)
        time.sleep(server.request_timeout + 0.5)  # the fixture's 1 s
        # only the connection asking is left
        assert [c["uid"] for c in client.call(server.path, "connections")] == [0]
        assert _as_uid(server.path, 65534, "units")["ok"] is True


@needs_root
@pytest.mark.root
def test_the_last_slots_are_root_s(tmp_path):
    """Users together fill every slot but ROOT_SLOTS; root still gets in."""
    uids = list(range(65500, 65500 + ctl.MAX_CONNECTIONS // ctl.MAX_PER_UID + 1))
    users = "".join(f'\n[[user]]\nname = "u{u}"\nlevel = "viewer"\nuid = {u}\n' for u in uids)
    tmp = tempfile.mkdtemp(prefix="acctd-ctl-")
    os.chmod(tmp, 0o755)
    with daemon_stub(loads(CONFIG + users, "t.toml")) as d, contextlib.ExitStack() as held:
        srv = ctl.ControlServer(os.path.join(tmp, "ctl.sock"), d.dispatcher)
        srv.serve_in_thread()
        os.chmod(srv.path, 0o666)
        try:
            got = [held.enter_context(as_uid(u, lambda: hold(srv.path, ctl.MAX_PER_UID)))
                   for u in uids]
            open_ = sum(g.count(None) for g in got)
            assert open_ == ctl.MAX_CONNECTIONS - ctl.ROOT_SLOTS
            assert got[-1][-1] == {"ok": False, "code": "conflict",
                                   "error": f"too many connections (max {ctl.MAX_CONNECTIONS}, "
                                            f"the last {ctl.ROOT_SLOTS} kept for root)"}
            for _ in range(3):
                assert client.call(srv.path, "units")[0]["name"] == "alice"
        finally:
            held.close()
            srv.shutdown()
            srv.server_close()
    shutil.rmtree(tmp)


@needs_root
@pytest.mark.root
def test_a_30k_line_of_brackets_from_an_unknown_peer_is_refused_unparsed(server, caplog, capfd):
    with caplog.at_level(logging.INFO), \
            as_uid(4242, lambda: hold(server.path, 1, b"[" * 30_000 + b"\n")) as got:
        pass
    assert got == [_refused_uid(4242)]
    assert not [r for r in caplog.records if r.exc_info]
    assert "Traceback" not in capfd.readouterr().err
    assert client.call(server.path, "units")


def test_deep_nesting_is_a_bad_request_without_a_traceback(server, caplog, capfd):
    deep = b'{"cmd": "units", "args": {"name": ' + b"[" * 5000 + b"]" * 5000 + b"}}\n"
    with caplog.at_level(logging.INFO):
        for data in (b"[" * 30_000 + b"\n", deep):
            assert json.loads(raw(server.path, data)) == {
                "ok": False, "code": "bad-request",
                "error": f"bad request: nested deeper than {ctl.MAX_DEPTH}"}
        # brackets inside a string do not nest
        reply = json.loads(raw(server.path, b'{"cmd": "list", "args": {"unit": "'
                               + b"[{" * 5000 + b'"}}\n'))
        assert reply["code"] == "not-found" and reply["error"].startswith("unknown unit '[{[{")
    assert not [r for r in caplog.records if r.exc_info]
    assert "Traceback" not in capfd.readouterr().err
    # 32 deep is still a request (and a wrong argument type here)
    ok = b'{"cmd": "units", "args": {"name": ' + b"[" * 30 + b"]" * 30 + b"}}\n"
    assert json.loads(raw(server.path, ok))["error"].startswith("argument 'name': expected str")


def test_repeated_bad_requests_are_logged_once_with_a_count(server, caplog):
    with caplog.at_level(logging.INFO):
        for _ in range(20):
            raw(server.path, b"\x00garbage\n")
    bad = [r.getMessage() for r in caplog.records if "bad request" in r.getMessage()]
    assert len(bad) == 1 and bad[0].startswith("control: bad request from uid 0 (root, pid ")


def test_a_throttled_warning_tells_how_many_it_held_back(caplog):
    from acctd.common.throttle import Throttle
    now = [100.0]
    t = Throttle(logging.getLogger("acctd.test"), every=60, clock=lambda: now[0])
    with caplog.at_level(logging.INFO):
        for i in range(5):
            t.warning("x", "thing %d happened", i)
        t.warning("y", "other")
        now[0] += 61
        t.warning("x", "thing %d happened", 9)
    assert [r.getMessage() for r in caplog.records] == [
        "thing 0 happened", "other", "thing 9 happened (and 4 more like it in the last 61 s)"]


# -- the listen queue -------------------------------------------------------------------

def test_a_burst_of_clients_waits_in_the_listen_queue(tmp_path):
    """100 connections before the server accepts any: the kernel queues
    them all (the backlog was 5: the sixth client got EAGAIN at once), and
    every client is answered once the server serves."""
    with daemon_stub(loads(CONFIG, "t.toml")) as d:
        srv = ctl.ControlServer(str(tmp_path / "ctl.sock"), d.dispatcher)
        serving = None
        try:
            queued = []
            for _ in range(100):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.setblocking(False)
                s.connect(srv.path)  # BlockingIOError when the queue is full
                queued.append(s)
            for s in queued:
                s.close()
            answers = []
            threads = [threading.Thread(target=lambda: answers.append(
                client.call(srv.path, "units")[0]["name"])) for _ in range(32)]
            for t in threads:
                t.start()
            serving = srv.serve_in_thread()
            for t in threads:
                t.join(30)
            assert answers == ["alice"] * 32
        finally:
            if serving:
                srv.shutdown()
            srv.server_close()


@contextlib.contextmanager
def full_queue(path: str):
    """A listening socket whose queue is full, accepting nothing."""
    lsn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsn.bind(path)
    lsn.listen(0)
    pending = []
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(path)
        except BlockingIOError:
            s.close()
            break
        pending.append(s)
    try:
        yield lsn, pending
    finally:
        for s in pending:
            s.close()
        lsn.close()


def test_the_client_waits_out_a_full_queue(tmp_path):
    path = str(tmp_path / "ctl.sock")
    with full_queue(path) as (lsn, pending):
        def serve_later():
            time.sleep(0.3)
            for s in pending:  # the queue empties: they hang up
                s.close()
            while True:
                conn, _ = lsn.accept()
                conn.settimeout(5)
                with conn:
                    if conn.recv(65536):  # the queued ones were closed: EOF
                        conn.sendall(b'{"ok": true, "result": "served"}\n')
                        return
        lsn.settimeout(10)
        t = threading.Thread(target=serve_later, daemon=True)
        t.start()
        assert client.call(path, "units") == "served"
        t.join(5)


def test_the_client_gives_up_on_a_full_queue_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr(client, "CONNECT_PATIENCE", 0.3)
    path = str(tmp_path / "ctl.sock")
    with full_queue(path):
        t = time.monotonic()
        with pytest.raises(AcctError) as e:
            client.call(path, "units")
        assert time.monotonic() - t >= 0.3
    assert str(e.value) == (f"acctd at {path} accepts no connection: its queue stayed full for "
                            "0.3 s (overloaded or stuck?); try again, or see its log")


def test_request_lines_parse_to_an_object_or_a_bad_request_only():
    """Seeded fuzz of the request parser: JSON-shaped fragments and raw
    bytes, deep and shallow; nothing else may come out (RecursionError did)."""
    import random
    rnd = random.Random(12)
    tokens = [b"[", b"]", b"{", b"}", b'"', b"\\", b":", b",", b" ", b"1", b"-", b"e", b"true",
              b'"cmd"', b'"\\u00e9"', b"\xff", b"\x00", b"\n"]
    seen = {"object": 0, "bad": 0}
    for _ in range(3000):
        n = rnd.choice((3, 30, 300, 3000))
        line = b"".join(rnd.choice(tokens) for _ in range(n)) if rnd.random() < 0.8 else \
            rnd.randbytes(n)
        if rnd.random() < 0.2:
            line = b"[" * rnd.randrange(1, 3000) + line
        try:
            assert isinstance(ctl.parse_request(line), dict)
            seen["object"] += 1
        except BadRequest:
            seen["bad"] += 1
    for depth in (ctl.MAX_DEPTH - 1, ctl.MAX_DEPTH + 1):
        line = b'{"a": ' + b"[" * depth + b"]" * depth + b"}"
        try:
            ctl.parse_request(line)
            seen["object"] += 1
        except BadRequest:
            seen["bad"] += 1
    assert seen["bad"] > 2000 and seen["object"] >= 1
