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
from acctd.control.delegation import ACCOUNT, SELF_SERVICE, SUBSCRIBER, Delegations
from acctd.errors import BadRequest, NotFound, PermissionDenied


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who asks: a Unix peer (its uid) or a TCP user (uid -1), at a level;
    for a unit's subscriber (acctd/control/delegation.py) that unit, for a
    billing account's holder that account."""
    uid: int
    name: str
    level: Level
    unit: str | None = None
    account: str | None = None

    @property
    def subscriber(self) -> bool:
        return self.unit is not None or self.account is not None


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
        self.delegations = Delegations()

    def peer(self, uid: int, gid: int) -> Caller:
        """A Unix peer, identified by the kernel."""
        return Caller(uid, user_name(uid), Access(self.users()).of_peer(uid, gid))

    def password(self, name: str, password: str) -> Caller:
        """A TCP user whose password matched its argon2id hash."""
        return Caller(-1, name, Access(self.users()).by_password(name, password))

    def handle(self, req: Mapping, caller: Caller) -> object:
        cmd = commands.get(req.get("cmd"))
        own = caller.subscriber and cmd.name in SELF_SERVICE
        if caller.level < cmd.level and not own:
            raise PermissionDenied(f"{cmd.name!r} needs level {cmd.level}; {caller.name} is "
                                   f"{caller.level}")
        args = req.get("args") or {}
        if caller.unit is not None:
            args = self._own_unit(cmd.name, args, caller)
        elif caller.account is not None:
            args = self._own_account(cmd, args, caller)
        kwargs = cmd.bind(args)
        if cmd.caller:
            kwargs["caller"] = caller
        return getattr(self.targets[cmd.target], cmd.method)(**kwargs)

    # on someone's behalf (the web console): acctd/control/delegation.py

    def delegated(self, token: object, peer: Caller) -> Caller:
        """The caller a token stands for, if this peer was given it."""
        name, level, unit, account = self.delegations.resolve(token, peer.uid)
        return Caller(peer.uid, name, level, unit, account)

    def web_login(self, name: str, password: str, unit: bool = False, account: bool = False,
                  caller: Caller | None = None) -> dict:
        """Check a person's password and answer a token for requests on
        their behalf: a [[user]] at their level, (unit) a unit's subscriber
        by the login-service password, or (account) a billing account's
        holder by the account's password."""
        if caller is None or caller.uid < 0 or caller.subscriber:
            raise PermissionDenied("web-login is for a local peer (the web console)")
        if unit and account:
            raise BadRequest("web-login: a unit or an account, not both")
        limit = self.delegations.limit
        key = ("unit:" if unit else "account:" if account else "user:") + name
        limit.check(key)
        try:
            if unit:
                name = self.targets["login"].verify(name, password)
                level = Level.VIEWER
            elif account:
                name = self.targets["billing"].verify(name, password)
                level = Level.VIEWER
            else:
                level = Access(self.users()).by_password(name, password)
        except PermissionDenied:
            limit.failed(key)
            raise
        scope = {"unit": name if unit else None, "account": name if account else None}
        token = self.delegations.issue(caller.uid, name, level, **scope)
        return {"token": token, "name": name, "level": str(level), **scope}

    def web_logout(self, token: str, caller: Caller | None = None) -> dict:
        return {"ended": caller is not None and self.delegations.drop(token, caller.uid)}

    @staticmethod
    def _own_unit(cmd: str, args: Mapping, caller: Caller) -> dict:
        """A subscriber's request: their commands only, about their unit only."""
        if cmd not in SUBSCRIBER:
            raise PermissionDenied(f"{cmd!r} is not for subscribers")
        if not isinstance(args, Mapping):
            return args  # bind says what is wrong
        if args.get("unit", caller.unit) != caller.unit:
            raise PermissionDenied(f"{caller.name} may see only their own unit")
        return {**args, "unit": caller.unit}

    def _own_account(self, cmd: commands.Command, args: Mapping, caller: Caller) -> dict:
        """An account holder's request: their commands only, about their
        account, its plan and its units only (billing says which)."""
        if cmd.name not in ACCOUNT:
            raise PermissionDenied(f"{cmd.name!r} is not for subscribers")
        if not isinstance(args, Mapping):
            return args  # bind says what is wrong
        takes = {a.name for a in cmd.args}
        mine = self.targets["billing"].holding(caller.account)
        out = dict(args)
        if "account" in takes:
            if args.get("account", caller.account) not in (caller.account, mine["oid"]):
                raise PermissionDenied(f"{caller.name} may see only their own account")
            out["account"] = caller.account
        if "unit" in takes:
            u = args.get("unit")
            name = mine["units"].get(u) or (u if u in mine["units"].values() else None)
            if name is None:
                raise PermissionDenied(f"{caller.name} may see only their own account's units "
                                       f"({', '.join(sorted(mine['units'].values())) or 'none'})")
            out["unit"] = name
        if cmd.name == "billing-plan":
            if args.get("what") is not None or args.get("plan", mine["plan"]) != mine["plan"]:
                raise PermissionDenied(f"{caller.name} may see only their own plan")
            if mine["plan"] is None:
                raise NotFound(f"account {caller.account} has no plan")
            out["plan"] = mine["plan"]
        return out

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
