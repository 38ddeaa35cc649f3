"""`acctctl status` when commits fail for real: the daemon's database on a
4 MiB tmpfs, filled up; the real daemon core, the loaded datapath, the
control server and acctctl. The failure, its time and its cause show, in
human units, and go once a drain commits again. `acctctl show` on the same
pins prints what `show --json` holds, in the same units."""

import json
import os
import shutil
import subprocess
import threading

import pytest
from click.testing import CliRunner

from acctctl.main import main
from acctd.common.display import format_bytes
from acctd.config import loads
from acctd.control import server as ctl
from acctd.daemon.core import Daemon
from tests.unit.daemon_stub import ALICE

pytestmark = [pytest.mark.root, pytest.mark.kernel]

CONFIG = '[storage]\npath = "{db}"\n' + ALICE


@pytest.fixture
def small_fs(tmp_path):
    d = tmp_path / "state"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(d)],
                   check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=True)


def fill(path) -> None:
    """Every byte of the file system: a write that needs a new page fails."""
    with open(path, "wb", buffering=0) as f:
        for size in (65536, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as e:
                assert e.errno == 28   # ENOSPC


def status_lines(sock: str) -> list[str]:
    res = CliRunner().invoke(main, ["--socket", sock, "status"])
    assert res.exit_code == 0, res.output
    return res.output.splitlines()


def test_status_shows_commits_failing_on_a_full_disk(datapath, small_fs, tmp_path):
    cfg = loads(CONFIG.format(db=small_fs / "acctd.duckdb"), str(tmp_path / "acctd.toml"))
    d = Daemon(cfg, datapath.sizes)   # the session's pins: nothing to compile
    d.start()
    # each commit folds its WAL: the failing one must start a WAL of its own
    # (a drain with nothing new writes a few hundred bytes, which the last
    # page of a WAL already there could hold)
    d.storage.checkpoint_every = 0
    srv = ctl.ControlServer(str(tmp_path / "ctl.sock"), d.dispatcher)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01},
                     daemon=True).start()
    try:
        d.drain()
        ok = status_lines(srv.path)
        assert not any(ln.startswith(("FAILING", "last error")) for ln in ok), ok

        fill(small_fs / "filler")
        with pytest.raises(Exception, match="No space left on device"):
            d.drain()
        at, error = d.last_error
        lines = status_lines(srv.path)
        assert lines[2:4] == [
            "FAILING     the last 1 drain(s) did not commit; the kernel keeps counting and "
            "the next drain retries",
            f"last error  {at:%Y-%m-%d %H:%M:%S UTC}: {error}"]
        assert "No space left on device" in error and str(small_fs / "acctd.duckdb.wal") in error
        free = shutil.disk_usage(small_fs).free
        assert f"disk free   {format_bytes(free)} in {small_fs}" in lines
        st = json.loads(CliRunner().invoke(main, ["--socket", srv.path, "status", "--json"]).output)
        assert (st["failed_drains"], st["last_error"]["error"]) == (1, error)

        os.unlink(small_fs / "filler")
        d.drain()   # room again: the retry commits
        lines = status_lines(srv.path)
        assert not any(ln.startswith("FAILING") for ln in lines)
        assert f"last error  {at:%Y-%m-%d %H:%M:%S UTC}: {error}" in lines   # still told
        assert lines[1].startswith(f"drains      {d.drains} since start, last committed ")
    finally:
        srv.shutdown()
        srv.server_close()
        d.close()


def test_show_prints_the_json_counters_in_human_units(datapath):
    from scapy.all import IP, UDP, Ether, Raw

    from acctd.kernel import syscalls
    pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(
        src="10.77.0.1", dst="192.0.2.77") / UDP(dport=9) / Raw(b"s" * 1200)
    syscalls.prog_test_run(datapath.prog_fds["acct_xdp"], bytes(pkt))   # 1228 IP bytes out
    args = ["--pin-root", datapath.sizes.pin_root, "show"]
    rep = json.loads(CliRunner().invoke(main, [*args, "--json"]).output)
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    t = rep["totals"]
    lines = res.output.splitlines()
    assert lines[-3:] == [
        f"totals       in {t['packets_in']} pkts {format_bytes(t['bytes_in'])}   out "
        f"{t['packets_out']} pkts {format_bytes(t['bytes_out'])}",
        f"unattributed in {t['unattr_packets_in']} pkts {format_bytes(t['unattr_bytes_in'])}   "
        f"out {t['unattr_packets_out']} pkts {format_bytes(t['unattr_bytes_out'])}",
        "health       " + (" ".join(f"{k}={v}" for k, v in rep["health"].items() if v)
                           or "no parse errors")]
    rows = [[c.strip() for c in ln.split("│")[1:-1]] for ln in lines if ln.startswith("│")]
    assert ["10.77.0.1", "0", "0 B", "1", "1.20 KiB"] in rows
    for addr, r in rep["addrs"].items():
        assert [addr, str(r["packets_in"]), format_bytes(r["bytes_in"]), str(r["packets_out"]),
                format_bytes(r["bytes_out"])] in rows
