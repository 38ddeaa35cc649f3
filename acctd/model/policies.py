"""Policies (NeTAMS targets) compiled to numpy predicates, and per-unit accounting.

A policy's target is a conjunction of terms (proto, port, addr, time, ...);
each term is a vectorised mask over the drained flow arrays. `account()` is
the hot path: it turns one drain's flows into packets and bytes for every
(unit, acct-policy entry, direction), groups included, each byte once.

Granularity of `time` and `day`: they are evaluated once per drain against
the local datetime the caller passes (`now`), so a whole drain interval
(lookup-delay seconds) lands on one side of a time boundary. NeTAMS checked
per packet; pass the interval's midpoint to split the error evenly.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import socket
from collections.abc import Mapping, Sequence

import numpy as np

from acctd.kernel import abi
from acctd.model import sources
from acctd.model.asn import AsTable
from acctd.model.addresses import PrefixTable, parse_addr, parse_prefix, split_addrs
from acctd.model.units import (ModelError, UnitSet, find_by_name_or_oid, make_oid, normalize_oid,
                               printable_name)

KEYWORDS = ("proto", "tos", "port", "ports", "as", "vlan", "ds", "units", "file", "addr",
            "ifindex", "ingress", "egress", "policy-or", "policy-and", "time", "day",
            "layer7-detect")

# Names NeTAMS users write; anything else falls back to /etc/protocols.
# "ip" is NeTAMS's "any IP traffic" (protocol 0 in /etc/protocols is a pseudo-entry).
PROTOCOLS = {"icmp": 1, "igmp": 2, "ipip": 4, "ipencap": 4, "tcp": 6, "egp": 8, "udp": 17,
             "ipv6": 41, "gre": 47, "esp": 50, "ah": 51, "icmp6": 58, "ipv6-icmp": 58,
             "ospf": 89, "pim": 103, "vrrp": 112, "l2tp": 115, "sctp": 132}
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_PORT_ITEMS = 10  # the reference's limit on port (and as) lists
MAX_LIST = 64  # acct-policy entries per unit: one bit each in the hot path
_NOT_YET = {
    "ingress": "target 'ingress' describes NetFlow v9 collection, not supported",
    "egress": "target 'egress' describes NetFlow v9 collection, not supported",
    "layer7-detect": "target 'layer7-detect' needs payload inspection, not supported",
}


def _dashes(s: str) -> str:
    # the reference's typography turns '-' into en/em dashes
    return s.replace("\u2013", "-").replace("\u2014", "-")


# --- target terms ----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Proto:
    numbers: frozenset[int] | None  # None: any IP ("proto ip")


@dataclasses.dataclass(frozen=True)
class Tos:
    values: frozenset[int]


@dataclasses.dataclass(frozen=True)
class Ports:
    items: tuple[tuple[str, int, int], ...]  # (s|d|b, low, high), inclusive


@dataclasses.dataclass(frozen=True)
class Vlan:
    ids: frozenset[int]


@dataclasses.dataclass(frozen=True)
class Ifindex:
    """NetFlow's input (s) and output (d) interface. A flow here is seen at a
    LAN hook: going out it arrived there (input), coming in it left there."""
    items: tuple[tuple[str, int, int], ...]  # (s|d|b, low, high), inclusive


@dataclasses.dataclass(frozen=True)
class Ds:
    """The data source a flow came from (NeTAMS `ds N1 N2 ...`): 0 the
    kernel, N a [[collector]] id (acctd/model/sources.py)."""
    ids: frozenset[int]


@dataclasses.dataclass(frozen=True)
class As:
    """The origin AS of the source (s), destination (d) or either (b) address,
    from [processor] as-table."""
    items: tuple[tuple[str, int, int], ...]  # (s|d|b, low, high), inclusive


@dataclasses.dataclass(frozen=True, eq=False)
class Addr:
    """Either side of the flow inside one of the prefixes."""
    text: tuple[str, ...]
    table: PrefixTable


@dataclasses.dataclass(frozen=True, eq=False)
class File:
    """The remote side (the one that is not the unit) inside the prefix file."""
    path: str
    table: PrefixTable


@dataclasses.dataclass(frozen=True)
class Units:
    """The remote side lies inside one of these units (a group: any member)."""
    keys: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class PolicyRefs:
    op: str  # "or" | "and"
    refs: tuple[tuple[str, bool], ...]  # (name or oid, inverted)


@dataclasses.dataclass(frozen=True)
class Time:
    start: int  # minutes after midnight, inclusive
    end: int    # exclusive; end < start wraps past midnight


@dataclasses.dataclass(frozen=True)
class Day:
    days: frozenset[int]  # Monday = 0


def _in_set(arr: np.ndarray, values) -> np.ndarray:
    """arr in values: a table lookup for 8/16-bit columns, cheaper than np.isin."""
    values = list(values)
    if arr.dtype.itemsize <= 2 and arr.dtype.kind == "u":
        lut = np.zeros(1 << (8 * arr.dtype.itemsize), dtype=bool)
        lut[values] = True
        return lut[arr]
    if len(values) <= 4:
        return np.logical_or.reduce([arr == v for v in values])
    return np.isin(arr, values)


def _sided_hit(items, src: np.ndarray, dst: np.ndarray, n: int) -> np.ndarray:
    """Flows whose src (s), dst (d) or either (b) value is in one of the ranges."""
    hit = np.zeros(n, dtype=bool)
    for side, lo, hi in items:
        for col, s in ((src, "s"), (dst, "d")):
            if side in (s, "b"):
                hit |= (col >= lo) & (col <= hi) if lo != hi else col == lo
    return hit


def _num(tok: str, lo: int, hi: int, what: str) -> int:
    if not tok.isdigit() or not lo <= int(tok) <= hi:
        raise ValueError(f"expected {what} ({lo}..{hi}), got {tok!r}")
    return int(tok)


def _proto(tok: str) -> int | None:
    t = tok.lower()
    if t == "ip":
        return None
    if t.isdigit():
        return _num(t, 0, 255, "a protocol number")
    if t in PROTOCOLS:
        return PROTOCOLS[t]
    try:
        return socket.getprotobyname(t)
    except OSError:
        raise ValueError(f"expected a protocol name or number, got {tok!r}") from None


_SIDED = re.compile(r"^([sdb]?)(\d+)(?:[:-](\d+))?$")


def _sided(kw: str, args: list[str], least: int, most: int,
           example: str) -> tuple[tuple[str, int, int], ...]:
    """The reference's "[s|d|b]num" lists (port, as, ifindex): (side, low, high)."""
    if not args:
        raise ValueError(f"{kw} needs at least one item, e.g. '{kw} {example}'")
    if len(args) > MAX_PORT_ITEMS:
        raise ValueError(f"{kw} takes at most {MAX_PORT_ITEMS} items, got {len(args)}")
    items = []
    for a in args:
        m = _SIDED.match(a.lower())
        if not m:
            article = "an" if kw[0] in "aeiou" else "a"
            raise ValueError(f"expected {article} {kw} item like {example}, got {a!r}")
        lo = int(m.group(2))
        hi = int(m.group(3)) if m.group(3) else lo
        if not least <= lo <= hi <= most:
            raise ValueError(f"expected {kw} numbers {least}..{most} with low <= high, "
                             f"got {a!r}")
        items.append((m.group(1) or "b", lo, hi))
    return tuple(items)


