"""Subscriber identity, the daemon's half (a mixin of acctd.daemon.core.Daemon):
who holds which address and whether it may pass. Login service, sessions,
units made at run time (auto-assign, auto-units), MAC control and net-acct's
dynamicip directory and flow log. The pure models live in login.py,
sessions.py, runtime_units.py, autounits.py, maccontrol.py, dynamicip.py
and flowlog.py; this is where they meet the drain, the database and the
kernel. Every method that changes a binding drains first, under the lock.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

import numpy as np

from acctd.kernel import abi
from acctd.model import sessions
from acctd.store import interval, rollup

log = logging.getLogger("acctd.daemon")


class Identity:
    # -- login service (acctd/services/login.py) ---------------------------------------------

    def _configure_login(self) -> None:
        """The login service with the config's settings and the stored records
        (records outlive reloads and restarts; settings follow the config)."""
        from acctd.services import login
        settings = self.cfg.login
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

    def _login_attempt(self, who, ok, reason, addr, mac, now, method: str = "login") -> None:
        """Every login and logout attempt (login service, RADIUS, OpenVPN):
        logged, and an F-TICKS line when [fticks] is configured."""
        log.info("%s %s: %s %s addr=%s mac=%s", method, "ok" if ok else "FAIL", who, reason,
                 addr or "-", mac or "-")
        if reason.startswith("logout"):
            return  # F-TICKS counts logins, not logouts
        if self.fticks is None and self.cfg.fticks is not None:
            from acctd.aaa.fticks import Emitter
            self.fticks = Emitter(self.cfg.fticks)
        if self.fticks is not None:
            i = self.cfg.units.by_oid.get(who)
            name = self.cfg.units.units[i].name if i is not None else str(who)
            self.fticks.emit(realm=None, user=name, csi=mac or addr, result=bool(ok),
                             method=method)

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
        # last use is kept in the record, so a restart measures inactivity
        # from the last packet, not from the login; saved when it moved a
        # minute or more (one row per active unit per minute at most)
        gone = {e.oid for e in expired}
        for oid, rec in self.login.records.items():
            saved = self.login_saved_use.get(oid)
            if oid not in gone and rec.last_used and (
                    saved is None or (rec.last_used - saved).total_seconds() >= 60):
                self._save_login(oid)
                self.login_saved_use[oid] = rec.last_used
        return expired

    def show_login(self, unit: str | None = None) -> dict:
        from acctd.services import login
        with self.lock:
            oid = self._find_oid(unit) if unit else None
            if unit and oid is None:
                raise KeyError(f"no unit named or with oid {unit!r}")
            rows = self.login.show(self.clock(), oid)
            names = {u.oid: u.name for u in self.cfg.units}
            return {"text": login.format_show(rows, names.get),
                    "rows": [r.to_dict() for r in rows]}

    # -- sessions (acctd/model/sessions.py) ---------------------------------------------

    def _rebind(self, now: dt.datetime | None = None) -> None:
        """Units = the config's, with each open session's address on its user
        unit. Sessions whose unit is gone (a reload) or cannot hold the
        address any more are stopped."""
        from acctd.model.addresses import parse_addr
        from acctd.model.units import ModelError
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

    def _user_name(self, unit_oid: str) -> str:
        i = self.units.by_oid.get(unit_oid)
        return self.units.units[i].name if i is not None else unit_oid

    def _kill_blocked_vpn_clients(self, moved: dict) -> None:
        """Blocks that moved to drop: their OpenVPN clients are disconnected."""
        if self.openvpn is None:
            return
        for oid, x in list(self.sessions.items()):
            if x.source == "openvpn" and x.addr in moved:
                self.openvpn.kill(self._user_name(oid))

    def _stop_session(self, x, now, cause: str) -> None:
        if self.radius is not None:  # spooled before the database moves on
            x.stop, x.stop_cause = now, cause
            self.radius.stop(x, self._user_name(x.unit_oid), cause, now)
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
        from acctd.services.access_script import AccessScript
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
        from acctd.model.addresses import format_addr, parse_addr
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
                if self.radius is not None:
                    self.radius.start(x, u.name)
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
        from acctd.model.addresses import format_addr
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
        from acctd.model import sys_policy
        with self.lock:
            bits = self.syspolicy_bits()
            units = self.cfg.units
            expired = []
            for oid in self.sessions:
                i = units.by_oid[oid]
                b = bits.get(i, 0)
                for g in units.ancestors[i]:
                    b |= bits.get(g, 0)
                if sys_policy.verdict(b) == abi.Verdict.DROP:
                    expired.append(units.units[i].name)
        if not expired:
            return {"sessions": []}
        return {"sessions": self.session_changes(
            [{"user": n, "addr": None, "cause": "expired"} for n in expired], "command")}

    # -- RADIUS accounting (acctd/aaa/radius_accounting.py) -------------------------------------

    def _configure_radius(self) -> None:
        """The accounting client, its spool under the state directory; static
        units (static-units = true) get a session per daemon run."""
        import os
        from acctd.aaa.radius_accounting import RadiusAccounting, static_session
        if self.radius is not None:
            self.radius.close()
            self.radius = None
        s = self.cfg.radius
        if s is None:
            return
        spool = os.path.join(os.path.dirname(self.schedule_path()), "radius-spool")
        self.radius = RadiusAccounting(s, spool)
        self.radius.run_sender()
        if s.static_units and not self.static_sessions:
            from acctd.model.addresses import format_addr
            now = self.clock()
            for u in self.cfg.units:
                if u.type in ("host", "cluster") and u.addrs:
                    x = static_session(u.oid, format_addr(u.addrs[0]), now)
                    self.static_sessions[u.oid] = x
                    self.radius.start(x, u.name)

    def _radius_after_drain(self, now, cols) -> None:
        """Static units' counts, and the Interim-Updates now due."""
        if self.radius is None:
            return
        # charges are keyed by whatever names a session: here its unit's oid
        for oid, c in sessions.charges(cols, {o: o for o in self.static_sessions}).items():
            x = self.static_sessions[oid]
            x.packets_in += c[0]
            x.packets_out += c[1]
            x.bytes_in += c[2]
            x.bytes_out += c[3]
        live = list(self.sessions.values()) + list(self.static_sessions.values())
        due = self.radius.due_interims(now, live)
        if due:
            self.radius.interims([(x, self._user_name(x.unit_oid)) for x in due], now)

    def _close_radius(self) -> None:
        """A clean stop ends the static units' sessions (NAS-Reboot)."""
        if self.radius is None:
            return
        now = self.clock()
        for x in self.static_sessions.values():
            self.radius.stop(x, self._user_name(x.unit_oid), "NAS-Reboot", now)
        self.radius.flush(5.0)
        self.radius.close()
        self.radius = None

    # -- RADIUS Disconnect and CoA (acctd/aaa/coa.py) ------------------------------

    def _configure_coa(self) -> None:
        from acctd.aaa.coa import CoaServer
        if self.coa_server is not None:
            self.coa_server.stop()
            self.coa_server = None
        if self.cfg.coa is not None:
            self.coa_server = CoaServer(self.cfg.coa, self)  # calls self.disconnect / self.coa
            self.coa_server.start()

    def _coa_units(self, ident: dict) -> list[int]:
        """The units a Disconnect/CoA names: by Acct-Session-Id (ours),
        User-Name, or the address a unit holds now."""
        from acctd.aaa.radius_accounting import acct_session_id
        from acctd.model.addresses import parse_addr
        found = set()
        sid = ident.get("Acct-Session-Id")
        if sid:
            for oid, x in list(self.sessions.items()) + list(self.static_sessions.items()):
                if acct_session_id(x) == str(sid):
                    found.add(self.cfg.units.by_oid[oid])
            if not found:
                return []
        name = ident.get("User-Name")
        if name:
            try:
                i = self.cfg.units.find(str(name))
            except KeyError:
                return []
            found = found & {i} if sid else {i}
        for key in ("Framed-IP-Address", "Framed-IPv6-Address"):
            if ident.get(key) is not None:
                a = parse_addr(str(ident[key]))
                i = int(self.units.match(np.frombuffer(a, np.uint8)[None])[0])
                if i < 0 or (found and i not in found):
                    return []
                found = {i}
        return sorted(found)

    def disconnect(self, ident: dict) -> bool:
        """RFC 5176 Disconnect-Request: end the session and block the unit
        (sys-deny, as an admin's; `acctctl unit NAME sys-allow` lifts it)."""
        units = self._coa_units(ident)
        for i in units:
            u = self.cfg.units.units[i]
            if u.oid in self.sessions:
                self.session_changes([{"user": u.name, "addr": None, "cause": "admin-reset"}],
                                     "radius")
            self.set_syspolicy(u.name, "sys-deny")
            log.info("RADIUS Disconnect: %s ended and blocked", u.name)
        return bool(units)

    def coa(self, ident: dict, rate_in: int | None, rate_out: int | None) -> bool:
        """RFC 5176 CoA with a rate: the unit's rate limit changes (0 lifts
        it, None keeps that direction), kept in the database over restarts."""
        import json
        units = self._coa_units(ident)
        with self.lock:
            for i in units:
                u = self.cfg.units.units[i]
                cur = self.coa_rates.get(u.oid) or list(u.bw or (None, None))
                for d, r in enumerate((rate_in, rate_out)):
                    if r is not None:
                        cur[d] = r or None
                self.coa_rates[u.oid] = cur
                log.info("RADIUS CoA: %s rate in %s out %s", u.name, cur[0], cur[1])
            if units:
                self.storage.set_meta("coa_rates", json.dumps(self.coa_rates))
                self.apply_syspolicies()
        return bool(units)

    # -- OpenVPN (acctd/aaa/openvpn.py) ----------------------------------------------------

    def _configure_openvpn(self) -> None:
        """Attach to the OpenVPN server's management interface: a client's
        ESTABLISHED starts a session for the user unit named by its common
        name at its VPN address, its DISCONNECT (or its absence from the
        status) ends it; bytecount reports are kept as the NAS's figures. A
        blocked unit is refused at connect and killed when blocked."""
        from acctd.aaa.openvpn import ManagementClient
        if self.openvpn is not None:
            self.openvpn.stop()
            self.openvpn = None
        s = self.cfg.openvpn
        if s is None or s.management is None:
            return
        self.openvpn = ManagementClient(s, on_start=self._vpn_start, on_interim=self._vpn_interim,
                                        on_stop=self._vpn_stop, is_blocked=self.unit_blocked)
        self.openvpn.start()

    def unit_blocked(self, name: str) -> bool:
        """Whether the unit may not pass now (any block, its groups' included)."""
        from acctd.model import sys_policy
        try:
            i = self.cfg.units.find(name)
        except KeyError:
            return False
        with self.lock:
            bits = self.syspolicy_bits()
        b = bits.get(i, 0)
        for g in self.cfg.units.ancestors[i]:
            b |= bits.get(g, 0)
        return sys_policy.verdict(b) == abi.Verdict.DROP

    def _vpn_user(self, cn: str):
        try:
            u = self.cfg.units.units[self.cfg.units.find(cn)]
        except KeyError:
            log.warning("openvpn: no unit named %r (common name)", cn)
            return None
        if u.type != "user":
            log.warning("openvpn: %s is a %s, not a user unit", cn, u.type)
            return None
        return u

    def _vpn_start(self, cn, vpn_addr, real_addr, cid, when) -> None:
        u = self._vpn_user(cn)
        if u is None or not vpn_addr:
            return
        self._login_attempt(u.oid, True, "openvpn connect", vpn_addr, None, when, "openvpn")
        self.session_changes([{"user": u.name, "addr": vpn_addr, "nas": "openvpn",
                               "port": str(cid)}], "openvpn")

    def _vpn_interim(self, cn, cid, bytes_in, bytes_out, when) -> None:
        u = self._vpn_user(cn)
        x = self.sessions.get(u.oid) if u is not None else None
        if x is not None and x.source == "openvpn":
            with self.lock:
                x.nas_bytes_in, x.nas_bytes_out = bytes_in, bytes_out
                self.storage.set_session_nas_bytes(x.id, bytes_in, bytes_out)

    def _vpn_stop(self, cn, cid, bytes_in, bytes_out, duration, when) -> None:
        u = self._vpn_user(cn)
        x = self.sessions.get(u.oid) if u is not None else None
        if x is None or x.source != "openvpn" or x.port != str(cid):
            return  # an older instance of a client that reconnected already
        with self.lock:
            self.storage.set_session_nas_bytes(x.id, bytes_in, bytes_out)
        self.session_changes([{"user": u.name, "addr": None, "cause": "user-request"}], "openvpn")

    def openvpn_hook(self, event: dict) -> dict:
        """`acctctl openvpn-hook` (client-connect/-disconnect scripts, for
        servers without management): a start binds, refused when blocked; a
        stop ends the session with the server's byte counts."""
        u = self._vpn_user(str(event.get("user", "")))
        if u is None:
            return {"allowed": False, "reason": "no such user unit"}
        if event.get("event") == "start":
            if self.unit_blocked(u.name):
                self._login_attempt(u.oid, False, "blocked", event.get("addr"), None, None,
                                    "openvpn")
                return {"allowed": False, "reason": "blocked"}
            self._login_attempt(u.oid, True, "openvpn connect", event.get("addr"), None, None,
                                "openvpn")
            addr = event.get("addr") or event.get("addr6")
            self.session_changes([{"user": u.name, "addr": addr, "nas": "openvpn"}], "openvpn")
            return {"allowed": True}
        x = self.sessions.get(u.oid)
        if x is not None and x.source == "openvpn":
            with self.lock:
                self.storage.set_session_nas_bytes(x.id, int(event.get("bytes_in") or 0),
                                                   int(event.get("bytes_out") or 0))
            self.session_changes([{"user": u.name, "addr": None,
                                   "cause": event.get("cause") or "user-request"}], "openvpn")
        return {"allowed": True}

    # -- run-time units: acctctl unit add, auto-assign, auto-units (runtime_units.py) --

    def _merge_runtime_units(self, extra: list | None = None) -> list:
        """cfg = the loaded config (base_cfg) plus the units made at run time
        (stored in the database, or `extra` when adding). At load, one that
        no longer fits the config (its name or address taken there, its
        parent gone) is dropped with a warning; when adding, a misfit
        raises. Returns the run-time units with their oids."""
        import json
        from acctd.model.units import ModelError
        from acctd.services import runtime_units
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
        from acctd.services import runtime_units
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
        from acctd.model.addresses import format_addr, parse_addr
        from acctd.model.units import Unit
        from acctd.services import auto_units
        with self.lock:
            addrs = ()
            if ip == "auto":
                pools = auto_units.AutoAssign(self.cfg.processor.auto_assign)
                addrs = (pools.next_free(auto_units.owned_addrs(self.units)),)
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
        from acctd.services import auto_units
        rules = {r.number: r for r in self.cfg.processor.auto_units}
        leaf = self.model.units.match(moved_keys["addr"])
        owned = auto_units.owned_addrs(self.units)
        names = set(self.cfg.units.index)
        new = []
        for i, number in nets.items():
            addrs = [bytes(a) for a in moved_keys["addr"][leaf == i]]
            if addrs:
                made = auto_units.plan_new_units(rules[number], addrs, names, owned,
                                                resolve=_reverse_dns(addrs, rules[number]))
                names |= {u.name for u in made}
                new += made
        if new:
            new = self.add_units(new, drained=True)
            log.info("auto-units: %d units made", len(new))
        return new

    # -- MAC control (NeTAMS mac control|fixate; acctd/services/mac_control.py) --------------------

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
        from acctd.services import mac_control
        mode = self.cfg.processor.mac_control
        seen = mac_control.read_neighbours(self.dp.netns)
        mismatched, ok = mac_control.check(mac_control.expected_macs(self._units_with_macs()), seen)
        new = {o: m for o, m in mismatched.items() if o not in self.mac_mismatch}
        self.mac_mismatch = {o: m for o, m in {**self.mac_mismatch, **mismatched}.items()
                             if o not in ok}
        names = {u.oid: u.name for u in self.units}
        from acctd.model.addresses import format_addr
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
        from acctd.services import mac_control
        with self.lock:
            seen = mac_control.read_neighbours(self.dp.netns)
            got = mac_control.fixate(self._units_with_macs(), seen, overwrite)
            for oid, mac in got.items():
                self.storage.set_unit_mac(oid, mac)
            names = {u.oid: u.name for u in self.units}
            return {names.get(o, o): m for o, m in got.items()}

    # -- net-acct: flow log and dynamicip (acctd/services/flowlog.py, acctd/services/dynamicip.py) --------

    def _configure_netacct(self) -> None:
        from acctd.services.dynamicip import DirWatcher
        from acctd.services.flowlog import FlowLog
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
        from acctd.model.addresses import parse_addr

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


