"""The constants of bpf/acct_abi.h and their copies in acctd/kernel/abi.py are
one contract: every enum member and #define of the header has its Python
counterpart with the same value, and abi.py has no constant the header lacks.
gcc reads the header (its preprocessor lists the defines, a compiled probe
prints every value), so this needs neither root nor bcc; the struct layouts
are compared with what bcc compiled in tests/kernel/test_abi.py.

The names follow one rule, so a constant added on one side only fails here:

  enum acct_<tag> { ACCT_<P>_<NAME> }  <->  abi.<Tag>.<NAME>
      Tag: the tag in CamelCase (acct_sys_policy -> SysPolicy); P: the prefix
      all members of the enum share (acct_health: ACCT_H_)
  its count ACCT_<P>_MAX               <->  abi.<TAG>_MAX  (ACCT_H_MAX -> HEALTH_MAX)
  #define ACCT_<NAME>                  <->  abi.<NAME>
  a flag family #define ACCT_<G>_<FLAG> <-> abi.<G>.<FLAG> when abi models the
      family as an enum.IntFlag class <G> in CamelCase (ACCT_ATOM_LAST -> Atom.LAST)

Also here, being another number of the kernel/user interface that needs no
kernel to check: the bpf(2) syscall number user space picks by architecture.
"""

from __future__ import annotations

import ast
import enum
import os
import re
import subprocess
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from acctd.errors import AcctError, BpfError
from acctd.kernel import abi, syscalls

CONSTS = abi.HEADER.with_name("acct_consts.h")

# C names that deliberately have no Python counterpart, and why.
C_ONLY = {"ACCT_ABI_H": "the include guard: defined, but not a value"}
# Python constants that deliberately have no C counterpart, and why.
PYTHON_ONLY: dict[str, str] = {}


@dataclass(frozen=True)
class Header:
    enums: dict[str, dict[str, int]]  # tag -> {member: value as the __u32 fields carry it}
    defines: dict[str, int | None]    # name -> value; None: the macro is not a value
    structs: frozenset[str]


def _run(*args: str, stdin: str | None = None) -> str:
    try:
        return subprocess.run(args, input=stdin, capture_output=True, text=True,
                              check=True).stdout
    except FileNotFoundError:
        pytest.fail(f"{args[0]} not found: checking the ABI header needs gcc "
                    "(sudo make setup installs it)")
    except subprocess.CalledProcessError as e:
        pytest.fail(f"{' '.join(args)} failed:\n{e.stderr}")


def _macros(path: str) -> dict[str, tuple[str | None, str]]:
    """name -> (parameter list of a function-like macro or None, body)."""
    out = {}
    for line in _run("gcc", "-E", "-dM", "-x", "c", path).splitlines():
        m = re.fullmatch(r"#define (\w+)(\([^)]*\))? ?(.*)", line)
        out[m.group(1)] = (m.group(2), m.group(3))
    return out


def read_header(path: Path, workdir: Path) -> Header:
    """What the header defines, with every value as gcc computes it."""
    builtin = _macros(os.devnull)
    macros = {n: v for n, v in _macros(str(path)).items() if n not in builtin}
    text = _run("gcc", "-E", "-P", "-x", "c", str(path))  # comments gone, macros expanded
    enums = {}
    for m in re.finditer(r"\benum\s*(\w*)\s*\{([^}]*)\}", text):
        enums[m.group(1)] = [re.match(r"\s*(\w+)", item).group(1)
                             for item in m.group(2).split(",") if item.strip()]
    structs = frozenset(re.findall(r"\bstruct\s+(\w+)\s*\{", text))

    valued = [n for n, (params, body) in macros.items() if params is None and body.strip()]
    names = [n for members in enums.values() for n in members] + valued
    probe = workdir / "abi_probe.c"
    probe.write_text(
        "#include <stdio.h>\n#include <linux/types.h>\n"
        f'#include "{path}"\n'
        "int main(void)\n{\n"
        + "".join(f'\tprintf("%s %lld\\n", "{n}", (long long)({n}));\n' for n in names)
        + "\treturn 0;\n}\n")
    exe = workdir / "abi_probe"
    _run("gcc", "-o", str(exe), str(probe))
    values = {n: int(v) for n, v in (line.split() for line in _run(str(exe)).splitlines())}
    return Header(
        # C enum constants are ints (1 << 31 is INT_MIN); the ABI carries them in __u32 fields
        enums={tag: {n: values[n] % 2**32 for n in members} for tag, members in enums.items()},
        defines={n: values.get(n) for n in macros},
        structs=structs)


@pytest.fixture(scope="module")
def header(tmp_path_factory) -> Header:
    return read_header(abi.HEADER, tmp_path_factory.mktemp("abi"))


# -- the naming rule ------------------------------------------------------------


def camel(snake: str) -> str:
    return "".join(w.capitalize() for w in snake.split("_"))


