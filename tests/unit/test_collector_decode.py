"""The collector's decoders on packets built by acctd.bench.flowgen (the
wire formats written out by hand): exact records out, and every kind of
lie in a length refused as Malformed, templates capped and withdrawn."""

import struct

import numpy as np
import pytest

from acctd.bench import flowgen as g
from acctd.model.addresses import format_addrs
from acctd.services.collector import listener, netflow5, netflow9, sflow
from acctd.services.collector.records import Malformed
from acctd.services.collector.templates import Store

FLOWS = [("10.0.0.1", "192.0.2.9", 40000, 80, 6, 10, 1000),
         ("10.0.0.3", "192.0.2.9", 53, 5353, 17, 1, 60)]


def _simple(recs):
    return [(format_addrs(r["saddr"][None])[0], format_addrs(r["daddr"][None])[0],
             int(r["sport"]), int(r["dport"]), int(r["proto"]), int(r["packets"]),
             int(r["bytes"])) for r in recs]


@pytest.mark.parametrize("make", [
    lambda: g.v5(FLOWS), lambda: g.v9(FLOWS), lambda: g.ipfix(FLOWS)], ids=["v5", "v9", "ipfix"])
def test_netflow_versions_decode_every_record(make):
    recs, _ = listener.decode(make(), "192.0.2.1", Store())
    assert _simple(recs) == FLOWS
    assert list(recs["sampling"]) == [1, 1]


def test_v5_times_and_sampling_from_the_header():
    recs, seq = netflow5.decode(g.v5(FLOWS, seq=77, sampling=(1 << 14) | 100))
    assert seq == 77
    assert list(recs["sampling"]) == [100, 100]
    # uptime 100000 ms at 1700000000 s: first = uptime - 5000, last = uptime - 10
    assert int(recs["first_ms"][0]) == 1_700_000_000_000 - 5000
    assert int(recs["last_ms"][0]) == 1_700_000_000_000 - 10


@pytest.mark.parametrize("cut", [1, 24, 47])
def test_v5_length_must_match_its_count(cut):
    pkt = g.v5(FLOWS)
    with pytest.raises(Malformed):
        netflow5.decode(pkt[:-cut])
    with pytest.raises(Malformed):
        netflow5.decode(pkt + b"\0" * cut)


def test_ipfix_data_before_its_template_is_counted_not_decoded():
    st = Store()
    res = netflow9.decode_ipfix(g.ipfix(FLOWS, template=False), "e", st)
    assert len(res.records) == 0 and res.unknown_template == 1
    netflow9.decode_ipfix(g.ipfix(FLOWS), "e", st)
    assert _simple(netflow9.decode_ipfix(g.ipfix(FLOWS, template=False), "e", st).records) == FLOWS


def test_ipfix_unknown_enterprise_fields_are_skipped_by_their_length():
    pkt = g.ipfix(FLOWS, enterprise=((100, 4, 9), (7, 6, 29305)))
    assert _simple(netflow9.decode_ipfix(pkt, "e", Store()).records) == FLOWS


def test_ipfix_sampling_options_renormalise_the_domain():
    st = Store()
    netflow9.decode_ipfix(g.ipfix_sampling(64, domain=3), "e", st)
    assert st.sampling == {("e", 3): 64}
    recs = netflow9.decode_ipfix(g.ipfix(FLOWS, domain=3), "e", st).records
    assert list(recs["sampling"]) == [64, 64]
    recs = netflow9.decode_ipfix(g.ipfix(FLOWS, domain=4), "e", st).records
    assert list(recs["sampling"]) == [1, 1]


def test_ipfix_template_withdrawal():
    st = Store()
    netflow9.decode_ipfix(g.ipfix(FLOWS), "e", st)
    assert st.count("e") == 1
    withdraw = struct.pack(">HHHH", 2, 8, 256, 0)
    netflow9.decode_ipfix(g.ipfix_message(withdraw), "e", st)
    assert st.count("e") == 0
    assert netflow9.decode_ipfix(g.ipfix(FLOWS, template=False), "e", st).unknown_template == 1


@pytest.mark.parametrize("fields,why", [
    (((8, 2), (12, 4)), "field 8 (saddr4) of length 2"),
    (((27, 4),), "field 27 (saddr6) of length 4"),
    (((7, 4),), "field 7 (sport) of length 4"),
    (((1, 3),), "field 1 (bytes) of length 3"),
    (((1, 0),), "field 1 of length 0"),
])
def test_template_field_lengths_are_checked_against_their_type(fields, why):
    with pytest.raises(Malformed, match=why.replace("(", r"\(").replace(")", r"\)")):
        netflow9.decode_ipfix(g.ipfix_template(256, fields), "e", Store())


def test_template_longer_than_its_set_is_refused():
    pkt = bytearray(g.ipfix_template(256, g.V4_FIELDS))
    struct.pack_into(">H", pkt, 16 + 4 + 2, len(g.V4_FIELDS) + 5)  # field count past the set
    with pytest.raises(Malformed, match="past its set"):
        netflow9.decode_ipfix(bytes(pkt), "e", Store())


def test_set_longer_than_the_message_is_refused():
    pkt = bytearray(g.ipfix(FLOWS))
    struct.pack_into(">H", pkt, 16 + 2, 4000)
    with pytest.raises(Malformed, match="past the message"):
        netflow9.decode_ipfix(bytes(pkt), "e", Store())


