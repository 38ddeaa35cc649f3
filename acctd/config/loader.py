"""Load acctd's TOML configuration into frozen dataclasses and the compiled unit/policy model.

Every mistake raises ConfigError naming file, line and key and saying what
was expected. Unknown keys are mistakes too: a typo must not silently count
nothing. The schema (all keys kebab-case, as in NeTAMS):

    [[interface]]                 # one per interface the datapath attaches to
    name = "eth1"                 # required
    role = "lan"                  # required: lan (faces subscribers, accounts) | wan
    hook = "xdp-native"           # xdp-native (default) | xdp-generic | tc

    [processor]
    lookup-delay = 30             # seconds between drains and rollups; default 30, 1 to 3600
                                  # (an hour's rollup needs a drain in that hour)
    flow-lifetime = 300           # seconds a raw flow row covers; default 300, lookup-delay
                                  # to 86400
    time-zone = "UTC"             # IANA name; hour/day/week/month rollups use local time
    default-acct-policy = ["ip"]  # prepended to every unit's list unless nodefault/ap-nodefault
    restrict = { all = "pass", local = "pass" }   # traffic of units without fw-policy:
                                  # local = units with policies, all = addresses of no unit
                                  # (and no-local-pass units). acctd defaults to pass/pass,
                                  # NeTAMS to all drop local pass (see enforce.py)
    default-fw-policy = ["web"]   # prepended to every unit's fw-policy list unless nodefault
                                  # or fp-nodefault
    as-table = "pfx2as.txt"       # prefix-to-AS table for `as` targets (CAIDA pfx2as text:
                                  # PREFIX LENGTH AS per line), re-read at every reload
    bw-burst = 0.3                # seconds of traffic a rate limit lets through at once
                                  # (at least 64 KiB): the token bucket's depth
    access-script = "/usr/local/sbin/acct-access"  # run as SCRIPT deny|allow OID ADDR REASONS
    access-script-timeout = 10    # seconds before the script is killed; at most 3600
    auto-assign = ["10.0.9.10 10.0.9.250"]       # pools for `acctctl unit add ... ip auto`
    auto-units = ["1 type host naming prefix1 pc group auto"]  # rules for nets' auto-units
    mac-control = "off"           # off | block | alert | block-alert: configured unit MACs
                                  # against the kernel's neighbour table, after each drain

    [storage]
    path = "/var/lib/acctd/acctd.duckdb"
    raw-retention = "30d"         # how long raw interval rows are kept: seconds, or
                                  # "90m" / "12h" / "30d" / "2w"; at most 3650d

    [[unit]]
    type = "host"                 # required: host | cluster | net | user | group
    name = "server"               # required, unique, no spaces
    oid = "021949"                # optional string of 1-6 hex digits; generated from the name
                                  # (type byte + 4 hex digits, deterministic) if absent
    description = "..."           # optional
    email = "ops@example.net"     # optional
    ip = "192.168.0.1"            # host: required; user: optional (unbound until given one)
    ips = ["10.0.0.1", "2001:db8::1"]   # cluster: one or more
    net = "192.168.0.0/24"        # net: one prefix or a list; IPv4 and IPv6
    parents = ["LAN"]             # optional group names; several allowed, no cycles
    acct-policy = ["ip", "!%icmp"]  # "!" inverts, "%" stops the list after a match
    nodefault = false             # drop the default acct-policies for this unit
    sys-policy = ["sys-deny-money"]  # NeTAMS system policies: sys-deny, sys-allow,
                                  # sys-{deny|allow}-{quota|login|money|mac|auth|block}; the
                                  # start state, `acctctl unit NAME sys-...` changes it at run
                                  # time; sys-{deny|allow}-OID: traffic with unit OID drops /
                                  # passes whatever else says (config only; groups: members)
    ap-nodefault = false          # same, for acct-policies only (NeTAMS keeps both words)
    fp-nodefault = false          # drop the default fw-policies only
    fw-policy = ["web", "!p2p"]   # NeTAMS >= 3.3: traffic of these policies passes, the rest
                                  # is dropped ("!" passes what the policy does not match)
    bw = "10M in 2M out"          # rate limit in bit/s (K, M, G = 1000s); "10M" = both ways
    no-local-pass = false         # `restrict all` applies to the unit, not `restrict local`
    auto-units = 1                # net: first traffic of a new address creates a unit (rule 1)
    mac = "02:00:00:00:00:07"     # host/user: the MAC its address must come from
    ds-list = [0, 1]              # data sources it counts from: 0 the kernel (default),
                                  # N a [[collector]] id (README: accounting a router's NetFlow)

    [[policy]]
    name = "web"                  # required, unique
    oid = "147C83"                # optional, as for units
    target = "proto tcp port s80:82 s8080"      # a NeTAMS target string, or a table:
    # target = { proto = "tcp", port = ["s80:82", "s8080"] }
    bw = "1M"                     # as a fw-policy: the rate of the traffic it passes, per unit
    hidden = false                # left out of `send report` mails (NeTAMS: of the HTML pages)

    [[user]]                      # who may use the control socket, and how much
    name = "noc"                  # required, unique
    level = "viewer"              # required: viewer (reads) | operator (also changes units,
                                  # quotas, sessions; flushes) | admin (everything)
    uid = 1001                    # the peer's uid, as the kernel reports it (SO_PEERCRED),
    # unix-user = "noc"           # or a local user name, or
    # unix-group = "netops"       # a local group: every member (primary or supplementary)
    # password = "$argon2id$..."  # for the TCP listener (`acctctl hash-password` makes one)
    # uid 0 (root) is always admin; any other peer that matches no user is refused.

    [[collector]]                 # NeTAMS data-source netflow|raw: a router's flows
    id = 1                        # required, unique: the number units name in ds-list
    type = "netflow"              # netflow (NetFlow v5/v9, IPFIX, sFlow v5) | raw (rawdata)
    listen = "0.0.0.0:20001"      # [ADDRESS:]PORT, UDP, in the hooked interfaces' namespace
    source = ["192.0.2.1"]        # netflow: the exporters accepted; others counted, dropped
    clock = "remote"              # flow times from the exporter | local: arrival
    templates = 256               # templates kept per exporter and observation domain

    [flowlog]                     # net-acct's flow log, one nacctd line per flow and drain
    path = "/var/log/acctd/flows" # SIGTSTP pauses it, SIGCONT resumes; acctctl rotate flowlog
    fields = ["time", "proto", "src", "sport", "dst", "dport", "bytes", "device", "user"]
    format = "nacctd"             # or "json": one JSON object per line

    [monitor]                     # NeTAMS service monitor: the flows of these units, with
    units = ["alice", "02A1F3"]   # their peers (acctctl monitor unit add|remove at run time)
    to = ["storage", "file"]      # storage (acctctl monitor query) | file | netflow (export)
    file = "/var/log/acctd/monitor"  # format = "nacctd" | "json"; retention = "30d" (storage)

    [[export]]                    # NetFlow/IPFIX records of the drained flows, one per exporter
    format = "ipfix"              # v5, v9 or ipfix
    destination = "192.0.2.10:4739"   # host:port, or a list; [v6 address]:port
    # transport = "udp"           # or "tcp" (IPFIX, one destination)
    # active-timeout = 60         # a record per active timeout while a flow moves,
    # inactive-timeout = 15       # the last one after it has been idle this long
    # template-refresh = 300      # templates resent every T seconds (UDP) ...
    # template-packets = 100      # ... and every N messages
    # udp-rate = 10000            # datagrams/s to each collector (0: a drain's all at once)
    # domain-id = 1               # the observation domain (v5: engine type and id)
    # units = "all"               # or "monitored", or ["unit", "group", ...]

    [dynamicip]                   # net-acct's dynamicip: a file named by an address holding
    dir = "/run/acctd/dynamicip"  # a user name binds that user unit to the address
    exclude-name-lookup = ["10.0.0.0/8"]   # addresses never looked up there
    dynamicnet = ["193.97.238.0/24"]       # if given, only addresses in these are looked up

    [fticks]                      # F-TICKS lines for every login success and failure
    federation = "eduroam"        # also version, visinst, viscountry, key-file (HMAC-SHA-256
    file = "/var/log/acctd/fticks"  # of user names and CSIs), raw-values, syslog, syslog-*,
    reporting = "full"            # or "basic"; also ap, rp, mac = "vendor-key-hashed" (...)

    [radius]                      # RADIUS accounting: Start/Interim/Stop per session
    servers = ["127.0.0.1:1813"]  # tried in order; also nas-identifier, interim-interval
    secret-file = "radius.secret" # mode 0600; timeout, retries, static-units
    nas-ip = "192.0.2.1"

    [openvpn]                     # sessions from an OpenVPN server's management interface
    management = "127.0.0.1:7505" # or "unix:/run/openvpn/server.sock"; also password-file,
    interim-interval = 60         # 0: none; status-interval, [openvpn.intervals] per common name

    [coa]                         # RFC 5176 Disconnect/CoA receiver (disconnect = block)
    listen = "127.0.0.1:3799"     # event-window = 300, require-event-timestamp = true
    clients = [{ address = "10.0.0.5", secret-file = "coa.secret" }]

    [server]                      # optional TCP listener (NeTAMS service server); off if absent
    listen = "127.0.0.1:20001"    # host:port; loopback unless you mean otherwise
    login = "localhost"           # localhost: loopback peers only | any
    max-conn = 6
    tls-cert = "acctd.pem"        # TLS is not optional; paths relative to this file
    tls-key = "acctd.key"

    [alerter]                     # e-mail (NeTAMS service alerter); off if absent
    smtp-server = "127.0.0.1"     # smtp-port = 25, starttls = false, smtp-user,
    from = "acctd@isp.example"    # smtp-password-file, tls-ca, timeout
    admins = ["noc@isp.example"]  # every notice also goes to the unit's email
    language = "en"               # en | ru

    [quota]                       # NeTAMS service quota: policy, block-policy,
    soft-threshold = 80           # soft-threshold, delay, notify = { soft = [...], ... }
    [login]                       # NeTAMS service login: default-inact, default-abs,
    default-inact = 0             # min/max-inact, min/max-abs, min-passwd-length, relogin,
                                  # set-user-ip, delay
    [billing]                     # NeTAMS service billing: currency, decimals, time-zone,
                                  # delay, default-credit-limit, outage-credit (with
                                  # [central]: "5"); [billing.subplan.N] and
                                  # [billing.plan.N] (acctd/services/billing/tariff.py)

    [invoicing]                   # postpaid: due-days (14), block-after-days (7);
                                  # low-balance (a notice under it)

    [aclserver]                   # NeTAMS acl-server: acctd's blocks pushed to routers
    delay = 300                   # resync period; never-block = [...], expiry, debug
    [[aclserver.backend]]         # name, type = bgp | nft | routeros, direction, hostname ...
    name = "edge1"                # (acctd/services/aclserver/service.py lists the keys)

    [central]                     # several gateways, one PostgreSQL (README "Several gateways")
    dsn = "host=db1,db2 dbname=acct target_session_attrs=read-write"
    gateway = "bng-1"             # unique per gateway; retention-months = 13, retry = 2,
                                  # keep-shipped = 900 (s), outage-allowance = 104857600 (B)
    [html]                        # static HTML reports (NeTAMS service html, acctctl html)
    path = "/var/www/traffic"     # url, htaccess = false, htpasswd (its AuthUserFile),
    display-top = 10              # client-pages = all | groups | none | ["group", ...],
                                  # account-pages = none | all, display-health = true

Targets (all keywords given must match; see acctd/model/policies.py):

    proto NAME|N ...        "ip" is any IP traffic
    port [s|d|b]N[:M|-M]    TCP/UDP only; s = source port, d = destination, b/none = either;
                            at most 10 items
    vlan N ...              outer or inner tag
    ifindex [s|d|b]N[:M] .. the flow's interface: s = it arrived there (input), d = it left
                            there (output), b/none = either; fw-policies: N only
    as [s|d|b]N[:M] ...     origin AS of the source / destination / either address, from
                            [processor] as-table (0: not in the table); not in fw-policies
    addr A|P ...            either side of the flow
    file PATH               the remote side is in a NeTAMS prefix file (relative to this file)
    units oid OID ...       the remote side is inside that unit (a group: any member)
    policy-or [!]P ...      any of the policies matches ("!" inverts one)
    policy-and [!]P ...     all of them match
    time 9-18 | 00:40-21:30 day Mon-Fri | Sun
                            checked once per drain (lookup-delay), not per packet
    tos N                   needs a TOS byte in the flow key (not in ABI v1): rejected for now
    ds N1 N2 ...            the data source a flow came from: 0 the kernel, N a [[collector]] id

Each table is declared once, with its keys, checks and defaults, by the
module that uses it (acctd/config/schema.py); this module puts them
together. `load()` returns a Config whose `units` (UnitSet), `policies` (PolicySet)
and `plan` (AcctPlan, every unit's resolved acct-policy list) are ready for
the drain loop.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import zoneinfo
from collections.abc import Mapping

from acctd.aaa.coa import CoaSettings
from acctd.aaa.fticks import FticksSettings
from acctd.daemon.log import LogSettings
from acctd.aaa.openvpn import OpenVpnSettings
from acctd.aaa.radius_accounting import RadiusSettings
from acctd.aaa.captive import CaptiveSettings
from acctd.aaa.radius_auth import AuthSettings
from acctd.config.schema import (Invalid, Table, boolean, choice, duration,
                                 each, file_path, free_text, integer, number, parsed, setting,
                                 string, strings, time_zone, top_key)
from acctd.control.access import User
from acctd.control.server import ServerSettings
from acctd.errors import ConfigError
from acctd.kernel import abi
from acctd.model import asn, enforcement, sys_policy
from acctd.model.addresses import parse_addr, parse_prefix
from acctd.model.policies import AcctPlan, PolicySet, PolicySpec
from acctd.model.units import UNIT_TYPES, ModelError, Unit, UnitSet
from acctd.services import auto_units
from acctd.services.aclserver.service import AclServerSettings
from acctd.services.alerter import MailSettings
from acctd.services.billing.tariff import BillingSettings
from acctd.services.billing.invoicing import InvoicingSettings
from acctd.services.dynamicip import DynamicIpSettings
from acctd.services.export import ExportSettings
from acctd.services.collector.service import CollectorSettings
from acctd.services.central import CentralSettings
from acctd.services.flowlog import FlowLogSettings
from acctd.web.static_site import HtmlSettings
from acctd.services.monitor import MonitorSettings
from acctd.services.login import LoginSettings
from acctd.services.quota import QuotaSettings
from acctd.services.scheduler import SchedulerSettings
from acctd.services.sessions import SessionSettings

ROLES = ("lan", "wan")
HOOKS = abi.HOOKS
RESTRICT = ("drop", "pass")
DEFAULT_DB = "/var/lib/acctd/acctd.duckdb"
# Upper bounds of the time settings: beyond them a value is a typo, not a choice.
MAX_LOOKUP_DELAY = 3600            # every hour's rollup gets a drain of its own
MAX_FLOW_LIFETIME = 86400
MAX_RAW_RETENTION = 3650 * 86400
MAX_SCRIPT_TIMEOUT = 3600


# --- the core tables ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Interface(Table):
    name: str = setting(check=string("an interface name"))
    role: str = setting(check=choice(*ROLES))
    hook: str = setting("xdp-native", check=choice(*HOOKS))

    @property
    def role_id(self) -> abi.Role:
        """The role as the datapath's acct_iface_cfg stores it."""
        return abi.Role.LAN if self.role == "lan" else abi.Role.WAN


