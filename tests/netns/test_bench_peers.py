"""The standing peer comparison (acctd/bench/peers.py) runs end to end on a
short blast: acctd counts every received frame, and each peer gets a row
with its CPU per packet."""

import json
import os
import shutil

import pytest

from acctd.bench import peers

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.peers]


def test_peer_comparison_counts_the_blast(capsys):
    missing = [p for p in ("tcpreplay", "pmacctd", "softflowd") if not shutil.which(p)]
    if missing:
        reason = f"needs {', '.join(missing)} (Debian tcpreplay, pmacct, softflowd)"
        if os.environ.get("ACCTD_PEERS_REQUIRED") == "1":
            pytest.fail(f"peer required but unavailable: {reason}")
        pytest.skip(reason)
    assert peers.main(["--flows", "1024", "--addrs", "64", "--seconds", "1"]) == 0
    out, err = capsys.readouterr()
    figures = {r["name"]: r["value"] for r in map(json.loads, out.splitlines())}
    label = "flows_1024_addrs_64"
    assert figures[f"peers.counted_ratio.{label}.acctd"] == 1.0
    for peer in ("acctd", "pmacctd", "softflowd"):
        assert figures[f"peers.cpu_ns_per_packet.{label}.{peer}"] > 0
        assert 0 < figures[f"peers.counted_ratio.{label}.{peer}"] <= 1.0
    assert err.splitlines()[0].split() == ["peer", "sent", "received", "counted",
                                           "counted/recv", "CPU", "ns/pkt"]