def _ports(args: list[str]) -> Ports:
    return Ports(_sided("port", args, 0, 65535, "80, s80:82, d1000-2000 or b53"))


_HM = re.compile(r"^(\d{1,2})(?::(\d{2}))?$")


def _minutes(tok: str) -> int:
    m = _HM.match(tok)
    if not m or int(m.group(1)) > 24 or int(m.group(2) or 0) > 59:
        raise ValueError(f"expected a time like 9 or 21:30, got {tok!r}")
    v = int(m.group(1)) * 60 + int(m.group(2) or 0)
    if v > 24 * 60:
        raise ValueError(f"expected a time up to 24:00, got {tok!r}")
    return v


def _time(args: list[str]) -> Time:
    spec = "".join(args)
    a, sep, b = spec.partition("-")
    if not sep:
        raise ValueError(f"expected a time range like 9-18 or 00:40-21:30, got {spec!r}")
    start, end = _minutes(a), _minutes(b)
    if start % 1440 == end % 1440:
        raise ValueError(f"time range {spec!r} is empty")
    return Time(start % 1440, end % 1440)


def _day(args: list[str]) -> Day:
    days: set[int] = set()
    for part in " ".join(args).replace(",", " ").split():
        a, sep, b = part.partition("-")
        try:
            i = DAYS.index(a[:3].lower()) if len(a) >= 3 else -1
            j = DAYS.index(b[:3].lower()) if sep else i
        except ValueError:
            i = j = -1
        if i < 0 or j < 0:
            raise ValueError(f"expected a day like Sun or a range like Mon-Fri, got {part!r}")
        k = i
        while True:  # ranges may wrap: Fri-Mon
            days.add(k)
            if k == j:
                break
            k = (k + 1) % 7
    if not days:
        raise ValueError("day needs a day or range, e.g. 'day Mon-Fri'")
    return Day(frozenset(days))