def _restrict(v, ctx) -> tuple[str, str]:
    if not isinstance(v, Mapping) or set(v) - {"all", "local"}:
        raise Invalid("expected a table with keys all and local, e.g. "
                      "{ all = \"drop\", local = \"pass\" }")
    pick = choice(*RESTRICT)
    return pick(v.get("all", "pass"), ctx), pick(v.get("local", "pass"), ctx)


def _program(v, ctx) -> str:
    from acctd.services.access_script import validate
    path = free_text()(v, ctx)
    err = validate(path) if path else None
    if err:
        raise Invalid(err)
    return path


def _auto_assign(v, ctx) -> tuple:
    pools = each(parsed(auto_units.parse_auto_assign), "pools")(
        list(strings("address ranges")(v, ctx)), ctx)
    try:
        auto_units.AutoAssign(pools)
    except ValueError as e:
        raise Invalid(str(e)) from None
    return pools


def _auto_units(v, ctx) -> tuple:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise Invalid(f"expected a list of auto-units rules, got {v!r}")
    rules = each(parsed(auto_units.parse_auto_units), "rules")(v, ctx)
    if len({r.number for r in rules}) != len(rules):
        raise Invalid("two auto-units rules have the same number")
    return rules


@dataclasses.dataclass(frozen=True)
class Processor(Table):
    lookup_delay: int = setting(30, check=integer(1, MAX_LOOKUP_DELAY, "seconds"))
    flow_lifetime: int = setting(300, check=integer(1, MAX_FLOW_LIFETIME, "seconds"))
    time_zone: str = setting("UTC", check=time_zone)
    default_acct_policy: tuple[str, ...] = setting((), check=strings("policy names"))
    restrict: tuple[str, str] = setting(("pass", "pass"), check=_restrict)   # all, local
    default_fw_policy: tuple[str, ...] = setting((), check=strings("policy names"))
    bw_burst: float = setting(enforcement.DEFAULT_BURST_S,
                              check=number(0, 10, "seconds", open_lo=True))
    access_script: str = setting("", check=_program)
    access_script_timeout: float = setting(10.0, check=number(0, MAX_SCRIPT_TIMEOUT, "seconds",
                                                              open_lo=True))
    # ((first, last), ...) 16-byte addresses, in order
    auto_assign: tuple[tuple[bytes, bytes], ...] = setting((), check=_auto_assign)
    auto_units: tuple[auto_units.AutoUnits, ...] = setting((), check=_auto_units)
    mac_control: str = setting("off", check=choice("off", "block", "alert", "block-alert"))
    as_table: str = setting("", check=file_path("a pfx2as file path"))  # for `as` targets

    def finish(self, ctx) -> "Processor":
        if self.flow_lifetime < self.lookup_delay:
            if "flow-lifetime" not in ctx.given:  # the key written is the one at fault
                raise Invalid(f"expected at most flow-lifetime ({self.flow_lifetime} s by "
                              f"default: raise it too), got {self.lookup_delay}", "lookup-delay")
            raise Invalid(f"expected at least lookup-delay ({self.lookup_delay} s), got "
                          f"{self.flow_lifetime}", "flow-lifetime")
        return self

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)

    @property
    def restrict_all(self) -> str:
        return self.restrict[0]

    @property
    def restrict_local(self) -> str:
        return self.restrict[1]


