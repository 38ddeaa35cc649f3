"""The datapath: build, pin, attach and detach the BPF programs; open the maps.

Lifecycle (all state lives in bpffs under Sizes.pin_dir, none in processes):
- attach: build (or reuse the pinned programs when the build id matches),
  pin maps and programs, write each interface's role, hook it. Re-running
  attach reuses the pins, so counters continue; hooking replaces programs
  atomically (XDP and cls_bpf "replace"), and an interface already running
  our current program is left untouched (its program id does not change).
- programs stay attached when the daemon exits;
- detach: unhook every interface running one of our programs, remove pins.
  `acctctl detach` refuses while another process (a running daemon) holds
  the pinned maps (holders()); the daemon checks at every drain that its
  pins and hooks are in place (problems()) and puts back what is missing
  (repair()), from the maps and programs it holds open.

A LAN interface needs both directions: its ingress hook (XDP native, XDP
generic or TC, as configured) sees "out" traffic and a TC egress hook sees
"in" traffic (XDP has no egress). WAN interfaces get the same hooks; the
programs only enforce there.
"""

from __future__ import annotations

import errno
import os
import subprocess
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from acctd.errors import AcctError, BpfError, NotAttached, PermissionDenied
from acctd.kernel import abi, pins, syscalls
from acctd.kernel.build import Build, Layout, Sizes

HOOKS = abi.HOOKS

XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
TC_H_INGRESS_PARENT = 0xFFFFFFF2  # clsact ingress
TC_H_EGRESS_PARENT = 0xFFFFFFF3   # clsact egress
TC_PRIO = 0xAC  # our filters' priority: unique enough to find them again
TC_HANDLE = 1
ETH_P_ALL = 0x0003

PROG_PINS = ("acct_xdp", "acct_tc_ingress", "acct_tc_egress", "acct_xdp_empty")


@dataclass(frozen=True)
class Hook:
    """One interface to hook: its name, role and ingress hook mode."""
    ifname: str
    role: abi.Role
    mode: str = "tc"

    def __post_init__(self):
        if self.mode not in HOOKS:
            raise AcctError(f"interface {self.ifname}: hook must be one of {', '.join(HOOKS)}, "
                            f"not {self.mode!r}")


class NoSuchInterface(AcctError):
    """A configured interface the namespace lacks (the daemon points at its config line)."""

    def __init__(self, ifname: str, netns: str | None):
        self.ifname, self.netns = ifname, netns
        where = f"network namespace {netns!r}" if netns else "the current network namespace"
        super().__init__(f"no interface named {ifname!r} in {where}")


def check_netns(name: str) -> None:
    """A named namespace must exist already: pyroute2's NetNS(name) would
    create a mistyped one, and leave it behind."""
    if "/" in name or name in (".", "..") or not os.path.exists(f"/run/netns/{name}"):
        raise AcctError(f"network namespace {name!r} does not exist (no /run/netns/{name}; "
                        "`ip netns list` shows the namespaces there are)")


