"""auto-assign pools and auto-units: grammar, naming, uniqueness, bursts."""

import time

import pytest

from acctd.model.addresses import format_addr, parse_addr, parse_prefix
from acctd.model.units import ModelError, Unit, UnitSet
from acctd.services.auto_units import (AutoAssign, AutoUnits, PoolExhausted, owned_addrs,
                                       parse_auto_assign, parse_auto_units, plan_new_units,
                                       unique)

A = parse_addr


# --- auto-assign ---------------------------------------------------------------

def test_pools_are_used_in_order_and_skip_taken_addresses():
    aa = AutoAssign([("10.0.0.10", "10.0.0.12"), ("192.168.5.1", "192.168.5.2")])
    taken = set()
    got = []
    for _ in range(5):
        a = aa.next_free(taken)
        taken.add(a)
        got.append(format_addr(a))
    assert got == ["10.0.0.10", "10.0.0.11", "10.0.0.12", "192.168.5.1", "192.168.5.2"]
    with pytest.raises(PoolExhausted, match=r"all auto-assign pools are exhausted "
                       r"\(10\.0\.0\.10-10\.0\.0\.12, 192\.168\.5\.1-192\.168\.5\.2\)"):
        aa.next_free(taken)
    # a freed address in the first pool is handed out again before the second pool
    taken.discard(A("10.0.0.11"))
    assert aa.next_free(taken) == A("10.0.0.11")
    assert aa.size() == 5


def test_pool_crosses_octet_boundaries_and_uses_unit_addresses():
    aa = AutoAssign([(A("10.0.0.254"), A("10.0.1.1"))])
    units = [Unit("host", "a", addrs=(A("10.0.0.254"),)), Unit("user", "b"),
             Unit("cluster", "c", addrs=(A("10.0.0.255"), A("10.9.9.9")))]
    assert format_addr(aa.next_free(owned_addrs(units))) == "10.0.1.0"


def test_ipv6_pools_and_family_choice():
    aa = AutoAssign([("2001:db8::fffe", "2001:db8::1:1"), ("10.1.0.1", "10.1.0.1")])
    assert format_addr(aa.next_free({A("2001:db8::fffe"), A("2001:db8::ffff")})) == \
        "2001:db8::1:0"
    assert format_addr(aa.next_free(set(), family=4)) == "10.1.0.1"
    with pytest.raises(PoolExhausted, match=r"all IPv4 auto-assign pools are exhausted "
                       r"\(10\.1\.0\.1-10\.1\.0\.1\)"):
        aa.next_free({A("10.1.0.1")}, family=4)
    with pytest.raises(PoolExhausted, match="no IPv6 auto-assign pool"):
        AutoAssign([("10.0.0.1", "10.0.0.2")]).next_free(set(), family=6)


def test_huge_ipv6_pool_scans_only_past_taken_addresses():
    aa = AutoAssign([("2001:db8::", "2001:db8::ffff:ffff:ffff:ffff")])
    taken = {A(f"2001:db8::{i:x}") for i in range(1000)}
    t = time.perf_counter()
    assert aa.next_free(taken) == A("2001:db8::3e8")
    assert time.perf_counter() - t < 0.1


def test_pool_errors():
    with pytest.raises(ModelError, match="ends before it starts: 10.0.0.9 > 10.0.0.1"):
        AutoAssign([("10.0.0.9", "10.0.0.1")])
    with pytest.raises(ModelError, match="mixes IPv4 and IPv6"):
        AutoAssign([("10.0.0.1", "2001:db8::1")])
    with pytest.raises(ModelError, match="pool #2"):
        AutoAssign([("10.0.0.1", "10.0.0.2"), ("10.0.0.300", "10.0.0.301")])
    with pytest.raises(PoolExhausted, match="no auto-assign pool is configured"):
        AutoAssign([]).next_free(set())


def test_parse_auto_assign_line():
    assert parse_auto_assign("auto–assign 10.0.0.1 10.0.0.9") == (A("10.0.0.1"), A("10.0.0.9"))
    assert parse_auto_assign(["2001:db8::1", "2001:db8::9"])[1] == A("2001:db8::9")
    with pytest.raises(ModelError, match="expected auto-assign FIRST LAST"):
        parse_auto_assign("auto-assign 10.0.0.1")