@dataclasses.dataclass(frozen=True)
class StorageSettings(Table):
    path: str = setting(DEFAULT_DB, check=string("a file path"))
    raw_retention: int = setting(30 * 86400, check=duration(MAX_RAW_RETENTION))   # seconds


def _oid_string(example: str):
    def check(v, ctx) -> str:
        # a bare 021949 is not TOML and 21949 would read as decimal: strings only
        if not isinstance(v, str):
            raise Invalid(f"expected an oid string like \"{example}\", got {v!r}")
        return v
    return check


def _address(v, ctx) -> bytes:
    try:
        return parse_addr(v if isinstance(v, str) else "")
    except ValueError:
        raise Invalid(f"expected an IPv4 or IPv6 address, got {v!r}") from None


def _addresses(v, ctx) -> tuple[bytes, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise Invalid("expected a list of addresses")
    return tuple(_address(x, ctx) for x in v)


def _one_address(v, ctx) -> tuple[bytes, ...]:
    if not isinstance(v, str):
        raise Invalid("expected a list of addresses")
    return (_address(v, ctx),)


def _prefix(v, ctx) -> tuple[bytes, int]:
    try:
        return parse_prefix(string("a network prefix")(v, ctx))
    except ValueError as e:
        raise Invalid(f"expected a network prefix like 192.168.0.0/24 or 2001:db8::/32: {e}"
                      ) from None


def _sys_policy(v, ctx) -> tuple[str, ...]:
    words = strings("system policies")(v, ctx)
    sys_policy.from_words(words)  # ValueError: an unknown word
    return words


@dataclasses.dataclass(frozen=True)
class UnitTable(Table):
    """A [[unit]] as written; `unit()` is the model's Unit."""
    type: str = setting(check=choice(*UNIT_TYPES))
    name: str = setting(check=string("a unit name"))
    oid: str | None = setting(None, check=_oid_string("021949"))
    description: str = setting("", check=free_text())
    email: str = setting("", check=string("an e-mail address"))
    ip: tuple[bytes, ...] = setting((), check=_one_address)
    ips: tuple[bytes, ...] = setting((), check=_addresses)
    net: tuple[tuple[bytes, int], ...] = setting((), check=each(_prefix, "prefixes"))
    parents: tuple[str, ...] = setting((), check=strings("group names"))
    acct_policy: tuple[str, ...] = setting((), check=strings("policy names"))
    nodefault: bool = setting(False, check=boolean())
    ap_nodefault: bool = setting(False, check=boolean())
    fp_nodefault: bool = setting(False, check=boolean())
    sys_policy: tuple[str, ...] = setting((), check=_sys_policy)
    fw_policy: tuple[str, ...] = setting((), check=strings("policy names"))
    bw: tuple[int | None, int | None] | None = setting(None,
                                                       check=parsed(enforcement.parse_bw))
    no_local_pass: bool = setting(False, check=boolean())
    auto_units: int | None = setting(None, check=integer(0, what="an auto-units rule number"))
    mac: str = setting("", check=lambda v, ctx: _mac(v, ctx))
    ds_list: tuple[int, ...] = setting((0,), check=each(integer(0, 65535, "a data-source number"),
                                                         "data-source numbers"))

    def unit(self) -> Unit:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(Unit)
                  if hasattr(self, f.name)}
        return Unit(**(fields | {"addrs": self.ip + self.ips, "nets": self.net}))


