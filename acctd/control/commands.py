"""Every control command, declared once: its name, the least level it needs,
its arguments, its handler and its acctctl words. The servers dispatch from
here (acctd/control/dispatch.py), acctctl reads it (acctd/cli), and a test
walks it. Light on purpose: acctctl imports it for `--help`.

A handler is "target.method": the target is a service by name (its `name`)
or "core" (the daemon's own commands, acctd/daemon/commands.py). Handlers
get the arguments as keyword arguments, already checked against `args`;
with `caller`, also who asks (a Caller).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from acctd.control.access import Level
from acctd.errors import BadRequest, NotFound

V, O, A = Level.VIEWER, Level.OPERATOR, Level.ADMIN


@dataclasses.dataclass(frozen=True)
class Arg:
    name: str
    type: type                   # str, int, bool, list or dict
    required: bool = False
    default: object = None       # what the handler gets when the argument is absent
    items: type | None = None    # lists: the type of each element
    at_least: int | None = None  # ints: the smallest value

    def check(self, value):
        if value is None and not self.required:
            return self.default
        ok = isinstance(value, self.type) and not (self.type is int and isinstance(value, bool))
        if ok and self.items is not None:
            ok = all(isinstance(x, self.items) for x in value)
        if not ok:
            of = f" of {self.items.__name__}" if self.items else ""
            raise BadRequest(f"argument {self.name!r}: expected {self.type.__name__}{of}, "
                             f"got {value!r}")
        if self.at_least is not None and value < self.at_least:
            raise BadRequest(f"argument {self.name!r}: expected at least {self.at_least}, "
                             f"got {value!r}")
        return value


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    level: Level
    handler: str                   # "target.method"
    cli: tuple[str, ...]           # acctctl words that send it
    args: tuple[Arg, ...] = ()
    caller: bool = False           # the handler gets caller=Caller(...)
    offline: bool = False          # acctctl --db answers it from the database alone

    @property
    def target(self) -> str:
        return self.handler.split(".", 1)[0]

    @property
    def method(self) -> str:
        return self.handler.split(".", 1)[1]

    def bind(self, args: Mapping) -> dict:
        """The handler's keyword arguments; BadRequest for anything else."""
        if not isinstance(args, Mapping):
            raise BadRequest('expected {"cmd": "...", "args": {...}}')
        known = {a.name: a for a in self.args}
        extra = sorted(set(args) - set(known))
        if extra:
            raise BadRequest(f"{self.name}: unknown argument(s) {', '.join(map(repr, extra))}")
        out = {}
        for a in self.args:
            if a.required and args.get(a.name) is None:
                raise BadRequest(f"{self.name}: argument {a.name!r} is required")
            out[a.name] = a.check(args.get(a.name))
        return out


def _s(name, required=False, default=None):
    return Arg(name, str, required, default)


def _b(name):
    return Arg(name, bool, default=False)


def _words(name, required=False):
    return Arg(name, list, required, (), items=str)


