"""The daemon's control socket as a process meets it: real `acctd --config`
processes (a loaded datapath under a pin root of their own, no interface
hooked). A second daemon names the first, by socket or by database; a
SIGTERM removes the socket; a --socket whose directory is missing is
refused before anything starts."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from acctd.control import client
from acctd.errors import NotRunning

from .daemon_stub import ALICE

pytestmark = [pytest.mark.root, pytest.mark.kernel]


@pytest.fixture
def setup(tmp_path):
    cfg = tmp_path / "acctd.toml"
    cfg.write_text(ALICE + f'\n[storage]\npath = "{tmp_path}/acctd.duckdb"\n')
    pin_root = f"/sys/fs/bpf/acctd-inst-{os.getpid()}"
    procs = []

    def acctd(sock: str) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-m", "acctd.daemon.main", "--config", str(cfg),
                              "--pin-root", pin_root, "--socket", sock, "--flows", "1024",
                              "--addrs", "256"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(p)
        return p
    yield tmp_path, acctd
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    shutil.rmtree(pin_root, ignore_errors=True)


def _refusal(p: subprocess.Popen) -> str:
    out, err = p.communicate(timeout=30)
    assert p.returncode == 1, err
    return err.splitlines()[-1]


def test_a_second_daemon_names_the_first_and_sigterm_removes_the_socket(setup):
    tmp, acctd = setup
    sock = str(tmp / "acctd.sock")
    first = acctd(sock)
    started = json.loads(first.stdout.readline() or "{}")
    assert started.get("event") == "started", first.stderr.read()
    advice = "; stop it first (systemctl stop acctd, or kill -TERM that pid)"
    assert _refusal(acctd(sock)) == \
        f"acctd: acctd already running as pid {first.pid}, serving {sock}{advice}"
    # another socket, the same database: DuckDB's lock names it
    assert _refusal(acctd(str(tmp / "other.sock"))) == \
        f"acctd: acctd already running as pid {first.pid}, holding {tmp}/acctd.duckdb{advice}"
    assert not os.path.exists(tmp / "other.sock")
    assert client.call(sock, "units")[0]["name"] == "alice"  # the first one serves on
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0
    assert not os.path.exists(sock)
    with pytest.raises(NotRunning):
        client.call(sock, "units")


def test_a_socket_in_a_missing_directory_is_refused(setup):
    tmp, acctd = setup
    sock = tmp / "no" / "such" / "acctd.sock"
    assert _refusal(acctd(str(sock))) == (
        f"acctd: control socket {sock}: directory {tmp}/no/such does not exist (create it, "
        "or leave --socket out for /run/acctd/acctd.sock)")
    assert not os.path.exists(tmp / "no")
