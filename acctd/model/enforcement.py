"""Enforcement: units, system policies, fw-policies, `restrict` and `bw`
compiled into the datapath's tables (pure), and applied to them (Enforcer).

What the kernel does with a packet of local address A (bpf/acct_lib.h):
- A's class is the most specific acct_classes prefix holding A: one per
  address or prefix of every unit, plus ::/0 for `restrict all` when that
  drops. No class: pass.
- A deny bit in the class's reason drops at every hook (sys-deny, quota,
  login, money, mac): the unit's blocks as resolved by model/sys_policy.py
  (groups' included, lifted ones not). fw-policies do not count as blocks:
  sys-allow does not lift them.
- fw-policies (NeTAMS >= 3.3): the traffic of the unit's listed policies
  passes, everything else is dropped. A unit without fw-policies gets
  `restrict local`; one that is no-local-pass or has neither acct- nor
  fw-policies gets `restrict all`, as do addresses of no unit.
- `bw` on a unit limits all its traffic per direction; `bw` on a policy
  limits the traffic that policy passes, per unit. A token bucket in the
  kernel, charged at the first hook that sees the direction; its depth
  (burst) is `bw-burst` of traffic at the rate, at least MIN_BURST bytes,
  so that one GSO packet always fits.

Time and day targets are evaluated when compiling: the daemon recompiles
after every drain and writes only what changed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import re
from collections.abc import Mapping, Sequence


from acctd.kernel import abi
from acctd.model import sys_policy
from acctd.model.addresses import format_addr, format_prefix, parse_addr, parse_prefix
from acctd.model.policies import (Addr, Day, File, Ifindex, PolicyRefs, Ports, Proto, Time, Tos,
                                  Units, Vlan, parse_acct_entry, read_prefix_file)
from acctd.model.units import ModelError

RATE_UNITS = {"": 1, "k": 1000, "m": 1000 ** 2, "g": 1000 ** 3}  # bit/s: SI, as links are sold
MIN_BURST = 65536 + 1500       # bytes: the largest GSO packet a hook may see, plus headers
# seconds of traffic at the rate. TCP through a policer loses a whole
# retransmission timeout (200 ms at least) per drop on a short path, so a
# bucket shallower than that leaves a 4 Mbit/s limit at ~60 % (measured).
DEFAULT_BURST_S = 0.3
ALL = (bytes(16), 0)           # ::/0, the class of `restrict all`


# --- bw ------------------------------------------------------------------------------

def parse_bw(spec) -> tuple[int | None, int | None]:
    """NeTAMS `bw { speed in speed out | speed }` -> (in, out) in bit/s, None = no limit.

    "10M" limits both directions; "2M in 512K out", "1M in", "256K out" one
    each. A table {in = "2M", out = "512K"} is accepted too."""
    if isinstance(spec, Mapping):
        bad = set(spec) - {"in", "out"}
        if bad or not spec:
            raise ValueError("expected a table with keys in and/or out, e.g. { in = \"2M\" }")
        return tuple(_rate(spec[d]) if d in spec else None for d in ("in", "out"))
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("expected a rate like \"10M\" or \"2M in 512K out\"")
    words = spec.split()
    if len(words) == 1:
        r = _rate(words[0])
        return r, r
    out: dict[str, int] = {}
    if len(words) % 2:
        raise ValueError(f"expected \"SPEED in SPEED out\", got {spec!r}")
    for speed, d in zip(words[::2], words[1::2]):
        if d.lower() not in ("in", "out") or d.lower() in out:
            raise ValueError(f"expected \"SPEED in SPEED out\", got {spec!r}")
        out[d.lower()] = _rate(speed)
    return out.get("in"), out.get("out")


def _rate(text) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kKmMgG]?)(?:bit|bps|b)?", str(text).strip())
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"expected a rate in bit/s like 512K, 10M or 1G, got {text!r}")
    return int(float(m.group(1)) * RATE_UNITS[m.group(2).lower()])


# --- compiling fw-policies -------------------------------------------------------------

class FwError(ModelError):
    pass


@dataclasses.dataclass(frozen=True)
class Atom:
    """One ANDed condition (struct acct_fw_atom), hashable; addr_set is a
    prefix set by content (resolved to a kernel set id when applied)."""
    proto: int = 0
    tos: int | None = None
    sport: tuple[int, int] | None = None
    dport: tuple[int, int] | None = None
    vlan: int | None = None
    ifindex: int = 0
    addr_set: frozenset | None = None
    any_side: bool = False


def _merge(a: Atom, b: Atom) -> Atom | None:
    """a AND b, or None when nothing can match both."""
    out = {}
    for f in dataclasses.fields(Atom):
        x, y = getattr(a, f.name), getattr(b, f.name)
        empty = f.default
        if x == empty or x == y:
            out[f.name] = y
        elif y == empty:
            out[f.name] = x
        elif f.name in ("sport", "dport"):
            lo, hi = max(x[0], y[0]), min(x[1], y[1])
            if lo > hi:
                return None
            out[f.name] = (lo, hi)
        elif f.name in ("addr_set", "any_side"):
            raise FwError("a fw-policy can test one address list (addr, file or units) per "
                          "alternative; combine them in one list")
        else:
            return None
    return Atom(**out)


def _alternatives(term, policies, units, now, memo, depth) -> list[Atom]:
    """A target term as an OR of atoms ([] never matches, [Atom()] always)."""
    if isinstance(term, Proto):
        return [Atom()] if term.numbers is None else [Atom(proto=n) for n in sorted(term.numbers)]
    if isinstance(term, Tos):
        return [Atom(tos=v) for v in sorted(term.values)]
    if isinstance(term, Ports):
        out = []
        for side, lo, hi in term.items:
            if side in "sb":
                out.append(Atom(sport=(lo, hi)))
            if side in "db":
                out.append(Atom(dport=(lo, hi)))
        return out
    if isinstance(term, Vlan):
        return [Atom(vlan=v) for v in sorted(term.ids)]
    if isinstance(term, Ifindex):
        return [Atom(ifindex=i) for i in sorted(term.ids)]
    if isinstance(term, Addr):  # re-read the text: a PrefixTable keeps no list
        return [Atom(addr_set=frozenset(_prefixes_of(term.text)), any_side=True)]
    if isinstance(term, File):
        return [Atom(addr_set=frozenset(_masked(*p) for p in read_prefix_file(term.path)))]
    if isinstance(term, Units):
        prefixes = set()
        for k in term.keys:
            i = units.find(k)
            for j in [i, *units.descendants(i)]:
                u = units.units[j]
                prefixes |= {(a, 128) for a in u.addrs} | set(u.nets)
        return [Atom(addr_set=frozenset(prefixes))] if prefixes else []
    if isinstance(term, PolicyRefs):
        parts = []
        for ref, inv in term.refs:
            if inv:
                raise FwError(f"policy-{term.op} !{ref}: an inverted reference cannot be "
                              "compiled to kernel rules; list the policy as !name in fw-policy")
            parts.append(policy_atoms(policies.find(ref), policies, units, now, memo, depth + 1))
        if term.op == "or":
            return list(dict.fromkeys(a for p in parts for a in p))
        return _product(parts)
    if isinstance(term, Time):
        if now is None:
            return [Atom()]
        m = now.hour * 60 + now.minute
        inside = term.start <= m < term.end if term.start < term.end else \
            (m >= term.start or m < term.end)
        return [Atom()] if inside else []
    if isinstance(term, Day):
        return [Atom()] if now is None or now.weekday() in term.days else []
    raise TypeError(term)  # pragma: no cover


def _prefixes_of(texts) -> list[tuple[bytes, int]]:
    return [_masked(*parse_prefix(t, strict=False)) if "/" in t else (parse_addr(t), 128)
            for t in texts]


def _masked(addr: bytes, plen: int) -> tuple[bytes, int]:
    """The prefix with its host bits cleared (an LPM trie keeps what it is given)."""
    n = int.from_bytes(addr, "big") >> (128 - plen) << (128 - plen) if plen else 0
    return n.to_bytes(16, "big"), plen


def _product(parts: list[list[Atom]]) -> list[Atom]:
    out: list[Atom] = [Atom()]
    for alts in parts:
        nxt = []
        for a, b in itertools.product(out, alts):
            m = _merge(a, b)
            if m is not None:
                nxt.append(m)
        out = list(dict.fromkeys(nxt))
        if len(out) > 4 * abi.FW_ATOMS:
            raise FwError("the policy's target has too many combinations for kernel rules")
    return out


def policy_atoms(i: int, policies, units, now, memo=None, depth: int = 0) -> list[Atom]:
    """Policy i as an OR of atoms; `now` None treats time/day terms as active."""
    memo = {} if memo is None else memo
    if i in memo:
        return memo[i]
    if depth > 16:
        raise FwError("policy references nest too deep")
    p = policies.policies[i]
    atoms = _product([_alternatives(t, policies, units, now, memo, depth) for t in p.terms])
    memo[i] = atoms
    return atoms


def time_dependent(policies, indexes) -> bool:
    def dep(i, seen):
        if i in seen:
            return False
        seen.add(i)
        for t in policies.policies[i].terms:
            if isinstance(t, (Time, Day)):
                return True
            if isinstance(t, PolicyRefs) and any(dep(policies.find(r), seen) for r, _ in t.refs):
                return True
        return False
    return any(dep(i, set()) for i in indexes)


@dataclasses.dataclass(frozen=True)
class Rule:
    """One policy of a unit's fw-policy list, compiled."""
    atoms: tuple[Atom, ...]
    invert: bool
    policy_oid: str
    bw: tuple[int | None, int | None] | None