# --- auto-units grammar --------------------------------------------------------

@pytest.mark.parametrize("line, want", [
    ("auto-units 1 type host naming by-dns",
     AutoUnits(1, "host", "by-dns")),
    # the reference's en dashes, as pasted from it
    ("auto–units 2 type user naming by–dns group AUTO",
     AutoUnits(2, "user", "by-dns", group="AUTO")),
    ("auto-units 3 type host naming prefix1 pc group LAN",
     AutoUnits(3, "host", "prefix1", "pc", "LAN")),
    ("auto-units 4 type user naming prefix2 u-",
     AutoUnits(4, "user", "prefix2", "u-")),
    # clauses in another order, keywords in upper case, no leading keyword
    ("5 group G naming PREFIX1 h type HOST",
     AutoUnits(5, "host", "prefix1", "h", "G")),
])
def test_parse_auto_units(line, want):
    got = parse_auto_units(line)
    assert got == want
    assert parse_auto_units(got.to_netams()) == got


@pytest.mark.parametrize("line, message", [
    ("auto-units", "got nothing"),
    ("auto-units x type host naming by-dns", "N must be a number, got 'x'"),
    ("auto-units 1 naming by-dns", "type is missing"),
    ("auto-units 1 type host", "naming is missing"),
    ("auto-units 1 type net naming by-dns", "type must be host or user, got 'net'"),
    ("auto-units 1 type host naming by-mac", "naming must be by-dns, prefix1 PREFIX"),
    ("auto-units 1 type host naming prefix1", "naming prefix1 needs a prefix"),
    ("auto-units 1 type host naming by-dns group", "group needs a value"),
    ("auto-units 1 type host type user naming by-dns", "type is given twice"),
    ("auto-units 1 type host naming by-dns owner x", "unexpected 'owner'"),
    ("auto-units -1 type host naming by-dns", "number must be a whole number >= 0"),
])
def test_parse_auto_units_errors(line, message):
    with pytest.raises(ModelError, match=message):
        parse_auto_units(line)


def test_direct_construction_is_checked():
    with pytest.raises(ModelError, match="needs a prefix without spaces"):
        AutoUnits(1, "host", "prefix2", "a b")
    with pytest.raises(ModelError, match="by-dns takes no prefix"):
        AutoUnits(1, "host", "by-dns", "x")
    with pytest.raises(ModelError) as e:
        AutoUnits(1, "host", "by-dns", group="my group")
    assert e.value.key == "group"


# --- naming --------------------------------------------------------------------

def test_prefix1_uses_the_last_octet_prefix2_the_last_two():
    p1 = AutoUnits(1, "host", "prefix1", "pc")
    p2 = AutoUnits(1, "host", "prefix2", "pc")
    assert p1.name_for(A("192.168.3.17")) == "pc17"
    assert p2.name_for(A("192.168.3.17")) == "pc3.17"
    assert p1.name_for(A("10.0.0.0")) == "pc0"
    # IPv6: 16-bit groups in hex instead of octets
    assert p1.name_for(A("2001:db8::1:abcd")) == "pcabcd"
    assert p2.name_for(A("2001:db8::1:abcd")) == "pc1:abcd"
    # a PTR name does not matter to prefix naming
    assert p1.name_for(A("192.168.3.17"), "x.example.") == "pc17"


def test_by_dns_falls_back_to_the_address():
    r = AutoUnits(1, "host", "by-dns")
    assert r.name_for(A("192.168.3.17"), "PC17.Office.Example.NET.") == "pc17.office.example.net"
    assert r.name_for(A("192.168.3.17"), None) == "192.168.3.17"
    assert r.name_for(A("192.168.3.17"), "  ") == "192.168.3.17"
    assert r.name_for(A("2001:db8::5"), "") == "2001:db8::5"
    assert r.name_for(A("192.168.3.17"), "odd name\t.lan") == "odd-name-.lan"


def test_unique_appends_counters():
    assert unique("pc1", set()) == "pc1"
    assert unique("pc1", {"pc1"}) == "pc1-2"
    assert unique("pc1", {"pc1", "pc1-2", "pc1-3"}) == "pc1-4"
    counters = {}
    taken = {"pc1"}
    for want in ("pc1-2", "pc1-3", "pc1-4"):
        name = unique("pc1", taken, counters)
        assert name == want
        taken.add(name)