def shared_prefix(names: list[str]) -> str:
    """The leading _-separated words all names share, leaving each at least one."""
    words = [n.split("_") for n in names]
    k = 0
    while all(len(w) > k + 1 for w in words) and len({w[k] for w in words}) == 1:
        k += 1
    return "".join(w + "_" for w in words[0][:k])


def python_names(h: Header, module: types.ModuleType,
                 c_only=C_ONLY) -> tuple[dict[str, str], list[str]]:
    """C name -> the name of its Python counterpart in module, by the rule;
    and the C names the rule cannot place."""
    names, problems = {}, []
    for tag, members in h.enums.items():
        if not tag.startswith("acct_"):
            problems.append(f"enum {tag or '(anonymous)'}: not named acct_*")
            continue
        prefix = shared_prefix(list(members))
        for c in members:
            short = c.removeprefix(prefix)
            names[c] = (f"{tag.removeprefix('acct_').upper()}_MAX" if short == "MAX"
                        else f"{camel(tag.removeprefix('acct_'))}.{short}")
    for c in h.defines:
        if c in c_only:
            continue
        if not c.startswith("ACCT_"):
            problems.append(f"#define {c}: not named ACCT_*")
            continue
        rest = c.removeprefix("ACCT_")
        group, _, flag = rest.partition("_")
        family = getattr(module, camel(group.lower()), None)
        is_flags = isinstance(family, type) and issubclass(family, enum.IntFlag)
        names[c] = f"{family.__name__}.{flag}" if flag and is_flags else rest
    return names, problems


def python_constants(module: types.ModuleType) -> dict[str, int]:
    """Every constant module defines: its UPPER_CASE ints, and the members of
    its enum classes, by (dotted) name."""
    out = {}
    for name, v in vars(module).items():
        if name.startswith("_"):
            continue
        if isinstance(v, type) and issubclass(v, enum.Enum) and v.__module__ == module.__name__:
            out.update({f"{name}.{m}": member.value for m, member in v.__members__.items()})
        elif isinstance(v, int) and not isinstance(v, bool) and name.isupper():
            out[name] = v
    return out


def mismatches(h: Header, module: types.ModuleType, c_only=C_ONLY,
               python_only=PYTHON_ONLY) -> list[str]:
    """Everything that breaks the contract, from both sides."""
    names, problems = python_names(h, module, c_only)
    c_values = {n: v for members in h.enums.values() for n, v in members.items()}
    c_values.update(h.defines)
    have = python_constants(module)
    seen: dict[str, str] = {}
    for c, py in names.items():
        if py in seen:
            problems.append(f"{seen[py]} and {c} both map to abi.{py}")
        seen[py] = c
        if c_values[c] is None:
            problems.append(f"#define {c}: not a value; list it in C_ONLY with a reason")
        elif py not in have:
            problems.append(f"{c} = {c_values[c]}: abi.{py} missing")
        elif have[py] != c_values[c]:
            problems.append(f"{c} = {c_values[c]} but abi.{py} = {have[py]}")
    for py, v in have.items():
        if py not in seen and py not in python_only:
            problems.append(f"abi.{py} = {v}: no C counterpart in the header")
    problems += [f"C_ONLY lists {c}, which the header does not define"
                 for c in c_only if c not in h.defines]
    problems += [f"PYTHON_ONLY lists abi.{py}, which does not exist"
                 for py in python_only if py not in have]
    return sorted(problems)


# -- the contract ---------------------------------------------------------------


def test_gcc_sees_the_whole_header(header):
    assert {"acct_dir", "acct_role", "acct_verdict", "acct_drop", "acct_sys_policy", "acct_fw",
            "acct_health"} <= set(header.enums)
    assert header.enums["acct_sys_policy"]["ACCT_SYS_ALLOW"] == 1 << 31
    assert header.defines["ACCT_PORT_SLOTS"] == 131072 + 256
    assert {"ACCT_ABI_VERSION", "ACCT_SYS_DENY_MASK", "ACCT_IF_EGRESS_FIRST", "ACCT_CLASS_UNIT",
            "ACCT_CLASS_PORTAL", "ACCT_PORTAL_PORT",
            "ACCT_FW_ATOMS", "ACCT_ATOM_LAST", "ACCT_POLICER_SHIFT", "ACCT_VLAN_SLOTS",
            "ACCT_PORT_TCP_BASE"} <= set(header.defines)


@pytest.mark.parametrize("c, py", [
    ("ACCT_DROP_FW", "Drop.FW"),
    ("ACCT_SYS_ALLOW", "SysPolicy.ALLOW"),
    ("ACCT_H_NON_IP", "Health.NON_IP"),
    ("ACCT_H_MAX", "HEALTH_MAX"),
    ("ACCT_DIR_MAX", "DIR_MAX"),
    ("ACCT_ATOM_ADDR_ANY_SIDE", "Atom.ADDR_ANY_SIDE"),
    ("ACCT_ATOM_DENY", "Atom.DENY"),
    ("ACCT_FW_ATOMS", "FW_ATOMS"),  # abi.Fw is an IntEnum, not a flag family
    ("ACCT_SYS_DENY_MASK", "SYS_DENY_MASK"),
    ("ACCT_ABI_VERSION", "ABI_VERSION"),
])
def test_the_naming_rule(header, c, py):
    assert python_names(header, abi)[0][c] == py