def read_prefix_file(path: str) -> list[tuple[bytes, int]]:
    """A NeTAMS prefix file: "A.B.C.D/N", "A.B.C.D /N", "A.B.C.D/MASK", "A.B.C.D /MASK".

    IPv6 prefixes and bare addresses are accepted too; '#' starts a comment.
    """
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            text = "".join(line.split())
            try:
                if "/" in text:
                    out.append(parse_prefix(text, strict=False))
                else:
                    out.append((parse_addr(text), 128))
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: expected A.B.C.D/N or A.B.C.D/MASK: {e}") \
                    from None
    return out


def _addr_table(args: list[str]) -> Addr:
    if not args:
        raise ValueError("addr needs at least one address or prefix")
    prefixes = []
    for a in args:
        try:
            prefixes.append(parse_prefix(a, strict=False) if "/" in a else (parse_addr(a), 128))
        except ValueError:
            raise ValueError(f"expected an address or prefix, got {a!r}") from None
    return Addr(tuple(args), PrefixTable(prefixes))


def _ints(args: list[str], lo: int, hi: int, what: str) -> frozenset[int]:
    if not args:
        raise ValueError(f"expected at least one {what}")
    return frozenset(_num(a, lo, hi, what) for a in args)


def tokenize_target(spec: str | Mapping) -> list[tuple[str, list[str]]]:
    """A target string ("proto tcp port s80:82 s8080") or TOML table -> [(keyword, args)]."""
    if isinstance(spec, Mapping):
        out = []
        for key, val in spec.items():
            vals = val if isinstance(val, list) else [val]
            args: list[str] = []
            for v in vals:
                if isinstance(v, bool) or not isinstance(v, (str, int)):
                    raise ValueError(f"target {key}: expected strings or integers, got {v!r}")
                args += _dashes(str(v)).split() if isinstance(v, str) else [str(v)]
            out.append((key, args))
        return out
    if not isinstance(spec, str):
        raise ValueError(f"expected a target string or table, got {type(spec).__name__}")
    out = []
    for tok in _dashes(spec).split():
        if tok.lower() in KEYWORDS:
            out.append((tok.lower(), []))
        elif not out:
            raise ValueError(f"target must start with a keyword ({', '.join(KEYWORDS[:6])}, ...),"
                             f" got {tok!r}")
        else:
            out[-1][1].append(tok)
    return out


def parse_target(spec: str | Mapping, base_dir: str = ".",
                 flow_fields: Sequence[str] = abi.FLOW_KEY.names,
                 as_table: AsTable | None = None) -> tuple:
    """Parse a target into terms; ValueError says what was expected.
    as_table: [processor] as-table, which an `as` target needs."""
    terms = []
    seen = set()
    for kw, args in tokenize_target(spec):
        kw = "port" if kw == "ports" else kw  # the reference's own sample writes "ports"
        if kw not in KEYWORDS:
            raise ValueError(f"unknown target {kw!r}; expected one of {', '.join(KEYWORDS)}")
        if kw in _NOT_YET:
            raise ValueError(_NOT_YET[kw])
        if kw in seen:
            raise ValueError(f"target {kw!r} given twice; list its values once")
        seen.add(kw)
        if kw == "proto":
            if not args:
                raise ValueError("proto needs a protocol name or number, e.g. 'proto tcp'")
            nums = [_proto(a) for a in args]
            terms.append(Proto(None if None in nums else frozenset(nums)))
        elif kw == "tos":
            if "tos" not in flow_fields:
                raise ValueError("target 'tos' needs the TOS byte in the flow key, which ABI "
                                 f"v{abi.ABI_VERSION} does not carry yet")
            terms.append(Tos(_ints(args, 0, 255, "a TOS value")))
        elif kw == "port":
            terms.append(_ports(args))
        elif kw == "vlan":
            terms.append(Vlan(_ints(args, 1, 4094, "a VLAN id")))
        elif kw == "ifindex":
            terms.append(Ifindex(_sided("ifindex", args, 1, 2**32 - 1, "2, s2 or d3:5")))
        elif kw == "ds":
            terms.append(Ds(_ints(args, 0, sources.MAX_SOURCE, "data-source number")))
        elif kw == "as":
            if as_table is None:
                raise ValueError("target 'as' needs a prefix-to-AS table: set [processor] "
                                 "as-table to a pfx2as file")
            terms.append(As(_sided("as", args, 0, 2**32 - 1, "s65000, d3356 or 64512:65534")))
        elif kw == "addr":
            terms.append(_addr_table(args))
        elif kw == "file":
            if len(args) != 1:
                raise ValueError("file needs exactly one path")
            path = os.path.join(base_dir, args[0])
            try:
                terms.append(File(path, PrefixTable(read_prefix_file(path))))
            except OSError as e:
                raise ValueError(f"cannot read prefix file {path}: {e.strerror}") from None
        elif kw == "units":
            keys = [a for a in args if a.lower() not in ("oid", "name")]
            if not keys:
                raise ValueError("units needs a unit oid, e.g. 'units oid 021949'")
            terms.append(Units(tuple(keys)))
        elif kw in ("policy-or", "policy-and"):
            if not args:
                raise ValueError(f"{kw} needs policy names or oids")
            refs = tuple((a.lstrip("!"), a.startswith("!")) for a in args)
            terms.append(PolicyRefs(kw[7:], refs))
        elif kw == "time":
            terms.append(_time(args))
        elif kw == "day":
            terms.append(_day(args))
    if not terms:
        raise ValueError("empty target; e.g. 'proto ip' counts all IP traffic")
    return tuple(terms)


