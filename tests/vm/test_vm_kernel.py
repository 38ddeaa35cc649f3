"""The kernel test tier and a lean integration subset again, inside a QEMU
guest running Debian 12's 6.1 kernel.

One VM boot runs all of tests/kernel, so every BPF program is proven to load
and pass the verifier on 6.1 as well as on the host's kernel. A second boot
runs real traffic through each hook mode and the daemon's drain, commit,
kill -9 and resume cycle there. Under TCG each bcc compile takes about a
minute, hence the generous timeout.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Sequence

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import run_in_vm  # noqa: E402

GUEST_TESTS = os.environ.get("ACCTD_VM_TESTS", "tests/kernel")  # relative to the repo
# Few on purpose: under TCG each test's own build of the programs (one bcc
# compile) takes about a minute, and each daemon start about 15 s. The mode
# switch sends real traffic through tc, generic and native XDP on one build,
# and checks each mode's counts exactly; the SIGKILL test is drain, commit,
# kill -9 and resume, ten times, under traffic.
INTEGRATION = tuple(os.environ.get("ACCTD_VM_INTEGRATION", "").split()) or (
    "tests/netns/test_datapath.py::test_mode_switch_counts_each_packet_once[tc-xdp-generic-tc-xdp-native-tc]",
    "tests/netns/test_pipeline.py::test_sigkill_under_traffic_loses_and_doubles_nothing",
)
TIMEOUT = float(os.environ.get("ACCTD_VM_TIMEOUT", "1800"))
# Where the tier is part of the contract (CI), a missing prerequisite must fail, not skip.
REQUIRED = os.environ.get("ACCTD_VM_REQUIRED") == "1"
# A guest test stuck this long prints its stack, so a timeout says where it hung.
HANG_DUMP_SECONDS = 600


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


def check_guest_run(result: run_in_vm.VMResult, exactly: int | None = None) -> dict[str, int]:
    """Fail unless pytest ran on 6.1 in the guest and passed: at least one
    test, or `exactly` that many with nothing skipped, deselected or xfailed."""
    tail = result.output[-4000:]
    release = re.search(r"^guest-kernel: (\S+)$", result.output, re.M)
    assert release and release.group(1).startswith("6.1."), f"guest did not run 6.1:\n{tail}"
    assert result.returncode == 0, f"pytest in the 6.1 guest exited {result.returncode}:\n{tail}"
    counts = parse_summary(result.output)
    assert counts.get("passed", 0) >= 1, f"no test passed in the guest: {counts}\n{tail}"
    assert counts.get("failed", 0) == 0 and counts.get("error", 0) == 0, f"guest failures: {counts}\n{tail}"
    if exactly is not None:
        others = {k: v for k, v in counts.items() if k not in ("passed", "warning")}
        assert counts["passed"] == exactly and not others, \
            f"expected {exactly} passed and nothing else in the guest, got {counts}\n{tail}"
    return counts


def run_guest_pytest(targets: Sequence[str]) -> run_in_vm.VMResult:
    """One boot of the 6.1 guest running pytest on `targets` (repo-relative)."""
    kernel = stable_kernel()
    problems = ["no /boot/vmlinuz-6.1.*-amd64 (apt install linux-image-amd64 on Debian 12)"] if kernel is None else []
    problems += run_in_vm.missing_prerequisites(kernel) if kernel else []
    if problems:
        (pytest.fail if REQUIRED else pytest.skip)("VM tier unavailable: " + "; ".join(problems))
    for target in targets:
        path = target.split("::")[0]
        assert (run_in_vm.REPO / path).exists(), f"{path} not found in {run_in_vm.REPO}"

    # -m "not vm" guards against the guest booting a guest of its own.
    # The guest shares the host's tree, so this venv's python is there too.
    pytest_cmd = shlex.join([
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not vm",
        "-o", f"faulthandler_timeout={HANG_DUMP_SECONDS}", *targets,
    ])
    # Processes the guest's tests start (acctd, acctctl) import what this
    # pytest imports, also when PYTHONPATH points at another tree.
    env = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}
    env["ACCTD_KILL_ROUNDS"] = "3"  # each kill -9 round is a daemon start, ~15 s emulated
    return run_in_vm.run(
        ["sh", "-c", f'echo "guest-kernel: $(uname -r)"; exec {pytest_cmd}'],
        kernel=kernel,
        timeout=TIMEOUT,
        env=env,
    )


def test_pytest_summary_parsing():
    assert parse_summary("x\n3 passed, 1 skipped, 2 warnings in 70.14s (0:01:10)\n") == {
        "passed": 3, "skipped": 1, "warning": 2,
    }  # fmt: skip
    assert parse_summary("== 1 failed, 2 passed, 1 error in 3.00s ==") == {"failed": 1, "passed": 2, "error": 1}
    assert parse_summary("no tests ran in 0.01s") == {}


def _guest(returncode: int, summary: str, release: str = "6.1.0-57-amd64") -> run_in_vm.VMResult:
    return run_in_vm.VMResult(returncode, f"guest-kernel: {release}\n...\n{summary}\n", release, 1.0, 1.0)


@pytest.mark.parametrize("returncode,summary,exactly,complaint", [
    (1, "1 failed, 3 passed in 9.00s", None, "exited 1"),
    (1, "1 failed, 3 passed in 9.00s", 4, "exited 1"),
    (0, "3 passed, 1 skipped in 9.00s", 4, "expected 4 passed"),
    (0, "4 passed, 1 xfailed in 9.00s", 4, "expected 4 passed"),
    (0, "3 passed, 1 deselected in 9.00s", 4, "expected 4 passed"),
    (0, "no tests ran in 0.01s", None, "no test passed"),
    (4, "no tests ran in 0.01s", 4, "exited 4"),  # a node id that no longer exists
])
def test_a_guest_run_that_did_not_pass_everything_fails(returncode, summary, exactly, complaint):
    with pytest.raises(AssertionError, match=complaint):
        check_guest_run(_guest(returncode, summary), exactly)


def test_a_guest_run_on_another_kernel_fails():
    with pytest.raises(AssertionError, match="guest did not run 6.1"):
        check_guest_run(_guest(0, "4 passed in 9.00s", release="6.18.44"), 4)


def test_a_clean_guest_run_passes():
    assert check_guest_run(_guest(0, "4 passed, 2 warnings in 9.00s"), 4) == {"passed": 4, "warning": 2}
    assert check_guest_run(_guest(0, "57 passed, 1 skipped in 9.00s")) == {"passed": 57, "skipped": 1}


@pytest.mark.vm
@pytest.mark.slow
@pytest.mark.root
def test_kernel_tier_passes_on_debian_stable_kernel():
    check_guest_run(run_guest_pytest([GUEST_TESTS]))


@pytest.mark.vm
@pytest.mark.slow
@pytest.mark.root
def test_integration_subset_passes_on_debian_stable_kernel():
    """Every test of the subset passes in the guest: none may skip (a tool
    or module the guest lacks), vanish (a renamed test) or fail."""
    check_guest_run(run_guest_pytest(INTEGRATION), exactly=len(INTEGRATION))
