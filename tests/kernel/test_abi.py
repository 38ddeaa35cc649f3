"""The numpy copy of the contract (acctd/kernel/abi.py) is checked, not trusted:
sizes and offsets must equal what bcc compiled from bpf/acct_abi.h."""

import pytest

from acctd.kernel import abi

pytestmark = [pytest.mark.root, pytest.mark.kernel]


def test_layouts_match_compiled_structs(datapath):
    compiled = datapath.layouts
    assert compiled, "the session build should have compiled the programs"
    checked = 0
    for cname, (size, offsets) in compiled.items():
        name = cname.removeprefix("struct ")
        if name not in abi.STRUCTS:
            continue
        dt = abi.STRUCTS[name]
        assert dt.itemsize == size, f"{name}: numpy {dt.itemsize} != C {size}"
        for field, off in offsets.items():
            assert dt.fields[field][1] == off, f"{name}.{field}: numpy offset != C {off}"
        checked += 1
    # every map key/value struct of the contract was compared
    assert checked >= 6, sorted(compiled)


def test_pinned_maps_match_abi(datapath):
    for name, (kdt, vdt, percpu) in abi.MAPS.items():
        m = datapath.maps[name]
        assert (m.info.key_size, m.info.value_size) == (kdt.itemsize, vdt.itemsize), name
        assert m.percpu == percpu, name
        assert name.startswith("acct_")
