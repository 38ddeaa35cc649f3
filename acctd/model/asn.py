"""The prefix-to-AS table behind the `as` target: the operator's pfx2as file,
looked up for all of a drain's flows at once.

The file is CAIDA's routeviews-prefix2as text: "PREFIX LENGTH AS" per line,
whitespace-separated, IPv4 or IPv6; '#' starts a comment. A multi-origin
prefix ("38803_56203") or an AS set ("4739,4826") counts as its first AS:
a flow gets one origin AS per address. The file is read when the config is
loaded, so a reload picks up a new one.
"""

from __future__ import annotations

import numpy as np

from acctd.model.addresses import PrefixTable, parse_prefix, split_addrs

MAX_ASN = 2**32 - 1
UNKNOWN = 0  # AS 0 is reserved (RFC 7607): no route in the table


class AsTableError(ValueError):
    """A mistake in the pfx2as file, at its line."""

    def __init__(self, msg: str, path: str, line: int | None = None):
        self.path, self.line, self.reason = path, line, msg
        super().__init__(f"{path}:{line}: {msg}" if line else f"{path}: {msg}")


class AsTable:
    """Longest-prefix match of addresses to origin AS numbers."""

    def __init__(self, prefixes: list[tuple[bytes, int]], asns: list[int], path: str = ""):
        self.path = path
        self._asn = np.array([UNKNOWN, *asns], dtype=np.uint32)  # row 0: no match
        # PrefixTable keeps int32 values: store the row, not the AS (ASNs reach 2**32-1)
        self._table = PrefixTable(prefixes, range(1, len(asns) + 1))
        self.n = len(asns)

    def lookup(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """The origin AS of each address (split_addrs halves); UNKNOWN where none."""
        return self._asn[np.maximum(self._table.lookup(hi, lo), 0)]

    def lookup_addrs(self, addrs: np.ndarray) -> np.ndarray:
        """The same for (n, 16) uint8 addresses."""
        return self.lookup(*split_addrs(addrs))


def _asn(text: str) -> int:
    first = text.replace(",", "_").split("_", 1)[0]
    if not first.isdigit() or not 0 < int(first) <= MAX_ASN:
        raise ValueError(f"expected an AS number 1..{MAX_ASN}, got {text!r}")
    return int(first)


def read_pfx2as(path: str) -> AsTable:
    """The table of a pfx2as file; AsTableError names the file and line."""
    prefixes, asns = [], []
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except OSError as e:
        raise AsTableError(f"cannot read the AS table: {e.strerror}", path) from None
    with f:
        for lineno, line in enumerate(f, 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if len(words) != 3:
                raise AsTableError(f"expected \"PREFIX LENGTH AS\" (3 fields), got "
                                   f"{len(words)}", path, lineno)
            try:
                if not words[1].isdigit():
                    raise ValueError(f"expected a prefix length, got {words[1]!r}")
                try:
                    prefixes.append(parse_prefix(f"{words[0]}/{words[1]}", strict=False))
                except ValueError:
                    raise ValueError(f"expected an IPv4 or IPv6 prefix and its length, got "
                                     f"{words[0]!r} {words[1]!r}") from None
                asns.append(_asn(words[2]))
            except ValueError as e:
                raise AsTableError(str(e), path, lineno) from None
    return AsTable(prefixes, asns, path)
