"""Run one command as root inside a throwaway QEMU guest booted on another kernel.

We use it to prove the BPF programs load and verify, and count real traffic
through real hooks, on Debian 12's stable kernel (6.1) and not only on
whatever kernel the host runs.

How it works
  * The guest boots the chosen /boot/vmlinuz-* with a tiny initramfs built
    here in memory: the host's static busybox, the few modules needed to
    reach a 9p share (virtio_pci, 9pnet_virtio, 9p and their dependencies,
    resolved from modules.dep) and a shell /init.
  * /init mounts the host's whole "/" read-only over virtio-9p, puts tmpfs
    on /run, /tmp, /var/tmp, mounts proc, sysfs, devtmpfs, bpffs, debugfs,
    tracefs and cgroup2, brings up lo and switch_roots into the host tree.
    The guest therefore runs the host's python, bcc, venv and repo, and bcc
    finds the guest kernel's headers at /lib/modules/$(uname -r)/build
    exactly as on the host (Debian ships them in linux-headers-*).
  * The command runs with its output on a pipe (not a tty) that is copied
    to the second serial port, which QEMU hands to us on its stdout. We
    stream it, and its exit code comes back as a sentinel line carrying a
    per-run nonce. The first serial port is the kernel console; it goes to
    a log file and is shown when the guest fails to boot.
  * After the command the guest powers itself off; on timeout or Ctrl-C we
    kill QEMU ourselves.

Why TCG: /dev/kvm exists on our CI hosts, but they are themselves VMs and
stock kernels do not boot under the nested KVM there. Pure emulation is
slower (boot ~10 s; compiling acctd's programs with bcc ~30-60 s) but
works everywhere QEMU is installed. --accel kvm is there for hosts where it
does work.

Usage:
    python tests/vm/run_in_vm.py [--kernel PATH] [--timeout S] -- CMD...
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import glob
import io
import lzma
import os
import re
import secrets
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Mapping, Sequence, TextIO

REPO = Path(__file__).resolve().parents[2]
QEMU = "qemu-system-x86_64"
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
QBOOT = Path("/usr/share/qemu/qboot.rom")  # boots in milliseconds, unlike SeaBIOS
# What the initramfs must load to mount the host's root over virtio-9p.
ROOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p")

GUEST_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/tmp/home",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "ACCTD_IN_VM": "1",
}

EXIT_TIMEOUT = 124  # what timeout(1) uses
EXIT_VM_FAILED = 125


class VMError(RuntimeError):
    """The guest did not boot, or did not report the command's exit code."""


@dataclasses.dataclass
class VMResult:
    returncode: int
    output: str  # the command's stdout and stderr, interleaved
    kernel_release: str
    boot_seconds: float  # QEMU start until the command started
    command_seconds: float  # the command itself


# --- host-side checks ---------------------------------------------------------


def kernel_sort_key(path: str) -> list:
    release = os.path.basename(path).removeprefix("vmlinuz-")
    return [int(p) if p.isdigit() else p for p in re.split(r"[.-]", release)]


def default_kernel() -> Path | None:
    """The newest Debian amd64 kernel image in /boot, if any."""
    images = [p for p in glob.glob("/boot/vmlinuz-*-amd64") if os.access(p, os.R_OK)]
    return Path(max(images, key=kernel_sort_key)) if images else None


def kernel_release(kernel: Path) -> str:
    name = kernel.name
    if not name.startswith("vmlinuz-"):
        raise VMError(f"cannot tell the release of {kernel}: expected /boot/vmlinuz-<release>")
    return name.removeprefix("vmlinuz-")


def find_busybox() -> Path | None:
    for candidate in BUSYBOX_CANDIDATES:
        if os.access(candidate, os.X_OK) and _is_static_elf(Path(candidate)):
            return Path(candidate)
    return None


