"""More distinct flows than the flow table holds: the LRU evicts flows, but
per-address totals stay exact and the overflow shows in the health counters."""

import pytest
from scapy.all import IP, UDP, Ether, Raw

from acctd.kernel import syscalls, drain
from acctd.model.addresses import format_addr

from .conftest import LO_SLOT

pytestmark = [pytest.mark.root, pytest.mark.kernel]


def test_flow_table_overflow_keeps_address_totals_exact(datapath):
    capacity = datapath.maps["acct_flows"].info.max_entries
    nflows = 3 * capacity
    addrs = [f"10.9.0.{i}" for i in range(1, 17)]
    fd = datapath.prog_fds["acct_xdp"]
    before_if = drain.read(datapath.maps["acct_ifaces"])[1][LO_SLOT]
    sent = {a: [0, 0] for a in addrs}  # packets, bytes
    # explicit MACs: scapy must never resolve (and so send) anything
    template = {a: bytearray(bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                                   / IP(src=a, dst="192.0.2.77") / UDP(dport=9) / Raw(b"o" * 20)))
                for a in addrs}
    for i in range(nflows):
        a = addrs[i % len(addrs)]
        raw = template[a]
        sport = 1024 + i // len(addrs)  # each (addr, sport) pair is a new flow
        raw[34:36] = sport.to_bytes(2, "big")
        syscalls.prog_test_run(fd, bytes(raw))
        sent[a][0] += 1
        sent[a][1] += len(raw) - 14

    keys, vals = drain.read(datapath.maps["acct_addrs"])
    got = {format_addr(k["addr"]): v for k, v in zip(keys, vals)}
    for a in addrs:
        assert int(got[a]["packets"][1]) == sent[a][0]
        assert int(got[a]["bytes"][1]) == sent[a][1]

    live = len(drain.read(datapath.maps["acct_flows"])[0])
    assert live <= capacity
    after_if = drain.read(datapath.maps["acct_ifaces"])[1][LO_SLOT]
    new = int(after_if["health"][3] - before_if["health"][3])  # FLOW_NEW
    assert new == nflows
    evicted = new - live  # no flow was reaped by user space in this test
    assert evicted >= nflows - capacity
    # the interface total still reconciles with the per-address counters
    assert int(after_if["packets"][1] - before_if["packets"][1]) == nflows
