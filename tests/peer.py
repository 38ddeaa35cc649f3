"""What a test does when a real peer (a Debian program, PostgreSQL, a
browser) cannot run here: it skips with the reason, except where the peers
are required (ACCTD_PEERS_REQUIRED=1, as CI sets it after installing them),
where a skip would hide a regression, so it fails."""

import os

import pytest


def missing_peer(reason: str):
    if os.environ.get("ACCTD_PEERS_REQUIRED") == "1":
        pytest.fail(f"peer required but unavailable: {reason} (ACCTD_PEERS_REQUIRED=1)")
    pytest.skip(reason)
