"""Load acctd's TOML configuration into frozen dataclasses and the compiled unit/policy model.

Every mistake raises ConfigError naming file, line and key and saying what
was expected. Unknown keys are mistakes too: a typo must not silently count
nothing. The schema (all keys kebab-case, as in NeTAMS):

    [[interface]]                 # one per interface the datapath attaches to
    name = "eth1"                 # required
    role = "lan"                  # required: lan (faces subscribers, accounts) | wan
    hook = "xdp-native"           # xdp-native (default) | xdp-generic | tc

    [processor]
    lookup-delay = 30             # seconds between drains and rollups; default 30, min 1
    flow-lifetime = 300           # seconds a raw flow row covers; default 300, >= lookup-delay
    time-zone = "UTC"             # IANA name; hour/day/week/month rollups use local time
    default-acct-policy = ["ip"]  # prepended to every unit's list unless nodefault/ap-nodefault
    restrict = { all = "pass", local = "pass" }   # traffic of units without fw-policy:
                                  # local = units with policies, all = addresses of no unit
                                  # (and no-local-pass units). acctd defaults to pass/pass,
                                  # NeTAMS to all drop local pass (see enforce.py)
    default-fw-policy = ["web"]   # prepended to every unit's fw-policy list unless nodefault
    bw-burst = 0.3                # seconds of traffic a rate limit lets through at once
                                  # (at least 64 KiB): the token bucket's depth
    access-script = "/usr/local/sbin/acct-access"  # run as SCRIPT deny|allow OID ADDR REASONS
    access-script-timeout = 10    # seconds before the script is killed
    auto-assign = ["10.0.9.10 10.0.9.250"]       # pools for `acctctl unit add ... ip auto`
    auto-units = ["1 type host naming prefix1 pc group auto"]  # rules for nets' auto-units
    mac-control = "off"           # off | block | alert | block-alert: configured unit MACs
                                  # against the kernel's neighbour table, after each drain

    [storage]
    path = "/var/lib/acctd/acctd.duckdb"
    raw-retention = "30d"         # how long raw interval rows are kept:
                                  # seconds, or "90m" / "12h" / "30d" / "2w"

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
                                  # sys-{deny|allow}-{quota|login|money|mac}; the start state,
                                  # `acctctl unit NAME sys-...` changes it at run time
    ap-nodefault = false          # same, for acct-policies only (NeTAMS keeps both words)
    fw-policy = ["web", "!p2p"]   # NeTAMS >= 3.3: traffic of these policies passes, the rest
                                  # is dropped ("!" passes what the policy does not match)
    bw = "10M in 2M out"          # rate limit in bit/s (K, M, G = 1000s); "10M" = both ways
    no-local-pass = false         # `restrict all` applies to the unit, not `restrict local`
    auto-units = 1                # net: first traffic of a new address creates a unit (rule 1)
    mac = "02:00:00:00:00:07"     # host/user: the MAC its address must come from

    [[policy]]
    name = "web"                  # required, unique
    oid = "147C83"                # optional, as for units
    target = "proto tcp port s80:82 s8080"      # a NeTAMS target string, or a table:
    # target = { proto = "tcp", port = ["s80:82", "s8080"] }
    bw = "1M"                     # as a fw-policy: the rate of the traffic it passes, per unit

    [[user]]                      # who may use the control socket, and how much
    name = "noc"                  # required, unique
    level = "viewer"              # required: viewer (reads) | operator (also changes units,
                                  # quotas, sessions; flushes) | admin (everything)
    uid = 1001                    # the peer's uid, as the kernel reports it (SO_PEERCRED),
    # unix-user = "noc"           # or a local user name, or
    # unix-group = "netops"       # a local group: every member (primary or supplementary)
    # password = "$argon2id$..."  # for the TCP listener (`acctctl hash-password` makes one)
    # uid 0 (root) is always admin; any other peer that matches no user is refused.

    [flowlog]                     # net-acct's flow log, one nacctd line per flow and drain
    path = "/var/log/acctd/flows" # SIGTSTP pauses it, SIGCONT resumes; acctctl rotate flowlog
    fields = ["time", "proto", "src", "sport", "dst", "dport", "bytes", "device", "user"]

    [dynamicip]                   # net-acct's dynamicip: a file named by an address holding
    dir = "/run/acctd/dynamicip"  # a user name binds that user unit to the address
    exclude-name-lookup = ["10.0.0.0/8"]   # addresses never looked up there

    [fticks]                      # F-TICKS lines for every login success and failure
    federation = "eduroam"        # also version, visinst, viscountry, key-file (HMAC-SHA-256
    file = "/var/log/acctd/fticks"  # of user names and CSIs), raw-values, syslog, syslog-*

    [radius]                      # RADIUS accounting: Start/Interim/Stop per session
    servers = ["127.0.0.1:1813"]  # tried in order; also nas-identifier, interim-interval
    secret-file = "radius.secret" # mode 0600; timeout, retries, static-units
    nas-ip = "192.0.2.1"

    [openvpn]                     # sessions from an OpenVPN server's management interface
    management = "127.0.0.1:7505" # or "unix:/run/openvpn/server.sock"; also password-file,
    interim-interval = 300        # status-interval, [openvpn.intervals] per common name

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

    [quota]   # free-form tables kept as data for the quota, login and billing issues
    [login]
    [billing]

Targets (all keywords given must match; see acctd/model/policies.py):

    proto NAME|N ...        "ip" is any IP traffic
    port [s|d|b]N[:M|-M]    TCP/UDP only; s = source port, d = destination, b/none = either;
                            at most 10 items
    vlan N ...              outer or inner tag
    ifindex N ...           the interface the flow was seen on
    addr A|P ...            either side of the flow
    file PATH               the remote side is in a NeTAMS prefix file (relative to this file)
    units oid OID ...       the remote side is inside that unit (a group: any member)
    policy-or [!]P ...      any of the policies matches ("!" inverts one)
    policy-and [!]P ...     all of them match
    time 9-18 | 00:40-21:30 day Mon-Fri | Sun
                            checked once per drain (lookup-delay), not per packet
    tos N                   needs a TOS byte in the flow key (not in ABI v1): rejected for now
    as, ds                  rejected: need BGP data / extra data sources

`load()` returns a Config whose `units` (UnitSet), `policies` (PolicySet)
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
from types import MappingProxyType
from typing import Any

from acctd.errors import ConfigError
from acctd.kernel import abi
from acctd.model.addresses import parse_addr, parse_prefix
from acctd.model.policies import AcctPlan, PolicySet, PolicySpec
from acctd.model.units import ModelError, Unit, UnitSet

ROLES = ("lan", "wan")
HOOKS = abi.HOOKS
RESTRICT = ("drop", "pass")
DEFAULT_DB = "/var/lib/acctd/acctd.duckdb"


@dataclasses.dataclass(frozen=True)
class Interface:
    name: str
    role: str
    hook: str = "xdp-native"

    @property
    def role_id(self) -> abi.Role:
        """The role as the datapath's acct_iface_cfg stores it."""
        return abi.Role.LAN if self.role == "lan" else abi.Role.WAN