def fw_list(u, i: int, policies, default: Sequence[str]) -> list[tuple[int, bool]]:
    """A unit's fw-policy list as (policy index, inverted): the default list
    unless nodefault, then its own entries."""
    out: list[tuple[int, bool]] = []
    texts = ([] if u.nodefault else list(default)) + list(u.fw_policy)
    for text in texts:
        try:
            name, inv, _stop = parse_acct_entry(text)  # "%" means nothing here (>= 3.3)
            k = policies.find(name)
        except (ValueError, KeyError) as e:
            raise FwError(e.args[0], "unit", i, "fw-policy") from None
        if (k, inv) not in out:
            out.append((k, inv))
    return out


def compile_rules(u, i: int, policies, units, default, now, memo) -> tuple[Rule, ...]:
    rules = []
    n = 0
    for k, inv in fw_list(u, i, policies, default):
        p = policies.policies[k]
        try:
            atoms = policy_atoms(k, policies, units, now, memo)
        except FwError as e:
            raise FwError(f"fw-policy {p.name}: {e}", "unit", i, "fw-policy") from None
        if inv:  # !p passes what p does not: an empty p passes everything
            if not atoms:
                atoms, inv = [Atom()], False
            elif Atom() in atoms:
                continue  # !(everything) passes nothing
        elif not atoms:
            continue      # inactive now (time/day): passes nothing
        rules.append(Rule(tuple(atoms), inv, p.oid, getattr(p, "bw", None)))
        n += len(atoms)
    if n > abi.FW_ATOMS:
        raise FwError(f"the fw-policy list compiles to {n} kernel rules; at most "
                      f"{abi.FW_ATOMS} fit (a port range counts once, each listed port or "
                      "protocol once)", "unit", i, "fw-policy")
    return tuple(rules)


