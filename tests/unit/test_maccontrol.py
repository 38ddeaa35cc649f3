"""MAC control: MAC forms, the expected/seen comparison, fixate, and the
kernel's neighbour table read through a real network namespace."""

import dataclasses
import os
import socket

import pytest

from acctd.errors import AcctError
from acctd.model.addresses import parse_addr, parse_prefix
from acctd.model.units import Unit
from acctd.services.mac_control import (MacError, check, expected_macs, fixate,
                                        neighbours_from_messages, normalize_mac, read_neighbours)

A = parse_addr


@dataclasses.dataclass(frozen=True)
class MacUnit(Unit):
    """Unit has no `mac` field yet; the module reads it with getattr."""
    mac: str = ""


def host(oid, ip, mac="", type="host"):
    return MacUnit(type, f"u{oid}", oid=oid, addrs=(A(ip),) if ip else (), mac=mac)


# --- MAC forms -------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "00:11:22:aa:bb:cc", "00:11:22:AA:BB:CC", "00-11-22-aa-bb-cc", "0011.22aa.bbcc",
    "001122AABBCC", " \"00:11:22:aa:bb:cc\" ", "«00:11:22:AA:BB:CC»", "0:11:22:aa:bb:cc",
])
def test_mac_forms_normalise(text):
    assert normalize_mac(text) == "00:11:22:aa:bb:cc"


def test_bsd_short_groups():
    assert normalize_mac("0:1:2:a:b:c") == "00:01:02:0a:0b:0c"


@pytest.mark.parametrize("text", [
    "", "00:11:22:33:44", "00:11:22:33:44:55:66", "00:11:22:33:44:zz", "00:11-22:33:44:55",
    "0011.2233.44", "00112233445", "001:1:22:33:44:55", "XX:XX:XX:XX:XX:XX",
])
def test_bad_macs_are_refused(text):
    with pytest.raises(MacError, match="expected a MAC like 00:11:22:33:44:55"):
        normalize_mac(text)


def test_mac_error_is_an_operator_error_and_a_value_error():
    assert issubclass(MacError, AcctError) and issubclass(MacError, ValueError)


# --- expected ----------------------------------------------------------------------

def test_expected_takes_host_and_user_units_with_an_address_and_a_mac():
    units = [
        host("020001", "10.0.0.1", "00-11-22-33-44-01"),
        host("020002", "10.0.0.2", "0011.2233.4402", type="user"),
        host("020003", "10.0.0.3"),                       # no MAC: not checked
        host("020004", None, "00:11:22:33:44:04", "user"),  # unbound user
        Unit("host", "plain", oid="020005", addrs=(A("10.0.0.5"),)),  # no mac attribute
        MacUnit("net", "lan", oid="040001", nets=(parse_prefix("10.0.0.0/24"),),
                mac="00:11:22:33:44:06"),
        host("020007", "2001:db8::7", "00:11:22:33:44:07"),
    ]
    assert expected_macs(units) == {
        A("10.0.0.1"): ("020001", "00:11:22:33:44:01"),
        A("10.0.0.2"): ("020002", "00:11:22:33:44:02"),
        A("2001:db8::7"): ("020007", "00:11:22:33:44:07"),
    }


def test_expected_names_the_unit_with_a_bad_mac():
    with pytest.raises(MacError, match="unit 'u020001': expected a MAC"):
        expected_macs([host("020001", "10.0.0.1", "00:11:22")])


# --- check -------------------------------------------------------------------------

WANT = {A("10.0.0.1"): ("020001", "00:11:22:33:44:01"),
        A("10.0.0.2"): ("020002", "00:11:22:33:44:02"),
        A("10.0.0.3"): ("020003", "00:11:22:33:44:03")}


@pytest.mark.parametrize("seen, mismatched, ok", [
    ({}, {}, set()),
    # right MAC, any spelling
    ({A("10.0.0.1"): "00:11:22:33:44:01", A("10.0.0.2"): "00:11:22:33:44:02".upper()},
     {}, {"020001", "020002"}),
    # wrong MAC on one, absent for another (unknown: neither list)
    ({A("10.0.0.1"): "00:11:22:33:44:01", A("10.0.0.2"): "de:ad:be:ef:00:02"},
     {"020002": (A("10.0.0.2"), "00:11:22:33:44:02", "de:ad:be:ef:00:02")}, {"020001"}),
    # addresses of no unit are ignored
    ({A("10.0.0.9"): "de:ad:be:ef:00:09"}, {}, set()),
])
def test_check(seen, mismatched, ok):
    assert check(WANT, seen) == (mismatched, ok)


def test_mac_returning_makes_the_unit_ok_again():
    addr = A("10.0.0.3")
    states = []
    for mac in ("00:11:22:33:44:03", "de:ad:be:ef:00:03", None, "00:11:22:33:44:03"):
        bad, ok = check(WANT, {} if mac is None else {addr: mac})
        states.append("bad" if "020003" in bad else "ok" if "020003" in ok else "unknown")
    assert states == ["ok", "bad", "unknown", "ok"]


def test_check_over_units_and_a_table():
    units = [host("020001", "10.0.0.1", "00:11:22:33:44:01"),
             host("020002", "2001:db8::2", "00:11:22:33:44:02", "user")]
    seen = {A("10.0.0.1"): "00:11:22:33:44:01", A("2001:db8::2"): "00:11:22:33:44:99"}
    assert check(expected_macs(units), seen) == (
        {"020002": (A("2001:db8::2"), "00:11:22:33:44:02", "00:11:22:33:44:99")}, {"020001"})