def _check_ds_list(u: Unit, i: int, collectors) -> None:
    """ds-list names the kernel (0) or configured [[collector]] ids."""
    known = {0} | {c.id for c in collectors}
    if not u.ds_list:
        raise ModelError("ds-list names at least one data source (0: the kernel)", "unit", i,
                         "ds-list")
    for n in u.ds_list:
        if n not in known:
            raise ModelError(f"data source {n} is not a [[collector]] id (known: "
                             f"{', '.join(map(str, sorted(known)))})", "unit", i, "ds-list")


def _mac(v, ctx) -> str:
    from acctd.services.mac_control import normalize_mac
    try:
        return normalize_mac(string("a MAC address")(v, ctx))
    except ValueError as e:
        raise Invalid(str(e)) from None


def _target(v, ctx) -> str | Mapping:
    if not isinstance(v, (str, Mapping)):
        raise Invalid("expected a target string or table")
    return v


@dataclasses.dataclass(frozen=True)
class PolicyTable(Table):
    """A [[policy]] as written; the target is compiled by PolicySet."""
    name: str = setting(check=string("a policy name"))
    target: str | Mapping = setting(check=_target, example='"proto tcp port 80"')
    oid: str | None = setting(None, check=_oid_string("146633"))
    bw: tuple[int | None, int | None] | None = setting(None,
                                                       check=parsed(enforcement.parse_bw))
    hidden: bool = setting(False, check=boolean())

    def spec(self) -> PolicySpec:
        return PolicySpec(self.name, self.target, self.oid, self.bw, self.hidden)