# --- policies --------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PolicySpec:
    name: str
    target: str | Mapping
    oid: str | None = None
    bw: tuple[int | None, int | None] | None = None  # as a fw-policy: rate limit in/out
    hidden: bool = False  # left out of subscribers' statistics (NeTAMS: of the HTML pages)


@dataclasses.dataclass(frozen=True)
class Policy:
    name: str
    oid: str
    terms: tuple
    bw: tuple[int | None, int | None] | None = None
    target: str | Mapping = ""   # as written (`acctctl policies` shows it)
    hidden: bool = False


class FlowView:
    """Columns of one drain's flows, with derived columns computed once and cached.

    `flows` is an array with abi.FLOW_KEY fields, or any mapping of those
    names to equal-length arrays (saddr/daddr as (n, 16) uint8).
    """

    def __init__(self, flows):
        self._flows = flows
        self._cache: dict[str, np.ndarray] = {}
        self.n = len(flows["proto"])

    def __getitem__(self, name: str) -> np.ndarray:
        v = self._cache.get(name)
        if v is None:
            v = self._cache[name] = self._derive(name)
        return v

    def _derive(self, name: str) -> np.ndarray:
        f = self._flows
        if name in ("s_hi", "s_lo", "d_hi", "d_lo"):
            hi, lo = split_addrs(f["saddr" if name[0] == "s" else "daddr"])
            self._cache[name[0] + "_hi"], self._cache[name[0] + "_lo"] = hi, lo
            return self._cache[name]
        if name == "out":
            return np.asarray(f["dir"]) == abi.Dir.OUT
        if name in ("r_hi", "r_lo", "l_hi", "l_lo"):
            # dir is relative to the local address: out means saddr is local
            half = name[2:]
            out = self["out"]
            remote_src = ~out if name[0] == "r" else out
            return np.where(remote_src, self["s_" + half], self["d_" + half])
        return np.ascontiguousarray(f[name])

    def derived(self, name: str, make) -> np.ndarray:
        """A column that needs more than the flows (the AS of each address), made once."""
        v = self._cache.get(name)
        if v is None:
            v = self._cache[name] = make()
        return v


