"""Export through real collectors: acctd's records of crafted drains, sent
to nfcapd (read back with nfdump) and nfacctd (pmacct), in every format.
The totals each collector reports must equal the drains' deltas to the
byte and packet, and the fields of a known flow must come back as sent."""

from __future__ import annotations

import time

import numpy as np
import pytest

from acctd.services.export.messages import MESSAGE_MAX, Now
from acctd.services.export.service import Exporter, ExportSettings
from acctd.services.export.transport import UDP_RATE
from tests.flowgen import flows, many
from tests.peers.collectors import Nfacctd, Nfcapd

pytestmark = pytest.mark.peers

S = 10**9


def exporter(fmt: str, port: int, **kw) -> Exporter:
    e = Exporter(ExportSettings(format=fmt, destination=(f"127.0.0.1:{port}",),
                                active_timeout=kw.pop("active", 10), inactive_timeout=5,
                                template_packets=kw.pop("template_packets", 5), **kw), "test")
    e.open()
    return e


def drains(e: Exporter, now: Now, n: int = 300) -> tuple[int, int, int, int]:
    """Three drains of the same flows 6 s apart (an active timeout of 10 s
    cuts each flow into two records), then the exporter's close; returns
    the (packets, bytes) fed in total, and of IPv4 flows only."""
    k, v = many(n, now.mono_ns)
    tot = [0, 0, 0, 0]
    v4 = k["ip_ver"] == 4
    for step in range(3):
        t = Now(now.mono_ns + step * 6 * S, now.wall_ns + step * 6 * S)
        vv = v.copy()
        vv["last_ns"] = t.mono_ns - 1000
        vv["packets"] = v["packets"] + step
        vv["bytes"] = v["bytes"] * (step + 1)
        e.add(k, vv, t)
        e.committed(t)
        tot[0] += int(vv["packets"].sum())
        tot[1] += int(vv["bytes"].sum())
        tot[2] += int(vv["packets"][v4].sum())
        tot[3] += int(vv["bytes"][v4].sum())
        time.sleep(0.05)    # loopback datagrams: give the collector a moment
    e.close()
    return tuple(tot)


@pytest.mark.parametrize("fmt", ["v5", "v9", "ipfix"])
@pytest.mark.parametrize("collector", [Nfcapd, Nfacctd], ids=["nfcapd", "nfacctd"])
def test_collector_totals_equal_the_drains(tmp_path, collector, fmt):
    col = collector(tmp_path)
    try:
        e = exporter(fmt, col.port)
        packets, octets, p4, b4 = drains(e, Now.sample())
        want = (p4, b4) if fmt == "v5" else (packets, octets)   # v5 carries IPv4 only
        got = col.flows() if collector is Nfcapd else col.flows(expect_bytes=want[1])
    finally:
        col.close()
    assert (sum(f["packets"] for f in got), sum(f["bytes"] for f in got)) == want
    if fmt != "v5":
        assert any(":" in f["sa" if collector is Nfcapd else "src"] for f in got)  # IPv6 too
    if collector is Nfcapd:
        assert len(got) == e.records - e.senders[0].encoder.skipped
        assert "Bad Packets: 0" in col.log
        if fmt != "ipfix":
            # nfdump 1.7 leaves the options data record out of the IPFIX
            # sequence; RFC 7011 section 3.1 counts it, as acctd does
            assert "Sequence Errors: 0" in col.log


