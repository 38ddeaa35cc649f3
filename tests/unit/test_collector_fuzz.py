"""Fuzzing every collector decoder (hypothesis, bounded so the tier stays
fast): whatever arrives, the only outcomes are records or a Malformed that
the listener counts; templates stay under their caps."""

import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acctd.bench import flowgen as g
from acctd.services.collector import listener, netflow5, netflow9, sflow
from acctd.services.collector.records import RECORD, Malformed
from acctd.services.collector.templates import MAX_FIELDS, Store

FUZZ = settings(max_examples=300, deadline=200, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
FLOWS = [("10.0.0.1", "192.0.2.9", 40000, 80, 6, 10, 1000)] * 3
SEEDS = {
    "v5": g.v5(FLOWS), "v9": g.v9(FLOWS), "ipfix": g.ipfix(FLOWS, enterprise=((1, 4, 9),)),
    "ipfix-options": g.ipfix_sampling(10),
    "sflow": g.sflow([("10.0.0.1", "192.0.2.9", 1, 2, 6, 1500, 64)] * 3),
}


def mutated(seed: bytes):
    """A valid packet with bytes overwritten (lengths, counts, ids), cut
    short or extended: the inputs that reach deep into a decoder."""
    return st.tuples(st.lists(st.tuples(st.integers(0, len(seed) - 1), st.integers(0, 255)),
                              max_size=6),
                     st.integers(0, len(seed)), st.binary(max_size=16)).map(
        lambda m: _apply(seed, *m))


def _apply(seed, writes, cut, tail):
    b = bytearray(seed)
    for at, v in writes:
        b[at] = v
    return bytes(b[:cut]) + (tail if cut == len(seed) else b"")


def outcome(decode, data):
    try:
        recs = decode(data)
    except Malformed:
        return "malformed"
    assert isinstance(recs, np.ndarray) and recs.dtype == RECORD
    return "records"


any_bytes = st.binary(max_size=600)


@FUZZ
@given(st.one_of(any_bytes, mutated(SEEDS["v5"])))
def test_fuzz_v5(data):
    outcome(lambda d: netflow5.decode(d)[0], data)


@FUZZ
@given(st.one_of(any_bytes.map(lambda b: b"\x00\x09" + b), mutated(SEEDS["v9"])))
def test_fuzz_v9(data):
    store = Store(per_domain=8, domains=2, exporters=2)
    outcome(lambda d: netflow9.decode_v9(d, "e", store).records, data)
    assert store.count("e") <= 16


@FUZZ
@given(st.one_of(any_bytes.map(lambda b: b"\x00\x0a" + b), mutated(SEEDS["ipfix"]),
                 mutated(SEEDS["ipfix-options"])))
def test_fuzz_ipfix(data):
    store = Store(per_domain=8, domains=2, exporters=2)
    outcome(lambda d: netflow9.decode_ipfix(d, "e", store).records, data)
    assert store.count("e") <= 16
    for doms in store._t.values():
        for dom in doms.values():
            assert all(len(t.fields) <= MAX_FIELDS for t in dom.values())


@FUZZ
@given(st.one_of(any_bytes.map(lambda b: struct.pack(">I", 5) + b), mutated(SEEDS["sflow"])))
def test_fuzz_sflow(data):
    outcome(lambda d: sflow.decode(d)[0], data)


@FUZZ
@given(st.lists(st.one_of(any_bytes, *(mutated(s) for s in SEEDS.values())), max_size=8))
def test_fuzz_listener_counts_every_packet(packets):
    """Through the listener's own entry point: every packet is either
    decoded or counted malformed, and the listener is never stopped."""
    got = []
    lst = listener.Listener.__new__(listener.Listener)  # no socket: handle() only
    lst.accepted, lst.store, lst.clock = (listener.ipaddress.ip_network("192.0.2.0/24"),), \
        Store(per_domain=4, domains=2, exporters=2), "remote"
    lst.exporters, lst.refused, lst.address, lst._verdicts = {}, 0, ("127.0.0.1", 0), {}
    lst.deliver = lambda recs, addr, ex: got.append(len(recs))
    lst._warn = listener.Throttle(listener.log)
    lst._sflow, lst._sflow_n, lst._sflow_lock = [], 0, listener.threading.Lock()
    for p in packets:
        lst.handle(p, "192.0.2.1")
    lst.flush()
    ex = lst.exporters.get("192.0.2.1")
    n = ex.packets if ex else 0
    assert n == len(packets)
    assert ex is None or ex.records >= sum(got)  # sFlow: samples of non-IP headers too
    assert ex is None or ex.malformed <= n
