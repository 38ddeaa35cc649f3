"""Thin ctypes wrappers around the bpf(2) commands acctd needs at run time.

Reading pinned maps, batch lookups straight into numpy buffers, pinning and
BPF_PROG_RUN need no compiler, so neither the daemon's read path nor acctctl
imports bcc; only building programs does (acctd/kernel/build.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import struct
import threading
from dataclasses import dataclass
from functools import cache

import numpy as np

from acctd.errors import BpfError

# bpf(2)'s number per architecture, as platform.machine() names it. From
# the kernel's tables: arch/x86/entry/syscalls/syscall_{64,32}.tbl,
# arch/arm/tools/syscall.tbl, arch/powerpc/kernel/syscalls/syscall.tbl,
# arch/s390/kernel/syscalls/syscall.tbl; arm64, riscv and loongarch use
# include/uapi/asm-generic/unistd.h.
BPF_SYSCALL = {
    "x86_64": 321,
    "i386": 357, "i586": 357, "i686": 357,
    "aarch64": 280,
    "armv6l": 386, "armv7l": 386, "armv8l": 386,
    "riscv64": 280,
    "loongarch64": 280,
    "ppc64": 361, "ppc64le": 361,
    "s390x": 351,
}
# A 32-bit interpreter on a 64-bit kernel calls through the kernel's 32-bit
# table (Raspberry Pi OS: armhf on an arm64 kernel); elsewhere the numbers
# are the same in both.
_COMPAT_32 = {"x86_64": "i686", "aarch64": "armv7l"}


def bpf_syscall_nr(machine: str | None = None, bits: int | None = None) -> int:
    """bpf(2)'s number for this machine and this interpreter's word size."""
    machine = platform.machine() if machine is None else machine
    bits = struct.calcsize("P") * 8 if bits is None else bits
    table = _COMPAT_32.get(machine, machine) if bits == 32 else machine
    try:
        return BPF_SYSCALL[table]
    except KeyError:
        raise BpfError(errno.ENOSYS, f"bpf(2): no syscall number known for architecture "
                       f"{machine!r} (known: {', '.join(sorted(BPF_SYSCALL))}); add it to "
                       "BPF_SYSCALL in acctd/kernel/syscalls.py") from None


_nr_bpf = cache(bpf_syscall_nr)  # chosen at the first call, not at import

BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_PROG_TEST_RUN = 10
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_MAP_LOOKUP_AND_DELETE_ELEM = 21
BPF_MAP_LOOKUP_BATCH = 24
BPF_MAP_UPDATE_BATCH = 26
BPF_MAP_DELETE_BATCH = 27

ENOTSUPP = 524  # the kernel's internal 'not supported', leaked by some map ops
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

_ATTR_SIZE = 128

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    ret = _libc.syscall(_nr_bpf(), cmd, attr, _ATTR_SIZE)
    if ret < 0:
        e = ctypes.get_errno()
        raise BpfError.from_errno(e, f"bpf(cmd {cmd})")
    return ret


def _attr() -> ctypes.Array:
    return ctypes.create_string_buffer(_ATTR_SIZE)


def _addr(buf) -> int:
    """Address of a numpy array, bytes buffer or ctypes object (0 for None)."""
    if buf is None:
        return 0
    if isinstance(buf, np.ndarray):
        return buf.ctypes.data
    return ctypes.addressof(buf)


@cache
def possible_cpus() -> int:
    """Per-CPU map values have one slot per *possible* CPU, not online."""
    with open("/sys/devices/system/cpu/possible") as f:
        spec = f.read().strip()
    last = 0
    for part in spec.split(","):
        last = max(last, int(part.split("-")[-1]))
    return last + 1


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int,
               name: str = "") -> int:
    """A new map's fd (the datapath's maps come from bcc; this is for maps
    made by hand, e.g. to test the readers at sizes the datapath has)."""
    a = _attr()
    struct.pack_into("=5I", a, 0, map_type, key_size, value_size, max_entries, 0)
    a[28:28 + len(name[:15])] = name[:15].encode()  # map_name, after numa_node
    return _bpf(BPF_MAP_CREATE, a)


def obj_get(path: str) -> int:
    a = _attr()
    p = ctypes.create_string_buffer(path.encode())
    struct.pack_into("=Q", a, 0, ctypes.addressof(p))
    try:
        return _bpf(BPF_OBJ_GET, a)
    except BpfError as e:
        raise e.with_context(f"opening pin {path}") from None


def obj_pin(fd: int, path: str) -> None:
    a = _attr()
    p = ctypes.create_string_buffer(path.encode())
    struct.pack_into("=QI", a, 0, ctypes.addressof(p), fd)
    _bpf(BPF_OBJ_PIN, a)


def _info(fd: int, size: int) -> bytes:
    buf = ctypes.create_string_buffer(size)
    a = _attr()
    struct.pack_into("=IIQ", a, 0, fd, size, ctypes.addressof(buf))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, a)
    return buf.raw


@dataclass(frozen=True)
class MapInfo:
    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str


def map_info(fd: int) -> MapInfo:
    raw = _info(fd, 88)
    t, mid, ks, vs, me, fl = struct.unpack_from("=6I", raw, 0)
    name = raw[24:40].split(b"\0", 1)[0].decode()
    return MapInfo(t, mid, ks, vs, me, fl, name)


@dataclass(frozen=True)
class ProgInfo:
    type: int
    id: int
    tag: bytes
    name: str
    verified_insns: int  # instructions the verifier walked (0 before Linux 5.16)
    run_time_ns: int = 0  # time spent in the program while kernel.bpf_stats_enabled=1
    run_cnt: int = 0      # runs counted meanwhile


def prog_info(fd: int) -> ProgInfo:
    raw = _info(fd, 232)
    t, pid = struct.unpack_from("=II", raw, 0)
    tag = raw[8:16]
    name = raw[64:80].split(b"\0", 1)[0].decode()
    run_time, run_cnt = struct.unpack_from("=QQ", raw, 192)
    verified, = struct.unpack_from("=I", raw, 216)
    return ProgInfo(t, pid, tag, name, verified, run_time, run_cnt)


def prog_fd_by_id(prog_id: int) -> int:
    a = _attr()
    struct.pack_into("=I", a, 0, prog_id)
    return _bpf(BPF_PROG_GET_FD_BY_ID, a)


# Map types whose values are per-CPU (kernel enum bpf_map_type).
PERCPU_MAP_TYPES = {5, 6, 10}  # PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH
HASH_MAP_TYPES = {1, 5, 9, 10}  # HASH, PERCPU_HASH, LRU_HASH, LRU_PERCPU_HASH
END = 1 << 32  # past every bucket: the batch read reached the end of the map


class _Overflow(Exception):
    """More entries than max_entries plus slack (churn during a split read)."""


class _NoBatch(Exception):
    """The map type has no batch lookup."""


def _drop_seam_duplicates(keys, vals, n: int, ranges, calls) -> int:
    """Entries read twice, where a thread's last batch ran past its range
    into the next threads' buckets, are removed (the later thread's copy
    stays; a key's bucket is fixed, so only those batches can overlap) by
    moving entries from the tail into their places. Returns the new count."""
    kv = keys.view(np.dtype((np.void, keys.itemsize)))
    holes = []
    for i, (_, hi) in enumerate(ranges[:-1]):
        for _, end, pos, got in calls[i]:
            if end <= hi:
                continue
            later = [kv[p:p + g] for j in range(i + 1, len(ranges))
                     for first, _, p, g in calls[j] if first < end]
            if later:
                holes.append(pos + np.flatnonzero(np.isin(kv[pos:pos + got],
                                                          np.concatenate(later))))
    holes = np.unique(np.concatenate(holes)) if holes else np.zeros(0, np.int64)
    if not len(holes):
        return n
    m = n - len(holes)
    low = holes[holes < m]
    tail = np.setdiff1d(np.arange(m, n), holes)
    keys[low], vals[low] = keys[tail], vals[tail]
    return m


class Map:
    """A BPF map by fd, read and written with numpy buffers."""

    def __init__(self, fd: int, key_dtype: np.dtype, value_dtype: np.dtype, name: str = ""):
        self.fd = fd
        self.info = map_info(fd)
        self.name = name or self.info.name
        self.key_dtype = np.dtype(key_dtype)
        self.value_dtype = np.dtype(value_dtype)
        self.percpu = self.info.type in PERCPU_MAP_TYPES
        self.ncpus = possible_cpus() if self.percpu else 1
        self._last_count = 0  # entries the last read_all found (sizes the next one)
        if self.key_dtype.itemsize != self.info.key_size or \
                self.value_dtype.itemsize != self.info.value_size:
            raise BpfError(
                errno.EINVAL,
                f"map {self.name}: kernel key/value size {self.info.key_size}/"
                f"{self.info.value_size} does not match the ABI "
                f"{self.key_dtype.itemsize}/{self.value_dtype.itemsize}; "
                "a stale pin from another build? run `acctctl detach`")

    @classmethod
    def open_pinned(cls, path: str, key_dtype, value_dtype) -> "Map":
        return cls(obj_get(path), key_dtype, value_dtype, os.path.basename(path))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _value_buf(self, n: int) -> np.ndarray:
        # Per-CPU values are laid out as value_size rounded up to 8, per CPU.
        assert not self.percpu or self.value_dtype.itemsize % 8 == 0
        return np.zeros((n, self.ncpus) if self.percpu else n, dtype=self.value_dtype)

    def lookup(self, key) -> np.ndarray | None:
        k = np.asarray(key, dtype=self.key_dtype).reshape(1)
        v = self._value_buf(1)
        a = _attr()
        struct.pack_into("=IIQQQ", a, 0, self.fd, 0, _addr(k), _addr(v), 0)
        try:
            _bpf(BPF_MAP_LOOKUP_ELEM, a)
        except BpfError as e:
            if e.errno == errno.ENOENT:
                return None
            raise
        return v[0]

    def update(self, key, value, flags: int = BPF_ANY) -> None:
        k = np.asarray(key, dtype=self.key_dtype).reshape(1)
        v = np.ascontiguousarray(value, dtype=self.value_dtype)
        if self.percpu and v.shape != (self.ncpus,):
            v = np.broadcast_to(v.reshape(-1)[:1], (self.ncpus,)).copy()
        a = _attr()
        struct.pack_into("=IIQQQ", a, 0, self.fd, 0, _addr(k), _addr(v), flags)
        _bpf(BPF_MAP_UPDATE_ELEM, a)

    def delete(self, key) -> bool:
        k = np.asarray(key, dtype=self.key_dtype).reshape(1)
        a = _attr()
        struct.pack_into("=IIQ", a, 0, self.fd, 0, _addr(k))
        try:
            _bpf(BPF_MAP_DELETE_ELEM, a)
        except BpfError as e:
            if e.errno == errno.ENOENT:
                return False
            raise
        return True

    def take(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Atomically take entries' final values out (reaping idle flows):
        (found mask, their values, per CPU as read). The kernel has no keyed
        batch of BPF_MAP_LOOKUP_AND_DELETE_ELEM, so it is one call per key,
        but from one attr and one buffer: no numpy per key."""
        keys = np.ascontiguousarray(keys, dtype=self.key_dtype)
        vals = self._value_buf(len(keys))
        found = np.zeros(len(keys), bool)
        a = _attr()
        kstep, vstep = keys.itemsize, vals.itemsize * (self.ncpus if self.percpu else 1)
        k0, v0 = _addr(keys), _addr(vals)
        for i in range(len(keys)):
            struct.pack_into("=IIQQQ", a, 0, self.fd, 0, k0 + i * kstep, v0 + i * vstep, 0)
            try:
                _bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, a)
                found[i] = True
            except BpfError as e:
                if e.errno != errno.ENOENT:
                    raise
        return found, vals

    def delete_batch(self, keys: np.ndarray) -> int:
        keys = np.ascontiguousarray(keys, dtype=self.key_dtype)
        if len(keys) == 0:
            return 0
        a = _attr()
        struct.pack_into("=QQQQII", a, 0, 0, 0, _addr(keys), 0, len(keys), self.fd)
        try:
            _bpf(BPF_MAP_DELETE_BATCH, a)
        except BpfError as e:
            if e.errno != errno.ENOENT:
                raise
        return struct.unpack_from("=I", a, 32)[0]

    def update_batch(self, keys: np.ndarray, values: np.ndarray, flags: int = BPF_ANY) -> None:
        """BPF_MAP_UPDATE_BATCH (values shaped (n, ncpus) for per-CPU maps)."""
        keys = np.ascontiguousarray(keys, dtype=self.key_dtype)
        values = np.ascontiguousarray(values, dtype=self.value_dtype)
        a = _attr()
        struct.pack_into("=QQQQIIQQ", a, 0, 0, 0, _addr(keys), _addr(values), len(keys), self.fd,
                         flags, 0)
        _bpf(BPF_MAP_UPDATE_BATCH, a)

    BATCH = 16384
    # Reading threads: the walk is bound by memory latency, one per core.
    threads = min(len(os.sched_getaffinity(0)), 4)
    # Hash maps large enough to be worth splitting their buckets among threads.
    PARALLEL_MIN_ENTRIES = 4 * BATCH

    def read_all(self, reduce=None) -> tuple[np.ndarray, np.ndarray]:
        """All entries with BPF_MAP_LOOKUP_BATCH: (keys[n], values[n, ncpus]),
        or values[n] when `reduce(raw, out)` folds each batch's per-CPU
        copies into `out` (drain.reduce_percpu).

        Each batch lands in a small per-thread scratch buffer that stays in
        cache and is copied (or reduced) into the result at once: no 80 MB
        per-CPU array is touched, and no per-entry Python work is done. A
        large hash map is read by several threads at once, each over its own
        range of buckets (the batch token of a hash map is a bucket index);
        the kernel walks buckets, so this is where the time goes."""
        cap = self.info.max_entries
        ranges = self._bucket_ranges()
        size = cap + len(ranges) * self.BATCH  # a batch may run past its range
        keys = np.empty(size, dtype=self.key_dtype)
        vals = np.empty(size if reduce is not None or not self.percpu else (size, self.ncpus),
                        dtype=self.value_dtype)
        cursor = [0]
        lock = threading.Lock()

        def place(sk, sv, got):
            with lock:
                pos = cursor[0]
                if pos + got > size:
                    if len(ranges) > 1:
                        raise _Overflow
                    got = size - pos  # as many as max_entries allows, as ever
                cursor[0] = pos + got
            keys[pos:pos + got] = sk[:got]
            if reduce is not None:
                reduce(sv[:got], vals[pos:pos + got])
            else:
                vals[pos:pos + got] = sv[:got]
            return pos

        try:
            if len(ranges) == 1:
                calls = [self._read_range(0, None, place)]
            else:
                calls = [None] * len(ranges)
                errors = []

                def run(i, lo, hi):
                    try:
                        calls[i] = self._read_range(lo, hi, place)
                    except BaseException as e:  # re-raised in the caller's thread
                        errors.append(e)
                threads = [threading.Thread(target=run, args=(i, lo, hi), daemon=True)
                           for i, (lo, hi) in enumerate(ranges)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                if errors:
                    raise errors[0]
        except _Overflow:  # churn added more than the slack: read once more, alone
            self._last_count = 0
            return self.read_all(reduce)
        except _NoBatch:
            k, v = self._read_by_key()
            if reduce is not None and self.percpu:
                r = np.empty(len(k), self.value_dtype)
                reduce(v, r)
                v = r
            return k, v
        n = cursor[0]
        if len(ranges) > 1:
            n = _drop_seam_duplicates(keys, vals, n, ranges, calls)
        self._last_count = n
        return keys[:n], vals[:n]

    def _bucket_ranges(self) -> list[tuple[int, int | None]]:
        """[(first bucket, stop bucket)] per reading thread. The kernel's hash
        map has max_entries rounded up to a power of two buckets; splitting
        only pays once the last read found the map well filled."""
        threads = self.threads
        if (threads < 2 or self.info.type not in HASH_MAP_TYPES
                or self._last_count < self.PARALLEL_MIN_ENTRIES):
            return [(0, None)]
        buckets = 1 << max(0, self.info.max_entries - 1).bit_length()
        step = buckets // threads
        return [(i * step, (i + 1) * step if i < threads - 1 else None) for i in range(threads)]

    def _read_range(self, lo: int, hi: int | None, place) -> list[tuple[int, int, int, int]]:
        """Batches from bucket `lo` until the token reaches `hi` (None: the
        end); returns [(first bucket, next bucket, position, count)]."""
        sk = np.empty(self.BATCH, dtype=self.key_dtype)
        sv = self._value_buf(self.BATCH)
        token_in = ctypes.create_string_buffer(max(8, self.key_dtype.itemsize))
        token_out = ctypes.create_string_buffer(max(8, self.key_dtype.itemsize))
        struct.pack_into("=I", token_in, 0, lo)
        calls = []
        start = lo
        while True:
            a = _attr()
            struct.pack_into("=QQQQII", a, 0, 0 if start == 0 else ctypes.addressof(token_in),
                             ctypes.addressof(token_out), sk.ctypes.data, sv.ctypes.data,
                             self.BATCH, self.fd)
            done = False
            try:
                _bpf(BPF_MAP_LOOKUP_BATCH, a)
            except BpfError as e:
                if start == 0 and not calls and e.errno in (errno.EINVAL, errno.EOPNOTSUPP,
                                                            ENOTSUPP):
                    raise _NoBatch from None  # LPM tries have no batch lookup
                if e.errno != errno.ENOENT:
                    raise e.with_context(f"reading map {self.name}") from None
                done = True
            got = struct.unpack_from("=I", a, 32)[0]
            end = END if done else struct.unpack_from("=I", token_out, 0)[0]
            if got:
                calls.append((start, end, place(sk, sv, got), got))
            if done or got == 0 or (hi is not None and end >= hi):
                return calls
            ctypes.memmove(token_in, token_out, len(token_out))
            start = end

    def _read_by_key(self) -> tuple[np.ndarray, np.ndarray]:
        """All entries one key at a time (maps without batch operations; small)."""
        keys = []
        k = None
        nxt = np.zeros(1, self.key_dtype)
        while True:
            a = _attr()
            struct.pack_into("=IIQQ", a, 0, self.fd, 0, 0 if k is None else _addr(k), _addr(nxt))
            try:
                _bpf(BPF_MAP_GET_NEXT_KEY, a)
            except BpfError as e:
                if e.errno == errno.ENOENT:
                    break
                raise e.with_context(f"reading map {self.name}") from None
            k = nxt.copy()
            keys.append(k[0])
        kk = np.array(keys, dtype=self.key_dtype)
        vals = self._value_buf(len(kk))
        n = 0
        for key in kk:
            v = self.lookup(key)
            if v is not None:  # deleted meanwhile
                kk[n], vals[n] = key, v
                n += 1
        return kk[:n], vals[:n]


def prog_test_run(prog_fd: int, data: bytes | np.ndarray, repeat: int = 1,
                  data_out_size: int = 0, ctx: bytes | None = None) -> tuple[int, int, bytes]:
    """BPF_PROG_RUN: returns (retval, mean duration in ns, data_out).

    `ctx` is an optional struct xdp_md / __sk_buff (e.g. to set gso_segs)."""
    buf = data if isinstance(data, np.ndarray) else np.frombuffer(bytes(data), np.uint8).copy()
    out = np.zeros(data_out_size, dtype=np.uint8) if data_out_size else None
    cbuf = np.frombuffer(ctx, np.uint8).copy() if ctx else None
    a = _attr()
    struct.pack_into("=IIIIQQIIIIQQ", a, 0, prog_fd, 0, buf.nbytes, data_out_size,
                     _addr(buf), _addr(out), repeat, 0,
                     0 if cbuf is None else cbuf.nbytes, 0, _addr(cbuf), 0)
    _bpf(BPF_PROG_TEST_RUN, a)
    retval, = struct.unpack_from("=I", a, 4)
    duration, = struct.unpack_from("=I", a, 36)
    size_out, = struct.unpack_from("=I", a, 12)
    return retval, duration, (out[:size_out].tobytes() if out is not None else b"")