# --- the whole configuration --------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Config:
    path: str
    interfaces: tuple[Interface, ...]
    processor: Processor
    storage: StorageSettings
    units: UnitSet
    policies: PolicySet
    plan: AcctPlan
    users: tuple[User, ...] = ()
    server: ServerSettings | None = None
    quota: QuotaSettings = dataclasses.field(default_factory=QuotaSettings)
    login: LoginSettings = dataclasses.field(default_factory=LoginSettings)
    billing: BillingSettings = dataclasses.field(default_factory=BillingSettings)
    alerter: MailSettings | None = None
    session: SessionSettings = dataclasses.field(default_factory=SessionSettings)
    flowlog: FlowLogSettings | None = None
    monitor: MonitorSettings | None = None
    dynamicip: DynamicIpSettings | None = None
    fticks: FticksSettings | None = None
    radius: RadiusSettings | None = None
    openvpn: OpenVpnSettings | None = None
    coa: CoaSettings | None = None
    radius_auth: AuthSettings | None = None
    captive: CaptiveSettings | None = None
    log: LogSettings | None = None
    scheduler: SchedulerSettings = dataclasses.field(default_factory=SchedulerSettings)
    export: tuple[ExportSettings, ...] = ()
    collector: tuple[CollectorSettings, ...] = ()
    aclserver: AclServerSettings | None = None
    invoicing: InvoicingSettings | None = None   # postpaid terms, notices
    central: CentralSettings | None = None
    html: HtmlSettings | None = None             # static HTML reports (acctctl html)


