"""net-acct's `dynamicip` directory: who is behind a dynamically assigned
address, as the dial-in scripts tell us.

A login script writes a file named by the address whose first line is the
user (`echo $USER > /var/run/$REMOTE_IP`); the logout script removes it.
scan() reads the directory into {address text: user}, diff() turns two
readings into bind/unbind events, DirWatcher polls for changes cheaply.

Address text is acctd.model.addresses' form (IPv4-mapped IPv6 as IPv4, IPv6
compressed), so it looks flows up directly. Skipped: names starting with
"." or ending in "~" or ".tmp" (files being written, editor backups),
names that are no address (logged once), empty files, addresses in an
`exclude-name-lookup` network, and, when `dynamicnet` networks are given,
addresses outside them: nacctd looked up only "the addresses on this
network", less the excluded ones.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import stat
import time
from collections.abc import Iterable
from typing import NamedTuple

from acctd.config.schema import Table, setting, string, strings
from acctd.model.addresses import canonical
from acctd.services.contract import Core, Service

log = logging.getLogger("acctd.dynamicip")

READ_LIMIT = 4096       # a user name is one short line; never slurp a big file
RACY_NS = 2_000_000_000  # a timestamp this close to now may change again unseen

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_MAPPED = ipaddress.ip_network("::ffff:0:0/96")


def _networks(v, ctx) -> tuple[str, ...]:
    items = strings("networks")(v, ctx)
    parse_networks(items)
    return items


@dataclasses.dataclass(frozen=True)
class DynamicIpSettings(Table):
    """The [dynamicip] table: a file named by an address holding a user name
    binds that address to that user unit."""
    dir: str = setting(check=string("a directory"))
    exclude: tuple[str, ...] = setting((), key="exclude-name-lookup", check=_networks)
    dynamicnet: tuple[str, ...] = setting((), check=_networks)  # empty: every address


class Event(NamedTuple):
    kind: str    # "bind" or "unbind"
    addr: str
    user: str    # the new user of a bind, the departing one of an unbind


def parse_networks(items: Iterable[str | Network]) -> list[Network]:
    """exclude-name-lookup entries: "10.0.0.1/32", "2001:db8::/64", nacctd's
    "193.97.238.1 255.255.255.255", or ip_network objects. Host bits are
    ignored, as nacctd's netmask test did; IPv4-mapped IPv6 nets become IPv4."""
    nets = []
    for item in items:
        if isinstance(item, str):
            parts = item.split()
            if len(parts) not in (1, 2):
                raise ValueError(f"not a network: {item!r}")
            try:
                net = ipaddress.ip_network("/".join(parts), strict=False)
            except ValueError as e:
                raise ValueError(f"not a network: {item!r} ({e})") from None
        else:
            net = item
        if net.version == 6 and net.subnet_of(_MAPPED):
            net = ipaddress.ip_network(f"{net.network_address.ipv4_mapped}/{net.prefixlen - 96}")
        nets.append(net)
    return nets


def address_of(name: str) -> str | None:
    """A file name's address in canonical text, or None if it is none."""
    if "%" in name or "/" in name:  # scoped addresses never match a flow
        return None
    try:
        return canonical(name)
    except ValueError:
        return None


def excluded(addr: str, nets: list[Network]) -> bool:
    a = ipaddress.ip_address(addr)
    return any(a.version == n.version and a in n for n in nets)


@dataclasses.dataclass(frozen=True)
class Scope:
    """Which addresses are looked up: inside a dynamicnet (any, when none is
    given) and in no exclude-name-lookup network."""
    exclude: tuple[Network, ...] = ()
    only: tuple[Network, ...] = ()

    @classmethod
    def of(cls, exclude: Iterable[str | Network] = (), only: Iterable[str | Network] = ()):
        return cls(tuple(parse_networks(exclude)), tuple(parse_networks(only)))

    def looks_up(self, addr: str) -> bool:
        if excluded(addr, list(self.exclude)):
            return False
        return not self.only or excluded(addr, list(self.only))


def _being_written(name: str) -> bool:
    return name.startswith(".") or name.endswith("~") or name.endswith(".tmp")


