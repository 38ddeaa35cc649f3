"""NeTAMS `service monitor`: the flows of the monitored units, with their
remote peers, to several destinations.

  storage  per-flow rows in the database (acctd/store/monitor.py), written
           inside the drain's transaction so they commit exactly once with
           the counts, pruned after their own retention;
  file     the nacctd flow log (acctd/services/flowlog.py) of the monitored
           units' flows (of every flow when no unit is listed), as nacctd
           lines or JSON lines; `acctctl rotate monitor` renames it;
  netflow  sent by the export service (acctd/services/export), which asks
           monitored_oids() here; this service only accepts the word.

A unit is monitored by name or oid: the config's `units`, and at run time
`acctctl monitor unit add|remove`, kept in the database (meta
"monitor_units") over the config's list. A group's or net's members are
monitored with it: a flow is its local unit's (the most specific).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time

import numpy as np

from acctd.config.schema import (Invalid, Table, choice, duration, each, file_path,
                                 setting, strings)
from acctd.errors import BadRequest, NotFound
from acctd.model.policies import local_addrs
from acctd.model.snapshot import Snapshot
from acctd.services.contract import Core, Drain, Service
from acctd.services.flowlog import DEFAULT_FIELDS, STYLES, FlowLog, check_fields
from acctd.store import monitor as table
from acctd.store.rollup import to_us

log = logging.getLogger("acctd.monitor")

DESTINATIONS = ("storage", "file", "netflow")
STATE_KEY = "monitor_units"


@dataclasses.dataclass(frozen=True)
class MonitorSettings(Table):
    """The [monitor] table (NeTAMS [service monitor])."""
    units: tuple[str, ...] = setting((), check=strings("unit names or oids"))
    to: tuple[str, ...] = setting(("storage",), check=each(choice(*DESTINATIONS),
                                                            "destinations"))
    file: str | None = setting(None, check=file_path())
    format: str = setting("nacctd", check=choice(*STYLES))
    fields: tuple[str, ...] = setting(DEFAULT_FIELDS, check=lambda v, ctx: check_fields(
        strings("field names")(v, ctx)))
    retention: int = setting(30 * 86400, check=duration(3650 * 86400))   # seconds

    def finish(self, ctx):
        if not self.to:
            raise Invalid("at least one destination: storage, file or netflow", "to")
        if "file" in self.to and self.file is None:
            raise Invalid('`to` has "file": give the file, e.g. file = '
                          '"/var/log/acctd/monitor"', "to")
        if self.file is not None and "file" not in self.to:
            raise Invalid('a file is given but `to` has no "file"', ctx.spelled("file"))
        return self


def covered(units, listed: list[int]) -> np.ndarray:
    """Per unit index: monitored (listed, or a member of a listed group)."""
    mask = np.zeros(len(units), bool)
    for i in listed:
        mask[i] = True
        mask[units.descendants(i)] = True
    return mask


def select(units, mask: np.ndarray, flow_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(which flows are monitored, each flow's local unit index); mask: covered()."""
    if not len(flow_keys) or not mask.any():   # no unit monitored: no match to pay for
        return np.zeros(len(flow_keys), bool), np.full(len(flow_keys), -1, np.int32)
    leaf = units.match(local_addrs(flow_keys))
    hit = leaf >= 0
    hit[hit] = mask[leaf[hit]]
    return hit, leaf