def check(units, policies, proc) -> None:
    """Config-time checks (ModelError names the unit and key): every
    fw-policy list compiles, with all time/day targets taken as active, and
    rate limits sit on units that have addresses."""
    memo: dict = {}
    default = proc.default_fw_policy
    for i, u in enumerate(units):
        if u.type == "group" and (u.bw or u.fw_policy):
            raise FwError("fw-policy and bw act on addresses: give them to the group's "
                          "members", "unit", i, "bw" if u.bw else "fw-policy")
        compile_rules(u, i, policies, units, default, None, memo)


# --- the whole plan --------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ClassSpec:
    """What a prefix of a unit (or `restrict all`) gets, before indexes."""
    sys_policy: int
    fw: abi.Fw
    rules: tuple[Rule, ...] = ()
    unit_oid: str = ""
    bw: tuple[int | None, int | None] | None = None
    portal: bool = False    # [captive]: a login-only block lets HTTP through to the page


def plan(snap, bits: Mapping[int, int], now: dt.datetime | None
         ) -> dict[tuple[bytes, int], ClassSpec]:
    """Every class the kernel should hold: (prefix, length) -> ClassSpec.

    snap: the model snapshot (its units carry the sessions' addresses);
    bits: each unit's blocks by index, resolved (sys_policy.resolve: its
    groups' included, lifted ones not); now: local time for time/day targets (None: all active)."""
    units, policies, proc = snap.units, snap.policies, snap.config.processor
    restrict = {"pass": abi.Fw.PASS, "drop": abi.Fw.DROP}
    out: dict[tuple[bytes, int], ClassSpec] = {}
    memo: dict = {}
    default_fw = proc.default_fw_policy
    for i, u in enumerate(units):
        if u.type == "group":
            continue
        prefixes = [(a, 128) for a in u.addrs] + list(u.nets)
        if not prefixes:
            continue  # a user unit without an address
        rules = compile_rules(u, i, policies, units, default_fw, now, memo)
        if rules or fw_list(u, i, policies, default_fw):
            fw = abi.Fw.RULES   # listed policies, maybe none active now: drop the rest
        else:
            local = not u.no_local_pass and bool(snap.plan.lists[i])
            fw = restrict[proc.restrict_local if local else proc.restrict_all]
        spec = ClassSpec(int(bits.get(i, 0)), fw, rules, u.oid, u.bw,
                         portal=snap.config.captive is not None)
        for pfx in prefixes:
            out.setdefault(pfx, spec)  # a unit listed twice: the first wins, as in matching
    if proc.restrict_all == "drop":
        out.setdefault(ALL, ClassSpec(0, abi.Fw.DROP))
    return out


def prefix_text(pfx: tuple[bytes, int]) -> str:
    """A class's prefix as operators write it: a host's address, else a/len."""
    return format_addr(pfx[0]) if pfx[1] == 128 else format_prefix(*pfx)


def blocks(classes: Mapping[tuple[bytes, int], ClassSpec]) -> dict[str, int]:
    """prefix text -> reason bits of every blocked class (what `acctctl` shows)."""
    return {prefix_text(k): c.sys_policy for k, c in classes.items()
            if sys_policy.verdict(c.sys_policy) == abi.Verdict.DROP}
