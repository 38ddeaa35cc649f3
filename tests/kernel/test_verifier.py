"""The programs keep room under the verifier's budget on the kernel they
run on (the VM tier runs this on Debian's 6.1 as well, whose verifier walks
the same programs further than newer ones do)."""

import pytest

from acctd.kernel import syscalls

pytestmark = [pytest.mark.root, pytest.mark.kernel]

# BPF_COMPLEXITY_LIMIT_INSNS; a program walking more is refused (E2BIG)
LIMIT = 1_000_000


def test_every_program_leaves_a_quarter_of_the_budget(datapath):
    walked = {name: syscalls.prog_info(fd).verified_insns for name, fd in datapath.prog_fds.items()}
    if not any(walked.values()):
        pytest.skip("this kernel does not report verified instructions (before 5.16)")
    over = {name: n for name, n in walked.items() if n > LIMIT * 3 // 4}
    assert not over, f"verified instructions near the limit of {LIMIT}: {over} (all: {walked})"
