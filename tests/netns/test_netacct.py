"""net-acct compatibility with real traffic: the dynamicip directory binds
addresses to user units while traffic flows, with exact per-user totals; the
nacctd flow log holds every byte once, across SIGTSTP-style pause, mv and
resume, and `rotate flowlog`."""

from __future__ import annotations

import os
import random

import pytest

from .gateway import STORED, all_traffic
from .topology import LINKS
from acctd.services.dynamicip import DynamicIpService
from acctd.services.flowlog import FlowLogService

pytestmark = [pytest.mark.root, pytest.mark.netns]

SUB1, SUB2, SRV = LINKS["sub1"], LINKS["sub2"], LINKS["srv"]

CONFIG = STORED + """
[dynamicip]
dir = "{dyn}"
[flowlog]
path = "{log}"
fields = ["time", "proto", "src", "sport", "dst", "dport", "bytes", "device", "user", "packets", "dir"]
[[policy]]
name = "ip"
target = "proto ip"
[[unit]]
type = "user"
name = "carol"
[[unit]]
type = "user"
name = "dave"
"""



def log_totals(paths) -> dict:
    """(user, dir) -> [packets, bytes] summed over every line of the logs."""
    out: dict = {}
    for p in paths:
        for line in open(p):
            f = line.rstrip("\n").split("\t")
            assert len(f) == 11, line
            c = out.setdefault((f[8], f[10]), [0, 0])
            c[0] += int(f[9])
            c[1] += int(f[6])
    return out


def test_dynamicip_files_and_the_flow_log(topo, tmp_path):
    from acctd import config
    from acctd.daemon.core import Daemon
    from acctd.kernel.build import Sizes
    dyn = tmp_path / "dyn"
    dyn.mkdir()
    flows = tmp_path / "flows.log"
    cfg_path = tmp_path / "acctd.toml"
    cfg_path.write_text(CONFIG.format(db=tmp_path / "acctd.duckdb", dyn=dyn, log=flows))
    d = Daemon(config.load(str(cfg_path)),
               Sizes(pin_root=f"/sys/fs/bpf/acctd-n-{os.getpid()}-{random.randrange(1 << 30)}",
                     flows=4096, addrs=256), netns=topo.ns["gw"])
    try:
        d.start()
        (dyn / SUB1.v4()).write_text("carol\n")
        d.service(DynamicIpService).tick()
        a = topo.ping("sub1", SRV.v4(), count=6, size=100)
        (dyn / SUB1.v4()).write_text("dave\n")          # rewritten in place: now dave's
        d.service(DynamicIpService).tick()
        b = topo.ping("sub1", SRV.v4(), count=4, size=300)
        # net-acct rotation: pause (SIGTSTP), move the log away, resume (SIGCONT)
        d.service(FlowLogService).set_paused(True)
        d.drain()                                         # lines held, not written
        moved = tmp_path / "flows.log.1"
        os.rename(flows, moved)
        c = topo.ping("sub1", SRV.v4(), count=3, size=200)
        (dyn / SUB1.v4()).unlink()                       # dave's address is nobody's now
        d.service(DynamicIpService).tick()
        topo.ping("sub1", SRV.v4(), count=2, size=50)    # unattributed
        d.service(FlowLogService).set_paused(False)
        d.drain()
        rotated = d.call("rotate-flowlog")["rotated_to"]
        e = topo.ping("sub2", SRV.v4(), count=2, size=60)  # nobody's either
        d.drain()

        assert all_traffic(d, "carol") == {"out": (a.request.packets, a.request.ip_bytes),
                                     "in": (a.reply.packets, a.reply.ip_bytes)}
        dave_out = (b.request.packets + c.request.packets, b.request.ip_bytes + c.request.ip_bytes)
        dave_in = (b.reply.packets + c.reply.packets, b.reply.ip_bytes + c.reply.ip_bytes)
        assert all_traffic(d, "dave") == {"out": dave_out, "in": dave_in}
        assert [(r["user"], r["source"], r["stop_cause"]) for r in d.call("session-list")] == [
            ("dave", "file", "file-removed"), ("carol", "file", "address-moved")]

        # every flow once in the logs: the moved file, the rotated one, the new one
        logs = [moved, rotated, flows]
        got = log_totals(logs)
        assert got[("carol", "out")] == [a.request.packets, a.request.ip_bytes]
        assert got[("carol", "in")] == [a.reply.packets, a.reply.ip_bytes]
        assert tuple(got[("dave", "out")]) == dave_out and tuple(got[("dave", "in")]) == dave_in
        assert got[("unknown", "out")][0] == 2 + e.request.packets
        lines = [ln for p in logs for ln in open(p)]
        assert len(lines) == len(set(lines))             # nothing written twice
        # `acctctl perf`: each real drain timed by step
        timed = d.call("perf")
        assert [r["drain"] for r in timed] == list(range(1, d.drains + 1))   # ticks drain too
        for r in timed:
            steps = r["read_ms"] + r["account_ms"] + r["commit_ms"] + r["services_ms"]
            assert 0 < steps <= r["total_ms"] + 0.01 and r["rss_kib"] > 0, r
    finally:
        d.close()
        d.dp.detach()


