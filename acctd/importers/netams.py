"""`acctctl import netams FILE`: translate a NeTAMS configuration into acctd TOML.

Each NeTAMS service is carried by its own do_SERVICE method into the acctd
table that does the same (README "acctctl import netams" lists them).
Whatever cannot be carried comes back as a warning with
its line number, so nothing is dropped silently; the same warning on one line
is given once, with how many more there were. The result is loaded as acctd
would load it (`check`), and a mistake found there names the NeTAMS line it
came from. Binary files and text not in the given encoding are refused.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import shlex
import zlib
from typing import Any

from acctd.config.loader import Config, Processor, UnitTable, loads
from acctd.config.schema import Context, Invalid, Table
from acctd.errors import ConfigError
from acctd.model.enforcement import parse_bw
from acctd.model import sys_policy
from acctd.model.addresses import format_addr, format_prefix, parse_addr, parse_prefix
from acctd.model.asn import AsTable
from acctd.model.policies import parse_acct_entry, parse_target, tokenize_target
from acctd.model.units import normalize_oid
from acctd.services.alerter import LANGUAGES
from acctd.services.billing.tariff import BillingSettings, Plan, Subplan
from acctd.services.login import LoginSettings
from acctd.services.quota import QuotaError, QuotaSettings, parse_set
from acctd.services.scheduler import SchedulerSettings

# The reference's typography: en/em dashes for '-', guillemets and curly quotes for '"'.
_TYPO = str.maketrans({"\u2013": "-", "\u2014": "-", "\u00ab": '"', "\u00bb": '"',
                       "\u201c": '"', "\u201d": '"', "\u201e": '"'})

# Words that continue a unit definition. The reference's sample wraps long
# "unit user ..." lines, leaving "email ... acct-policy ..." on a line of its own.
_UNIT_WORDS = {"oid", "name", "ip", "mask", "parent", "no-local-pass", "email", "password",
               "description", "mac", "bw", "nodefault", "ap-nodefault", "fp-nodefault",
               "acct-policy", "fw-policy", "ds-list", "auto-units"}
_POLICY_WORDS = {"oid", "name", "hidden", "target", "bw"}
AS_TABLE = "pfx2as.txt"  # where an imported config's `as` targets look AS numbers up
# [quota] keys a NeTAMS directive of one value sets (notify and set have their own)
_QUOTA_DIRECTIVES = {"policy", "block-policy", "soft-threshold"}

_WHY = {
    "storage": "acctd keeps everything in one DuckDB file ([storage] path)",
    "data-source": "acctd counts with its eBPF datapath; list interfaces in [[interface]]",
    "monitor-xmlfile": 'acctd writes no XML: use [monitor] format = "json" (JSON lines)',
    "acl-server": "RSH to a Cisco is not offered: carried as an nftables back-end over SSH "
                  "([[aclserver.backend]] type = \"nft\", command = ssh root@HOST); for a "
                  "Cisco use type = \"bgp\" (RTBH or FlowSpec, README \"Blocking at the "
                  "routers\")",
    "server": "acctd's TCP listener is TLS only: [server] is written commented out, "
              "to be enabled with tls-cert and tls-key",
    "delay": "not carried: usage and last packets are known at each drain, and every drain "
             "checks, so [processor] lookup-delay is the check interval",
}
# NeTAMS `permit` -> acctd level (src/security.c: "all" is everything)
_PERMIT = {"all": "admin"}


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
        self.monitor: dict[str, Any] = {}   # every `service monitor N` merged: acctd has one
        self.monitor_lines: dict[str, int] = {}  # monitored unit -> its line
        self.log: dict[str, Any] = {}
        self.users: list[dict[str, Any]] = []
        self.user_lines: list[int] = []
        self.server: dict[str, Any] = {}
        self.alerter: dict[str, Any] = {}
        self.html: dict[str, Any] = {}     # [html] (service html)
        self.html_groups_line = 0          # where client-pages group G1 G2 was
        self.language: str | None = None
        self.admin_emails: list[str] = []  # of permit-all users, whom NeTAMS mails
        self.schedules: list[str] = []
        self.exports: list[tuple[int, dict[str, Any]]] = []   # (line, [[export]] table)
        self.aclserver: dict[str, Any] = {}      # [aclserver] keys (delay)
        self.acl_backends: list[dict[str, Any]] = []   # one per `service acl-server N`
        self.acl_lines: list[int] = []
        self.default_lines: list[int] = []
        self.default_fw_lines: list[int] = []
        self.carried: set[int] = set()
        self.origin: dict[tuple[str, ...], int] = {}  # TOML key path -> first NeTAMS line
        self.unreadable: set[str] = set()  # policies whose prefix file cannot be read here
        self.data_sources: list[dict[str, Any]] = []  # service data-source N: its settings

    def warn(self, line: int, directive: str, reason: str) -> None:
        self.warned += 1
        i = self.repeats.setdefault((line, reason), len(self.warnings))
        if i == len(self.warnings):
            self.warnings.append(ImportWarning(line, directive, reason))
        else:
            self.more[i] = self.more.get(i, 0) + 1

    def collapsed(self) -> tuple[ImportWarning, ...]:
        """The warnings in line order (a few are found after the whole file is read)."""
        return tuple(sorted((dataclasses.replace(w, more=self.more[i]) if i in self.more else w
                             for i, w in enumerate(self.warnings)), key=lambda w: w.line))

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
            # `auto-units N` continues a unit; `auto-units N type ...` is the processor's rule
            if (pending and pending[1] == "processor" and pending[2][0].lower() == "unit"
                    and head in _UNIT_WORDS - {"name", "oid"}
                    and (head != "auto-units" or len(toks) == 2)):
                pending[2].extend(toks)
                pending[3].append(lineno)
                continue
            if pending:
                yield pending
                pending = None
            if head == "service":
                service = toks[1].lower() if len(toks) > 1 else "?"
                if service in ("processor", "quota", "login", "billing", "monitor",
                               "alerter", "scheduler", "html"):
                    self.carried.add(lineno)
                elif service == "data-source":
                    self.data_source_begin(lineno, toks)
                elif service == "acl-server":
                    self.start_acl_server(lineno, toks)
                else:
                    self.warn(lineno, " ".join(toks), _WHY.get(service, "unknown service"))
                continue
            pending = (lineno, service, toks, [lineno])
        if pending:
            yield pending

    def run(self) -> None:
        for lineno, service, toks, lines in self.commands():
            before = self.warned
            handler = getattr(self, f"do_{_ident(service)}_{_ident(toks[0].lower())}", None) or \
                getattr(self, "do_" + service.replace("-", "_"), None)
            if handler is None:
                self.warn(lineno, " ".join(toks), _WHY.get(service, "not carried"))
            else:
                handler(lineno, toks)
            if self.warned == before:
                self.carried.update(lines)
        self.data_sources_end()
        self.check_refs()
        self.check_monitor_refs()
        if self.language and not self.alerter:
            self.warn(self.origin[("alerter", "language")], f"language {self.language}",
                      "not carried: acctd mails nothing without [alerter] (service alerter)")
        self.check_peer_refs()
        self.check_html_groups()
        # a command carried at first may lose a reference later: then it is warned
        self.carried -= {w.line for w in self.warnings}

    # -- service main: debug --------------------------------------------------

    def do_main_debug(self, ln: int, t: list[str]) -> None:
        """`debug deb_str ...` -> [log] debug (NeTAMS categories acctd has);
        `debug none` clears it, as does `no debug` of every one listed."""
        words = [w.lower() for w in t[1:]]
        have = self.log.get("debug", [])
        for w in words:
            if w == "none":
                have = []
            elif w in _DEBUG:
                if _DEBUG[w] not in have:
                    have = [*have, _DEBUG[w]]
            else:
                self.warn(ln, " ".join(t), f"debug {w}: acctd has no such category (it has "
                                           f"{', '.join(sorted(set(_DEBUG.values())))})")
        if have:
            self.log["debug"] = have
            self.keep(ln, "log", "debug")
        else:
            self.log.pop("debug", None)

    # -- service main and scheduler ------------------------------------------

    def do_main(self, ln: int, t: list[str]) -> None:
        head = t[0].lower()
        if head == "user":
            self.user(ln, t)
        elif head == "language" and len(t) == 2 and t[1].lower() in LANGUAGES:
            self.language = t[1].lower()
            self.keep(ln, "alerter", "language")
        elif head == "mac" and len(t) > 1 and t[1].lower() == "control":
            mode = "-".join(m for m in ("block", "alert") if m in {w.lower() for w in t[2:]})
            if not mode:
                self.warn(ln, " ".join(t), "mac control with neither block nor alert only "
                          "checks: `acctctl mac check` does that at any time")
            else:
                self.processor["mac-control"] = mode
                self.keep(ln, "processor", "mac-control")
        elif head == "mac":
            self.warn(ln, " ".join(t), "a command, not a setting: run `acctctl mac fixate` "
                                       "once acctd runs")
        elif head == "schedule":
            self.do_scheduler(ln, t)
        else:
            self.warn(ln, " ".join(t), "not carried: acctd has no such main directive")

    def user(self, ln: int, t: list[str]) -> None:
        """`user name N [real-name R] [email E] [password P] [crypted C] [permit S]`
        -> a [[user]] who logs in over [server] with that password (hashed)."""
        u: dict[str, Any] = {}
        k = 1
        while k + 1 < len(t):
            u[t[k].lower()] = t[k + 1]
            k += 2
        name = u.get("name")
        permit = u.get("permit", "none").lower()
        if _PERMIT.get(permit) == "admin" and "email" in u:
            self.admin_emails.append(u["email"])
        if not name:
            self.warn(ln, " ".join(t), "user without a name; not carried")
        elif permit == "none":
            self.warn(ln, f"user {name}", "not carried: permit none gives no access")
        elif "password" not in u:
            self.warn(ln, f"user {name}", "not carried: acctd's [[user]] needs a way to "
                      "know them: a password (NeTAMS's crypted one cannot be converted), "
                      "uid, unix-user or unix-group")
        else:
            from acctd.services.login import _default_hasher
            level = _PERMIT.get(permit, "viewer")
            if level == "viewer" and permit != "viewer":
                self.warn(ln, f"permit {permit}", "carried as level viewer: acctd's levels "
                          "are viewer, operator and admin (permit all)")
            self.users.append({"name": name, "level": level, **(
                {"email": u["email"]} if "email" in u else {}),
                "password": _default_hasher().hash(u["password"])})
            self.user_lines.append(ln)

    def do_scheduler(self, ln: int, t: list[str]) -> None:
        """`schedule [oid OID] time T action A` -> [scheduler] schedule, with
        an oid made from the line when it has none (a reload replaces by oid)."""
        if t[0].lower() != "schedule":
            self.warn(ln, " ".join(t), "unknown scheduler directive")
            return
        words = t[1:]
        if not words or words[0].lower() != "oid":
            oid = f"08{zlib.crc32(' '.join(words).encode()) & 0xFFFF:04X}"
            words = ["oid", oid, *words]
        line = " ".join(_quoted(w) for w in words)
        why = _refused(SchedulerSettings, "schedule", [line])
        if why:
            self.warn(ln, " ".join(t), f"not carried: {why}")
            return
        self.schedules.append(line)
        self.keep(ln, "scheduler", "schedule")

    # -- service server and alerter ----------------------------------------------

    def do_server(self, ln: int, t: list[str]) -> None:
        head = t[0].lower()
        if head in ("listen", "max-conn", "login") and len(t) == 2:
            self.server[head] = _value(t[1])
            self.keep(ln, "server", head)
        else:
            self.warn(ln, " ".join(t), "unknown server directive")

    def do_alerter(self, ln: int, t: list[str]) -> None:
        head = t[0].lower()
        if head == "smtp-server" and len(t) == 2:
            host, _, port = t[1].partition(":")
            self.alerter["smtp-server"] = host
            if port.isdigit():
                self.alerter["smtp-port"] = int(port)
            self.keep(ln, "alerter", "smtp-server")
        elif head == "report":
            self.warn(ln, " ".join(t), "acctd keeps no report definitions: `acctctl send "
                      "report [to ...] [on UNIT+] [period day|week]` sends one, by hand or "
                      "from a schedule")
        else:
            self.warn(ln, " ".join(t), "unknown alerter directive")

    # -- service html ----------------------------------------------------------------

    def do_html(self, ln: int, t: list[str]) -> None:
        """`service html` -> [html] (acctctl html); `run T` -> a schedule
        running `html`."""
        head, text = t[0].lower(), " ".join(t)
        if head == "run" and len(t) >= 2:
            self.do_scheduler(ln, ["schedule", "time", " ".join(t[1:]), "action", "html"])
        elif head in ("path", "url") and len(t) == 2:
            self.html[head] = t[1]
            self.keep(ln, "html", head)
        elif head in ("htaccess", "display-health") and len(t) == 2 and \
                t[1].lower() in ("yes", "no"):
            self.html[head] = t[1].lower() == "yes"
            self.keep(ln, "html", head)
        elif head == "client-pages" and len(t) == 2 and t[1].lower() in ("all", "groups", "none"):
            self.html[head] = t[1].lower()
            self.keep(ln, "html", head)
        elif head == "client-pages" and len(t) >= 3 and t[1].lower() == "group":
            self.html[head] = t[2:]     # the groups named and their own members
            self.html_groups_line = ln
            self.keep(ln, "html", head)
        elif head == "client-pages":
            self.warn(ln, text, "not carried: expected all, groups, none or group G1 G2 ...")
        elif head == "display-top" and len(t) == 2 and t[1].isdigit() and int(t[1]) >= 1:
            self.html[head] = min(int(t[1]), 1000)
            self.keep(ln, "html", head)
        elif head == "account-pages" and len(t) == 2 and t[1].lower() in ("all", "none"):
            self.html[head] = t[1].lower()
            self.keep(ln, "html", head)
        elif head == "account-pages":
            self.warn(ln, text, "not carried: expected account-pages all or none")
        elif head == "language" and t[1:] == ["en"]:
            pass  # the pages are in English
        elif head == "language":
            self.warn(ln, text, "not carried: the pages are in English")
        elif head == "servlet-url":
            self.warn(ln, text, "not carried: there is no servlet; the web console "
                      "(acctd-web) shows each unit's tables")
        else:
            self.warn(ln, text, "unknown html directive")

    def server_table(self) -> list[str]:
        """NeTAMS's plain-text listener becomes acctd's TLS one: written
        commented out, to be enabled with a certificate and key."""
        if not self.server:
            return []
        host = "0.0.0.0" if str(self.server.get("login", "")).lower() == "any" else "127.0.0.1"
        keys = {"listen": f"{host}:{self.server.get('listen', 20001)}",
                **({"max-conn": self.server["max-conn"]} if "max-conn" in self.server else {}),
                "login": "any" if host == "0.0.0.0" else "localhost",
                "tls-cert": "/etc/acctd/server.pem", "tls-key": "/etc/acctd/server.key"}
        return ["# NeTAMS service server: acctd's listener is TLS only; give it a certificate",
                "# and key and remove the '#' to enable it.", "# [server]",
                *(f"# {line}" for line in _keys(keys)), ""]

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
        elif head == "default" and len(t) > 2 and t[1].lower() == "fw-policy":
            self.processor.setdefault("default-fw-policy", []).extend(t[2:])
            self.default_fw_lines += [ln] * len(t[2:])
            self.keep(ln, "processor", "default-fw-policy")
        elif head == "default":
            self.warn(ln, " ".join(t), "bad value for default: expected default "
                                       "{acct-policy|fw-policy} POLICY...")
        elif head == "storage":
            self.warn(ln, " ".join(t), _WHY["storage"])
        elif head in ("auto-assign", "auto-units", "access-script"):
            self.processor_enforcement(ln, t)
        else:
            self.warn(ln, " ".join(t), "unknown processor directive")

    def processor_enforcement(self, ln: int, t: list[str]) -> None:
        """auto-assign and auto-units (lists: one NeTAMS line each, as acctd
        reads them) and access-script (one value)."""
        head = t[0].lower()
        if head == "access-script":
            if self.bad_value(ln, t, Processor, head):
                self.processor[head] = t[1]
                self.keep(ln, "processor", head)
            return
        line = " ".join(t[1:])
        why = _refused(Processor, head, [line])
        if why:
            self.warn(ln, " ".join(t), f"bad value for {head}: {why}")
            return
        self.processor.setdefault(head, []).append(line)
        self.keep(ln, "processor", head)

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
                if "bw" in [x.lower() for x in rest]:
                    cut = [x.lower() for x in rest].index("bw")
                    if not self.bw(ln, p, rest[cut + 1:]):
                        return
                    rest = rest[:cut]
                p["target"] = " ".join("port" if x.lower() == "ports" else x for x in rest)
                break
            elif w == "hidden":
                p["hidden"] = True  # acctd: left out of `send report` mails
                k += 1
            elif w == "bw":
                n = _bw_words(t, k)
                if not self.bw(ln, p, t[k + 1:k + n]):
                    return
                k += n
            else:
                self.warn(ln, " ".join(t), f"unexpected word {t[k]!r} in policy")
                return
        if "name" not in p or "target" not in p:
            self.warn(ln, " ".join(t), "policy needs a name and a target; not carried")
            return
        if not self.policy_target(ln, t, p):
            return
        if "oid" in p:
            try:
                p["oid"] = normalize_oid(p["oid"])
            except ValueError as e:
                self.warn(ln, f"oid {p['oid']}", f"{e}; a new oid is generated")
                del p["oid"]
        self.policies.append(p)
        self.policy_lines.append(ln)

    def bw(self, ln: int, into: dict[str, Any], words: list[str]) -> bool:
        """`bw { speed in speed out | speed }` on a unit or policy, as acctd's bw."""
        text = " ".join(words)
        try:
            parse_bw(text)
        except ValueError as e:
            self.warn(ln, f"bw {text}", f"bad value for bw: {e}")
            return False
        into["bw"] = text
        return True

    def policy_target(self, ln: int, t: list[str], p: dict[str, Any]) -> bool:
        """Whether the policy's target is carried; what the operator must
        provide (a prefix file, the AS table) is said at the policy's line."""
        try:
            uses_as = any(kw == "as" for kw, _ in tokenize_target(p["target"]))
            parse_target(p["target"], self.base_dir, as_table=AsTable() if uses_as else None)
        except ValueError as e:
            if not str(e).startswith("cannot read prefix file"):
                self.warn(ln, " ".join(t), f"target not carried: {e}")
                return False
            # carried: the operator copies the file next to the acctd config
            self.warn(ln, f"policy {p['name']}", f"carried, but acctd will not load until "
                                                 f"it can read the prefix file: {e}")
            self.unreadable.add(p["name"])
        if uses_as:
            # NeTAMS had the AS numbers from NetFlow records; acctd looks them up
            self.processor.setdefault("as-table", AS_TABLE)
            self.keep(ln, "processor", "as-table")
            self.warn(ln, f"policy {p['name']}", f"carried; acctd looks the AS numbers up in "
                                                 f"[processor] as-table = \"{AS_TABLE}\": put a "
                                                 "CAIDA pfx2as file there before starting it")
        return True

    def check_html_groups(self) -> None:
        """client-pages group G1 G2: the names that are no carried group are
        dropped, with a warning (none left: the index only, as NeTAMS)."""
        listed = self.html.get("client-pages")
        if not isinstance(listed, list):
            return
        groups = {u["name"] for u in self.units if u.get("type") == "group"}
        ln = self.html_groups_line
        for name in listed:
            if name not in groups:
                self.warn(ln, f"client-pages group {name}", "no group of that name was carried")
        self.html["client-pages"] = [n for n in listed if n in groups] or "none"

    def check_peer_refs(self) -> None:
        """sys-deny-OID / sys-allow-OID naming no carried unit are dropped, with a warning."""
        oids = {u["oid"] for u in self.units if "oid" in u}
        for ln, u in zip(self.unit_lines, self.units):
            keep = []
            for w in u.get("sys-policy", []):
                peer = sys_policy.peer(w)
                if peer and peer[0] not in oids:
                    self.warn(ln, f"unit {u['name']} {w}", f"no unit with oid {peer[0]} was "
                                                           "carried")
                else:
                    keep.append(w)
            if "sys-policy" in u:
                u["sys-policy"] = keep

    def unit(self, ln: int, t: list[str]) -> None:
        if len(t) < 2 or t[1].lower() not in ("host", "group", "cluster", "net", "user"):
            self.warn(ln, " ".join(t), "expected unit {host|group|cluster|net|user}")
            return
        u: dict[str, Any] = {"type": t[1].lower()}
        ips: list[str] = []
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
                elif w in ("acct-policy", "fw-policy"):
                    u.setdefault(w, []).extend(vals)
                elif w == "ds-list":
                    u["ds-list"] = vals   # resolved by data_source_lists()
                else:
                    self.warn(ln, f"{w} {' '.join(vals)}", "not carried")
            elif w in ("nodefault", "ap-nodefault", "no-local-pass"):
                u[w] = True
                k += 1
            elif w == "password" and arg is not None:
                self.warn(ln, "password ...", "not carried: a login record would make acctd's "
                          "login service block the unit until it logs in; give one with "
                          "`acctctl login set NAME password P` where NeTAMS's login table had it")
                k += 2
            elif w == "bw":
                n = _bw_words(t, k)
                self.bw(ln, u, t[k + 1:k + n])
                k += n
            elif w == "fp-nodefault":
                u[w] = True
                k += 1
            elif w.startswith("sys-"):
                self.unit_enforcement(ln, u, t[k])
                k += 1
            elif w in ("mac", "auto-units") and arg is not None:
                self.unit_enforcement(ln, u, w, arg)
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
        if "mac" in u and u["type"] not in ("host", "user"):
            self.warn(ln, f"mac {u.pop('mac')}", "only host and user units have a MAC")
        self.units.append(u)
        self.unit_lines.append(ln)

    def unit_enforcement(self, ln: int, u: dict[str, Any], word: str,
                         arg: str | None = None) -> None:
        """A unit's sys-* words, mac and auto-units rule number."""
        w = word.lower()
        if w == "mac":
            why = _refused(UnitTable, "mac", arg)
            if why:
                self.warn(ln, f"mac {arg}", f"bad value for mac: {why}")
            else:
                u["mac"] = arg
        elif w == "auto-units":
            why = _refused(UnitTable, "auto-units", _value(arg))
            if why:
                self.warn(ln, f"auto-units {arg}", f"bad value for auto-units: {why}")
            else:
                u["auto-units"] = _value(arg)
        else:   # an OID keeps its case: sys-deny-0A0101
            why = _refused(UnitTable, "sys-policy", [word])
            if why:
                self.warn(ln, word, f"not carried: {why}")
            else:
                u.setdefault("sys-policy", []).append(word)

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
        elif key == "delay":
            self.warn(ln, " ".join(t), _WHY["delay"])
        elif key in ("policy", "block-policy") and len(t) == 2:
            self.quota[key] = t[1]  # a name or an oid: check_refs makes it the name
            self.keep(ln, "quota", key)
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
        elif key == "delay":
            self.warn(ln, " ".join(t), _WHY["delay"])
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

    def do_monitor(self, ln: int, t: list[str]) -> None:
        """monitor unit X, no monitor unit X, monitor to storage N | file PATH,
        no monitor to ...; `to netflow IP PORT` is also an [[export]] of the
        monitored units; xmlfile is warned)."""
        words = [w.lower() for w in t]
        no = words[0] == "no"
        if no:
            words, t = words[1:], t[1:]
        if len(words) == 3 and words[:2] == ["monitor", "unit"]:
            units = self.monitor.setdefault("units", [])
            if no:
                if t[2] in units:
                    units.remove(t[2])
            elif t[2] not in units:
                units.append(t[2])
            self.keep(ln, "monitor", "units")
            self.monitor_lines.setdefault(t[2], ln)
        elif len(words) >= 3 and words[:2] == ["monitor", "to"] and \
                words[2] in ("storage", "file", "netflow", "xmlfile"):
            dest = words[2]
            if dest == "xmlfile":
                self.warn(ln, " ".join(t), _WHY["monitor-xmlfile"])
                return
            if dest == "netflow" and not no:
                self.monitor_to_netflow(ln, t)
            if dest == "file" and not no and len(t) != 4:
                self.warn(ln, " ".join(t), "expected monitor to file PATH")
                return
            to = self.monitor.setdefault("to", [])
            if no:
                if dest in to:
                    to.remove(dest)
                if dest == "file":
                    self.monitor.pop("file", None)
                return
            if dest not in to:
                to.append(dest)
            self.keep(ln, "monitor", "to")
            if dest == "file":
                self.monitor["file"] = t[3]
                self.keep(ln, "monitor", "file")
        else:
            self.warn(ln, " ".join(t), "unknown monitor directive")

    # -- service acl-server ---------------------------------------------------

    def start_acl_server(self, ln: int, t: list[str]) -> None:
        """`service acl-server N`: a back-end of its own, with the warning
        that RSH is not offered (the nearest: commands over SSH)."""
        self.warn(ln, " ".join(t), _WHY["acl-server"])
        n = t[2] if len(t) > 2 else str(len(self.acl_backends))
        self.acl_backends.append({"name": f"acl-server-{printable(n)}", "type": "nft"})
        self.acl_lines.append(ln)

    def do_acl_server(self, ln: int, t: list[str]) -> None:
        """hostname H [PORT], direction src|dst, dynamic-name X, delay N,
        set-uptime N carried; acl-number and an RSH port warned."""
        b = self.acl_backends[-1]
        head, args = t[0].lower(), t[1:]
        if head == "hostname" and 1 <= len(args) <= 2:
            b["command"] = ["ssh", f"root@{args[0]}"]
            if len(args) == 2 and args[1] != "514":   # 514: RSH's own, nothing lost
                self.warn(ln, " ".join(t), f"RSH port {args[1]} not carried: ssh uses its own "
                          "(add -p PORT to command)")
        elif head == "direction" and len(args) == 1 and args[0].lower() in ("src", "dst"):
            b["direction"] = args[0].lower()
        elif head == "dynamic-name" and len(args) == 1:
            b["dynamic-name"] = args[0]
        elif head == "acl-number" and args:
            self.warn(ln, " ".join(t), "a Cisco access-list number has no counterpart: the "
                      "nftables set (dynamic-name) is in table acctd, family inet")
        elif head == "delay" and len(args) == 1 and args[0].isdigit() and int(args[0]) >= 1:
            self.aclserver["delay"] = int(args[0])
        elif head == "set-uptime" and len(args) == 1 and args[0].isdigit():
            b["set-uptime"] = int(args[0])
        else:
            self.warn(ln, " ".join(t), "unknown or malformed acl-server directive")

    def check_monitor_refs(self) -> None:
        """Monitored units that were carried, by name (an oid becomes the
        name of the unit that has it)."""
        by_oid = {u["oid"]: u["name"] for u in self.units if "oid" in u}
        names = {u["name"] for u in self.units}
        kept = []
        for key in self.monitor.get("units", []):
            oid = key.upper().zfill(6)
            name = key if key in names else by_oid.get(oid)
            if name is None:
                self.warn(self.monitor_lines.get(key, 0), f"monitor unit {key}",
                          "no such unit was carried")
            elif name not in kept:
                kept.append(name)
        if "units" in self.monitor:
            self.monitor["units"] = kept
        if self.monitor.get("to") == []:   # every destination withdrawn
            del self.monitor["to"]

    def monitor_to_netflow(self, ln: int, t: list[str]) -> None:
        """`monitor to netflow IP PORT`: NeTAMS sends the monitored units'
        flows as NetFlow v5 to IP:PORT; an [[export]] table does the same."""
        try:
            if len(t) != 5:
                raise ValueError("expected monitor to netflow IP PORT")
            ip = ipaddress.ip_address(t[3])
            if not (t[4].isdigit() and 0 < int(t[4]) < 65536):
                raise ValueError(f"expected a port from 1 to 65535, got {t[4]!r}")
        except ValueError as e:
            self.warn(ln, " ".join(t), str(e))
            return
        host = f"[{ip}]" if ip.version == 6 else str(ip)
        self.exports.append((ln, {"format": "v5", "destination": f"{host}:{int(t[4])}",
                                  "units": "monitored"}))

    def set_unit(self, ln: int, t: list[str], into: dict[str, Any]) -> None:
        if len(t) < 3 or t[1].lower() not in ("name", "oid"):
            self.warn(ln, " ".join(t), "expected set {name X | oid Y} ...")
            return
        entry = into.setdefault("units", {}).setdefault(t[2], {})
        entry["raw"] = entry.get("raw", []) + [" ".join(t[3:])]
        self.keep(ln, "quota" if into is self.quota else "login", "units", t[2], "raw")

    # -- service data-source N (netflow and raw become [[collector]]) -------------

    def data_source_begin(self, ln: int, t: list[str]) -> None:
        """A data source's header: carried or warned once its type is known."""
        num = t[2] if len(t) > 2 else "0"
        self.data_sources.append({"line": ln, "num": num, "header": " ".join(t), "type": None,
                                  "collector": {}})

    def do_data_source(self, ln: int, t: list[str]) -> None:
        ds = self.data_sources[-1]
        head = t[0].lower()
        if head == "type" and len(t) == 2 and ds["type"] is None:
            ds["type"] = t[1].lower()
            if ds["type"] in ("netflow", "raw"):
                self.carried.add(ds["line"])
            else:
                self.warn(ds["line"], ds["header"], _WHY["data-source"])
                self.warn(ln, " ".join(t), _WHY["data-source"])
            return
        if ds["type"] not in ("netflow", "raw"):
            self.warn(ln, " ".join(t), _WHY["data-source"])
            return
        c = ds["collector"]
        if head == "source" and len(t) == 2 and _is_address(t[1]):
            c.setdefault("source", []).append(t[1])
        elif head == "listen" and len(t) in (2, 3) and t[-1].isdigit():
            c["listen"] = f"{'0.0.0.0' if len(t) == 2 or t[1] == '0' else t[1]}:{t[-1]}"
        elif head == "clock" and len(t) == 2 and t[1].lower() in ("remote", "local"):
            c["clock"] = t[1].lower()
        else:
            self.warn(ln, " ".join(t), "not carried: a [[collector]] takes type, source, "
                                       "listen and clock")

    def data_sources_end(self) -> None:
        for ds in self.data_sources:
            if ds["type"] is None:
                self.warn(ds["line"], ds["header"], "a data source without a type")

    def collectors(self) -> list[tuple[int, dict[str, Any]]]:
        """(line, [[collector]] keys) of the netflow and raw sources, by number."""
        out = []
        for ds in self.data_sources:
            if ds["type"] in ("netflow", "raw") and ds["num"].isdigit() and int(ds["num"]) > 0:
                out.append((ds["line"], {"id": int(ds["num"]), "type": ds["type"],
                                         **ds["collector"]}))
        return out

    def data_source_lists(self) -> None:
        """A unit's ds-list: collectors keep their number, the kernel-like
        sources (ip-traffic, libpcap, ...) are acctd's datapath, 0."""
        ids = {c["id"] for _, c in self.collectors()}
        kernel = {ds["num"] for ds in self.data_sources if ds["type"] not in ("netflow", "raw")}
        for ln, u in zip(self.unit_lines, self.units):
            if "ds-list" not in u:
                continue
            got = []
            for v in ",".join(u.pop("ds-list")).split(","):
                v = v.strip()
                n = int(v) if v.isdigit() and int(v) in ids else 0 if v in kernel else None
                if n is None:
                    self.warn(ln, f"unit {u['name']} ds-list {v}",
                              "no netflow or raw data source of that number was carried")
                elif n not in got:
                    got.append(n)
            if got and got != [0]:
                u["ds-list"] = got

    # -- cross references -----------------------------------------------------

    def check_refs(self) -> None:
        """Drop references to policies or groups that were not carried, with a warning."""
        self.data_source_lists()
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

        def keep_entry(ln: int, owner: str, entry: str, key: str) -> str | None:
            try:
                name, inv, stop = parse_acct_entry(entry)
            except ValueError as e:
                self.warn(ln, f"{owner} {key} {entry}", str(e))
                return None
            if name not in names and name.upper().zfill(6) in oids:
                name = oids[name.upper().zfill(6)]
                return ("!" if inv else "") + ("%" if stop else "") + name
            if name not in names:
                self.warn(ln, f"{owner} {key} {entry}", "no such policy was carried")
                return None
            return entry

        for key in ("policy", "block-policy"):  # the quota's: it names a carried policy
            ref = self.quota.get(key)
            if ref is not None and str(ref) not in names and str(ref).upper().zfill(6) in oids:
                # by oid, as NeTAMS allows
                self.quota[key] = ref = oids[str(ref).upper().zfill(6)]
            if ref is not None and str(ref).lstrip("!") not in names:
                self.warn(self.origin[("quota", key)], f"{key} {ref}",
                          "no such policy was carried; not carried")
                del self.quota[key]
        for key, lines in (("acct-policy", self.default_lines),
                           ("fw-policy", self.default_fw_lines)):
            dflt = self.processor.get(f"default-{key}")
            if dflt:
                self.processor[f"default-{key}"] = [
                    e for e in (keep_entry(ln, "default", x, key)
                                for ln, x in zip(lines, dflt)) if e]
        for ln, u in zip(self.unit_lines, self.units):
            for key in ("acct-policy", "fw-policy"):
                if key in u:
                    u[key] = [e for e in (keep_entry(ln, f"unit {u['name']}", x, key)
                                          for x in u[key]) if e]
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
            processor = self.processor
            if for_check and "as-table" in processor:
                processor = processor | {"as-table": os.devnull}  # provided by the operator
            out.table(("processor",), processor, self.origin)
        for ln, p in zip(self.policy_lines, self.policies):
            keys = {k: p[k] for k in ("name", "oid", "target", "bw", "hidden") if k in p}
            if for_check and p["name"] in self.unreadable:
                keys["target"] = _empty_files(keys["target"])
            out.add("[[policy]]", *_keys(keys), "", line=ln)
        order = ("type", "name", "oid", "ip", "ips", "net", "parents", "acct-policy", "email",
                 "description", "nodefault", "ap-nodefault", "fp-nodefault", "fw-policy", "bw", "sys-policy",
                 "no-local-pass", "mac", "auto-units", "ds-list")
        for ln, u in zip(self.unit_lines, self.units):
            out.add("[[unit]]", *_keys({k: u[k] for k in order if k in u}), "", line=ln)
        for ln, u in zip(self.user_lines, self.users):
            out.add("[[user]]", *_keys(u), "", line=ln)
        if self.schedules:
            out.table(("scheduler",), {"schedule": self.schedules}, self.origin)
        out.add(*self.server_table(), line=self.origin.get(("server",)))
        if self.alerter:
            # NeTAMS mails "all administrators (user XXX ... permit all)"
            extra = {"admins": self.admin_emails} if self.admin_emails else {}
            extra.update({"language": self.language} if self.language else {})
            out.table(("alerter",), {**self.alerter, **extra}, self.origin)
        for ln, e in self.exports:
            out.add("[[export]]", *_keys(e), "", line=ln)
        for ln, c in self.collectors():
            out.add("[[collector]]", *_keys(c), "", line=ln)
        for name, data in (("quota", self.quota), ("login", self.login),
                           ("billing", self.billing), ("monitor", self.monitor),
                           ("log", self.log), ("html", self.html)):
            if data:
                out.table((name,), data, self.origin)
        if self.acl_backends:
            out.add("[aclserver]", *_keys(self.aclserver), "", line=self.acl_lines[0])
            for ln, b in zip(self.acl_lines, self.acl_backends):
                out.add("[[aclserver.backend]]", *_keys(b), "", line=ln)
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


# NeTAMS debug categories -> acctd's (acctd.daemon.log.CATEGORIES); the
# others (command, parse, sleep, proc_mux, ds_ip, iptree, flow, memory, ...)
# are NeTAMS internals acctd does not have
_DEBUG = {"all": "all", "quota": "quota", "login": "login", "scheduler": "scheduler",
          "billing": "billing", "aclserver": "aclserver", "alert": "alerter",
          "storage": "storage", "server": "control"}


def _quoted(word: str) -> str:
    """A word of a schedule line as the scheduler reads it back (the action
    was one quoted word of the NeTAMS line)."""
    return f'"{word}"' if " " in word else word


def _bw_words(t: list[str], k: int) -> int:
    """How many words `bw ...` at t[k] takes: bw SPEED [in|out [SPEED in|out]]."""
    def dir_at(j: int) -> bool:
        return j < len(t) and t[j].lower() in ("in", "out")
    return 5 if dir_at(k + 2) and dir_at(k + 4) else 3 if dir_at(k + 2) else 2


def _ident(word: str) -> str:
    return re.sub(r"\W", "_", word)
def _is_address(text: str) -> bool:
    try:
        parse_addr(text)
    except ValueError:
        return False
    return True


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
