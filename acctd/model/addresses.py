"""Addresses as the datapath stores them (16 bytes, network order, IPv4
mapped into ::ffff:0:0/96), their text forms, and longest-prefix matching of
many addresses at once. The one address codec of acctd: pure, numpy only."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import numpy as np

_V4_MAPPED = bytes(10) + b"\xff\xff"


def parse_addr(text: str) -> bytes:
    """An IPv4 or IPv6 address as the datapath stores it: 16 bytes, IPv4 mapped."""
    ip = ipaddress.ip_address(str(text).strip())
    if ip.version == 4:
        return _V4_MAPPED + ip.packed
    return ip.packed


def parse_prefix(text: str, strict: bool = True) -> tuple[bytes, int]:
    """"a.b.c.d/N", "a.b.c.d/255.255.255.0", "2001:db8::/32" -> (16-byte network, 128-bit length).

    IPv4 lengths are shifted by 96 so both families share one 128-bit space.
    NeTAMS's shortened "192.168.0/24" is accepted. With strict, host bits must be zero.
    """
    text = str(text).strip().replace(" ", "")
    if "/" not in text:
        raise ValueError(f"expected a prefix like 10.0.0.0/8 or 2001:db8::/32, got {text!r}")
    addr, _, plen = text.partition("/")
    if ":" not in addr and addr.count(".") < 3 and addr:
        # NeTAMS writes 192.168.0/24 for 192.168.0.0/24
        addr = ".".join((addr.split(".") + ["0", "0", "0"])[:4])
    net = ipaddress.ip_network(f"{addr}/{plen}", strict=strict)
    if net.version == 4:
        return _V4_MAPPED + net.network_address.packed, 96 + net.prefixlen
    return net.network_address.packed, net.prefixlen


def is_v4(addr: bytes) -> bool:
    """An IPv4 address (kept IPv4-mapped)."""
    return addr[:12] == _V4_MAPPED


def format_addr(addr: bytes | np.ndarray) -> str:
    """16 bytes (or a uint8 row of a map key) -> text; IPv4-mapped as IPv4."""
    addr = bytes(addr)
    if addr[:12] == _V4_MAPPED:
        return str(ipaddress.IPv4Address(addr[12:]))
    return str(ipaddress.IPv6Address(addr))


def format_prefix(net: bytes, plen: int) -> str:
    if net[:12] == _V4_MAPPED and plen >= 96:
        return f"{format_addr(net)}/{plen - 96}"
    return f"{format_addr(net)}/{plen}"


def format_addrs(raw: np.ndarray) -> np.ndarray:
    """format_addr of every row of an (n, 16) uint8 array, as a str array:
    IPv4-mapped ones are built column-wise (the common case, and cheap)."""
    raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1, 16)
    v4 = (raw[:, :12] == np.frombuffer(_V4_MAPPED, np.uint8)).all(axis=1)
    out = np.empty(len(raw), dtype=object)
    if v4.any():
        octets = raw[v4, 12:].astype(str)
        text = octets[:, 0]
        for j in (1, 2, 3):
            text = np.char.add(np.char.add(text, "."), octets[:, j])
        out[v4] = text
    for i in np.flatnonzero(~v4):
        out[i] = str(ipaddress.IPv6Address(raw[i].tobytes()))
    return out.astype(str)


def canonical(text: str) -> str:
    """An address's text as format_addr writes it ("::ffff:10.0.0.1" ->
    "10.0.0.1"); ValueError if it is none."""
    return format_addr(parse_addr(text))


def is_multicast(addr: bytes) -> bool:
    """IPv6 ff00::/8, or IPv4 224.0.0.0/4 (mapped)."""
    return addr[0] == 0xFF or (addr[:12] == _V4_MAPPED and addr[12] >> 4 == 0xE)


def split_addrs(addrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 16) uint8 network-order addresses -> (hi, lo) native uint64 halves."""
    a = np.ascontiguousarray(addrs, dtype=np.uint8).reshape(-1, 16)
    w = a.view(">u8")
    return w[:, 0].astype(np.uint64), w[:, 1].astype(np.uint64)


def _halves(addr: bytes) -> tuple[int, int]:
    return int.from_bytes(addr[:8], "big"), int.from_bytes(addr[8:], "big")


def _masks(plen: int) -> tuple[int, int]:
    full = (1 << 64) - 1
    if plen >= 64:
        return full, (full << (128 - plen)) & full if plen < 128 else full
    return (full << (64 - plen)) & full if plen > 0 else 0, 0


# An odd 64-bit constant: hi*K ^ lo folds a 128-bit key into one uint64 that
# np.searchsorted can use; candidates are verified on both halves afterwards.
_MIX = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93)


class PrefixTable:
    """Longest-prefix match of many addresses against a fixed set of prefixes.

    One sorted uint64 table per distinct prefix length; a lookup visits the
    lengths longest first and only for addresses still unresolved, so the cost
    is a few vector passes per distinct length, never a loop per address.
    """

    def __init__(self, prefixes: Iterable[tuple[bytes, int]], values: Iterable[int] | None = None):
        prefixes = list(prefixes)
        values = list(range(len(prefixes))) if values is None else list(values)
        by_len: dict[int, dict[tuple[int, int], int]] = {}
        for (net, plen), value in zip(prefixes, values):
            mh, ml = _masks(plen)
            hi, lo = _halves(net)
            # first definition wins: callers reject duplicates they care about
            by_len.setdefault(plen, {}).setdefault((hi & mh, lo & ml), value)
        self._levels = []
        for plen in sorted(by_len, reverse=True):
            entries = by_len[plen]
            hi = np.array([k[0] for k in entries], dtype=np.uint64)
            lo = np.array([k[1] for k in entries], dtype=np.uint64)
            val = np.array(list(entries.values()), dtype=np.int32)
            for mix in _MIX:
                h = hi * np.uint64(mix) ^ lo
                order = np.argsort(h, kind="stable")
                h = h[order]
                if len(h) < 2 or not np.any(h[1:] == h[:-1]):
                    break
            else:  # pragma: no cover - needs four simultaneous 64-bit collisions
                raise ValueError("prefix table: unresolvable key collision")
            mh, ml = _masks(plen)
            self._levels.append((plen, np.uint64(mh), np.uint64(ml), np.uint64(mix),
                                 h, hi[order], lo[order], val[order]))

    @property
    def lengths(self) -> list[int]:
        return [lvl[0] for lvl in self._levels]

    def lookup(self, hi: np.ndarray, lo: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Value of the longest matching prefix per address; -1 (or `out`'s value) where none."""
        res = np.full(len(hi), -1, dtype=np.int32) if out is None else out
        todo = np.flatnonzero(res < 0) if out is not None else None
        for _plen, mh, ml, mix, keys, khi, klo, kval in self._levels:
            if todo is None:
                qh, ql = hi & mh, lo & ml
            else:
                if len(todo) == 0:
                    break
                qh, ql = hi[todo] & mh, lo[todo] & ml
            h = qh * mix ^ ql
            pos = np.searchsorted(keys, h)
            pos[pos == len(keys)] = 0
            hit = (keys[pos] == h) & (khi[pos] == qh) & (klo[pos] == ql)
            if todo is None:
                res[hit] = kval[pos[hit]]
                todo = np.flatnonzero(~hit)
            else:
                res[todo[hit]] = kval[pos[hit]]
                todo = todo[~hit]
        return res

    def contains(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        return self.lookup(hi, lo) >= 0
