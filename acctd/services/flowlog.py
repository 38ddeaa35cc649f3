"""The net-acct (nacctd) flow log: one text line per flow per drain, in the
format nacctd wrote and its scripts read.

Each line is one drain's delta of one flow: a flow that moved during n drains
appears on n lines, each with only the bytes counted since the drain before,
so summing a column over lines gives totals with nothing counted twice. Two
lines of one drain may print alike when their flows differ only in what the
line leaves out (direction, TOS, VLAN, ICMP type): add them up, as nacctd's
scripts did with its per-interface lines.

Line (default fields, tab-separated, nacctd's order; the README shows spaces):

    time  proto  src  sport  dst  dport  bytes  device  user

  time    drain time, whole seconds since the epoch (nacctd: time of writing)
  proto   IP protocol number (1 icmp, 6 tcp, 17 udp, 58 ipv6-icmp)
  src     source address; IPv4-mapped addresses print as IPv4
  sport   source port; 0 unless TCP or UDP (nacctd wrote 0 for ICMP too)
  dst     destination address
  dport   destination port; 0 unless TCP or UDP
  bytes   bytes of the flow since the previous drain
  device  interface name (the ifindex as "if<N>" when it has gone)
  user    the dynamicip user of the flow's local address, else "unknown"

Optional fields: `packets` (packets since the previous drain; later nacctd's
"count") and `dir` ("in" towards the local address, "out" from it). Fields
print in the order configured. Whitespace inside a device or user name
becomes "_", so a line always splits on whitespace into its fields.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from acctd.common import durable
from acctd.config.schema import Table, boolean, choice, file_path, setting, strings
from acctd.errors import BadRequest
from acctd.kernel import abi
from acctd.model.addresses import format_addrs, parse_addr
from acctd.services.contract import Core, Drain, Service

log = logging.getLogger("acctd.flowlog")

FIELDS = ("time", "proto", "src", "sport", "dst", "dport", "packets", "bytes", "device",
          "user", "dir")
DEFAULT_FIELDS = ("time", "proto", "src", "sport", "dst", "dport", "bytes", "device", "user")
STYLES = ("nacctd", "json")   # a line: nacctd's tab-separated fields, or a JSON object
UNKNOWN_USER = "unknown"
PORT_PROTOS = (6, 17)       # nacctd had ports for TCP and UDP only
QUEUE_LIMIT = 1_000_000     # lines held while paused (~100 bytes each in memory)

_SPACE = re.compile(r"\s")


@dataclasses.dataclass(frozen=True)
class FlowLogSettings(Table):
    """The [flowlog] table: net-acct's per-flow log, one nacctd line per flow
    and drain."""
    path: str = setting(check=file_path())
    fields: tuple[str, ...] = setting(DEFAULT_FIELDS, check=lambda v, ctx: check_fields(
        strings("field names")(v, ctx)))
    fsync: bool = setting(False, check=boolean())
    format: str = setting("nacctd", check=choice(*STYLES))   # or "json": JSON lines


def check_fields(fields: Sequence[str]) -> tuple[str, ...]:
    """The configured field list, validated: known names, each once, not empty."""
    fields = tuple(fields)
    if not fields:
        raise ValueError("flow log fields: at least one field is needed")
    for f in fields:
        if f not in FIELDS:
            raise ValueError(f"unknown flow log field {f!r}; one of {', '.join(FIELDS)}")
    dup = sorted({f for f in fields if fields.count(f) > 1})
    if dup:
        raise ValueError(f"flow log field listed twice: {', '.join(dup)}")
    return fields


def _epoch(now) -> int:
    if isinstance(now, _dt.datetime):
        return int(now.timestamp())
    return int(now)


def _word(text: str) -> str:
    return _SPACE.sub("_", text)


def format_lines(keys: np.ndarray, values: np.ndarray, *, now,
                 devices: Mapping[int, str],
                 user: Callable[[str], str | None] | None = None,
                 fields: Sequence[str] = DEFAULT_FIELDS, style: str = "nacctd") -> list[str]:
    """One line (without its newline) per flow of a drained delta.

    keys: abi.FLOW_KEY array; values: abi.FLOW_VAL array of the same length
    (the drain's deltas); now: the drain time (epoch seconds or an aware
    datetime); devices: ifindex -> interface name; user: address text -> user
    name or None, asked once per distinct local address (the destination of
    an "in" flow, the source of an "out" one).

    style "json": one JSON object per line instead, the fields as its keys
    (numbers as numbers), for tools that read JSON lines.

    Column-wise: work per distinct address, interface and user, numpy string
    joins per column, nothing per field per flow in Python."""
    fields = check_fields(fields)
    n = len(keys)
    if n == 0:
        return []
    if len(values) != n:
        raise ValueError(f"{n} flow keys but {len(values)} values")

    addr_inv = addr_text = None
    if {"src", "dst", "user"} & set(fields):
        both = np.ascontiguousarray(np.concatenate([keys["saddr"], keys["daddr"]]))
        uniq, inv = np.unique(both.view("V16").reshape(-1), return_inverse=True)
        addr_text = format_addrs(uniq.view(np.uint8).reshape(-1, 16))
        addr_inv = inv.reshape(-1)

    def column(f: str) -> np.ndarray:
        if f == "time":
            return np.full(n, str(_epoch(now)))
        if f == "proto":
            return keys["proto"].astype(str)
        if f in ("sport", "dport"):
            ported = np.isin(keys["proto"], PORT_PROTOS)
            return np.where(ported, keys[f], 0).astype(str)
        if f == "src":
            return addr_text[addr_inv[:n]]
        if f == "dst":
            return addr_text[addr_inv[n:]]
        if f in ("packets", "bytes"):
            return values[f].astype(str)
        if f == "dir":
            return np.where(keys["dir"] == abi.Dir.OUT, "out", "in")
        if f == "device":
            idx, inv = np.unique(keys["ifindex"], return_inverse=True)
            names = [_word(devices.get(int(i)) or "") or f"if{int(i)}" for i in idx]
            return np.array(names)[inv.reshape(-1)]
        if f == "user":
            local = np.where(keys["dir"] == abi.Dir.OUT, addr_inv[:n], addr_inv[n:])
            idx, inv = np.unique(local, return_inverse=True)
            names = []
            for i in idx:
                u = user(str(addr_text[i])) if user is not None else None
                names.append(_word(u.strip()) if u and u.strip() else UNKNOWN_USER)
            return np.array(names)[inv.reshape(-1)]
        raise AssertionError(f)

    if style == "json":
        return _json_lines(fields, column)
    line = column(fields[0])
    for f in fields[1:]:
        line = np.char.add(np.char.add(line, "\t"), column(f))
    return line.tolist()


_TEXT_FIELDS = ("src", "dst", "device", "user", "dir")


def _json_lines(fields: Sequence[str], column: Callable[[str], np.ndarray]) -> list[str]:
    """{"field": value, ...} per flow, joined column-wise; text is quoted
    with json.dumps once per distinct value."""
    line = None
    for f in fields:
        col = column(f)
        if f in _TEXT_FIELDS:
            uniq, inv = np.unique(col, return_inverse=True)
            col = np.array([json.dumps(str(u)) for u in uniq])[inv.reshape(-1)]
        part = np.char.add(f'"{f}": ', col)
        line = np.char.add("{", part) if line is None else \
            np.char.add(np.char.add(line, ", "), part)
    return np.char.add(line, "}").tolist()


def format_line(key, value, *, now, devices: Mapping[int, str],
                user: Callable[[str], str | None] | None = None,
                fields: Sequence[str] = DEFAULT_FIELDS) -> str:
    """The line of one flow (a FLOW_KEY and a FLOW_VAL record)."""
    k = np.array(key, dtype=abi.FLOW_KEY).reshape(1)
    v = np.array(value, dtype=abi.FLOW_VAL).reshape(1)
    return format_lines(k, v, now=now, devices=devices, user=user, fields=fields)[0]


class FlowLog:
    """Appends each drain's lines to `path`, nacctd style.

    The file is opened for every drain's block and closed after it (as
    nacctd's writer did), so a file moved away is followed at the next drain
    without a signal. A block goes out in whole: written, then fsync'd if
    asked; a write that fails halfway is cut back to where the block began,
    and a file found ending in a partial line (a crash mid-write) is cut
    back to its last full line before anything is appended. Lines that
    could not be written stay queued, in order, for the next drain.

    pause() is nacctd's SIGTSTP: nothing is written, lines queue in memory
    (at most queue_limit; later ones are dropped and counted). resume() is
    SIGCONT: the queued lines go first, into whatever file is at `path` now.
    The methods take a lock, but the design is one writer: the drain loop."""

    def __init__(self, path: str, fields: Sequence[str] = DEFAULT_FIELDS, *,
                 queue_limit: int = QUEUE_LIMIT, fsync: bool = False,
                 clock: Callable[[], float] = time.time, style: str = "nacctd"):
        self.path = os.fspath(path)
        self.fields = check_fields(fields)
        self.style = style           # nacctd lines or JSON lines (format_lines)
        self.queue_limit = queue_limit
        self.fsync = fsync
        self.clock = clock
        self.paused = False
        self.lines_written = 0
        self.dropped = 0
        self.errors = 0
        self.last_error: str | None = None
        self._queue: list[str] = []
        self._drop_warned = False
        self._lock = threading.Lock()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def status(self) -> dict:
        return {"path": self.path, "fields": list(self.fields), "paused": self.paused,
                "queued": self.queued, "dropped": self.dropped,
                "lines_written": self.lines_written, "errors": self.errors,
                "last_error": self.last_error}

    def append(self, keys: np.ndarray, values: np.ndarray, *, now,
               devices: Mapping[int, str],
               user: Callable[[str], str | None] | None = None) -> int:
        """Format one drain's flow deltas with this log's fields and write them."""
        lines = format_lines(keys, values, now=now, devices=devices, user=user,
                             fields=self.fields, style=self.style)
        return self.write(lines)

    def write(self, lines: Sequence[str]) -> int:
        """Write a drain's lines (after any queued ones); returns how many
        lines reached the file (0 while paused or failing)."""
        with self._lock:
            if self.paused:
                self._enqueue(lines)
                return 0
            return self._flush(lines)

    def pause(self) -> None:
        """SIGTSTP: stop writing; lines queue until resume()."""
        with self._lock:
            if not self.paused:
                self.paused = True
                self._drop_warned = False
                log.info("flow log paused: %s", self.path)

    def resume(self) -> int:
        """SIGCONT: write again, queued lines first, to the file now at path
        (created if the old one was moved away). Returns lines written."""
        with self._lock:
            was = self.paused
            self.paused = False
            n = self._flush(())
            if was:
                log.info("flow log resumed: %s (%d queued lines written, %d dropped so far)",
                         self.path, n, self.dropped)
            return n

    def rotate(self, new_name: str | None = None, suffix: str | None = None) -> str | None:
        """`acctctl rotate flowlog`: rename the file to new_name (beside it if
        a bare name) or to path.<suffix>, by default path.YYYYmmdd-HHMMSS
        (local time), and go on in a fresh file.
        Returns the name the lines so far now have; None if there was no
        file yet. An existing target is never overwritten: a given name
        raises FileExistsError, the timestamped one gets a .1, .2 suffix.
        Writes are whole blocks under the lock, so each line lands in the
        old file or the new one, once."""
        with self._lock:
            if new_name is None:
                stamp = suffix or time.strftime("%Y%m%d-%H%M%S", time.localtime(self.clock()))
                target, numbered = f"{self.path}.{stamp}", True
            else:
                target = new_name if os.sep in new_name else \
                    os.path.join(os.path.dirname(self.path), new_name)
                numbered = False
            if os.path.abspath(target) == os.path.abspath(self.path):
                raise ValueError(f"rotate target is the flow log itself: {target}")
            if os.path.lexists(self.path):
                target = durable.rename_aside(self.path, target, numbered)
            else:
                target = None
            if not self.paused:
                try:  # the fresh file at once, for readers following the name
                    os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND
                                     | os.O_CLOEXEC, 0o644))
                except OSError as e:  # the next drain's write retries and counts it
                    log.error("flow log: cannot create %s after rotating: %s", self.path, e)
                self._flush(())
            log.info("flow log rotated: %s -> %s", self.path, target)
            return target

    def close(self) -> int:
        """At shutdown: write what is queued, paused or not (lines held in
        memory would otherwise be lost). Returns lines written."""
        with self._lock:
            n = self._flush(())
            if self._queue:
                log.error("flow log: %d lines could not be written at close: %s",
                          len(self._queue), self.last_error)
            return n

    # -- internals --------------------------------------------------------------

    def _enqueue(self, lines: Sequence[str]) -> None:
        room = max(0, self.queue_limit - len(self._queue))
        self._queue.extend(lines[:room])
        lost = len(lines) - min(room, len(lines))
        if lost:
            self.dropped += lost
            if not self._drop_warned:
                log.warning("flow log queue full (%d lines): dropping lines until written",
                            self.queue_limit)
                self._drop_warned = True

    def _flush(self, lines: Sequence[str]) -> int:
        block = self._queue + list(lines) if self._queue else list(lines)
        self._queue = []
        if not block:
            return 0
        try:
            _append_block(self.path, ("\n".join(block) + "\n").encode("utf-8", "replace"),
                          self.fsync)
        except OSError as e:
            self.errors += 1
            self.last_error = f"{self.path}: {e.strerror or e}"
            log.error("flow log write failed, %d lines kept for the next drain: %s",
                      len(block), self.last_error)
            self._enqueue(block)
            return 0
        self.lines_written += len(block)
        self._drop_warned = False
        return len(block)


def _append_block(path: str, data: bytes, fsync: bool) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        start = _cut_partial_line(fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, start)  # never leave part of a block behind
            except OSError:
                pass
            raise
    finally:
        os.close(fd)


def _cut_partial_line(fd: int) -> int:
    """Cut a trailing partial line (left by a crash mid-write); returns the
    file's size after."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    end = size
    while end > 0:
        start = max(0, end - 65536)
        i = os.pread(fd, end - start, start).rfind(b"\n")
        if i >= 0:
            end = start + i + 1
            break
        end = start
    log.warning("flow log ended in a partial line: cut %d bytes", size - end)
    os.ftruncate(fd, end)
    return end