def _read_user(path: str) -> str | None:
    """The first non-empty line, stripped; None for an empty file."""
    with open(path, "rb") as f:
        data = f.read(READ_LIMIT)
    for line in data.decode("utf-8", "replace").splitlines():
        if line.strip():
            return line.strip()
    return None


def _sig(st: os.stat_result) -> tuple:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class _Reading(NamedTuple):
    bindings: dict[str, str]          # address -> user
    files: dict[str, tuple]           # file name -> stat signature (watched files)
    users: dict[str, str | None]      # file name -> user read (None: empty)
    racy: bool                        # a timestamp too recent to trust
    at: int                           # clock_ns of the scan


def _scan(dirpath: str, scope: Scope, cache: _Reading | None,
          warned: set[str] | None, now: int) -> _Reading:
    bindings: dict[str, str] = {}
    files: dict[str, tuple] = {}
    users: dict[str, str | None] = {}
    racy = False
    source: dict[str, str] = {}
    for entry in sorted(os.scandir(dirpath), key=lambda e: e.name):
        name = entry.name
        if _being_written(name):
            continue
        addr = address_of(name)
        if addr is None:
            if warned is None or name not in warned:
                log.warning("dynamicip %s: ignoring %r, not an address", dirpath, name)
                if warned is not None:
                    warned.add(name)
            continue
        if not scope.looks_up(addr):
            continue
        try:
            st = entry.stat()
            if not stat.S_ISREG(st.st_mode):
                continue
            sig = _sig(st)
            # a read is reused only if the file's mtime tick was over when it was read
            if cache is not None and cache.files.get(name) == sig \
                    and st.st_mtime_ns < cache.at - RACY_NS:
                user = cache.users[name]
            else:
                user = _read_user(entry.path)
        except OSError as e:  # removed under us, or unreadable
            log.debug("dynamicip %s: skipping %s: %s", dirpath, name, e)
            continue
        racy |= now - st.st_mtime_ns < RACY_NS
        files[name], users[name] = sig, user
        if user is None:
            continue
        if addr in bindings:  # "10.0.0.1" and "::ffff:10.0.0.1": the first name wins
            if warned is None or name not in warned:
                log.warning("dynamicip %s: %s and %s name the same address; using %s",
                            dirpath, source[addr], name, source[addr])
                if warned is not None:
                    warned.add(name)
            continue
        bindings[addr], source[addr] = user, name
    return _Reading(bindings, files, users, racy, now)


def scan(dirpath: str, exclude: Iterable[str | Network] = (),
         only: Iterable[str | Network] = ()) -> dict[str, str]:
    """{address text: user} of the files in dirpath now."""
    return _scan(os.fspath(dirpath), Scope.of(exclude, only), None, None,
                 time.time_ns()).bindings


def _addr_key(addr: str):
    a = ipaddress.ip_address(addr)
    return (a.version, int(a))


def diff(old: dict[str, str], new: dict[str, str]) -> list[Event]:
    """Events that take `old` to `new`: every unbind first, then every bind,
    each in address order (IPv4 before IPv6). A user change on an address
    is an unbind of the old user and a bind of the new one, so a consumer
    sees an address released before anyone takes it."""
    unbinds = [Event("unbind", a, u) for a, u in old.items() if new.get(a) != u]
    binds = [Event("bind", a, u) for a, u in new.items() if old.get(a) != u]
    unbinds.sort(key=lambda e: _addr_key(e.addr))
    binds.sort(key=lambda e: _addr_key(e.addr))
    return unbinds + binds


