"""The accounting daemon: drain the datapath every lookup-delay, account the
interval against units and policies, and commit rollups together with the
kernel counter checkpoint in one DuckDB transaction.

Exactly-once across crashes: the deltas of a drain are computed against the
counters of the last *committed* checkpoint, and the rows they produce are
committed in the same transaction as the new checkpoint. A SIGKILL before
COMMIT leaves the old checkpoint, so the next start recomputes the same
interval (and whatever came after) from it; after COMMIT the new one.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

import numpy as np

from acctd.daemon.identity import Identity, Imports
from acctd.kernel import abi, drain
from acctd.kernel.build import Sizes
from acctd.kernel.datapath import Datapath, Hook
from acctd.model import sessions
from acctd.store import interval, rollup
from acctd.store.database import Storage

log = logging.getLogger("acctd.daemon")

# The kernel maps whose counters the checkpoint carries.
CHECKPOINTED = {
    "acct_addrs": (abi.ADDR_KEY, abi.ADDR_VAL),
    "acct_flows": (abi.FLOW_KEY, abi.FLOW_VAL),
    "acct_ifaces": (np.dtype("<u4"), abi.IFACE_VAL),
}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Daemon(Identity, Imports):
    def __init__(self, cfg, sizes: Sizes = Sizes(), netns: str | None = None, clock=_utcnow):
        self.cfg = cfg             # the config plus the units made at run time
        self.base_cfg = cfg        # the config as loaded
        self.runtime: list = []    # units made at run time (runtime_units.py)
        self.clock = clock
        self.dp = Datapath(sizes, netns=netns)
        self.model = interval.Model.from_config(cfg)
        self.storage: Storage | None = None
        self.scheduler = None
        self.quota_state: dict | None = None   # quota.check's state, persisted
        self.quota_events: list = []           # notices given (also mailed with [alerter])
        self.mailer = None
        self.enforcer = None       # enforce.Enforcer, made at start
        self._fw_timed_for = None  # the cfg _fw_timed() last looked at, and its answer
        self._fw_timed_value = False
        self.fticks = None         # fticks.Emitter, made at the first login attempt
        self.radius = None         # radius_acct.RadiusAccounting with [radius]
        self.openvpn = None        # openvpn.ManagementClient with [openvpn] management
        self.coa_server = None     # radius_coa.CoaServer with [coa]
        self.coa_rates: dict = {}  # unit oid -> [in, out] bit/s set by RADIUS CoA
        self.static_sessions: dict = {}  # static units' RADIUS sessions (static-units)
        self.sessions: dict[str, sessions.Session] = {}  # open, by user unit oid
        self.units = cfg.units     # the config's units with the sessions' addresses
        self.hooks: dict = {}      # [session] command runners by program (AccessScript)
        self.login = None          # login.LoginService (NeTAMS service login)
        self.expired_logins: list = []  # closed by the last drain (login.Expiry)
        self.last_seen: dict = {}       # unit oid -> time of its last counted packet
        self.login_saved_use: dict = {}  # unit oid -> last use as stored (login records)
        self.flowlog = None             # flowlog.FlowLog (net-acct's flow log)
        self.flowlog_paused = False     # asked by SIGTSTP/SIGCONT, applied before a write
        self.dynamicip = None           # dynamicip.DirWatcher
        self.ifnames: dict[int, str] = {}
        self.mac_blocked: set[str] = set()   # oids mac-control blocks now
        self.mac_mismatch: dict = {}         # oid -> (addr, wanted, seen), last check
        self.access_script = None  # access_script.AccessScript when configured
        # flow-table bookkeeping for `health`: (flows inserted, live) at start,
        # and flows reaped since, so evictions are told apart from reaping
        self._flow_base = (0, 0)
        self.flows_reaped = 0
        self.deltas = {name: drain.Deltas() for name in CHECKPOINTED}
        self.lock = threading.Lock()  # one drain/commit or query at a time (one DuckDB handle)
        self.drains = 0
        self.notices: list[str] = []
        # NeTAMS check/match counters per acct entry, since this daemon started
        self.checks = np.zeros(cfg.plan.n_entries, np.uint64)
        self.matches = np.zeros(cfg.plan.n_entries, np.uint64)

    # -- lifecycle -----------------------------------------------------------------

    def schedule_path(self) -> str:
        """Schedules live beside the database, in the state directory."""
        import os
        return os.path.join(os.path.dirname(os.path.abspath(self.cfg.storage.path)), "schedule.json")

    def start(self) -> None:
        hooks = [Hook(i.name, i.role_id, i.hook) for i in self.cfg.interfaces]
        if hooks:
            self.notices = self.dp.attach(hooks)
        else:
            self.dp.load()
        self.storage = Storage(self.cfg.storage.path, self.cfg.processor.zone,
                               self.cfg.storage.raw_retention)
        self._merge_runtime_units()
        self.model = interval.Model.from_config(self.cfg)
        self._seed()
        self._configure_radius()
        self.sessions = {x.unit_oid: x for x in self.storage.sessions(open_only=True)}
        self._rebind()
        self._configure_login()
        self._configure_netacct()
        from acctd.services.scheduler import Scheduler
        self.scheduler = Scheduler(self.cfg.processor.zone, clock=self.clock, path=self.schedule_path())
        self.quota_state = self.storage.quota_state()
        self._flow_base = self._flow_counts()
        if self.cfg.alerter:
            import os
            from acctd.services.alerter import Mailer
            self.mailer = Mailer(self.cfg.alerter,
                                 os.path.join(os.path.dirname(self.schedule_path()), "outbox"))
        self._configure_access_script()
        self.apply_syspolicies()
        import json
        self.coa_rates = json.loads(self.storage.meta("coa_rates") or "{}")
        self._configure_openvpn()  # last: their first events start sessions
        self._configure_coa()

    def _configure_access_script(self) -> None:
        from acctd.services.access_script import AccessScript
        p = self.cfg.processor
        cur = self.access_script
        if cur is not None and (cur.path, cur.timeout) == (p.access_script, p.access_script_timeout):
            return
        if cur is not None:
            cur.close()
        self.access_script = AccessScript(p.access_script, p.access_script_timeout) \
            if p.access_script else None

    # -- system policies (blocks) ------------------------------------------------

    def syspolicy_bits(self) -> dict[int, int]:
        """Each unit's system-policy state: set at run time (in the database)
        or, never set, from the config."""
        from acctd.kernel.abi import Reason
        from acctd.model import sys_policy
        stored = self.storage.syspolicies()
        held = {o for o, st in (self.quota_state or {}).get("units", {}).items() if st.get("blocked")}
        login_blocked = self.login.blocked() if self.login is not None else set()
        out = {}
        for i, u in enumerate(self.cfg.units):
            bits = stored.get(int(u.oid, 16), sys_policy.from_words(u.sys_policy))
            if u.oid in held:  # the quota service's block, apart from the admin's words
                bits |= Reason.QUOTA
            if u.oid in login_blocked:  # a login record, not logged in
                bits |= Reason.LOGIN
            if u.oid in self.mac_blocked:  # mac-control: the address came from another MAC
                bits |= Reason.MAC
            if bits:
                out[i] = bits
        return out

    def apply_syspolicies(self) -> dict:
        """Make the kernel's enforcement equal the decided one (enforce.py):
        blocks from system policies and quotas, fw-policies active now,
        `restrict` and rate limits. Run at start (the kernel kept enforcing
        while we were down), on reload, after each change and after each
        drain (time targets); writes only what differs. Returns the blocks
        that moved, {prefix: [words]}, and runs the access-script for them."""
        from acctd.kernel import enforcer
        from acctd.model import enforcement, sys_policy
        if self.enforcer is None:
            self.enforcer = enforcer.Enforcer(self.dp.maps, self.cfg.processor.bw_burst)
        self.enforcer.burst_s = self.cfg.processor.bw_burst
        local_now = self.clock().astimezone(self.cfg.processor.zone)
        classes = enforcement.plan(self.cfg, self.syspolicy_bits(), local_now, self.units)
        if self.coa_rates:  # RADIUS CoA rates replace the config's bw
            import dataclasses
            classes = {p: dataclasses.replace(c, bw=tuple(self.coa_rates[c.unit_oid]))
                       if c.unit_oid in self.coa_rates else c for p, c in classes.items()}
        res = self.enforcer.apply(classes)
        changed, now_blocked = {}, set()
        for pfx, (old, new) in res["blocks"].items():
            was, now_ = sys_policy.verdict(old), sys_policy.verdict(new)
            text = enforcement.prefix_text(pfx)
            changed[text] = sys_policy.words(new)
            if now_ == abi.Verdict.DROP:
                now_blocked.add(text)
            if was != now_ and self.access_script is not None:
                spec = classes.get(pfx)
                oid = spec.unit_oid if spec else ""
                action = "deny" if now_ == abi.Verdict.DROP else "allow"
                reason = ",".join(sys_policy.words(new)) if action == "deny" else ""
                self.access_script.notify(action, oid, text, reason)
        if changed:
            log.info("blocks changed: %s", changed)
            self._kill_blocked_vpn_clients(now_blocked)
        return changed

    def _fw_timed(self) -> bool:
        """Whether a listed fw-policy has a time or day target (then each
        drain recompiles); worked out once per configuration."""
        if self._fw_timed_for is not self.cfg:
            from acctd.model import enforcement
            used = set()
            for i, u in enumerate(self.cfg.units):
                used |= {k for k, _ in enforcement.fw_list(u, i, self.cfg.policies,
                                                       self.cfg.processor.default_fw_policy)}
            self._fw_timed_for = self.cfg
            self._fw_timed_value = enforcement.time_dependent(self.cfg.policies, used)
        return self._fw_timed_value

    def blocked(self) -> dict[str, list[str]]:
        """Who the kernel blocks, read back from it: {prefix: [words]}."""
        from acctd.model import sys_policy
        return {p: sys_policy.words(r) for p, r in self.enforcer.kernel_blocks().items()}

    # -- quotas (NeTAMS service quota) --------------------------------------------

    def _quota_inputs(self, now):
        from acctd.services import quota
        specs = {o: quota.QuotaSpec.from_dict(d) for o, d in self.storage.quotas().items()}
        defaults = self.cfg.quota
        first = self.cfg.policies.policies[0].name if len(self.cfg.policies) else None
        usage = {}
        for oid, spec in specs.items():
            eff = quota.effective(spec, defaults, first)
            try:
                pol = self.cfg.policies.policies[self.cfg.policies.find(eff.policy)]
            except KeyError:
                log.error("quota of %s counts policy %r, which is not configured", oid, eff.policy)
                continue
            usage[oid] = quota.usage_from_totals(self.storage.unit_totals(oid, now), int(pol.oid, 16))
        return specs, defaults, usage, first

    def _check_quotas(self, now) -> None:
        """After each committed drain: hard quotas block (reason QUOTA) and a
        new period lets the unit back, with soft/hard/return notices once per
        period. The state is saved before the kernel is told, so a crash in
        between re-applies it at the next start."""
        from acctd.services import quota
        specs, defaults, usage, first = self._quota_inputs(now)
        if not specs and not self.quota_state:
            return
        res = quota.check(specs, defaults, usage, self.quota_state, now,
                          self.cfg.processor.zone, first)
        before = {o for o, st in (self.quota_state or {}).get("units", {}).items() if st.get("blocked")}
        self.quota_state = res.state
        self.storage.set_quota_state(res.state)
        for e in res.events:
            log.info("quota %s: unit %s %s %s %d of %d", e.kind, e.unit, e.period, e.dir, e.used, e.quota)
            self._mail_quota(e)
        self.quota_events.extend(res.events)
        if set(res.blocked) != before:
            self.apply_syspolicies()

    def _mail_quota(self, e) -> None:
        """Queue the notice (the outbox is on disk: nothing is lost if the mail
        server is down); a thread of its own delivers it."""
        if self.mailer is None or e.period is None:
            return
        from acctd.services.alerter import QuotaNotice
        u = self.cfg.units.units[self.cfg.units.find(e.unit)]
        self.mailer.notify_quota(QuotaNotice(e.kind, u.name, u.oid, e.period, e.dir, e.used,
                                             e.quota, u.email or None))

    def deliver_mail(self, stop: threading.Event, every: float = 10.0) -> None:
        """The mail thread: SMTP waits never hold up draining."""
        while self.mailer is not None and not stop.wait(every):
            try:
                self.mailer.deliver_due()
            except Exception:
                log.exception("mail delivery failed; retried later")

    def set_quota(self, argv: list[str]) -> dict:
        """`acctctl quota set NAME day 3M in ...`: kept in the database."""
        from acctd.services import quota
        with self.lock:
            argv = ["set", *argv]  # acctctl quota set NAME ... = NeTAMS quota set NAME ...
            head = quota.parse_set(argv)  # to learn whose record it is
            i = self.cfg.units.find(head.unit)
            oid = self.cfg.units.units[i].oid
            old = self.storage.quotas().get(oid)
            spec = quota.parse_set(argv, base=quota.QuotaSpec.from_dict(old) if old else None)
            self.storage.set_quota(oid, spec.to_dict() if spec.limits or not spec.active else None)
            return {"unit": self.cfg.units.units[i].name, "oid": oid, "set": quota.format_set(spec)}

    def show_quota(self, unit: str | None = None, list_only: bool = False) -> dict:
        from acctd.services import quota
        with self.lock:
            now = self.clock()
            specs, defaults, usage, first = self._quota_inputs(now)
            names = {u.oid: u.name for u in self.cfg.units}
            acct = {}
            for i, u in enumerate(self.cfg.units):
                lo, hi = self.cfg.plan.entry_ptr[i], self.cfg.plan.entry_ptr[i + 1]
                acct[u.oid] = [self.cfg.policies.policies[p].name for p in self.cfg.plan.entry_policy[lo:hi]]
            rows = quota.show_quota(specs, defaults, names, usage, self.quota_state, acct, first, unit)
            return {"text": quota.format_show(rows, list_only),
                    "units": [{"oid": r.oid, "name": r.name, "blocked": r.blocked,
                               "lines": [{"period": ln.period, "dir": ln.dir, "used": ln.used,
                                          "quota": ln.quota, "ok": ln.ok} for ln in r.lines]}
                              for r in rows]}

    def set_syspolicy(self, unit: str, word: str) -> dict:
        """`acctctl unit NAME sys-...`: decide, record, enforce (in that order,
        so a crash in between re-applies the record at the next start)."""
        from acctd.model import sys_policy
        i = self.cfg.units.find(unit)
        u = self.cfg.units.units[i]
        t = time.monotonic()
        with self.lock:
            bits = sys_policy.apply(self.syspolicy_bits().get(i, 0), word)
            self.storage.set_syspolicy(int(u.oid, 16), bits)
            changed = self.apply_syspolicies()
        return {"unit": u.name, "sys_policy": sys_policy.words(bits), "changed": changed,
                "applied_ms": round((time.monotonic() - t) * 1000, 2)}

    def _seed(self) -> None:
        """Resume from the last committed counters (an empty baseline if none:
        counters never committed anywhere are counted at the first drain)."""
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

    def _flow_counts(self) -> tuple[int, int]:
        """(flows ever inserted, flows live now) in the kernel's flow table."""
        ifs = drain.read(self.dp.maps["acct_ifaces"])[1]
        return (int(ifs["health"][:, abi.Health.FLOW_NEW].sum()),
                len(self.dp.maps["acct_flows"].read_all()[0]))

    def flow_evictions(self) -> int:
        """Flows the LRU evicted since this daemon started: inserted minus
        what is still there minus what the daemon reaped itself. (Counting
        from attach would need the reaps of earlier daemons too.)"""
        new, live = self._flow_counts()
        return max(0, (new - self._flow_base[0]) - (live - self._flow_base[1]) - self.flows_reaped)

    def status(self) -> dict:
        """What `acctctl status` and `health` show: the daemon, the machine,
        the datapath's fill and what it could not account."""
        import os
        import shutil
        with self.lock:
            fill = {}
            for name in ("acct_addrs", "acct_flows"):
                m = self.dp.maps[name]
                n = len(m.read_all()[0])
                fill[name] = {"entries": n, "max": m.info.max_entries,
                              "percent": round(100.0 * n / m.info.max_entries, 1)}
            ifs = drain.read(self.dp.maps["acct_ifaces"])[1]
            lan = self._lan_slots()
            hooked = np.array(sorted({s for s, _ in self.dp.hooked_slots().values()}), np.int64)
            health = {h.name.lower(): int(ifs["health"][:, h].sum()) for h in abi.Health}
            db_dir = os.path.dirname(os.path.abspath(self.cfg.storage.path))
            return {
                "config": self.cfg.path, "drains": self.drains,
                "last_drain": self.storage.meta("last_drain"),
                "load": os.getloadavg(),
                "disk_free_bytes": {db_dir: shutil.disk_usage(db_dir).free},
                "datapath": {
                    "prog_ids": self.dp.prog_ids(), "fill": fill, "health": health,
                    "unattributed_bytes": int(ifs["unattr_bytes"][lan].sum()),
                    # drops at every hook (a WAN hook enforces too), by cause
                    "dropped_bytes": int(ifs["drop_bytes"][hooked].sum()),
                    "dropped": {c.name.lower(): {"packets": int(ifs["drop_packets"][hooked, c].sum()),
                                                 "bytes": int(ifs["drop_bytes"][hooked, c].sum())}
                                for c in abi.Drop},
                    "access_script": self.access_script.status() if self.access_script else None,
                    "flow_evictions": self.flow_evictions(),  # since this daemon started
                },
                "services": self._service_status(),
            }

    def _service_status(self) -> dict:
        """The side services' state, for `acctctl status`: what is queued,
        attached or refused."""
        out: dict = {"sessions_open": len(self.sessions)}
        if self.radius is not None:
            out["radius_pending"] = len(self.radius.pending())
        if self.openvpn is not None:
            out["openvpn"] = {"attached": self.openvpn.attached,
                              "clients": len(self.openvpn.clients()),
                              "last_error": self.openvpn.last_error}
        if self.coa_server is not None:
            out["coa"] = dict(self.coa_server.stats)
        if self.flowlog is not None:
            out["flowlog"] = self.flowlog.status()
        if self.dynamicip is not None:
            out["dynamicip"] = {"dir": self.dynamicip.dirpath,
                                "bindings": len(self.dynamicip.bindings)}
        if self.fticks is not None:
            out["fticks"] = {"written": self.fticks.written, "lost": self.fticks.lost}
        return out

    def rates_snapshot(self) -> dict:
        """A cheap read for `acctctl top`: the per-address, VLAN and port
        counters as they are now (no drain), plus each unit's today and month
        from the summaries. Rates are the client's: two snapshots apart."""
        from acctctl import top
        from acctd.kernel import reader
        ts = time.monotonic()
        keys, vals = drain.read(self.dp.maps["acct_addrs"])
        arrays = {n: drain.read(self.dp.maps[n])[1] for n in ("acct_vlans", "acct_ports", "acct_ifaces")}
        rep = reader.report(keys, vals, arrays, self.dp.hooked_slots())
        addrs = [{"addr": a, **{k: r[k] for k in ("packets_in", "packets_out", "bytes_in", "bytes_out")}}
                 for a, r in rep["addrs"].items()]
        for row, unit in zip(addrs, top.attribute([r["addr"] for r in addrs], self.cfg.units)):
            row["unit"] = unit
        now = self.clock()
        with self.lock:
            today = self.storage.unit_period_bytes("day", now)
            month = self.storage.unit_period_bytes("month", now)
        units = {}
        for i, u in enumerate(self.cfg.units):
            if u.type == "group":
                continue  # groups filter the list; listing them would count bytes twice
            oid = int(u.oid, 16)
            t, m = today.get(oid, (0, 0)), month.get(oid, (0, 0))
            units[u.name] = {"groups": [self.cfg.units.units[g].name for g in self.cfg.units.ancestors[i]],
                             "today": {"bytes_in": t[0], "bytes_out": t[1]},
                             "month": {"bytes_in": m[0], "bytes_out": m[1]}}
        return {"ts": ts, "addrs": addrs, "vlans": rep["vlans"], "ports": rep["ports"], "units": units}

    def reload(self) -> None:
        """SIGHUP: re-read units, policies and users without detaching.

        The interval so far is drained and committed under the old model
        first, so every byte is accounted exactly once, under the units and
        policies in force when it was counted. A config with mistakes is
        refused and the old one stays (the error names file, line and key)."""
        from acctd import config
        try:
            new = config.load(self.cfg.path)
        except Exception as e:
            log.error("reload refused, keeping the running configuration: %s", e)
            return
        self.drain()
        with self.lock:
            old, self.base_cfg = self.cfg, new
            self._merge_runtime_units()
            self._rebind(self.clock())
            self.checks = np.zeros(self.cfg.plan.n_entries, np.uint64)
            self.matches = np.zeros(self.cfg.plan.n_entries, np.uint64)
        with self.lock:
            self._configure_access_script()
            self._configure_login()
            self._configure_netacct()
            if new.radius != old.radius:
                self._configure_radius()
        if new.openvpn != old.openvpn:
            self._configure_openvpn()
        if new.coa != old.coa:
            self._configure_coa()
            if self.fticks is not None:  # settings may have changed: reopened when next used
                self.fticks.close()
                self.fticks = None
            self.apply_syspolicies()  # units and their addresses may have changed
        if new.interfaces != old.interfaces:
            self.notices = self.dp.attach(Hook(i.name, i.role_id, i.hook) for i in new.interfaces)
        if new.processor.zone != old.processor.zone and self.scheduler:
            self.scheduler.set_zone(new.processor.zone)
        if new.storage != old.storage:
            log.warning("[storage] changes take effect at the next start")
        log.info("reloaded %s: %d units, %d policies, %d users", new.path, len(new.units),
                 len(new.policies), len(new.users))

    def close(self) -> None:
        if self.coa_server is not None:
            self.coa_server.stop()
        if self.openvpn is not None:
            self.openvpn.stop()
        self._close_radius()
        if self.fticks is not None:
            self.fticks.close()
        if self.flowlog is not None:
            self.flowlog.close()
        if self.access_script is not None:
            self.access_script.close()
        for r in self.hooks.values():
            r.close()
        if self.storage:
            self.storage.close()
        self.dp.close()

    # -- one drain -------------------------------------------------------------------

    def drain(self) -> dict:
        """Drain, account and commit one interval; returns a short summary."""
        with self.lock:
            self.expired_logins = []
            summary = self._drain()
            expired = self.expired_logins
        from acctd.services.login import SESSION_CAUSE
        stops = [{"user": self.cfg.units.units[self.cfg.units.by_oid[e.oid]].name, "addr": None,
                  "cause": SESSION_CAUSE[e.cause]}
                 for e in expired if e.oid in self.sessions and self.login.settings.set_user_ip]
        if stops:  # timed-out users give their addresses back (set-user-ip)
            self.session_changes(stops, "login")
        return summary

    def _drain(self) -> dict:
        """One drain (the caller holds self.lock)."""
        now = self.clock()
        reaped = self._reap_idle_flows()
        read = {}
        for name in CHECKPOINTED:
            keys, vals = drain.read(self.dp.maps[name])
            if name == "acct_flows" and reaped is not None:
                keys = np.concatenate([keys, reaped[0]])
                vals = np.concatenate([vals, reaped[1]])
            read[name] = (keys, vals)
        try:
            delta = {n: self.deltas[n].update(*read[n]) for n in ("acct_addrs", "acct_flows")}
            ifd = drain.array_delta(read["acct_ifaces"][1], self._prev_ifaces())
            self.deltas["acct_ifaces"].seed(*read["acct_ifaces"])
            lan = self._lan_slots()
            cols, counts = interval.columns(
                self.model, now.astimezone(self.cfg.processor.zone),
                delta["acct_flows"].keys, delta["acct_flows"].values,
                delta["acct_addrs"].keys, delta["acct_addrs"].values,
                ifd["unattr_packets"][lan].sum(axis=0), ifd["unattr_bytes"][lan].sum(axis=0))
            charges = sessions.charges(cols, {o: x.id for o, x in self.sessions.items()})
            self.storage.commit(rollup.rollup(cols, now, self.cfg.processor.zone), read,
                                charges)
            self._write_flowlog(now, delta["acct_flows"])
            for x in self.sessions.values():
                c = charges.get(x.id)
                if c:
                    x.packets_in += c[0]
                    x.packets_out += c[1]
                    x.bytes_in += c[2]
                    x.bytes_out += c[3]
            try:
                self._radius_after_drain(now, cols)  # interims see this drain
            except OSError as e:  # the counts are committed: RADIUS gets them later
                log.error("RADIUS interims not spooled: %s", e)
        except BaseException:
            self._seed()  # the baseline moved ahead of the file: go back to it
            raise
        self.drains += 1
        self.checks += counts.checks
        self.matches += counts.matches
        self._check_quotas(now)
        expired = self._expire_logins(now, delta["acct_addrs"].keys, delta["acct_addrs"].values)
        self._auto_units(delta["acct_addrs"].keys)
        if self.cfg.processor.mac_control != "off":
            self._mac_control()
        if expired or self._fw_timed():
            self.apply_syspolicies()  # logins closed; fw-policy time targets move
        self.expired_logins = expired
        return {"drain": self.drains, "ts": now.isoformat(), "rows": int(len(cols["bytes"])),
                "flows": int(len(delta["acct_flows"].keys)),
                "addrs": int(len(delta["acct_addrs"].keys))}

    def _prev_ifaces(self):
        prev = self.deltas["acct_ifaces"].previous
        if prev is None or not len(prev[0]):
            return None
        full = np.zeros(self.dp.maps["acct_ifaces"].info.max_entries, abi.IFACE_VAL)
        full[prev[0]] = prev[1]
        return full

    def _lan_slots(self) -> np.ndarray:
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
                       (prev[1]["last_ns"] + self.cfg.processor.flow_lifetime * 10**9 < now_ns)]
        if not len(idle):
            return None
        m = self.dp.maps["acct_flows"]
        keys, vals = [], []
        for k in idle:
            v = m.lookup_and_delete(k)
            if v is not None:
                keys.append(k)
                vals.append(drain.reduce_percpu(v[None])[0])
        if not keys:
            return None
        self.flows_reaped += len(keys)
        return np.array(keys, abi.FLOW_KEY), np.array(vals, abi.FLOW_VAL)

    # -- loop --------------------------------------------------------------------------

    def run(self, stop: threading.Event, mailbox: "Mailbox", on_drain=None, run_scheduled=None,
            notifier=None) -> None:
        """The main loop: drains every lookup-delay, serves flush and reload
        requests (from acctctl and signals) in between, and hands due
        schedule entries to `run_scheduled` (which must not block: a
        scheduled `flush` waits for this very loop). It wakes at least once
        a second and pings the systemd watchdog from here, not from a
        thread of its own, so a stuck loop is noticed."""
        from acctd.daemon.systemd import Notifier
        sd = notifier or Notifier({})
        if self.mailer is not None:
            threading.Thread(target=self.deliver_mail, args=(stop,), name="mail", daemon=True).start()
        next_at = time.monotonic() + self.cfg.processor.lookup_delay
        while not stop.is_set():
            sd.watchdog()
            # wake at least once a second for the scheduler
            waiters, reload = mailbox.wait(min(1.0, max(0.0, next_at - time.monotonic())), stop)
            if stop.is_set():
                break
            try:
                self.poll_dynamicip()
            except Exception:
                log.exception("dynamicip poll failed")
            if self.scheduler and run_scheduled:
                for entry in self.scheduler.due():
                    run_scheduled(entry)
                if self.scheduler.save_error:
                    log.error("could not save schedules: %s", self.scheduler.save_error)
            if reload:
                sd.reloading()
                try:
                    self.reload()
                except Exception:  # the drain inside failed: retried from the checkpoint
                    log.exception("reload failed")
                sd.ready()
                next_at = time.monotonic() + self.cfg.processor.lookup_delay
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
                if on_drain:
                    on_drain(summary, err)
                next_at = time.monotonic() + self.cfg.processor.lookup_delay
        sd.stopping()  # programs stay attached and keep counting

    def send_reports(self, request=None, now: dt.datetime | None = None) -> dict:
        """`send report ...` from acctctl or a schedule: one mail per unit with
        its bytes per acct-policy over the last complete day or week, queued
        in the outbox (the mail thread delivers). Which units, period and
        figures: acctd.services.reports; here only the query, under the lock, and the
        queueing, outside it."""
        from acctd.errors import AcctError
        from acctd.services import reports
        if self.mailer is None:
            raise AcctError(reports.NO_ALERTER)
        req = request if request is not None else reports.Request()
        with self.lock:  # one DuckDB handle; reload swaps cfg under it too
            cfg, zone = self.cfg, self.cfg.processor.zone
            now = now if now is not None else self.clock()
            start, end = reports.last_period(req.period, now, zone)
            figures = reports.period_figures(self.storage, req.period, start)
        out, skipped = reports.build(cfg, req, self.mailer.settings.admins, figures, start)
        queued = []
        for r in out:
            mid = self.mailer.report(r.unit, r.oid, None, r.period, r.start, list(r.rows),
                                     to=r.to, total=r.total)
            queued.append({"unit": r.unit, "to": list(r.to), "id": mid})
        log.info("send report %s from %s: %d queued, %d skipped", req.period,
                 start.astimezone(zone).date(), len(queued), len(skipped))
        return {"period": req.period, "start": start.astimezone(zone).isoformat(),
                "end": end.astimezone(zone).isoformat(), "queued": queued, "skipped": skipped}


