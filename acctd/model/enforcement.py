"""Enforcement: units, system policies, fw-policies, `restrict` and `bw`
compiled into the datapath's tables (pure), and applied to them (Enforcer).

What the kernel does with a packet of local address A (bpf/acct_lib.h):
- A's class is the most specific acct_classes prefix holding A: one per
  address or prefix of every unit, plus ::/0 for `restrict all` when that
  drops. No class: pass.
- sys-allow-OID / sys-deny-OID come first, at every hook: traffic with
  that unit's addresses passes / is dropped whatever follows (a unit's
  own words, then its groups').
- A deny bit in the class's reason drops at every hook (sys-deny, quota,
  login, money, mac, auth, block): the unit's blocks as resolved by model/sys_policy.py
  (groups' included, lifted ones not). fw-policies do not count as blocks:
  sys-allow does not lift them.
- fw-policies (NeTAMS >= 3.3): the traffic of the unit's listed policies
  passes, everything else is dropped. A unit without fw-policies gets
  `restrict local`; one that is no-local-pass or has neither acct- nor
  fw-policies gets `restrict all`, as do addresses of no unit.
- A service's fw_blocks() (a quota's block-policy) put rules before the
  unit's fw-policies whose match drops: only that policy's traffic stops.
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
from acctd.model.policies import (Addr, As, Day, Ds, File, Ifindex, PolicyRefs, Ports, Proto, Time, Tos,
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
        if any(side != "b" for side, _lo, _hi in term.items):
            raise FwError("ifindex sN/dN (input/output interface) is known to accounting "
                          "only; a fw-policy tests the interface of the hook: write ifindex N")
        if sum(hi - lo + 1 for _s, lo, hi in term.items) > abi.FW_ATOMS:
            raise FwError(f"ifindex lists more than {abi.FW_ATOMS} interfaces: each is a "
                          "kernel rule")
        return [Atom(ifindex=i) for _s, lo, hi in term.items for i in range(lo, hi + 1)]
    if isinstance(term, As):
        raise FwError("target 'as' is looked up at drain time, for accounting only; "
                      "a fw-policy cannot use it")
    if isinstance(term, Ds):
        raise FwError("target 'ds' is the data source of a flow, known to accounting only; "
                      "the kernel sees its own traffic alone")
    if isinstance(term, Addr):  # re-read the text: a PrefixTable keeps no list
        return [Atom(addr_set=frozenset(_prefixes_of(term.text)), any_side=True)]
    if isinstance(term, File):
        return [Atom(addr_set=frozenset(_masked(*p) for p in read_prefix_file(term.path)))]
    if isinstance(term, Units):
        prefixes = frozenset().union(*(unit_prefixes(units, units.find(k)) for k in term.keys))
        return [Atom(addr_set=prefixes)] if prefixes else []
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


def unit_prefixes(units, i: int) -> frozenset[tuple[bytes, int]]:
    """The addresses and nets of unit i and of everything below it."""
    out: set[tuple[bytes, int]] = set()
    for j in [i, *units.descendants(i)]:
        u = units.units[j]
        out |= {(a, 128) for a in u.addrs} | set(u.nets)
    return frozenset(out)


def peer_list(units, i: int) -> tuple[tuple[str, bool], ...]:
    """Unit i's sys-allow-OID / sys-deny-OID as (oid, allow): its own words,
    then its groups' for the oids it does not name itself."""
    out: dict[str, bool] = {}
    for j in [i, *units.ancestors[i]]:
        for oid, allow in sys_policy.peers(units.units[j].sys_policy).items():
            out.setdefault(oid, allow)
    return tuple(out.items())


def peers(units, i: int) -> tuple[tuple[frozenset, bool], ...]:
    """Unit i's peer rules as (prefixes of the peer unit, allow), in order;
    a peer without addresses matches nothing and is left out."""
    out = []
    for oid, allow in peer_list(units, i):
        prefixes = unit_prefixes(units, units.find(oid))
        if prefixes:
            out.append((frozenset(_masked(*p) for p in prefixes), allow))
    return tuple(out)


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
    deny: bool = False   # its match drops (a quota's block-policy), listed first


PASS_REST = Rule((Atom(),), False, "", None)  # after deny rules on an unrestricted unit


def fw_list(u, i: int, policies, default: Sequence[str]) -> list[tuple[int, bool]]:
    """A unit's fw-policy list as (policy index, inverted): the default list
    unless nodefault or fp-nodefault, then its own entries."""
    out: list[tuple[int, bool]] = []
    texts = ([] if u.nodefault or u.fp_nodefault else list(default)) + list(u.fw_policy)
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


