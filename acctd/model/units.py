"""Units (NeTAMS NetUnits): who a local address belongs to, and which groups add it up.

Pure data and numpy: the daemon drains flows, `UnitMatcher` attributes each
local address to its most specific unit, and the group membership lists let a
group count each byte once however many paths lead to it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

from acctd.errors import NotFound
from acctd.model.addresses import PrefixTable, format_addr, format_prefix, parse_addr, split_addrs

UNIT_TYPES = ("host", "cluster", "net", "user", "group")

# NeTAMS oids are 6 hex digits whose first two name the object type
# (the reference's sample: hosts and users 02xxxx, nets 04xxxx, groups 05xxxx,
# policies 14xxxx). Cluster is not in the sample; 03 is the free slot between.
OID_TYPE = {"host": 0x02, "user": 0x02, "cluster": 0x03, "net": 0x04, "group": 0x05,
            "policy": 0x14}

class ModelError(ValueError):
    """A unit or policy definition that cannot be used.

    `table`, `index` and `key` say where it came from ("unit", 3, "parents"),
    so the config loader can point at the file line.
    """

    def __init__(self, msg: str, table: str | None = None, index: int | None = None,
                 key: str | None = None):
        super().__init__(msg)
        self.table, self.index, self.key = table, index, key


# --- the unit model --------------------------------------------------------------

def printable_name(name: str) -> bool:
    """A unit or policy name: one word of characters a terminal prints as
    themselves (no ESC, CR, bidi overrides... that could rewrite the
    screen of whoever lists it)."""
    return bool(name) and name.isprintable() and not any(c.isspace() for c in name)


def oid_ints(objs: Sequence) -> np.ndarray:
    """Index -> integer oid ("02A1F3" -> 0x02A1F3) for a UnitSet or PolicySet."""
    return np.array([int(o.oid, 16) for o in objs], dtype=np.uint32)


def make_oid(kind: str, name: str, salt: int = 0) -> str:
    """A NeTAMS-style oid (type byte + 4 hex digits) derived from the name.

    Deterministic, so a restart gives the same oid; `salt` is the probe
    number when two names collide.
    """
    digest = hashlib.blake2b(f"{kind}\0{name}\0{salt}".encode(), digest_size=2).digest()
    return f"{OID_TYPE[kind]:02X}{int.from_bytes(digest, 'big'):04X}"


def normalize_oid(text: str | int) -> str:
    """"21949", 0x21949, "021949" -> "021949"."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        s = str(text).strip()
        if not s or len(s) > 6 or any(c not in "0123456789abcdefABCDEF" for c in s):
            raise ValueError(f"expected an oid of 1 to 6 hex digits, got {text!r}")
        value = int(s, 16)
    if not 0 < value <= 0xFFFFFF:
        raise ValueError(f"expected an oid between 000001 and FFFFFF, got {text!r}")
    return f"{value:06X}"


@dataclasses.dataclass(frozen=True)
class Unit:
    """One NetUnit. Addresses are 16-byte network-order (IPv4 mapped).

    host: one address; cluster: several; user: one address or none (unbound);
    net: prefixes (128-bit lengths); group: none of its own.
    """

    type: str
    name: str
    oid: str | None = None
    addrs: tuple[bytes, ...] = ()
    nets: tuple[tuple[bytes, int], ...] = ()
    parents: tuple[str, ...] = ()
    description: str = ""
    email: str = ""
    acct_policy: tuple[str, ...] = ()  # raw entries, "[!][%]name"; parsed by policy.py
    nodefault: bool = False
    ap_nodefault: bool = False
    fp_nodefault: bool = False        # drop the default fw-policies only
    sys_policy: tuple[str, ...] = ()  # NeTAMS sys-deny / sys-deny-quota ... (sys_policy.py)
    fw_policy: tuple[str, ...] = ()   # "[!]name": what passes (enforce.py)
    bw: tuple[int | None, int | None] | None = None  # rate limit in/out, bit/s
    no_local_pass: bool = False       # `restrict all` applies, not `restrict local`
    auto_units: int | None = None     # net: create units for new addresses by this rule
    mac: str = ""                     # host/user: the MAC its address must come from
    ds_list: tuple[int, ...] = (0,)   # data sources it counts from (acctd/model/sources.py)


def _addr_key(u: Unit) -> str:
    return "ips" if u.type == "cluster" else "ip"


