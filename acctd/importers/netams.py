"""`acctctl import netams FILE`: translate a NeTAMS configuration into acctd TOML.

Units, policies, acct-policy lists, defaults and restrict become acctd
config; quota, login and billing settings are carried as data for the issues
that implement them. Whatever cannot be carried comes back as a warning with
its line number, so nothing is dropped silently; the same warning on one line
is given once, with how many more there were. The result is loaded as acctd
would load it (`check`), and a mistake found there names the NeTAMS line it
came from. Binary files and text not in the given encoding are refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
from typing import Any

from acctd.config.loader import Config, Processor, loads
from acctd.config.schema import Context, Invalid, Table
from acctd.errors import ConfigError
from acctd.model.addresses import format_addr, format_prefix, parse_addr, parse_prefix
from acctd.model.policies import parse_acct_entry, parse_target, tokenize_target
from acctd.model.units import normalize_oid
from acctd.services.billing.tariff import BillingSettings, Plan, Subplan
from acctd.services.login import LoginSettings
from acctd.services.quota import QuotaError, QuotaSettings, parse_set

# The reference's typography: en/em dashes for '-', guillemets and curly quotes for '"'.
_TYPO = str.maketrans({"\u2013": "-", "\u2014": "-", "\u00ab": '"', "\u00bb": '"',
                       "\u201c": '"', "\u201d": '"', "\u201e": '"'})

# Words that continue a unit definition. The reference's sample wraps long
# "unit user ..." lines, leaving "email ... acct-policy ..." on a line of its own.
_UNIT_WORDS = {"oid", "name", "ip", "mask", "parent", "no-local-pass", "email", "password",
               "description", "mac", "bw", "nodefault", "ap-nodefault", "fp-nodefault",
               "acct-policy", "fw-policy", "ds-list", "auto-units"}
_POLICY_WORDS = {"oid", "name", "hidden", "target", "bw"}
# [quota] keys a NeTAMS directive of one value sets (notify and set have their own)
_QUOTA_DIRECTIVES = {"policy", "block-policy", "soft-threshold", "delay"}

_WHY = {
    "main": "acctd has no NeTAMS main service",
    "debug": "acctd logs through the systemd journal; use --debug",
    "user": "management users and permissions come in a later issue",
    "schedule": "scheduled commands: use systemd timers with acctctl",
    "server": "acctctl talks to acctd over a local control socket",
    "storage": "acctd keeps everything in one DuckDB file ([storage] path)",
    "data-source": "acctd counts with its eBPF datapath; list interfaces in [[interface]]",
    "alerter": "e-mail reports are not implemented yet",
    "html": "static HTML reports are not implemented yet",
    "monitor": "per-unit flow logging is not implemented yet",
    "acl-server": "pushing blocks to a remote router is not implemented",
    "scheduler": "scheduled commands: use systemd timers with acctctl",
}


@dataclasses.dataclass(frozen=True)
class ImportWarning:
    line: int
    directive: str
    reason: str
    more: int = 0  # the same reason given again on this line, this many times

    def text(self) -> str:
        more = f" (and {self.more} more like this)" if self.more else ""
        directive = self.directive if len(self.directive) <= 200 else self.directive[:197] + "..."
        return printable(f"{directive}: {self.reason}{more}")

    def format(self, path: str) -> str:
        return f"{printable(path)}:{self.line}: {self.text()}"


@dataclasses.dataclass(frozen=True)
class ImportResult:
    toml: str
    warnings: tuple[ImportWarning, ...]
    carried: frozenset[int]  # lines carried whole; every other directive line has a warning
    origins: tuple[int | None, ...]  # the NeTAMS line of each TOML line (TOML line 1: [0])
    check_toml: str  # `toml` with unreadable prefix files read as empty, for `check`

    def source_line(self, toml_line: int | None) -> int | None:
        """The NeTAMS line a line of the result came from, if one did."""
        if toml_line is None or not 0 < toml_line <= len(self.origins):
            return None
        return self.origins[toml_line - 1]


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_C1 = re.compile(r"[\x7f-\x9f]")


def printable(text: str) -> str:
    """Control characters as escapes: a warning or a TOML comment must
    neither drive the terminal nor break the file."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _unit_word(word: str) -> bool:
    """A word that starts a new part of a unit line (sys-deny included: it is
    no policy name to take into an acct-policy list)."""
    return word.lower() in _UNIT_WORDS or word.lower().startswith("sys-")


