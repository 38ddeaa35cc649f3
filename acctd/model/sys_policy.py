"""NeTAMS system policies: per-unit blocks by reason, as kernel verdicts.

    sys-deny                 block everything (admin)
    sys-allow                lift every block the unit (and, for a group, each
                             member) has at that moment
    sys-deny-ACTION          block for a reason: quota, login, money, mac,
                             auth (authentication refused: `login` fails too),
                             block (the billing account is blocked)
    sys-allow-ACTION         lift that reason only, the same way
    sys-deny-OID             drop the unit's traffic with unit OID (its
                             addresses, a group's members'), whatever else
                             would pass it
    sys-allow-OID            pass the unit's traffic with unit OID, whatever
                             would block it (a payment server reachable while
                             blocked for money); both are config words, on a
                             unit or a group (its members inherit them)

A block reaches a unit from its own admin words, from the services (quota,
login, mac hold their blocks) and from its groups. sys-allow is not a
standing override: it clears the admin words and records the reasons that
reached the unit then as *lifted*. A lifted reason stays lifted while it
keeps reaching the unit; once it stops (the quota period turns, the login
is made), the next block of that reason blocks again, as does any admin
deny word given later (to the unit or to a group above it).

A unit's stored state is one integer: its admin deny bits (abi.SysPolicy)
and, LIFTED_SHIFT above them, its lifted reasons. What the kernel gets for
each address (acct_class.sys_policy) is the resolved result: the reasons
that reach the unit minus the lifted ones; DROP while any is set
(acct_enforce in acct_lib.h). The core never writes SysPolicy.ALLOW, so
what `acctctl units --sys-policy` shows is what the kernel does.
Pure: the daemon applies the result to the datapath.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping

from acctd.kernel.abi import SysPolicy, Verdict
from acctd.model.units import normalize_oid

ACTIONS = {"quota": SysPolicy.QUOTA, "login": SysPolicy.LOGIN, "money": SysPolicy.MONEY,
           "mac": SysPolicy.MAC, "auth": SysPolicy.AUTH, "block": SysPolicy.BLOCK}
DENY_BITS = functools.reduce(operator.or_, ACTIONS.values(), SysPolicy.DENY)
LIFTED_SHIFT = 8  # the stored state: deny bits, and the lifted reasons above them


def _words(word: str) -> tuple[str, str]:
    w = word.replace("–", "-").lower().removeprefix("sys-")
    kind, _, rest = w.partition("-")
    return kind, rest


def peer(word: str) -> tuple[str, bool] | None:
    """sys-deny-OID / sys-allow-OID -> (oid, allow); None for any other word."""
    kind, rest = _words(word)
    if kind not in ("deny", "allow") or not rest or rest in ACTIONS:
        return None
    try:
        return normalize_oid(rest), kind == "allow"
    except ValueError:
        return None


def peers(words) -> dict[str, bool]:
    """The peer words of a `sys-policy` list: oid -> allow; the last word about an oid wins."""
    out: dict[str, bool] = {}
    for w in words:
        p = peer(w)
        if p:
            out.pop(p[0], None)
            out[p[0]] = p[1]
    return out


def _parse(word: str) -> tuple[str, int]:
    """("deny" | "allow", the reasons it names)."""
    kind, action = _words(word)
    if kind in ("deny", "allow") and not action:
        return kind, (SysPolicy.DENY if kind == "deny" else DENY_BITS)
    if kind in ("deny", "allow") and action in ACTIONS:
        return kind, ACTIONS[action]
    if peer(word):
        raise ValueError(f"{word}: sys-deny-OID and sys-allow-OID are configuration words; "
                         "write them in the unit's sys-policy and reload")
    raise ValueError(f"unknown system policy {word!r}; expected sys-deny, sys-allow, "
                     f"sys-deny-/sys-allow-{{{','.join(ACTIONS)}}} or sys-deny-/sys-allow-OID")


def parse(word: str) -> tuple[str, int]:
    """One word: ("deny" | "allow", the abi.SysPolicy bits it names)."""
    return _parse(word)


def state(deny: int, lifted: int = 0) -> int:
    return (deny & DENY_BITS) | ((lifted & DENY_BITS) << LIFTED_SHIFT)


def split(stored: int) -> tuple[int, int]:
    """(deny bits, lifted reasons) of a stored state. A state written before
    lifting existed had SysPolicy.ALLOW, the standing override: it lifts
    whatever reaches the unit now, and nothing that comes later."""
    if stored & SysPolicy.ALLOW:
        return stored & DENY_BITS, DENY_BITS
    return stored & DENY_BITS, (stored >> LIFTED_SHIFT) & DENY_BITS


def from_words(words) -> int:
    """The state of a config's `sys-policy` list. The config has no moment to
    lift at, so a sys-allow(-ACTION) there only cancels the denies before it."""
    deny = 0
    for w in words:
        if peer(w):
            continue  # not a block: peers() reads them
        kind, bits = _parse(w)
        deny = deny | bits if kind == "deny" else deny & ~bits
    return state(deny)


def give(states: Mapping[int, int], units, i: int, word: str,
         reaching: Mapping[int, int]) -> dict[int, int]:
    """An admin's word to unit i: the states that change, by unit index.

    states: every unit's stored state; reaching: the reasons reaching each
    unit now (resolve()). A deny word sets its bit on i and un-lifts it on i
    and its members (a new block reaches them); an allow word clears the
    named admin bits on i and its members and lifts what reaches them now."""
    kind, bits = _parse(word)
    out = {}
    for j in [i, *units.descendants(i)]:
        deny, lifted = split(states.get(j, 0))
        if kind == "deny":
            if j == i:
                deny |= bits
            lifted &= ~bits
        else:
            deny &= ~bits
            lifted |= reaching.get(j, 0) & bits
        out[j] = state(deny, lifted)
    return out


def resolve(units, states: Mapping[int, int], held: Mapping[int, int]
            ) -> tuple[dict[int, int], dict[int, int], dict[int, int]]:
    """(blocks, reaching, pruned): by unit index, the reasons that block it
    (what the kernel gets), the reasons that reach it before lifting, and
    the states whose lifted reasons no longer reach them (to store).

    held: the services' blocks by unit index. A group's blocks reach its
    members; lifting is each unit's own."""
    own = {}
    for j in set(states) | set(held):
        deny, _ = split(states.get(j, 0))
        if deny | held.get(j, 0):
            own[j] = deny | held.get(j, 0)
    blocks, reaching, pruned = {}, {}, {}
    for j in range(len(units.units)):
        r = own.get(j, 0)
        for g in units.ancestors[j]:
            r |= own.get(g, 0)
        deny, lifted = split(states.get(j, 0))
        if lifted & ~r or (states.get(j, 0) & SysPolicy.ALLOW):
            pruned[j] = state(deny, lifted & r)
        lifted &= r
        if r:
            reaching[j] = r
        if r & ~lifted:
            blocks[j] = r & ~lifted
    return blocks, reaching, pruned


def verdict(bits: int) -> Verdict:
    """What the kernel does (acct_enforce): drop while a deny bit is set,
    unless SysPolicy.ALLOW is set (the kernel still honours it; acctd no
    longer writes it, see above)."""
    return Verdict.DROP if bits & DENY_BITS and not bits & SysPolicy.ALLOW else Verdict.PASS


def words(bits: int) -> list[str]:
    """NeTAMS spelling of the blocks in force, for `acctctl units --sys-policy`."""
    out = []
    if bits & SysPolicy.DENY:
        out.append("sys-deny")
    out += [f"sys-deny-{a}" for a, bit in ACTIONS.items() if bits & bit]
    return out
