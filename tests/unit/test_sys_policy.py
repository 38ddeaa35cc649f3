"""NeTAMS system-policy arithmetic (pure)."""

import pytest

from acctd.kernel.abi import SysPolicy, Verdict
from acctd.model import sys_policy


def test_deny_reasons_accumulate_and_allow_lifts_them():
    b = sys_policy.from_words(["sys-deny-quota", "sys–deny–money"])  # the reference's dashes too
    assert b == SysPolicy.QUOTA | SysPolicy.MONEY and sys_policy.verdict(b) == Verdict.DROP
    b = sys_policy.apply(b, "sys-allow-quota")
    assert b == SysPolicy.MONEY and sys_policy.words(b) == ["sys-deny-money"]
    assert sys_policy.verdict(sys_policy.apply(b, "sys-allow-money")) == Verdict.PASS


def test_sys_allow_lifts_everything_and_sys_deny_blocks_everything():
    b = sys_policy.from_words(["sys-deny", "sys-deny-login"])
    assert b == SysPolicy.DENY | SysPolicy.LOGIN
    assert sys_policy.apply(b, "sys-allow") == SysPolicy.ALLOW
    assert sys_policy.verdict(SysPolicy.ALLOW) == Verdict.PASS
    # a new deny after sys-allow blocks again
    assert sys_policy.apply(SysPolicy.ALLOW, "sys-deny-quota") == SysPolicy.QUOTA


def test_unknown_words_say_what_is_expected():
    with pytest.raises(ValueError, match="expected sys-deny, sys-allow"):
        sys_policy.apply(0, "sys-deny-everything")
