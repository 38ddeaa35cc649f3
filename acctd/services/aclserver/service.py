"""The acl-server service: every address of every unit acctd blocks, for
any reason (sys-deny, quota, money, login, mac, a CoA Disconnect), pushed
to the configured routers, and rate limits for units with `bw` where the
back-end has them (FlowSpec).

A change reaches the routers at once (blocks_changed: the kernel took on or
let go of a block); the whole desired set is handed over again at start,
at reload and every `delay` seconds, where each back-end's pusher resyncs
it against what the router holds (acctd/services/aclserver/enforcer.py).

    [aclserver]                   # NeTAMS [service acl-server]
    delay = 300                   # seconds between resyncs (and router checks)
    never-block = ["192.0.2.0/24"]  # the operator's own infrastructure: refused, logged
    expiry = 900                  # optional: entries time out on the router unless refreshed
    debug = false                 # NeTAMS `debug aclserver`: every command logged

    [[aclserver.backend]]
    name = "edge1"
    type = "bgp"                  # bgp | nft | routeros
    hostname = "10.0.0.1"         # the router (bgp: the neighbor)
    ...
"""

from __future__ import annotations

import dataclasses
import logging
import time

from acctd.config.schema import (Invalid, Table, boolean, choice, duration, each, integer,
                                 ip_address, ip_network, secret_file, setting, string,
                                 strings, tables)
from acctd.kernel import abi
from acctd.model import enforcement, sys_policy
from acctd.services.aclserver.enforcer import Backend, Entry, Pusher, canonical, desired_of
from acctd.services.contract import Core, Service

log = logging.getLogger("acctd.aclserver")

TYPES = ("bgp", "nft", "routeros")
DEFAULT_DELAY = 300
MAX_DELAY = 86400
DEFAULT_SET = "acctd_blocked"

# the keys each type reads; the rest of BackendSettings is another type's
TYPE_KEYS = {
    "bgp": {"hostname", "port", "peer-as", "local-as", "router-id", "local-address",
            "multihop", "rtbh", "flowspec", "community", "next-hop", "next-hop6",
            "max-rules", "netns", "listen-port"},
    "nft": {"family", "table", "dynamic-name", "set6", "netns", "command"},
    "routeros": {"hostname", "port", "user", "password-file", "dynamic-name", "tls"},
}
COMMON_KEYS = {"name", "type", "direction", "expiry", "set-uptime"}


def _community(v, ctx):
    hi, _, lo = str(v).partition(":")
    if not (hi.isdigit() and lo.isdigit() and int(hi) < 65536 and int(lo) < 65536):
        raise Invalid(f"expected a BGP community like \"65535:666\", got {v!r}")
    return f"{int(hi)}:{int(lo)}"


@dataclasses.dataclass(frozen=True)
class BackendSettings(Table):
    """One [[aclserver.backend]]: a router and how to reach it."""
    name: str = setting(check=string("a name"), example='"edge1"')
    type: str = setting(check=choice(*TYPES), example='"bgp"')
    direction: str = setting("src", check=choice("src", "dst"))
    expiry: int | None = setting(None, check=duration(MAX_DELAY * 7))
    set_uptime: int | None = setting(None, check=integer(0))
    hostname: str = setting("", check=string("a router's address"))
    port: int | None = setting(None, check=integer(1, 65535))
    # bgp
    peer_as: int | None = setting(None, check=integer(1, 4294967295))
    local_as: int | None = setting(None, check=integer(1, 4294967295))
    router_id: str = setting("", check=ip_address())
    local_address: str = setting("", check=ip_address())
    multihop: int | None = setting(None, check=integer(1, 255))
    rtbh: bool = setting(True, check=boolean())
    flowspec: bool = setting(False, check=boolean())
    community: str = setting("65535:666", check=_community)
    next_hop: str = setting("192.0.2.1", check=ip_address())
    next_hop6: str = setting("100::1", check=ip_address())
    max_rules: int | None = setting(None, check=integer(1))
    netns: str = setting("", check=string("a network namespace name"))
    listen_port: int | None = setting(None, check=integer(1, 65535))
    # nft
    family: str = setting("inet", check=choice("inet", "ip", "ip6", "bridge", "netdev"))
    table: str = setting("acctd", check=string("an nftables table name"))
    dynamic_name: str = setting(DEFAULT_SET, check=string("a set or address-list name"))
    set6: str = setting("", check=string("an nftables set name"))
    command: tuple[str, ...] = setting((), check=strings("command words", split=False))
    # routeros
    user: str = setting("", check=string("a user name"))
    password_file: str = setting("", check=secret_file())
    tls: bool = setting(False, check=boolean())

    def finish(self, ctx):
        for k in ctx.given - COMMON_KEYS - TYPE_KEYS[self.type]:
            raise Invalid(f"not a key of a {self.type} back-end; it takes "
                          f"{', '.join(sorted(COMMON_KEYS | TYPE_KEYS[self.type]))}", k)
        need = {"bgp": ("hostname", "peer-as", "local-as", "router-id"),
                "routeros": ("hostname", "user", "password-file"), "nft": ()}[self.type]
        for k in need:
            if k not in ctx.given:
                raise Invalid(f"a {self.type} back-end needs {k}", "type")
        if self.type == "bgp" and not (self.rtbh or self.flowspec):
            raise Invalid("announces nothing: set rtbh or flowspec to true", "rtbh")
        if self.type == "nft" and self.netns and self.command:
            raise Invalid("give netns or command, not both", "command")
        return self


