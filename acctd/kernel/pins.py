"""bpffs housekeeping: the pin directory exists, owned by root, before a
build, and is gone (with its parent, when empty) after a detach."""

from __future__ import annotations

import os
import stat

from acctd.errors import AcctError


def _bpffs_mount(path: str) -> str | None:
    """The bpffs mount point holding path, or None when it is on another
    filesystem. (f_type of bpffs is BPF_FS_MAGIC; /proc/mounts is simpler.)"""
    path = os.path.realpath(path)
    with open("/proc/mounts") as f:
        mounts = [line.split()[1:3] for line in f]
    best = max((m for m in mounts if path == m[0] or path.startswith(m[0].rstrip("/") + "/")),
               key=lambda m: len(m[0]), default=None)
    return best[0] if best is not None and best[1] == "bpf" else None


def check_owned(pin_dir: str) -> None:
    """Refuse pins someone else could replace. /sys/fs/bpf is mode 1777: any
    user may make the pin root there before acctd does, or rename the
    version directory inside one they own, and the next start would begin
    again from fresh maps. Every directory from below the bpffs mount down
    to pin_dir that exists must be owned by root (or by this process's
    user, when acctd runs as one with CAP_BPF) and not writable by group or
    others."""
    mount = _bpffs_mount(pin_dir)
    if mount is None:
        return  # ensure_pin_dir says what to mount
    path = os.path.realpath(pin_dir)
    trusted = {0, os.geteuid()}
    while path != mount and path != "/":
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            path = os.path.dirname(path)
            continue
        why = None
        if st.st_uid not in trusted:
            why = f"is owned by uid {st.st_uid}, not root"
        elif not stat.S_ISDIR(st.st_mode):
            why = "is not a directory"
        elif st.st_mode & 0o022:
            why = f"is writable by {'others' if st.st_mode & 0o002 else 'its group'} " \
                  f"(mode {stat.S_IMODE(st.st_mode):04o})"
        if why:
            raise AcctError(f"pin directory {path} {why}: another user could replace the "
                            "pinned maps; refusing it (remove it, e.g. `rm -r "
                            f"{path}`, and start again)")
        path = os.path.dirname(path)


def ensure_pin_dir(pin_dir: str) -> None:
    parent = os.path.dirname(pin_dir.rstrip("/"))
    probe = parent if os.path.exists(parent) else os.path.dirname(parent)
    if _bpffs_mount(probe) is None:
        raise AcctError(f"{probe} is not on a bpf filesystem: mount it with "
                        "`mount -t bpf bpf /sys/fs/bpf` (sudo make setup does)")
    check_owned(pin_dir)
    missing = []
    p = os.path.abspath(pin_dir)
    while not os.path.exists(p):
        missing.append(p)
        p = os.path.dirname(p)
    for d in reversed(missing):
        os.mkdir(d)
        os.chmod(d, 0o755)  # whatever the umask: check_owned refuses group-writable ones


def unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_tree(pin_dir: str) -> None:
    """Remove our pins and the directories that held only them."""
    if os.path.isdir(pin_dir):
        for name in os.listdir(pin_dir):
            unlink(os.path.join(pin_dir, name))
        os.rmdir(pin_dir)
    parent = os.path.dirname(pin_dir.rstrip("/"))
    try:
        os.rmdir(parent)  # only succeeds when no other ABI version is pinned
    except OSError:
        pass
