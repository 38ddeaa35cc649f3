"""Who may use the control API and how much: the [[user]] table, the levels,
and the match of a peer (uid/gid from SO_PEERCRED, or a TCP user's
password) to a user."""

from __future__ import annotations

import dataclasses
import enum
import grp
import pwd

from acctd.config.schema import Invalid, Table, choice, integer, setting, string
from acctd.errors import PermissionDenied


class Level(enum.IntEnum):
    """How much a user may do: viewers read; operators also flush and change
    units, quotas and sessions; admins do everything."""
    VIEWER = 0
    OPERATOR = 1
    ADMIN = 2

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def named(cls, text: str) -> "Level":
        return cls[text.upper()]


LEVELS = tuple(str(v) for v in Level)


def _argon2id(v, ctx) -> str:
    if not isinstance(v, str) or not v.startswith("$argon2id$"):
        raise Invalid("expected an argon2id hash ($argon2id$...; make one with "
                      "`acctctl hash-password`), never a plain password")
    return v


@dataclasses.dataclass(frozen=True)
class User(Table):
    """A control-socket user: peers are matched by uid, user name or group."""
    name: str = setting(check=string("a user name"))
    level: str = setting(check=choice(*LEVELS))
    uid: int | None = setting(None, check=integer(0, what="a uid"))
    unix_user: str | None = setting(None, check=string("a local user name"))
    unix_group: str | None = setting(None, check=string("a local group name"))
    password: str | None = setting(None, check=_argon2id)   # for the TCP listener
    # where quota notices naming this user go (NeTAMS `user ... email`)
    email: str | None = setting(None, check=string("an e-mail address"))

    def finish(self, ctx) -> "User":
        if (self.uid, self.unix_user, self.unix_group, self.password) == (None,) * 4:
            raise Invalid("say who this is: uid, unix-user, unix-group, or a password for TCP",
                          "name")
        return self


class Access:
    """Maps a peer's uid/gid to a level from the configured users."""

    def __init__(self, users=()):
        self.users = tuple(users)

    def level(self, uid: int, gid: int) -> Level | None:
        if uid == 0:
            return Level.ADMIN
        found = [Level.named(u.level) for u in self.users if self._matches(u, uid, gid)]
        return max(found) if found else None

    @staticmethod
    def _matches(u, uid: int, gid: int) -> bool:
        if u.uid is not None and u.uid == uid:
            return True
        try:
            if u.unix_user is not None and pwd.getpwnam(u.unix_user).pw_uid == uid:
                return True
            if u.unix_group is not None:
                g = grp.getgrnam(u.unix_group)
                if g.gr_gid == gid:
                    return True
                return pwd.getpwuid(uid).pw_name in g.gr_mem
        except KeyError:
            return False  # the name does not exist on this host
        return False

    def of_peer(self, uid: int, gid: int) -> Level:
        """The level of a Unix peer; PermissionDenied for someone unknown."""
        level = self.level(uid, gid)
        if level is None:
            raise PermissionDenied(f"uid {uid} is not an acctd user (add a [[user]] with this "
                                   "uid)")
        return level

    def by_password(self, name: str, password: str) -> Level:
        """The level of a TCP user, if the password matches its argon2id hash."""
        from argon2 import PasswordHasher
        from argon2.exceptions import InvalidHashError, VerificationError
        user = next((u for u in self.users if u.name == name and u.password), None)
        try:
            if user is None:
                PasswordHasher().hash(password)  # same cost as a check: no user probing by timing
                raise VerificationError()
            PasswordHasher().verify(user.password, password)
        except (VerificationError, InvalidHashError):
            raise PermissionDenied("wrong user name or password") from None
        return Level.named(user.level)