def test_flow_log_pause_by_signal_in_the_real_daemon(topo, tmp_path):
    """The signals themselves, on a real acctd process: SIGTSTP, mv, SIGCONT."""
    import json
    import signal
    import subprocess
    import sys
    bindir = os.path.dirname(sys.executable)
    flows = tmp_path / "flows.log"
    cfg = tmp_path / "acctd.toml"
    cfg.write_text(CONFIG.format(db=tmp_path / "acctd.duckdb", dyn=tmp_path / "dyn", log=flows))
    pin_root = f"/sys/fs/bpf/acctd-ns-{os.getpid()}-{random.randrange(1 << 30)}"
    sock = str(tmp_path / "acctd.sock")
    base = ["--pin-root", pin_root, "--netns", topo.ns["gw"]]
    proc = subprocess.Popen([f"{bindir}/acctd", "--config", str(cfg), "--socket", sock,
                             "--flows", "4096", "--addrs", "256", *base],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def ctl(*args):
        res = subprocess.run([f"{bindir}/acctctl", "--socket", sock, *base, *args],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return res.stdout
    try:
        assert json.loads(proc.stdout.readline())["event"] == "started"
        a = topo.ping("sub1", SRV.v4(), count=4, size=100)
        ctl("flush")
        proc.send_signal(signal.SIGTSTP)
        b = topo.ping("sub1", SRV.v4(), count=3, size=100)
        ctl("flush")                                   # drained, lines held back
        archived = tmp_path / "flows.log.old"
        os.rename(flows, archived)                     # archived while paused
        c = topo.ping("sub1", SRV.v4(), count=2, size=100)
        proc.send_signal(signal.SIGCONT)
        ctl("flush")                                   # held lines first, then the new ones
        assert proc.poll() is None                     # SIGTSTP did not stop the process
        assert log_totals([archived])[("unknown", "out")] == [a.request.packets,
                                                              a.request.ip_bytes]
        sent = [p.request for p in (a, b, c)]
        assert log_totals([archived, flows])[("unknown", "out")] == [
            sum(t.packets for t in sent), sum(t.ip_bytes for t in sent)]
        moved = ctl("rotate", "flowlog", "--json")
        assert json.loads(moved)["rotated_to"].startswith(str(flows) + ".")
        # nacctd: SIGWINCH "prints some kind of version id"
        proc.send_signal(signal.SIGWINCH)
        ctl("flush")                                   # the main thread ran the handler
        proc.terminate()
        _, err = proc.communicate(timeout=20)
        assert f"INFO acctd.daemon: {ctl('version').strip()}" in err.splitlines(), err
    finally:
        proc.terminate()
        proc.wait(20)
        subprocess.run([f"{bindir}/acctctl", *base, "detach"], capture_output=True, timeout=60)