@dataclasses.dataclass(frozen=True)
class Processor:
    lookup_delay: int = 30
    flow_lifetime: int = 300
    time_zone: str = "UTC"
    default_acct_policy: tuple[str, ...] = ()
    restrict_all: str = "pass"
    restrict_local: str = "pass"
    default_fw_policy: tuple[str, ...] = ()
    bw_burst: float = 0.3
    access_script: str = ""
    access_script_timeout: float = 10.0
    auto_assign: tuple = ()           # ((first, last), ...) 16-byte addresses, in order
    auto_units: tuple = ()            # autounits.AutoUnits rules
    mac_control: str = "off"          # off | block | alert | block-alert

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)


@dataclasses.dataclass(frozen=True)
class Storage:
    path: str = DEFAULT_DB
    raw_retention: int = 30 * 86400  # seconds


@dataclasses.dataclass(frozen=True)
class Config:
    path: str
    interfaces: tuple[Interface, ...]
    processor: Processor
    storage: Storage
    units: UnitSet
    policies: PolicySet
    plan: AcctPlan
    quota: Mapping[str, Any]
    login: Mapping[str, Any]
    billing: Mapping[str, Any]
    users: tuple["User", ...] = ()
    server: "Server | None" = None
    alerter: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # alerter.MailSettings
    session: "SessionHooks" = dataclasses.field(default_factory=lambda: SessionHooks())
    flowlog: "FlowLogConf | None" = None
    dynamicip: "DynamicIp | None" = None
    fticks: Any = None            # fticks.FticksSettings when [fticks] is configured
    radius: Any = None            # radius_acct.RadiusSettings when [radius] is configured
    openvpn: Any = None           # openvpn.OpenVpnSettings when [openvpn] is configured
    coa: Any = None               # radius_coa.CoaSettings when [coa] is configured