class Datapath:
    """Pinned maps and programs of one ABI version under one pin root."""

    def __init__(self, sizes: Sizes = Sizes(), netns: str | None = None):
        if netns:
            check_netns(netns)
        self.sizes = sizes
        self.netns = netns  # name under /run/netns whose interfaces we hook
        self.maps: dict[str, syscalls.Map] = {}
        self.prog_fds: dict[str, int] = {}
        self._build: Build | None = None
        # struct layouts as compiled, when this process compiled (ABI check)
        self.layouts: dict[str, Layout] = {}

    # -- maps and programs -------------------------------------------------

    @property
    def pin_dir(self) -> str:
        return self.sizes.pin_dir

    def is_pinned(self) -> bool:
        return all(os.path.exists(f"{self.pin_dir}/{m}") for m in abi.MAPS)

    def open(self) -> "Datapath":
        """Open the pinned maps (readers: daemon, acctctl). No compiler needed."""
        pins.check_owned(self.pin_dir)
        self.require_access()
        if not self.is_pinned():
            raise NotAttached(f"no acctd datapath pinned under {self.pin_dir}: "
                            "run `acctctl attach` (or start acctd) first")
        for name, (kdt, vdt, _) in abi.MAPS.items():
            if name not in self.maps:
                self.maps[name] = syscalls.Map.open_pinned(f"{self.pin_dir}/{name}", kdt, vdt)
        for name in PROG_PINS:
            path = f"{self.pin_dir}/prog_{name}"
            if name not in self.prog_fds and os.path.exists(path):
                self.prog_fds[name] = syscalls.obj_get(path)
        return self

    def require_access(self) -> None:
        """bpffs checks the pin's inode like a file's: without read and write
        on it, say "permission denied" (not the kernel's EACCES, which reads
        like a verifier refusal)."""
        probe = f"{self.pin_dir}/acct_meta"
        if os.path.exists(probe) and not os.access(
                probe, os.R_OK | os.W_OK, effective_ids=os.access in os.supports_effective_ids):
            raise PermissionDenied(f"permission denied: the datapath pinned under "
                                   f"{self.pin_dir} is root's (run as root)")

    def exists(self) -> bool:
        """Whether anything of ours is pinned under the pin root."""
        return os.path.isdir(self.pin_dir)

    def pinned_ids(self) -> dict[str, int]:
        """Pin name -> id of the map or program pinned there now."""
        out = {}
        for name in [*abi.MAPS, *(f"prog_{p}" for p in PROG_PINS)]:
            path = f"{self.pin_dir}/{name}"
            if not os.path.exists(path):
                continue
            try:
                fd = syscalls.obj_get(path)
            except BpfError as e:
                if e.errno == errno.ENOENT:  # removed meanwhile
                    continue
                raise
            try:
                info = syscalls.map_info(fd) if name in abi.MAPS else syscalls.prog_info(fd)
                out[name] = info.id
            finally:
                os.close(fd)
        return out

    def holders(self) -> list[tuple[int, str]]:
        """Other processes holding the pinned maps open, as (pid, command
        name): a running daemon (which holds them all the time), or a reader.
        Read from /proc/PID/fdinfo (map_id)."""
        ids = {str(i) for n, i in self.pinned_ids().items() if n in abi.MAPS}
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid() or not ids:
                continue
            try:
                if any(_fd_map_id(pid, fd) in ids for fd in os.listdir(f"/proc/{pid}/fd")):
                    with open(f"/proc/{pid}/comm") as f:
                        found.append((int(pid), f.read().strip()))
            except OSError:  # gone, or not ours to look into
                continue
        return found

    def problems(self, hooks: Iterable[Hook]) -> list[str]:
        """What is missing of the datapath this process holds open: pins
        removed or replaced by other objects, interfaces not running our
        programs. [] when all is in place."""
        held = {n: m.info.id for n, m in self.maps.items()}
        held |= {f"prog_{n}": syscalls.prog_info(fd).id for n, fd in self.prog_fds.items()}
        pinned = self.pinned_ids()
        out = []
        gone = [n for n in held if n not in pinned]
        if gone:
            out.append(f"pins removed under {self.pin_dir}: {', '.join(sorted(gone))}")
        other = [n for n in held if n in pinned and pinned[n] != held[n]]
        if other:
            out.append(f"pins replaced by other objects: {', '.join(sorted(other))}")
        ids = self.prog_ids()
        with self._ipr() as ipr:
            for h in hooks:
                found = ipr.link_lookup(ifname=h.ifname)
                if not found:
                    out.append(f"{h.ifname}: interface gone")
                    continue
                idx = found[0]
                want = {"tc egress": (_tc_prog_id(ipr, idx, TC_H_EGRESS_PARENT),
                                      ids.get("acct_tc_egress"))}
                if h.mode == "tc":
                    want["tc ingress"] = (_tc_prog_id(ipr, idx, TC_H_INGRESS_PARENT),
                                          ids.get("acct_tc_ingress"))
                else:
                    want["xdp"] = (_xdp_prog_id(ipr, idx), ids.get("acct_xdp"))
                for where, (cur, ours) in want.items():
                    if cur != ours:
                        out.append(f"{h.ifname}: {where} runs "
                                   f"{f'program {cur}' if cur else 'nothing'}, not acctd's")
        return out

    def repair(self, hooks: Iterable[Hook]) -> list[str]:
        """Put back pins and hooks from the maps and programs this process
        holds open (counters continue where they are), then hook again as
        attach does. Returns attach's notices."""
        pins.ensure_pin_dir(self.pin_dir)
        objs = {**{n: m.fd for n, m in self.maps.items()},
                **{f"prog_{n}": fd for n, fd in self.prog_fds.items()}}
        for name, fd in objs.items():
            path = f"{self.pin_dir}/{name}"
            tmp = path + "_new"
            pins.unlink(tmp)
            syscalls.obj_pin(fd, tmp)
            os.rename(tmp, path)  # over a foreign pin too: ours are the counted ones
        return self.attach(hooks)

    def _check_sizes(self) -> None:
        want = {"acct_flows": self.sizes.flow_entries, "acct_addrs": self.sizes.addrs,
                "acct_iface_cfg": self.sizes.max_ifindex, "acct_ifaces": self.sizes.ifaces,
                "acct_classes": self.sizes.classes, "acct_fw": self.sizes.rulesets,
                "acct_sets": self.sizes.set_prefixes, "acct_policers": self.sizes.policers}
        for name, n in want.items():
            have = self.maps[name].info.max_entries
            if have != n:
                raise AcctError(
                    f"map {name} is pinned with {have} entries but the configuration asks "
                    f"for {n}; resizing loses its counters: drain them, then "
                    "`acctctl detach` and attach again")

    def pinned_build_id(self) -> int | None:
        pins.check_owned(self.pin_dir)
        if not os.path.exists(f"{self.pin_dir}/acct_meta"):
            return None
        meta = syscalls.Map.open_pinned(f"{self.pin_dir}/acct_meta", *abi.MAPS["acct_meta"][:2])
        try:
            v = meta.lookup(np.uint32(0))
        finally:
            meta.close()
        if v is None or int(v["abi"]) != abi.ABI_VERSION:
            return None
        return int(v["build_id"])

    def load(self) -> "Datapath":
        """Make sure maps and current programs are pinned; compile only if needed."""
        want = Build(self.sizes)
        if self.pinned_build_id() == want.build_id and all(
                os.path.exists(f"{self.pin_dir}/prog_{p}") for p in PROG_PINS):
            return self.open()
        self._build = want.compile()  # maps: reused from pins by bcc, or created
        self.close()
        self.open_maps_only()
        self._check_sizes()
        for name in PROG_PINS:
            path = f"{self.pin_dir}/prog_{name}"
            tmp = path + "_new"  # bpffs refuses names with a dot
            pins.unlink(tmp)
            syscalls.obj_pin(want.prog_fds[name], tmp)
            os.rename(tmp, path)  # atomic pin replacement
        meta = self.maps["acct_meta"].lookup(np.uint32(0))  # keeps gen: the classes stay
        meta["abi"] = abi.ABI_VERSION
        meta["build_id"] = want.build_id
        self.maps["acct_meta"].update(np.uint32(0), meta)
        self.layouts = self._build.table_layouts()
        self._build.close()
        self._build = None
        return self.open()

    def open_maps_only(self) -> None:
        self.require_access()
        for name, (kdt, vdt, _) in abi.MAPS.items():
            self.maps[name] = syscalls.Map.open_pinned(f"{self.pin_dir}/{name}", kdt, vdt)

    def prog_ids(self) -> dict[str, int]:
        return {n: syscalls.prog_info(fd).id for n, fd in self.prog_fds.items()}

    def close(self) -> None:
        for m in self.maps.values():
            m.close()
        self.maps.clear()
        for fd in self.prog_fds.values():
            os.close(fd)
        self.prog_fds.clear()

    # -- hooking interfaces --------------------------------------------------

    def _ipr(self):
        from pyroute2 import IPRoute, NetNS
        return NetNS(self.netns, flags=0) if self.netns else IPRoute()  # flags=0: never create

    def check_interfaces(self, names: Iterable[str]) -> None:
        """NoSuchInterface for the first name the namespace lacks (before a
        reload changes anything)."""
        with self._ipr() as ipr:
            for name in names:
                _ifindex(ipr, name, self.netns)

    def attach(self, hooks: Iterable[Hook]) -> list[str]:
        """Hook the interfaces; returns notices for the operator (changes made
        to interfaces so the counts stay exact)."""
        hooks = list(hooks)
        notices = []
        self.load()
        ids = self.prog_ids()
        cfg = self.maps["acct_iface_cfg"]
        with self._ipr() as ipr:
            used = {int(v["slot"]) for v in self._iface_cfgs().values()}
            for h in hooks:
                idx = _ifindex(ipr, h.ifname, self.netns)
                if idx >= self.sizes.max_ifindex:
                    raise AcctError(f"interface {h.ifname} has ifindex {idx}, above the "
                                    f"configured max-ifindex {self.sizes.max_ifindex}")
                cur = cfg.lookup(np.uint32(idx))
                slot = int(cur["slot"]) if cur is not None and cur["role"] else 0
                if not slot:
                    free = sorted(set(range(1, self.sizes.ifaces)) - used)
                    if not free:
                        raise AcctError(f"too many hooked interfaces (max {self.sizes.ifaces - 1})")
                    slot = free[0]
                    used.add(slot)
                entry = np.zeros(1, abi.IFACE_CFG)
                entry["role"] = int(h.role)
                entry["slot"] = slot
                # Role first, then the hook: the first packet already has a role.
                cfg.update(np.uint32(idx), entry[0])
                try:
                    if h.mode == "tc":
                        _xdp_set(ipr, idx, -1, XDP_FLAGS_SKB_MODE | XDP_FLAGS_DRV_MODE, ids["acct_xdp"])
                        _tc_set(ipr, idx, TC_H_INGRESS_PARENT, self.prog_fds["acct_tc_ingress"],
                                "acct_tc_ingress", ids["acct_tc_ingress"])
                    else:
                        _tc_del_ours(ipr, idx, TC_H_INGRESS_PARENT)
                        mode = XDP_FLAGS_DRV_MODE if h.mode == "xdp-native" else XDP_FLAGS_SKB_MODE
                        if h.mode == "xdp-generic":
                            notices += self._no_receive_offloads(h.ifname, ipr, idx)
                        _xdp_set(ipr, idx, self.prog_fds["acct_xdp"], mode, ids["acct_xdp"])
                    _tc_set(ipr, idx, TC_H_EGRESS_PARENT, self.prog_fds["acct_tc_egress"],
                            "acct_tc_egress", ids["acct_tc_egress"])
                except BpfError as e:
                    raise e.with_context(f"hooking {h.ifname} ({h.mode})") from None
        self._mark_egress_first()
        return notices

    def _mark_egress_first(self) -> None:
        """fw-policies and rate limits act once per direction, at ingress; an
        egress hook acts too when no hook of the other role exists, because it
        is then the first (only) hook that sees its direction."""
        cfg = self.maps["acct_iface_cfg"]
        cfgs = self._iface_cfgs()
        roles = {int(v["role"]) for v in cfgs.values()}
        other = {abi.Role.LAN: abi.Role.WAN, abi.Role.WAN: abi.Role.LAN}
        for idx, v in cfgs.items():
            flags = 0 if other.get(int(v["role"])) in roles else abi.IF_EGRESS_FIRST
            if int(v["flags"]) != flags:
                v = v.copy()
                v["flags"] = flags
                cfg.update(np.uint32(idx), v)

    def _no_receive_offloads(self, ifname: str, ipr, idx: int) -> list[str]:
        """Generic XDP runs after GRO/LRO and cannot see how many wire packets
        a merged packet stood for, so merging is turned off where it hooks.
        A veth peer hands over its own GSO packets whole: there, only TC counts
        exactly."""
        argv = ["ethtool", "-K", ifname, "gro", "off"]
        if self.netns:
            argv = ["nsenter", f"--net=/run/netns/{self.netns}", *argv]
        notes = []
        res = subprocess.run(argv, capture_output=True, text=True)
        if res.returncode == 0:
            notes.append(f"{ifname}: GRO turned off: generic XDP counts merged packets as one")
        else:
            notes.append(f"{ifname}: could not turn GRO off ({res.stderr.strip()}); generic XDP "
                         "will count GRO-merged packets as one: use hook = \"tc\" for exact counts")
        subprocess.run(argv[:-3] + ["lro", "off"], capture_output=True)  # often fixed off
        kind = ipr.get_links(idx)[0].get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
        if kind == "veth":
            notes.append(f"{ifname}: a veth peer sends GSO packets whole; generic XDP cannot "
                         "count their segments: use hook = \"tc\" for exact counts")
        return notes

    def ifnames(self) -> dict[int, str]:
        """ifindex -> name of the hooked interfaces (for logs that name them)."""
        with self._ipr() as ipr:
            out = {}
            for idx in self._iface_cfgs():
                try:
                    out[idx] = ipr.get_links(idx)[0].get_attr("IFLA_IFNAME")
                except Exception:  # gone meanwhile: the log says if<N>
                    pass
            return out

    def _iface_cfgs(self) -> dict[int, np.void]:
        keys, vals = self.maps["acct_iface_cfg"].read_all()
        used = np.flatnonzero(vals["role"])
        return {int(keys[i]): vals[i] for i in used}

    def hooked_slots(self) -> dict[int, tuple[int, abi.Role]]:
        """ifindex -> (slot, role) from the pinned config alone (no netlink)."""
        return {i: (int(v["slot"]), abi.Role(int(v["role"]))) for i, v in self._iface_cfgs().items()}

    def hooked(self) -> dict[int, dict]:
        """ifindex -> {'role', 'slot', 'xdp', 'tc_ingress', 'tc_egress'} as seen in the kernel."""
        self.open()
        out = {}
        with self._ipr() as ipr:
            for idx, v in self._iface_cfgs().items():
                out[idx] = {"role": abi.Role(int(v["role"])), "slot": int(v["slot"]),
                            "xdp": _xdp_prog_id(ipr, idx),
                            "tc_ingress": _tc_prog_id(ipr, idx, TC_H_INGRESS_PARENT),
                            "tc_egress": _tc_prog_id(ipr, idx, TC_H_EGRESS_PARENT)}
        return out

    def detach(self) -> list[int]:
        """Unhook every interface we configured and remove all pins."""
        unhooked = []
        if os.path.exists(f"{self.pin_dir}/acct_iface_cfg"):
            if not self.maps:
                self.open_maps_only()
            ours = set()
            for p in PROG_PINS:
                path = f"{self.pin_dir}/prog_{p}"
                if os.path.exists(path):
                    fd = syscalls.obj_get(path)
                    ours.add(syscalls.prog_info(fd).id)
                    os.close(fd)
            with self._ipr() as ipr:
                for idx in self._iface_cfgs():
                    try:
                        _xdp_set(ipr, idx, -1, XDP_FLAGS_SKB_MODE | XDP_FLAGS_DRV_MODE, None, ours)
                        _tc_del_ours(ipr, idx, TC_H_INGRESS_PARENT)
                        _tc_del_ours(ipr, idx, TC_H_EGRESS_PARENT)
                        _clsact_del_if_empty(ipr, idx)
                    except BpfError as e:
                        if e.errno != errno.ENODEV:
                            raise
                    unhooked.append(idx)
        self.close()
        pins.remove_tree(self.pin_dir)
        return unhooked


