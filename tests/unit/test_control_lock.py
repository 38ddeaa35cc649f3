"""The daemon has one DuckDB connection: every control command touches it
only under the daemon's lock, which the drains hold while they commit (a
read outside it once failed `acctctl units` with "connection is busy with
another call"). Every command of the registry runs through the real
handlers here, with the connection watched; and, with a real datapath,
`units`, `list` and `status` are asked over the socket while drains run."""

import os
import shutil
import tempfile
import threading
import traceback

import pytest

from acctd.config import loads
from acctd.control import client, commands
from acctd.control import server as ctl

from .daemon_stub import ALICE, daemon_stub


class Watched:
    """The DuckDB connection, noting every call made without the lock."""

    def __init__(self, con, lock):
        self._con, self._lock, self.calls, self.unlocked = con, lock, 0, []

    def __getattr__(self, name):
        attr = getattr(self._con, name)
        if not callable(attr):
            return attr

        def call(*a, **k):
            self.calls += 1
            if not self._lock._is_owned():
                self.unlocked.append("".join(traceback.format_stack(limit=6)[:-1]))
            out = attr(*a, **k)
            return self if out is self._con else out  # execute(...).fetchall() is watched too
        return call


# arguments for the commands that need some; the others run without
ARGS = {
    "debug": {"on": False},
    "list": {"unit": "alice"}, "stat": {"unit": "alice"},
    "sys-policy": {"unit": "alice", "policy": "sys-deny"},
    "unit-add": {"kind": "user", "name": "carol"}, "unit-del": {"name": "carol"},
    "quota-set": {"argv": ["alice", "day", "1M", "in"]}, "quota-show": {"unit": "alice"},
    "login-set": {"unit": "alice", "words": ["password", "s3cret"]},
    "login": {"unit": "alice", "password": "s3cret"},
    "logout": {"unit": "alice", "password": "s3cret"},
    "session-start": {"user": "alice", "ip": "10.0.0.9"}, "session-stop": {"user": "alice"},
    "schedule-add": {"spec": "time 12:00 action flush"}, "schedule-del": {"oid": "08ABCD"},
    "fticks-import": {"paths": []}, "radius-import": {"sessions": []},
    "openvpn-event": {"event": {}}, "openvpn-interval": {"user": "alice"},
}
# the main loop answers these (the stub's answers at once); no handler reads the database
ASYNC = {"flush", "reload"}


def test_every_command_uses_the_database_under_the_lock(tmp_path):
    with daemon_stub(loads(ALICE, str(tmp_path / "acctd.toml")), tmp_path=tmp_path) as d:
        con = d.storage.con = Watched(d.storage.con, d.lock)
        for cmd in commands.COMMANDS:
            if cmd.name in ASYNC:
                continue
            try:
                d.call(cmd.name, **ARGS.get(cmd.name, {}))
            except Exception:
                pass  # refusals (no kernel here) are fine; what came before them is checked
        assert con.calls > 20  # the watch saw the handlers' reads and writes
        assert con.unlocked == [], "\n".join(con.unlocked)


@pytest.mark.root
@pytest.mark.kernel
def test_units_list_and_status_answer_during_drains(tmp_path):
    """A real datapath (loaded, no interface hooked) and real drains in a
    loop, while three clients ask over the control socket."""
    from acctd.daemon.core import Daemon
    from acctd.kernel.build import Sizes

    cfg = loads(ALICE + f'\n[storage]\npath = "{tmp_path}/acctd.duckdb"\n',
                str(tmp_path / "acctd.toml"))
    pin_root = f"/sys/fs/bpf/acctd-lock-{os.getpid()}"
    sock_dir = tempfile.mkdtemp(prefix="acctd-lock-")
    d = Daemon(cfg, Sizes(pin_root=pin_root, flows=1024, addrs=256))
    try:
        d.start()
        srv = ctl.ControlServer(os.path.join(sock_dir, "ctl.sock"), d.dispatcher)
        srv.serve_in_thread()
        stop, errors, answers = threading.Event(), [], {"units": 0, "list": 0, "status": 0}

        def drains():
            while not stop.is_set():
                d.drain()

        def ask(cmd, **args):
            while not stop.is_set():
                try:
                    client.call(srv.path, cmd, **args)
                    answers[cmd] += 1
                except Exception as e:
                    errors.append(f"{cmd}: {e}")
        threads = [threading.Thread(target=drains)] + [
            threading.Thread(target=ask, args=(c,), kwargs=a)
            for c, a in (("units", {}), ("list", {"unit": "alice"}), ("status", {}))]
        for t in threads:
            t.start()
        stop.wait(3.0)
        stop.set()
        for t in threads:
            t.join(30)
        srv.shutdown()
        srv.server_close()
        assert errors == []
        assert min(answers.values()) > 5 and d.drains > 5, (answers, d.drains)
    finally:
        d.close()
        shutil.rmtree(pin_root, ignore_errors=True)
        shutil.rmtree(sock_dir, ignore_errors=True)