def _tokens(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=False, posix=True)
    except ValueError:  # an unbalanced quote: keep the words
        return line.replace('"', " ").split()


def _billing_values(head: str, t: list[str]) -> list[tuple[str, Any]]:
    """The [billing.subplan.N] / [billing.plan.N] keys one NeTAMS command sets:
    `fee 100 spread daily`, `included 1G in 500M out`, `no subplan 1 2` ..."""
    word = t[0].lower()
    if head == "plan":
        if word in ("subplan", "no") and len(t) > 1:
            nums = t[2:] if word == "no" else t[1:]
            return [("subplans", [int(x) if x.isdigit() else x for x in nums])]
        return [(word, " ".join(t[1:]))]
    if word == "fee" and len(t) == 4 and t[2].lower() == "spread":
        return [("fee", t[1]), ("spread", t[3].lower())]
    if word in ("adjust-included", "adjust-fee") and len(t) == 2:
        return [(word, {"yes": True, "no": False}.get(t[1].lower(), t[1]))]
    return [(word, " ".join(t[1:]))]


def _value(tok: str) -> Any:
    """Numbers stay numbers in the carried data (64-bit ones: TOML's integers);
    everything else is a string."""
    return int(tok) if re.fullmatch(r"-?\d{1,18}", tok) else tok


