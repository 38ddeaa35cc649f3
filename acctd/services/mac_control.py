"""MAC control (NeTAMS `mac control` and `mac fixate`): compare the MACs configured
on host and user units with what the kernel's neighbour table (ARP/NDP) shows.

check() and fixate() are pure functions over dicts; read_neighbours() is the
one netlink edge. MacService, at the end, acts on a mismatch (sys-deny-mac,
mail).
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterable, Mapping

from acctd.errors import AcctError
from acctd.kernel import abi
from acctd.model.addresses import format_addr, is_multicast, parse_addr
from acctd.model.units import Unit
from acctd.services.contract import Core, Drain, Service

log = logging.getLogger("acctd.daemon")

MAC_TYPES = ("host", "user")  # the reference checks only these

# kernel NUD states (include/uapi/linux/neighbour.h)
NUD_INCOMPLETE = 0x01
NUD_FAILED = 0x20
_UNUSABLE = NUD_INCOMPLETE | NUD_FAILED

_SIX = re.compile(r"^([0-9a-f]{1,2})([:-])([0-9a-f]{1,2})(?:\2([0-9a-f]{1,2})){4}$")


class MacError(AcctError, ValueError):
    """A MAC address that cannot be read."""


def normalize_mac(text: str) -> str:
    """"00:11:22:33:44:55", "00-11-22-33-44-55", "0011.2233.4455", "001122334455",
    BSD's "0:11:2:33:44:55", any case, optionally quoted -> "00:11:22:33:44:55"."""
    s = str(text).strip().strip("\"'«»").strip().lower()
    if _SIX.match(s):
        parts = re.split(r"[:-]", s)
    elif re.fullmatch(r"[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}", s):
        digits = s.replace(".", "")
        parts = [digits[i:i + 2] for i in range(0, 12, 2)]
    elif re.fullmatch(r"[0-9a-f]{12}", s):
        parts = [s[i:i + 2] for i in range(0, 12, 2)]
    else:
        raise MacError(f"expected a MAC like 00:11:22:33:44:55, 00-11-22-33-44-55 or "
                       f"0011.2233.4455, got {text!r}")
    return ":".join(p.rjust(2, "0") for p in parts)


def _oid(u: Unit) -> str:
    # UnitSet has assigned oids; bare Units (tests, plans) fall back to the name
    return u.oid if u.oid is not None else u.name


def expected_macs(units: Iterable[Unit]) -> dict[bytes, tuple[str, str]]:
    """address -> (unit oid, normalised MAC) for host/user units with an address and a MAC.

    Reads the attribute `mac` if the unit has one; a MAC that cannot be read
    raises MacError naming the unit.
    """
    out: dict[bytes, tuple[str, str]] = {}
    for u in units:
        mac = getattr(u, "mac", "") or ""
        if not mac or u.type not in MAC_TYPES or not u.addrs:
            continue
        try:
            norm = normalize_mac(mac)
        except MacError as e:
            raise MacError(f"unit {u.name!r}: {e}") from None
        for a in u.addrs:
            out[a] = (_oid(u), norm)
    return out


def _attr(msg, name: str):
    if hasattr(msg, "get_attr"):
        return msg.get_attr(name)
    return next((v for k, v in msg.get("attrs", ()) if k == name), None)


def neighbours_from_messages(msgs: Iterable) -> dict[bytes, str]:
    """address -> MAC from rtnetlink RTM_NEWNEIGH messages (pyroute2 ndmsg or dicts
    shaped like them); IPv4 and IPv6 unicast, FAILED/INCOMPLETE and MAC-less entries skipped."""
    out: dict[bytes, str] = {}
    for m in msgs:
        if m.get("family") not in (socket.AF_INET, socket.AF_INET6):
            continue
        if m.get("state", 0) & _UNUSABLE:
            continue  # a FAILED entry may still carry the MAC of a host that left
        dst, lladdr = _attr(m, "NDA_DST"), _attr(m, "NDA_LLADDR")
        if not dst or not lladdr:
            continue
        try:
            mac = normalize_mac(lladdr)
        except MacError:
            continue  # not Ethernet (e.g. a tunnel's 4-byte link address)
        addr = parse_addr(dst.split("%")[0])
        if is_multicast(addr):
            continue  # multicast: the MAC is computed from the address, not learnt
        out[addr] = mac
    return out


def read_neighbours(netns: str | None = None) -> dict[bytes, str]:
    """The kernel's neighbour table (ARP and NDP) as address -> MAC, optionally in a
    named network namespace (which must exist: it is not created)."""
    from pyroute2 import IPRoute, NetNS
    try:
        ipr = NetNS(netns, flags=0) if netns else IPRoute()
    except FileNotFoundError:
        raise AcctError(f"no network namespace named {netns!r} (see ip netns list)") from None
    except PermissionError:
        raise AcctError(f"entering network namespace {netns!r} needs root") from None
    with ipr:
        return neighbours_from_messages(ipr.get_neighbours())