class PolicySet:
    """Compiled policies. `mask(i, view, now, units)` gives policy i's match per flow."""

    def __init__(self, specs: Sequence[PolicySpec], base_dir: str = ".",
                 reserved_oids: Sequence[str] = (),
                 flow_fields: Sequence[str] = abi.FLOW_KEY.names,
                 as_table: AsTable | None = None):
        self.as_table = as_table
        self.index: dict[str, int] = {}
        policies = []
        taken = set(reserved_oids)
        oids: dict[str, int] = {}
        for i, s in enumerate(specs):
            if not printable_name(s.name):
                raise ModelError("policy name must be non-empty, without spaces or control "
                                 f"characters, got {s.name!r}", "policy", i, "name")
            if s.name in self.index:
                raise ModelError(f"policy name {s.name!r} is already used", "policy", i, "name")
            self.index[s.name] = i
            try:
                terms = parse_target(s.target, base_dir, flow_fields, as_table)
            except ValueError as e:
                raise ModelError(str(e), "policy", i, "target") from None
            oid = None
            if s.oid is not None:
                try:
                    oid = normalize_oid(s.oid)
                except ValueError as e:
                    raise ModelError(str(e), "policy", i, "oid") from None
                if oid in oids or oid in taken:
                    raise ModelError(f"oid {oid} is already used", "policy", i, "oid")
                oids[oid] = i
            policies.append(Policy(s.name, oid, terms, s.bw, s.target, s.hidden))
        taken |= set(oids)
        for i, p in enumerate(policies):
            if p.oid is None:
                salt = 0
                while (oid := make_oid("policy", p.name, salt)) in taken:
                    salt += 1
                taken.add(oid)
                policies[i] = dataclasses.replace(p, oid=oid)
        self.policies = tuple(policies)
        self.by_oid = {p.oid: i for i, p in enumerate(self.policies)}
        self._check_refs()

    def __len__(self) -> int:
        return len(self.policies)

    def __iter__(self):
        return iter(self.policies)

    def find(self, key: str) -> int:
        return find_by_name_or_oid(self.index, self.by_oid, key, "policy")

    def _check_refs(self) -> None:
        deps: list[list[int]] = []
        for i, p in enumerate(self.policies):
            d = []
            for t in p.terms:
                if isinstance(t, PolicyRefs):
                    for ref, _inv in t.refs:
                        try:
                            d.append(self.find(ref))
                        except KeyError:
                            raise ModelError(f"policy-{t.op}: unknown policy {ref!r}", "policy",
                                             i, "target") from None
            deps.append(d)
        state = [0] * len(deps)

        def visit(i: int, path: list[int]) -> None:
            if state[i] == 1:
                cyc = path[path.index(i):] + [i]
                raise ModelError("policy-or/policy-and refer in a cycle: "
                                 + " -> ".join(self.policies[j].name for j in cyc),
                                 "policy", i, "target")
            if state[i] == 0:
                state[i] = 1
                for j in deps[i]:
                    visit(j, path + [i])
                state[i] = 2

        for i in range(len(deps)):
            visit(i, [])

    def check_units(self, units: UnitSet) -> None:
        """`units oid X` targets must name existing units."""
        for i, p in enumerate(self.policies):
            for t in p.terms:
                if isinstance(t, Units):
                    for k in t.keys:
                        try:
                            units.find(k)
                        except KeyError as e:
                            raise ModelError(f"target units: {e.args[0]}", "policy", i,
                                             "target") from None

    def masks(self, which: Sequence[int], view: FlowView, now: dt.datetime,
              units: UnitSet | None = None) -> list[np.ndarray]:
        memo: dict[int, np.ndarray] = {}
        return [self._mask(i, view, now, units, memo) for i in which]

    def mask(self, i: int, view: FlowView, now: dt.datetime,
             units: UnitSet | None = None) -> np.ndarray:
        return self._mask(i, view, now, units, {})

    def _mask(self, i, view, now, units, memo) -> np.ndarray:
        if i in memo:
            return memo[i]
        m = np.ones(view.n, dtype=bool)
        for t in self.policies[i].terms:
            m &= self._term(t, view, now, units, memo)
            # no early exit: masks stay full length and branch-free
        memo[i] = m
        return m

    def _term(self, t, view: FlowView, now, units, memo) -> np.ndarray | bool:
        if isinstance(t, Proto):
            return True if t.numbers is None else _in_set(view["proto"], t.numbers)
        if isinstance(t, Tos):
            return _in_set(view["tos"], t.values)
        if isinstance(t, Ports):
            proto = view["proto"]
            # port targets describe TCP or UDP; ICMP keeps type/code in sport/dport
            l4 = (proto == 6) | (proto == 17)
            return l4 & _sided_hit(t.items, view["sport"], view["dport"], view.n)
        if isinstance(t, Vlan):
            return _in_set(view["vlan_outer"], t.ids) | _in_set(view["vlan_inner"], t.ids)
        if isinstance(t, Ifindex):
            ifx, out = view["ifindex"], view["out"]
            # at a LAN hook an outgoing flow arrived (input), an incoming one left (output)
            return _sided_hit(t.items, np.where(out, ifx, 0), np.where(out, 0, ifx), view.n)
        if isinstance(t, Ds):
            return _in_set(sources.of_ifindex(view["ifindex"]), t.ids)
        if isinstance(t, As):
            def origin(side):
                return lambda: self.as_table.lookup(view[side + "_hi"], view[side + "_lo"])
            return _sided_hit(t.items, view.derived("s_as", origin("s")),
                              view.derived("d_as", origin("d")), view.n)
        if isinstance(t, Addr):
            return (t.table.contains(view["s_hi"], view["s_lo"])
                    | t.table.contains(view["d_hi"], view["d_lo"]))
        if isinstance(t, File):
            return t.table.contains(view["r_hi"], view["r_lo"])
        if isinstance(t, Units):
            if units is None:
                raise ValueError("a 'units' target needs the UnitSet")
            hit = np.zeros(view.n, dtype=bool)
            for k in t.keys:
                hit |= units.subtree_contains(units.find(k), view["r_hi"], view["r_lo"])
            return hit
        if isinstance(t, PolicyRefs):
            parts = [self._mask(self.find(r), view, now, units, memo) ^ inv for r, inv in t.refs]
            return np.logical_or.reduce(parts) if t.op == "or" else np.logical_and.reduce(parts)
        if isinstance(t, Time):
            m = now.hour * 60 + now.minute
            inside = t.start <= m < t.end if t.start < t.end else (m >= t.start or m < t.end)
            return bool(inside)
        if isinstance(t, Day):
            return now.weekday() in t.days
        raise TypeError(t)  # pragma: no cover


