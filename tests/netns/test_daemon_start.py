"""`acctd --config` as a real process, at the moments an operator's mistake
or a damaged file stops it: each refusal is one line on stderr and exit 1,
never a traceback, and nothing is left behind (no namespace made by a typo).
Also `--once` with a config, and a reload that names a missing interface.

One namespace with a veth pair (st0 hooked) and one pin root serve the module:
the programs are built once."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys

import pytest

from acctd.store.database import Storage
from tests.unit.daemon_stub import ALICE
from tests.unit.test_storage_files import damage, damaged_db_line, damaged_wal_line

pytestmark = [pytest.mark.root, pytest.mark.netns]

ACCTD = [sys.executable, "-m", "acctd.daemon.main"]
ACCTCTL = [sys.executable, "-m", "acctctl.main"]

CONFIG = """\
[[interface]]
name = "st0"
role = "lan"
hook = "tc"
{extra}
[processor]
lookup-delay = 1

[storage]
path = "{db}"
""" + ALICE.replace("{", "{{").replace("}", "}}")

ETH9 = '[[interface]]\nname = "eth9"\nrole = "wan"\nhook = "tc"\n'


class Host:
    def __init__(self):
        token = f"{os.getpid()}x{secrets.token_hex(3)}"
        self.ns = f"acctd-st{token}"
        self.pin_root = f"/sys/fs/bpf/acctd-st-{token}"
        try:
            for cmd in (["netns", "add", self.ns],
                        ["-n", self.ns, "link", "add", "st0", "type", "veth", "peer", "st1"],
                        ["-n", self.ns, "link", "set", "st0", "up"]):
                subprocess.run(["ip", *cmd], check=True)
        except BaseException:
            self.close()
            raise

    def close(self):
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        shutil.rmtree(self.pin_root, ignore_errors=True)


@pytest.fixture(scope="module")
def host():
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and ip(8): creates a network namespace and bpffs pins")
    pytest.importorskip("bcc", reason="bcc (python3-bpfcc) is needed to build the programs")
    h = Host()
    yield h
    h.close()


def write_config(tmp_path, extra: str = "") -> str:
    path = tmp_path / "acctd.toml"
    path.write_text(CONFIG.format(extra=extra, db=tmp_path / "state" / "acctd.duckdb"))
    return str(path)


def acctd(host, cfg, *args, netns=None, timeout=120):
    """acctd run to its end: (exit code, stdout, stderr)."""
    p = subprocess.Popen([*ACCTD, "--config", cfg, "--netns", netns or host.ns, "--pin-root",
                          host.pin_root, "--socket", os.path.join(os.path.dirname(cfg), "s.sock"),
                          "--flows", "1024", "--addrs", "256", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError(f"acctd {' '.join(args)} did not exit: {err}") from None
    return p.returncode, out, err


def start(host, cfg) -> subprocess.Popen:
    p = subprocess.Popen([*ACCTD, "--config", cfg, "--netns", host.ns, "--pin-root", host.pin_root,
                          "--socket", os.path.join(os.path.dirname(cfg), "s.sock"),
                          "--flows", "1024", "--addrs", "256"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line and json.loads(line)["event"] == "started", p.stderr.read()
    return p


def acctctl(cfg, *args):
    return subprocess.run([*ACCTCTL, "--socket", os.path.join(os.path.dirname(cfg), "s.sock"),
                           *args], capture_output=True, text=True, timeout=120)


def test_once_with_a_config_drains_commits_and_exits(host, tmp_path):
    cfg = write_config(tmp_path)
    code, out, err = acctd(host, cfg, "--once")
    assert code == 0, err
    drained = json.loads(out.splitlines()[-1])
    assert (drained["event"], drained["drain"]) == ("drained", 1)
    assert not os.path.exists(tmp_path / "s.sock")  # no socket: nothing to serve
    with Storage(tmp_path / "state" / "acctd.duckdb", read_only=True) as st:
        assert st.last_drain is not None


def no_eth9(host, cfg) -> str:
    """The mistake of a config written with ETH9, at eth9's line."""
    line = open(cfg).read().splitlines().index('name = "eth9"') + 1
    return (f"{cfg}:{line}: [[interface]] #2 'eth9' key 'name': no interface named 'eth9' in "
            f"network namespace '{host.ns}'")


