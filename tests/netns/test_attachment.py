"""The datapath stays as the daemon attached it, and a database starts where
the counters are (acctd/kernel/datapath.py, daemon/core.py): `acctctl
detach` refuses while acctd holds the pins; a forced detach, or pins
removed under the daemon, are found at the next drain, said loudly (log,
status, health) and put back from the maps the daemon holds, so counting
goes on; a new database on a running datapath starts from a baseline at
the current counters instead of crediting their history to this hour."""
from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys

import pytest

from .gateway import STORED, all_traffic
from .topology import LINKS
from acctd.kernel import abi

pytestmark = [pytest.mark.root, pytest.mark.netns]

SUB1, SRV = LINKS["sub1"], LINKS["srv"]
BIN = os.path.dirname(sys.executable)

CONFIG = STORED + """
[[policy]]
name = "ip"
target = "proto ip"
[[unit]]
type = "host"
name = "alice"
ip = "{alice}"
"""
PINS = sorted([*abi.MAPS, "prog_acct_tc_egress", "prog_acct_tc_ingress", "prog_acct_xdp",
               "prog_acct_xdp_empty"])


def sizes():
    from acctd.kernel.build import Sizes
    return Sizes(pin_root=f"/sys/fs/bpf/acctd-att-{os.getpid()}-{secrets.token_hex(3)}",
                 flows=4096, addrs=256)


def alice_out(topo, sz) -> int:
    """alice's packets out in the kernel, summed over CPUs."""
    from acctd.kernel import drain
    from acctd.kernel.datapath import Datapath
    from acctd.model.addresses import format_addr
    dp = Datapath(sz, netns=topo.ns["gw"]).open()
    try:
        keys, vals = drain.read(dp.maps["acct_addrs"])
        return sum(int(v["packets"][abi.Dir.OUT]) for k, v in zip(keys, vals)
                   if format_addr(k["addr"]) == SUB1.v4())
    finally:
        dp.close()  # a reader holding the maps would make detach refuse


