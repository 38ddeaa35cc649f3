"""The prefix-to-AS table behind the `as` target: the operator's pfx2as file,
looked up for all of a drain's flows at once.

The file is CAIDA's routeviews-prefix2as text: "PREFIX LENGTH AS" per line,
whitespace-separated, IPv4 or IPv6; '#' starts a comment. A multi-origin
prefix ("38803_56203") or an AS set ("4739,4826") counts as its first AS:
a flow gets one origin AS per address. The file is read when the config is
loaded, so a reload picks up a new one.

A full table holds about a million IPv4 prefixes, nearly all /24 or
shorter: those go to one array indexed by the address's top 24 bits (64
MiB), so a drain's lookup is one gather per address; longer IPv4 prefixes
and IPv6 go to a PrefixTable, which wins where it matches (it is longer).
"""

from __future__ import annotations

import hashlib
import socket

import numpy as np

from acctd.model.addresses import PrefixTable, split_addrs

MAX_ASN = 2**32 - 1
UNKNOWN = 0  # AS 0 is reserved (RFC 7607): no route in the table
_DIRECT_BITS = 24
_V4_MAPPED_HI, _V4_MAPPED_LO = np.uint64(0), np.uint64(0xFFFF)


class AsTableError(ValueError):
    """A mistake in the pfx2as file, at its line."""

    def __init__(self, msg: str, path: str, line: int | None = None):
        self.path, self.line, self.reason = path, line, msg
        super().__init__(f"{path}:{line}: {msg}" if line else f"{path}: {msg}")


class AsTable:
    """Longest-prefix match of addresses to origin AS numbers.

    v4: (network as uint32, length 0..32) arrays; v6: [(16-byte net, length)];
    the AS numbers of each, in file order (the first of duplicates wins)."""

    def __init__(self, v4_nets=(), v4_lens=(), v4_asns=(), v6=(), v6_asns=(), path: str = ""):
        self.path = path
        self.digest = ""  # of the file it was read from: a reload's verdict compares it
        v4_nets = np.asarray(v4_nets, dtype=np.uint64)
        v4_lens = np.asarray(v4_lens, dtype=np.int64)
        self._asn = np.concatenate([[UNKNOWN], np.asarray(v4_asns, np.uint32),
                                    np.asarray(v6_asns, np.uint32)]).astype(np.uint32)
        rows = np.arange(1, len(v4_nets) + 1, dtype=np.uint32)
        short = v4_lens <= _DIRECT_BITS
        self._direct = _direct_table(v4_nets[short], v4_lens[short], rows[short])
        # the rest by row (int32 values: the row, not the AS, which may pass 2**31)
        v6_rows = range(len(v4_nets) + 1, len(self._asn))
        mapped = bytes(10) + b"\xff\xff"
        longer = [(mapped + int(n).to_bytes(4, "big"), 96 + int(p))
                  for n, p in zip(v4_nets[~short], v4_lens[~short])]
        self._rest = PrefixTable(longer + list(v6), [*rows[~short].tolist(), *v6_rows]) \
            if longer or v6 else None
        self.n = len(self._asn) - 1

    def lookup(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """The origin AS of each address (split_addrs halves); UNKNOWN where none."""
        hi, lo = np.asarray(hi, np.uint64), np.asarray(lo, np.uint64)
        row = np.zeros(len(hi), dtype=np.int64)
        if self._direct is not None:
            v4 = (hi == _V4_MAPPED_HI) & ((lo >> np.uint64(32)) == _V4_MAPPED_LO)
            top = (lo[v4] >> np.uint64(32 - _DIRECT_BITS)) & np.uint64((1 << _DIRECT_BITS) - 1)
            row[v4] = self._direct[top]
        if self._rest is not None:
            longer = self._rest.lookup(hi, lo)
            row = np.where(longer >= 0, longer, row)
        return self._asn[row]

    def lookup_addrs(self, addrs: np.ndarray) -> np.ndarray:
        """The same for (n, 16) uint8 addresses."""
        return self.lookup(*split_addrs(addrs))


def _direct_table(nets: np.ndarray, lens: np.ndarray, rows: np.ndarray) -> np.ndarray | None:
    """Row per /24 block: shorter prefixes written first, so longer ones
    overwrite them; of duplicates the first in the file."""
    if len(nets) == 0:
        return None
    table = np.zeros(1 << _DIRECT_BITS, dtype=np.uint32)
    blocks = (nets >> np.uint64(32 - _DIRECT_BITS)).astype(np.int64)
    for plen in np.unique(lens):
        sel = np.flatnonzero(lens == plen)
        span = 1 << (_DIRECT_BITS - int(plen))
        start, first = np.unique(blocks[sel], return_index=True)
        row = rows[sel][first]
        if span <= 256:   # /16 and longer: many prefixes, short runs
            table[(start[:, None] + np.arange(span)).ravel()] = np.repeat(row, span)
        else:             # few prefixes, long runs
            for s, r in zip(start.tolist(), row.tolist()):
                table[s:s + span] = r
    return table


def _asn(text: str) -> int:
    first = text.replace(",", "_").split("_", 1)[0]
    if not first.isdigit() or not 0 < int(first) <= MAX_ASN:
        raise ValueError(f"expected an AS number 1..{MAX_ASN}, got {text!r}")
    return int(first)


def _prefix(addr: str, plen: str) -> tuple[int, bytes | None, int]:
    """(IPv4 network as int, None, length) or (0, IPv6 network, length); host bits cleared."""
    bad = ValueError(f"expected an IPv4 or IPv6 prefix and its length, got {addr!r} {plen!r}")
    if not plen.isdigit():
        raise ValueError(f"expected a prefix length, got {plen!r}")
    n = int(plen)
    try:
        if ":" not in addr:
            if n > 32:
                raise bad
            v = int.from_bytes(socket.inet_pton(socket.AF_INET, addr), "big")
            return v >> (32 - n) << (32 - n) if n else 0, None, n
        if n > 128:
            raise bad
        v = int.from_bytes(socket.inet_pton(socket.AF_INET6, addr), "big")
        return 0, (v >> (128 - n) << (128 - n) if n else 0).to_bytes(16, "big"), n
    except OSError:
        raise bad from None


def read_pfx2as(path: str) -> AsTable:
    """The table of a pfx2as file; AsTableError names the file and line."""
    v4_nets, v4_lens, v4_asns, v6, v6_asns = [], [], [], [], []
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise AsTableError(f"cannot read the AS table: {e.strerror}", path) from None
    for lineno, line in enumerate(data.decode("utf-8", "replace").split("\n"), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 3:
            raise AsTableError(f"expected \"PREFIX LENGTH AS\" (3 fields), got "
                               f"{len(words)}", path, lineno)
        try:
            net, net6, plen = _prefix(words[0], words[1])
            asn = _asn(words[2])
        except ValueError as e:
            raise AsTableError(str(e), path, lineno) from None
        if net6 is None:
            v4_nets.append(net)
            v4_lens.append(plen)
            v4_asns.append(asn)
        else:
            v6.append((net6, plen))
            v6_asns.append(asn)
    table = AsTable(v4_nets, v4_lens, v4_asns, v6, v6_asns, path)
    table.digest = hashlib.sha256(data).hexdigest()
    return table