class Mailbox:
    """Requests to the main loop: `acctctl flush` (each waiter gets the result
    of a drain that started after it asked) and reloads (SIGHUP). Signal
    handlers only set a flag here; the work happens in the loop."""

    def __init__(self):
        self._cv = threading.Condition()
        self._pending: list[dict] = []
        self._reload = False

    def ask_reload(self) -> None:
        with self._cv:
            self._reload = True
            self._cv.notify_all()

    def request(self, timeout: float = 120.0) -> dict:
        slot: dict = {}
        with self._cv:
            self._pending.append(slot)
            self._cv.notify_all()
            if not self._cv.wait_for(lambda: "result" in slot or "error" in slot, timeout):
                raise TimeoutError("the daemon did not drain in time")
        if "error" in slot:
            raise RuntimeError(f"drain failed: {slot['error']}")
        return slot["result"]

    def wait(self, timeout: float, stop: threading.Event) -> tuple[list[dict], bool]:
        with self._cv:
            self._cv.wait_for(lambda: self._pending or self._reload or stop.is_set(), timeout)
            taken, self._pending = self._pending, []
            reload, self._reload = self._reload, False
            return taken, reload

    def done(self, waiters: list[dict], summary, err) -> None:
        with self._cv:
            for w in waiters:
                if err is None:
                    w["result"] = summary
                else:
                    w["error"] = str(err)
            self._cv.notify_all()

    def wake(self) -> None:
        with self._cv:
            self._cv.notify_all()


def _empty(name: str):
    k, v = CHECKPOINTED[name]
    return np.zeros(0, k), np.zeros(0, v)
