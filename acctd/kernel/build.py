"""Build the BPF programs with bcc: one amalgamated source, sizes as -D flags.

bcc rewrites map calls (`acct_addrs.lookup(...)`) only in its main file, so
the sources under bpf/ are joined into one text by expanding their local
`#include "..."` lines, each file once. `acctctl source` prints that text
and the flags, which is exactly what the kernel verified.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

from acctd.errors import AcctError
from acctd.kernel import abi
from acctd.kernel.abi import bpf_dir

ENTRY_SOURCES = ("acct_xdp.c", "acct_tc.c")

# Program name -> bcc program type name (resolved lazily: bcc not imported here).
PROGRAMS = {
    "acct_xdp": "XDP",
    "acct_tc_ingress": "SCHED_CLS",
    "acct_tc_egress": "SCHED_CLS",
    "acct_xdp_empty": "XDP",
}

# LRU maps start evicting before they are full (per-CPU free lists), so the
# flow table gets this much more room than the configured flow count.
FLOW_HEADROOM = 1.25

_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*$', re.M)


def amalgamate(names=ENTRY_SOURCES, src_dir: Path | None = None) -> str:
    src_dir = src_dir or bpf_dir()
    seen: set[str] = set()
    out: list[str] = []

    def add(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        text = (src_dir / name).read_text()
        pos = 0
        for m in _INCLUDE.finditer(text):
            out.append(text[pos:m.start()])
            add(m.group(1))
            pos = m.end()
        out.append(text[pos:])

    for n in names:
        add(n)
    return "".join(out)


# A struct as bcc compiled it: its size and, per field, its offset, its size
# and the struct its elements are (None for scalars and arrays of them).
Layout = tuple[int, dict[str, tuple[int, int, str | None]]]


@dataclass(frozen=True)
class Sizes:
    """Map sizes and the pin root: everything that becomes a -D flag."""
    flows: int = 65536          # flows expected between two drains
    addrs: int = 16384          # local (subscriber) addresses
    max_ifindex: int = 4096
    ifaces: int = 64
    classes: int = 16384        # unit prefixes and addresses (enforcement)
    rulesets: int = 1024        # distinct compiled fw-policy lists
    set_prefixes: int = 65536   # prefixes of fw-policy addr/file/units targets
    policers: int = 4096        # rate limits (one per unit or policy and direction)
    pin_root: str = abi.PIN_ROOT
    mock_clock: bool = False    # tests: rate limits read acct_meta.mock_ns

    @property
    def flow_entries(self) -> int:
        return int(math.ceil(self.flows * FLOW_HEADROOM))

    @property
    def pin_dir(self) -> str:
        return abi.pin_dir(self.pin_root)

    def cflags(self) -> list[str]:
        return [
            f"-DACCT_MAX_FLOWS={self.flow_entries}",
            f"-DACCT_MAX_ADDRS={self.addrs}",
            f"-DACCT_MAX_IFINDEX={self.max_ifindex}",
            f"-DACCT_MAX_IFACES={self.ifaces}",
            f"-DACCT_MAX_CLASSES={self.classes}",
            f"-DACCT_MAX_RULESETS={self.rulesets}",
            f"-DACCT_MAX_SET_PREFIXES={self.set_prefixes}",
            f"-DACCT_MAX_POLICERS={self.policers}",
            f'-DACCT_PIN_DIR="{self.pin_dir}"',
        ] + (["-DACCT_MOCK_CLOCK"] if self.mock_clock else [])


def build_id(source: str, cflags: list[str]) -> int:
    """Identifies a build: same sources and flags -> same programs."""
    h = hashlib.sha256(source.encode())
    for f in cflags:
        h.update(b"\0" + f.encode())
    return int.from_bytes(h.digest()[:8], "little")


class Build:
    """A compiled and loaded program set (holds bcc's BPF object)."""

    def __init__(self, sizes: Sizes, extra: dict[str, str] | None = None):
        """`extra`: more sources and their programs {"file.c": {name: type}}
        (benchmark entries); the daemon builds the plain set."""
        self.sizes = sizes
        self.programs = dict(PROGRAMS)
        for progs in (extra or {}).values():
            self.programs.update(progs)
        self.source = amalgamate(ENTRY_SOURCES + tuple(extra or ()))
        self.cflags = sizes.cflags()
        self.build_id = build_id(self.source, self.cflags)
        self._bpf = None
        self.prog_fds: dict[str, int] = {}

    def compile(self) -> "Build":
        try:
            from bcc import BPF  # only building needs bcc
        except ImportError as e:
            raise AcctError(
                "bcc is not importable: install Debian's python3-bpfcc and make the "
                "venv with --system-site-packages (sudo make setup does both)") from e
        from acctd.kernel.pins import ensure_pin_dir
        ensure_pin_dir(self.sizes.pin_dir)
        try:
            self._bpf = BPF(text=self.source.encode(), cflags=self.cflags)
        except Exception as e:  # bcc raises bare Exception; its details went to stderr
            raise AcctError(f"building the BPF programs failed: {explain_build_failure()}; "
                            "`acctctl source` shows the input") from e
        for name, ptype in self.programs.items():
            try:
                fn = self._bpf.load_func(name.encode(), getattr(BPF, ptype))
            except Exception as e:
                raise AcctError(f"the kernel refused program {name}: {e}") from e
            self.prog_fds[name] = fn.fd
        return self

    def table_layouts(self) -> dict[str, Layout]:
        """Every struct bcc compiled for the acct_* maps, the ones nested in
        them included, by name (tests/kernel/test_abi.py checks abi.STRUCTS
        against them)."""
        import ctypes
        out: dict[str, Layout] = {}

        def visit(ct) -> str | None:
            while isinstance(ct, type) and issubclass(ct, ctypes.Array):
                ct = ct._type_  # per-CPU leaves and array fields
            if not (isinstance(ct, type) and issubclass(ct, (ctypes.Structure, ctypes.Union))):
                return None
            if ct.__name__ not in out:
                fields: dict[str, tuple[int, int, str | None]] = {}
                out[ct.__name__] = (ctypes.sizeof(ct), fields)
                for fname, ftype, *_ in ct._fields_:
                    desc = getattr(ct, fname)
                    fields[fname] = (desc.offset, desc.size, visit(ftype))
            return ct.__name__

        for name in abi.MAPS:
            t = self._bpf.get_table(name.encode())
            visit(t.Key)
            visit(t.Leaf)
        return out

    def table(self, name: str):
        """A bcc table of this build (benchmarks and tests only)."""
        return self._bpf.get_table(name.encode())

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None


def explain_build_failure() -> str:
    """bcc only says "failed to compile": find the likely cause ourselves."""
    import os
    headers = f"/lib/modules/{os.uname().release}/build"
    if not os.path.exists(headers):
        return (f"no kernel headers at {headers} (`sudo make setup` installs "
                "linux-headers-amd64 and links them)")
    if not _has_bpf_caps():
        return "not allowed to create BPF maps: needs root, or CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON"
    return "the compiler or the kernel refused the program (see the messages above)"


def _has_bpf_caps() -> bool:
    """CAP_BPF (39) in the effective set, read from /proc (no libcap needed)."""
    try:
        with open("/proc/self/status") as f:
            eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        return True  # cannot tell: do not blame permissions
    return bool(eff & (1 << 39)) or bool(eff & (1 << 21))  # CAP_BPF or CAP_SYS_ADMIN
