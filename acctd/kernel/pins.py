"""bpffs housekeeping: the pin directory exists before a build, and is gone
(with its parent, when empty) after a detach."""

from __future__ import annotations

import os

from acctd.errors import AcctError


def _on_bpffs(path: str) -> bool:
    # f_type of bpffs is BPF_FS_MAGIC; /proc/mounts is simpler to read.
    path = os.path.realpath(path)
    with open("/proc/mounts") as f:
        mounts = [line.split()[1:3] for line in f]
    best = max((m for m in mounts if path == m[0] or path.startswith(m[0].rstrip("/") + "/")),
               key=lambda m: len(m[0]), default=None)
    return best is not None and best[1] == "bpf"


def ensure_pin_dir(pin_dir: str) -> None:
    parent = os.path.dirname(pin_dir.rstrip("/"))
    probe = parent if os.path.exists(parent) else os.path.dirname(parent)
    if not _on_bpffs(probe):
        raise AcctError(f"{probe} is not on a bpf filesystem: mount it with "
                        "`mount -t bpf bpf /sys/fs/bpf` (sudo make setup does)")
    os.makedirs(pin_dir, exist_ok=True)


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