def _check_shape(u: Unit, i: int) -> None:
    if u.type not in UNIT_TYPES:
        raise ModelError(f"unit type must be one of {', '.join(UNIT_TYPES)}, got {u.type!r}",
                         "unit", i, "type")
    want = {"host": (1, 1, 0), "user": (0, 1, 0), "cluster": (1, None, 0),
            "net": (0, 0, 1), "group": (0, 0, 0)}[u.type]
    lo, hi, nets = want
    n = len(u.addrs)
    if n < lo or (hi is not None and n > hi):
        what = {"host": "exactly one address (ip)", "user": "at most one address (ip)",
                "cluster": "one or more addresses (ips)", "net": "no single addresses",
                "group": "no addresses"}[u.type]
        raise ModelError(f"a {u.type} unit has {what}, got {n}", "unit", i, _addr_key(u))
    if nets and not u.nets:
        raise ModelError("a net unit needs a prefix (net)", "unit", i, "net")
    if not nets and u.nets:
        raise ModelError(f"only net units have a prefix, not a {u.type}", "unit", i, "net")


def find_by_name_or_oid(index: dict[str, int], by_oid: dict[str, int], key: str,
                        what: str) -> int:
    """Units and policies are named by name or by oid (any case, fewer digits)."""
    if key in index:
        return index[key]
    try:
        return by_oid[normalize_oid(key)]
    except (ValueError, KeyError):
        raise NotFound(f"unknown {what} {key!r}") from None


