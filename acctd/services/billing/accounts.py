"""Billing accounts (NeTAMS `account`): kept in the database, not the config.

An account has a name, a plan (and the next month's), a status, a credit
limit and its units; a unit belongs to at most one account. Its balance is
not here: it is the ledger's sum (ledger.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

from acctd.services.billing.ledger import aware, naive

# active; block: blocked by the operator; beblock: blocked by the subscriber
STATUSES = ("active", "block", "beblock")


class AccountError(ValueError):
    """An account that does not exist, or a change that cannot be made."""


@dataclasses.dataclass(frozen=True)
class Account:
    oid: int
    name: str
    created: dt.datetime
    changed: dt.datetime
    description: str = ""
    email: str = ""
    password: str = ""          # an argon2id hash, as the login service keeps it
    plan: int | None = None
    nextplan: int | None = None
    nextplan_from: dt.datetime | None = None   # when nextplan becomes the plan (a month start)
    status: str = "active"
    credit_limit: Decimal = Decimal(0)
    blocked: dt.datetime | None = None
    units: tuple[str, ...] = ()  # unit oids, the model's text form ("0246E8")

    @property
    def oid_text(self) -> str:
        return f"{self.oid:06X}"


_FIELDS = ("oid", "name", "description", "email", "password", "plan", "nextplan",
           "nextplan_from", "status", "credit_limit", "created", "changed", "blocked")
_TIMES = ("created", "changed", "blocked", "nextplan_from")
_SETTABLE = {"name", "description", "email", "password", "plan", "nextplan", "nextplan_from",
             "status", "credit_limit", "blocked"}


def _account(row, units) -> Account:
    d = dict(zip(_FIELDS, row))
    for k in _TIMES:
        d[k] = aware(d[k])
    d["credit_limit"] = Decimal(d["credit_limit"])
    d["oid"] = int(d["oid"])
    return Account(**d, units=tuple(units.get(d["oid"], ())))


def _units(con, oid: int | None = None) -> dict[int, list[str]]:
    sql = "SELECT account_oid, unit_oid FROM account_unit"
    rows = con.execute(sql + (" WHERE account_oid = ?" if oid is not None else "") +
                       " ORDER BY unit_oid", [oid] if oid is not None else []).fetchall()
    out: dict[int, list[str]] = {}
    for a, u in rows:
        out.setdefault(int(a), []).append(f"{int(u):06X}")
    return out


def all_accounts(con) -> list[Account]:
    units = _units(con)
    return [_account(r, units) for r in
            con.execute(f"SELECT {', '.join(_FIELDS)} FROM account ORDER BY oid").fetchall()]


def find(con, name_or_oid: str | int) -> Account:
    """By name, else by oid (hex text as NeTAMS prints it, or an int)."""
    rows = []
    if isinstance(name_or_oid, str):
        rows = con.execute(f"SELECT {', '.join(_FIELDS)} FROM account WHERE name = ?",
                           [name_or_oid]).fetchall()
    if not rows:
        try:
            oid = name_or_oid if isinstance(name_or_oid, int) else int(name_or_oid, 16)
        except ValueError:
            oid = None
        if oid is not None:
            rows = con.execute(f"SELECT {', '.join(_FIELDS)} FROM account WHERE oid = ?",
                               [oid]).fetchall()
    if not rows:
        raise AccountError(f"unknown account {name_or_oid!r}")
    oid = int(rows[0][0])
    return _account(rows[0], _units(con, oid))


def create(con, name: str, now: dt.datetime, credit_limit: Decimal = Decimal(0),
           oid: int | None = None, **fields) -> Account:
    """A new account (oid: the next free one unless given)."""
    if not name or not name.strip():
        raise AccountError("an account needs a name")
    if con.execute("SELECT count(*) FROM account WHERE name = ?", [name]).fetchall()[0][0]:
        raise AccountError(f"account {name!r} exists")
    if oid is None:
        oid = con.execute("SELECT coalesce(max(oid), 0) + 1 FROM account").fetchall()[0][0]
    elif con.execute("SELECT count(*) FROM account WHERE oid = ?", [oid]).fetchall()[0][0]:
        raise AccountError(f"account oid {oid:06X} exists")
    bad = set(fields) - _SETTABLE
    if bad:
        raise AccountError(f"unknown account field {sorted(bad)[0]!r}")
    values = {"oid": oid, "name": name, "credit_limit": credit_limit, "created": naive(now),
              "changed": naive(now), **fields}
    con.execute(f"INSERT INTO account ({', '.join(values)}) VALUES "
                f"({', '.join('?' * len(values))})", list(values.values()))
    return find(con, int(oid))


def update(con, oid: int, now: dt.datetime, **fields) -> Account:
    """Set fields (name, plan, status, ...); `changed` becomes now."""
    bad = set(fields) - _SETTABLE
    if bad:
        raise AccountError(f"unknown account field {sorted(bad)[0]!r}")
    if "status" in fields and fields["status"] not in STATUSES:
        raise AccountError(f"account status {fields['status']!r}; expected one of "
                           f"{', '.join(STATUSES)}")
    if "name" in fields:
        other = con.execute("SELECT oid FROM account WHERE name = ? AND oid <> ?",
                            [fields["name"], oid]).fetchall()
        if other:
            raise AccountError(f"account {fields['name']!r} exists")
    fields = {k: naive(v) if isinstance(v, dt.datetime) else v for k, v in fields.items()}
    fields["changed"] = naive(now)
    con.execute(f"UPDATE account SET {', '.join(f'{k} = ?' for k in fields)} WHERE oid = ?",
                [*fields.values(), oid])
    return find(con, oid)


def add_unit(con, oid: int, unit_oid: str) -> None:
    """The unit bills to this account (it may belong to one account only)."""
    have = con.execute("SELECT account_oid FROM account_unit WHERE unit_oid = ?",
                       [int(unit_oid, 16)]).fetchall()
    if have and int(have[0][0]) != oid:
        raise AccountError(f"unit {unit_oid} belongs to account {int(have[0][0]):06X}")
    if not have:
        con.execute("INSERT INTO account_unit VALUES (?, ?)", [int(unit_oid, 16), oid])


def delete_unit(con, oid: int, unit_oid: str) -> None:
    n = con.execute("SELECT count(*) FROM account_unit WHERE unit_oid = ? AND account_oid = ?",
                    [int(unit_oid, 16), oid]).fetchall()[0][0]
    if not n:
        raise AccountError(f"unit {unit_oid} is not in account {oid:06X}")
    con.execute("DELETE FROM account_unit WHERE unit_oid = ?", [int(unit_oid, 16)])


def unit_accounts(con) -> dict[str, int]:
    """unit oid -> its account's oid."""
    return {f"{int(u):06X}": int(a) for u, a in
            con.execute("SELECT unit_oid, account_oid FROM account_unit").fetchall()}
