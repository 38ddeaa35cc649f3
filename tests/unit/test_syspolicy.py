"""NeTAMS system-policy arithmetic (pure)."""

import pytest

from acctd.kernel.abi import Reason, Verdict
from acctd.model import sys_policy


def test_deny_reasons_accumulate_and_allow_lifts_them():
    b = sys_policy.from_words(["sys-deny-quota", "sys–deny–money"])  # the reference's dashes too
    assert b == Reason.QUOTA | Reason.MONEY and sys_policy.verdict(b) == Verdict.DROP
    b = sys_policy.apply(b, "sys-allow-quota")
    assert b == Reason.MONEY and sys_policy.words(b) == ["sys-deny-money"]
    assert sys_policy.verdict(sys_policy.apply(b, "sys-allow-money")) == Verdict.PASS


def test_sys_allow_lifts_everything_and_sys_deny_blocks_everything():
    b = sys_policy.from_words(["sys-deny", "sys-deny-login"])
    assert b == Reason.SYS_DENY | Reason.LOGIN
    assert sys_policy.apply(b, "sys-allow") == Reason.SYS_ALLOW
    assert sys_policy.verdict(Reason.SYS_ALLOW) == Verdict.PASS
    # a new deny after sys-allow blocks again
    assert sys_policy.apply(Reason.SYS_ALLOW, "sys-deny-quota") == Reason.QUOTA


def test_unknown_words_say_what_is_expected():
    with pytest.raises(ValueError, match="expected sys-deny, sys-allow"):
        sys_policy.apply(0, "sys-deny-everything")