# --- acct-policy lists -----------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class AcctEntry:
    policy: int    # index into the PolicySet
    invert: bool   # "!": count what does NOT match
    stop: bool     # "%": when this entry matches, the rest of the list is skipped


def parse_acct_entry(text: str) -> tuple[str, bool, bool]:
    """"!%all-icmp" -> ("all-icmp", invert=True, stop=True); flags in either order."""
    t = _dashes(text.strip())
    invert = stop = False
    while t[:1] in ("!", "%"):
        if t[0] == "!":
            invert = True
        else:
            stop = True
        t = t[1:]
    if not t or any(c.isspace() for c in t):
        raise ValueError(f"expected an acct-policy entry like 'web', '!all-icmp' or '%local', "
                         f"got {text!r}")
    return t, invert, stop


class AcctPlan:
    """Each unit's resolved acct-policy list, flattened for the hot path.

    A unit's list is the default acct-policies (unless nodefault or
    ap-nodefault) followed by its own entries; a policy the unit lists itself
    replaces the default entry for it, so no policy is counted twice.
    """

    def __init__(self, units: UnitSet, policies: PolicySet, default: Sequence[str] = ()):
        self.units, self.policies = units, policies
        dflt = []
        for text in default:
            try:
                name, inv, stop = parse_acct_entry(text)
                dflt.append(AcctEntry(policies.find(name), inv, stop))
            except (ValueError, KeyError) as e:
                raise ModelError(f"default acct-policy: {e.args[0]}", "processor", None,
                                 "default-acct-policy") from None
        lists: list[tuple[AcctEntry, ...]] = []
        for i, u in enumerate(units):
            own = []
            for text in u.acct_policy:
                try:
                    name, inv, stop = parse_acct_entry(text)
                    own.append(AcctEntry(policies.find(name), inv, stop))
                except (ValueError, KeyError) as e:
                    raise ModelError(e.args[0], "unit", i, "acct-policy") from None
            mine = {e.policy for e in own}
            if len(mine) != len(own):
                raise ModelError("a policy is listed twice in acct-policy", "unit", i,
                                 "acct-policy")
            base = [] if (u.nodefault or u.ap_nodefault) else [e for e in dflt
                                                               if e.policy not in mine]
            if len(base) + len(own) > MAX_LIST:
                raise ModelError(f"at most {MAX_LIST} acct-policy entries per unit (defaults "
                                 f"included), got {len(base) + len(own)}", "unit", i,
                                 "acct-policy")
            lists.append(tuple(base + own))
        self.lists = tuple(lists)
        # flat entries: entry k of unit u is row entry_ptr[u] + k
        lens = np.array([len(x) for x in lists], dtype=np.int64)
        self.entry_ptr = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(lens, out=self.entry_ptr[1:])
        self.entry_unit = np.repeat(np.arange(len(lists), dtype=np.int32), lens)
        self.entry_policy = np.array([e.policy for x in lists for e in x], dtype=np.int32)
        # units sharing a list share its count table
        distinct: dict[tuple[AcctEntry, ...], int] = {}
        self.unit_list = np.array([distinct.setdefault(x, len(distinct)) for x in lists],
                                  dtype=np.int32)
        self.distinct_lists = tuple(distinct)
        self.used = sorted({e.policy for x in self.distinct_lists for e in x})

    @property
    def n_entries(self) -> int:
        return int(self.entry_ptr[-1])