@pytest.mark.parametrize("fmt", ["v5", "v9", "ipfix"])
def test_nfdump_reads_the_fields_as_sent(tmp_path, fmt):
    """One TCP flow from a subscriber and one ICMP flow towards it: times
    (monotonic ns to epoch), addresses, ports, ICMP type/code, ToS, flags,
    interfaces and direction, VLAN; and a v5 counter above 32 bits split."""
    now = Now.sample()
    big = 5 * 2**32 + 17 if fmt == "v5" else 2**40 + 3
    k, v = flows([
        dict(src="10.1.2.3", dst="203.0.113.9", sport=51000, dport=443, tos=0x28, vlan=12,
             ifindex=7, dir="out", packets=5_000_000, bytes=big, flags=0x1B,
             first_ns=now.mono_ns - 3_500 * 10**6, last_ns=now.mono_ns - 250 * 10**6),
        dict(src="203.0.113.9", dst="10.1.2.3", proto=1, sport=8, dport=0, ifindex=7,
             dir="in", packets=4, bytes=336, first_ns=now.mono_ns - 2 * S,
             last_ns=now.mono_ns - S)])
    col = Nfcapd(tmp_path)
    try:
        e = exporter(fmt, col.port)
        e.add(k, v, Now(now.mono_ns + 6 * S, now.wall_ns + 6 * S))   # idle: final records
        e.committed(Now(now.mono_ns + 6 * S, now.wall_ns + 6 * S))
        e.close()
        got = col.flows()
    finally:
        col.close()
    tcp = [f for f in got if f["pr"] == "TCP"]
    icmp = [f for f in got if f["pr"] == "ICMP"]
    assert sum(f["bytes"] for f in tcp) == big and sum(f["packets"] for f in tcp) == 5_000_000
    assert len(tcp) == (6 if fmt == "v5" else 1)
    t = tcp[0]
    assert (t["sa"], t["da"], t["sp"], t["dp"], t["stos"], t["in"], t["out"]) == \
        ("10.1.2.3", "203.0.113.9", "51000", "443", "40", "7", "0")
    assert t["flg"] == "...AP.SF"
    start = time.strftime("%Y-%m-%d %H:%M:%S",
                          time.localtime((now.wall_ns - 3_500 * 10**6) // S))
    assert t["ts"] == start
    assert float(t["td"]) == pytest.approx(3.25, abs=0.002)
    if fmt != "v5":
        assert (t["svln"], t["dir"]) == ("12", "0")
    (i,) = icmp
    assert (i["packets"], i["bytes"], i["in"], i["out"], i["dp"]) == (4, 336, "0", "7", str(8 * 256 + 0))
    if fmt != "v5":
        assert i["dir"] == "1"


@pytest.mark.parametrize("fmt", ["v9", "ipfix"])
def test_v6_flow_fields(tmp_path, fmt):
    now = Now.sample()
    k, v = flows([dict(src="2001:db8::5", dst="2001:db8:1::9", proto=17, sport=5353,
                       dport=53, packets=3, bytes=321, first_ns=now.mono_ns - S,
                       last_ns=now.mono_ns - S // 2)])
    col = Nfcapd(tmp_path)
    try:
        e = exporter(fmt, col.port)
        e.add(k, v, Now(now.mono_ns + 6 * S, now.wall_ns + 6 * S))
        e.committed(Now(now.mono_ns + 6 * S, now.wall_ns + 6 * S))
        e.close()
        (f,) = col.flows()
    finally:
        col.close()
    assert (f["sa"], f["da"], f["sp"], f["dp"], f["pr"], f["packets"], f["bytes"]) == \
        ("2001:db8::5", "2001:db8:1::9", "5353", "53", "UDP", 3, 321)


def test_a_stock_nfcapd_keeps_every_record_of_a_large_drain(tmp_path):
    """30,000 records due at one drain, 1,394 v9 datagrams, to an nfcapd
    with its default socket buffer: paced at the default udp-rate it keeps
    every one. Sent back to back (udp-rate = 0, as acctd sent until the
    pacer) the same nfcapd kept 13,693 of them."""
    col = Nfcapd(tmp_path, socket_buffer=None)
    try:
        e = exporter("v9", col.port)
        now = Now.sample()
        k, v = many(30_000, now.mono_ns)
        t = Now(now.mono_ns + 6 * S, now.wall_ns + 6 * S)     # idle: every flow due
        e.add(k, v, t)
        e.committed(t)
        e.close()
        got = col.flows()
    finally:
        col.close()
    assert e.settings.udp_rate == UDP_RATE
    assert e.senders[0].sent == e.senders[0].encoder.status()["messages"] > 1000
    assert (len(got), sum(f["bytes"] for f in got)) == (30_000, int(v["bytes"].sum()))


def test_templates_every_n_messages_keep_a_late_collector_decoding(tmp_path):
    """A collector started after the first template message still decodes
    once the template comes round again (every 5 messages)."""
    now = Now.sample()
    k, v = many(2000, now.mono_ns, v6_every=0)
    with Nfcapd(tmp_path) as first:
        port = first.port
        e = exporter("ipfix", port, active=0)
        e.add(k[:100], v[:100], now)      # templates and data to nobody's file
        e.committed(now)
    (tmp_path / "late").mkdir()
    with Nfcapd(tmp_path / "late", port=port) as late:
        e.add(k[100:], v[100:], now)      # 1900 records, ~80 messages, templates every 5
        e.committed(now)
        e.close()
        got = late.flows()
    assert np.isin(v["bytes"][100:], [f["bytes"] for f in got]).mean() > 0.9
    # at most the 4 messages before the next template are lost to it
    per = (MESSAGE_MAX - 16 - 4) // e.senders[0].encoder.flow_templates[4].dtype.itemsize
    assert sum(f["bytes"] for f in got) >= int(v["bytes"][104 + per * 4:].sum())