@dataclasses.dataclass(frozen=True)
class FlowLogConf:
    """net-acct's per-flow log: one nacctd line per flow and drain."""
    path: str
    fields: tuple[str, ...]
    fsync: bool = False


@dataclasses.dataclass(frozen=True)
class DynamicIp:
    """net-acct's dynamicip directory: a file named by an address holding a
    user name binds that address to that user unit."""
    dir: str
    exclude: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class SessionHooks:
    """Freeside-style session commands: argv lists run with the session in
    environment variables (user, ip, nasip, nasfqdn, nasport, mac), and the
    NAS ports whose address a session started by port takes."""
    start: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()
    ports: Mapping[str, bytes] = dataclasses.field(default_factory=dict)  # "port"/"nas:port"
    hook_timeout: float = 10.0


@dataclasses.dataclass(frozen=True)
class Server:
    """The optional TCP listener (NeTAMS service server): off unless configured,
    TLS always, users with an argon2id password."""
    host: str
    port: int
    max_conn: int = 6
    login: str = "localhost"   # localhost: loopback peers only | any
    tls_cert: str = ""
    tls_key: str = ""


LEVELS = ("viewer", "operator", "admin")


@dataclasses.dataclass(frozen=True)
class User:
    """A control-socket user: peers are matched by uid, user name or group."""
    name: str
    level: str
    uid: int | None = None
    unix_user: str | None = None
    unix_group: str | None = None
    password: str | None = None   # argon2id hash, for the TCP listener


# --- where things are in the text --------------------------------------------------
# tomllib reports no positions for values, so the loader keeps a map of
# (table, array index, key) -> line built by scanning the text.

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+|\"[^\"]*\")\s*(=|\.)")
_PART = r"(?:[A-Za-z0-9_-]+|\"[^\"]*\")"
_DOTTED = re.compile(rf"^\s*({_PART}(?:\s*\.\s*{_PART})*)\s*=")


class _Lines:
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
                    counts[head] = counts.get(head, 0) + 1
                idx = counts[head] - 1 if head in counts else None
                table, prefix = (head, idx), sub
                self.at.setdefault((head, idx, sub or None), n)
                continue
            k = _DOTTED.match(line)
            if k:
                parts = [p.strip().strip('"') for p in k.group(1).split(".")]
                if table == ("", None) and len(parts) > 1:
                    # processor.lookup-delay = 5 at the top level
                    self.at.setdefault((parts[0], None, parts[1]), n)
                    continue
                self.at.setdefault((*table, prefix or parts[0]), n)

    def find(self, table: str, index: int | None, key: str | None) -> int | None:
        for probe in ((table, index, key), (table, index, None)):
            if probe in self.at:
                return self.at[probe]
        return None


class _Bad(Exception):
    """A value error before it has a location."""


def _where(table: str, index: int | None, key: str | None, doc: Mapping | None) -> str:
    if index is None:
        s = f"[{table}]"
    else:
        s = f"[[{table}]] #{index + 1}"
        name = doc.get("name") if isinstance(doc, Mapping) else None
        if isinstance(name, str):
            s += f" {name!r}"
    return f"{s} key {key!r}" if key else s


# --- value checks ------------------------------------------------------------------

def _str(v: Any, what: str = "a string") -> str:
    if not isinstance(v, str) or not v.strip():
        raise _Bad(f"expected {what}, got {v!r}")
    return v.strip()


def _text(v: Any) -> str:
    if not isinstance(v, str):
        raise _Bad(f"expected a string, got {v!r}")
    return v