class _Importer:
    def __init__(self, text: str, base_dir: str = "."):
        self.text = text
        self.base_dir = base_dir    # where the result will be: relative prefix files are there
        self.warnings: list[ImportWarning] = []
        self.repeats: dict[tuple[int, str], int] = {}  # (line, reason) -> index in warnings
        self.more: dict[int, int] = {}  # index in warnings -> times repeated
        self.warned = 0                 # warn() calls, repeats included
        self.processor: dict[str, Any] = {}
        self.policies: list[dict[str, Any]] = []
        self.policy_lines: list[int] = []
        self.units: list[dict[str, Any]] = []
        self.unit_lines: list[int] = []
        self.quota: dict[str, Any] = {}
        self.login: dict[str, Any] = {}
        self.billing: dict[str, Any] = {}
        self.default_lines: list[int] = []
        self.carried: set[int] = set()
        self.origin: dict[tuple[str, ...], int] = {}  # TOML key path -> first NeTAMS line
        self.unreadable: set[str] = set()  # policies whose prefix file cannot be read here

    def warn(self, line: int, directive: str, reason: str) -> None:
        self.warned += 1
        i = self.repeats.setdefault((line, reason), len(self.warnings))
        if i == len(self.warnings):
            self.warnings.append(ImportWarning(line, directive, reason))
        else:
            self.more[i] = self.more.get(i, 0) + 1

    def collapsed(self) -> tuple[ImportWarning, ...]:
        return tuple(dataclasses.replace(w, more=self.more[i]) if i in self.more else w
                     for i, w in enumerate(self.warnings))

    def keep(self, ln: int, *path: str) -> None:
        """Remember the line a value of the result (and its tables) comes from."""
        for i in range(1, len(path) + 1):
            self.origin.setdefault(path[:i], ln)

    def bad_value(self, ln: int, t: list[str], table: type[Table], key: str) -> bool:
        """Warn when `table` refuses the directive's value (or it has not
        exactly one); True when it takes it."""
        if len(t) != 2:
            got = " ".join(t[1:])
            self.warn(ln, " ".join(t), f"bad value for {t[0]}: expected one value, got "
                                       f"{repr(got) if got else 'none'}")
            return False
        why = _refused(table, key, _value(t[1]))
        if why:
            self.warn(ln, " ".join(t), f"bad value for {t[0]}: {why}")
        return why is None

    # -- reading --------------------------------------------------------------

    def commands(self):
        """(line, service, tokens, physical lines) with wrapped unit lines joined back."""
        service = "main"
        pending: tuple[int, str, list[str], list[int]] | None = None
        for lineno, raw in enumerate(self.text.split("\n"), 1):
            line = raw.translate(_TYPO).strip()
            if not line or line.startswith("#"):
                continue
            toks = _tokens(line)
            if not toks:
                continue
            head = toks[0].lower()
            if (pending and pending[1] == "processor" and pending[2][0].lower() == "unit"
                    and head in _UNIT_WORDS - {"name", "oid"}):
                pending[2].extend(toks)
                pending[3].append(lineno)
                continue
            if pending:
                yield pending
                pending = None
            if head == "service":
                service = toks[1].lower() if len(toks) > 1 else "?"
                if service in ("processor", "quota", "login", "billing"):
                    self.carried.add(lineno)
                else:
                    self.warn(lineno, " ".join(toks), _WHY.get(service, "unknown service"))
                continue
            pending = (lineno, service, toks, [lineno])
        if pending:
            yield pending

    def run(self) -> None:
        for lineno, service, toks, lines in self.commands():
            before = self.warned
            handler = getattr(self, "do_" + service.replace("-", "_"), None)
            if handler is None:
                self.warn(lineno, " ".join(toks),
                          _WHY.get(toks[0].lower() if service == "main" else service,
                                   "not carried"))
            else:
                handler(lineno, toks)
            if self.warned == before:
                self.carried.update(lines)
        self.check_refs()
        # a command carried at first may lose a reference later: then it is warned
        self.carried -= {w.line for w in self.warnings}

    # -- service processor ----------------------------------------------------

    def do_processor(self, ln: int, t: list[str]) -> None:
        head = t[0].lower()
        if head in ("lookup-delay", "flow-lifetime"):
            if self.bad_value(ln, t, Processor, head):
                self.processor[head] = _value(t[1])
                self.keep(ln, "processor", head)
        elif head == "policy":
            self.policy(ln, t)
        elif head == "unit":
            self.unit(ln, t)
        elif head == "restrict":
            r = {}
            for k in range(1, len(t) - 1, 2):
                if t[k] in ("all", "local") and t[k + 1] in ("drop", "pass"):
                    r[t[k]] = t[k + 1]
                else:
                    self.warn(ln, " ".join(t), "bad value for restrict: expected restrict "
                                               "all {drop|pass} local {drop|pass}")
                    return
            # NeTAMS's default is "all drop local pass"; acctd's is pass/pass, so write both
            self.processor["restrict"] = {"all": r.get("all", "drop"),
                                          "local": r.get("local", "pass")}
            self.keep(ln, "processor", "restrict")
        elif head == "default" and len(t) > 2 and t[1].lower() == "acct-policy":
            self.processor.setdefault("default-acct-policy", []).extend(t[2:])
            self.default_lines += [ln] * len(t[2:])
            self.keep(ln, "processor", "default-acct-policy")
        elif head == "default" and len(t) > 1 and t[1].lower() == "fw-policy":
            self.warn(ln, " ".join(t), "fw-policy (enforcement) comes in a later issue")
        elif head == "default":
            self.warn(ln, " ".join(t), "bad value for default: expected default "
                                       "{acct-policy|fw-policy} POLICY...")
        elif head == "storage":
            self.warn(ln, " ".join(t), _WHY["storage"])
        elif head in ("auto-assign", "auto-units"):
            self.warn(ln, " ".join(t), "automatic units and address pools are not implemented")
        elif head == "access-script":
            self.warn(ln, " ".join(t), "blocking scripts are not implemented")
        else:
            self.warn(ln, " ".join(t), "unknown processor directive")

    def policy(self, ln: int, t: list[str]) -> None:
        p: dict[str, Any] = {}
        k = 1
        while k < len(t):
            w = t[k].lower()
            if w in ("oid", "name") and k + 1 < len(t):
                p[w] = t[k + 1]
                k += 2
            elif w == "target":
                # the target runs to the end, or to a trailing "bw"
                rest = t[k + 1:]
                if "bw" in rest:
                    cut = rest.index("bw")
                    self.warn(ln, "bw " + " ".join(rest[cut + 1:]),
                              "rate limits come with enforcement in a later issue")
                    rest = rest[:cut]
                p["target"] = " ".join("port" if x.lower() == "ports" else x for x in rest)
                break
            elif w == "hidden":
                self.warn(ln, "hidden", "hiding policies from HTML reports is not implemented")
                k += 1
            elif w == "bw":
                self.warn(ln, " ".join(t[k:k + 5]), "rate limits come with enforcement later")
                k += 2
            else:
                self.warn(ln, " ".join(t), f"unexpected word {t[k]!r} in policy")
                return
        if "name" not in p or "target" not in p:
            self.warn(ln, " ".join(t), "policy needs a name and a target; not carried")
            return
        try:
            parse_target(p["target"], self.base_dir)
        except ValueError as e:
            if not str(e).startswith("cannot read prefix file"):
                self.warn(ln, " ".join(t), f"target not carried: {e}")
                return
            # carried: the operator copies the file next to the acctd config
            self.warn(ln, f"policy {p['name']}", f"carried, but acctd will not load until "
                                                 f"it can read the prefix file: {e}")
            self.unreadable.add(p["name"])
        if "oid" in p:
            try:
                p["oid"] = normalize_oid(p["oid"])
            except ValueError as e:
                self.warn(ln, f"oid {p['oid']}", f"{e}; a new oid is generated")
                del p["oid"]
        self.policies.append(p)
        self.policy_lines.append(ln)

    def unit(self, ln: int, t: list[str]) -> None:
        if len(t) < 2 or t[1].lower() not in ("host", "group", "cluster", "net", "user"):
            self.warn(ln, " ".join(t), "expected unit {host|group|cluster|net|user}")
            return
        u: dict[str, Any] = {"type": t[1].lower()}
        ips: list[str] = []
        login: dict[str, Any] = {}
        k = 2
        while k < len(t):
            w = t[k].lower()
            arg = t[k + 1] if k + 1 < len(t) else None
            if w in ("oid", "name", "email", "description") and arg is not None:
                u[w] = arg
                k += 2
            elif w == "ip" and arg is not None:
                if k + 3 < len(t) and t[k + 2].lower() == "mask":
                    ips.append(f"{arg}/{t[k + 3]}")
                    k += 4
                else:
                    ips.append(arg)
                    k += 2
            elif w in ("parent", "acct-policy", "fw-policy", "ds-list"):
                k += 1
                vals = []
                while k < len(t) and not _unit_word(t[k]):
                    vals.append(t[k])
                    k += 1
                if w == "parent":
                    u.setdefault("parents", []).extend(vals)
                elif w == "acct-policy":
                    u.setdefault("acct-policy", []).extend(vals)
                else:
                    self.warn(ln, f"{w} {' '.join(vals)}",
                              "fw-policy (enforcement) comes in a later issue" if w == "fw-policy"
                              else "extra data sources are not supported")
            elif w in ("nodefault", "ap-nodefault"):
                u[w] = True
                k += 1
            elif w in ("password", "mac") and arg is not None:
                login[w] = arg  # kept for the login service
                k += 2
            elif w == "bw":
                n = 5 if k + 4 < len(t) and t[k + 2].lower() in ("in", "out") else 2
                self.warn(ln, " ".join(t[k:k + n]), "rate limits come with enforcement later")
                k += n
            elif w.startswith("sys-") or w in ("no-local-pass", "fp-nodefault"):
                self.warn(ln, w, "enforcement (sys-policies, fw defaults, restrict per unit) "
                                 "comes in a later issue")
                k += 1
            elif w == "auto-units" and arg is not None:
                self.warn(ln, f"auto-units {arg}", "automatic units are not implemented")
                k += 2
            else:
                self.warn(ln, " ".join(t[k:]), f"unexpected word {t[k]!r} in unit; rest of "
                                               "the line not carried")
                break
        name = u.get("name")
        if not name:
            self.warn(ln, " ".join(t), "unit without a name; not carried")
            return
        if "oid" in u:
            try:
                u["oid"] = normalize_oid(u["oid"])
            except ValueError as e:
                self.warn(ln, f"oid {u['oid']}", f"{e}; a new oid is generated")
                del u["oid"]
        if not self.addresses(ln, u, ips):
            return
        if login:
            self.login.setdefault("units", {}).setdefault(name, {}).update(login)
        self.units.append(u)
        self.unit_lines.append(ln)

    def addresses(self, ln: int, u: dict[str, Any], ips: list[str]) -> bool:
        kind = u["type"]
        try:
            if kind == "net":
                if len(ips) != 1:
                    raise ValueError("a net needs one 'ip A.B.C.D mask E.F.G.H' or 'ip A.B.C/N'")
                u["net"] = format_prefix(*parse_prefix(ips[0], strict=False))
            elif kind == "group":
                if ips:
                    raise ValueError("a group has no addresses")
            elif kind == "cluster":
                if not ips:
                    raise ValueError("a cluster needs at least one ip")
                u["ips"] = [format_addr(parse_addr(a)) for a in ips]
            else:
                if len(ips) > 1 or (kind == "host" and not ips):
                    raise ValueError(f"a {kind} has {'exactly' if kind == 'host' else 'at most'}"
                                     " one ip")
                # user 0.0.0.0 is NeTAMS for "no address yet"
                if ips and ips[0] != "0.0.0.0":
                    u["ip"] = format_addr(parse_addr(ips[0]))
        except ValueError as e:
            self.warn(ln, f"unit {u['type']} name {u.get('name')}", f"not carried: {e}")
            return False
        return True

    # -- services carried as data ---------------------------------------------

    def do_quota(self, ln: int, t: list[str]) -> None:
        head = t[0].lower()
        key = _key_of(QuotaSettings, head)
        if head == "storage":
            self.warn(ln, " ".join(t), _WHY["storage"])
        elif head == "notify":
            ev, who = (t[1].lower(), t[2:]) if len(t) > 1 else ("", [])
            why = _refused(QuotaSettings, "notify", {ev: who or None})
            if why:
                self.warn(ln, " ".join(t), f"bad value for notify: {why}")
                return
            self.quota.setdefault("notify", {}).setdefault(ev, []).extend(who)
            self.keep(ln, "quota", "notify", ev)
        elif head == "set":
            try:
                parse_set(t)
            except QuotaError as e:
                self.warn(ln, " ".join(t), f"bad value for set: {e}")
                return
            self.set_unit(ln, t, self.quota)
        elif key in _QUOTA_DIRECTIVES:
            # "soft-treshold" is NeTAMS's spelling; carried under its English spelling
            if self.bad_value(ln, t, QuotaSettings, key):
                self.quota[key] = _value(t[1])
                self.keep(ln, "quota", key)
        else:
            self.warn(ln, " ".join(t), "unknown quota directive")

    def do_login(self, ln: int, t: list[str]) -> None:
        head = t[0].lower().replace("_", "-")
        key = _key_of(LoginSettings, head)
        if head == "storage":
            self.warn(ln, " ".join(t), _WHY["storage"])
        elif head == "set":
            self.set_unit(ln, t, self.login)
        elif key == "set-user-ip" and len(t) == 1:
            self.login[key] = "yes"
            self.keep(ln, "login", key)
        elif key is not None and key != "units":
            if self.bad_value(ln, t, LoginSettings, key):
                self.login[key] = _value(t[1])
                self.keep(ln, "login", key)
        else:
            self.warn(ln, " ".join(t), "unknown login directive")

    def do_billing(self, ln: int, t: list[str]) -> None:
        """`service billing` into [billing] with [billing.subplan.N] and
        [billing.plan.N] (acctd/services/billing/tariff.py); one parameter
        per command, as NeTAMS writes them, merged by number."""
        head = t[0].lower()
        if head == "storage":
            self.warn(ln, " ".join(t), _WHY["storage"])
        elif head == "account":
            self.warn(ln, " ".join(t), "accounts live in the database (NeTAMS keeps them in "
                      "its SQL storage, not its config): make them with acctctl billing account "
                      "create NAME")
        elif head in ("subplan", "plan") and len(t) >= 3 and t[1].isdigit():
            table = Subplan if head == "subplan" else Plan
            for key, value in _billing_values(head, t[2:]):
                why = _refused(table, key, value) if key in table.keys() else \
                    f"unknown {head} parameter {key!r}"
                if why:
                    self.warn(ln, " ".join(t), f"bad value for {head} {t[1]} {key}: {why}")
                    continue
                entry = self.billing.setdefault(head, {}).setdefault(str(int(t[1])), {})
                if key == "subplans":
                    have = entry.get(key, [])
                    entry[key] = ([n for n in have if n not in value] if t[2].lower() == "no"
                                  else have + [n for n in value if n not in have])
                else:
                    entry[key] = value
                self.keep(ln, "billing", head, str(int(t[1])), key)
        elif head in ("delay", "default-credit-limit") and len(t) == 2:
            value = _value(t[1]) if head == "delay" else t[1]
            why = _refused(BillingSettings, head, value)
            if why:
                self.warn(ln, " ".join(t), f"bad value for {head}: {why}")
            else:
                self.billing[head] = value
                self.keep(ln, "billing", head)
        else:
            self.warn(ln, " ".join(t), "unknown billing directive")

    def set_unit(self, ln: int, t: list[str], into: dict[str, Any]) -> None:
        if len(t) < 3 or t[1].lower() not in ("name", "oid"):
            self.warn(ln, " ".join(t), "expected set {name X | oid Y} ...")
            return
        entry = into.setdefault("units", {}).setdefault(t[2], {})
        entry["raw"] = entry.get("raw", []) + [" ".join(t[3:])]
        self.keep(ln, "quota" if into is self.quota else "login", "units", t[2], "raw")

    # -- cross references -----------------------------------------------------

    def check_refs(self) -> None:
        """Drop references to policies or groups that were not carried, with a warning."""
        unit_keys = {u["name"] for u in self.units} | {u["oid"] for u in self.units if "oid" in u}
        # a policy whose policy-or/-and or units target names something not
        # carried cannot be carried either; repeat until nothing changes
        changed = True
        while changed:
            changed = False
            known = {p["name"] for p in self.policies} | {p["oid"] for p in self.policies
                                                           if "oid" in p}
            for ln, p in zip(list(self.policy_lines), list(self.policies)):
                missing = _missing_refs(p["target"], known, unit_keys)
                if missing:
                    self.warn(ln, f"policy {p['name']}",
                              f"not carried: its target refers to {missing!r}, which was not")
                    k = self.policies.index(p)
                    del self.policies[k], self.policy_lines[k]
                    changed = True
        names = {p["name"] for p in self.policies}
        oids = {p["oid"]: p["name"] for p in self.policies if "oid" in p}
        groups = {u["name"] for u in self.units if u["type"] == "group"}

        def keep_entry(ln: int, owner: str, entry: str) -> str | None:
            try:
                name, inv, stop = parse_acct_entry(entry)
            except ValueError as e:
                self.warn(ln, f"{owner} acct-policy {entry}", str(e))
                return None
            if name not in names and name.upper().zfill(6) in oids:
                name = oids[name.upper().zfill(6)]
                return ("!" if inv else "") + ("%" if stop else "") + name
            if name not in names:
                self.warn(ln, f"{owner} acct-policy {entry}", "no such policy was carried")
                return None
            return entry

        dflt = self.processor.get("default-acct-policy")
        if dflt:
            self.processor["default-acct-policy"] = [
                e for e in (keep_entry(ln, "default", x)
                            for ln, x in zip(self.default_lines, dflt)) if e]
        for ln, u in zip(self.unit_lines, self.units):
            if "acct-policy" in u:
                u["acct-policy"] = [e for e in (keep_entry(ln, f"unit {u['name']}", x)
                                                for x in u["acct-policy"]) if e]
            if "parents" in u:
                missing = [p for p in u["parents"] if p not in groups]
                for p in missing:
                    self.warn(ln, f"unit {u['name']} parent {p}", "no such group was carried")
                u["parents"] = [p for p in u["parents"] if p in groups]

    # -- writing --------------------------------------------------------------

    def toml(self, source: str, for_check: bool = False) -> tuple[str, tuple[int | None, ...]]:
        """The TOML and, for each of its lines, the NeTAMS line it came from.
        for_check: prefix files that cannot be read here are read as empty
        (the policy is carried; only its file is missing)."""
        out = _Lines()
        out.add(f"# acctd configuration imported from NeTAMS {printable(source)} by acctctl "
                "import netams.",
                "# Add [[interface]] tables for the interfaces acctd should attach to.")
        warnings = self.collapsed()
        if warnings:
            out.add(f"# {len(warnings)} directive(s) were not carried:",
                    *(f"#   line {w.line}: {w.text()}" for w in warnings))
        out.add("")
        if self.processor:
            out.table(("processor",), self.processor, self.origin)
        for ln, p in zip(self.policy_lines, self.policies):
            keys = {k: p[k] for k in ("name", "oid", "target") if k in p}
            if for_check and p["name"] in self.unreadable:
                keys["target"] = _empty_files(keys["target"])
            out.add("[[policy]]", *_keys(keys), "", line=ln)
        order = ("type", "name", "oid", "ip", "ips", "net", "parents", "acct-policy", "email",
                 "description", "nodefault", "ap-nodefault")
        for ln, u in zip(self.unit_lines, self.units):
            out.add("[[unit]]", *_keys({k: u[k] for k in order if k in u}), "", line=ln)
        for name, data in (("quota", self.quota), ("login", self.login),
                           ("billing", self.billing)):
            if data:
                out.table((name,), data, self.origin)
        while out.text and not out.text[-1]:
            out.text.pop()
            out.origins.pop()
        return "\n".join(out.text) + "\n", tuple(out.origins)


