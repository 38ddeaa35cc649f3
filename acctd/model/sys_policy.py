"""NeTAMS system policies: per-unit blocks by reason, as kernel verdicts.

    sys-deny                 block everything (admin); other blocks stay
    sys-allow                lift every block: passes whatever else is set, until
                             a sys-deny word ends the override
    sys-deny-ACTION          block for a reason: quota, login, money, mac
    sys-allow-ACTION         lift that reason only

A unit's state is a bitmask of abi.SysPolicy. Every address of the unit gets
verdict DROP while any deny bit is set, with the bits as its reason; with
ALLOW among them the kernel passes anyway (acct_enforce in acct_lib.h).
Pure: the daemon applies the result to the datapath.
"""

from __future__ import annotations

from collections.abc import Mapping

from acctd.kernel.abi import SysPolicy, Verdict

ACTIONS = {"quota": SysPolicy.QUOTA, "login": SysPolicy.LOGIN, "money": SysPolicy.MONEY,
           "mac": SysPolicy.MAC}
DENY_BITS = SysPolicy.DENY | SysPolicy.QUOTA | SysPolicy.LOGIN | SysPolicy.MONEY | SysPolicy.MAC


def apply(bits: int, word: str) -> int:
    """The state after one policy word ("sys-deny-quota" or "deny-quota")."""
    w = word.replace("–", "-").lower().removeprefix("sys-")
    if w == "deny":
        return (bits | SysPolicy.DENY) & ~SysPolicy.ALLOW  # a new deny ends the override
    if w == "allow":
        return SysPolicy.ALLOW  # "снять все запреты": every block lifted
    kind, _, action = w.partition("-")
    if kind in ("deny", "allow") and action in ACTIONS:
        bit = ACTIONS[action]
        if kind == "deny":
            return (bits | bit) & ~SysPolicy.ALLOW
        return bits & ~bit
    raise ValueError(f"unknown system policy {word!r}; expected sys-deny, sys-allow or "
                     f"sys-deny-/sys-allow-{{{','.join(ACTIONS)}}}")


def from_words(words) -> int:
    bits = 0
    for w in words:
        bits = apply(bits, w)
    return bits


def effective(bits: Mapping[int, int], units, i: int) -> int:
    """Unit i's state with its groups' (a group's block reaches its
    members); bits: the states by unit index."""
    b = bits.get(i, 0)
    for g in units.ancestors[i]:
        b |= bits.get(g, 0)
    return b


def verdict(bits: int) -> Verdict:
    """What the kernel does (acct_enforce): drop while a deny bit is set,
    unless sys-allow overrides them all (quota and login blocks included,
    until a sys-deny word ends the override)."""
    return Verdict.DROP if bits & DENY_BITS and not bits & SysPolicy.ALLOW else Verdict.PASS


def words(bits: int) -> list[str]:
    """NeTAMS spelling of a state, for `acctctl units --sys-policy`."""
    out = []
    if bits & SysPolicy.ALLOW:
        out.append("sys-allow")
    if bits & SysPolicy.DENY:
        out.append("sys-deny")
    out += [f"sys-deny-{a}" for a, bit in ACTIONS.items() if bits & bit]
    return out
