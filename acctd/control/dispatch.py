"""Serving one control request, whoever brings it (the Unix socket, the TLS
listener, a scheduled command): the command from the registry, the caller's
level against it, its arguments checked, then its handler. Also the list of
open connections, which `acctctl connections` shows."""

from __future__ import annotations

import dataclasses
import pwd
import threading
from collections.abc import Callable, Mapping, Sequence

from acctd.control import commands
from acctd.control.access import Access, Level, User
from acctd.errors import PermissionDenied


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who asks: a Unix peer (its uid) or a TCP user (uid -1), at a level."""
    uid: int
    name: str
    level: Level


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


class Dispatcher:
    """targets: handler owners by name ("core", each service's name); users:
    the configured [[user]]s now (they follow reloads)."""

    def __init__(self, targets: Mapping[str, object], users: Callable[[], Sequence[User]]):
        self.targets = {**targets, "control": self}
        self.users = users
        self._conns: dict[int, dict] = {}
        self._conns_lock = threading.Lock()

    def peer(self, uid: int, gid: int) -> Caller:
        """A Unix peer, identified by the kernel."""
        return Caller(uid, user_name(uid), Access(self.users()).of_peer(uid, gid))

    def password(self, name: str, password: str) -> Caller:
        """A TCP user whose password matched its argon2id hash."""
        return Caller(-1, name, Access(self.users()).by_password(name, password))

    def handle(self, req: Mapping, caller: Caller) -> object:
        cmd = commands.get(req.get("cmd"))
        if caller.level < cmd.level:
            raise PermissionDenied(f"{cmd.name!r} needs level {cmd.level}; {caller.name} is "
                                   f"{caller.level}")
        kwargs = cmd.bind(req.get("args") or {})
        if cmd.caller:
            kwargs["caller"] = caller
        return getattr(self.targets[cmd.target], cmd.method)(**kwargs)

    # connections, for `acctctl connections`

    def connections(self) -> list[dict]:
        with self._conns_lock:
            return sorted(self._conns.values(), key=lambda c: c["since"])

    def track(self, key: int, info: dict | None) -> None:
        with self._conns_lock:
            if info is None:
                self._conns.pop(key, None)
            else:
                self._conns[key] = info
