"""Shared test setup: tests that need root (BPF, namespaces) skip elsewhere
with a reason; CI runs as root, so there they all run."""

import os

import pytest

NEEDS_ROOT = "needs root for BPF and network namespaces (CI runs it as root)"


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason=NEEDS_ROOT)
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