def _is_static_elf(path: Path) -> bool:
    """True for an ELF64 with no PT_INTERP, i.e. usable alone in an initramfs."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:5] != b"\x7fELF\x02":
            return False
        phoff = int.from_bytes(head[0x20:0x28], "little")
        phentsize = int.from_bytes(head[0x36:0x38], "little")
        phnum = int.from_bytes(head[0x38:0x3A], "little")
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    PT_INTERP = 3
    return all(
        int.from_bytes(table[i * phentsize : i * phentsize + 4], "little") != PT_INTERP
        for i in range(phnum)
    )


def missing_prerequisites(kernel: Path | None = None) -> list[str]:
    """Why a VM cannot be started here; empty when it can."""
    problems = []
    if os.geteuid() != 0:
        problems.append("needs root (the guest shares the host's / through QEMU's 9p server)")
    if shutil.which(QEMU) is None:
        problems.append(f"{QEMU} not found (apt install qemu-system-x86)")
    if find_busybox() is None:
        problems.append("no static busybox (apt install busybox-static)")
    kernel = kernel or default_kernel()
    if kernel is None:
        problems.append("no /boot/vmlinuz-*-amd64 (apt install linux-image-amd64)")
    elif not kernel.is_file():
        problems.append(f"kernel image {kernel} not found")
    else:
        release = kernel_release(kernel)
        moddir = Path("/lib/modules") / release
        if not (moddir / "modules.dep").is_file():
            problems.append(f"{moddir}/modules.dep missing (modules for {release} not installed)")
        if not (moddir / "build").exists():
            problems.append(
                f"{moddir}/build missing: bcc needs headers (apt install linux-headers-{release})"
            )
    return problems


# --- the initramfs -------------------------------------------------------------


def _module_load_order(release: str, names: Sequence[str]) -> list[Path]:
    """Module files to insmod, dependencies first, skipping built-in ones."""
    moddir = Path("/lib/modules") / release
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        base = os.path.basename(path).split(".ko")[0]
        by_name[base.replace("-", "_")] = path
    builtin_file = moddir / "modules.builtin"
    builtin = {
        os.path.basename(p).split(".ko")[0].replace("-", "_")
        for p in (builtin_file.read_text().split() if builtin_file.exists() else [])
    }
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in names:
        key = name.replace("-", "_")
        if key in by_name:
            visit(by_name[key])
        elif key not in builtin:
            raise VMError(f"module {name} is neither in modules.dep nor built into {release}")
    return [moddir / p for p in order]


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix in (".zst", ".gz"):
        # busybox insmod cannot read these; Debian 12 ships plain .ko files.
        raise VMError(f"compressed module {path} is not supported")
    return data


class _Cpio:
    """Just enough of the 'newc' cpio format for a kernel initramfs."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0]
        self.ino += 1
        self.buf.write(b"070701" + b"".join(b"%08x" % v for v in fields) + encoded)
        self.buf.write(b"\0" * (-self.buf.tell() % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-self.buf.tell() % 4))

    def dir(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        self.buf.write(b"\0" * (-self.buf.tell() % 512))
        return self.buf.getvalue()


# Stage 1: PID 1 in the initramfs, busybox sh. Everything that needs a tool
# the host might lack happens here; $NONCE and $MODULES come from /vars.
INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
. /vars
DEV=/dev
fail() {
    echo "acctd-vm: $*" >$DEV/console
    echo "@@$NONCE:FAIL $*@@" >$DEV/ttyS1
    poweroff -f
}
mount -t proc proc /proc && mount -t sysfs sysfs /sys && mount -t devtmpfs devtmpfs /dev \
    || fail "cannot mount proc/sys/dev"
stty -F /dev/ttyS1 raw -echo || fail "cannot set up /dev/ttyS1"
for m in $MODULES; do insmod "/modules/$m" || fail "insmod $m"; done
mkdir -p /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /newroot \
    || fail "cannot mount the host root over 9p"
ip link set lo up || fail "cannot bring up lo"
# The working directory may live under a directory the tmpfs mounts below
# hide (a CI clone in /tmp): hold on to it and put it back afterwards.
mkdir -p /keep
mount --bind "/newroot$CWD" /keep || fail "cannot reach $CWD through the host root"
for d in run tmp var/tmp; do
    mount -t tmpfs -o mode=1777 tmpfs "/newroot/$d" || fail "cannot mount tmpfs on /$d"
done
mkdir -p "/newroot$CWD" && mount --move /keep "/newroot$CWD" || fail "cannot put back $CWD"
mkdir -p /newroot/run/acctd-vm /newroot/tmp/home
cp /stage2.sh /cmd.sh /vars /newroot/run/acctd-vm/
for d in proc sys dev; do mount --move "/$d" "/newroot/$d" || fail "cannot move /$d"; done
DEV=/newroot/dev
R=/newroot
mount -t bpf bpf $R/sys/fs/bpf || fail "cannot mount bpffs"
mount -t debugfs debugfs $R/sys/kernel/debug || fail "cannot mount debugfs"
mount -t tracefs tracefs $R/sys/kernel/tracing || fail "cannot mount tracefs"
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup || fail "cannot mount cgroup2"
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts && mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm \
    || fail "cannot mount devpts/shm"
exec switch_root /newroot /bin/sh /run/acctd-vm/stage2.sh
fail "switch_root failed"
"""

# Stage 2: PID 1 in the host's tree, run by the host's /bin/sh. Output goes
# through a pipe so the command sees a pipe, not a tty, as it would in CI.
STAGE2 = r"""
D=/run/acctd-vm
. $D/vars
out=/dev/ttyS1
[ -e "/lib/modules/$(uname -r)/build" ] || \
    echo "acctd-vm: warning: /lib/modules/$(uname -r)/build missing, bcc will fail" >$out
echo "@@$NONCE:START@@" >$out
{ /bin/sh $D/cmd.sh </dev/null; echo $? >$D/rc; } 2>&1 | cat >$out
echo "@@$NONCE:EXIT $(cat $D/rc 2>/dev/null || echo 255)@@" >$out
sync
echo o >/proc/sysrq-trigger
sleep 30
"""


def build_initramfs(
    release: str, nonce: str, command: Sequence[str], cwd: str, env: Mapping[str, str]
) -> bytes:
    busybox = find_busybox()
    if busybox is None:
        raise VMError("no static busybox found (apt install busybox-static)")
    modules = _module_load_order(release, ROOT_MODULES)
    cmd = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    cmd += f"cd {shlex.quote(cwd)} || exit 126\nexec {shlex.join(command)}\n"
    variables = {
        "NONCE": nonce,
        "CWD": os.path.realpath(cwd),
        "MODULES": " ".join(m.name.removesuffix(".xz") for m in modules),
    }
    archive = _Cpio()
    for d in ("bin", "dev", "proc", "sys", "modules"):
        archive.dir(d)
    archive.chardev("dev/console", 5, 1)
    archive.file("bin/busybox", busybox.read_bytes(), 0o755)
    archive.file("init", INIT.encode(), 0o755)
    archive.file("stage2.sh", STAGE2.encode(), 0o755)
    archive.file("cmd.sh", cmd.encode(), 0o755)
    archive.file("vars", "".join(f"{k}={shlex.quote(v)}\n" for k, v in variables.items()).encode())
    for m in modules:
        archive.file(f"modules/{m.name.removesuffix('.xz')}", _read_module(m))
    return archive.finish()


# --- running QEMU --------------------------------------------------------------


def qemu_command(
    kernel: Path, initrd: Path, console_log: Path, memory_mib: int, cpus: int, accel: str, verbose: bool
) -> list[str]:
    append = [
        "console=ttyS0,115200",
        "rdinit=/init",
        "panic=-1",  # a dead guest reboots at once, and -no-reboot turns that into exit
        "mitigations=off",  # no point paying for them under emulation
        "loglevel=7" if verbose else "quiet",
    ]
    cmd = [
        QEMU,
        "-accel", "tcg,thread=multi" if accel == "tcg" else accel,
        "-machine", "q35",
        "-cpu", "max" if accel == "tcg" else "host",
        "-smp", str(cpus),
        "-m", f"{memory_mib}M",
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-kernel", str(kernel),
        "-initrd", str(initrd),
        "-append", " ".join(append),
        "-chardev", f"file,id=console,path={console_log}",
        "-serial", "chardev:console",
        "-chardev", "stdio,id=output,signal=off",
        "-serial", "chardev:output",
        "-fsdev", "local,id=hostroot,path=/,security_model=passthrough,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
    ]  # fmt: skip
    if QBOOT.exists():
        cmd += ["-bios", str(QBOOT)]
    return cmd


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no console log)"
    return "\n".join(text.splitlines()[-lines:]) or "(console log empty)"


def _die_with_parent() -> None:
    """Runs in the QEMU child: if we are killed outright, so is the VM."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(
    command: Sequence[str],
    kernel: Path | None = None,
    timeout: float = 900,
    cwd: str | os.PathLike = REPO,
    env: Mapping[str, str] | None = None,
    memory_mib: int = 3072,
    cpus: int = 2,
    accel: str = "tcg",
    stream: TextIO | None = sys.stdout,
    verbose: bool = False,
) -> VMResult:
    """Boot `kernel`, run `command` as root in the host's tree, return its exit code and output.

    Raises VMError when the guest fails to boot, dies before reporting, or
    `timeout` seconds (boot included) pass.
    """
    kernel = Path(kernel) if kernel else default_kernel()
    problems = missing_prerequisites(kernel)
    if problems:
        raise VMError("cannot start a VM: " + "; ".join(problems))
    release = kernel_release(kernel)
    nonce = secrets.token_hex(8)
    start_re = re.compile(rf"^@@{nonce}:START@@$")
    # Not anchored at the start: output that lacks a final newline comes first.
    end_re = re.compile(rf"@@{nonce}:(EXIT (\d+)|FAIL (.*))@@$")

    with tempfile.TemporaryDirectory(prefix="acctd-vm-") as tmp:
        initrd = Path(tmp, "initrd.cpio")
        console_log = Path(tmp, "console.log")
        initrd.write_bytes(
            build_initramfs(release, nonce, command, str(cwd), {**GUEST_ENV, **(env or {})})
        )
        argv = qemu_command(kernel, initrd, console_log, memory_mib, cpus, accel, verbose)
        started = time.monotonic()
        command_started = None
        returncode = None
        failure = None
        output: list[str] = []
        pending = b""
        with open(Path(tmp, "qemu.err"), "wb") as err:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, preexec_fn=_die_with_parent
            )
        try:
            fd = proc.stdout.fileno()
            while returncode is None and failure is None:
                if time.monotonic() - started > timeout:
                    where = "while booting" if command_started is None else "while running the command"
                    raise VMError(
                        f"timed out after {timeout:.0f}s {where}; kernel console:\n{_tail(console_log)}"
                    )
                ready, _, _ = select.select([fd], [], [], 0.5)
                chunk = os.read(fd, 65536) if ready else b""
                if ready and not chunk:  # QEMU exited without the sentinel
                    break
                pending += chunk.replace(b"\r", b"")
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace")
                    if start_re.match(line):
                        command_started = time.monotonic()
                        continue
                    end = end_re.search(line)
                    if end:
                        returncode = int(end[2]) if end[2] else None
                        failure = end[3]
                        line = line[: end.start()]  # output that lacked a final newline
                    if line or not end:
                        text = line if end else line + "\n"
                        output.append(text)
                        if stream:
                            stream.write(text)
                            stream.flush()
                    if end:
                        break
            finished = time.monotonic()
            if returncode is not None or failure is not None:
                try:
                    proc.wait(20)  # the guest powers itself off
                except subprocess.TimeoutExpired:
                    pass
        finally:
            _stop(proc)
            proc.stdout.close()
        if failure is not None:
            raise VMError(f"guest setup failed: {failure}; kernel console:\n{_tail(console_log)}")
        if returncode is None:
            err = Path(tmp, "qemu.err").read_text(errors="replace").strip()
            raise VMError(
                f"the VM exited (qemu status {proc.returncode}) without reporting an exit code"
                + (f"\nqemu: {err}" if err else "")
                + f"\nkernel console:\n{_tail(console_log)}"
            )
        if verbose and stream:
            stream.write(f"--- kernel console ---\n{console_log.read_text(errors='replace')}")
    return VMResult(
        returncode=returncode,
        output="".join(output),
        kernel_release=release,
        boot_seconds=(command_started or finished) - started,
        command_seconds=finished - (command_started or finished),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="run_in_vm.py",
        description="Run CMD as root in a QEMU (TCG) guest on another kernel, sharing the host's / read-only.",
        usage="%(prog)s [options] -- CMD...",
    )
    parser.add_argument("--kernel", type=Path, help="kernel image (default: newest /boot/vmlinuz-*-amd64)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds, boot included (default: 900)")
    parser.add_argument("--cwd", default=str(REPO), help="directory to run CMD in (default: the repo)")
    parser.add_argument("--memory", type=int, default=3072, help="guest memory in MiB (default: 3072)")
    parser.add_argument("--cpus", type=int, default=2, help="guest vCPUs (default: 2)")
    parser.add_argument("--accel", default="tcg", help="QEMU accelerator (default: tcg; see module doc)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra guest env")
    parser.add_argument("-v", "--verbose", action="store_true", help="full kernel log, printed at the end")
    parser.add_argument("command", nargs="+", metavar="CMD")
    args = parser.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)

    # Turn SIGTERM into an exception too, so run()'s cleanup kills QEMU.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        result = run(
            args.command, kernel=args.kernel, timeout=args.timeout, cwd=args.cwd, env=env,
            memory_mib=args.memory, cpus=args.cpus, accel=args.accel, verbose=args.verbose,
        )  # fmt: skip
    except VMError as e:
        print(f"run_in_vm: {e}", file=sys.stderr)
        return EXIT_TIMEOUT if str(e).startswith("timed out") else EXIT_VM_FAILED
    except KeyboardInterrupt:
        print("run_in_vm: interrupted, VM stopped", file=sys.stderr)
        return 130
    print(
        f"run_in_vm: {result.kernel_release}: exit {result.returncode}, "
        f"boot {result.boot_seconds:.1f}s, command {result.command_seconds:.1f}s",
        file=sys.stderr,
    )
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
