"""Units made at run time (acctctl unit add, auto-units): kept in the
database and appended after the config's units, so the config's indexes
never move; a reload merges them again.

Pure: (de)serialising units and building the merged Config.
"""

from __future__ import annotations

import dataclasses

from acctd.model.addresses import format_addr, parse_addr
from acctd.model.policies import AcctPlan
from acctd.model.units import ModelError, Unit, UnitSet

# The fields a run-time unit carries; the rest take their defaults.
_FIELDS = ("type", "name", "oid", "parents", "description", "email", "mac")


def to_dict(u: Unit) -> dict:
    d = {k: getattr(u, k) for k in _FIELDS}
    d["parents"] = list(u.parents)
    d["ip"] = [format_addr(a) for a in u.addrs]
    return d


def from_dict(d: dict) -> Unit:
    return Unit(type=d["type"], name=d["name"], oid=d.get("oid"),
                addrs=tuple(parse_addr(a) for a in d.get("ip", ())),
                parents=tuple(d.get("parents", ())), description=d.get("description", ""),
                email=d.get("email", ""), mac=d.get("mac", ""))


def merge(cfg, extra: list[Unit]):
    """cfg with `extra` units after its own (ModelError if they clash: a
    name or address taken, an unknown parent). The extra units come back
    with their oids assigned, for storing."""
    if not extra:
        return cfg, []
    units = UnitSet(list(cfg.units.units) + list(extra),
                    reserved_oids=[p.oid for p in cfg.policies])
    plan = AcctPlan(units, cfg.policies, cfg.processor.default_acct_policy)
    n = len(cfg.units)
    return dataclasses.replace(cfg, units=units, plan=plan), list(units.units[n:])


def check_new(cfg, u: Unit) -> None:
    """Refuse what a run-time unit may not be: only hosts and users, with
    at most one address (clusters, nets and groups belong in the config)."""
    if u.type not in ("host", "user"):
        raise ModelError(f"units added at run time are hosts or users, not {u.type}s: "
                         "put it in the config")
    if u.name in cfg.units.index:
        raise ModelError(f"unit name {u.name!r} is already used")