@dataclasses.dataclass(frozen=True)
class AclServerSettings(Table):
    """The [aclserver] table (NeTAMS [service acl-server])."""
    backend: tuple[BackendSettings, ...] = setting(
        check=tables(BackendSettings, "[[aclserver.backend]] tables"),
        example='[{ name = "edge1", type = "nft" }]')
    delay: int = setting(DEFAULT_DELAY, check=duration(MAX_DELAY))
    never_block: tuple = setting((), check=each(ip_network(), "prefixes"))
    expiry: int | None = setting(None, check=duration(MAX_DELAY * 7))
    debug: bool = setting(False, check=boolean())

    def finish(self, ctx):
        if self.delay < 1:
            raise Invalid("expected at least 1 second", "delay")
        names = set()
        for i, b in enumerate(self.backend):
            if b.name in names:
                raise Invalid(f"back-end {b.name!r} is named twice", f"backend[{i}].name")
            names.add(b.name)
            exp = b.expiry if b.expiry is not None else self.expiry
            if exp is not None and exp <= self.delay:
                key = f"backend[{i}].expiry" if b.expiry is not None else "expiry"
                raise Invalid(f"an expiry of {exp} s would lapse before the next refresh: "
                              f"make it longer than delay ({self.delay} s)", key)
        return self


def make_backend(b: BackendSettings, expiry: int | None, state_dir: str) -> Backend:
    if b.type == "bgp":
        from acctd.services.aclserver.bgp import BgpBackend
        return BgpBackend(b.name, state_dir, neighbor=b.hostname, peer_as=b.peer_as,
                          local_as=b.local_as, router_id=b.router_id, port=b.port or 179,
                          local_address=b.local_address or None, multihop=b.multihop,
                          rtbh=b.rtbh, flowspec=b.flowspec, direction=b.direction,
                          community=b.community, next_hop=b.next_hop, next_hop6=b.next_hop6,
                          max_rules=b.max_rules, netns=b.netns or None,
                          listen_port=b.listen_port)
    if b.type == "nft":
        from acctd.services.aclserver.nft import NftBackend
        command = ("ip", "netns", "exec", b.netns) if b.netns else b.command
        return NftBackend(b.name, b.family, b.table, b.dynamic_name, b.set6 or None, command,
                          expiry)
    from acctd.common.secret_files import read_private
    from acctd.services.aclserver.routeros import RouterOsBackend
    password = read_private(b.password_file, "password-file").decode().strip()
    return RouterOsBackend(b.name, b.hostname, b.port or (8729 if b.tls else 8728), b.user,
                           password, b.dynamic_name, b.tls, expiry)


class AclServerService(Service):
    """Pushes the daemon's blocks to the routers of [[aclserver.backend]]."""

    name = "aclserver"

    def __init__(self, core: Core, settings: AclServerSettings | None):
        super().__init__(core, settings)
        self.pushers: list[Pusher] = []
        self._handed = 0.0         # monotonic time the desired set was last handed over

    @staticmethod
    def settings_of(config):
        return getattr(config, "aclserver", None)

    def serve(self) -> None:
        s = self.settings
        if s is None:
            return
        if s.debug:   # else the level is [log] debug's (LogService)
            logging.getLogger("acctd.aclserver").setLevel(logging.DEBUG)
        desired = self.desired()
        for b in s.backend:
            exp = b.expiry if b.expiry is not None else s.expiry
            p = Pusher(make_backend(b, exp, self.core.state_dir), s.delay, s.never_block,
                       b.set_uptime)
            p.set_desired(desired, resync=True)
            p.start()
            self.pushers.append(p)
        self._handed = time.monotonic()

    def reload(self, settings) -> None:
        self.restart(settings)

    def close(self) -> None:
        for p in self.pushers:
            p.close()
        self.pushers = []

    def desired(self) -> dict[str, Entry]:
        """The entries every router should hold now, from the daemon's decided blocks."""
        with self.core.lock:
            classes = enforcement.plan(self.core.snapshot, self.core.sys_policy_bits(), None)
        return desired_of(classes)

    def tick(self) -> None:
        if self.pushers and time.monotonic() - self._handed >= self.settings.delay:
            desired = self.desired()
            for p in self.pushers:
                p.set_desired(desired)
            self._handed = time.monotonic()

    def blocks_changed(self, moved) -> None:
        if not self.pushers:
            return
        snap = self.core.snapshot
        changes: dict[str, Entry | None] = {}
        for text, (_, new, oid) in moved.items():
            addr = canonical(text)
            if sys_policy.verdict(new) == abi.Verdict.DROP:
                changes[addr] = Entry(addr, ",".join(sys_policy.words(new)))
                continue
            i = snap.units.by_oid.get(oid)
            bw = snap.units.units[i].bw if i is not None else None
            changes[addr] = Entry(addr, "bw", tuple(bw)) if bw and any(bw) else None
        for p in self.pushers:
            p.change(changes)

    def show(self) -> dict:
        """`acctctl aclserver show`: per back-end, pushed, pending, last error, router uptime."""
        s = self.settings
        return {"configured": s is not None, "delay": s.delay if s else None,
                "never_block": [str(p) for p in s.never_block] if s else [],
                "backends": [p.status() for p in self.pushers]}

    def status(self) -> dict | None:
        """`acctctl status`: one line of words per back-end."""
        if self.settings is None:
            return None
        return {"aclserver": {
            b["name"]: f"{'up' if b['up'] else 'down'}, {len(b['pushed'])} pushed, "
                       f"{len(b['pending'])} pending" + (f": {b['last_error']}"
                                                         if b["last_error"] else "")
            for b in self.show()["backends"]}}