def _reverse_dns(addrs, rule, budget: float = 2.0, workers: int = 32):
    """For naming by-dns: PTR names looked up in parallel within `budget`
    seconds; an address not resolved by then is named by itself."""
    if rule.naming != "by-dns":
        return None
    import concurrent.futures
    import socket
    from acctd.model.addresses import format_addr
    pool = concurrent.futures.ThreadPoolExecutor(workers)
    futs = {a: pool.submit(socket.gethostbyaddr, format_addr(a)) for a in addrs}
    concurrent.futures.wait(futs.values(), timeout=budget)
    pool.shutdown(wait=False, cancel_futures=True)
    names = {a: f.result()[0] for a, f in futs.items()
             if f.done() and not f.cancelled() and f.exception() is None}
    return names.get


class Imports:
    """Importing other systems' records into the database (F-TICKS lines,
    RADIUS sessions); a mixin of Daemon, under its lock (one DuckDB writer)."""

    def fticks_import(self, paths: list[str]) -> dict:
        from acctd.aaa import fticks
        with self.lock:
            stats = fticks.import_files(self.storage.con, paths, zone=self.cfg.processor.zone)
        return {**stats, "text": fticks.format_import(stats)}

    def fticks_report(self, since: str | None = None) -> dict:
        from acctd.aaa import fticks
        with self.lock:
            if not self.storage.con.execute("SELECT count(*) FROM duckdb_tables() "
                                            "WHERE table_name = 'fticks'").fetchall()[0][0]:
                return {"rows": [], "text": "no F-TICKS lines imported yet"}
            rows = fticks.report(self.storage.con, dt.date.fromisoformat(since) if since else None,
                                 self.cfg.processor.time_zone)
        return {"rows": rows, "text": fticks.format_report(rows)}

    def radius_import(self, sessions_: list[dict]) -> dict:
        """Closed sessions read by `acctctl radius import` (detail files or
        radacct), sent in chunks: address-to-user history and NAS usage."""
        from acctd.aaa import radius_import
        for x in sessions_:
            for k in ("start", "stop"):
                if isinstance(x.get(k), str):
                    x[k] = dt.datetime.fromisoformat(x[k])

        def oid_of(user: str):
            try:
                return self.cfg.units.units[self.cfg.units.find(user)].oid
            except KeyError:
                return None
        with self.lock:
            return radius_import.import_sessions(self.storage.con, sessions_, oid_of)

