"""acctctl: every command has help, and --help stays light (no bcc import)."""

import subprocess
import sys

from click.testing import CliRunner

from acctctl.main import main


def test_every_command_has_help():
    r = CliRunner()
    top = r.invoke(main, ["--help"])
    assert top.exit_code == 0
    for name, cmd in main.commands.items():
        res = r.invoke(main, [name, "--help"])
        assert res.exit_code == 0, name
        assert cmd.help and cmd.help.split("\n")[0] in res.output, name


def test_help_does_not_import_bcc_numpy_or_pyroute2():
    code = ("import sys; from acctctl.main import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('bcc', 'numpy', 'pyroute2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_show_without_datapath_says_what_to_do(tmp_path):
    res = CliRunner().invoke(main, ["--pin-root", str(tmp_path / "nothing"), "show"])
    assert res.exit_code == 3
    assert "acctctl attach" in res.output
