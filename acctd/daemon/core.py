"""The daemon's core: lifecycle, one drain, the model snapshot and
enforcement. Everything else is a service (acctd/services/contract.py),
called at fixed hook points in the order of SERVICES.

One drain (the README's Layout section draws it):

    read the pinned maps -> deltas against the committed checkpoint
      -> + the other data sources' flows (services' collected(), same arrays)
      -> rows under the current snapshot (acctd/store/interval.py)
      -> BEGIN; rows, rollups, checkpoint; each service's in_drain(); COMMIT
      -> each service's after_drain() -> enforce() once, if anything asked
      -> (lock released) each service's settle()

Exactly-once across crashes: the deltas of a drain are computed against
the counters of the last *committed* checkpoint, and the rows they produce
are committed in the same transaction as the new checkpoint. A SIGKILL
before COMMIT leaves the old checkpoint, so the next start recomputes the
same interval (and whatever came after) from it; after COMMIT the new one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import threading
import time

import numpy as np

from acctd import config as config_mod
from acctd.aaa.coa import CoaService
from acctd.aaa.radius_auth import RadiusAuthService
from acctd.aaa.captive import CaptiveService
from acctd.aaa.fticks import FticksService
from acctd.aaa.openvpn import OpenVpnService
from acctd.aaa.radius_accounting import RadiusService
from acctd.control.dispatch import Dispatcher
from acctd.daemon import perf
from acctd.daemon.log import LogService
from acctd.errors import ConfigError
from acctd.kernel import abi, drain
from acctd.kernel.build import Sizes
from acctd.kernel.datapath import Datapath, Hook, NoSuchInterface
from acctd.kernel.enforcer import Enforcer
from acctd.model import enforcement, sources, sys_policy
from acctd.model.snapshot import Snapshot
from acctd.model.units import ModelError
from acctd.services.access_script import AccessScriptService
from acctd.services.aclserver.service import AclServerService
from acctd.services.alerter import AlerterService
from acctd.services.billing.invoicing import InvoicingService
from acctd.services.billing.service import BillingService
from acctd.services.collector.service import CollectorService
from acctd.services.central import CentralService
from acctd.services.contract import Drain, S, Service
from acctd.services.dynamicip import DynamicIpService
from acctd.services.export import ExportService
from acctd.services.flowlog import FlowLogService
from acctd.services.login import LoginService
from acctd.services.mac_control import MacService
from acctd.services.monitor import MonitorService
from acctd.services.quota import QuotaService
from acctd.services.reports import ReportsService
from acctd.services.runtime_units import UnitsService
from acctd.services.scheduler import SchedulerService
from acctd.services.sessions import SessionsService
from acctd.store import interval, rollup
from acctd.store.database import Storage

log = logging.getLogger("acctd.daemon")

# The services, in the order every hook point calls them. After a drain the
# flow log and the monitor go first (they name the drain's flows by the model
# they were counted under), then the sessions' and RADIUS's counts, then what
# decides blocks (quotas, billing and invoicing, logins), then what changes
# the model (auto-units). CoA and OpenVPN follow: their first events start
# sessions. Then the flow exchanges and the servers (export, the collector,
# whose flows join the drain before any hook, the acl-server, RADIUS
# authorization, the captive page), and central last: its in_drain queues
# what the others wrote in the same transaction.
SERVICES: tuple[type[Service], ...] = (
    FlowLogService, MonitorService, SessionsService, RadiusService, QuotaService, BillingService,
    InvoicingService, LoginService, UnitsService, MacService, DynamicIpService, AlerterService,
    ReportsService, AccessScriptService, FticksService, SchedulerService, CoaService,
    OpenVpnService, LogService, ExportService, CollectorService, AclServerService,
    RadiusAuthService, CaptiveService, CentralService)

# The kernel maps whose counters the checkpoint carries.
CHECKPOINTED = {
    "acct_addrs": (abi.ADDR_KEY, abi.ADDR_VAL),
    "acct_flows": (abi.FLOW_KEY, abi.FLOW_VAL),
    "acct_ifaces": (np.dtype("<u4"), abi.IFACE_VAL),
}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Daemon:
    """The core (acctd.services.contract.Core) and what runs it."""

    def __init__(self, cfg, sizes: Sizes = Sizes(), netns: str | None = None, clock=_utcnow):
        from acctd.daemon.commands import CoreCommands
        self.clock = clock
        self.netns = netns
        self.dp = Datapath(sizes, netns=netns)
        self.lock = threading.RLock()  # one drain/commit or query at a time (one DuckDB handle)
        self.storage: Storage | None = None
        self._snapshot = Snapshot.build(cfg)
        self.services: dict[str, Service] = {cls.name: cls(self, cls.settings_of(cfg))
                                             for cls in SERVICES}
        self.commands = CoreCommands(self)
        self.dispatcher = Dispatcher({"core": self.commands, **self.services},
                                     lambda: self.config.users)
        self.mailbox = Mailbox()
        self.enforcer: Enforcer | None = None
        self.deltas = {name: drain.Deltas() for name in CHECKPOINTED}
        self.drains = 0
        self.perf = perf.Perf()        # the last drains' timings (`acctctl perf`)
        # for `acctctl status`: the last drain or commit that failed (when, why),
        # and how many failed since the last one that committed
        self.last_error: tuple[dt.datetime, str] | None = None
        self.failed_drains = 0
        self.notices: list[str] = []
        # NeTAMS check/match counters per acct entry, since this daemon started
        self.checks = np.zeros(self._snapshot.plan.n_entries, np.uint64)
        self.matches = np.zeros(self._snapshot.plan.n_entries, np.uint64)
        # flow-table bookkeeping for `health`: (flows inserted, live) at start,
        # and flows reaped since, so evictions are told apart from reaping
        self._flow_base = (0, 0)
        self.flows_reaped = 0
        self._draining = False         # enforce() waits for the drain's end
        self._enforce_asked = False
        self._fw_timed_for: Snapshot | None = None
        self._fw_timed = False
        # pins or hooks found missing at a drain (_check_datapath), for status
        self.reattached = 0
        self.datapath_incident: dict | None = None
        self._in_place_at: str | None = None

    # -- what services see (acctd.services.contract.Core) ------------------------------

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def config(self):
        return self._snapshot.config

    @property
    def state_dir(self) -> str:
        """Beside the database: the spool, the outbox, the schedules."""
        db = self.storage.path if self.storage is not None else self.config.storage.path
        return os.path.dirname(os.path.abspath(db))

    def service(self, kind: type[S]) -> S:
        return self.services[kind.name]

    def call(self, command: str, /, **args):
        """A control command as root would send it (the same path as acctctl's)."""
        from acctd.control.access import Level
        from acctd.control.dispatch import Caller
        return self.dispatcher.handle({"cmd": command, "args": args},
                                      Caller(0, "root", Level.ADMIN))

    def ifnames(self) -> dict[int, str]:
        return self.dp.ifnames()

    def session_started(self, session, user: str) -> None:
        for s in self.services.values():
            s.session_started(session, user)

    def session_stopping(self, session, user: str, cause: str, now: dt.datetime) -> None:
        for s in self.services.values():
            s.session_stopping(session, user, cause, now)

    def login_attempted(self, who, ok, reason, addr, mac, method, rp=None) -> None:
        """Every login and logout attempt (login service, OpenVPN): logged,
        and told to the services (F-TICKS)."""
        log.info("%s %s: %s %s addr=%s mac=%s", method, "ok" if ok else "FAIL", who, reason,
                 addr or "-", mac or "-")
        for s in self.services.values():
            s.login_attempted(who, ok, reason, addr, mac, method, rp=rp)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        cfg = self.config
        hooks = self._hooks()
        try:  # before the database or the maps are touched
            self.dp.check_interfaces(h.ifname for h in hooks)
        except NoSuchInterface as e:
            raise interface_error(cfg, e) from None
        self.storage = Storage(cfg.storage.path, cfg.processor.zone, cfg.storage.raw_retention)
        with self.storage.reported():  # the first reads of the checkpoint and the services' state
            self._seed()
            counting = self.dp.is_pinned()  # the maps hold counts from before this start
            self.dp.load()  # pinned, and hooked only where they were already
            self._baseline_for_new_database(counting)
            if hooks:
                try:
                    self.notices = self.dp.attach(hooks)
                except NoSuchInterface as e:
                    raise interface_error(cfg, e) from None
            self._flow_base = self._flow_counts()
            self.start_services()
        self.enforce()  # the kernel kept enforcing while we were down: make it current
        for s in self.services.values():
            s.serve()

    def start_services(self) -> None:
        """The services' state from the database (no kernel needed): run-time
        units and open sessions first, for the snapshot, then every start()."""
        cfg = self.config
        units = self.service(UnitsService)
        units.load()
        self.service(SessionsService).load()
        self._snapshot = units.fit(cfg)
        for s in self.services.values():
            s.start()
        with self.lock:
            self.rebuild()  # after RADIUS started: a session that no longer fits gets its Stop

    def rebuild(self, fitted: Snapshot | None = None, *, cfg=None) -> None:
        """A new snapshot (caller holds the lock): the config (the current one,
        or a new one at reload), the run-time units that fit it, and the open
        sessions' addresses. Sessions that no longer fit are stopped. A
        binding change alone rebinds the units it has, and `fitted` (the
        config and its run-time units, built by the caller already) is only
        bound: one UnitSet build either way."""
        units = self.service(UnitsService)
        if fitted is not None:
            snap = fitted
        elif cfg is None and self._snapshot.runtime == tuple(units.runtime):
            snap = self._snapshot
        else:
            snap = units.fit(cfg or self.config)
        sessions = self.service(SessionsService)
        bindings = sessions.bindings(snap)
        try:
            snap = snap.rebound(bindings)
        except ModelError as e:  # e.g. the config now gives the address to a host
            log.warning("sessions no longer fit the units (%s): stopping them", e)
            sessions.stop_all("config-changed")
            snap = snap.rebound({})
        self._snapshot = snap
        if len(self.checks) != snap.plan.n_entries:
            self.checks = np.zeros(snap.plan.n_entries, np.uint64)
            self.matches = np.zeros(snap.plan.n_entries, np.uint64)

    def reload(self) -> dict:
        """SIGHUP, `acctctl reload`: re-read units, policies, users and
        services without detaching. The interval so far is drained and
        committed under the old model first, so every byte is accounted
        exactly once, under the units and policies in force when it was
        counted. A config with mistakes, or naming an interface the namespace
        lacks, is refused before anything changes: ConfigError (file, line,
        key), and the old one stays. Enforcement is re-applied at the end,
        whatever changed. Returns the verdict: the file and what changed."""
        old = self.config
        try:
            new = config_mod.load(old.path)
            if new.interfaces != old.interfaces:
                try:
                    self.dp.check_interfaces(i.name for i in new.interfaces)
                except NoSuchInterface as e:
                    raise interface_error(new, e) from None
        except ConfigError as e:
            log.error("reload refused, keeping the running configuration: %s", e)
            raise
        self.drain()
        with self.lock:
            self.rebuild(cfg=new)
            self.checks = np.zeros(self.snapshot.plan.n_entries, np.uint64)
            self.matches = np.zeros(self.snapshot.plan.n_entries, np.uint64)
            for cls in SERVICES:
                if cls.reload_under_lock:
                    self.services[cls.name].reload(cls.settings_of(new))
        for cls in SERVICES:  # their threads may be waiting for the lock
            if not cls.reload_under_lock:
                self.services[cls.name].reload(cls.settings_of(new))
        if new.interfaces != old.interfaces:
            self.notices = self.dp.attach(Hook(i.name, i.role_id, i.hook) for i in new.interfaces)
        if new.storage != old.storage:
            log.warning("[storage] changes take effect at the next start")
        self.enforce()
        log.info("reloaded %s: %d units, %d policies, %d users", new.path, len(new.units),
                 len(new.policies), len(new.users))
        return {"reloaded": new.path, "changed": _changed(old, new), "units": len(new.units),
                "policies": len(new.policies), "users": len(new.users)}

    def answer_reload(self, waiters: list[dict]) -> None:
        """One reload in the main loop, its verdict to everyone who asked
        (`acctctl reload`; SIGHUP asks with no waiter)."""
        verdict = err = None
        try:
            verdict = self.reload()
        except ConfigError as e:  # refused (logged): the running configuration stays
            err = e
        except Exception as e:  # the drain inside failed: retried from the checkpoint
            log.exception("reload failed")
            err = e
        self.mailbox.done(waiters, verdict, err)

    def close(self) -> None:
        for s in reversed(self.services.values()):
            s.close()
        if self.storage:
            self.storage.close()
        self.dp.close()

    # -- blocks and enforcement ----------------------------------------------------------

    def sys_policy_bits(self) -> dict[int, int]:
        """Each unit's blocks by index, as the kernel gets them
        (sys_policy.resolve): its own system-policy state (set at run time,
        in the database, or never set, the config's words), the blocks the
        services hold (quota, login, mac) and its groups', minus the reasons
        a sys-allow lifted. Lifted reasons that no longer reach a unit are
        forgotten here, so their next block blocks."""
        return self._sys_policy_resolved()[0]

    def _sys_policy_resolved(self) -> tuple[dict, dict, dict]:
        """(blocks, reaching, states) by unit index (caller may not hold the lock)."""
        with self.lock:
            snap = self.snapshot
            stored = self.storage.sys_policies()
            held: dict[str, int] = {}
            for s in self.services.values():
                for oid, bits in s.blocks().items():
                    held[oid] = held.get(oid, 0) | bits
            states, held_at = {}, {}
            for i, u in enumerate(snap.units):
                st = stored.get(u.oid, sys_policy.from_words(u.sys_policy))
                if st:
                    states[i] = st
                if held.get(u.oid):
                    held_at[i] = held[u.oid]
            blocks, reaching, pruned = sys_policy.resolve(snap.units, states, held_at)
            for i, st in pruned.items():
                self.storage.set_sys_policy(snap.units.units[i].oid, st)
                states[i] = st
            return blocks, reaching, states

    def enforce(self) -> dict:
        """Make the kernel's enforcement equal the decided one
        (acctd/model/enforcement.py): blocks from system policies and the
        services, fw-policies active now, `restrict` and rate limits. Writes
        only what differs; inside a drain it waits for the drain's end, so a
        drain writes once. Returns the blocks that moved, {prefix: [words]}."""
        with self.lock:
            if self._draining:
                self._enforce_asked = True
                return {}
            if self.enforcer is None:
                self.enforcer = Enforcer(self.dp.maps, self.config.processor.bw_burst)
            self.enforcer.burst_s = self.config.processor.bw_burst
            snap = self.snapshot
            local_now = self.clock().astimezone(snap.config.processor.zone)
            denied: dict = {}
            for s in self.services.values():
                for oid, (texts, bits) in s.fw_blocks().items():
                    old = denied.get(oid, ((), 0))
                    denied[oid] = (old[0] + tuple(texts), old[1] | bits)
            classes = enforcement.plan(snap, self.sys_policy_bits(), local_now, denied)
            rates: dict = {}
            for s in self.services.values():
                rates.update(s.rate_limits())
            if rates:  # RADIUS CoA rates replace the config's bw
                classes = {p: dataclasses.replace(c, bw=tuple(rates[c.unit_oid]))
                           if c.unit_oid in rates else c for p, c in classes.items()}
            res = self.enforcer.apply(classes)
            moved, changed = {}, {}
            for pfx, (old, new) in res["blocks"].items():
                text = enforcement.prefix_text(pfx)
                spec = classes.get(pfx)
                moved[text] = (old, new, spec.unit_oid if spec else "")
                changed[text] = sys_policy.words(new)
            if moved:
                log.info("blocks changed: %s", changed)
                for s in self.services.values():
                    s.blocks_changed(moved)
            return changed

    def set_sys_policy(self, unit: str, word: str) -> dict:
        """A system-policy word for a unit (`acctctl unit NAME sys-...`, a
        RADIUS Disconnect): decide, record, enforce, in that order, so a
        crash in between re-applies the record at the next start. The words
        returned are the unit's blocks in force after it, as enforced."""
        with self.lock:
            snap = self.snapshot
            i = snap.find(unit)
            u = snap.units.units[i]
            t = time.monotonic()
            _, reaching, states = self._sys_policy_resolved()
            for j, st in sys_policy.give(states, snap.units, i, word, reaching).items():
                self.storage.set_sys_policy(snap.units.units[j].oid, st)
            changed = self.enforce()
            bits = self.sys_policy_bits().get(i, 0)
        return {"unit": u.name, "sys_policy": sys_policy.words(bits), "changed": changed,
                "applied_ms": round((time.monotonic() - t) * 1000, 2)}

    def blocked(self) -> dict[str, list[str]]:
        """Who the kernel blocks, read back from it: {prefix: [words]}."""
        with self.lock:
            return {p: sys_policy.words(r) for p, r in self.enforcer.kernel_blocks().items()}

    def _fw_time_dependent(self) -> bool:
        """Whether a listed fw-policy has a time or day target (then each
        drain recompiles); worked out once per config and run-time units
        (sessions rebind addresses, never fw-policies)."""
        snap = self.snapshot
        made = self._fw_timed_for
        if made is None or made.config is not snap.config or made.runtime is not snap.runtime:
            used = set()
            default = snap.config.processor.default_fw_policy
            for i, u in enumerate(snap.units):
                used |= {k for k, _ in enforcement.fw_list(u, i, snap.policies, default)}
            self._fw_timed_for = snap
            self._fw_timed = enforcement.time_dependent(snap.policies, used)
        return self._fw_timed

    # -- one drain -------------------------------------------------------------------

    def drain(self) -> dict:
        """Drain, account and commit one interval; returns a short summary."""
        with self.lock:
            summary = self._drain()
        for s in self.services.values():
            try:
                s.settle()
            except Exception:
                log.exception("%s: after the drain", s.name)
        return summary

    def drain_locked(self) -> dict:
        """A drain for a binding change (the caller holds the lock)."""
        return self._drain()

    def _drain(self) -> dict:
        timer = perf.DrainClock()
        self._check_datapath()
        snap = self.snapshot
        zone = snap.config.processor.zone
        now = self.clock()
        reaped = self._reap_idle_flows()
        read = {}
        for name in CHECKPOINTED:
            keys, vals = drain.read(self.dp.maps[name])
            if name == "acct_flows" and reaped is not None:
                keys = np.concatenate([keys, reaped[0]])
                vals = np.concatenate([vals, reaped[1]])
            read[name] = (keys, vals)
        timer.lap("read")
        try:
            delta = {n: self.deltas[n].update(*read[n]) for n in ("acct_addrs", "acct_flows")}
            ifd = drain.array_delta(read["acct_ifaces"][1], self._prev_ifaces())
            self.deltas["acct_ifaces"].seed(*read["acct_ifaces"])
            lan = self.lan_slots()
            services = list(self.services.values())
            fk, fv, ak, av, elsewhere_p, elsewhere_b = sources.kernel_view(
                snap.units, delta["acct_flows"].keys, delta["acct_flows"].values,
                delta["acct_addrs"].keys, delta["acct_addrs"].values)
            taken = [c for s in services if (c := s.collected(snap)) is not None]
            if taken:  # the other data sources' flows, in the same arrays (collector)
                fk, fv, ak, av = (np.concatenate([a, *(getattr(c, f) for c in taken)])
                                  for a, f in ((fk, "flow_keys"), (fv, "flow_values"),
                                               (ak, "addr_keys"), (av, "addr_values")))
            rows, counts = interval.columns(
                snap, now.astimezone(zone), fk, fv, ak, av,
                ifd["unattr_packets"][lan].sum(axis=0) + elsewhere_p,
                ifd["unattr_bytes"][lan].sum(axis=0) + elsewhere_b)
            extra = [c.rows for c in taken if c.rows is not None]
            if extra:  # rawdata: rows of their own
                rows = {k: np.concatenate([rows[k], *(r[k] for r in extra)]) for k in rows}
            d = Drain(now, snap, rows, fk, fv, ak, av)
            rolled = rollup.rollup(rows, now, zone, rollup.by_key(fk, fv, ak, av))
            timer.lap("account")

            def in_transaction(tx: Storage) -> None:
                for s in services:
                    s.in_drain(d, tx)
            self.storage.commit(rolled, read, in_transaction,
                                {n: (delta[n].base, delta[n].prev) for n in delta})
            timer.lap("commit")
        except BaseException as e:
            self.last_error, self.failed_drains = (now, str(e) or repr(e)), self.failed_drains + 1
            for s in self.services.values():
                s.drain_failed()
            with self.storage.reported():
                self._seed()  # the baseline moved ahead of the file: go back to it
            raise
        self.drains, self.failed_drains = self.drains + 1, 0
        self.checks += counts.checks
        self.matches += counts.matches
        self._draining, self._enforce_asked = True, False
        try:
            for s in services:
                try:
                    s.after_drain(d)
                except Exception:  # committed already: the others still get their turn
                    log.exception("%s: after the drain", s.name)
        finally:
            self._draining = False
        if self._enforce_asked or self._fw_time_dependent():
            self.enforce()  # blocks decided above; fw-policy time targets move
        timer.lap("services")
        summary = {"drain": self.drains, "ts": now.isoformat(), "rows": int(len(rows["bytes"])),
                   "flows": int(len(delta["acct_flows"].keys)),
                   "addrs": int(len(delta["acct_addrs"].keys))}
        self.perf.record(self.drains, summary["ts"], timer, summary["rows"], summary["flows"])
        return summary

    # -- the datapath stays as attached ------------------------------------------------

    def _hooks(self) -> list[Hook]:
        return [Hook(i.name, i.role_id, i.hook) for i in self.config.interfaces]

    def _check_datapath(self) -> None:
        """Before every drain: the pins and hooks this daemon counts with are
        in place. An `acctctl detach --force`, a removed pin or a foreign
        attach would otherwise end accounting silently; say so (log, status,
        health) and attach again from the maps held open, so the counters
        and the checkpoint stay consistent. Traffic an unhooked interface
        passed meanwhile was not counted: the log says since when it may be."""
        hooks = self._hooks()
        try:
            problems = self.dp.problems(hooks)
        except Exception as e:  # e.g. netlink: still try to put things back
            problems = [f"cannot check the datapath: {e}"]
        now = self.clock().isoformat()
        if not problems:
            self._in_place_at = now
            return
        last = self.datapath_incident
        record = {"at": now, "problems": problems, "reattached": False}
        repeated = last is not None and last["problems"] == problems and not last["reattached"]
        (log.debug if repeated else log.error)(
            "DATAPATH NOT AS ATTACHED: %s; traffic through an unhooked interface was not "
            "counted (last seen in place: %s); attaching again", "; ".join(problems),
            self._in_place_at or "when the daemon started")
        try:
            self.notices = self.dp.repair(hooks)
            record["reattached"] = True
            self.reattached += 1
            log.warning("datapath attached again under %s, counters continue (%d time(s) "
                        "since start)", self.dp.pin_dir, self.reattached)
        except Exception as e:
            record["error"] = str(e)
            (log.debug if repeated else log.error)("datapath: attaching again failed: %s", e)
        self.datapath_incident = record

    def datapath_state(self) -> dict:
        """For `status` and `health`: how often the drains' check had to attach
        again since start, and the last time it found something missing."""
        return {"reattached": self.reattached, "last_incident": self.datapath_incident}

    def _baseline_for_new_database(self, counting: bool) -> None:
        """A database with no checkpoint gets one at once, of the counters as
        they are now, before this start hooks anything: then no crash can
        leave it without one. Maps made by this start are empty, so all they
        count belongs to it. Maps that were counting already (a new [storage]
        path, a deleted file) hold traffic of hours this database never saw,
        their flows partly evicted: crediting it to the first drain's hour
        (and (all) above its policies) would be wrong, so it is left out, and
        the log says how much."""
        if self.storage.load_checkpoint(CHECKPOINTED):
            return
        read = {name: drain.read(self.dp.maps[name]) for name in CHECKPOINTED}
        now = self.clock()
        zone = self.config.processor.zone
        none = {n: np.zeros(0, k) for n, (k, _) in CHECKPOINTED.items()}
        nothing, _ = interval.columns(
            self.snapshot, now.astimezone(zone), none["acct_flows"],
            np.zeros(0, abi.FLOW_VAL), none["acct_addrs"], np.zeros(0, abi.ADDR_VAL),
            np.zeros(abi.DIR_MAX, np.uint64), np.zeros(abi.DIR_MAX, np.uint64))
        self.storage.commit(rollup.rollup(nothing, now, zone), read)
        self._seed()
        addrs = read["acct_addrs"][1]
        if counting and int(addrs["packets"].sum()):
            log.warning("new database %s on a datapath counting since before it (%s): "
                        "counting starts from the counters as they are now; %d packets, %d "
                        "bytes the kernel counted before are not credited to it",
                        self.storage.path, self.dp.pin_dir, int(addrs["packets"].sum()),
                        int(addrs["bytes"].sum()))

    def _seed(self) -> None:
        """Resume from the last committed counters (a database starts with a
        checkpoint: _baseline_for_new_database)."""
        was = self.storage.meta("abi_version")
        if was != str(abi.ABI_VERSION):
            log.warning("datapath ABI v%s -> v%s: the new maps start at zero; counts of the "
                        "old ones since their last drain are not carried over (drain with "
                        "`acctctl flush` before upgrading; `acctctl detach` with the old "
                        "version removes its pins)", was, abi.ABI_VERSION)
            self.storage.forget_checkpoint()
        ckpt = self.storage.load_checkpoint(CHECKPOINTED)
        for name, d in self.deltas.items():
            d.seed(*ckpt[name]) if name in ckpt else d.seed(*_empty(name))

    def _prev_ifaces(self):
        prev = self.deltas["acct_ifaces"].previous
        if prev is None or not len(prev[0]):
            return None
        full = np.zeros(self.dp.maps["acct_ifaces"].info.max_entries, abi.IFACE_VAL)
        full[prev[0]] = prev[1]
        return full

    def lan_slots(self) -> np.ndarray:
        """The acct_ifaces slots of the LAN interfaces (the ones that account)."""
        return np.array([s for s, role in self.dp.hooked_slots().values() if role == abi.Role.LAN],
                        dtype=np.int64)

    def _reap_idle_flows(self):
        """Take flows idle longer than flow-lifetime out of the kernel table, with
        their final counters, so the LRU keeps room for live ones."""
        prev = self.deltas["acct_flows"].previous
        if prev is None or not len(prev[0]):
            return None
        now_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        idle = prev[0][(prev[1]["last_ns"] > 0) &
                       (prev[1]["last_ns"] + self.config.processor.flow_lifetime * 10**9 < now_ns)]
        if not len(idle):
            return None
        m = self.dp.maps["acct_flows"]
        found, vals = m.take(idle)
        if not found.any():
            return None
        self.flows_reaped += int(found.sum())
        return idle[found], drain.reduce_percpu(vals[found])

    def _flow_counts(self) -> tuple[int, int]:
        """(flows ever inserted, flows live now) in the kernel's flow table."""
        def inserted() -> int:
            return int(drain.read(self.dp.maps["acct_ifaces"])[1]["health"][
                :, abi.Health.FLOW_NEW].sum())
        return settled_counts(inserted, lambda: len(self.dp.maps["acct_flows"].read_all()[0]))

    def flow_evictions(self) -> int:
        """Flows the LRU evicted since this daemon started: inserted minus
        what is still there minus what the daemon reaped itself. (Counting
        from attach would need the reaps of earlier daemons too.)"""
        new, live = self._flow_counts()
        return max(0, (new - self._flow_base[0]) - (live - self._flow_base[1]) - self.flows_reaped)

    # -- the loop ----------------------------------------------------------------------

    def run(self, stop: threading.Event, notifier=None) -> None:
        """The main loop: drains every lookup-delay, serves flush and reload
        requests (from acctctl and signals) in between, and gives every
        service its tick (the dynamicip directory, due schedule entries). It
        wakes at least once a second and pings the systemd watchdog from
        here, not from a thread of its own, so a stuck loop is noticed."""
        from acctd.daemon.systemd import Notifier
        sd = notifier or Notifier({})
        mailbox = self.mailbox
        next_at = time.monotonic() + self.config.processor.lookup_delay
        while not stop.is_set():
            sd.watchdog()
            waiters, reloads = mailbox.wait(min(1.0, max(0.0, next_at - time.monotonic())), stop)
            if stop.is_set():
                break
            for s in self.services.values():
                try:
                    s.tick()
                except Exception:
                    log.exception("%s: tick failed", s.name)
            if reloads is not None:
                sd.reloading()
                self.answer_reload(reloads)
                sd.ready()
                next_at = time.monotonic() + self.config.processor.lookup_delay
            if waiters or time.monotonic() >= next_at:
                try:
                    summary = self.drain()
                    err = None
                    log.debug("drain %s", summary)
                except Exception as e:  # the next drain retries from the checkpoint
                    summary, err = None, e
                    log.error("drain failed, will retry from the last checkpoint: %s", e,
                              exc_info=log.isEnabledFor(logging.DEBUG))
                mailbox.done(waiters, summary, err)
                if summary:
                    sd.status(f"drain {summary['drain']}: {summary['rows']} rows, "
                              f"{summary['addrs']} addresses moved")
                next_at = time.monotonic() + self.config.processor.lookup_delay
        sd.stopping()  # programs stay attached and keep counting


class Mailbox:
    """Requests to the main loop: `acctctl flush` (each waiter gets the result
    of a drain that started after it asked) and reloads (SIGHUP, or
    `acctctl reload`, which waits for the verdict). Signal handlers only set
    a flag here; the work happens in the loop."""

    def __init__(self):
        self._cv = threading.Condition()
        self._pending: list[dict] = []
        self._reloads: list[dict] | None = None  # None: no reload asked

    def ask_reload(self) -> None:
        with self._cv:
            self._reloads = self._reloads or []
            self._cv.notify_all()

    def request(self, timeout: float = 120.0, reload: bool = False) -> dict:
        """Wait for the loop's next drain (or, with `reload`, its reload)."""
        slot: dict = {}
        with self._cv:
            if reload:
                self._reloads = (self._reloads or []) + [slot]
            else:
                self._pending.append(slot)
            self._cv.notify_all()
            if not self._cv.wait_for(lambda: "result" in slot or "error" in slot, timeout):
                raise TimeoutError(f"the daemon did not {'reload' if reload else 'drain'} in "
                                   "time")
        err = slot.get("error")
        if isinstance(err, ConfigError):
            raise err
        if err is not None:
            raise RuntimeError(f"{'reload' if reload else 'drain'} failed: {err}")
        return slot["result"]

    def wait(self, timeout: float, stop: threading.Event) -> tuple[list[dict], list[dict] | None]:
        """(flush waiters, reload waiters or None when no reload was asked)."""
        with self._cv:
            self._cv.wait_for(lambda: self._pending or self._reloads is not None or
                              stop.is_set(), timeout)
            taken, self._pending = self._pending, []
            reloads, self._reloads = self._reloads, None
            return taken, reloads

    def done(self, waiters: list[dict], summary, err) -> None:
        with self._cv:
            for w in waiters:
                if err is None:
                    w["result"] = summary
                else:
                    w["error"] = err
            self._cv.notify_all()

    def wake(self) -> None:
        with self._cv:
            self._cv.notify_all()


def settled_counts(inserted, live, tries: int = 5) -> tuple[int, int]:
    """(inserted(), live()) of a table the datapath inserts into meanwhile.
    Read one after the other, a flow inserted between the reads is live
    without having been inserted, or the other way round: a false eviction
    or a hidden one (one failed CI). So the inserts are read on both sides
    of the walk, and the walk is made again until they agree; a table that
    never stops growing is off by one walk's inserts at most."""
    after = inserted()
    for _ in range(tries):
        before = after
        n = live()
        after = inserted()
        if after == before:
            break
    return before, n


def interface_error(cfg, e: NoSuchInterface) -> ConfigError:
    """A configured interface the namespace lacks, at its line in the config
    (at start, reload and `acctd --check`)."""
    index = next(n for n, i in enumerate(cfg.interfaces) if i.name == e.ifname)
    return config_mod.error_at(cfg.path, str(e), "interface", index, "name")


def _changed(old, new) -> list[str]:
    """The config's tables a reload's verdict names as changed: units and
    policies compared by value (the plan follows from them), a table that
    cannot say counted as changed."""
    out = []
    for name in (f.name for f in dataclasses.fields(old) if f.name not in ("path", "plan")):
        a, b = getattr(old, name), getattr(new, name)
        if name in ("units", "policies"):
            # a policy's `as` terms are the same when only the AS table moved
            a, b = ((tuple(x), getattr(getattr(x, "as_table", None), "digest", None))
                    for x in (a, b))
        try:
            same = bool(a == b)
        except (ValueError, TypeError):  # numpy inside (prefix files): no cheap answer
            same = False
        if not same:
            out.append(name)
    return out


def _empty(name: str):
    k, v = CHECKPOINTED[name]
    return np.zeros(0, k), np.zeros(0, v)