def test_a_missing_interface_is_named_with_its_config_line_and_namespace(host, tmp_path):
    cfg = write_config(tmp_path, ETH9)
    code, out, err = acctd(host, cfg)
    assert (code, err) == (1, f"acctd: {no_eth9(host, cfg)}\n")


def test_check_looks_the_interfaces_up_in_the_namespace(host, tmp_path):
    cfg = write_config(tmp_path)
    code, out, err = acctd(host, cfg, "--check")
    assert (code, out, err) == (0, f"{cfg}: ok, 1 interface, 1 unit, 1 policy, 0 users\n", "")
    cfg = write_config(tmp_path, ETH9)
    code, out, err = acctd(host, cfg, "--check")
    assert (code, out, err) == (1, "", f"acctd: {no_eth9(host, cfg)}\n")


def test_a_mistyped_netns_is_refused_and_not_created(host, tmp_path):
    typo = f"{host.ns}-typo"
    try:
        code, out, err = acctd(host, write_config(tmp_path), netns=typo)
        attach = subprocess.run([*ACCTCTL, "--netns", typo, "--pin-root", host.pin_root,
                                 "attach", "--lan", "st0:tc"], capture_output=True, text=True,
                                timeout=120)
        assert not os.path.exists(f"/run/netns/{typo}")
    finally:
        subprocess.run(["ip", "netns", "del", typo], capture_output=True)
    said = (f"network namespace '{typo}' does not exist (no /run/netns/{typo}; `ip netns list` "
            "shows the namespaces there are)\n")
    assert (code, err) == (1, f"acctd: {said}")
    assert (attach.returncode, attach.stderr) == (1, f"acctctl: {said}")


def test_a_damaged_database_stops_acctd_with_one_line(host, tmp_path):
    cfg = write_config(tmp_path)
    assert acctd(host, cfg, "--once")[0] == 0  # a database that was closed: all in the file
    db = tmp_path / "state" / "acctd.duckdb"
    damage(db, 12288, 1 << 16)
    code, out, err = acctd(host, cfg)
    assert "Traceback" not in err
    assert code == 1 and re.fullmatch(damaged_db_line(db, prog="acctd"), err), err


def test_a_block_damaged_anywhere_lets_acctd_run_or_stops_it_with_one_line(host, tmp_path):
    """Damage found after the open too (the checkpoint, the services' state
    are read at start): every block of the daemon's own database in turn."""
    cfg = write_config(tmp_path)
    assert acctd(host, cfg, "--once")[0] == 0
    db = tmp_path / "state" / "acctd.duckdb"
    whole = db.read_bytes()
    codes = []
    for offset in range(12288, len(whole), 256 << 10):
        db.write_bytes(whole)
        damage(db, offset, 4096)
        code, out, err = acctd(host, cfg, "--once")
        assert code == 0 or re.fullmatch(damaged_db_line(db, prog="acctd"), err), err
        codes.append(code)
    assert 1 in codes, codes


def test_a_damaged_wal_stops_acctd_with_one_line(host, tmp_path):
    cfg = write_config(tmp_path)
    p = start(host, cfg)
    try:
        assert acctctl(cfg, "flush").returncode == 0  # a commit, in the WAL alone
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    db = tmp_path / "state" / "acctd.duckdb"
    size = os.path.getsize(f"{db}.wal")
    assert size > 1000
    damage(f"{db}.wal", size // 2, 64)
    code, out, err = acctd(host, cfg)
    assert "Traceback" not in err
    reason = (r"Corrupt WAL file: entry at byte position \d+ computed checksum \d+ does not "
              r"match stored checksum \d+")
    assert code == 1 and re.fullmatch(damaged_wal_line(db, reason, prog="acctd"), err), err


def test_a_reload_naming_a_missing_interface_is_refused_with_its_line(host, tmp_path):
    cfg = write_config(tmp_path)
    p = start(host, cfg)
    try:
        write_config(tmp_path, ETH9)
        res = acctctl(cfg, "reload")
        assert (res.returncode, res.stdout, res.stderr) == (
            1, "", f"acctctl: reload refused, the running configuration stays: "
                   f"{no_eth9(host, cfg)}\n")
        write_config(tmp_path)
        res = acctctl(cfg, "reload")
        assert (res.returncode, res.stdout) == (0, f"reloaded {cfg}: no change\n"), res.stderr
        assert p.poll() is None
    finally:
        p.terminate()
        p.wait(20)