# --- planning -------------------------------------------------------------------

def test_plan_skips_owned_addresses_and_repeats_and_is_order_independent():
    rule = AutoUnits(7, "user", "prefix1", "pc", "AUTO")
    existing = [Unit("group", "AUTO"), Unit("host", "pc5", addrs=(A("10.0.0.5"),)),
                Unit("net", "lan", nets=(parse_prefix("10.0.0.0/16"),))]
    seen = [A("10.0.1.5"), A("10.0.0.5"), A("10.0.0.7"), A("10.0.1.5"), A("10.0.2.5")]
    plan = plan_new_units(rule, seen, [u.name for u in existing], owned_addrs(existing))
    assert [(u.type, u.name, format_addr(u.addrs[0]), u.parents) for u in plan] == [
        ("user", "pc7", "10.0.0.7", ("AUTO",)),
        ("user", "pc5-2", "10.0.1.5", ("AUTO",)),   # pc5 is the configured host
        ("user", "pc5-3", "10.0.2.5", ("AUTO",)),
    ]
    again = plan_new_units(rule, reversed(seen), [u.name for u in existing],
                           owned_addrs(existing))
    assert again == plan
    # the plan is a valid configuration
    UnitSet(existing + plan)


def test_plan_by_dns_uses_resolve_and_falls_back():
    names = {A("10.0.0.1"): "a.lan.", A("10.0.0.2"): "a.lan", A("10.0.0.4"): "boom"}

    def resolve(addr):
        if names.get(addr) == "boom":
            raise OSError("timed out")
        return names.get(addr)

    rule = AutoUnits(1, "host", "by-dns")
    addrs = [A(f"10.0.0.{i}") for i in (1, 2, 3, 4)]
    plan = plan_new_units(rule, addrs, ["other"], set(), resolve=resolve)
    assert [u.name for u in plan] == ["a.lan", "a.lan-2", "10.0.0.3", "10.0.0.4"]
    assert all(u.parents == () and u.type == "host" for u in plan)
    # without a resolver every unit is named by its address
    assert [u.name for u in plan_new_units(rule, addrs[:1], [], set())] == ["10.0.0.1"]


def test_plan_ignores_resolve_for_prefix_naming():
    def resolve(addr):
        raise AssertionError("no DNS for prefix naming")
    plan = plan_new_units(AutoUnits(1, "host", "prefix2", "h"), [A("2001:db8::a:b")], [],
                          set(), resolve=resolve)
    assert [u.name for u in plan] == ["ha:b"]


def test_burst_of_5000_addresses_is_fast():
    rule = AutoUnits(1, "host", "prefix1", "pc", "AUTO")
    # a /19 worth of new addresses: each last octet comes back ~20 times
    addrs = [A(f"10.1.{i // 256}.{i % 256}") for i in range(5000)]
    existing = [A("10.1.0.1"), A("10.1.0.2")]
    t = time.perf_counter()
    plan = plan_new_units(rule, addrs, ["pc1", "AUTO"], set(existing))
    elapsed = time.perf_counter() - t
    assert elapsed < 0.5, elapsed
    assert len(plan) == 4998
    names = [u.name for u in plan]
    assert len(set(names)) == len(names)
    assert names[:3] == ["pc0", "pc3", "pc4"]
    assert names[254:257] == ["pc0-2", "pc1-2", "pc2"]  # 10.1.1.0-2
    assert all(" " not in n for n in names)


def test_burst_of_5000_same_dns_name_is_fast():
    # a broken PTR zone giving everyone the same name must not go quadratic
    rule = AutoUnits(1, "user", "by-dns")
    addrs = [A(f"10.2.{i // 256}.{i % 256}") for i in range(5000)]
    t = time.perf_counter()
    plan = plan_new_units(rule, addrs, [], set(), resolve=lambda a: "dhcp.isp.example")
    assert time.perf_counter() - t < 0.5
    assert plan[0].name == "dhcp.isp.example" and plan[-1].name == "dhcp.isp.example-5000"