# --- fixate ------------------------------------------------------------------------

def test_fixate_records_what_is_seen_for_units_without_a_mac():
    units = [
        host("020001", "10.0.0.1"),                          # seen: recorded
        host("020002", "10.0.0.2", type="user"),             # seen: recorded
        host("020003", "10.0.0.3"),                          # not seen: nothing
        host("020004", "10.0.0.4", "00:11:22:33:44:04"),     # has one: kept
        host("020005", None, type="user"),                   # unbound
        MacUnit("cluster", "c", oid="030001", addrs=(A("10.0.0.6"),)),
        Unit("host", "plain", oid="020007", addrs=(A("10.0.0.7"),)),  # no mac attribute
    ]
    seen = {A("10.0.0.1"): "02:00:00:00:00:01", A("10.0.0.2"): "02-00-00-00-00-02",
            A("10.0.0.4"): "02:00:00:00:00:04", A("10.0.0.6"): "02:00:00:00:00:06",
            A("10.0.0.7"): "02:00:00:00:00:07"}
    assert fixate(units, seen) == {"020001": "02:00:00:00:00:01",
                                   "020002": "02:00:00:00:00:02",
                                   "020007": "02:00:00:00:00:07"}
    # overwrite replaces a configured MAC that differs, and only then
    assert fixate(units, seen, overwrite=True)["020004"] == "02:00:00:00:00:04"
    units[3] = host("020004", "10.0.0.4", "02:00:00:00:00:04")
    assert "020004" not in fixate(units, seen, overwrite=True)


# --- the neighbour table -------------------------------------------------------------

def msg(family, state, dst, lladdr):
    attrs = [("NDA_DST", dst)] + ([("NDA_LLADDR", lladdr)] if lladdr else [])
    return {"family": family, "state": state, "attrs": attrs}


def test_neighbour_messages_skip_unusable_entries():
    msgs = [
        msg(socket.AF_INET, 0x02, "10.0.0.1", "02:00:00:00:00:01"),   # reachable
        msg(socket.AF_INET, 0x04, "10.0.0.2", "02:00:00:00:00:02"),   # stale still counts
        msg(socket.AF_INET, 0x20, "10.0.0.3", "02:00:00:00:00:03"),   # failed, old MAC
        msg(socket.AF_INET, 0x01, "10.0.0.4", None),                  # incomplete
        msg(socket.AF_INET6, 0x80, "2001:db8::5", "02:00:00:00:00:05"),  # permanent
        msg(socket.AF_INET6, 0x40, "ff02::16", "33:33:00:00:00:16"),  # multicast
        msg(socket.AF_INET, 0x40, "224.0.0.251", "01:00:5e:00:00:fb"),
        msg(socket.AF_INET, 0x02, "10.0.0.8", "0a:0b:0c:0d"),          # not Ethernet
        msg(7, 0x80, None, "02:00:00:00:00:09"),                       # bridge fdb
    ]
    assert neighbours_from_messages(msgs) == {A("10.0.0.1"): "02:00:00:00:00:01",
                                              A("10.0.0.2"): "02:00:00:00:00:02",
                                              A("2001:db8::5"): "02:00:00:00:00:05"}


@pytest.mark.root
def test_missing_namespace_is_a_clear_error():
    if os.geteuid() != 0:
        pytest.skip("needs root to enter a namespace")
    with pytest.raises(AcctError, match="no network namespace named 'acct-no-such-ns'"):
        read_neighbours("acct-no-such-ns")
    assert not os.path.exists("/var/run/netns/acct-no-such-ns")  # not created either


@pytest.mark.root
def test_read_neighbours_in_a_real_namespace():
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a network namespace")
    from pyroute2 import NetNS, netns
    from pyroute2.netlink.rtnl import ndmsg

    name = f"acct-mac-{os.getpid()}"
    netns.create(name)
    try:
        with NetNS(name, flags=0) as ns:
            ns.link("add", ifname="mac0", kind="veth", peer="mac1")
            idx = ns.link_lookup(ifname="mac0")[0]
            for i in (idx, ns.link_lookup(ifname="mac1")[0]):
                ns.link("set", index=i, state="up")
            ns.addr("add", index=idx, address="10.200.0.1", prefixlen=24)
            perm = ndmsg.states["permanent"]
            ns.neigh("add", dst="10.200.0.2", lladdr="02:00:00:AA:BB:02", ifindex=idx,
                     state=perm)
            ns.neigh("add", dst="2001:db8:200::2", lladdr="02:00:00:aa:bb:06", ifindex=idx,
                     state=perm)
            ns.neigh("add", dst="10.200.0.3", ifindex=idx, state=ndmsg.states["failed"])
        seen = read_neighbours(name)
        assert seen[A("10.200.0.2")] == "02:00:00:aa:bb:02"
        assert seen[A("2001:db8:200::2")] == "02:00:00:aa:bb:06"
        assert A("10.200.0.3") not in seen
        units = [host("020002", "10.200.0.2", "02:00:00:aa:bb:02"),
                 host("020006", "2001:db8:200::2", "02:00:00:aa:bb:07")]
        assert check(expected_macs(units), seen) == (
            {"020006": (A("2001:db8:200::2"), "02:00:00:aa:bb:07", "02:00:00:aa:bb:06")},
            {"020002"})
    finally:
        netns.remove(name)
    assert name not in netns.listnetns()