class _Lines:
    """TOML lines and the NeTAMS line each came from (None: none did)."""

    def __init__(self):
        self.text: list[str] = []
        self.origins: list[int | None] = []

    def add(self, *texts: str, line: int | None = None) -> None:
        self.text += texts
        self.origins += [line] * len(texts)

    def table(self, path: tuple[str, ...], d: dict[str, Any], origin: dict) -> None:
        self.add(f"[{'.'.join(map(_key, path))}]", line=origin.get(path))
        for k, v in d.items():
            if not isinstance(v, dict):
                self.add(f"{_key(k)} = {_scalar(v)}", line=origin.get((*path, k), origin.get(path)))
        self.add("")
        for k, v in d.items():
            if isinstance(v, dict):
                self.table((*path, k), v, origin)


def _empty_files(target: str) -> str:
    """The target with every `file` term reading an empty file."""
    return " ".join(" ".join([kw, *([os.devnull] if kw == "file" else args)])
                    for kw, args in tokenize_target(target))


def _key_of(table: type[Table], word: str) -> str | None:
    """The table's key a directive word names (its own spelling or an alias), or None."""
    for key, f in table.keys().items():
        if word == key or word in f.metadata["aliases"]:
            return key
    return None


def _refused(table: type[Table], key: str, value: Any) -> str | None:
    """Why the table's check refuses the value for key (as acctd would at
    load), or None when it takes it."""
    try:
        table.keys()[key].metadata["check"](value, Context())
    except Invalid as e:
        return e.reason
    except ValueError as e:
        return str(e)
    return None


