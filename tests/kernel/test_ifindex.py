"""`ifindex sN` / `dN` against flows the datapath itself made (BPF_PROG_RUN
on loopback, ifindex 1, as a LAN): what arrived there is the input
interface's, what left through it the output interface's."""

import datetime as dt

import pytest
from scapy.all import IP, UDP, Ether, Raw

from acctd.kernel import drain, syscalls
from acctd.model.addresses import parse_addr
from acctd.model.policies import AcctPlan, PolicySet, PolicySpec, account, local_addrs
from acctd.model.units import Unit, UnitSet

from .conftest import LO_IFINDEX

pytestmark = [pytest.mark.root, pytest.mark.kernel]

ETH = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
HOST, REM = "10.0.0.100", "192.0.2.100"


def test_ifindex_sides_on_the_datapaths_own_flows(datapath):
    up = Ether(**ETH) / IP(src=HOST, dst=REM) / UDP(sport=41100, dport=53) / Raw(b"u" * 100)
    down = Ether(**ETH) / IP(src=REM, dst=HOST) / UDP(sport=53, dport=41100) / Raw(b"d" * 300)
    syscalls.prog_test_run(datapath.prog_fds["acct_xdp"], bytes(up))         # arrives: out
    syscalls.prog_test_run(datapath.prog_fds["acct_tc_egress"], bytes(down))  # leaves: in
    keys, vals = drain.read(datapath.maps["acct_flows"])
    units = UnitSet([Unit("host", "h", addrs=(parse_addr(HOST),),
                          acct_policy=("input", "output", "either"))])
    policies = PolicySet([PolicySpec("input", f"ifindex s{LO_IFINDEX}"),
                          PolicySpec("output", f"ifindex d{LO_IFINDEX}"),
                          PolicySpec("either", f"ifindex {LO_IFINDEX}")])
    c = account(keys, vals["packets"], vals["bytes"], units.match(local_addrs(keys)),
                AcctPlan(units, policies), dt.datetime(2026, 1, 1, 12))
    got = {name: c.get(0, policies.find(name))[1].tolist()
           for name in ("input", "output", "either")}
    up_b, down_b = len(up) - 14, len(down) - 14     # IP-layer bytes
    assert got == {"input": [0, up_b], "output": [down_b, 0], "either": [down_b, up_b]}