def test_detach_refuses_while_acctd_runs_and_a_forced_one_is_put_back(topo, tmp_path):
    topo.set_all_offloads(False)
    sz = sizes()
    cfg = tmp_path / "acctd.toml"
    cfg.write_text(CONFIG.format(db=tmp_path / "acctd.duckdb", alice=SUB1.v4()))
    sock = str(tmp_path / "acctd.sock")
    gw = ["--pin-root", sz.pin_root, "--netns", topo.ns["gw"]]
    proc = subprocess.Popen([f"{BIN}/acctd", "--config", str(cfg), *gw, "--socket", sock,
                             "--flows", str(sz.flows), "--addrs", str(sz.addrs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def ctl(*args, pins=False):
        return subprocess.run([f"{BIN}/acctctl", *(gw if pins else ["--socket", sock]), *args],
                              capture_output=True, text=True, timeout=60)

    def status() -> dict:
        res = ctl("status", "--json")
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)["datapath"]["attachment"]

    def ping(n: int) -> None:
        assert topo.ping("sub1", SRV.v4(), count=n).received == n

    try:
        assert proc.stdout.readline(), proc.stderr.read()
        ping(5)
        res = ctl("detach", pins=True)
        assert (res.returncode, res.stdout) == (1, "")
        assert res.stderr == (
            f"acctctl: the datapath under {sz.pin_dir} is in use by acctd (pid {proc.pid}): "
            "stop it first, or `acctctl detach --force` (a running acctd attaches again at "
            "its next drain)\n")
        ping(3)                                          # still hooked, still counted
        assert alice_out(topo, sz) == 8
        assert status() == {"reattached": 0, "last_incident": None}

        res = ctl("detach", "--force", pins=True)
        assert (res.returncode, res.stdout) == (0, "detached 3 interface(s), pins removed\n")
        assert not os.path.exists(sz.pin_dir)
        ping(7)                                          # nobody counts these
        assert ctl("flush").returncode == 0              # the drain finds it and attaches again
        st = status()
        assert st["reattached"] == 1 and st["last_incident"]["reattached"]
        assert st["last_incident"]["problems"] == [
            f"pins removed under {sz.pin_dir}: {', '.join(PINS)}",
            *(f"{i}: {w} runs nothing, not acctd's" for i in ("lan1", "lan2", "wan0")
              for w in ("tc egress", "tc ingress"))]
        health = ctl("health").stdout.splitlines()
        assert any(line.startswith("datapath    ATTACHED AGAIN (1 time(s)); at ") and
                   "pins removed under" in line for line in health), health
        ping(4)
        assert alice_out(topo, sz) == 5 + 3 + 4          # the same counters, going on

        for name in os.listdir(sz.pin_dir):              # pins removed, hooks left
            os.unlink(os.path.join(sz.pin_dir, name))
        ping(6)                                          # the programs still count
        assert ctl("flush").returncode == 0
        st = status()
        assert st["reattached"] == 2
        assert st["last_incident"]["problems"] == [
            f"pins removed under {sz.pin_dir}: {', '.join(PINS)}"]
        assert alice_out(topo, sz) == 5 + 3 + 4 + 6
        res = ctl("list", "alice", "--json")
        (out,) = [p for p in json.loads(res.stdout)["policies"]
                  if (p["policy"], p["dir"]) == ("(all)", "out")]
        assert out["month"]["packets"] == 5 + 3 + 4 + 6  # committed: all but the 7
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        err = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
        res = ctl("detach", pins=True)                   # nobody holds them now
    assert err.count("DATAPATH NOT AS ATTACHED") == 2, err
    assert (res.returncode, res.stdout) == (0, "detached 3 interface(s), pins removed\n"), \
        res.stderr
    res = ctl("detach", pins=True)
    assert (res.returncode, res.stdout, res.stderr) == (
        3, "", f"acctctl: nothing to detach: no acctd datapath pinned under {sz.pin_dir}\n")


def test_a_new_database_on_a_running_datapath_starts_from_the_current_counters(
        topo, tmp_path, caplog):
    """A daemon counts alice into one database and stops; the kernel goes on
    counting; a daemon with a new [storage] path starts on the same pins.
    The new database holds exactly the traffic after its start, with (all)
    equal to the all-ip policy, and the log says what was left out. (It
    used to credit the counters' whole history to the current hour.)"""
    from acctd import config
    from acctd.daemon.core import Daemon

    topo.set_all_offloads(False)
    sz = sizes()

    def daemon(db: str) -> Daemon:
        path = tmp_path / f"{db}.toml"
        path.write_text(CONFIG.format(db=tmp_path / f"{db}.duckdb", alice=SUB1.v4()))
        d = Daemon(config.load(str(path)), sz, netns=topo.ns["gw"])
        d.start()
        return d

    d = daemon("first")
    try:
        first = topo.ping("sub1", SRV.v4(), count=6)
        d.drain()
        assert all_traffic(d, "alice")["out"] == (6, first.request.ip_bytes)
    finally:
        d.close()
    topo.ping("sub1", SRV.v4(), count=9)                 # no daemon: the kernel counts
    caplog.set_level(logging.WARNING, "acctd.daemon")
    d = daemon("second")
    try:
        r = topo.ping("sub1", SRV.v4(), count=4)
        d.drain()
        got = all_traffic(d, "alice")
        assert got == {"out": (4, r.request.ip_bytes), "in": (4, r.reply.ip_bytes)}
        from acctd.store.queries import report_list
        rows = {(p["policy"], p["dir"]): (p["month"]["packets"], p["month"]["bytes"])
                for p in report_list(d.storage, d.snapshot, "alice", d.clock())["policies"]}
        assert rows[("ip", "out")] == rows[("(all)", "out")]
        assert rows[("ip", "in")] == rows[("(all)", "in")]
        (msg,) = [r.getMessage() for r in caplog.records if "new database" in r.getMessage()]
        assert msg == (
            f"new database {tmp_path / 'second.duckdb'} on a datapath counting since before "
            f"it ({sz.pin_dir}): counting starts from the counters as they are now; "
            f"{2 * 15} packets, {2 * 15 * first.request.ip_bytes // 6} bytes the kernel counted "
            "before are not credited to it")
    finally:
        d.dp.detach()
        d.close()
