"""The capability set of packaging/systemd/acctd.service, found by test.

Each command runs as uid 0 with the bounding set cut down to a candidate set
and nothing inheritable or ambient (setpriv), which is what systemd does with
CapabilityBoundingSet= for a root service: after exec the process holds
exactly that set. The command starts inside a fresh network namespace
(nsenter, with full root, before the caps are dropped): the service hooks
the host's interfaces and never switches namespace itself.

The set read from the unit file must be enough for attach (bcc compile,
load, pin, netlink hook), show, detach and the daemon itself; removing any
one capability of it must make attach fail.
"""

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .topology import remove_stale

pytestmark = [pytest.mark.root, pytest.mark.netns]

UNIT = Path(__file__).resolve().parents[2] / "packaging" / "systemd" / "acctd.service"
BIN = Path(sys.executable).parent
CAP_NUMBERS = {"CAP_CHOWN": 0, "CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21,
               "CAP_PERFMON": 38, "CAP_BPF": 39}
PREFIX = "acctcap"


def unit_caps() -> list[str]:
    m = re.search(r"(?m)^CapabilityBoundingSet=(.*)$", UNIT.read_text())
    return m.group(1).split()


def setpriv(caps, *argv) -> list[str]:
    bounding = ",".join(["-all"] + [f"+{c.removeprefix('CAP_').lower()}" for c in caps])
    return ["setpriv", f"--bounding-set={bounding}", "--inh-caps=-all", "--ambient-caps=-all",
            "--", *argv]


class Box:
    """A gateway namespace whose cap0 (10.9.0.1) is hooked, a peer namespace
    behind it (cap1, 10.9.0.2), and a private pin root."""

    def __init__(self):
        token = secrets.token_hex(3)
        self.ns = f"{PREFIX}{os.getpid()}x{token}-gw"
        self.peer = f"{PREFIX}{os.getpid()}x{token}-peer"
        self.pin_root = f"/sys/fs/bpf/acctd-cap-{os.getpid()}-{token}"
        for cmd in (["netns", "add", self.ns], ["netns", "add", self.peer],
                    ["-n", self.ns, "link", "add", "cap0", "type", "veth",
                     "peer", "name", "cap1", "netns", self.peer],
                    ["-n", self.ns, "addr", "add", "10.9.0.1/24", "dev", "cap0"],
                    ["-n", self.peer, "addr", "add", "10.9.0.2/24", "dev", "cap1"],
                    ["-n", self.ns, "link", "set", "cap0", "up"],
                    ["-n", self.peer, "link", "set", "cap1", "up"]):
            subprocess.run(["ip", *cmd], check=True)

    def ping(self):
        subprocess.run(["ip", "netns", "exec", self.peer, "ping", "-c", "2", "-i", "0.1", "-W", "2",
                        "10.9.0.1"], check=True, capture_output=True)

    def run(self, caps, *argv, **kw):
        """argv inside the namespace, holding only `caps`."""
        return subprocess.run(["nsenter", f"--net=/run/netns/{self.ns}", *setpriv(caps, *argv)],
                              capture_output=True, text=True, timeout=kw.pop("timeout", 120), **kw)

    def acctctl(self, caps, *args):
        return self.run(caps, str(BIN / "acctctl"), "--pin-root", self.pin_root, *args)

    def tc_filters(self) -> str:
        out = ""
        for parent in ("ingress", "egress"):
            out += subprocess.run(["tc", "-n", self.ns, "filter", "show", "dev", "cap0", parent],
                                  capture_output=True, text=True).stdout
        return out

    def close(self):
        # Always, whatever a test left: deleting the namespace deletes the veth
        # and with it every hook; the pins go with the directory.
        for ns in (self.ns, self.peer):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(self.pin_root, ignore_errors=True)


def make_box() -> Box:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a network namespace and bpffs pins")
    missing = [t for t in ("setpriv", "nsenter", "ip", "tc", "ping") if not shutil.which(t)]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)}")
    if not os.path.ismount("/sys/fs/bpf"):
        pytest.skip("bpffs is not mounted on /sys/fs/bpf")
    pytest.importorskip("bcc", reason="bcc (python3-bpfcc) is needed to build the programs")
    remove_stale(PREFIX)
    return Box()


@pytest.fixture
def box():
    b = make_box()
    try:
        yield b
    finally:
        b.close()


def test_the_child_holds_exactly_the_unit_set(box):
    caps = unit_caps()
    res = box.run(caps, "grep", "^CapEff", "/proc/self/status")
    eff = int(res.stdout.split()[1], 16)
    assert eff == sum(1 << CAP_NUMBERS[c] for c in caps), res


