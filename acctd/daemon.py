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

from acctd import abi, drain, interval, rollup, sessions
from acctd.build import Sizes
from acctd.datapath import Datapath, Hook
from acctd.storage import Storage

log = logging.getLogger("acctd.daemon")

# The kernel maps whose counters the checkpoint carries.
CHECKPOINTED = {
    "acct_addrs": (abi.ADDR_KEY, abi.ADDR_VAL),
    "acct_flows": (abi.FLOW_KEY, abi.FLOW_VAL),
    "acct_ifaces": (np.dtype("<u4"), abi.IFACE_VAL),
}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Daemon:
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
        self.sessions: dict[str, sessions.Session] = {}  # open, by user unit oid
        self.units = cfg.units     # the config's units with the sessions' addresses
        self.hooks: dict = {}      # [session] command runners by program (AccessScript)
        self.login = None          # login.LoginService (NeTAMS service login)
        self.expired_logins: list = []  # closed by the last drain (login.Expiry)
        self.last_seen: dict = {}       # unit oid -> time of its last counted packet
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
        self.sessions = {x.unit_oid: x for x in self.storage.sessions(open_only=True)}
        self._rebind()
        self._configure_login()
        self._configure_netacct()
        from acctd.scheduler import Scheduler
        self.scheduler = Scheduler(self.cfg.processor.zone, clock=self.clock, path=self.schedule_path())
        self.quota_state = self.storage.quota_state()
        self._flow_base = self._flow_counts()
        if self.cfg.alerter:
            import os
            from acctd.alerter import Mailer, MailSettings
            settings = MailSettings.from_mapping(self.cfg.alerter, os.path.dirname(self.cfg.path))
            self.mailer = Mailer(settings, os.path.join(os.path.dirname(self.schedule_path()), "outbox"))
        self._configure_access_script()
        self.apply_syspolicies()

    def _configure_access_script(self) -> None:
        from acctd.access_script import AccessScript
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
        from acctd import syspolicy
        from acctd.abi import Reason
        stored = self.storage.syspolicies()
        held = {o for o, st in (self.quota_state or {}).get("units", {}).items() if st.get("blocked")}
        login_blocked = self.login.blocked() if self.login is not None else set()
        out = {}
        for i, u in enumerate(self.cfg.units):
            bits = stored.get(int(u.oid, 16), syspolicy.from_words(u.sys_policy))
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
        from acctd import enforce, syspolicy
        if self.enforcer is None:
            self.enforcer = enforce.Enforcer(self.dp.maps, self.cfg.processor.bw_burst)
        self.enforcer.burst_s = self.cfg.processor.bw_burst
        local_now = self.clock().astimezone(self.cfg.processor.zone)
        classes = enforce.plan(self.cfg, self.syspolicy_bits(), local_now, self.units)
        res = self.enforcer.apply(classes)
        changed = {}
        for pfx, (old, new) in res["blocks"].items():
            was, now_ = syspolicy.verdict(old), syspolicy.verdict(new)
            text = enforce.prefix_text(pfx)
            changed[text] = syspolicy.words(new)
            if was != now_ and self.access_script is not None:
                spec = classes.get(pfx)
                oid = spec.unit_oid if spec else ""
                action = "deny" if now_ == abi.Verdict.DROP else "allow"
                reason = ",".join(syspolicy.words(new)) if action == "deny" else ""
                self.access_script.notify(action, oid, text, reason)
        if changed:
            log.info("blocks changed: %s", changed)
        return changed

    def _fw_in_use(self) -> bool:
        p = self.cfg.processor
        return bool(p.default_fw_policy) or any(u.fw_policy for u in self.cfg.units)

    def blocked(self) -> dict[str, list[str]]:
        """Who the kernel blocks, read back from it: {prefix: [words]}."""
        from acctd import syspolicy
        return {p: syspolicy.words(r) for p, r in self.enforcer.kernel_blocks().items()}

    # -- quotas (NeTAMS service quota) --------------------------------------------

    def _quota_inputs(self, now):
        from acctd import quota
        specs = {o: quota.QuotaSpec.from_dict(d) for o, d in self.storage.quotas().items()}
        defaults = quota.QuotaDefaults.from_config(self.cfg.quota)
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
        from acctd import quota
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
        from acctd.alerter import QuotaNotice
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
        from acctd import quota
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
        from acctd import quota
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
        from acctd import syspolicy
        i = self.cfg.units.find(unit)
        u = self.cfg.units.units[i]
        t = time.monotonic()
        with self.lock:
            bits = syspolicy.apply(self.syspolicy_bits().get(i, 0), word)
            self.storage.set_syspolicy(int(u.oid, 16), bits)
            changed = self.apply_syspolicies()
        return {"unit": u.name, "sys_policy": syspolicy.words(bits), "changed": changed,
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
            }

    def rates_snapshot(self) -> dict:
        """A cheap read for `acctctl top`: the per-address, VLAN and port
        counters as they are now (no drain), plus each unit's today and month
        from the summaries. Rates are the client's: two snapshots apart."""
        from acctd import reader, top
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
        from acctd.login import SESSION_CAUSE
        stops = [{"user": self.cfg.units.units[self.cfg.units.by_oid[e.oid]].name, "addr": None,
                  "cause": SESSION_CAUSE[e.cause]}
                 for e in expired if e.oid in self.sessions and self.login.settings.set_user_ip]
        if stops:  # timed-out users give their addresses back (set-user-ip)
            self.session_changes(stops, "login")
        return summary

    def _drain(self) -> dict:
        if True:  # under self.lock
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
            if expired or self._fw_in_use():
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
        from acctd.systemd import Notifier
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

    # -- login service (acctd/login.py) ---------------------------------------------

    def _configure_login(self) -> None:
        """The login service with the config's settings and the stored records
        (records outlive reloads and restarts; settings follow the config)."""
        from acctd import login
        settings = login.LoginSettings.from_mapping(self.cfg.login)
        if self.login is None:
            records = [login.LoginRecord.from_dict(d) for d in self.storage.login_records().values()]
            self.login = login.LoginService(settings, self._find_oid, records,
                                            on_attempt=self._login_attempt)
        else:
            self.login.settings = settings
        for oid in list(self.login.records):
            if oid not in self.cfg.units.by_oid:  # the unit left the config
                self.login.remove(oid)
                self.storage.set_login_record(oid, None)

    def _find_oid(self, key: str) -> str | None:
        try:
            return self.cfg.units.units[self.cfg.units.find(key)].oid
        except KeyError:
            return None

    def _login_attempt(self, who, ok, reason, addr, mac, now) -> None:
        """Every login and logout attempt (the F-TICKS hook point)."""
        log.info("login %s: %s %s addr=%s mac=%s", "ok" if ok else "FAIL", who, reason,
                 addr or "-", mac or "-")

    def _save_login(self, oid: str) -> None:
        rec = self.login.get(oid)
        self.storage.set_login_record(oid, rec.to_dict() if rec else None)

    def login_set(self, unit: str, words: list[str]) -> dict:
        """NeTAMS `login set NAME password P inact N abs N mac M strict`."""
        with self.lock:
            rec = self.login.set(unit, words, now=self.clock())
            self._save_login(rec.oid)
            self.apply_syspolicies()  # a new record blocks until the unit logs in
            return {"unit": unit, "oid": rec.oid, "inact": rec.inact, "abs": rec.abs,
                    "mac": rec.mac, "strict": rec.strict}

    def login_unit(self, unit: str, password: str, addr: str | None = None,
                   mac: str | None = None, out: bool = False) -> dict:
        """NeTAMS `login`/`logout`: the reply in the reference's words. A wrong
        password changes nothing; success lifts (logout: restores) the block
        and, with set-user-ip, binds (unbinds) the user unit's address."""
        with self.lock:
            now = self.clock()
            op = self.login.logout if out else self.login.login
            res = op(unit, password, addr, mac, now=now)
            if res.ok:
                self._save_login(res.oid)
        if res.ok:
            self._follow_login(res.oid, res.bind, res.unbind or out, res.mac, "user-request")
        return {"ok": res.ok, "code": res.code, "reply": res.reply, "addr": res.addr,
                "mac": res.mac}

    def _follow_login(self, oid: str, bind: str | None, unbind: bool, mac, cause: str) -> None:
        """Sessions and blocks after a login state change (outside the lock:
        session changes drain, which takes it)."""
        u = self.cfg.units.units[self.cfg.units.by_oid[oid]]
        if u.type == "user" and bind:
            self.session_changes([{"user": u.name, "addr": bind, "mac": mac}], "login")
        elif u.type == "user" and unbind and oid in self.sessions:
            self.session_changes([{"user": u.name, "addr": None, "cause": cause}], "login")
        else:
            with self.lock:
                self.apply_syspolicies()

    def _expire_logins(self, now, moved_keys, moved_vals) -> list:
        """After a drain: close logins past their absolute or inactivity
        timeout. Inactivity counts from the unit's last counted packet: for
        the addresses whose counters moved in this drain, the kernel's
        last-packet time, turned from its monotonic clock into ours."""
        if not self.login or not self.login.records:
            return []
        if len(moved_keys):
            leaf = self.model.units.match(moved_keys["addr"])
            mono = time.monotonic_ns()  # the datapath's clock (coarse monotonic)
            for oid in self.login.records:
                i = self.units.by_oid.get(oid)
                sel = moved_vals["last_ns"][leaf == i] if i is not None else ()
                if len(sel) and sel.max():
                    ago = max(0.0, (mono - int(sel.max())) / 1e9)
                    self.last_seen[oid] = now - dt.timedelta(seconds=ago)
        expired = self.login.expire(now, self.last_seen)
        for e in expired:
            self._save_login(e.oid)
            log.info("login of %s closed: %s timeout", e.oid, e.cause)
        return expired

    def show_login(self, unit: str | None = None) -> dict:
        from acctd import login
        with self.lock:
            oid = self._find_oid(unit) if unit else None
            if unit and oid is None:
                raise KeyError(f"no unit named or with oid {unit!r}")
            rows = self.login.show(self.clock(), oid)
            names = {u.oid: u.name for u in self.cfg.units}
            return {"text": login.format_show(rows, names.get),
                    "rows": [r.to_dict() for r in rows]}

    # -- sessions (acctd/sessions.py) ---------------------------------------------

    def _rebind(self, now: dt.datetime | None = None) -> None:
        """Units = the config's, with each open session's address on its user
        unit. Sessions whose unit is gone (a reload) or cannot hold the
        address any more are stopped."""
        from acctd.units import ModelError, parse_addr
        units = self.cfg.units
        want = {}
        for oid, x in list(self.sessions.items()):
            i = units.by_oid.get(oid)
            if i is None or units.units[i].type != "user":
                self._stop_session(x, now or self.clock(), "config-changed")
                continue
            want[i] = parse_addr(x.addr)
        try:
            self.units = units.rebound(want) if want else units
        except ModelError as e:  # e.g. the config now gives the address to a host
            log.warning("sessions no longer fit the units (%s): stopping them", e)
            for x in list(self.sessions.values()):
                self._stop_session(x, now or self.clock(), "config-changed")
            self.units = units
        self.model = interval.Model(self.units, self.cfg.plan, rollup.oid_ints(self.units),
                                    rollup.oid_ints(self.cfg.policies))

    def _stop_session(self, x, now, cause: str) -> None:
        self.storage.stop_session(x.id, now, cause)
        self.sessions.pop(x.unit_oid, None)
        x.stop, x.stop_cause = now, cause
        self._run_hook("stop", x)
        log.info("session %d of %s at %s stopped: %s", x.id, x.unit_oid, x.addr, cause)

    def _run_hook(self, which: str, x) -> None:
        """The [session] start/stop command, on a worker thread per program
        (in order, never through a shell; see access_script)."""
        argv = getattr(self.cfg.session, which)
        if not argv:
            return
        from acctd.access_script import AccessScript
        timeout = self.cfg.session.hook_timeout
        r = self.hooks.get(argv[0])
        if r is None or r.timeout != timeout:
            r = self.hooks[argv[0]] = AccessScript(argv[0], timeout)
        name = self.units.units[self.units.by_oid[x.unit_oid]].name \
            if x.unit_oid in self.units.by_oid else x.unit_oid
        r.call(argv[1:], sessions.hook_env(name, x.addr, x.nas, x.port, x.mac))

    def session_changes(self, changes: list[dict], source: str) -> list[dict]:
        """Start and stop sessions as one batch: one drain first (what was
        counted so far belongs to the holders until now), then every change,
        one rebind and one enforcement update. A change is {"user", "addr"}
        to start (addr None: stop) plus optional mac, nas, port, cause.
        Returns the sessions started or stopped."""
        from acctd.units import format_addr, parse_addr
        with self.lock:
            units = self.cfg.units
            plan = []
            for c in changes:  # check everything before changing anything
                i = units.find(c["user"])
                u = units.units[i]
                if u.type != "user":
                    raise ValueError(f"unit {u.name} is a {u.type}: only user units hold sessions")
                addr = c.get("addr")
                if addr is not None:
                    a = parse_addr(addr)
                    owner = self.units.match(np.frombuffer(a, np.uint8)[None])[0]
                    if owner >= 0 and self.units.units[owner].type != "user":
                        raise ValueError(f"address {addr} belongs to {self.units.units[owner].type} "
                                         f"unit {self.units.units[owner].name}")
                    addr = format_addr(a)
                plan.append((u, addr, c))
            now = self.clock()
            self._drain()
            done = []
            for u, addr, c in plan:
                old = self.sessions.get(u.oid)
                if addr is None:
                    if old is not None:
                        self._stop_session(old, now, c.get("cause") or "user-request")
                        done.append(old.to_row())
                    continue
                if old is not None:
                    if old.addr == addr:
                        continue  # already there
                    self._stop_session(old, now, "rebound")
                    done.append(old.to_row())
                for other in list(self.sessions.values()):
                    if other.addr == addr:
                        self._stop_session(other, now, "address-moved")
                        done.append(other.to_row())
                x = sessions.Session(0, u.oid, addr, source, now, mac=c.get("mac") or "",
                                     nas=c.get("nas") or "", port=str(c.get("port") or ""))
                x.id = self.storage.start_session(x)
                self.sessions[u.oid] = x
                self._run_hook("start", x)
                log.info("session %d: %s at %s (%s)", x.id, u.name, addr, source)
                done.append(x.to_row())
            self._rebind(now)
            self.apply_syspolicies()
            return done

    def session_start(self, user: str, addr: str | None = None, port: str | None = None,
                      nas: str | None = None, mac: str | None = None,
                      source: str = "command") -> dict:
        """Freeside `session start`: bind `user` to an address, given or
        found from its NAS port in [session] ports."""
        from acctd.units import format_addr
        if addr is None:
            key = f"{nas}:{port}" if nas else str(port)
            found = self.cfg.session.ports.get(key) if port is not None else None
            if found is None:
                raise ValueError(f"session start {user}: give --ip, or a --port listed in "
                                 f"[session] ports (no entry {key!r})")
            addr = format_addr(found)
        done = self.session_changes([{"user": user, "addr": addr, "mac": mac, "nas": nas,
                                      "port": port}], source)
        return {"sessions": done}

    def session_stop(self, user: str, cause: str = "user-request") -> dict:
        return {"sessions": self.session_changes([{"user": user, "addr": None, "cause": cause}],
                                                 "command")}

    def session_list(self, open_only: bool = False, user: str | None = None,
                     limit: int | None = 100) -> list[dict]:
        with self.lock:
            oid = None
            if user is not None:
                oid = self.cfg.units.units[self.cfg.units.find(user)].oid
            names = {u.oid: u.name for u in self.cfg.units}
            rows = []
            for x in self.storage.sessions(open_only, oid, limit):
                r = x.to_row()
                r["user"] = names.get(x.unit_oid, x.unit_oid)
                rows.append(r)
            return rows

    def kill_expired(self) -> dict:
        """Freeside's periodic kill: end the sessions of users whose access
        is denied now (any block: money, login, quota, admin)."""
        from acctd import syspolicy
        with self.lock:
            bits = self.syspolicy_bits()
            units = self.cfg.units
            expired = []
            for oid in self.sessions:
                i = units.by_oid[oid]
                b = bits.get(i, 0)
                for g in units.ancestors[i]:
                    b |= bits.get(g, 0)
                if syspolicy.verdict(b) == abi.Verdict.DROP:
                    expired.append(units.units[i].name)
        if not expired:
            return {"sessions": []}
        return {"sessions": self.session_changes(
            [{"user": n, "addr": None, "cause": "expired"} for n in expired], "command")}

    # -- run-time units: acctctl unit add, auto-assign, auto-units (runtime_units.py) --

    def _merge_runtime_units(self, extra: list | None = None) -> list:
        """cfg = the loaded config (base_cfg) plus the units made at run time
        (stored in the database, or `extra` when adding). At load, one that
        no longer fits the config (its name or address taken there, its
        parent gone) is dropped with a warning; when adding, a misfit
        raises. Returns the run-time units with their oids."""
        import json
        from acctd import runtime_units
        from acctd.units import ModelError
        adding = extra is not None
        if extra is None:
            raw = self.storage.meta("runtime_units")
            extra = [runtime_units.from_dict(d) for d in json.loads(raw)] if raw else []
        base = self.base_cfg
        while True:
            try:
                cfg, extra = runtime_units.merge(base, extra)
                break
            except ModelError as e:
                if adding or not extra:
                    raise
                i = (e.index or 0) - len(base.units)
                bad = extra[i] if 0 <= i < len(extra) else extra[-1]
                log.warning("run-time unit %s dropped: %s", bad.name, e)
                extra = [u for u in extra if u is not bad]
        self.cfg, self.runtime = cfg, extra
        self.storage.set_meta("runtime_units",
                              json.dumps([runtime_units.to_dict(u) for u in extra]))
        if len(self.checks) != cfg.plan.n_entries:
            self.checks = np.zeros(cfg.plan.n_entries, np.uint64)
            self.matches = np.zeros(cfg.plan.n_entries, np.uint64)
        return extra

    def add_units(self, new: list, drained: bool = False) -> list:
        """Units made now (acctctl unit add, auto-units), under the lock: what
        was counted so far stays with the old model (drained first unless
        the caller just did), then the units, sessions and kernel classes
        follow. Returns the new units with their oids."""
        from acctd import runtime_units
        for u in new:
            runtime_units.check_new(self.cfg, u)
        if not drained:
            self._drain()
        n = len(self.runtime)
        extra = self._merge_runtime_units(self.runtime + list(new))
        self._rebind(self.clock())
        self.apply_syspolicies()
        return extra[n:]

    def unit_add(self, kind: str, name: str, ip: str | None = None,
                 parents: tuple[str, ...] = (), email: str = "") -> dict:
        """NeTAMS `unit host|user name X ip A|auto`: `auto` takes the next free
        address of the auto-assign pools, and the reply names it."""
        from acctd import autounits
        from acctd.units import Unit, format_addr, parse_addr
        with self.lock:
            addrs = ()
            if ip == "auto":
                pools = autounits.AutoAssign(self.cfg.processor.auto_assign)
                addrs = (pools.next_free(autounits.owned_addrs(self.units)),)
            elif ip:
                addrs = (parse_addr(ip),)
            if kind == "host" and not addrs:
                raise ValueError("a host unit needs an address: ip A.B.C.D or ip auto")
            u, = self.add_units([Unit(kind, name, addrs=addrs, parents=tuple(parents),
                                      email=email)])
            log.info("unit %s %s added (oid %s, ip %s)", kind, name, u.oid,
                     format_addr(u.addrs[0]) if u.addrs else "-")
            return {"unit": u.name, "oid": u.oid, "type": u.type,
                    "ip": format_addr(u.addrs[0]) if u.addrs else None}

    def unit_del(self, name: str) -> dict:
        """Remove a unit made at run time (the config's units change by reload)."""
        with self.lock:
            keep = [u for u in self.runtime if u.name != name]
            if len(keep) == len(self.runtime):
                raise ValueError(f"{name!r} is not a unit added at run time; edit the config "
                                 "and reload instead")
            self._drain()
            gone = next(u for u in self.runtime if u.name == name)
            if gone.oid in self.sessions:
                self._stop_session(self.sessions[gone.oid], self.clock(), "admin-reset")
            self._merge_runtime_units(keep)
            self._rebind(self.clock())
            self.apply_syspolicies()
            return {"deleted": name, "oid": gone.oid}

    def _auto_units(self, moved_keys) -> list:
        """auto-units: addresses counted for the first time inside a net with
        `auto-units N` become units by rule N. Their bytes so far stayed
        with the net (this drain is committed); from now on they are the new
        units'. Thousands at once cost one model rebuild."""
        nets = {i: u.auto_units for i, u in enumerate(self.units) if u.auto_units is not None}
        if not nets or not len(moved_keys):
            return []
        from acctd import autounits
        rules = {r.number: r for r in self.cfg.processor.auto_units}
        leaf = self.model.units.match(moved_keys["addr"])
        owned = autounits.owned_addrs(self.units)
        names = set(self.cfg.units.index)
        new = []
        for i, number in nets.items():
            addrs = [bytes(a) for a in moved_keys["addr"][leaf == i]]
            if addrs:
                made = autounits.plan_new_units(rules[number], addrs, names, owned,
                                                resolve=_reverse_dns(addrs, rules[number]))
                names |= {u.name for u in made}
                new += made
        if new:
            new = self.add_units(new, drained=True)
            log.info("auto-units: %d units made", len(new))
        return new

    # -- MAC control (NeTAMS mac control|fixate; acctd/maccontrol.py) --------------------

    def _units_with_macs(self):
        """The units with their MACs: the config's, else the one fixated."""
        import dataclasses
        fixed = self.storage.unit_macs()
        return [dataclasses.replace(u, mac=fixed[u.oid]) if not u.mac and u.oid in fixed else u
                for u in self.units]

    def _mac_control(self) -> dict:
        """Compare units' MACs with the neighbour table (under the lock). With
        block, a mismatch blocks (reason mac) until the right MAC is back; a
        unit missing from the table keeps its state. With alert, each new
        mismatch is logged and mailed to the admins."""
        from acctd import maccontrol
        mode = self.cfg.processor.mac_control
        seen = maccontrol.read_neighbours(self.dp.netns)
        mismatched, ok = maccontrol.check(maccontrol.expected_macs(self._units_with_macs()), seen)
        new = {o: m for o, m in mismatched.items() if o not in self.mac_mismatch}
        self.mac_mismatch = {o: m for o, m in {**self.mac_mismatch, **mismatched}.items()
                             if o not in ok}
        names = {u.oid: u.name for u in self.units}
        from acctd.units import format_addr
        for oid, (addr, want, got) in new.items():
            log.warning("mac-control: unit %s at %s: MAC %s, expected %s", names.get(oid, oid),
                        format_addr(addr), got, want)
            if "alert" in mode and self.mailer is not None and self.mailer.settings.admins:
                self.mailer.enqueue(list(self.mailer.settings.admins),
                                    f"[acctd] {names.get(oid, oid)}: MAC mismatch",
                                    f"Unit {names.get(oid, oid)} ({oid}) at {format_addr(addr)} "
                                    f"answers from MAC {got}; its MAC is {want}.\n")
        blocked = set(self.mac_mismatch) if "block" in mode else set()
        if blocked != self.mac_blocked:
            self.mac_blocked = blocked
            self.apply_syspolicies()
        return {o: {"unit": names.get(o, o), "addr": format_addr(m[0]), "expected": m[1],
                    "seen": m[2]} for o, m in self.mac_mismatch.items()}

    def mac_check(self) -> dict:
        with self.lock:
            return {"mode": self.cfg.processor.mac_control, "mismatched": self._mac_control()}

    def mac_fixate(self, overwrite: bool = False) -> dict:
        """NeTAMS `mac fixate`: record the MACs seen now (in the database)."""
        from acctd import maccontrol
        with self.lock:
            seen = maccontrol.read_neighbours(self.dp.netns)
            got = maccontrol.fixate(self._units_with_macs(), seen, overwrite)
            for oid, mac in got.items():
                self.storage.set_unit_mac(oid, mac)
            names = {u.oid: u.name for u in self.units}
            return {names.get(o, o): m for o, m in got.items()}

    # -- net-acct: flow log and dynamicip (acctd/flowlog.py, acctd/dynamicip.py) --------

    def _configure_netacct(self) -> None:
        from acctd.dynamicip import DirWatcher
        from acctd.flowlog import FlowLog
        want = self.cfg.flowlog
        cur = self.flowlog
        if cur is not None and (want is None or (cur.path, tuple(cur.fields)) != (want.path, want.fields)):
            cur.close()
            self.flowlog = None
        if want is not None and self.flowlog is None:
            self.flowlog = FlowLog(want.path, want.fields, fsync=want.fsync)
        if want is not None:
            self.ifnames = self.dp.ifnames()
        d = self.cfg.dynamicip
        if d is None:
            self.dynamicip = None
        elif self.dynamicip is None or (self.dynamicip.dirpath, self.dynamicip.nets) != \
                (d.dir, DirWatcher(d.dir, d.exclude).nets):
            self.dynamicip = DirWatcher(d.dir, d.exclude)

    def _write_flowlog(self, now, flows) -> None:
        """After the counts are committed: one nacctd line per flow that moved.
        Pause/resume requests (SIGTSTP/SIGCONT) take effect before writing."""
        if self.flowlog is None:
            return
        if self.flowlog_paused and not self.flowlog.paused:
            self.flowlog.pause()
        elif not self.flowlog_paused and self.flowlog.paused:
            self.flowlog.resume()
        from acctd.units import parse_addr

        def user(addr: str) -> str | None:
            i = self.units.match(np.frombuffer(parse_addr(addr), np.uint8)[None])[0]
            return self.units.units[i].name if i >= 0 else None
        try:
            self.flowlog.append(flows.keys, flows.values, now=now, devices=self.ifnames, user=user)
        except OSError as e:  # the counts are committed: the log is a copy
            log.error("flow log %s: %s", self.flowlog.path, e)

    def set_flowlog_paused(self, paused: bool) -> None:
        """From a signal handler: only a flag, the next drain acts on it."""
        self.flowlog_paused = paused

    def rotate_flowlog(self) -> dict:
        with self.lock:
            if self.flowlog is None:
                raise ValueError("no [flowlog] in the configuration")
            self.flowlog_paused = False
            if self.flowlog.paused:
                self.flowlog.resume()
            return {"flowlog": self.flowlog.path, "rotated_to": self.flowlog.rotate()}

    def poll_dynamicip(self) -> list[dict]:
        """Files created, changed or removed in the dynamicip directory become
        session starts and stops, all in one batch (one drain)."""
        if self.dynamicip is None:
            return []
        events = self.dynamicip.poll()
        if not events:
            return []
        changes = []
        for e in events:
            try:
                i = self.cfg.units.find(e.user)
            except KeyError:
                log.warning("dynamicip %s: no unit named %r", e.addr, e.user)
                continue
            u = self.cfg.units.units[i]
            if u.type != "user":
                log.warning("dynamicip %s: %s is a %s, not a user unit", e.addr, u.name, u.type)
                continue
            if e.kind == "bind":
                changes.append({"user": u.name, "addr": e.addr})
            else:
                held = self.sessions.get(u.oid)
                if held is not None and held.addr == e.addr:
                    changes.append({"user": u.name, "addr": None, "cause": "file-removed"})
        if not changes:
            return []
        try:
            return self.session_changes(changes, "file")
        except ValueError as e:
            log.warning("dynamicip: %s", e)
            return []

    def send_reports(self, request=None, now: dt.datetime | None = None) -> dict:
        """`send report ...` from acctctl or a schedule: one mail per unit with
        its bytes per acct-policy over the last complete day or week, queued
        in the outbox (the mail thread delivers). Which units, period and
        figures: acctd.reports; here only the query, under the lock, and the
        queueing, outside it."""
        from acctd import reports
        from acctd.errors import AcctError
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


def _reverse_dns(addrs, rule, budget: float = 2.0, workers: int = 32):
    """For naming by-dns: PTR names looked up in parallel within `budget`
    seconds; an address not resolved by then is named by itself."""
    if rule.naming != "by-dns":
        return None
    import concurrent.futures
    import socket
    from acctd.units import format_addr
    pool = concurrent.futures.ThreadPoolExecutor(workers)
    futs = {a: pool.submit(socket.gethostbyaddr, format_addr(a)) for a in addrs}
    concurrent.futures.wait(futs.values(), timeout=budget)
    pool.shutdown(wait=False, cancel_futures=True)
    names = {a: f.result()[0] for a, f in futs.items()
             if f.done() and not f.cancelled() and f.exception() is None}
    return names.get


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