def _fd_map_id(pid: str, fd: str) -> str | None:
    """The id of the BPF map behind a process's fd, if it is one."""
    try:
        if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:bpf-map":
            return None
        with open(f"/proc/{pid}/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("map_id:"):
                    return line.split()[1]
    except OSError:  # closed meanwhile
        pass
    return None


def _ifindex(ipr, ifname: str, netns: str | None) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise NoSuchInterface(ifname, netns)
    return found[0]


def _nl(fn, *args, **kw):
    from pyroute2.netlink.exceptions import NetlinkError
    try:
        return fn(*args, **kw)
    except NetlinkError as e:
        raise BpfError.from_errno(e.code, f"netlink: {e}") from None


def _xdp_prog_id(ipr, idx: int) -> int:
    link = ipr.get_links(idx)[0]
    xdp = link.get_attr("IFLA_XDP")
    return (xdp.get_attr("IFLA_XDP_PROG_ID") or 0) if xdp else 0


def _xdp_set(ipr, idx: int, fd: int, flags: int, want_id: int | None,
             ours: set[int] | None = None) -> None:
    cur = _xdp_prog_id(ipr, idx)
    if fd >= 0:
        if cur == want_id and _xdp_mode_flags(ipr, idx) == flags:
            return  # already running the current build in this mode: keep its id
        if cur and _xdp_mode_flags(ipr, idx) not in (0, flags):
            # Switching native<->generic: remove the old attachment first.
            _nl(ipr.link, "set", index=idx,
                xdp={"attrs": [("IFLA_XDP_FD", -1), ("IFLA_XDP_FLAGS", _xdp_mode_flags(ipr, idx))]})
        _nl(ipr.link, "set", index=idx,
            xdp={"attrs": [("IFLA_XDP_FD", fd), ("IFLA_XDP_FLAGS", flags)]})
        return
    # Removing: only a program of ours, in whichever mode it runs.
    if not cur or (ours is not None and cur not in ours):
        return
    if ours is None and want_id is not None and cur != want_id:
        return
    _nl(ipr.link, "set", index=idx,
        xdp={"attrs": [("IFLA_XDP_FD", -1), ("IFLA_XDP_FLAGS", _xdp_mode_flags(ipr, idx))]})


def _xdp_mode_flags(ipr, idx: int) -> int:
    xdp = ipr.get_links(idx)[0].get_attr("IFLA_XDP")
    mode = xdp.get_attr("IFLA_XDP_ATTACHED") if xdp else None
    return {"xdp": XDP_FLAGS_DRV_MODE, "xdpgeneric": XDP_FLAGS_SKB_MODE}.get(mode, 0)


def _ensure_clsact(ipr, idx: int) -> None:
    from pyroute2.netlink.exceptions import NetlinkError
    try:
        ipr.tc("add", "clsact", idx)
    except NetlinkError as e:
        if e.code != errno.EEXIST:
            raise BpfError.from_errno(e.code, f"adding clsact qdisc: {e}") from None


def _tc_filters(ipr, idx: int, parent: int):
    from pyroute2.netlink.exceptions import NetlinkError
    try:
        return [f for f in ipr.get_filters(index=idx, parent=parent)
                if f.get_attr("TCA_KIND") == "bpf" and (f["info"] >> 16) == TC_PRIO]
    except NetlinkError as e:
        if e.code in (errno.EINVAL, errno.ENOENT):
            return []  # no clsact qdisc
        raise BpfError.from_errno(e.code, f"listing tc filters: {e}") from None


def _tc_prog_id(ipr, idx: int, parent: int) -> int:
    # pyroute2 does not decode TCA_BPF_ID, so our filters carry the program
    # id in their name: "acct_tc_ingress:<id>".
    for f in _tc_filters(ipr, idx, parent):
        opts = f.get_attr("TCA_OPTIONS")
        name = (opts.get_attr("TCA_BPF_NAME") or "") if opts is not None else ""
        if ":" in name:
            return int(name.rsplit(":", 1)[1])
    return 0


def _tc_set(ipr, idx: int, parent: int, fd: int, name: str, want_id: int) -> None:
    _ensure_clsact(ipr, idx)
    if _tc_prog_id(ipr, idx, parent) == want_id:
        return
    # "replace" swaps the program of our (prio, handle) filter atomically.
    _nl(ipr.tc, "replace-filter", "bpf", idx, TC_HANDLE, parent=parent, prio=TC_PRIO,
        protocol=ETH_P_ALL, fd=fd, name=f"{name}:{want_id}", direct_action=True)


def _tc_del_ours(ipr, idx: int, parent: int) -> None:
    if not _tc_filters(ipr, idx, parent):
        return
    _nl(ipr.tc, "del-filter", "bpf", idx, TC_HANDLE, parent=parent, prio=TC_PRIO,
        protocol=ETH_P_ALL)


def _clsact_del_if_empty(ipr, idx: int) -> None:
    """Leave nothing behind: drop the clsact qdisc once no filter uses it."""
    from pyroute2.netlink.exceptions import NetlinkError
    try:
        for parent in (TC_H_INGRESS_PARENT, TC_H_EGRESS_PARENT):
            if ipr.get_filters(index=idx, parent=parent):
                return
        ipr.tc("del", "clsact", idx)
    except NetlinkError as e:
        if e.code not in (errno.EINVAL, errno.ENOENT):
            raise BpfError.from_errno(e.code, f"removing clsact qdisc: {e}") from None
