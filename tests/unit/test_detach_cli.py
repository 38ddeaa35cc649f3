"""acctctl detach with nothing pinned says so and fails (it said "detached 0
interface(s), pins removed" and exited 0)."""

from click.testing import CliRunner

from acctd.kernel import abi

from acctctl.main import main


def test_detach_of_a_pin_root_that_does_not_exist_says_there_is_nothing_to_detach(tmp_path):
    root = tmp_path / "nothing"
    res = CliRunner().invoke(main, ["--pin-root", str(root), "detach"])
    assert (res.exit_code, res.output) == (
        3, f"acctctl: nothing to detach: no acctd datapath pinned under {abi.pin_dir(str(root))}\n")
    assert not root.exists()
