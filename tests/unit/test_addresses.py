"""The one address codec (acctd/model/addresses.py): 16-byte datapath keys,
their text, and the vectorised form the flow log uses."""

import numpy as np
import pytest

from acctd.model.addresses import canonical, format_addr, format_addrs, parse_addr


def test_round_trip_bytes_and_map_key_rows():
    for a in ("10.0.0.1", "2001:db8::1", "::1", "0.0.0.0", "255.255.255.255"):
        raw = parse_addr(a)
        assert len(raw) == 16 and format_addr(raw) == a
        assert format_addr(np.frombuffer(raw, np.uint8)) == a   # a map key's addr field


def test_ipv4_is_stored_mapped():
    assert parse_addr("10.0.0.1") == bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 1])
    assert canonical("::ffff:10.0.0.1") == "10.0.0.1"
    assert canonical("2001:DB8::0:1") == "2001:db8::1"
    with pytest.raises(ValueError):
        canonical("10.0.0.300")


def test_vectorised_form_equals_the_scalar_one():
    texts = ["10.0.0.1", "192.168.255.7", "2001:db8::1", "::", "::ffff:0:1", "1.2.3.4"]
    raw = np.array([np.frombuffer(parse_addr(t), np.uint8) for t in texts])
    assert format_addrs(raw).tolist() == [format_addr(r) for r in raw]
    assert format_addrs(np.zeros((0, 16), np.uint8)).tolist() == []