@dataclasses.dataclass(frozen=True)
class Counts:
    """One drain's totals. Index [.., dir] with abi.Dir (0 in, 1 out).

    packets/bytes: per acct entry (plan.entry_unit/entry_policy give its
    unit and policy); unit_*: all traffic of each unit whatever the policies;
    unattributed_*: flows whose local address matched no unit.
    """

    entry_unit: np.ndarray
    entry_policy: np.ndarray
    packets: np.ndarray
    bytes: np.ndarray
    unit_packets: np.ndarray
    unit_bytes: np.ndarray
    unattributed_packets: np.ndarray
    unattributed_bytes: np.ndarray
    # NeTAMS "check"/"match": flows that reached each acct entry in its
    # unit's list walk, and flows it counted (one per flow and unit)
    checks: np.ndarray | None = None
    matches: np.ndarray | None = None

    def columns(self) -> dict[str, np.ndarray]:
        """The non-zero cells as equal-length columns, ready for an Arrow/numpy ingest."""
        e, d = np.nonzero(self.packets | self.bytes)
        return {"unit": self.entry_unit[e], "policy": self.entry_policy[e],
                "dir": d.astype(np.uint8), "packets": self.packets[e, d],
                "bytes": self.bytes[e, d]}

    def rows(self):
        """(unit index, policy index, dir, packets, bytes) for every non-zero cell."""
        c = self.columns()
        return zip(*(c[k].tolist() for k in ("unit", "policy", "dir", "packets", "bytes")))

    def get(self, unit: int, policy: int) -> tuple[np.ndarray, np.ndarray]:
        """(packets[2], bytes[2]) of one unit/policy; zeros if the unit doesn't list it."""
        hit = np.flatnonzero((self.entry_unit == unit) & (self.entry_policy == policy))
        if len(hit) == 0:
            return np.zeros(2, np.uint64), np.zeros(2, np.uint64)
        return self.packets[hit[0]], self.bytes[hit[0]]


_EXACT_F64 = 2**53


def _sum_by(idx: np.ndarray, w: np.ndarray, size: int) -> np.ndarray:
    """Exact uint64 sums of w grouped by idx.

    bincount's float64 accumulator is exact while every partial sum stays
    below 2**53 (9 PB per drain); beyond that fall back to np.add.at.
    """
    if len(w) == 0:
        return np.zeros(size, dtype=np.uint64)
    if int(w.sum(dtype=np.uint64)) < _EXACT_F64 and int(w.max()) < _EXACT_F64:
        return np.rint(np.bincount(idx, weights=w.astype(np.float64), minlength=size)) \
            .astype(np.uint64)
    out = np.zeros(size, dtype=np.uint64)
    np.add.at(out, idx, w.astype(np.uint64))
    return out