def deny_rules(texts: Sequence[str], i: int, policies, units, now, memo) -> tuple[Rule, ...]:
    """The policies a service blocks for unit i ("icmp", "!web"): rules whose
    match drops, evaluated before the unit's own fw-policies."""
    rules = []
    for text in texts:
        try:
            name, inv, _stop = parse_acct_entry(text)
            k = policies.find(name)
            atoms = policy_atoms(k, policies, units, now, memo)
        except (ValueError, KeyError, FwError) as e:
            raise FwError(f"block-policy {text}: {e.args[0]}", "unit", i) from None
        if inv:  # !p blocks what p does not: an empty p blocks everything
            if not atoms:
                atoms, inv = [Atom()], False
            elif Atom() in atoms:
                continue
        elif not atoms:
            continue  # inactive now: blocks nothing
        rules.append(Rule(tuple(atoms), inv, policies.policies[k].oid, None, deny=True))
    return tuple(rules)


def with_denials(spec: "ClassSpec", deny: tuple[Rule, ...], i: int) -> "ClassSpec":
    """A unit's class with deny rules put in front; a unit that drops
    everything anyway stays as it is."""
    if not deny or spec.fw == abi.Fw.DROP:
        return spec
    rules = deny + (spec.rules if spec.fw == abi.Fw.RULES else (PASS_REST,))
    n = sum(len(r.atoms) for r in rules)
    if n > abi.FW_ATOMS:
        raise FwError(f"block-policy and fw-policy list compile to {n} kernel rules; at most "
                      f"{abi.FW_ATOMS} fit", "unit", i)
    return dataclasses.replace(spec, fw=abi.Fw.RULES, rules=rules)


def deny_error(snap, unit: str, texts: Sequence[str]) -> str | None:
    """Why `texts` cannot be a block-policy of unit (oid or name), or None."""
    i = snap.units.find(unit)
    try:
        with_denials(unit_class(snap, i, 0, None, {}),
                     deny_rules(texts, i, snap.policies, snap.units, None, {}), i)
    except FwError as e:
        return e.args[0]
    return None


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
        for oid in sys_policy.peers(u.sys_policy):
            try:
                units.find(oid)
            except KeyError:
                raise FwError(f"no unit has oid {oid} (sys-deny-OID, sys-allow-OID)", "unit", i,
                              "sys-policy") from None
        if len(peer_list(units, i)) > abi.FW_ATOMS:
            raise FwError(f"at most {abi.FW_ATOMS} sys-allow-OID / sys-deny-OID reach a unit "
                          "(its own and its groups')", "unit", i, "sys-policy")


# --- the whole plan --------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ClassSpec:
    """What a prefix of a unit (or `restrict all`) gets, before indexes."""
    sys_policy: int
    fw: abi.Fw
    rules: tuple[Rule, ...] = ()
    unit_oid: str = ""
    bw: tuple[int | None, int | None] | None = None
    peers: tuple[tuple[frozenset, bool], ...] = ()  # sys-allow-OID / sys-deny-OID
    portal: bool = False    # [captive]: a login-only block lets HTTP through to the page


def unit_class(snap, i: int, bits: int, now: dt.datetime | None, memo) -> ClassSpec:
    """Unit i's class: its blocks, its fw-policies compiled, else `restrict`."""
    u, units, policies, proc = snap.units.units[i], snap.units, snap.policies, \
        snap.config.processor
    rules = compile_rules(u, i, policies, units, proc.default_fw_policy, now, memo)
    if rules or fw_list(u, i, policies, proc.default_fw_policy):
        fw = abi.Fw.RULES   # listed policies, maybe none active now: drop the rest
    else:
        local = not u.no_local_pass and bool(snap.plan.lists[i])
        fw = abi.Fw.DROP if (proc.restrict_local if local else proc.restrict_all) == "drop" \
            else abi.Fw.PASS
    return ClassSpec(bits, fw, rules, u.oid, u.bw, peers(units, i),
                     portal=snap.config.captive is not None)


def plan(snap, bits: Mapping[int, int], now: dt.datetime | None,
         denied: Mapping[str, tuple[Sequence[str], int]] | None = None
         ) -> dict[tuple[bytes, int], ClassSpec]:
    """Every class the kernel should hold: (prefix, length) -> ClassSpec.

    snap: the model snapshot (its units carry the sessions' addresses);
    bits: each unit's blocks by index, resolved (sys_policy.resolve: its
    groups' included, lifted ones not); now: local time for time/day targets
    (None: all active); denied: {unit oid: (policies whose traffic drops,
    the block bits to hold instead if they do not compile or fit)}, the
    services' fw_blocks() (a quota's block-policy)."""
    denied = denied or {}
    units, proc = snap.units, snap.config.processor
    out: dict[tuple[bytes, int], ClassSpec] = {}
    memo: dict = {}
    for i, u in enumerate(units):
        if u.type == "group":
            continue
        prefixes = [(a, 128) for a in u.addrs] + list(u.nets)
        if not prefixes:
            continue  # a user unit without an address
        spec = unit_class(snap, i, int(bits.get(i, 0)), now, memo)
        if u.oid in denied:
            texts, instead = denied[u.oid]
            try:
                spec = with_denials(spec, deny_rules(texts, i, snap.policies, units, now, memo),
                                    i)
            except FwError:  # the service was told at set time (deny_error); block it all
                spec = dataclasses.replace(spec, sys_policy=spec.sys_policy | instead)
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
