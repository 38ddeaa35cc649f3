"""The numpy copy of the contract (acctd/kernel/abi.py) is checked, not trusted:
abi.STRUCTS describes exactly the structs of bpf/acct_abi.h, and every field
of every one has the name, offset and size bcc compiled. The compiled side
is Build.table_layouts: the key and value structs of the acct_* maps and
the structs nested in them (acct_fw_atom, in acct_fw_set, is in no map of
its own). Enums and #defines: tests/unit/test_abi_header.py, without root."""

import re

import pytest

from acctd.kernel import abi

pytestmark = [pytest.mark.root, pytest.mark.kernel]


def header_structs() -> set[str]:
    """The structs acct_abi.h defines."""
    text = re.sub(r"/\*.*?\*/|//[^\n]*", "", abi.HEADER.read_text(), flags=re.S)
    return set(re.findall(r"\bstruct\s+(\w+)\s*\{", text))


def test_every_struct_of_the_contract_is_described_and_compiled(datapath):
    compiled = datapath.layouts
    assert compiled, "the session build should have compiled the programs"
    structs = header_structs()
    assert len(structs) >= 14, structs  # the parser found the header's structs
    assert set(abi.STRUCTS) == structs
    # a struct no map reaches needs a map (acct_maps.h) or a place in one that does
    assert set(compiled) == structs


def layout_problems(name: str, dt, size: int, c_fields: dict) -> list[str]:
    """How dtype dt differs from the compiled struct: size, fields on either
    side with their offsets and sizes, and the types of nested structs."""
    problems = [] if dt.itemsize == size else [f"{name}: numpy {dt.itemsize} bytes, C {size}"]
    py = {f: (spec[1], spec[0].itemsize) for f, spec in dt.fields.items()}
    c = {f: (off, sz) for f, (off, sz, _) in c_fields.items()}
    problems += [f"{name}.{f}: (offset, size) C {c.get(f, 'missing')}, numpy {py.get(f, 'missing')}"
                 for f in sorted(c.keys() | py.keys()) if c.get(f) != py.get(f)]
    # a field of a struct type (or an array of them) has that struct's dtype
    for f, (_, _, elem) in c_fields.items():
        if f not in dt.fields:
            continue  # reported above
        base = dt.fields[f][0].base
        ok = base.fields is None if elem is None else (
            elem in abi.STRUCTS and base == abi.STRUCTS[elem])
        if not ok:
            problems.append(f"{name}.{f}: elements are {elem or 'scalars'} in C, {base} in numpy")
    return problems


@pytest.mark.parametrize("name", sorted(abi.STRUCTS))
def test_fields_match_the_compiled_struct(datapath, name):
    assert layout_problems(name, abi.STRUCTS[name], *datapath.layouts[name]) == []


def test_pinned_maps_match_abi(datapath):
    for name, (kdt, vdt, percpu) in abi.MAPS.items():
        m = datapath.maps[name]
        assert (m.info.key_size, m.info.value_size) == (kdt.itemsize, vdt.itemsize), name
        assert m.percpu == percpu, name
        assert name.startswith("acct_")
