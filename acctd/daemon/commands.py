"""The daemon's own control commands (the registry's "core.*" handlers): the
drain and reload requests, status and health, the model and its reports
(NeTAMS show units, policies, list, stat), blocks, users, the running
config, debug and the log. Service commands live with their services."""

from __future__ import annotations

import os
import re
import shutil
import time
import tomllib
from collections.abc import Mapping

import numpy as np

from acctd.daemon import log as daemon_log
from acctd.daemon import perf
from acctd.errors import BadRequest, ConfigError
from acctd.kernel import abi, drain, reader
from acctd.model import sys_policy as sys_policies
from acctd.store import queries

SECRET_KEYS = ("password", "secret", "token", "key")


def config_text(path: str, unsecure: bool = False,
                oids: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """The config file as loaded, every secret masked unless asked not to;
    with `oids` ({"unit"|"policy": {name: oid}}), each unit's and policy's
    name line says its oid (NeTAMS `show config oids`)."""
    with open(path) as f:
        text = f.read()
    if oids is not None:
        text = _with_oids(text, oids)
    if unsecure:
        return text
    keys = "|".join(SECRET_KEYS)
    text = re.sub(rf'(?im)^(\s*[\w-]*(?:{keys})[\w-]*\s*=\s*).*$', r'\1"********"', text)
    # and the word after `password` in carried NeTAMS lines ([login.units.X] raw)
    return re.sub(r'(?i)(\bpassword\s+)[^\s"=][^\s"]*', r'\1********', text)


_TABLE = re.compile(r"^\s*\[\[?\s*([\w.-]+)\s*\]\]?")
_NAME = re.compile(r"^\s*name\s*=\s*(\"(?:[^\"\\]|\\.)*\"|'[^']*')\s*$")


def _with_oids(text: str, oids: Mapping[str, Mapping[str, str]]) -> str:
    out, table = [], None
    for line in text.split("\n"):
        if m := _TABLE.match(line):
            table = m[1]
        elif table in oids and (m := _NAME.match(line)):
            oid = oids[table].get(tomllib.loads(f"n = {m[1]}")["n"])
            if oid:
                line = f"{line}  # oid {oid}"
        out.append(line)
    return "\n".join(out)


class CoreCommands:
    def __init__(self, daemon):
        self.d = daemon

    # -- the loop ----------------------------------------------------------------------

    def flush(self) -> dict:
        """Drain and commit now: answered by the main loop, after the commit."""
        return self.d.mailbox.request()

    def reload(self) -> dict:
        """Reload in the main loop and answer its verdict: the file and what
        changed, or the mistake (file:line) that refused it."""
        try:
            return self.d.mailbox.request(reload=True)
        except ConfigError as e:
            raise ConfigError(f"reload refused, the running configuration stays: {e}") from None

    # -- the daemon ------------------------------------------------------------------

    def status(self) -> dict:
        """What `acctctl status` and `health` show: the daemon, the machine,
        the datapath's fill and what it could not account, the services."""
        d = self.d
        with d.lock:
            fill = {}
            for name in ("acct_addrs", "acct_flows"):
                m = d.dp.maps[name]
                n = len(m.read_all()[0])
                fill[name] = {"entries": n, "max": m.info.max_entries,
                              "percent": round(100.0 * n / m.info.max_entries, 1)}
            ifs = drain.read(d.dp.maps["acct_ifaces"])[1]
            lan = d.lan_slots()
            hooked = np.array(sorted({s for s, _ in d.dp.hooked_slots().values()}), np.int64)
            health = {h.name.lower(): int(ifs["health"][:, h].sum()) for h in abi.Health}
            names = d.ifnames()
            interfaces = {names.get(i, str(i)): {"role": role.name.lower(),
                                                 **reader.pairs(ifs[slot])}
                          for i, (slot, role) in d.dp.hooked_slots().items()}
            services: dict = {}
            for s in d.services.values():
                services.update(s.status() or {})
            last = d.storage.last_drain
            return {
                "config": d.config.path, "drains": d.drains,
                "last_drain": last.isoformat() if last else None,
                "failed_drains": d.failed_drains,  # in a row, since the last commit
                "last_error": d.last_error and {"at": d.last_error[0].isoformat(),
                                                "error": d.last_error[1]},
                "load": os.getloadavg(),
                "disk_free_bytes": {d.state_dir: shutil.disk_usage(d.state_dir).free},
                "datapath": {
                    "prog_ids": d.dp.prog_ids(), "fill": fill, "health": health,
                    "unattributed_bytes": int(ifs["unattr_bytes"][lan].sum()),
                    # drops at every hook (a WAN hook enforces too), by cause
                    "dropped_bytes": int(ifs["drop_bytes"][hooked].sum()),
                    "dropped": {c.name.lower(): {"packets": int(ifs["drop_packets"][hooked, c].sum()),
                                                 "bytes": int(ifs["drop_bytes"][hooked, c].sum())}
                                for c in abi.Drop},
                    "flow_evictions": d.flow_evictions(),  # since this daemon started
                    "attachment": d.datapath_state(),       # pins or hooks found missing
                    "interfaces": interfaces,  # each hook's counters since it was attached
                },
                "services": services,
            }

    def html(self, path: str | None = None, htaccess: bool = False, caller=None) -> dict:
        """NeTAMS `html`: the static pages ([html], acctd/web/static_site.py),
        from the same commands the console asks, as root asks them; htaccess:
        with .htaccess files whatever [html] says. The daemon writes as root:
        another directory than the configured one is an admin's to choose."""
        import dataclasses

        from acctd.control.access import Level
        from acctd.errors import PermissionDenied
        from acctd.web import static_site
        d = self.d
        if path is not None and caller.level < Level.ADMIN:
            raise PermissionDenied(f"html --path needs level admin; {caller.name} is "
                                   f"{caller.level} (it writes the [html] path)")
        settings = d.config.html or static_site.HtmlSettings()
        if htaccess:
            settings = dataclasses.replace(settings, htaccess=True)
        staff = [u.name for u in d.config.users]  # each reads everything on the socket
        return static_site.write(d.call, settings, path, staff, d.clock())

    def rates(self) -> dict:
        """A cheap read for `acctctl top`: the per-address, VLAN and port
        counters as they are now (no drain), plus each unit's today and month
        from the rollups. Rates are the client's: two snapshots apart."""
        d = self.d
        ts = time.monotonic()
        keys, vals = drain.read(d.dp.maps["acct_addrs"])
        arrays = {n: drain.read(d.dp.maps[n])[1]
                  for n in ("acct_vlans", "acct_ports", "acct_ifaces")}
        rep = reader.report(keys, vals, arrays, d.dp.hooked_slots())
        addrs = [{"addr": a, **{k: r[k] for k in ("packets_in", "packets_out", "bytes_in",
                                                  "bytes_out")}}
                 for a, r in rep["addrs"].items()]
        snap = d.snapshot
        for row, unit in zip(addrs, snap.units.names_of([r["addr"] for r in addrs])):
            row["unit"] = unit
        now = d.clock()
        with d.lock:
            today = d.storage.unit_period_bytes("day", now)
            month = d.storage.unit_period_bytes("month", now)
        units = {}
        for i, u in enumerate(snap.units):
            if u.type == "group":
                continue  # groups filter the list; listing them would count bytes twice
            oid = int(u.oid, 16)
            t, m = today.get(oid, (0, 0)), month.get(oid, (0, 0))
            units[u.name] = {"groups": [snap.units.units[g].name for g in snap.units.ancestors[i]],
                             "today": {"bytes_in": t[0], "bytes_out": t[1]},
                             "month": {"bytes_in": m[0], "bytes_out": m[1]}}
        return {"ts": ts, "addrs": addrs, "vlans": rep["vlans"], "ports": rep["ports"],
                "units": units}

    def users(self) -> list[dict]:
        return [{"name": u.name, "level": u.level, "uid": u.uid, "unix_user": u.unix_user,
                 "unix_group": u.unix_group} for u in self.d.config.users]

    def config_text(self, unsecure: bool = False, oids: bool = False) -> dict:
        path = self.d.config.path
        ids = None
        if oids:
            snap = self.d.snapshot
            ids = {"unit": {u.name: u.oid for u in snap.units.units},
                   "policy": {p.name: p.oid for p in snap.policies.policies}}
        return {"path": path, "text": config_text(path, unsecure, ids)}

    def debug(self, on: bool, category: str | None = None) -> dict:
        return daemon_log.set_debug(on, category)

    def rotate_log(self) -> dict:
        return daemon_log.rotate()

    def perf(self) -> list[dict]:
        """NeTAMS `show perf`: the last drains' timings by step, oldest first."""
        return list(self.d.perf.rows)

    def perf_log(self, file: str, header: bool = False) -> dict:
        """NeTAMS `show perf FILE [header]`: append the last drain's line to
        FILE; `header` starts the file anew with the column names."""
        rows = self.d.perf.rows
        text = (perf.HEADER + "\n" if header else "") + \
            (perf.line(rows[-1]) + "\n" if rows else "")
        try:
            with open(file, "w" if header else "a") as f:
                f.write(text)
        except OSError as e:
            raise BadRequest(f"perf log {file}: {e.strerror}") from None
        return {"file": file, "lines": text.count("\n")}

    # -- the model and its reports -----------------------------------------------------

    def units(self, type: str | None = None, name: str | None = None, email: str | None = None,
              policy: str | None = None, sys_policy: bool = False) -> list[dict]:
        """NeTAMS `show units`, with its filters."""
        d = self.d
        with d.lock:
            rows = queries.report_units(d.snapshot.units)
            bits = d.sys_policy_bits()
        for i, row in enumerate(rows):
            row["sys_policy"] = sys_policies.words(bits.get(i, 0))
        return queries.filter_units(rows, {"type": type, "name": name, "email": email,
                                           "policy": policy, "sys_policy": sys_policy})

    def policies(self) -> list[dict]:
        return queries.report_policies(self.d.config)

    def list(self, unit: str | None = None) -> dict:
        """NeTAMS `show list [name X]`: one unit, or every unit ({"units": [...]})."""
        d = self.d
        with d.lock:
            if unit is None:
                return queries.report_list_all(d.storage, d.snapshot, d.clock(), d.checks,
                                               d.matches)
            return queries.report_list(d.storage, d.snapshot, unit, d.clock(), d.checks,
                                       d.matches)

    def stat(self, unit: str, period: str = "week") -> dict:
        d = self.d
        with d.lock:
            return queries.report_stat(d.storage, d.snapshot, unit, period, d.clock())

    def series(self, unit: str, view: str = "day", back: int = 0) -> dict:
        d = self.d
        with d.lock:
            return queries.report_series(d.storage, d.snapshot, unit, view, back, d.clock())

    def top_units(self, period: str = "month", back: int = 0, limit: int = 10) -> dict:
        d = self.d
        with d.lock:
            return queries.report_top_units(d.storage, d.snapshot, period, back, limit, d.clock())

    def top_by(self, by: str, period: str = "month", back: int = 0, limit: int = 10) -> dict:
        d = self.d
        with d.lock:
            return queries.report_top_by(d.storage, d.snapshot, by, period, back, limit,
                                         d.clock())

    # -- blocks ------------------------------------------------------------------------

    def set_sys_policy(self, unit: str, policy: str) -> dict:
        return self.d.set_sys_policy(unit, policy)

    def blocked(self) -> dict[str, list[str]]:
        return self.d.blocked()