def test_templates_are_capped_per_domain_and_the_kept_ones_stay():
    st = Store(per_domain=4, domains=2)
    for tid in range(256, 266):
        netflow9.decode_ipfix(g.ipfix_template(tid, g.V4_FIELDS), "e", st)
    assert st.count("e") == 4
    res = netflow9.decode_ipfix(g.ipfix_template(300, g.V4_FIELDS), "e", st)
    assert res.refused_templates == 1
    for dom in range(5):
        netflow9.decode_ipfix(g.ipfix_template(256, g.V4_FIELDS, domain=dom), "e", st)
    assert st.count("e") == 4 + 1  # domain 0 (4) and one more domain
    assert len(netflow9.decode_ipfix(g.ipfix(FLOWS, template=False), "e", st).records) == 2


def test_templates_survive_a_restart(tmp_path):
    st = Store()
    netflow9.decode_v9(g.v9(FLOWS, domain=7), "e", st)
    netflow9.decode_ipfix(g.ipfix_sampling(10, domain=7), "e", st)
    st.save(str(tmp_path / "t.json"))
    again = Store()
    assert again.load(str(tmp_path / "t.json")) == 2
    recs = netflow9.decode_v9(g.v9(FLOWS, domain=7, template=False), "e", again).records
    assert _simple(recs) == FLOWS
    (tmp_path / "bad.json").write_text('{"templates": [["e", 0, 256, [[8, 2, 0]], false, 0]]}')
    assert Store().load(str(tmp_path / "bad.json")) == 0  # a template that lies is not kept


def test_sflow_raw_headers_give_ip_lengths_and_rates():
    pkt = g.sflow([("10.0.0.1", "192.0.2.9", 40000, 443, 6, 1500, 64),
                   ("10.0.0.2", "192.0.2.9", 5000, 53, 17, 80, 128)], seq=5)
    recs, seq = sflow.decode(pkt)
    assert seq == 5
    assert _simple(recs) == [("10.0.0.1", "192.0.2.9", 40000, 443, 6, 1, 1500),
                             ("10.0.0.2", "192.0.2.9", 5000, 53, 17, 1, 80)]
    assert list(recs["sampling"]) == [64, 128]


@pytest.mark.parametrize("at,value", [(28 + 4, 99999), (24, 1 << 20), (28 + 8 + 32 + 4, 7)])
def test_sflow_lengths_are_checked(at, value):
    pkt = bytearray(g.sflow([("10.0.0.1", "192.0.2.9", 40000, 443, 6, 1500, 64)]))
    struct.pack_into(">I", pkt, at, value)
    with pytest.raises(Malformed):
        sflow.decode(bytes(pkt))


def test_unknown_version_is_malformed():
    with pytest.raises(Malformed, match="unknown export version 7"):
        listener.decode(b"\x00\x07" + b"\0" * 40, "e", Store())


def test_records_are_numpy_not_python_objects():
    recs, _ = listener.decode(g.ipfix(FLOWS * 10), "e", Store())
    assert isinstance(recs, np.ndarray) and len(recs) == 20


def test_ipfix_ipv6_records():
    fields = ((27, 16), (28, 16), (7, 2), (11, 2), (4, 1), (1, 4), (2, 4))
    rec = (bytes.fromhex("20010db8000000000000000000000001") +
           bytes.fromhex("20010db8000000000000000000000002") +
           struct.pack(">HHBII", 5000, 443, 6, 1200, 3))
    sets = g._template_set(2, 400, fields) + struct.pack(">HH", 400, 4 + len(rec)) + rec
    recs = netflow9.decode_ipfix(g.ipfix_message(sets), "e", Store()).records
    assert _simple(recs) == [("2001:db8::1", "2001:db8::2", 5000, 443, 6, 3, 1200)]
    assert list(recs["ip_ver"]) == [6]


def test_v9_options_template_sets_the_sampling_interval():
    """v9 options templates give scope and option lengths in bytes (RFC 3954 §6.1)."""
    st = Store()
    # scope: "cache" (type 4, which as a data field would be the 1-byte protocol), 4 bytes
    tmpl = struct.pack(">HHH", 300, 4, 8) + struct.pack(">HHHHHH", 4, 4, 34, 4, 35, 1)
    tmpl += b"\0" * (-len(tmpl) % 4)
    data = struct.pack(">IIB", 0, 50, 2) + b"\0\0\0"
    sets = struct.pack(">HH", 1, 4 + len(tmpl)) + tmpl + struct.pack(">HH", 300, 4 + len(data)) \
        + data
    pkt = struct.pack(">HHIIII", 9, 2, 1000, 1_700_000_000, 0, 5) + sets
    netflow9.decode_v9(pkt, "e", st)
    assert st.sampling == {("e", 5): 50}
    recs = netflow9.decode_v9(g.v9(FLOWS, domain=5), "e", st).records
    assert list(recs["sampling"]) == [50, 50]


def test_sequence_numbers_show_what_never_arrived():
    """v5 counts flows: packets at 0 (2 flows), 2, then 10 (6 flows lost);
    v9 counts packets per source id; an older number is not a loss."""
    ex = listener.Exporter()
    st = Store()
    for seq in (0, 2, 10, 4):
        ex.sequenced(*listener.decode_sequenced(g.v5(FLOWS, seq=seq), "e", st)[2])
    assert ex.lost == 6
    v9 = listener.Exporter()
    for seq, dom in ((7, 1), (8, 1), (3, 2), (11, 1), (4, 2)):
        v9.sequenced(*listener.decode_sequenced(g.v9(FLOWS, seq=seq, domain=dom), "e", st)[2])
    assert v9.lost == 2
