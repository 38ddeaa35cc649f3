"""The drain's map reader at the datapath's sizes: a large per-CPU flow
table read by several threads over bucket ranges gives every entry exactly
once with its per-CPU copies reduced exactly, under concurrent updates too,
and without allocating the per-CPU array the reduce used to start from."""

import threading
import tracemalloc

import numpy as np
import pytest

from acctd.kernel import abi, drain, syscalls

pytestmark = [pytest.mark.root, pytest.mark.kernel]

LRU_PERCPU_HASH = 10


@pytest.fixture
def flows():
    fd = syscalls.map_create(LRU_PERCPU_HASH, abi.FLOW_KEY.itemsize, abi.FLOW_VAL.itemsize,
                             400_000, "acct_test_flows")
    m = syscalls.Map(fd, abi.FLOW_KEY, abi.FLOW_VAL)
    m.threads = 4  # split even on a one-CPU runner: correctness does not depend on cores
    yield m
    m.close()


def fill(m, n: int, step: int = 0):
    """n flows whose per-CPU copies differ: CPU c counts i + c + 1 packets;
    first_ns is missing (0) on CPU 0 for odd i; tcp_flags are one bit per CPU."""
    i = np.arange(n, dtype=np.uint64)
    keys = np.zeros(n, abi.FLOW_KEY)
    keys["ifindex"], keys["proto"] = 3, 6
    keys["saddr"][:, 8:16] = i.astype(">u8").view(np.uint8).reshape(n, 8)
    vals = np.zeros((n, m.ncpus), abi.FLOW_VAL)
    for c in range(m.ncpus):
        vals["packets"][:, c] = i + c + 1 + step
        vals["bytes"][:, c] = 100 * (i + c + 1 + step)
        vals["first_ns"][:, c] = np.where((c == 0) & (i % 2 == 1), 0, 1000 + i + 7 * c)
        vals["last_ns"][:, c] = 5000 + i * (c + 1)
        vals["tcp_flags"][:, c] = 1 << c
    for s in range(0, n, 65536):
        m.update_batch(keys[s:s + 65536], vals[s:s + 65536])
    return keys, vals


def expected(vals):
    first = vals["first_ns"].astype(np.float64)
    first[first == 0] = np.inf
    return {"packets": vals["packets"].sum(axis=1), "bytes": vals["bytes"].sum(axis=1),
            "first_ns": first.min(axis=1).astype(np.uint64),
            "last_ns": vals["last_ns"].max(axis=1),
            "tcp_flags": np.bitwise_or.reduce(vals["tcp_flags"], axis=1)}


def by_key(keys, vals):
    """Values in the order of the sorted keys, after checking each key is there once."""
    kv = keys.view(np.dtype((np.void, keys.itemsize)))
    order = np.argsort(kv)
    assert len(np.unique(kv)) == len(kv), "an entry was read twice"
    return kv[order], vals[order]


def test_split_read_gives_every_entry_once_reduced_exactly(flows):
    keys, vals = fill(flows, 300_000)
    want_k, want = by_key(keys, np.arange(len(keys)))
    for _ in range(2):  # the first read is whole (nothing known yet), the second split
        got_k, got = by_key(*drain.read(flows))
        assert len(got_k) == 300_000 and (got_k == want_k).all()
        exp = expected(vals[want])
        for f in exp:
            np.testing.assert_array_equal(got[f], exp[f], err_msg=f)
    assert len(flows._bucket_ranges()) == 4


def test_split_read_of_a_sparse_map_drops_what_two_threads_read(flows):
    """50 entries in 512k buckets: the first thread's one batch runs to the
    end of the map, over every other thread's range."""
    keys, vals = fill(flows, 50)
    flows.PARALLEL_MIN_ENTRIES = 0
    got_k, got = by_key(*drain.read(flows))
    assert len(flows._bucket_ranges()) == 4
    assert len(got_k) == 50
    np.testing.assert_array_equal(got["packets"], np.sort(expected(vals)["packets"]))


def test_split_read_while_the_counters_move(flows):
    keys, vals = fill(flows, 300_000)
    drain.read(flows)
    stop = threading.Event()

    def count_on():
        step = 0
        while not stop.is_set():
            step += 1
            fill(flows, 300_000, step)
    t = threading.Thread(target=count_on)
    t.start()
    try:
        for _ in range(3):
            k, v = drain.read(flows)
            got_k, got = by_key(k, v)
            assert len(got_k) == 300_000
            # each entry as it stood at some moment: its own index's count plus a step
            base = expected(vals[by_key(keys, np.arange(len(keys)))[1]])["packets"]
            moved = got["packets"] - base
            assert (moved % flows.ncpus == 0).all() and (moved >= 0).all()
    finally:
        stop.set()
        t.join()


def test_drain_allocates_only_its_result(flows):
    """Keys and reduced values, sized by max_entries plus a batch per thread:
    the per-CPU copies never land in one array of their own (80 MB at 1M flows)."""
    fill(flows, 300_000)
    drain.read(flows)
    tracemalloc.start()
    try:
        drain.read(flows)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    rows = flows.info.max_entries + flows.threads * flows.BATCH
    scratch = flows.threads * flows.BATCH * (abi.FLOW_KEY.itemsize
                                             + flows.ncpus * abi.FLOW_VAL.itemsize)
    assert peak <= rows * (abi.FLOW_KEY.itemsize + abi.FLOW_VAL.itemsize) + scratch + 2 ** 20


def test_take_returns_each_found_entry_once_and_deletes_it(flows):
    """The reaper's lookup-and-delete of many keys: the entries there come
    back with every CPU's copy and are gone; keys not there are said to be
    missing, and a second take finds nothing."""
    keys, vals = fill(flows, 5000)
    missing = keys[:300].copy()
    missing["ifindex"] = 99
    ask = np.concatenate([keys[::7], missing])
    found, got = flows.take(ask)
    assert found.tolist() == [True] * len(keys[::7]) + [False] * 300
    want = expected(vals[::7])
    red = drain.reduce_percpu(got[found])
    for f in want:
        assert (red[f] == want[f]).all(), f
    left, _ = flows.read_all()
    assert len(left) == 5000 - len(keys[::7])
    again, _ = flows.take(keys[::7])
    assert not again.any()