def _compact(x: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Dense ids for the distinct values of x: (count, ids per element, distinct values)."""
    if len(x) == 0:
        return 0, np.zeros(0, np.int64), np.zeros(0, x.dtype)
    top = int(x.max())
    if top < 1 << 22:
        # counting beats sorting while the value range is small
        present = np.bincount(x, minlength=top + 1) > 0
        values = np.flatnonzero(present)
        lut = np.cumsum(present) - 1
        return len(values), lut[x], values
    values, ids = np.unique(x, return_inverse=True)
    return len(values), ids.reshape(-1), values


def account(flows, packets: np.ndarray, bytes_: np.ndarray, leaf: np.ndarray, plan: AcctPlan,
            now: dt.datetime, units: UnitSet | None = None) -> Counts:
    """Packets and bytes per (unit, acct entry, dir) for one drain.

    flows: abi.FLOW_KEY array (or mapping of its columns, or a FlowView of
    them, whose derived columns are then shared); packets/bytes_:
    per-flow deltas; leaf: the most specific unit of each flow's local address
    (UnitSet.match), -1 for none; now: the drain's local time for `time`/`day`
    targets, e.g. datetime.now(cfg.processor.zone);
    units: the current UnitSet if users were re-bound since the plan was built.

    Flows are first reduced to (unit, dir, policy signature) rows, where the
    signature is which policies a flow matches; lists, "!" and "%" are then
    resolved per distinct signature, not per flow.
    """
    units = units or plan.units
    view = flows if isinstance(flows, FlowView) else FlowView(flows)
    n_units, n_entries = len(units), plan.n_entries
    packets = np.asarray(packets, dtype=np.uint64)
    bytes_ = np.asarray(bytes_, dtype=np.uint64)
    leaf = np.asarray(leaf)
    dirs = np.asarray(flows["dir"]).astype(np.int64)

    lost = leaf < 0
    unattr_p = _sum_by(dirs[lost], packets[lost], 2)
    unattr_b = _sum_by(dirs[lost], bytes_[lost], 2)

    # 1. policy signature per flow, as a dense id
    used = plan.used
    masks = plan.policies.masks(used, view, now, units)
    n_sig = 1
    sig = np.zeros(view.n, dtype=np.int64)
    for start in range(0, len(used), 62):
        word = np.zeros(view.n, dtype=np.int64)
        for k, m in enumerate(masks[start:start + 62]):
            word |= np.asarray(m, dtype=np.int64) << k
        nw, wid, _ = _compact(word)
        n_sig, sig, _ = _compact(sig * nw + wid)
    # which policies each signature matches, read off one representative flow
    rep = np.zeros(max(n_sig, 1), dtype=np.int64)
    rep[sig] = np.arange(view.n)
    sig_match = np.zeros((max(n_sig, 1), len(used)), dtype=bool)
    for k, m in enumerate(masks):
        sig_match[:, k] = np.broadcast_to(m, (view.n,))[rep] if view.n else False
    used_col = {p: k for k, p in enumerate(used)}

    # 2. reduce flows to rows keyed by (leaf unit, dir, signature)
    keep = ~lost
    key = (leaf[keep].astype(np.int64) * 2 + dirs[keep]) * n_sig + sig[keep]
    n_rows, row, row_key = _compact(key)
    r_pk = _sum_by(row, packets[keep], n_rows)
    r_by = _sum_by(row, bytes_[keep], n_rows)
    r_fl = _sum_by(row, np.ones(int(keep.sum()), dtype=np.uint64), n_rows)
    r_sig = row_key % n_sig
    r_dir = (row_key // n_sig) % 2
    r_leaf = row_key // (2 * n_sig)

    # 3. credit each row to its unit and each ancestor group once
    cnt = units.target_len[r_leaf]
    e_row = np.repeat(np.arange(n_rows), cnt)
    first = np.repeat(units.target_ptr[r_leaf] - np.cumsum(cnt) + cnt, cnt)
    e_unit = units.target_idx[first + np.arange(len(e_row))]
    e_dir, e_sig = r_dir[e_row], r_sig[e_row]
    e_pk, e_by, e_fl = r_pk[e_row], r_by[e_row], r_fl[e_row]
    cell = e_unit.astype(np.int64) * 2 + e_dir
    unit_p = _sum_by(cell, e_pk, n_units * 2).reshape(n_units, 2)
    unit_b = _sum_by(cell, e_by, n_units * 2).reshape(n_units, 2)

    # 4. which entries of each distinct list count a signature: NeTAMS walks
    # the list in order; "!" inverts the match, "%" stops the walk after a match
    lists = plan.distinct_lists
    counted = np.zeros((len(lists), max(n_sig, 1)), dtype=np.uint64)
    reached = np.zeros((len(lists), max(n_sig, 1)), dtype=np.uint64)
    for li, entries in enumerate(lists):
        going = np.ones(max(n_sig, 1), dtype=bool)
        for k, e in enumerate(entries):
            hit = sig_match[:, used_col[e.policy]] ^ e.invert
            counted[li] |= (going & hit).astype(np.uint64) << np.uint64(k)
            reached[li] |= going.astype(np.uint64) << np.uint64(k)
            if e.stop:
                going &= ~hit
    e_bits = counted[plan.unit_list[e_unit], e_sig]
    e_reached = reached[plan.unit_list[e_unit], e_sig]

    pk = np.zeros(n_entries * 2, dtype=np.uint64)
    by = np.zeros(n_entries * 2, dtype=np.uint64)
    checks = np.zeros(n_entries, dtype=np.uint64)
    matches = np.zeros(n_entries, dtype=np.uint64)
    max_len = max((len(x) for x in lists), default=0)
    for k in range(max_len):
        bit = np.uint64(k)
        sel = ((e_reached >> bit) & np.uint64(1)).astype(bool)
        if sel.any():
            checks += _sum_by(plan.entry_ptr[e_unit[sel]] + k, e_fl[sel], n_entries)
        sel = ((e_bits >> bit) & np.uint64(1)).astype(bool)
        if not sel.any():
            continue
        entry = plan.entry_ptr[e_unit[sel]] + k
        slot = entry * 2 + e_dir[sel]
        pk += _sum_by(slot, e_pk[sel], n_entries * 2)
        by += _sum_by(slot, e_by[sel], n_entries * 2)
        matches += _sum_by(entry, e_fl[sel], n_entries)
    return Counts(plan.entry_unit, plan.entry_policy, pk.reshape(-1, 2), by.reshape(-1, 2),
                  unit_p, unit_b, unattr_p, unattr_b, checks, matches)


def local_addrs(flows) -> np.ndarray:
    """The local (subscriber) address of each flow: saddr going out, daddr coming in."""
    out = (np.asarray(flows["dir"]) == abi.Dir.OUT)[:, None]
    return np.where(out, flows["saddr"], flows["daddr"])