COMMANDS = (
    # the daemon itself
    Command("flush", O, "core.flush", ("flush",)),
    Command("reload", A, "core.reload", ("reload",)),
    Command("status", V, "core.status", ("status",)),
    Command("rates", V, "core.rates", ("top",)),
    Command("users", A, "core.users", ("users",)),
    Command("config", A, "core.config_text", ("config", "show"), (_b("unsecure"), _b("oids"))),
    Command("connections", A, "control.connections", ("connections",)),
    Command("debug", A, "core.debug", ("debug",),
            (Arg("on", bool, required=True), _s("category"))),
    Command("rotate-log", A, "core.rotate_log", ("rotate",)),
    Command("perf", V, "core.perf", ("perf",)),
    Command("perf-log", A, "core.perf_log", ("perf",), (_s("file", True), _b("header"))),
    # the model and its reports (NeTAMS show ...)
    Command("units", V, "core.units", ("units",),
            (_s("type"), _s("name"), _s("email"), _s("policy"), _b("sys_policy")), offline=True),
    Command("policies", V, "core.policies", ("policies",), offline=True),
    Command("list", V, "core.list", ("list",), (_s("unit"),), offline=True),
    Command("stat", V, "core.stat", ("stat",), (_s("unit", True), _s("period", default="week")),
            offline=True),
    # blocks
    Command("sys-policy", O, "core.set_sys_policy", ("unit",),
            (_s("unit", True), _s("policy", True))),
    Command("blocked", V, "core.blocked", ("blocked",)),
    # run-time units (acctctl unit add|del)
    Command("unit-add", O, "units.add", ("unit",),
            (_s("kind", True), _s("name", True), _s("ip"), _words("parents"),
             _s("email", default=""))),
    Command("unit-del", O, "units.delete", ("unit",), (_s("name", True),)),
    # services
    Command("quota-set", O, "quota.set", ("quota", "set"), (_words("argv", True),)),
    Command("quota-show", V, "quota.show", ("quota", "show"), (_s("unit"), _b("list"))),
    Command("billing-plan", V, "billing.plan_show", ("billing", "plan"),
            (Arg("plan", int), _s("what"))),
    Command("billing-account", V, "billing.account_show", ("billing", "account"),
            (_s("account"), _b("full"))),
    Command("billing-account-create", O, "billing.account_create", ("billing", "account"),
            (_s("name", True), _words("words"))),
    Command("billing-account-set", O, "billing.account_set", ("billing", "account"),
            (_s("account", True), _words("words", True))),
    Command("billing-ledger", V, "billing.ledger_rows", ("billing", "ledger"),
            (_s("account", True), _s("since"), _s("until"))),
    # the holder's own block (NeTAMS beblock), undone only if it is theirs
    Command("billing-beblock", O, "billing.self_block", ("billing", "beblock"),
            (_s("account", True), _b("undo"))),
    Command("billing-rerate", O, "billing.rerate", ("billing", "rerate"),
            (_s("start", True), _s("end"), _b("dry_run"))),
    Command("login-set", O, "login.set", ("login", "set"),
            (_s("unit", True), _words("words", True))),
    Command("login", O, "login.login", ("login", "in"),
            (_s("unit", True), _s("password", True), _s("ip"), _s("mac"))),
    Command("logout", O, "login.logout", ("login", "out"),
            (_s("unit", True), _s("password", True), _s("ip"), _s("mac"))),
    # a login page (the console's /hotspot, [captive]): the unit's password decides
    Command("portal-login", V, "login.portal", ("login", "portal"),
            (_s("unit", True), _s("password", True), _s("ip", True), _b("logout"))),
    Command("login-show", V, "login.show", ("login", "show"), (_s("unit"),)),
    Command("session-start", O, "sessions.start_session", ("session", "start"),
            (_s("user", True), _s("ip"), _s("port"), _s("nas"), _s("mac"), _b("force"))),
    Command("session-stop", O, "sessions.stop_session", ("session", "stop"),
            (_s("user"), _s("ip"), _s("port"), _s("nas"), _s("cause", default="user-request"))),
    Command("session-list", V, "sessions.list", ("session", "list"),
            (_b("open"), _s("user"), Arg("limit", int, default=100, at_least=0))),
    Command("session-kill-expired", O, "sessions.kill_expired", ("session", "kill-expired")),
    Command("mac-check", V, "mac.check", ("mac", "check")),
    Command("mac-fixate", O, "mac.fixate", ("mac", "fixate"), (_b("overwrite"),)),
    Command("rotate-flowlog", A, "flowlog.rotate", ("rotate",)),
    Command("monitor-show", V, "monitor.show", ("monitor", "show")),
    Command("monitor-unit-add", O, "monitor.add", ("monitor", "unit"), (_s("unit", True),)),
    Command("monitor-unit-remove", O, "monitor.remove", ("monitor", "unit"),
            (_s("unit", True),)),
    Command("monitor-query", V, "monitor.query", ("monitor", "query"),
            (_s("unit", True), _s("peer"), Arg("port", int, at_least=0), _s("since"),
             _s("until"), Arg("top", int, at_least=1)), offline=True),
    Command("rotate-monitor", A, "monitor.rotate", ("rotate",)),
    Command("aclserver-show", V, "aclserver.show", ("aclserver", "show")),
    Command("alerter", V, "alerter.queue", ("alerter",)),
    # static HTML reports (NeTAMS `html`): the daemon writes them, a schedule can run it
    Command("html", O, "core.html", ("html",), (_s("path"), _b("htaccess")), caller=True),
    Command("send-report", O, "reports.send", ("send", "report"),
            (_words("to"), _words("on"), _s("period", default="day"))),
    Command("schedule-list", V, "scheduler.list", ("schedule", "list")),
    Command("schedule-add", O, "scheduler.add", ("schedule", "add"), (_s("spec", True),),
            caller=True),
    Command("schedule-del", O, "scheduler.delete", ("schedule", "del"), (_s("oid", True),),
            caller=True),
    # AAA; the daemon reads the files named: as root, so admins only
    Command("fticks-import", A, "fticks.import_files", ("fticks", "import"),
            (_words("paths", True),)),
    Command("fticks-report", V, "fticks.report", ("fticks", "report"), (_s("since"),)),
    Command("radius-import", O, "radius.import_sessions", ("radius", "import"),
            (Arg("sessions", list, True, items=dict),)),
    Command("openvpn-event", O, "openvpn.hook_event", ("openvpn-hook",),
            (Arg("event", dict, True),)),
    Command("openvpn-interval", O, "openvpn.set_interval", ("openvpn", "interval"),
            (_s("user", True), Arg("seconds", int))),
    Command("openvpn-clients", V, "openvpn.clients", ("openvpn", "clients")),
    Command("rawdata", O, "collector.rawdata", ("rawdata",),
            (_s("unit", True), _words("argv", True))),
    # billing beyond NeTAMS: payments in, postpaid terms, invoices and statements out
    Command("billing-payments-import", O, "invoicing.import_payments",
            ("billing", "payments", "import"),
            (Arg("rows", list, True, items=dict), _s("source", default="payments"), _b("check"))),
    Command("billing-terms", O, "invoicing.set_terms", ("billing", "terms"),
            (_s("account", True), _words("words", True))),
    Command("billing-invoice", V, "invoicing.invoice", ("billing", "invoice"),
            (_s("account", True), _s("month"))),
    Command("billing-invoices", V, "invoicing.invoices", ("billing", "invoices"),
            (_s("account", True),)),
    Command("billing-statement", V, "invoicing.statement", ("billing", "statement"),
            (_s("account", True), _s("month"))),
    Command("billing-percentile", V, "invoicing.percentile", ("billing", "percentile"),
            (_s("account", True), _s("month"))),
    # the web console (acctd/web) asks on a person's behalf: acctd/control/delegation.py
    Command("web-login", V, "control.web_login", ("web", "login"),
            (_s("name", True), _s("password", True), _b("unit"), _b("account")), caller=True),
    Command("web-logout", V, "control.web_logout", ("web", "logout"), (_s("token", True),),
            caller=True),
    Command("series", V, "core.series", ("series",),
            (_s("unit", True), _s("view", default="day"), Arg("back", int, default=0, at_least=0)),
            offline=True),
    Command("top-units", V, "core.top_units", ("top-units",),
            (_s("period", default="month"), Arg("back", int, default=0, at_least=0),
             Arg("limit", int, default=10, at_least=1)), offline=True),
    Command("top-by", V, "core.top_by", ("top-by",),
            (_s("by", True), _s("period", default="month"), Arg("back", int, default=0, at_least=0),
             Arg("limit", int, default=10, at_least=1)), offline=True),
)

REGISTRY: Mapping[str, Command] = {c.name: c for c in COMMANDS}


def get(name: object) -> Command:
    if not isinstance(name, str):
        raise BadRequest('expected {"cmd": "...", "args": {...}}')
    try:
        return REGISTRY[name]
    except KeyError:
        raise NotFound(f"unknown command {name!r}") from None
