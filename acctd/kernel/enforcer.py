"""Writes an enforcement plan (acctd.model.enforcement) into the datapath's
maps: classes, fw rulesets, prefix sets and policers, changing only what
differs from what the kernel holds."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np

from acctd.kernel import abi
from acctd.model import sys_policy
from acctd.model.enforcement import DEFAULT_BURST_S, MIN_BURST, ClassSpec, FwError, prefix_text


def policer_value(bps: int, burst_s: float = DEFAULT_BURST_S) -> tuple[int, int]:
    """(ns_per_byte << POLICER_SHIFT, burst_ns) of a rate in bit/s."""
    bytes_per_s = bps / 8
    ns_per_byte = int(round(1e9 / bytes_per_s * (1 << abi.POLICER_SHIFT)))
    burst_bytes = max(bytes_per_s * burst_s, MIN_BURST)
    return ns_per_byte, int(burst_bytes * 1e9 / bytes_per_s)


class Enforcer:
    """Writes a plan into the datapath's maps, changing only what differs.

    Order keeps every packet's view consistent: new prefix sets and rulesets
    go to free slots first, then rate limits, then the classes that point at
    them, then acct_meta.gen moves so each CPU re-reads its cached classes,
    and only then are slots nobody points at any more cleared."""

    def __init__(self, maps: Mapping, burst_s: float = DEFAULT_BURST_S):
        self.maps = maps
        self.burst_s = burst_s
        self._classes: dict[tuple[bytes, int], tuple] | None = None  # as last written
        self._rulesets: dict[bytes, int] | None = None    # atoms bytes -> index
        self._sets: dict[frozenset, int] | None = None    # prefixes -> set id
        self._policers: dict[tuple, int] = {}

    # reading the kernel's state (at start: the kernel kept it while we were down)

    def _load(self) -> None:
        self._classes = self.kernel_classes()
        keys, vals = self.maps["acct_fw"].read_all()
        self._rulesets = {vals[j].tobytes(): int(keys[j])
                          for j in np.flatnonzero(vals["n_atoms"]) if keys[j]}
        keys, _ = self.maps["acct_sets"].read_all()
        by_set: dict[int, set] = {}
        for k in keys:
            by_set.setdefault(int(k["set"]), set()).add((bytes(k["addr"]), int(k["prefixlen"]) - 32))
        self._sets = {frozenset(v): s for s, v in by_set.items()}

    def kernel_classes(self) -> dict[tuple[bytes, int], tuple]:
        """(prefix, length) -> (sys_policy, fw, ruleset, flags, policer in, policer out), read now."""
        keys, vals = self.maps["acct_classes"].read_all()
        return {(bytes(k["addr"]), int(k["prefixlen"])): _class_tuple(v)
                for k, v in zip(keys, vals)}

    def kernel_blocks(self) -> dict[str, int]:
        return {prefix_text(k): _blocks(v[0]) for k, v in self.kernel_classes().items()
                if sys_policy.verdict(v[0]) == abi.Verdict.DROP}

    # writing

    def apply(self, classes: Mapping[tuple[bytes, int], ClassSpec]) -> dict:
        """Make the kernel hold `classes`. Returns what moved: {'changed': n,
        'removed': n, 'blocks': {prefix: (sys_policy before, sys_policy now)}}."""
        if self._classes is None:
            self._load()
        self._write_policers(classes)
        used_sets: set[int] = set()
        used_rulesets: set[int] = set()
        want: dict[tuple[bytes, int], tuple] = {}
        for pfx, c in classes.items():
            ruleset = 0
            if c.fw == abi.Fw.RULES:
                ruleset = self._ruleset(c, used_sets)
                used_rulesets.add(ruleset)
            pol = [self._policers.get(("unit", c.unit_oid, d, c.bw[d] if c.bw else None), 0)
                   for d in range(abi.DIR_MAX)]
            flags = (abi.CLASS_UNIT if c.unit_oid else 0) | (abi.CLASS_PORTAL if c.portal else 0)
            bits = int(c.sys_policy)
            if c.peers:
                peer_set = self._peer_set(c.peers, used_sets)
                used_rulesets.add(peer_set)
                flags |= peer_set << abi.CLASS_PEER_SHIFT
                bits |= abi.SysPolicy.PEERS
            want[pfx] = (bits, int(c.fw), ruleset, flags, *pol)

        old = self._classes
        m = self.maps["acct_classes"]
        changed, moved = 0, {}
        for pfx, t in want.items():
            if old.get(pfx) != t:
                m.update(_class_key(pfx), _class_val(t))
                changed += 1
                before = _blocks(old.get(pfx, (0,))[0])
                if before != _blocks(t[0]):
                    moved[pfx] = (before, _blocks(t[0]))
        stale = [p for p in old if p not in want]
        for pfx in stale:
            m.delete(_class_key(pfx))
            if _blocks(old[pfx][0]):
                moved[pfx] = (_blocks(old[pfx][0]), 0)
        self._classes = want
        if changed or stale:
            self.bump()
        self._free(used_rulesets, used_sets)
        return {"changed": changed, "removed": len(stale), "blocks": moved}

    def bump(self) -> None:
        """Tell every CPU to re-read its cached classes at its next packet."""
        meta = self.maps["acct_meta"]
        v = meta.lookup(np.uint32(0))
        v["gen"] = (int(v["gen"]) + 1) & 0xFFFFFFFF or 1
        meta.update(np.uint32(0), v)

    def _write_policers(self, classes) -> None:
        """One policer per (unit, direction) with a bw, and per (unit, policy,
        direction) for policies with a bw. A policer keeps its slot, and so
        its bucket, while its key and rate stay; new ones take free slots."""
        want = set()
        for c in classes.values():
            for d in range(abi.DIR_MAX):
                if c.bw and c.bw[d]:
                    want.add(("unit", c.unit_oid, d, c.bw[d]))
                for r in c.rules:
                    if r.bw and r.bw[d]:
                        want.add(("fw", c.unit_oid, r.policy_oid, d, r.bw[d]))
        m = self.maps["acct_policers"]
        keep = {k: i for k, i in self._policers.items() if k in want}
        taken = set(keep.values())
        free = (i for i in range(1, m.info.max_entries) if i not in taken)
        for k in sorted(want - set(keep), key=str):
            i = next(free, None)
            if i is None:
                raise FwError(f"more rate limits than the policer table holds "
                              f"({m.info.max_entries - 1})")
            v = np.zeros(1, abi.POLICER)
            v["ns_per_byte"], v["burst_ns"] = policer_value(k[-1], self.burst_s)
            cur = m.lookup(np.uint32(i))
            if cur is None or (int(cur["ns_per_byte"]), int(cur["burst_ns"])) != \
                    (int(v["ns_per_byte"][0]), int(v["burst_ns"][0])):
                m.update(np.uint32(i), v[0])  # a restart with the same config keeps buckets
            keep[k] = i
        for i in set(self._policers.values()) - set(keep.values()):
            m.update(np.uint32(i), np.zeros(1, abi.POLICER)[0])
        self._policers = keep

    def _ruleset(self, c: ClassSpec, used_sets: set) -> int:
        """The index of c's compiled rules: shared by every unit whose rules
        (and limits) are the same; new content goes to a free slot."""
        v = np.zeros(1, abi.FW_SET)
        atoms = v["atoms"][0]
        n = 0
        for rule in c.rules:
            for j, atom in enumerate(rule.atoms):
                a = atoms[n]
                flags = 0
                a["proto"] = atom.proto
                if atom.tos is not None:
                    flags |= abi.Atom.TOS
                    a["tos"] = atom.tos
                a["sport_lo"], a["sport_hi"] = atom.sport or (0, 65535)
                a["dport_lo"], a["dport_hi"] = atom.dport or (0, 65535)
                if atom.sport or atom.dport:
                    flags |= abi.Atom.PORTS
                if atom.vlan is not None:
                    flags |= abi.Atom.VLAN
                    a["vlan"] = atom.vlan
                a["ifindex"] = atom.ifindex
                if atom.addr_set is not None:
                    a["addr_set"] = self._set(atom.addr_set)
                    used_sets.add(int(a["addr_set"]))
                    if atom.any_side:
                        flags |= abi.Atom.ADDR_ANY_SIDE
                if rule.invert:
                    flags |= abi.Atom.INVERT
                if j == len(rule.atoms) - 1:
                    flags |= abi.Atom.LAST | (abi.Atom.DENY if rule.deny else 0)
                a["policer"] = [self._policers.get(
                    ("fw", c.unit_oid, rule.policy_oid, d, rule.bw[d] if rule.bw else None), 0)
                    for d in range(abi.DIR_MAX)]
                a["flags"] = flags
                n += 1
        v["n_atoms"] = n
        return self._store(v)

    def _peer_set(self, peers, used_sets: set) -> int:
        """The acct_fw index of a unit's sys-allow-OID / sys-deny-OID atoms:
        the peer unit's prefixes as the remote side, allow or deny."""
        v = np.zeros(1, abi.FW_SET)
        for a, (prefixes, allow) in zip(v["atoms"][0], peers):
            a["sport_hi"] = a["dport_hi"] = 65535
            a["addr_set"] = self._set(prefixes)
            used_sets.add(int(a["addr_set"]))
            a["flags"] = abi.Atom.PEER_ALLOW if allow else 0
        v["n_atoms"] = len(peers)
        return self._store(v)

    def _store(self, v: np.ndarray) -> int:
        """The acct_fw slot holding this set: shared by every class with the
        same content; new content goes to a free slot."""
        raw = v[0].tobytes()
        idx = self._rulesets.get(raw)
        if idx is None:
            m = self.maps["acct_fw"]
            taken = set(self._rulesets.values())
            idx = next((i for i in range(1, m.info.max_entries) if i not in taken), None)
            if idx is None:
                raise FwError(f"more distinct fw-policy lists than the kernel table holds "
                              f"({m.info.max_entries - 1})")
            m.update(np.uint32(idx), v[0])
            self._rulesets[raw] = idx
        return idx

    def _set(self, prefixes: frozenset) -> int:
        sid = self._sets.get(prefixes)
        if sid is None:
            taken = set(self._sets.values())
            sid = next(i for i in itertools.count(1) if i not in taken)
            m = self.maps["acct_sets"]
            for addr, plen in prefixes:
                m.update(_set_key(sid, addr, plen), np.uint32(1))
            self._sets[prefixes] = sid
        return sid

    def _free(self, used_rulesets: set, used_sets: set) -> None:
        """Clear slots no class points at any more (after the gen bump)."""
        for raw, idx in list(self._rulesets.items()):
            if idx not in used_rulesets:
                self.maps["acct_fw"].update(np.uint32(idx), np.zeros(1, abi.FW_SET)[0])
                del self._rulesets[raw]
        for prefixes, sid in list(self._sets.items()):
            if sid not in used_sets:
                for addr, plen in prefixes:
                    self.maps["acct_sets"].delete(_set_key(sid, addr, plen))
                del self._sets[prefixes]


def _blocks(bits: int) -> int:
    """A class's sys_policy as the core decided it: without the PEERS mark."""
    return bits & ~int(abi.SysPolicy.PEERS)


def _class_tuple(v) -> tuple:
    return (int(v["sys_policy"]), int(v["fw"]), int(v["ruleset"]), int(v["flags"]),
            int(v["policer"][0]), int(v["policer"][1]))


def _class_key(pfx: tuple[bytes, int]) -> np.ndarray:
    k = np.zeros(1, abi.CLASS_KEY)
    k["prefixlen"] = pfx[1]
    k["addr"] = np.frombuffer(pfx[0], np.uint8)
    return k[0]


def _class_val(t: tuple) -> np.ndarray:
    v = np.zeros(1, abi.CLASS)
    v["sys_policy"], v["fw"], v["ruleset"], v["flags"] = t[:4]
    v["policer"] = t[4:]
    return v[0]


def _set_key(sid: int, addr: bytes, plen: int) -> np.ndarray:
    k = np.zeros(1, abi.SET_KEY)
    k["prefixlen"] = 32 + plen
    k["set"] = sid
    k["addr"] = np.frombuffer(addr, np.uint8)
    return k[0]