def test_header_and_abi_py_define_the_same_constants(header):
    assert mismatches(header, abi) == []


def test_every_struct_of_the_header_has_a_dtype(header):
    assert set(abi.STRUCTS) == header.structs


def test_the_check_fails_on_either_side(tmp_path):
    h = tmp_path / "h.h"
    h.write_text("#ifndef H_H\n#define H_H\n"
                 "enum acct_dir { ACCT_DIR_IN = 0, ACCT_DIR_OUT = 1, ACCT_DIR_MAX = 2 };\n"
                 "enum acct_new { ACCT_NEW_A = 1, ACCT_NEW_B = 2 };\n"
                 "#define ACCT_ATOM_LAST 1\n#define ACCT_ATOM_TOS 8\n#define ACCT_LIMIT 7\n"
                 "#define ACCT_PAIR(a, b) ((a) + (b))\n#endif\n")
    fake = types.ModuleType("fake")
    fake.Dir = enum.IntEnum("Dir", {"IN": 0, "OUT": 2}, module="fake")
    fake.Atom = enum.IntFlag("Atom", {"LAST": 1, "PORTS": 4}, module="fake")
    fake.DIR_MAX, fake.EXTRA = 2, 3
    assert mismatches(read_header(h, tmp_path), fake, c_only={"H_H": "guard", "STALE": "gone"},
                      python_only={}) == [
        "#define ACCT_PAIR: not a value; list it in C_ONLY with a reason",
        "ACCT_ATOM_TOS = 8: abi.Atom.TOS missing",
        "ACCT_DIR_OUT = 1 but abi.Dir.OUT = 2",
        "ACCT_LIMIT = 7: abi.LIMIT missing",
        "ACCT_NEW_A = 1: abi.New.A missing",
        "ACCT_NEW_B = 2: abi.New.B missing",
        "C_ONLY lists STALE, which the header does not define",
        "abi.Atom.PORTS = 4: no C counterpart in the header",
        "abi.EXTRA = 3: no C counterpart in the header",
    ]


def test_the_abi_version_is_written_in_the_header_only(header, tmp_path):
    assert abi.ABI_VERSION == header.defines["ACCT_ABI_VERSION"]
    assert not re.search(r"^ABI_VERSION\s*=\s*\d", Path(abi.__file__).read_text(), re.M)
    h = tmp_path / "acct_abi.h"
    h.write_text("/* ACCT_ABI_VERSION 1 */\n#define ACCT_ABI_VERSION 7\n")
    assert abi.read_abi_version(h) == 7
    h.write_text("#define ACCT_ABI_VERSION_X 7\n")
    with pytest.raises(AcctError, match="expected one"):
        abi.read_abi_version(h)


def test_the_default_pin_dir_follows_the_abi_version():
    """acct_consts.h derives its ACCT_PIN_DIR from ACCT_ABI_VERSION, as pin_dir() does."""
    src = f'#include "{abi.HEADER}"\n#include "{CONSTS}"\nACCT_PIN_DIR\n'
    out = _run("gcc", "-E", "-P", "-x", "c", "-", stdin=src)
    assert ast.literal_eval(out.strip().splitlines()[-1]) == abi.pin_dir()
    assert "ACCT_ABI_VERSION" in _macros(str(CONSTS))["ACCT_PIN_DIR"][1]


# -- the bpf(2) number ----------------------------------------------------------


@pytest.mark.parametrize("machine, bits, nr", [
    ("x86_64", 64, 321), ("i686", 32, 357), ("i386", 32, 357),
    ("aarch64", 64, 280), ("armv7l", 32, 386), ("armv6l", 32, 386),
    ("riscv64", 64, 280), ("loongarch64", 64, 280),
    ("ppc64le", 64, 361), ("ppc64", 64, 361), ("s390x", 64, 351),
    # a 32-bit interpreter on a 64-bit kernel uses the kernel's 32-bit table
    ("x86_64", 32, 357), ("aarch64", 32, 386), ("s390x", 32, 351),
])
def test_the_bpf_syscall_number_follows_the_architecture(machine, bits, nr):
    assert syscalls.bpf_syscall_nr(machine, bits) == nr


def test_an_unknown_architecture_is_named_in_the_error():
    with pytest.raises(BpfError, match="'mips64'.*known: aarch64"):
        syscalls.bpf_syscall_nr("mips64", 64)


def test_this_machine_calls_bpf_by_its_c_librarys_number():
    """The number chosen here is the one this machine's <sys/syscall.h> gives."""
    out = _run("gcc", "-E", "-dM", "-x", "c", "-", stdin="#include <sys/syscall.h>\n")
    nr = re.search(r"^#define __NR_bpf (\d+)$", out, re.M)
    assert nr, "<sys/syscall.h> has no __NR_bpf"
    assert syscalls.bpf_syscall_nr() == int(nr.group(1))
