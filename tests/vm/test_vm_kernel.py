"""The kernel test tier again, inside a QEMU guest running Debian 12's 6.1 kernel.

One VM boot runs all of tests/kernel, so every BPF program is proven to load
and pass the verifier on 6.1 as well as on the host's kernel. Under TCG each
bcc compile takes about a minute, hence the generous timeout.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import run_in_vm  # noqa: E402

GUEST_TESTS = os.environ.get("ACCTD_VM_TESTS", "tests/kernel")  # relative to the repo
TIMEOUT = float(os.environ.get("ACCTD_VM_TIMEOUT", "1800"))
# Where the tier is part of the contract (CI), a missing prerequisite must fail, not skip.
REQUIRED = os.environ.get("ACCTD_VM_REQUIRED") == "1"


def stable_kernel() -> Path | None:
    """ACCTD_VM_KERNEL, else the newest Debian 6.1 image in /boot."""
    if os.environ.get("ACCTD_VM_KERNEL"):
        return Path(os.environ["ACCTD_VM_KERNEL"])
    images = glob.glob("/boot/vmlinuz-6.1.*-amd64")
    return Path(max(images, key=run_in_vm.kernel_sort_key)) if images else None


def parse_summary(output: str) -> dict[str, int]:
    """Counts from pytest's final line, e.g. '3 passed, 1 skipped in 70.14s (0:01:10)'."""
    for line in reversed(output.splitlines()):
        line = line.strip(" =")
        if re.search(r"\bin [\d.]+s\b", line) and re.match(r"(\d+ \w+|no tests ran)", line):
            counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", line.split(" in ")[0])}
            # pytest says "1 error" but "2 errors", "1 warning" but "2 warnings".
            return {k.rstrip("s") if k in ("errors", "warnings") else k: v for k, v in counts.items()}
    raise AssertionError("no pytest summary line in the guest's output:\n" + output[-3000:])


def test_pytest_summary_parsing():
    assert parse_summary("x\n3 passed, 1 skipped, 2 warnings in 70.14s (0:01:10)\n") == {
        "passed": 3, "skipped": 1, "warning": 2,
    }  # fmt: skip
    assert parse_summary("== 1 failed, 2 passed, 1 error in 3.00s ==") == {"failed": 1, "passed": 2, "error": 1}
    assert parse_summary("no tests ran in 0.01s") == {}


@pytest.mark.vm
@pytest.mark.slow
@pytest.mark.root
def test_kernel_tier_passes_on_debian_stable_kernel():
    kernel = stable_kernel()
    problems = ["no /boot/vmlinuz-6.1.*-amd64 (apt install linux-image-amd64 on Debian 12)"] if kernel is None else []
    problems += run_in_vm.missing_prerequisites(kernel) if kernel else []
    if problems:
        (pytest.fail if REQUIRED else pytest.skip)("VM tier unavailable: " + "; ".join(problems))
    assert (run_in_vm.REPO / GUEST_TESTS).exists(), f"{GUEST_TESTS} not found in {run_in_vm.REPO}"

    # -m "not vm" guards against the guest booting a guest of its own.
    # The guest shares the host's tree, so this venv's python is there too.
    pytest_cmd = shlex.join(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not vm", GUEST_TESTS]
    )
    result = run_in_vm.run(
        ["sh", "-c", f'echo "guest-kernel: $(uname -r)"; exec {pytest_cmd}'],
        kernel=kernel,
        timeout=TIMEOUT,
    )
    tail = result.output[-4000:]

    release = re.search(r"^guest-kernel: (\S+)$", result.output, re.M)
    assert release and release.group(1).startswith("6.1."), f"guest did not run 6.1:\n{tail}"
    assert result.returncode == 0, f"pytest in the 6.1 guest exited {result.returncode}:\n{tail}"
    counts = parse_summary(result.output)
    assert counts.get("passed", 0) >= 1, f"no test passed in the guest: {counts}\n{tail}"
    assert counts.get("failed", 0) == 0 and counts.get("error", 0) == 0, f"guest failures: {counts}\n{tail}"