def _missing_refs(target: str, policies: set[str], units: set[str]) -> str | None:
    for kw, args in tokenize_target(target):
        if kw in ("policy-or", "policy-and"):
            for a in args:
                ref = a.lstrip("!")
                if ref not in policies and ref.upper().zfill(6) not in policies:
                    return ref
        elif kw == "units":
            for a in args:
                if a.lower() not in ("oid", "name") and a not in units \
                        and a.upper().zfill(6) not in units:
                    return a
    return None


def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _string(k)


def _string(v: str) -> str:
    # JSON's escapes are TOML basic-string escapes; TOML also refuses a raw
    # DEL, and C1 controls are escaped too, so `cat` of the file is harmless
    return _C1.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(v, ensure_ascii=False))


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_scalar(x)}" for k, x in v.items()) + " }"
    return _string(str(v))


def _keys(d: dict[str, Any]) -> list[str]:
    return [f"{_key(k)} = {_scalar(v)}" for k, v in d.items()]


def convert(text: str, source: str = "netams.cfg", base_dir: str = ".") -> ImportResult:
    """NeTAMS configuration text -> acctd TOML and the warnings for what was
    not carried. base_dir: where the TOML will be (relative prefix files)."""
    imp = _Importer(text, base_dir)
    imp.run()
    toml, origins = imp.toml(source)
    return ImportResult(toml, imp.collapsed(), frozenset(imp.carried), origins,
                        imp.toml(source, for_check=True)[0])