DAEMON_CONFIG = """
[[interface]]
name = "cap0"
role = "lan"
hook = "tc"
[processor]
lookup-delay = 1
[storage]
path = "{db}"
[[policy]]
name = "all-ip"
target = "proto ip"
[[unit]]
type = "host"
name = "h"
ip = "10.9.0.2"
acct-policy = ["all-ip"]
"""


def test_unit_set_runs_attach_show_the_daemon_and_detach(box, tmp_path):
    """The whole life of a gateway with only the unit's capabilities: attach
    from nothing (bcc compile, verifier, pins, netlink), show, the daemon
    (drains and commits; SIGTERM leaves the programs attached), detach."""
    caps = unit_caps()
    res = box.acctctl(caps, "attach", "--lan", "cap0:tc", "--json")
    assert res.returncode == 0, res.stderr
    ids = json.loads(res.stdout)["prog_ids"]
    hooked = [f"acct_tc_ingress:{ids['acct_tc_ingress']}", f"acct_tc_egress:{ids['acct_tc_egress']}"]
    assert all(h in box.tc_filters() for h in hooked)

    box.ping()
    res = box.acctctl(caps, "show", "--json")
    assert res.returncode == 0, res.stderr
    assert "10.9.0.2" in json.dumps(json.loads(res.stdout)["addrs"])  # it counts

    cfg = tmp_path / "acctd.toml"
    cfg.write_text(DAEMON_CONFIG.format(db=tmp_path / "acctd.duckdb"))
    p = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{box.ns}",
         *setpriv(caps, str(BIN / "acctd"), "--config", str(cfg),
                  "--socket", str(tmp_path / "acctd.sock"), "--pin-root", box.pin_root)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = json.loads(p.stdout.readline() or "{}")  # after attach + storage + socket
        assert started.get("event") == "started", p.stderr.read() if p.poll() is not None else ""
        assert started["prog_ids"] == ids  # the pinned programs, reused
        time.sleep(1.5)  # at least one drain commits with this set
        assert p.poll() is None
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    err = p.stderr.read()
    assert "drain failed" not in err and "Traceback" not in err, err
    assert all(h in box.tc_filters() for h in hooked)  # stopped, still counting

    res = box.acctctl(caps, "detach")
    assert res.returncode == 0, res.stderr
    assert "detached 1 interface(s)" in res.stdout
    assert "acct_tc" not in box.tc_filters()
    assert not os.path.exists(box.pin_root + "/v1")


def test_attach_fails_without_any_one_of_them():
    """Each capability of the set removed in turn, attach from nothing fails
    with an operator error and hooks nothing. (In parallel: each compiles.)"""
    boxes = {}
    try:
        for missing in unit_caps():
            boxes[missing] = make_box()
        runs = {}
        for missing, b in boxes.items():
            caps = [c for c in unit_caps() if c != missing]
            runs[missing] = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{b.ns}",
                 *setpriv(caps, str(BIN / "acctctl"), "--pin-root", b.pin_root,
                          "attach", "--lan", "cap0:tc")],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for missing, p in runs.items():
            out, err = p.communicate(timeout=120)
            assert p.returncode != 0, f"attach worked without {missing}: the set is not minimal"
            assert "acctctl: " in err and "Traceback" not in err, err
            if missing == "CAP_BPF":  # the advice must name the real cause
                assert "CAP_BPF" in err and "headers" not in err.split("acctctl: ")[-1], err
            assert "acct_tc" not in boxes[missing].tc_filters()
    finally:
        for b in boxes.values():
            b.close()


def test_entering_a_named_namespace_needs_sys_admin(box):
    """Why the unit hooks the host's interfaces and never uses --netns: that
    option enters the namespace with setns(2), which needs CAP_SYS_ADMIN."""
    probe = ["nsenter", f"--net=/run/netns/{box.ns}", "true"]
    assert subprocess.run(setpriv(unit_caps(), *probe), capture_output=True).returncode != 0
    assert subprocess.run(setpriv(unit_caps() + ["CAP_SYS_ADMIN"], *probe),
                          capture_output=True).returncode == 0


def test_socket_group_needs_membership_not_cap_chown(tmp_path):
    """The control socket's chown to group acctd: the unit grants the group
    (SupplementaryGroups=acctd) instead of CAP_CHOWN."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv")
    f = tmp_path / "sock"
    f.touch()
    gid = 4242  # a group uid 0 is not in
    chown = [sys.executable, "-c", f"import os; os.chown({str(f)!r}, -1, {gid})"]
    res = subprocess.run(setpriv(unit_caps(), *chown), capture_output=True, text=True)
    assert res.returncode != 0 and "PermissionError" in res.stderr
    # setpriv --groups needs CAP_SETGID: set the groups first, then drop
    res = subprocess.run(["setpriv", f"--groups={gid}", "--", *setpriv(unit_caps(), *chown)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f.stat().st_gid == gid
