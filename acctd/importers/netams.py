"""`acctctl import netams FILE`: translate a NeTAMS configuration into acctd TOML.

Units, policies, acct-policy lists, defaults and restrict become acctd
config; quota, login and billing settings are carried as data for the issues
that implement them. Whatever cannot be carried comes back as a warning with
its line number, so nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from typing import Any

from acctd.model.addresses import format_addr, format_prefix, parse_addr, parse_prefix
from acctd.model.policies import parse_acct_entry, parse_target, tokenize_target
from acctd.model.units import normalize_oid

# The reference's typography: en/em dashes for '-', guillemets and curly quotes for '"'.
_TYPO = str.maketrans({"\u2013": "-", "\u2014": "-", "\u00ab": '"', "\u00bb": '"',
                       "\u201c": '"', "\u201d": '"', "\u201e": '"'})

# Words that continue a unit definition. The reference's sample wraps long
# "unit user ..." lines, leaving "email ... acct-policy ..." on a line of its own.
_UNIT_WORDS = {"oid", "name", "ip", "mask", "parent", "no-local-pass", "email", "password",
               "description", "mac", "bw", "nodefault", "ap-nodefault", "fp-nodefault",
               "acct-policy", "fw-policy", "ds-list", "auto-units"}
_POLICY_WORDS = {"oid", "name", "hidden", "target", "bw"}

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

    def format(self, path: str) -> str:
        return f"{path}:{self.line}: {self.directive}: {self.reason}"


@dataclasses.dataclass(frozen=True)
class ImportResult:
    toml: str
    warnings: tuple[ImportWarning, ...]
    carried: frozenset[int]  # lines carried whole; every other directive line has a warning


def _tokens(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=False, posix=True)
    except ValueError:  # an unbalanced quote: keep the words
        return line.replace('"', " ").split()


def _value(tok: str) -> Any:
    """Numbers stay numbers in the carried data; everything else is a string."""
    return int(tok) if re.fullmatch(r"-?\d+", tok) else tok


class _Importer:
    def __init__(self, text: str):
        self.text = text
        self.warnings: list[ImportWarning] = []
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

    def warn(self, line: int, directive: str, reason: str) -> None:
        self.warnings.append(ImportWarning(line, directive, reason))

    # -- reading --------------------------------------------------------------

    def commands(self):
        """(line, service, tokens, physical lines) with wrapped unit lines joined back."""
        service = "main"
        pending: tuple[int, str, list[str], list[int]] | None = None
        for lineno, raw in enumerate(self.text.splitlines(), 1):
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
            before = len(self.warnings)
            handler = getattr(self, "do_" + service.replace("-", "_"), None)
            if handler is None:
                self.warn(lineno, " ".join(toks),
                          _WHY.get(toks[0].lower() if service == "main" else service,
                                   "not carried"))
            else:
                handler(lineno, toks)
            if len(self.warnings) == before:
                self.carried.update(lines)
        self.check_refs()
        # a command carried at first may lose a reference later: then it is warned
        self.carried -= {w.line for w in self.warnings}

    # -- service processor ----------------------------------------------------

    def do_processor(self, ln: int, t: list[str]) -> None:
        head = t[0].lower()
        if head in ("lookup-delay", "flow-lifetime") and len(t) == 2 and t[1].isdigit():
            self.processor[head] = int(t[1])
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
                    self.warn(ln, " ".join(t),
                              "expected restrict all {drop|pass} local {drop|pass}")
                    return
            # NeTAMS's default is "all drop local pass"; acctd's is pass/pass, so write both
            self.processor["restrict"] = {"all": r.get("all", "drop"),
                                          "local": r.get("local", "pass")}
        elif head == "default" and len(t) > 2 and t[1].lower() == "acct-policy":
            self.processor.setdefault("default-acct-policy", []).extend(t[2:])
            self.default_lines += [ln] * len(t[2:])
        elif head == "default":
            self.warn(ln, " ".join(t), "fw-policy (enforcement) comes in a later issue")
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
            parse_target(p["target"])
        except ValueError as e:
            if not str(e).startswith("cannot read prefix file"):
                self.warn(ln, " ".join(t), f"target not carried: {e}")
                return
            # carried: the operator copies the file next to the acctd config
            self.warn(ln, f"policy {p['name']}", f"carried, but acctd will not load until "
                                                 f"it can read the prefix file: {e}")
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
                while k < len(t) and t[k].lower() not in _UNIT_WORDS:
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
        if head == "storage":
            self.warn(ln, " ".join(t), _WHY["storage"])
        elif head == "notify" and len(t) >= 3:
            self.quota.setdefault("notify", {}).setdefault(t[1].lower(), []).extend(t[2:])
        elif head == "set":
            self.set_unit(ln, t, self.quota)
        elif len(t) == 2:
            # "soft-treshold" is NeTAMS's spelling; carried under its English spelling
            key = "soft-threshold" if head == "soft-treshold" else head
            self.quota[key] = _value(t[1])
        else:
            self.warn(ln, " ".join(t), "unknown quota directive")

    def do_login(self, ln: int, t: list[str]) -> None:
        head = t[0].lower().replace("_", "-")
        if head == "storage":
            self.warn(ln, " ".join(t), _WHY["storage"])
        elif head == "set":
            self.set_unit(ln, t, self.login)
        elif len(t) == 2:
            self.login[head] = _value(t[1])
        elif head == "set-user-ip" and len(t) == 1:
            self.login[head] = "yes"
        else:
            self.warn(ln, " ".join(t), "unknown login directive")

    def do_billing(self, ln: int, t: list[str]) -> None:
        head = t[0].lower()
        if head == "storage":
            self.warn(ln, " ".join(t), _WHY["storage"])
        elif head in ("subplan", "plan", "account") and len(t) >= 3:
            # one parameter per command, as NeTAMS writes them: merge by number
            entry = self.billing.setdefault(head, {}).setdefault(t[1], {})
            key = t[2].lower()
            vals = [_value(x) for x in t[3:]]
            if key in ("subplan", "unit", "balance", "included", "overdraft"):
                entry.setdefault(key, []).append(vals)
            else:
                entry[key] = vals[0] if len(vals) == 1 else (vals or True)
        elif len(t) == 2:
            self.billing[head] = _value(t[1])
        else:
            self.warn(ln, " ".join(t), "unknown billing directive")

    def set_unit(self, ln: int, t: list[str], into: dict[str, Any]) -> None:
        if len(t) < 3 or t[1].lower() not in ("name", "oid"):
            self.warn(ln, " ".join(t), "expected set {name X | oid Y} ...")
            return
        entry = into.setdefault("units", {}).setdefault(t[2], {})
        entry["raw"] = entry.get("raw", []) + [" ".join(t[3:])]

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

    def toml(self, source: str) -> str:
        out = [f"# acctd configuration imported from NeTAMS {source} by acctctl import netams.",
               "# Add [[interface]] tables for the interfaces acctd should attach to."]
        if self.warnings:
            out.append(f"# {len(self.warnings)} directive(s) were not carried:")
            out += [f"#   line {w.line}: {w.directive}: {w.reason}" for w in self.warnings]
        out.append("")
        if self.processor:
            out += _table("processor", self.processor)
        for p in self.policies:
            out += ["[[policy]]", *_keys({k: p[k] for k in ("name", "oid", "target") if k in p}),
                    ""]
        order = ("type", "name", "oid", "ip", "ips", "net", "parents", "acct-policy", "email",
                 "description", "nodefault", "ap-nodefault")
        for u in self.units:
            out += ["[[unit]]", *_keys({k: u[k] for k in order if k in u}), ""]
        for name, data in (("quota", self.quota), ("login", self.login),
                           ("billing", self.billing)):
            if data:
                out += _table(name, data)
        return "\n".join(out).rstrip() + "\n"


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
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k, ensure_ascii=False)


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_scalar(x)}" for k, x in v.items()) + " }"
    # JSON string escapes are valid TOML basic-string escapes
    return json.dumps(str(v), ensure_ascii=False)


def _keys(d: dict[str, Any]) -> list[str]:
    return [f"{_key(k)} = {_scalar(v)}" for k, v in d.items()]


def _table(path: str, d: dict[str, Any]) -> list[str]:
    flat = {k: v for k, v in d.items() if not isinstance(v, dict)}
    out = [f"[{path}]", *_keys(flat), ""]
    for k, v in d.items():
        if isinstance(v, dict):
            out += _table(f"{path}.{_key(k)}", v)
    return out


def convert(text: str, source: str = "netams.cfg") -> ImportResult:
    """NeTAMS configuration text -> acctd TOML and the warnings for what was not carried."""
    imp = _Importer(text)
    imp.run()
    return ImportResult(imp.toml(source), tuple(imp.warnings), frozenset(imp.carried))


def import_file(path: str) -> ImportResult:
    with open(path, encoding="utf-8", errors="replace") as f:
        return convert(f.read(), path)
