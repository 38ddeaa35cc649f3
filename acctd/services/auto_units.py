"""Units that make themselves (NeTAMS auto-assign and auto-units): address pools
for `ip auto`, and host/user units planned for new addresses seen inside a net.

Pure: no sockets and no DNS. The daemon passes the reverse-DNS lookup in as a
callable and creates the planned units itself.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable, Container, Iterable, Sequence

from acctd.errors import AcctError
from acctd.model.addresses import format_addr, is_v4, parse_addr
from acctd.model.units import ModelError, Unit

NAMINGS = ("by-dns", "prefix1", "prefix2")
AUTO_TYPES = ("host", "user")


class PoolExhausted(AcctError):
    """Every auto-assign pool is used up."""


def _dashes(word: str) -> str:
    # the reference (and configs pasted from it) write en/em dashes: auto–units
    return word.replace("\u2013", "-").replace("\u2014", "-")


def _tokens(text: str | Sequence[str]) -> list[str]:
    if isinstance(text, str):
        return shlex.split(_dashes(text))
    return [_dashes(str(t)) for t in text]


def owned_addrs(units: Iterable[Unit]) -> set[bytes]:
    """Every single address some unit already has (host, user, cluster).

    NeTAMS checks hosts and users; clusters are included because UnitSet
    refuses an address given to two units, whatever their types.
    """
    return {a for u in units for a in u.addrs}


# --- auto-assign -----------------------------------------------------------------

def _as_addr(a: str | bytes) -> bytes:
    if isinstance(a, bytes):
        if len(a) != 16:
            raise ValueError(f"expected a 16-byte address, got {len(a)} bytes")
        return a
    return parse_addr(a)


def parse_auto_assign(text: str | Sequence[str]) -> tuple[bytes, bytes]:
    """"auto-assign A.B.C.D E.F.G.H" (the keyword is optional) -> (first, last)."""
    t = _tokens(text)
    if t and t[0].lower() == "auto-assign":
        t = t[1:]
    if len(t) != 2:
        raise ModelError("expected auto-assign FIRST LAST, e.g. auto-assign 10.0.0.10 "
                         f"10.0.0.250, got {' '.join(t)!r}", "auto-assign")
    try:
        return parse_addr(t[0]), parse_addr(t[1])
    except ValueError as e:
        raise ModelError(f"auto-assign: {e}", "auto-assign") from None


class AutoAssign:
    """Address pools for units created with `ip auto`, searched in the order given.

    Each pool is (first, last), inclusive, as text or 16-byte addresses; IPv4
    and IPv6 pools may be mixed.
    """

    def __init__(self, pools: Iterable[tuple[str | bytes, str | bytes]]):
        self.pools: list[tuple[bytes, bytes]] = []
        for i, (first, last) in enumerate(pools):
            try:
                a, b = _as_addr(first), _as_addr(last)
            except ValueError as e:
                raise ModelError(f"auto-assign pool #{i + 1}: {e}", "auto-assign", i) from None
            if is_v4(a) != is_v4(b):
                raise ModelError(f"auto-assign pool #{i + 1} mixes IPv4 and IPv6: "
                                 f"{format_addr(a)} {format_addr(b)}", "auto-assign", i)
            if a > b:
                raise ModelError(f"auto-assign pool #{i + 1} ends before it starts: "
                                 f"{format_addr(a)} > {format_addr(b)}", "auto-assign", i)
            self.pools.append((a, b))

    def __repr__(self) -> str:
        return f"AutoAssign([{', '.join(self._describe(p) for p in self.pools)}])"

    @staticmethod
    def _describe(pool: tuple[bytes, bytes]) -> str:
        return f"{format_addr(pool[0])}-{format_addr(pool[1])}"

    def size(self) -> int:
        return sum(int.from_bytes(b, "big") - int.from_bytes(a, "big") + 1 for a, b in self.pools)

    def next_free(self, taken: Container[bytes], family: int | None = None) -> bytes:
        """The first address, pool by pool, not in `taken` (see owned_addrs).

        `family` 4 or 6 limits the search to pools of that family. A scan
        visits at most one address more than `taken` holds in the pool, so a
        huge IPv6 pool costs no more than a small one.
        """
        if family not in (None, 4, 6):
            raise ValueError(f"family must be 4, 6 or None, got {family!r}")
        searched = []
        for a, b in self.pools:
            v4 = is_v4(a)
            if family is not None and v4 != (family == 4):
                continue
            searched.append((a, b))
            lo, hi = int.from_bytes(a, "big"), int.from_bytes(b, "big")
            for n in range(lo, hi + 1):
                addr = n.to_bytes(16, "big")
                if addr not in taken:
                    return addr
        fam = f"IPv{family} " if family else ""
        if not searched:
            raise PoolExhausted(f"no {fam}auto-assign pool is configured")
        raise PoolExhausted(f"all {fam}auto-assign pools are exhausted "
                            f"({', '.join(self._describe(p) for p in searched)})")


# --- auto-units ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class AutoUnits:
    """One processor `auto-units N ...` rule; net units name it by `number`."""

    number: int
    type: str = "host"
    naming: str = "by-dns"
    prefix: str = ""            # for prefix1 / prefix2
    group: str | None = None    # the created units' parent group

    def __post_init__(self):
        if isinstance(self.number, bool) or not isinstance(self.number, int) or self.number < 0:
            raise ModelError(f"auto-units number must be a whole number >= 0, "
                             f"got {self.number!r}", "auto-units", key="number")
        if self.type not in AUTO_TYPES:
            raise ModelError(f"auto-units type must be host or user, got {self.type!r}",
                             "auto-units", key="type")
        if self.naming not in NAMINGS:
            raise ModelError(f"auto-units naming must be by-dns, prefix1 PREFIX or prefix2 "
                             f"PREFIX, got {self.naming!r}", "auto-units", key="naming")
        if self.naming == "by-dns" and self.prefix:
            raise ModelError("auto-units naming by-dns takes no prefix", "auto-units",
                             key="prefix")
        if self.naming != "by-dns" and (not self.prefix or _bad_name(self.prefix)):
            raise ModelError(f"auto-units naming {self.naming} needs a prefix without spaces, "
                             f"got {self.prefix!r}", "auto-units", key="prefix")
        if self.group is not None and (not self.group or _bad_name(self.group)):
            raise ModelError(f"auto-units group must be a unit name without spaces, "
                             f"got {self.group!r}", "auto-units", key="group")

    def name_for(self, addr: bytes, dns_name: str | None = None) -> str:
        """The name a new unit at `addr` gets, before uniqueness is applied.

        prefix1: prefix + last octet (IPv6: last 16-bit group, hex);
        prefix2: prefix + last two octets joined by "." (IPv6: two groups, ":");
        by-dns: the PTR name, else the address itself, as the reference says.
        """
        if self.naming == "by-dns":
            name = clean_dns_name(dns_name) if dns_name else ""
            return name or format_addr(addr)
        if is_v4(addr):
            tail = str(addr[15]) if self.naming == "prefix1" else f"{addr[14]}.{addr[15]}"
        else:
            g2, g1 = int.from_bytes(addr[12:14], "big"), int.from_bytes(addr[14:16], "big")
            tail = f"{g1:x}" if self.naming == "prefix1" else f"{g2:x}:{g1:x}"
        return self.prefix + tail

    def to_netams(self) -> str:
        naming = self.naming if self.naming == "by-dns" else f"{self.naming} {self.prefix}"
        group = f" group {self.group}" if self.group else ""
        return f"auto-units {self.number} type {self.type} naming {naming}{group}"


def _bad_name(s: str) -> bool:
    return any(c.isspace() or not c.isprintable() for c in s)


def clean_dns_name(name: str) -> str:
    """A PTR answer as a unit name: no trailing dot, lower case, nothing unprintable."""
    name = name.strip().rstrip(".").lower()
    return "".join("-" if c.isspace() or not c.isprintable() else c for c in name)


def parse_auto_units(text: str | Sequence[str]) -> AutoUnits:
    """NeTAMS `auto-units N type {host|user} naming {by-dns|prefix1 P|prefix2 P} [group G]`.

    The leading keyword is optional; after N the clauses may come in any
    order, each once. En dashes (auto–units, by–dns) are read as hyphens.
    """
    t = _tokens(text)
    if t and t[0].lower() == "auto-units":
        t = t[1:]
    usage = ("expected auto-units N type {host|user} naming {by-dns|prefix1 P|prefix2 P} "
             "[group G]")
    if not t:
        raise ModelError(f"{usage}, got nothing", "auto-units")
    try:
        number = int(t[0])
    except ValueError:
        raise ModelError(f"{usage}; N must be a number, got {t[0]!r}", "auto-units",
                         key="number") from None
    kw: dict = {"number": number}
    k = 1
    while k < len(t):
        word = t[k].lower()
        if word not in ("type", "naming", "group"):
            raise ModelError(f"{usage}; unexpected {t[k]!r}", "auto-units", key=word)
        if word in kw or (word == "naming" and "prefix" in kw):
            raise ModelError(f"auto-units: {word} is given twice", "auto-units", key=word)
        if k + 1 >= len(t):
            raise ModelError(f"{usage}; {word} needs a value", "auto-units", key=word)
        value = t[k + 1]
        if word == "naming":
            mode = value.lower()
            if mode in ("prefix1", "prefix2"):
                if k + 2 >= len(t):
                    raise ModelError(f"auto-units naming {mode} needs a prefix", "auto-units",
                                     key="prefix")
                kw["naming"], kw["prefix"] = mode, t[k + 2]
                k += 3
                continue
            kw["naming"] = mode
        else:
            kw[word] = value.lower() if word == "type" else value
        k += 2
    for need in ("type", "naming"):
        if need not in kw:
            raise ModelError(f"{usage}; {need} is missing", "auto-units", key=need)
    return AutoUnits(**kw)


def unique(name: str, taken: Container[str], counters: dict[str, int] | None = None) -> str:
    """`name`, or name-2, name-3 ... whichever is first not in `taken`.

    `counters` (base name -> next suffix) lets a caller naming thousands of
    units with the same base skip the suffixes it already handed out.
    """
    if name not in taken:
        return name
    n = counters.get(name, 2) if counters is not None else 2
    while f"{name}-{n}" in taken:
        n += 1
    if counters is not None:
        counters[name] = n + 1
    return f"{name}-{n}"


def plan_new_units(rule: AutoUnits, addrs: Iterable[bytes], existing_names: Iterable[str],
                   existing_addrs: Container[bytes],
                   resolve: Callable[[bytes], str | None] | None = None) -> list[Unit]:
    """The host/user units to create for new addresses seen inside a net with `auto-units`.

    Addresses some unit already owns (see owned_addrs) and repeats are
    skipped. Addresses are taken in numeric order, so which one gets the
    plain name and which "-2" does not depend on the order packets came in.
    `resolve` (addr -> PTR name or None) is used only for by-dns; a lookup
    that raises OSError counts as no name. Units have no oid: UnitSet assigns one.
    """
    new = sorted({a for a in addrs if a not in existing_addrs})
    for a in new:
        if len(a) != 16:
            raise ValueError(f"expected 16-byte addresses, got {len(a)} bytes")
    taken = set(existing_names)
    counters: dict[str, int] = {}
    parents = (rule.group,) if rule.group else ()
    by_dns = rule.naming == "by-dns" and resolve is not None
    out = []
    for a in new:
        dns = None
        if by_dns:
            try:
                dns = resolve(a)
            except OSError:
                dns = None
        name = unique(rule.name_for(a, dns), taken, counters)
        taken.add(name)
        out.append(Unit(type=rule.type, name=name, addrs=(a,), parents=parents))
    return out


__all__ = ["AutoAssign", "AutoUnits", "PoolExhausted", "clean_dns_name", "owned_addrs",
           "parse_auto_assign", "parse_auto_units", "plan_new_units", "unique"]