# --- the service ----------------------------------------------------------------------

class FlowLogService(Service):
    """net-acct's flow log in the daemon: one nacctd line per flow that moved,
    written after the drain is committed (a crash in between loses that
    drain's lines; the counts are safe). SIGTSTP/SIGCONT pause and resume
    it; `acctctl rotate flowlog` renames it."""

    name = "flowlog"

    def __init__(self, core: Core, settings: FlowLogSettings | None):
        super().__init__(core, settings)
        self.log: FlowLog | None = None
        self.paused = False          # asked by SIGTSTP/SIGCONT, applied before a write
        self.ifnames: dict[int, str] = {}

    @staticmethod
    def settings_of(config):
        return config.flowlog

    def start(self) -> None:
        self.reload(self.settings)

    def reload(self, settings: FlowLogSettings | None) -> None:
        self.settings = settings
        cur = self.log
        if cur is not None and (settings is None or (cur.path, tuple(cur.fields), cur.style) !=
                                (settings.path, settings.fields, settings.format)):
            cur.close()
            self.log = None
        if settings is not None and self.log is None:
            self.log = FlowLog(settings.path, settings.fields, fsync=settings.fsync,
                               style=settings.format)
        if settings is not None:
            self.ifnames = self.core.ifnames()

    def close(self) -> None:
        if self.log is not None:
            self.log.close()

    def status(self) -> dict | None:
        return {"flowlog": self.log.status()} if self.log is not None else None

    def after_drain(self, drain: Drain) -> None:
        if self.log is None:
            return
        if self.paused and not self.log.paused:
            self.log.pause()
        elif not self.paused and self.log.paused:
            self.log.resume()
        units = drain.snapshot.units

        def user(addr: str) -> str | None:
            i = units.match(np.frombuffer(parse_addr(addr), np.uint8)[None])[0]
            return units.units[i].name if i >= 0 else None
        try:
            self.log.append(drain.flow_keys, drain.flow_values, now=drain.now,
                            devices=self.ifnames, user=user)
        except OSError as e:  # the counts are committed: the log is a copy
            log.error("flow log %s: %s", self.log.path, e)

    def set_paused(self, paused: bool) -> None:
        """From a signal handler: only a flag, the next drain acts on it."""
        self.paused = paused

    def rotate(self) -> dict:
        with self.core.lock:
            if self.log is None:
                raise BadRequest("no [flowlog] in the configuration")
            self.paused = False
            if self.log.paused:
                self.log.resume()
            return {"flowlog": self.log.path, "rotated_to": self.log.rotate()}