class UnitSet:
    """The configured units, their oids, group ancestry and address matcher.

    Immutable: binding a user to a new address returns a new UnitSet with the
    same unit indexes, so counters keyed by index stay valid.
    """

    def __init__(self, units: Sequence[Unit], reserved_oids: Iterable[str] = ()):
        units = list(units)
        self.index: dict[str, int] = {}
        for i, u in enumerate(units):
            _check_shape(u, i)
            if not printable_name(u.name):
                raise ModelError("unit name must be non-empty, without spaces or control "
                                 f"characters, got {u.name!r}", "unit", i, "name")
            if u.name in self.index:
                raise ModelError(f"unit name {u.name!r} is already used by unit "
                                 f"#{self.index[u.name] + 1}", "unit", i, "name")
            self.index[u.name] = i
        self.units = tuple(self._assign_oids(units, set(reserved_oids)))
        self.by_oid = {u.oid: i for i, u in enumerate(self.units)}
        self._ancestry()
        self.matcher = UnitMatcher(self.units)
        self._subtree_sets: dict[int, PrefixTable] = {}

    @staticmethod
    def _assign_oids(units: list[Unit], taken: set[str]) -> list[Unit]:
        given: dict[str, int] = {}
        for i, u in enumerate(units):
            if u.oid is None:
                continue
            try:
                oid = normalize_oid(u.oid)
            except ValueError as e:
                raise ModelError(str(e), "unit", i, "oid") from None
            if oid in given or oid in taken:
                other = f"unit #{given[oid] + 1}" if oid in given else "a policy"
                raise ModelError(f"oid {oid} is already used by {other}", "unit", i, "oid")
            given[oid] = i
            units[i] = dataclasses.replace(u, oid=oid)
        taken = taken | set(given)
        # generated oids are assigned in file order; a hash collision probes
        # with a salt, so only a colliding newcomer can shift. Written-out oids
        # (acctctl import does) never move.
        for i, u in enumerate(units):
            if u.oid is None:
                salt = 0
                while (oid := make_oid(u.type, u.name, salt)) in taken:
                    salt += 1
                taken.add(oid)
                units[i] = dataclasses.replace(u, oid=oid)
        return units

    def _ancestry(self) -> None:
        n = len(self.units)
        parents: list[list[int]] = []
        for i, u in enumerate(self.units):
            ps = []
            for p in u.parents:
                j = self.index.get(p)
                if j is None:
                    raise ModelError(f"parent {p!r} is not a defined unit", "unit", i, "parents")
                if self.units[j].type != "group":
                    raise ModelError(f"parent {p!r} is a {self.units[j].type}, expected a group",
                                     "unit", i, "parents")
                ps.append(j)
            parents.append(ps)
        # iterative DFS with colouring: 0 new, 1 on the stack, 2 done
        colour = [0] * n
        anc: list[frozenset[int]] = [frozenset()] * n
        for root in range(n):
            if colour[root]:
                continue
            stack = [(root, 0)]
            colour[root] = 1
            while stack:
                node, k = stack[-1]
                if k < len(parents[node]):
                    stack[-1] = (node, k + 1)
                    nxt = parents[node][k]
                    if colour[nxt] == 1:
                        path = [self.units[s].name for s, _ in stack]
                        cycle = path[path.index(self.units[nxt].name):] + [self.units[nxt].name]
                        raise ModelError("parent groups form a cycle: " + " -> ".join(cycle),
                                         "unit", nxt, "parents")
                    if colour[nxt] == 0:
                        colour[nxt] = 1
                        stack.append((nxt, 0))
                else:
                    stack.pop()
                    colour[node] = 2
                    acc: set[int] = set()
                    for p in parents[node]:
                        acc.add(p)
                        acc |= anc[p]
                    anc[node] = frozenset(acc)
        self.ancestors: tuple[tuple[int, ...], ...] = tuple(tuple(sorted(a)) for a in anc)
        # CSR "targets": a flow of unit i is credited to i and to each ancestor
        # group exactly once, since the ancestor set is deduplicated.
        lens = np.array([1 + len(a) for a in self.ancestors], dtype=np.int64)
        self.target_ptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lens, out=self.target_ptr[1:])
        flat = [t for i, a in enumerate(self.ancestors) for t in (i, *a)]
        self.target_idx = np.array(flat, dtype=np.int32)
        self.target_len = lens

    def __len__(self) -> int:
        return len(self.units)

    def __iter__(self):
        return iter(self.units)

    def find(self, key: str) -> int:
        """Index of a unit by name or oid; KeyError if neither."""
        return find_by_name_or_oid(self.index, self.by_oid, key, "unit")

    def names_of(self, addrs: Sequence[str]) -> list[str | None]:
        """The unit name of each address text (None: unattributed), with one
        vector match."""
        if not addrs:
            return []
        a = np.frombuffer(b"".join(parse_addr(t) for t in addrs), dtype=np.uint8)
        idx = self.match(a.reshape(-1, 16))
        return [self.units[i].name if i >= 0 else None for i in idx.tolist()]

    def descendants(self, i: int) -> list[int]:
        return [j for j, a in enumerate(self.ancestors) if i in a]

    def match(self, addrs: np.ndarray) -> np.ndarray:
        return self.matcher.match(addrs)

    def match_flows(self, view) -> np.ndarray:
        """The unit of each flow's local address, from a policies.FlowView
        (its address halves, which the policies' address terms use too)."""
        return self.matcher.match_split(view["l_hi"], view["l_lo"])

    def bind(self, name: str, addr: str | bytes | None) -> UnitSet:
        """A copy with user `name` bound to `addr` (None unbinds); indexes unchanged."""
        i = self.find(name)
        u = self.units[i]
        if u.type != "user":
            raise ModelError(f"only user units change address; {name!r} is a {u.type}")
        new = () if addr is None else (addr if isinstance(addr, bytes) else parse_addr(addr),)
        units = list(self.units)
        units[i] = dataclasses.replace(u, addrs=new)
        return UnitSet(units)

    def rebound(self, addrs: dict[int, bytes | None]) -> UnitSet:
        """A copy with several user units given new addresses at once (one
        rebuild for a whole batch of sessions); indexes unchanged."""
        units = list(self.units)
        for i, addr in addrs.items():
            u = units[i]
            if u.type != "user":
                raise ModelError(f"only user units change address; {u.name!r} is a {u.type}")
            units[i] = dataclasses.replace(u, addrs=() if addr is None else (addr,))
        return UnitSet(units)

    def subtree_contains(self, i: int, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Whether each address lies inside unit i (a group: inside any member)."""
        table = self._subtree_sets.get(i)
        if table is None:
            prefixes = []
            for j in [i, *self.descendants(i)]:
                u = self.units[j]
                prefixes += [(a, 128) for a in u.addrs] + list(u.nets)
            table = self._subtree_sets[i] = PrefixTable(prefixes)
        return table.contains(hi, lo)


class UnitMatcher:
    """Most-specific match of local addresses to unit indexes.

    Exact addresses (host, user, cluster) beat every net; among nets the
    longest prefix wins; no match gives -1, "unattributed".
    """

    def __init__(self, units: Sequence[Unit]):
        exact, exact_idx, nets, net_idx = [], [], [], []
        seen: dict[bytes, int] = {}
        seen_net: dict[tuple[bytes, int], int] = {}
        for i, u in enumerate(units):
            for a in u.addrs:
                if a in seen and seen[a] != i:
                    raise ModelError(f"address {format_addr(a)} already belongs to unit "
                                     f"{units[seen[a]].name!r}", "unit", i, _addr_key(u))
                seen[a] = i
                exact.append((a, 128))
                exact_idx.append(i)
            for p in u.nets:
                if p in seen_net:
                    raise ModelError(f"prefix {format_prefix(*p)} already belongs to unit "
                                     f"{units[seen_net[p]].name!r}", "unit", i, "net")
                seen_net[p] = i
                nets.append(p)
                net_idx.append(i)
        self._exact = PrefixTable(exact, exact_idx)
        self._nets = PrefixTable(nets, net_idx)

    def match(self, addrs: np.ndarray) -> np.ndarray:
        """(n, 16) uint8 addresses -> (n,) int32 unit indexes, -1 for none."""
        hi, lo = split_addrs(addrs)
        return self.match_split(hi, lo)

    def match_split(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        res = self._exact.lookup(hi, lo)
        return self._nets.lookup(hi, lo, out=res)