def check(expected: Mapping[bytes, tuple[str, str]], seen: Mapping[bytes, str]
          ) -> tuple[dict[str, tuple[bytes, str, str]], set[str]]:
    """Compare the configured MACs (expected_macs) with the neighbour table.

    Returns (mismatched: oid -> (addr, wanted MAC, seen MAC), ok: oids seen with
    their own MAC). A unit absent from the table is in neither: unknown, so
    whatever the caller did last (blocked or not) stands until it shows up.
    """
    mismatched: dict[str, tuple[bytes, str, str]] = {}
    ok: set[str] = set()
    for addr, (oid, want) in expected.items():
        got = seen.get(addr)
        if got is None:
            continue
        if got != want:
            try:
                got = normalize_mac(got)
            except MacError:
                pass
        if got == want:
            ok.add(oid)
        else:
            mismatched[oid] = (addr, want, got)
    # a unit with several addresses (not host/user, but cheap to be exact) is
    # ok only if none of them is wrong
    ok -= mismatched.keys()
    return mismatched, ok


def fixate(units: Iterable[Unit], seen: Mapping[bytes, str], overwrite: bool = False
           ) -> dict[str, str]:
    """NeTAMS `mac fixate`: oid -> MAC now seen, for host/user units with an address
    that the neighbour table shows.

    The reference "adds" the MAC parameter, so units that already have one
    keep it unless `overwrite`; the result lists only what would change.
    """
    out: dict[str, str] = {}
    for u in units:
        if u.type not in MAC_TYPES or not u.addrs:
            continue
        got = seen.get(u.addrs[0])
        if got is None:
            continue
        try:
            got = normalize_mac(got)
        except MacError:
            continue
        have = getattr(u, "mac", "") or ""
        if have and not overwrite:
            continue
        if have:
            try:
                if normalize_mac(have) == got:
                    continue
            except MacError:
                pass  # a broken configured MAC is replaced
        out[_oid(u)] = got
    return out


__all__ = ["MacError", "check", "expected_macs", "fixate", "neighbours_from_messages",
           "normalize_mac", "read_neighbours"]


# --- the service ----------------------------------------------------------------------

class MacService(Service):
    """NeTAMS `mac control`: after each drain the units' MACs (the config's,
    else the one `mac fixate` recorded) are compared with the neighbour
    table. With block, a mismatch blocks (reason mac) until the right MAC is
    back; a unit missing from the table keeps its state. With alert, each
    new mismatch is logged and mailed to the admins."""

    name = "mac"

    def __init__(self, core: Core, settings: str):
        super().__init__(core, settings)    # [processor] mac-control
        self.blocked: set[str] = set()      # oids blocked now
        self.mismatch: dict = {}            # oid -> (addr, wanted, seen), last check

    @staticmethod
    def settings_of(config):
        return config.processor.mac_control

    def blocks(self) -> dict[str, int]:
        return dict.fromkeys(self.blocked, abi.SysPolicy.MAC)

    def after_drain(self, drain: Drain) -> None:
        if self.settings != "off":
            self._check()

    def _units(self):
        """The units with their MACs: the config's, else the one fixated."""
        import dataclasses
        fixed = self.core.storage.unit_macs()
        return [dataclasses.replace(u, mac=fixed[u.oid]) if not u.mac and u.oid in fixed else u
                for u in self.core.snapshot.units]

    def _check(self) -> dict:
        from acctd.services.alerter import AlerterService
        mode = self.settings
        seen = read_neighbours(self.core.netns)
        mismatched, ok = check(expected_macs(self._units()), seen)
        new = {o: m for o, m in mismatched.items() if o not in self.mismatch}
        self.mismatch = {o: m for o, m in {**self.mismatch, **mismatched}.items() if o not in ok}
        snap = self.core.snapshot
        mailer = self.core.service(AlerterService).mailer
        for oid, (addr, want, got) in new.items():
            name = snap.name_of(oid)
            log.warning("mac-control: unit %s at %s: MAC %s, expected %s", name,
                        format_addr(addr), got, want)
            if "alert" in mode and mailer is not None and mailer.settings.admins:
                mailer.enqueue(list(mailer.settings.admins), f"[acctd] {name}: MAC mismatch",
                               f"Unit {name} ({oid}) at {format_addr(addr)} answers from MAC "
                               f"{got}; its MAC is {want}.\n")
        blocked = set(self.mismatch) if "block" in mode else set()
        if blocked != self.blocked:
            self.blocked = blocked
            self.core.enforce()
        return {o: {"unit": snap.name_of(o), "addr": format_addr(m[0]), "expected": m[1],
                    "seen": m[2]} for o, m in self.mismatch.items()}

    def check(self) -> dict:
        with self.core.lock:
            return {"mode": self.settings, "mismatched": self._check()}

    def fixate(self, overwrite: bool = False) -> dict:
        """NeTAMS `mac fixate`: record the MACs seen now (in the database)."""
        with self.core.lock:
            seen = read_neighbours(self.core.netns)
            got = fixate(self._units(), seen, overwrite)
            for oid, mac in got.items():
                self.core.storage.set_unit_mac(oid, mac)
            snap = self.core.snapshot
            return {snap.name_of(o): m for o, m in got.items()}
