"""The model a drain is accounted against, in one immutable piece: the
configuration as loaded, the units made at run time after the config's own
(so the config's indexes never move), and the addresses the open sessions
give their user units. The daemon's core swaps it whole, under its lock;
everyone else only reads the one they were handed.

Pure: numpy and the model, nothing kernel- or database-side.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from acctd.model.policies import AcctPlan, PolicySet
from acctd.model.units import Unit, UnitSet, oid_ints

if TYPE_CHECKING:
    from acctd.config.loader import Config


@dataclasses.dataclass(frozen=True)
class Snapshot:
    config: Config
    runtime: tuple[Unit, ...]       # units made at run time, oids assigned
    base: UnitSet                   # the config's units, then the run-time ones
    units: UnitSet                  # base, with each open session's address bound
    plan: AcctPlan                  # every unit's resolved acct-policy list
    unit_oids: np.ndarray           # unit index -> integer oid
    policy_oids: np.ndarray

    @classmethod
    def build(cls, config: Config, runtime: Sequence[Unit] = (),
              bindings: Mapping[int, bytes] | None = None) -> Snapshot:
        """ModelError when a run-time unit or a binding does not fit (a name
        or an address taken, a parent gone)."""
        base, plan = config.units, config.plan
        if runtime:
            base = UnitSet(list(config.units.units) + list(runtime),
                           reserved_oids=[p.oid for p in config.policies])
            plan = AcctPlan(base, config.policies, config.processor.default_acct_policy)
            runtime = base.units[len(config.units):]
        snap = cls(config, tuple(runtime), base, base, plan, oid_ints(base),
                   oid_ints(config.policies))
        return snap.rebound(bindings or {})

    def rebound(self, bindings: Mapping[int, bytes]) -> Snapshot:
        """Each user unit (by index) bound to its session's address; the
        others at their own. Indexes do not move."""
        units = self.base.rebound(dict(bindings)) if bindings else self.base
        return dataclasses.replace(self, units=units)

    @property
    def policies(self) -> PolicySet:
        return self.config.policies

    def find(self, key: str) -> int:
        """A unit's index by name or oid; NotFound "unknown unit 'x'"."""
        return self.units.find(key)

    def unit(self, key: str) -> Unit:
        return self.units.units[self.units.find(key)]

    def name_of(self, oid: str) -> str:
        """A unit's name by oid (the oid itself for a unit that is gone)."""
        i = self.units.by_oid.get(oid)
        return self.units.units[i].name if i is not None else oid
