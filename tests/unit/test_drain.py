"""Per-CPU reduction and monotonic-counter deltas, on hand-made arrays."""

import numpy as np

from acctd.kernel import abi, drain


def flows(n):
    k = np.zeros(n, abi.FLOW_KEY)
    k["sport"] = np.arange(n) + 1000
    k["ip_ver"] = 4
    return k


def percpu_flow_vals(rows):
    """rows: per entry a list of (packets, bytes, first, last, flags) per CPU."""
    v = np.zeros((len(rows), len(rows[0])), abi.FLOW_VAL)
    for i, cpus in enumerate(rows):
        for c, (p, b, f, l, fl) in enumerate(cpus):
            v[i, c] = (p, b, f, l, fl, 0)
    return v


def test_reduce_flows_sums_counters_and_combines_times_and_flags():
    v = percpu_flow_vals([
        [(1, 100, 50, 60, 0x02), (2, 300, 40, 90, 0x10)],
        [(0, 0, 0, 0, 0), (5, 500, 70, 80, 0x01)],   # never seen on CPU 0
    ])
    r = drain.reduce_percpu(v)
    assert r["packets"].tolist() == [3, 5]
    assert r["bytes"].tolist() == [400, 500]
    assert r["first_ns"].tolist() == [40, 70]        # earliest non-zero
    assert r["last_ns"].tolist() == [90, 80]
    assert r["tcp_flags"].tolist() == [0x12, 0x01]


def test_reduce_addrs_sums_counters_and_drops_by_cause():
    v = np.zeros((1, 3), abi.ADDR_VAL)
    v["packets"] = [[[1, 2], [3, 4], [5, 6]]]
    v["bytes"] = [[[10, 20], [30, 40], [50, 60]]]
    v["drop_packets"][0, :, abi.Drop.POLICE, abi.Dir.OUT] = [1, 2, 3]
    v["drop_bytes"][0, :, abi.Drop.FW, abi.Dir.IN] = [100, 0, 50]
    v["cls"]["sys_policy"] = abi.SysPolicy.QUOTA   # the cached class: same on every CPU
    v["last_ns"] = [[7, 9, 8]]
    r = drain.reduce_percpu(v)[0]
    assert r["packets"].tolist() == [9, 12] and r["bytes"].tolist() == [90, 120]
    assert r["drop_packets"].tolist() == [[0, 0], [0, 0], [0, 6]]
    assert r["drop_bytes"].tolist() == [[0, 0], [150, 0], [0, 0]]
    assert r["cls"]["sys_policy"] == abi.SysPolicy.QUOTA
    assert r["last_ns"] == 9


def test_deltas_join_by_key_and_treat_regressed_entries_as_new():
    d = drain.Deltas()
    k = flows(3)
    v = np.zeros(3, abi.FLOW_VAL)
    v["packets"] = [10, 20, 30]
    v["bytes"] = [1000, 2000, 3000]
    first = d.update(k, v)
    assert first.values["packets"].tolist() == [10, 20, 30]   # all new
    # next drain: entry 0 grew, entry 1 unchanged, entry 2 was evicted and
    # re-created (counter went backwards), entry 3 is new; order shuffled
    k2 = np.concatenate([flows(4)[[3, 2, 0]], k[[1]]])
    v2 = np.zeros(4, abi.FLOW_VAL)
    v2["packets"] = [4, 5, 15, 20]
    v2["bytes"] = [400, 500, 1500, 2000]
    second = d.update(k2, v2)
    got = {int(kk["sport"]): (int(vv["packets"]), int(vv["bytes"])) for kk, vv in zip(second.keys, second.values)}
    assert got == {1003: (4, 400), 1002: (5, 500), 1000: (5, 500)}   # 1001 did not move


def test_deltas_confirm_full_key_not_just_hash(monkeypatch):
    # force every key to collide: the full-key check must still tell them apart
    monkeypatch.setattr(drain, "key_hash", lambda keys: np.zeros(len(keys), np.uint64))
    d = drain.Deltas()
    k = flows(2)
    v = np.zeros(2, abi.FLOW_VAL)
    v["packets"] = [1, 1]
    d.update(k[:1], v[:1])
    out = d.update(k[1:], v[1:])   # a different key with the same (fake) hash
    assert out.values["packets"].tolist() == [1]


def test_array_delta():
    prev = np.zeros(3, abi.COUNT_VAL)
    cur = prev.copy()
    cur["packets"][1] = [2, 3]
    assert drain.array_delta(cur, prev)["packets"].tolist() == [[0, 0], [2, 3], [0, 0]]


def test_deltas_of_empty_maps():
    """A fresh attach with no traffic yet: every drain must still work."""
    d = drain.Deltas()
    empty_k, empty_v = np.zeros(0, abi.ADDR_KEY), np.zeros(0, abi.ADDR_VAL)
    d.seed(empty_k, empty_v)
    assert len(d.update(empty_k, empty_v).keys) == 0
    k = np.zeros(1, abi.ADDR_KEY)
    v = np.zeros(1, abi.ADDR_VAL)
    v["packets"] = [[0, 3]]
    assert d.update(k, v).values["packets"].tolist() == [[0, 3]]
    assert len(d.update(empty_k, empty_v).keys) == 0   # the entry went away