# Every top-level section: [[array]] tables or one [table], and what reads it.
SECTIONS: dict[str, tuple[type, type[Table] | None]] = {
    "interface": (list, Interface), "processor": (dict, Processor),
    "storage": (dict, StorageSettings), "unit": (list, UnitTable), "policy": (list, PolicyTable),
    "user": (list, User), "server": (dict, ServerSettings), "alerter": (dict, MailSettings),
    "quota": (dict, QuotaSettings), "login": (dict, LoginSettings), "billing": (dict, BillingSettings),
    "session": (dict, SessionSettings), "flowlog": (dict, FlowLogSettings),
    "dynamicip": (dict, DynamicIpSettings), "fticks": (dict, FticksSettings),
    "radius": (dict, RadiusSettings), "openvpn": (dict, OpenVpnSettings),
    "coa": (dict, CoaSettings), "monitor": (dict, MonitorSettings),
    "log": (dict, LogSettings), "scheduler": (dict, SchedulerSettings),
    "export": (list, ExportSettings),
    "collector": (list, CollectorSettings),
    "aclserver": (dict, AclServerSettings),
    "invoicing": (dict, InvoicingSettings),
    "radius-auth": (dict, AuthSettings), "captive": (dict, CaptiveSettings),
    "central": (dict, CentralSettings),
    "html": (dict, HtmlSettings),
}


# --- where things are in the text --------------------------------------------------
# tomllib reports no positions for values, so the loader keeps a map of
# (table, array index, key) -> line built by scanning the text.

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+|\"[^\"]*\")\s*(=|\.)")
_PART = r"(?:[A-Za-z0-9_-]+|\"[^\"]*\")"
_DOTTED = re.compile(rf"^\s*({_PART}(?:\s*\.\s*{_PART})*)\s*=")


class _Lines:
    """Keys are the schema's (nested ones as "clients[1].address": the
    second [[coa.clients]] table's address)."""

    def __init__(self, text: str):
        self.at: dict[tuple, int] = {}
        counts: dict[str, int] = {}
        table: tuple = ("", None)
        prefix = ""
        for n, line in enumerate(text.splitlines(), 1):
            h = _HEADER.match(line)
            if h and not _KEY.match(line):
                name = h.group(2).replace('"', "").replace("'", "").strip()
                head, _, sub = name.partition(".")
                if h.group(1) == "[[":
                    counts[name] = counts.get(name, 0) + 1
                idx = counts[head] - 1 if head in counts else None
                table, prefix = (head, idx), sub
                self.at.setdefault((head, idx, sub or None), n)
                if sub and h.group(1) == "[[":  # an array of tables inside a table
                    prefix = f"{sub}[{counts[name] - 1}]"
                    self.at.setdefault((head, idx, prefix), n)
                continue
            k = _DOTTED.match(line)
            if k:
                parts = [p.strip().strip('"') for p in k.group(1).split(".")]
                if table == ("", None) and len(parts) > 1:
                    # processor.lookup-delay = 5 at the top level
                    self.at.setdefault((parts[0], None, parts[1]), n)
                    continue
                self.at.setdefault((*table, prefix.partition("[")[0] or parts[0]), n)
                if prefix:
                    self.at.setdefault((*table, f"{prefix}.{parts[0]}"), n)

    def find(self, table: str, index: int | None, key: str | None) -> int | None:
        """The key's line, else the nearest enclosing one's (its table's)."""
        probes = []
        while key:
            probes.append(key)
            cut = max(key.rfind("."), key.rfind("["))
            key = key[:cut] if cut > 0 else None
        for k in (*probes, None):
            if (table, index, k) in self.at:
                return self.at[(table, index, k)]
        return None


