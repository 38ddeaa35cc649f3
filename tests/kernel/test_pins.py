"""Pin root ownership (acctd/kernel/pins.py): /sys/fs/bpf is mode 1777, so
a directory another user made there, or one others may write, is refused
before anything is built, pinned or read; the directories acctd makes are
root's, 0755, whatever the umask."""

import os
import secrets
import shutil
import stat
import subprocess
import sys

import pytest

from acctd.errors import AcctError
from acctd.kernel import abi, pins
from acctd.kernel.build import Sizes
from acctd.kernel.datapath import Datapath

pytestmark = pytest.mark.root

NOBODY = 65534


@pytest.fixture
def root():
    if os.geteuid() != 0:
        pytest.skip("needs root: makes directories on bpffs as another user")
    path = f"/sys/fs/bpf/acctd-own-{os.getpid()}-{secrets.token_hex(3)}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


def as_nobody_mkdir(*paths: str) -> None:
    """What an unprivileged user can do before acctd starts."""
    code = ("import os, sys; os.setgid(%d); os.setuid(%d)\n"
            "for p in sys.argv[1:]: os.mkdir(p)" % (NOBODY, NOBODY))
    subprocess.run([sys.executable, "-c", code, *paths], check=True)


def test_a_pin_root_made_by_another_user_is_refused_before_any_build(root):
    as_nobody_mkdir(root, abi.pin_dir(root))
    assert os.stat(root).st_uid == NOBODY
    dp = Datapath(Sizes(pin_root=root, flows=1024, addrs=256))
    for step in (dp.load, dp.open, lambda: dp.attach([])):
        with pytest.raises(AcctError) as e:
            step()
        assert str(e.value) == (
            f"pin directory {abi.pin_dir(root)} is owned by uid {NOBODY}, not root: another "
            "user could replace the pinned maps; refusing it (remove it, e.g. "
            f"`rm -r {abi.pin_dir(root)}`, and start again)")
    assert os.listdir(abi.pin_dir(root)) == []  # nothing pinned into it


def test_a_version_directory_renamed_or_chowned_under_a_root_owned_root_is_refused(root):
    os.mkdir(root, 0o755)
    os.mkdir(abi.pin_dir(root), 0o755)
    os.chown(abi.pin_dir(root), NOBODY, NOBODY)
    with pytest.raises(AcctError, match=rf"^pin directory {abi.pin_dir(root)} is owned by uid "
                                        f"{NOBODY}, not root"):
        Datapath(Sizes(pin_root=root)).open()


def test_a_pin_root_others_may_write_is_refused(root):
    os.mkdir(root)
    os.chmod(root, 0o1777)
    with pytest.raises(AcctError, match=rf"^pin directory {root} is writable by others "
                                        r"\(mode 1777\): another user could replace"):
        Datapath(Sizes(pin_root=root)).pinned_build_id()
    os.chmod(root, 0o775)
    with pytest.raises(AcctError, match=rf"^pin directory {root} is writable by its group "
                                        r"\(mode 0775\)"):
        pins.ensure_pin_dir(abi.pin_dir(root))


def test_the_directories_acctd_makes_are_root_s_0755_whatever_the_umask(root):
    old = os.umask(0o002)
    try:
        pins.ensure_pin_dir(abi.pin_dir(root))
    finally:
        os.umask(old)
    for p in (root, abi.pin_dir(root)):
        st = os.stat(p)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755)
    pins.check_owned(abi.pin_dir(root))  # and they pass the check


@pytest.mark.parametrize("command", ["show", "detach"])
def test_an_unprivileged_show_or_detach_is_permission_denied_exit_4(datapath, command):
    """Not the kernel's EACCES read as a verifier refusal, with exit 1."""
    root = datapath.sizes.pin_root
    res = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                          sys.executable, "-m", "acctctl.main", "--pin-root", root, command],
                         capture_output=True, text=True, timeout=60)
    assert (res.returncode, res.stdout, res.stderr) == (
        4, "", f"acctctl: permission denied: the datapath pinned under {datapath.pin_dir} "
               "is root's (run as root)\n")
    assert datapath.is_pinned()