class DirWatcher:
    """Follows a dynamicip directory by polling, once per daemon loop tick
    (the stdlib has no inotify).

    An unchanged directory costs one stat of it plus one stat per address
    file, without listing or reading anything: the directory's mtime shows
    files created, removed or renamed in; a file's inode, size and times
    show one rewritten in place (`echo user > addr`). Anything else
    rescans, reading only files whose stat changed. A timestamp within
    RACY_NS of the scan could hide a second change in the same clock tick,
    so the next poll rescans too. A missing directory reads as empty."""

    def __init__(self, dirpath: str, exclude: Iterable[str | Network] = (), *,
                 only: Iterable[str | Network] = (), clock_ns=time.time_ns):
        self.dirpath = os.fspath(dirpath)
        self.clock_ns = clock_ns
        self.scans = 0  # full rescans, for tests and `health`
        self.scope = Scope.of(exclude, only)
        self.bindings: dict[str, str] = {}
        self._reading: _Reading | None = None
        self._dir_sig: tuple | None = None
        self._warned: set[str] = set()
        self._missing_logged = False

    def lookup(self, addr: str) -> str | None:
        """The user bound to an address (acctd.model.addresses text), if any."""
        return self.bindings.get(addr)

    def poll(self) -> list[Event]:
        """Events since the last poll (the first poll binds every file)."""
        try:
            st = os.stat(self.dirpath)
        except FileNotFoundError:
            if not self._missing_logged:
                log.warning("dynamicip directory %s does not exist", self.dirpath)
                self._missing_logged = True
            self._reading, self._dir_sig = None, None
            return self._update({})
        self._missing_logged = False
        sig = _sig(st)
        if sig == self._dir_sig and self._reading is not None and not self._reading.racy \
                and self._files_unchanged():
            return []
        now = self.clock_ns()
        try:
            reading = _scan(self.dirpath, self.scope, self._reading, self._warned, now)
        except FileNotFoundError:
            self._reading, self._dir_sig = None, None
            return self._update({})
        except OSError as e:  # unreadable: keep what we knew
            log.error("dynamicip directory %s: %s", self.dirpath, e)
            return []
        self.scans += 1
        racy = reading.racy or now - st.st_mtime_ns < RACY_NS
        self._reading, self._dir_sig = reading._replace(racy=racy), sig
        return self._update(reading.bindings)

    def _files_unchanged(self) -> bool:
        for name, sig in self._reading.files.items():
            try:
                if _sig(os.stat(os.path.join(self.dirpath, name))) != sig:
                    return False
            except OSError:
                return False
        return True

    def _update(self, new: dict[str, str]) -> list[Event]:
        events = diff(self.bindings, new)
        self.bindings = new
        for e in events:
            log.info("dynamicip: %s %s %s", e.kind, e.addr, e.user)
        return events


# --- the service ----------------------------------------------------------------------

class DynamicIpService(Service):
    """The [dynamicip] directory in the daemon: polled at every loop wake-up
    (about once a second); files created, changed or removed become session
    starts and stops, all in one batch (one drain)."""

    name = "dynamicip"

    def __init__(self, core: Core, settings: DynamicIpSettings | None):
        super().__init__(core, settings)
        self.watcher: DirWatcher | None = None

    @staticmethod
    def settings_of(config):
        return config.dynamicip

    def start(self) -> None:
        self.reload(self.settings)

    def reload(self, settings: DynamicIpSettings | None) -> None:
        self.settings = settings
        if settings is None:
            self.watcher = None
        elif self.watcher is None or (self.watcher.dirpath, self.watcher.scope) != \
                (settings.dir, Scope.of(settings.exclude, settings.dynamicnet)):
            self.watcher = DirWatcher(settings.dir, settings.exclude, only=settings.dynamicnet)

    def status(self) -> dict | None:
        if self.watcher is None:
            return None
        return {"dynamicip": {"dir": self.watcher.dirpath, "bindings": len(self.watcher.bindings)}}

    def tick(self) -> list[dict]:
        if self.watcher is None:
            return []
        events = self.watcher.poll()
        if not events:
            return []
        from acctd.services.sessions import SessionsService
        sessions = self.core.service(SessionsService)
        snap = self.core.snapshot
        changes = []
        taken = {e.addr for e in events if e.kind == "bind"}  # a file now naming someone else
        for e in events:
            try:
                u = snap.unit(e.user)
            except KeyError:
                log.warning("dynamicip %s: no unit named %r", e.addr, e.user)
                continue
            if u.type != "user":
                log.warning("dynamicip %s: %s is a %s, not a user unit", e.addr, u.name, u.type)
                continue
            if e.kind == "bind":
                changes.append({"user": u.name, "addr": e.addr})
            else:
                held = sessions.open.get(u.oid)
                if held is not None and held.addr == e.addr:
                    cause = "address-moved" if e.addr in taken else "file-removed"
                    changes.append({"user": u.name, "addr": None, "cause": cause})
        if not changes:
            return []
        try:
            return sessions.changes(changes, "file")
        except ValueError as e:
            log.warning("dynamicip: %s", e)
            return []
