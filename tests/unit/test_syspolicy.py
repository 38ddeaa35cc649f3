"""NeTAMS system-policy arithmetic (pure)."""

import pytest

from acctd import syspolicy
from acctd.abi import Reason, Verdict


def test_deny_reasons_accumulate_and_allow_lifts_them():
    b = syspolicy.from_words(["sys-deny-quota", "sys–deny–money"])  # the reference's dashes too
    assert b == Reason.QUOTA | Reason.MONEY and syspolicy.verdict(b) == Verdict.DROP
    b = syspolicy.apply(b, "sys-allow-quota")
    assert b == Reason.MONEY and syspolicy.words(b) == ["sys-deny-money"]
    assert syspolicy.verdict(syspolicy.apply(b, "sys-allow-money")) == Verdict.PASS


def test_sys_allow_lifts_everything_and_sys_deny_blocks_everything():
    b = syspolicy.from_words(["sys-deny", "sys-deny-login"])
    assert b == Reason.SYS_DENY | Reason.LOGIN
    assert syspolicy.apply(b, "sys-allow") == Reason.SYS_ALLOW
    assert syspolicy.verdict(Reason.SYS_ALLOW) == Verdict.PASS
    # a new deny after sys-allow blocks again
    assert syspolicy.apply(Reason.SYS_ALLOW, "sys-deny-quota") == Reason.QUOTA


def test_unknown_words_say_what_is_expected():
    with pytest.raises(ValueError, match="expected sys-deny, sys-allow"):
        syspolicy.apply(0, "sys-deny-everything")
