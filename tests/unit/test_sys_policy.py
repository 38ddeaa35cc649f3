"""NeTAMS system-policy arithmetic (pure): admin words, the services' held
blocks, groups, and what sys-allow lifts (acctd/model/sys_policy.py)."""

import pytest

from acctd.kernel.abi import SysPolicy, Verdict
from acctd.model import sys_policy
from acctd.model.addresses import parse_addr
from acctd.model.units import Unit, UnitSet

Q, L, D, M = SysPolicy.QUOTA, SysPolicy.LOGIN, SysPolicy.DENY, SysPolicy.MONEY


def subs():
    """Group `subs` (0) with members alice (1) and bob (2); carol (3) alone."""
    return UnitSet([Unit("group", "subs"),
                    Unit("host", "alice", addrs=(parse_addr("10.0.0.1"),), parents=("subs",)),
                    Unit("host", "bob", addrs=(parse_addr("10.0.0.2"),), parents=("subs",)),
                    Unit("host", "carol", addrs=(parse_addr("10.0.0.3"),))])


class Unitsim:
    """The core's bookkeeping in miniature: stored states, held blocks."""

    def __init__(self):
        self.units, self.states, self.held = subs(), {}, {}

    def resolve(self):
        blocks, reaching, pruned = sys_policy.resolve(self.units, self.states, self.held)
        self.states.update(pruned)
        return blocks, reaching

    def give(self, name, word):
        _, reaching = self.resolve()
        self.states.update(sys_policy.give(self.states, self.units, self.units.find(name),
                                           word, reaching))
        return self.resolve()[0]


def test_deny_reasons_accumulate_and_allow_lifts_them():
    b = sys_policy.from_words(["sys-deny-quota", "sys–deny–money"])  # the reference's dashes too
    assert b == Q | M and sys_policy.verdict(b) == Verdict.DROP
    assert sys_policy.words(b) == ["sys-deny-quota", "sys-deny-money"]
    assert sys_policy.from_words(["sys-deny-quota", "sys-deny-money", "sys-allow-quota"]) == M
    assert sys_policy.from_words(["sys-deny", "sys-deny-login", "sys-allow"]) == 0


def test_a_groups_block_reaches_its_members_only():
    s = Unitsim()
    assert s.give("subs", "sys-deny") == {0: D, 1: D, 2: D}
    s.held = {2: Q}
    assert s.resolve()[0] == {0: D, 1: D, 2: D | Q}


def test_sys_allow_on_a_group_lifts_what_exists_and_a_later_quota_blocks():
    """The issue's case: subs sys-deny, subs sys-allow, then a hard quota on
    bob (a member): bob is blocked, for quota, and nobody else is."""
    s = Unitsim()
    s.give("subs", "sys-deny")
    assert s.give("subs", "sys-allow") == {}
    s.held = {2: Q}
    assert s.resolve()[0] == {2: Q}
    assert sys_policy.words(Q) == ["sys-deny-quota"]


def test_a_block_held_when_sys_allow_is_given_stays_lifted_until_it_ends():
    s = Unitsim()
    s.held = {2: Q | L}
    assert s.resolve()[0] == {2: Q | L}
    assert s.give("bob", "sys-allow") == {}
    assert s.resolve()[0] == {}                 # still held, still lifted
    s.held = {2: L}                             # the quota period turned
    assert s.resolve()[0] == {}
    s.held = {2: L | Q}                         # over quota again: a new block
    assert s.resolve()[0] == {2: Q}


def test_a_login_block_arriving_after_sys_allow_blocks():
    s = Unitsim()
    s.give("carol", "sys-allow")
    s.held = {3: L}
    assert s.resolve()[0] == {3: L}


def test_sys_allow_action_lifts_that_reason_only():
    s = Unitsim()
    s.held = {1: Q | L}
    assert s.give("alice", "sys-allow-quota") == {1: L}
    assert s.give("alice", "sys-deny-quota") == {1: Q | L}   # an admin deny is a new block


def test_a_later_deny_on_a_group_reaches_a_member_that_was_allowed():
    s = Unitsim()
    s.give("subs", "sys-deny")
    assert s.give("alice", "sys-allow") == {0: D, 2: D}      # the group's block lifted for alice
    assert s.give("subs", "sys-deny") == {0: D, 1: D, 2: D}


def test_a_state_stored_with_the_old_standing_override_lifts_only_what_exists():
    s = Unitsim()
    s.states = {2: int(SysPolicy.ALLOW)}
    s.held = {2: Q}
    assert s.resolve()[0] == {}
    assert s.states[2] == sys_policy.state(0, Q)  # rewritten in the new form
    s.held = {}
    s.resolve()
    s.held = {2: Q}
    assert s.resolve()[0] == {2: Q}


def test_unknown_words_say_what_is_expected():
    with pytest.raises(ValueError, match="expected sys-deny, sys-allow"):
        sys_policy.from_words(["sys-deny-everything"])


def test_auth_and_block_are_reasons_of_their_own():
    A, B = SysPolicy.AUTH, SysPolicy.BLOCK
    assert sys_policy.from_words(["sys-deny-auth", "sys–deny–block"]) == A | B
    assert sys_policy.from_words(["sys-deny-auth", "sys-deny-block", "sys-allow-auth"]) == B
    assert sys_policy.words(A | B | Q) == ["sys-deny-quota", "sys-deny-auth", "sys-deny-block"]
    assert sys_policy.verdict(A) == sys_policy.verdict(B) == Verdict.DROP
    s = Unitsim()
    s.held = {1: Q}
    assert s.give("alice", "sys-deny-auth") == {1: Q | A}
    assert s.give("alice", "sys-allow-auth") == {1: Q}       # lifts auth only
    assert s.give("alice", "sys-deny-block") == {1: Q | B}
    assert s.give("alice", "sys-allow") == {}


def test_peer_words_name_a_unit_and_are_not_blocks():
    words = ["sys-deny-money", "sys-allow-21949", "sys–deny–0A0001", "sys-deny-021949"]
    assert sys_policy.peers(words) == {"0A0001": False, "021949": False}  # the last word wins
    assert sys_policy.from_words(words) == M
    assert sys_policy.peer("sys-deny-mac") is None and sys_policy.peer("sys-deny") is None
    with pytest.raises(ValueError, match="configuration words; write them in the unit's"):
        sys_policy.give({}, subs(), 1, "sys-allow-0A0001", {})
    with pytest.raises(ValueError, match="unknown system policy 'sys-deny-xyz'"):
        sys_policy.from_words(["sys-deny-xyz"])