def _where(table: str, index: int | None, key: str | None, doc: Mapping | None) -> str:
    if index is None:
        s = f"[{table}]"
    else:
        s = f"[[{table}]] #{index + 1}"
        name = doc.get("name") if isinstance(doc, Mapping) else None
        if isinstance(name, str):
            s += f" {name!r}"
    return f"{s} key {key!r}" if key else s


# --- the loader --------------------------------------------------------------------

class _Loader:
    def __init__(self, text: str, path: str):
        self.path = path
        self.lines = _Lines(text)
        self.base_dir = os.path.dirname(os.path.abspath(path)) if path[:1] != "<" else "."
        try:
            self.doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            m = re.search(r"\(at line (\d+), column \d+\)", str(e))
            line = int(m.group(1)) if m else None
            msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
            raise ConfigError(f"not valid TOML: {msg}", path, line) from None

    def fail(self, msg: str, table: str, index: int | None = None, key: str | None = None):
        doc = self.doc.get(table)
        item = doc[index] if index is not None and isinstance(doc, list) and index < len(doc) \
            else doc
        line = self.lines.find(table, index, key)
        raise ConfigError(f"{_where(table, index, key, item)}: {msg}", self.path, line,
                          top_key(key))

    def read(self, cls: type[Table], table: str, index: int | None = None, doc=None):
        """One table through its schema; its mistakes at their key's line."""
        if doc is None:
            doc = self.doc[table] if index is None else self.doc[table][index]
        try:
            return cls.from_mapping(doc, self.base_dir)
        except Invalid as e:
            self.fail(e.reason, table, index, e.key)

    def optional(self, cls: type[Table], table: str):
        return self.read(cls, table) if table in self.doc else None

    def array(self, cls: type[Table], table: str, unique: str | None = None,
              what: str = "") -> tuple:
        out, seen = [], set()
        for i in range(len(self.doc.get(table, []))):
            item = self.read(cls, table, i)
            if unique is not None:
                name = getattr(item, unique)
                if name in seen:
                    self.fail(f"{table} {name!r} is {what}", table, i, unique)
                seen.add(name)
            out.append(item)
        return tuple(out)

    def load(self) -> Config:
        for key, val in self.doc.items():
            if key not in SECTIONS:
                self.fail(f"unknown section; expected one of {', '.join(SECTIONS)}", key)
            want = SECTIONS[key][0]
            tables = isinstance(val, list) and all(isinstance(x, dict) for x in val)
            if want is list and not tables:
                self.fail(f"expected [[{key}]] tables", key)
            if want is dict and not isinstance(val, dict):
                self.fail(f"expected a [{key}] table", key)
        interfaces = self.array(Interface, "interface", "name", "listed twice")
        processor = self.read(Processor, "processor", doc=self.doc.get("processor", {}))
        storage = self.read(StorageSettings, "storage", doc=self.doc.get("storage", {}))
        unit_list = [t.unit() for t in self.array(UnitTable, "unit")]
        specs = [t.spec() for t in self.array(PolicyTable, "policy")]
        as_table = self.as_table(processor)
        collectors = self.array(CollectorSettings, "collector", "id", "defined twice")
        try:
            policies = PolicySet(specs, self.base_dir, as_table=as_table)
            units = UnitSet(unit_list, reserved_oids=[p.oid for p in policies])
            policies.check_units(units)
            plan = AcctPlan(units, policies, processor.default_acct_policy)
            enforcement.check(units, policies, processor)
            rules = {r.number for r in processor.auto_units}
            for i, u in enumerate(units):
                if u.auto_units is not None and (u.type != "net" or u.auto_units not in rules):
                    raise ModelError("auto-units belongs on a net unit and names a rule of "
                                     "[processor] auto-units", "unit", i, "auto-units")
                if u.mac and u.type not in ("host", "user"):
                    raise ModelError("only host and user units have a MAC", "unit", i, "mac")
                _check_ds_list(u, i, collectors)
        except ModelError as e:
            self.fail(str(e), e.table or "unit", e.index, e.key)
        quota = self.read(QuotaSettings, "quota", doc=self.doc.get("quota", {}))
        if quota.block_policy:  # the kernel drops its traffic: it must be a policy
            try:
                policies.find(quota.block_policy.lstrip("!"))
            except KeyError:
                self.fail(f"no policy {quota.block_policy!r}", "quota", None, "block-policy")
        billing = self.read(BillingSettings, "billing", doc=self.doc.get("billing", {}))
        for n, sp in billing.subplan.items():
            if sp.policy not in policies.index:
                self.fail(f"no policy {sp.policy!r} (expected one of the [[policy]] names)",
                          "billing", None, f"subplan.{n}.policy")
        return Config(
            self.path, interfaces, processor, storage, units, policies, plan,
            users=self.array(User, "user", "name", "defined twice"),
            server=self.optional(ServerSettings, "server"),
            quota=quota,
            login=self.read(LoginSettings, "login", doc=self.doc.get("login", {})),
            billing=billing,
            alerter=self.optional(MailSettings, "alerter"),
            session=self.read(SessionSettings, "session", doc=self.doc.get("session", {})),
            flowlog=self.optional(FlowLogSettings, "flowlog"),
            monitor=self.monitor(units),
            dynamicip=self.optional(DynamicIpSettings, "dynamicip"),
            fticks=self.optional(FticksSettings, "fticks"),
            radius=self.optional(RadiusSettings, "radius"),
            openvpn=self.optional(OpenVpnSettings, "openvpn"),
            coa=self.coa(), collector=collectors,
            log=self.optional(LogSettings, "log"),
            central=self.optional(CentralSettings, "central"),
            scheduler=self.read(SchedulerSettings, "scheduler",
                                doc=self.doc.get("scheduler", {})),
            export=self.export(units),
            aclserver=self.optional(AclServerSettings, "aclserver"),
            invoicing=self.optional(InvoicingSettings, "invoicing"),
            radius_auth=self.radius_auth(),
            captive=self.optional(CaptiveSettings, "captive"),
            html=self.html(units))

    def monitor(self, units: UnitSet) -> MonitorSettings | None:
        """[monitor], its units named by the config's units."""
        m = self.optional(MonitorSettings, "monitor")
        for i, key in enumerate(m.units if m else ()):
            try:
                units.find(key)
            except KeyError:
                self.fail(f"no unit {key!r} (a name or an oid)", "monitor", None,
                          f"units[{i}]")
        return m

    def html(self, units: UnitSet) -> HtmlSettings | None:
        """[html]; the groups client-pages lists must be groups."""
        h = self.optional(HtmlSettings, "html")
        if h is not None and isinstance(h.client_pages, tuple):
            for i, name in enumerate(h.client_pages):
                at = units.index.get(name)
                if at is None or units.units[at].type != "group":
                    self.fail(f"no group named {name!r}", "html", None, f"client-pages[{i}]")
        return h

    def export(self, units: UnitSet) -> tuple[ExportSettings, ...]:
        """[[export]] tables; the units they name must exist."""
        out = self.array(ExportSettings, "export")
        for i, e in enumerate(out):
            if isinstance(e.units, tuple):
                unknown = [n for n in e.units if n not in units.index]
                if unknown:
                    self.fail(f"no unit named {unknown[0]!r}", "export", i, "units")
        return out

    def as_table(self, processor: Processor) -> asn.AsTable | None:
        """[processor] as-table, read anew at every load (so at every reload)."""
        if not processor.as_table:
            return None
        try:
            return asn.read_pfx2as(processor.as_table)
        except asn.AsTableError as e:
            if e.line is None:
                self.fail(e.reason, "processor", None, "as-table")
            raise ConfigError(f"{e.reason} (the AS table of [processor] as-table)", e.path,
                              e.line) from None

    def radius_auth(self) -> AuthSettings | None:
        """[radius-auth], its Acct-Interim-Interval [radius]'s unless given here."""
        d = self.doc.get("radius-auth")
        if d is None:
            return None
        r = self.doc.get("radius") or {}
        merged = {**{k: r[k] for k in ("interim-interval",) if k in r}, **d}
        return self.read(AuthSettings, "radius-auth", doc=merged)

    def coa(self) -> CoaSettings | None:
        """[coa], with our NAS identity for its 403 check: [radius]'s unless
        given here."""
        d = self.doc.get("coa")
        if d is None:
            return None
        r = self.doc.get("radius") or {}
        merged = {**{k: r[k] for k in ("nas-ip", "nas-identifier") if k in r}, **d}
        return self.read(CoaSettings, "coa", doc=merged)


def error_at(path: str, msg: str, table: str, index: int | None = None,
             key: str | None = None) -> ConfigError:
    """A mistake found after loading (an interface the namespace lacks), at
    its line in the file as it is now."""
    try:
        with open(path, encoding="utf-8") as f:
            loader = _Loader(f.read(), path)
        loader.fail(msg, table, index, key)
    except (OSError, UnicodeDecodeError):
        return ConfigError(msg, path)
    except ConfigError as e:
        return e
    raise AssertionError("fail() raises")


def summary(cfg: Config) -> str:
    """What `acctd --check` and `acctctl config check` say of a file the
    daemon would load."""
    n = {"interface": len(cfg.interfaces), "unit": len(cfg.units),
         "policy": len(cfg.policies), "user": len(cfg.users)}
    plural = {"policy": "policies"}
    return f"{cfg.path}: ok, " + ", ".join(
        f"{v} {k if v == 1 else plural.get(k, k + 's')}" for k, v in n.items())


def loads(text: str, path: str = "<string>") -> Config:
    """Load configuration text; `path` names it in errors and anchors relative file targets."""
    return _Loader(text, path).load()


def load(path: str | os.PathLike) -> Config:
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", path) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text: {e.reason}", path) from None
    return loads(text, path)