def read(path: str, encoding: str = "utf-8") -> str:
    """The file's text. Binary data, or bytes that are not `encoding`, are
    refused with the line they are on (ConfigError), never replaced."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", path) from None
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        if b"\0" not in data:
            line_start = data.rfind(b"\n", 0, e.start) + 1
            raise ConfigError(
                f"not {encoding} text: byte 0x{data[e.start]:02x} at column "
                f"{e.start - line_start + 1}; give the file's encoding with --encoding (NeTAMS "
                "configs are often koi8-r or cp1251)", path, data.count(b"\n", 0, e.start) + 1
            ) from None
        text = data.decode("latin-1")  # only to find the NUL's line below
    if "\0" in text:
        raise ConfigError("binary data (a NUL byte), not a NeTAMS configuration", path,
                          text.count("\n", 0, text.index("\0")) + 1)
    return text.removeprefix("\ufeff")  # a byte-order mark some editors write


def import_file(path: str, encoding: str = "utf-8", base_dir: str = ".") -> ImportResult:
    return convert(read(path, encoding), path, base_dir)


def check(res: ImportResult, source: str, output: str | None = None) -> Config:
    """Load the result as acctd will, from where it is written (relative
    prefix files); a mistake names the NeTAMS line it came from."""
    try:
        return loads(res.check_toml, output or "<stdout>")
    except ConfigError as e:
        raise ConfigError(f"the converted configuration would not load: {e.reason}; nothing "
                          "was written", source, res.source_line(e.line)) from None