class MonitorService(Service):
    """The monitor in the daemon: which units, and their flows to storage
    (in the drain) and to the file (after the commit)."""

    name = "monitor"

    def __init__(self, core: Core, settings: MonitorSettings | None):
        super().__init__(core, settings)
        self.added: list[str] = []       # run-time changes over the config's list (oids)
        self.removed: list[str] = []
        self.file: FlowLog | None = None
        self.stored = self.pruned = 0
        self.ifnames: dict[int, str] | None = None
        self._mask: tuple[Snapshot, tuple, np.ndarray] | None = None   # per snapshot
        self._warned: set[str] = set()

    @staticmethod
    def settings_of(config):
        return config.monitor

    def start(self) -> None:
        raw = self.core.storage.meta(STATE_KEY)
        if raw:
            state = json.loads(raw)
            self.added, self.removed = list(state["add"]), list(state["remove"])
        self.reload(self.settings)

    def reload(self, settings: MonitorSettings | None) -> None:
        self.settings = settings
        want = settings is not None and "file" in settings.to
        cur = self.file
        if cur is not None and (not want or (cur.path, cur.fields, cur.style) !=
                                (settings.file, settings.fields, settings.format)):
            cur.close()
            self.file = None
        if want and self.file is None:
            self.file = FlowLog(settings.file, settings.fields, style=settings.format)
        self.ifnames = None          # asked at the next write: the datapath may be newer
        self._mask = None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    # -- which units --------------------------------------------------------------

    def _listed(self, snapshot: Snapshot) -> list[int]:
        """Unit indexes monitored in this snapshot: the config's, then the run
        time's additions, less its removals. A name the model no longer has
        is skipped (warned once)."""
        if self.settings is None:
            return []
        units = snapshot.units
        out: list[int] = []
        for key in (*self.settings.units, *self.added):
            try:
                i = units.find(key)
            except KeyError:
                if key not in self._warned:
                    self._warned.add(key)
                    log.warning("monitor: no unit %s (skipped)", key)
                continue
            if units.units[i].oid not in self.removed and i not in out:
                out.append(i)
        return out

    def _covered(self, snapshot: Snapshot) -> np.ndarray:
        changes = (tuple(self.added), tuple(self.removed))
        if self._mask is None or self._mask[0] is not snapshot or self._mask[1] != changes:
            self._mask = (snapshot, changes, covered(snapshot.units, self._listed(snapshot)))
        return self._mask[2]

    def monitored_oids(self) -> frozenset[int]:
        """The integer oids of the monitored units and of their members: a
        flow is monitored when its local unit's oid is here (the export
        service's `to netflow` filter)."""
        snap = self.core.snapshot
        return frozenset(int(o) for o in snap.unit_oids[self._covered(snap)])

    # -- the flows ----------------------------------------------------------------

    def in_drain(self, drain: Drain, tx) -> None:
        s = self.settings
        if s is None or "storage" not in s.to:
            return
        hit, leaf = select(drain.snapshot.units, self._covered(drain.snapshot),
                           drain.flow_keys)
        ts_us = to_us(drain.now)
        if hit.any():
            rows = table.flow_rows(drain.flow_keys[hit], drain.flow_values[hit],
                                   drain.snapshot.unit_oids[leaf[hit]],
                                   wall_us=ts_us, mono_ns=time.monotonic_ns())
            self.stored += table.write(tx.con, ts_us, rows)
        self.pruned += table.prune(tx.con, ts_us - s.retention * 1_000_000)

    def after_drain(self, drain: Drain) -> None:
        if self.file is None:
            return
        keys, vals = drain.flow_keys, drain.flow_values
        if self._listed(drain.snapshot):  # none listed: the whole flow log
            hit, _ = select(drain.snapshot.units, self._covered(drain.snapshot), keys)
            keys, vals = keys[hit], vals[hit]
        units = drain.snapshot.units

        def user(addr: str) -> str | None:
            return units.names_of([addr])[0]
        if self.ifnames is None:
            self.ifnames = self.core.ifnames()
        try:
            self.file.append(keys, vals, now=drain.now, devices=self.ifnames, user=user)
        except OSError as e:  # the counts are committed: the file is a copy
            log.error("monitor file %s: %s", self.file.path, e)

    # -- commands -----------------------------------------------------------------

    def _unit_oid(self, unit: str) -> str:
        if self.settings is None:
            raise BadRequest("no [monitor] in the configuration")
        try:
            return self.core.snapshot.units.units[self.core.snapshot.units.find(unit)].oid
        except KeyError:
            raise NotFound(f"no unit {unit!r}") from None

    def _keep(self) -> None:
        self.core.storage.set_meta(STATE_KEY, json.dumps({"add": self.added,
                                                          "remove": self.removed}))

    def add(self, unit: str) -> dict:
        """`monitor unit NAME|OID`, kept across restarts."""
        with self.core.lock:
            oid = self._unit_oid(unit)
            if oid in self.removed:
                self.removed.remove(oid)
            if oid not in self._oids_listed():
                self.added.append(oid)
            self._keep()
            return self.show()

    def remove(self, unit: str) -> dict:
        """`no monitor unit NAME|OID`, kept across restarts."""
        with self.core.lock:
            oid = self._unit_oid(unit)
            if oid not in self._oids_listed():
                raise NotFound(f"unit {unit!r} is not monitored")
            if oid in self.added:
                self.added.remove(oid)
            if oid in self._config_oids():
                self.removed.append(oid)
            self._keep()
            return self.show()

    def _config_oids(self) -> list[str]:
        units = self.core.snapshot.units
        out = []
        for key in self.settings.units:
            try:
                out.append(units.units[units.find(key)].oid)
            except KeyError:
                pass
        return out

    def _oids_listed(self) -> list[str]:
        units = self.core.snapshot.units
        return [units.units[i].oid for i in self._listed(self.core.snapshot)]

    def show(self) -> dict:
        """`show monitor`."""
        s = self.settings
        snap = self.core.snapshot
        return {
            "configured": s is not None,
            "units": [{"name": snap.units.units[i].name, "oid": snap.units.units[i].oid,
                       "type": snap.units.units[i].type} for i in self._listed(snap)],
            "to": list(s.to) if s else [],
            "netflow": "sent by the export service" if s and "netflow" in s.to else None,
            "retention": s.retention if s else None,
            "rows_stored": self.stored, "rows_pruned": self.pruned,
            "file": self.file.status() | {"format": self.file.style}
            if self.file is not None else None}

    def status(self) -> dict | None:
        if self.settings is None:
            return None
        r = self.show()
        return {"monitor": {"units": [u["name"] for u in r["units"]], "to": r["to"],
                            "rows_stored": r["rows_stored"], "rows_pruned": r["rows_pruned"]}}

    def query(self, unit: str, peer: str | None = None, port: int | None = None,
              since: str | None = None, until: str | None = None,
              top: int | None = None) -> dict:
        """`monitor query`: per peer, port and protocol, from the stored rows."""
        with self.core.lock:
            return answer_query(self.core.storage, self.core.snapshot.units, unit, peer=peer,
                                port=port, since=since, until=until, top=top)

    def rotate(self) -> dict:
        """`rotate monitor`: the file renamed with NeTAMS's time suffix."""
        with self.core.lock:
            if self.file is None:
                raise BadRequest("the monitor writes no file (no \"file\" in [monitor] to)")
            return {"file": self.file.path, "rotated_to": self.file.rotate(
                suffix=time.strftime("%Y-%m-%d_%H:%M", time.localtime(self.file.clock())))}


def answer_query(storage, units, unit: str, *, peer=None, port=None, since=None, until=None,
                 top=None) -> dict:
    """The query for the daemon and for `acctctl --db` alike: UNIT and its
    members' rows."""
    import datetime as dt
    try:
        i = units.find(unit)
    except KeyError:
        raise NotFound(f"no unit {unit!r}") from None
    oids = [int(units.units[j].oid, 16) for j in (i, *units.descendants(i))]

    def when(text, what):
        if text is None:
            return None
        try:
            t = dt.datetime.fromisoformat(text)
        except ValueError:
            raise BadRequest(f"--{what}: expected a time like 2026-01-31 or "
                             f"2026-01-31T12:00, got {text!r}") from None
        return t if t.tzinfo else t.replace(tzinfo=storage.zone)
    since_t, until_t = when(since, "from"), when(until, "to")
    if peer is not None:
        try:
            table.prefix_range(peer)
        except ValueError as e:
            raise BadRequest(f"--peer: {e}") from None
    rows = table.query(storage.con, oids, peer=peer, port=port, since=since_t, until=until_t,
                       top=top)
    return {"unit": units.units[i].name, "oid": units.units[i].oid, "peers": rows}

