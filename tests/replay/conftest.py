"""The replay tier's wire: one namespace with a veth pair, rpa -> rpb, both
ends hooked as LAN interfaces (rpb's ingress in the mode under test, rpa's
egress with TC), so every frame tcpreplay sends into rpa is seen twice: as
`in` for its destination leaving rpa, as `out` for its source arriving at
rpb. Nothing else crosses it: no addresses, IPv6 off, offloads off."""

import os
import secrets
import shutil
import subprocess

import pytest

from tests.netns.topology import remove_stale

PREFIX = "acctr"
TOOLS = ("ip", "ethtool", "tcpreplay", "nsenter")


class Wire:
    def __init__(self):
        self.ns = f"{PREFIX}{os.getpid()}x{secrets.token_hex(3)}-wire"
        self.root = f"/sys/fs/bpf/acctd-replay-{os.getpid()}"

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.ns, *argv], capture_output=True,
                              text=True, check=check, timeout=60)

    def up(self) -> None:
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        for key in ("all", "default"):
            self.run("sysctl", "-q", "-w", f"net.ipv6.conf.{key}.disable_ipv6=1")
        self.run("ip", "link", "add", "rpa", "type", "veth", "peer", "name", "rpb")
        for dev in ("rpa", "rpb"):
            self.run("ethtool", "-K", dev, "gro", "off", "gso", "off", "tso", "off")
            self.run("ip", "link", "set", dev, "up")

    def hook(self, mode: str, mtu: int) -> None:
        """rpb's ingress in `mode`, rpa with TC, both at `mtu`. The MTU is set
        in TC mode: a veth refuses one too large for native XDP."""
        from acctd.kernel import abi
        from acctd.kernel.datapath import Hook

        tc = [Hook("rpb", abi.Role.LAN, "tc"), Hook("rpa", abi.Role.LAN, "tc")]
        self.dp.attach(tc)
        for dev in ("rpa", "rpb"):
            self.run("ip", "link", "set", dev, "mtu", str(mtu))
        if mode != "tc":
            self.dp.attach([Hook("rpb", abi.Role.LAN, mode), tc[1]])
        flags = self.run("ip", "link", "show", "dev", "rpb").stdout.split(">")[1]
        want = {"xdp-native": " xdp ", "xdp-generic": " xdpgeneric "}.get(mode)
        assert (want in flags) if want else ("xdp" not in flags), (mode, flags)

    def down(self) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


@pytest.fixture(scope="module")
def wire():
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a network namespace and loads BPF programs")
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)} (make setup installs them)")
    from acctd.kernel.build import Sizes
    from acctd.kernel.datapath import Datapath

    remove_stale(PREFIX)
    w = Wire()
    try:
        w.up()
        # one build for the whole tier: each test re-attaches it in its mode
        w.dp = Datapath(Sizes(pin_root=w.root, flows=4096, addrs=1024), netns=w.ns)
        w.dp.load()
        yield w
        w.dp.detach()
        assert not os.path.exists(w.root), f"detach left {w.root} behind"
    finally:
        w.down()