def _int(v: Any, lo: int, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise _Bad(f"expected {what} (an integer >= {lo}), got {v!r}")
    return v


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _Bad(f"expected {what} (a number), got {v!r}")
    return float(v)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Bad(f"expected true or false, got {v!r}")
    return v


def _choice(v: Any, choices: tuple[str, ...]) -> str:
    if v not in choices:
        raise _Bad(f"expected one of {', '.join(choices)}, got {v!r}")
    return v


def _strs(v: Any, what: str) -> tuple[str, ...]:
    """A list of strings; a single string is split on whitespace (NeTAMS style)."""
    if isinstance(v, str):
        return tuple(v.split())
    if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
        raise _Bad(f"expected a list of {what}, got {v!r}")
    return tuple(x.strip() for x in v)


_DURATION = re.compile(r"^(\d+)\s*([smhdw]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _duration(v: Any) -> int:
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    m = _DURATION.match(v.strip().lower()) if isinstance(v, str) else None
    if not m:
        raise _Bad(f"expected seconds or a duration like \"90m\", \"12h\", \"30d\", \"2w\", "
                   f"got {v!r}")
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def _freeze(v: Any) -> Any:
    if isinstance(v, dict):
        return MappingProxyType({k: _freeze(x) for k, x in v.items()})
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v


# --- the loader --------------------------------------------------------------------

_TOP = {"interface": list, "processor": dict, "storage": dict, "unit": list, "policy": list,
        "user": list, "server": dict, "alerter": dict, "quota": dict, "login": dict, "billing": dict,
        "session": dict, "flowlog": dict, "dynamicip": dict, "fticks": dict, "radius": dict,
        "openvpn": dict, "coa": dict}
_KEYS = {
    "interface": {"name", "role", "hook"},
    "processor": {"lookup-delay", "flow-lifetime", "time-zone", "default-acct-policy", "restrict",
                  "default-fw-policy", "bw-burst", "access-script", "access-script-timeout",
                  "auto-assign", "auto-units", "mac-control"},
    "storage": {"path", "raw-retention"},
    "unit": {"type", "name", "oid", "description", "email", "ip", "ips", "net", "parents",
             "acct-policy", "nodefault", "ap-nodefault", "sys-policy", "fw-policy", "bw",
             "no-local-pass", "auto-units", "mac"},
    "policy": {"name", "oid", "target", "bw"},
    "user": {"name", "level", "uid", "unix-user", "unix-group", "password"},
    "server": {"listen", "max-conn", "login", "tls-cert", "tls-key"},
    "session": {"start", "stop", "ports", "hook-timeout"},
    "flowlog": {"path", "fields", "fsync"},
    "dynamicip": {"dir", "exclude-name-lookup"},
}


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
        raise ConfigError(f"{_where(table, index, key, item)}: {msg}", self.path, line, key)

    def section(self, table: str, index: int | None, doc: Any) -> dict:
        if not isinstance(doc, dict):
            self.fail(f"expected a table, got {type(doc).__name__}", table, index)
        allowed = _KEYS.get(table)
        if allowed is not None:
            for key in doc:
                if key not in allowed:
                    self.fail(f"unknown key; expected one of {', '.join(sorted(allowed))}",
                              table, index, key)
        return doc

    def get(self, table, index, doc, key, check, *args, default=None, required=False):
        if key not in doc:
            if required:
                self.fail("required key is missing", table, index, key)
            return default
        try:
            return check(doc[key], *args)
        except _Bad as e:
            self.fail(str(e), table, index, key)

    def load(self) -> Config:
        for key, val in self.doc.items():
            if key not in _TOP:
                self.fail(f"unknown section; expected one of {', '.join(_TOP)}", key)
            want = _TOP[key]
            tables = isinstance(val, list) and all(isinstance(x, dict) for x in val)
            if want is list and not tables:
                self.fail(f"expected [[{key}]] tables", key)
            if want is dict and not isinstance(val, dict):
                self.fail(f"expected a [{key}] table", key)
        interfaces = self.interfaces()
        self.login_table()
        processor = self.processor()
        storage = self.storage()
        unit_list = [self.unit(i, d) for i, d in enumerate(self.doc.get("unit", []))]
        specs = [self.policy(i, d) for i, d in enumerate(self.doc.get("policy", []))]
        try:
            policies = PolicySet(specs, self.base_dir)
            units = UnitSet(unit_list, reserved_oids=[p.oid for p in policies])
            policies.check_units(units)
            plan = AcctPlan(units, policies, processor.default_acct_policy)
            from acctd.model import enforcement
            enforcement.check(units, policies, processor)
            rules = {r.number for r in processor.auto_units}
            for i, u in enumerate(units):
                if u.auto_units is not None and (u.type != "net" or u.auto_units not in rules):
                    raise ModelError("auto-units belongs on a net unit and names a rule of "
                                     "[processor] auto-units", "unit", i, "auto-units")
                if u.mac and u.type not in ("host", "user"):
                    raise ModelError("only host and user units have a MAC", "unit", i, "mac")
        except ModelError as e:
            self.fail(str(e), e.table or "unit", e.index, e.key)
        return Config(self.path, interfaces, processor, storage, units, policies, plan,
                      *(_freeze(self.doc.get(k, {})) for k in ("quota", "login", "billing")),
                      users=self.users(), server=self.server(), alerter=self.alerter(),
                      session=self.session(), flowlog=self.flowlog(),
                      dynamicip=self.dynamicip(), fticks=self.fticks(),
                      radius=self.radius(), openvpn=self.openvpn(), coa=self.coa())

    def settings(self, table: str, load, doc: dict | None = None):
        """A service's table read by its own module (`load(mapping, base_dir)`,
        raising ValueError/OSError whose message names the key); None when
        the table is absent. The error points at the key's line."""
        if table not in self.doc:
            return None
        d = self.doc[table]
        if not isinstance(d, dict):
            self.fail(f"expected a [{table}] table", table)
        try:
            return load(d if doc is None else doc, self.base_dir)
        except (ValueError, OSError) as e:
            text = str(e)
            key = next((k for k in d if k in text), None)
            if key is None and "secret" in text and "secret-file" in d:
                key = "secret-file"
            self.fail(text, table, None, key)

    def coa(self):
        from acctd.aaa.coa import CoaSettings
        r = self.doc.get("radius") or {}
        d = self.doc.get("coa")
        # our NAS identity, for the 403 check: [radius]'s unless given here
        merged = {**{k: r[k] for k in ("nas-ip", "nas-identifier") if k in r}, **d} \
            if isinstance(d, dict) else None
        return self.settings("coa", CoaSettings.from_mapping, merged)

    def openvpn(self):
        from acctd.aaa.openvpn import OpenVpnSettings
        return self.settings("openvpn", OpenVpnSettings.from_mapping)

    def radius(self):
        from acctd.aaa.radius_accounting import RadiusSettings

        def load(d, base):
            s = RadiusSettings.from_mapping(d, base)
            s.read_secret()  # a missing or open secret file fails here, with its line
            return s
        return self.settings("radius", load)

    def fticks(self):
        from acctd.aaa.fticks import FticksSettings
        return self.settings("fticks", FticksSettings.from_mapping)

    def flowlog(self) -> "FlowLogConf | None":
        t = "flowlog"
        if t not in self.doc:
            return None
        from acctd.services.flowlog import DEFAULT_FIELDS, check_fields
        d = self.section(t, None, self.doc[t])
        path = self.get(t, None, d, "path", _str, "a file path", required=True)
        if not os.path.isabs(path):
            path = os.path.join(self.base_dir, path)
        fields = self.get(t, None, d, "fields", _strs, "field names", default=DEFAULT_FIELDS)
        try:
            fields = check_fields(fields)
        except ValueError as e:
            self.fail(str(e), t, None, "fields")
        return FlowLogConf(path, tuple(fields), self.get(t, None, d, "fsync", _bool, default=False))

    def dynamicip(self) -> "DynamicIp | None":
        t = "dynamicip"
        if t not in self.doc:
            return None
        from acctd.services.dynamicip import parse_networks
        d = self.section(t, None, self.doc[t])
        path = self.get(t, None, d, "dir", _str, "a directory", required=True)
        exclude = self.get(t, None, d, "exclude-name-lookup", _strs, "networks", default=())
        try:
            parse_networks(exclude)
        except ValueError as e:
            self.fail(str(e), t, None, "exclude-name-lookup")
        return DynamicIp(path, tuple(exclude))

    def login_table(self) -> None:
        """[login] (NeTAMS service login settings) is checked here, so a bad
        bound fails at load with its line; records live in the database."""
        if "login" not in self.doc:
            return
        from acctd.services.login import LoginSettings
        d = self.doc["login"]
        if not isinstance(d, dict):
            self.fail("expected a [login] table", "login")
        try:
            LoginSettings.from_mapping(d)
        except ValueError as e:
            key = next((k for k in d if k in str(e)), None)
            self.fail(str(e), "login", None, key)

    def session(self) -> "SessionHooks":
        t = "session"
        d = self.section(t, None, self.doc.get(t, {}))
        from acctd.services.access_script import validate
        cmds = {}
        for key in ("start", "stop"):
            argv = self.get(t, None, d, key, _strs, "a command as a list, e.g. [\"/usr/local/bin/"
                            "hook\", \"start\"]", default=())
            if argv:
                err = validate(argv[0])
                if err:
                    self.fail(err.replace("access-script", "command"), t, None, key)
            cmds[key] = argv
        ports = {}
        raw = d.get("ports", {})
        if not isinstance(raw, dict):
            self.fail("expected a table of port = address, e.g. { \"nas1:7\" = \"10.0.0.7\" }",
                      t, None, "ports")
        for port, addr in raw.items():
            try:
                ports[str(port)] = parse_addr(_str(addr))
            except (ValueError, _Bad):
                self.fail(f"port {port}: expected an address, got {addr!r}", t, None, "ports")
        timeout = self.get(t, None, d, "hook-timeout", _number, "seconds", default=10)
        return SessionHooks(cmds["start"], cmds["stop"], MappingProxyType(ports), float(timeout))

    def alerter(self) -> Mapping[str, Any]:
        if "alerter" not in self.doc:
            return MappingProxyType({})
        from acctd.services.alerter import MailSettings
        d = self.doc["alerter"]
        try:
            MailSettings.from_mapping(d, self.base_dir)
        except (ValueError, TypeError) as e:
            key = next((k for k in d if k in str(e)), None)
            self.fail(str(e), "alerter", None, key)
        return _freeze(d)

    def users(self) -> tuple[User, ...]:
        out, seen = [], set()
        for i, d in enumerate(self.doc.get("user", [])):
            d = self.section("user", i, d)
            name = self.get("user", i, d, "name", _str, "a user name", required=True)
            if name in seen:
                self.fail(f"user {name!r} is defined twice", "user", i, "name")
            seen.add(name)
            level = self.get("user", i, d, "level", _choice, LEVELS, required=True)
            uid = self.get("user", i, d, "uid", _int, 0, "a uid")
            unix_user = self.get("user", i, d, "unix-user", _str, "a local user name")
            unix_group = self.get("user", i, d, "unix-group", _str, "a local group name")
            password = self.get("user", i, d, "password", _str, "an argon2id hash")
            if password is not None and not password.startswith("$argon2id$"):
                self.fail("expected an argon2id hash ($argon2id$...; make one with "
                          "`acctctl hash-password`), never a plain password", "user", i, "password")
            if (uid, unix_user, unix_group, password) == (None, None, None, None):
                self.fail("say who this is: uid, unix-user, unix-group, or a password for TCP",
                          "user", i, "name")
            out.append(User(name, level, uid, unix_user, unix_group, password))
        return tuple(out)

    def server(self) -> "Server | None":
        if "server" not in self.doc:
            return None
        d = self.section("server", None, self.doc["server"])
        listen = self.get("server", None, d, "listen", _str, "host:port", required=True)
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            self.fail("expected host:port, e.g. 127.0.0.1:20001", "server", None, "listen")
        login = self.get("server", None, d, "login", _choice, ("localhost", "any"),
                         default="localhost")
        cert = self.get("server", None, d, "tls-cert", _str, "a PEM file", required=True)
        key = self.get("server", None, d, "tls-key", _str, "a PEM file", required=True)
        return Server(host.strip("[]"), int(port),
                      self.get("server", None, d, "max-conn", _int, 1, "a connection count",
                               default=6), login,
                      os.path.join(self.base_dir, cert), os.path.join(self.base_dir, key))

    def interfaces(self) -> tuple[Interface, ...]:
        out, seen = [], set()
        for i, d in enumerate(self.doc.get("interface", [])):
            d = self.section("interface", i, d)
            name = self.get("interface", i, d, "name", _str, "an interface name", required=True)
            if name in seen:
                self.fail(f"interface {name!r} is listed twice", "interface", i, "name")
            seen.add(name)
            out.append(Interface(
                name,
                self.get("interface", i, d, "role", _choice, ROLES, required=True),
                self.get("interface", i, d, "hook", _choice, HOOKS, default="xdp-native")))
        return tuple(out)

    def processor(self) -> Processor:
        t = "processor"
        d = self.section(t, None, self.doc.get(t, {}))
        delay = self.get(t, None, d, "lookup-delay", _int, 1, "seconds", default=30)
        life = self.get(t, None, d, "flow-lifetime", _int, 1, "seconds", default=300)
        if life < delay:
            self.fail(f"expected at least lookup-delay ({delay} s), got {life}", t, None,
                      "flow-lifetime")
        tz = self.get(t, None, d, "time-zone", _str, "an IANA time zone name", default="UTC")
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            self.fail(f"expected an IANA time zone like \"Europe/Moscow\", got {tz!r}", t, None,
                      "time-zone")
        default = self.get(t, None, d, "default-acct-policy", _strs, "policy names", default=())
        r_all, r_local = "pass", "pass"
        if "restrict" in d:
            r = d["restrict"]
            if not isinstance(r, dict) or set(r) - {"all", "local"}:
                self.fail("expected a table with keys all and local, e.g. "
                          "{ all = \"drop\", local = \"pass\" }", t, None, "restrict")
            try:
                r_all = _choice(r.get("all", "pass"), RESTRICT)
                r_local = _choice(r.get("local", "pass"), RESTRICT)
            except _Bad as e:
                self.fail(str(e), t, None, "restrict")
        fw_default = self.get(t, None, d, "default-fw-policy", _strs, "policy names", default=())
        burst = self.get(t, None, d, "bw-burst", _number, "seconds", default=0.3)
        if not 0 < burst <= 10:
            self.fail(f"expected seconds between 0 and 10, got {burst}", t, None, "bw-burst")
        script = self.get(t, None, d, "access-script", _str, "a program path", default="")
        if script:
            from acctd.services.access_script import validate
            err = validate(script)
            if err:
                self.fail(err, t, None, "access-script")
        timeout = self.get(t, None, d, "access-script-timeout", _number, "seconds", default=10)
        if timeout <= 0:
            self.fail(f"expected a positive number of seconds, got {timeout}", t, None,
                      "access-script-timeout")
        from acctd.services import auto_units
        pools = []
        for text in self.get(t, None, d, "auto-assign", _strs, "address ranges", default=()):
            try:
                pools.append(auto_units.parse_auto_assign(text))
            except (ValueError, ModelError) as e:
                self.fail(str(e), t, None, "auto-assign")
        try:
            auto_units.AutoAssign(pools)
        except (ValueError, ModelError) as e:
            self.fail(str(e), t, None, "auto-assign")
        rules = []
        for text in self.get(t, None, d, "auto-units", _strs, "auto-units rules", default=()):
            try:
                rules.append(auto_units.parse_auto_units(text))
            except (ValueError, ModelError) as e:
                self.fail(str(e), t, None, "auto-units")
        if len({r.number for r in rules}) != len(rules):
            self.fail("two auto-units rules have the same number", t, None, "auto-units")
        mac = self.get(t, None, d, "mac-control", _choice, ("off", "block", "alert", "block-alert"),
                       default="off")
        return Processor(delay, life, tz, default, r_all, r_local, fw_default, float(burst),
                         script, float(timeout), tuple(pools), tuple(rules), mac)

    def storage(self) -> Storage:
        t = "storage"
        d = self.section(t, None, self.doc.get(t, {}))
        return Storage(self.get(t, None, d, "path", _str, "a file path", default=DEFAULT_DB),
                       self.get(t, None, d, "raw-retention", _duration, default=30 * 86400))

    def unit(self, i: int, d: Any) -> Unit:
        t = "unit"
        d = self.section(t, i, d)
        g = lambda key, *a, **kw: self.get(t, i, d, key, *a, **kw)  # noqa: E731
        oid = d.get("oid")
        if oid is not None and not isinstance(oid, str):
            # a bare 021949 is not TOML and 21949 would read as decimal: strings only
            self.fail(f"expected an oid string like \"021949\", got {oid!r}", t, i, "oid")
        addrs: list[bytes] = []
        for key in ("ip", "ips"):
            if key not in d:
                continue
            vals = [d[key]] if key == "ip" else d[key]
            if not isinstance(vals, list) or not all(isinstance(v, str) for v in vals):
                self.fail("expected a list of addresses", t, i, key)
            for v in vals:
                try:
                    addrs.append(parse_addr(v))
                except ValueError:
                    self.fail(f"expected an IPv4 or IPv6 address, got {v!r}", t, i, key)
        nets = []
        if "net" in d:
            vals = d["net"] if isinstance(d["net"], list) else [d["net"]]
            for v in vals:
                try:
                    nets.append(parse_prefix(_str(v)))
                except (ValueError, _Bad) as e:
                    self.fail(f"expected a network prefix like 192.168.0.0/24 or "
                              f"2001:db8::/32: {e}", t, i, "net")
        return Unit(
            type=g("type", _choice, ("host", "cluster", "net", "user", "group"), required=True),
            name=g("name", _str, "a unit name", required=True),
            oid=oid,
            addrs=tuple(addrs), nets=tuple(nets),
            parents=g("parents", _strs, "group names", default=()),
            description=g("description", _text, default=""),
            email=g("email", _str, "an e-mail address", default=""),
            acct_policy=g("acct-policy", _strs, "policy names", default=()),
            nodefault=g("nodefault", _bool, default=False),
            ap_nodefault=g("ap-nodefault", _bool, default=False),
            sys_policy=self.sys_policy(i, g("sys-policy", _strs, "system policies", default=())),
            fw_policy=g("fw-policy", _strs, "policy names", default=()),
            bw=self.bw("unit", i, d),
            no_local_pass=g("no-local-pass", _bool, default=False),
            auto_units=g("auto-units", _int, 0, "an auto-units rule number"),
            mac=self.mac(i, d),
        )

    def mac(self, i: int, d: dict) -> str:
        if "mac" not in d:
            return ""
        from acctd.services.mac_control import normalize_mac
        try:
            return normalize_mac(_str(d["mac"]))
        except (ValueError, _Bad) as e:
            self.fail(str(e), "unit", i, "mac")

    def bw(self, table: str, i: int, d: dict):
        if "bw" not in d:
            return None
        from acctd.model.enforcement import parse_bw
        try:
            return parse_bw(d["bw"])
        except ValueError as e:
            self.fail(str(e), table, i, "bw")

    def sys_policy(self, i: int, words: tuple[str, ...]) -> tuple[str, ...]:
        from acctd.model import sys_policy
        try:
            sys_policy.from_words(words)
        except ValueError as e:
            self.fail(str(e), "unit", i, "sys-policy")
        return words

    def policy(self, i: int, d: Any) -> PolicySpec:
        t = "policy"
        d = self.section(t, i, d)
        name = self.get(t, i, d, "name", _str, "a policy name", required=True)
        oid = d.get("oid")
        if oid is not None and not isinstance(oid, str):
            self.fail(f"expected an oid string like \"146633\", got {oid!r}", t, i, "oid")
        if "target" not in d:
            self.fail("required key is missing; e.g. target = \"proto tcp port 80\"", t, i,
                      "target")
        target = d["target"]
        if not isinstance(target, (str, dict)):
            self.fail("expected a target string or table", t, i, "target")
        return PolicySpec(name, target, oid, self.bw(t, i, d))


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
