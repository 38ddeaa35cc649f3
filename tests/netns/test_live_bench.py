"""The live benchmark (acctd/bench/live.py, run by `make bench`): a short run
of each case must print every figure, and the counters must have gained
exactly the packets that reached the hooked interface."""

import json

import pytest

from acctd.bench import live

pytestmark = [pytest.mark.root, pytest.mark.netns]


def test_live_bench_prints_each_figure_and_counts_every_packet(capsys):
    live.run(warm_s=0.2, measure_s=0.3)
    got = {}
    for line in capsys.readouterr().out.splitlines():
        row = json.loads(line)
        got[row["name"]] = row
    cases = [label for label, _, _ in live.CASES]
    assert cases == ["flows_1", "flows_64k_1kaddr", "addrs_64k"]
    want = {"datapath.live_mem_ns.dependent_load_64mb"}
    for c in cases:
        want |= {f"datapath.live_ns.{c}.{h}" for h in ("xdp", "tc", "xdp_pass", "tc_ok")}
        want |= {f"datapath.live_x_baseline.{c}.{h}" for h in ("xdp", "tc")}
        want.add(f"datapath.live_counted_ratio.{c}")
    assert set(got) == want
    for c in cases:
        assert got[f"datapath.live_counted_ratio.{c}"]["value"] == 1.0, c
        for h, base in (("xdp", "xdp_pass"), ("tc", "tc_ok")):
            # the accounting program costs more than the empty one
            assert got[f"datapath.live_ns.{c}.{h}"]["value"] > got[f"datapath.live_ns.{c}.{base}"]["value"] > 0
