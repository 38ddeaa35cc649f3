"""Read the whole datapath state into plain reports: per address, per VLAN,
per (protocol, port), per interface and health, as absolute counters or as
deltas since the last drain. Shared by the daemon, acctctl and the demo."""

from __future__ import annotations

import numpy as np

from acctd.kernel import abi, drain
from acctd.model.addresses import format_addr

_PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}


def port_label(slot: int) -> str:
    if slot >= abi.PORT_PROTO_BASE:
        p = slot - abi.PORT_PROTO_BASE
        return _PROTO_NAMES.get(p, f"proto-{p}")
    if slot >= abi.PORT_UDP_BASE:
        return f"udp/{slot - abi.PORT_UDP_BASE}"
    return f"tcp/{slot}"


def vlan_label(slot: int) -> str:
    if slot >= abi.VLAN_SLOTS:
        return f"inner-{slot - abi.VLAN_SLOTS}"
    return "untagged" if slot == 0 else str(slot)


def pairs(v, fields=("packets", "bytes")) -> dict:
    """{field_in, field_out}; drop counters summed over their causes."""
    out = {}
    for f in fields:
        x = np.asarray(v[f])
        if x.ndim == 2:
            x = x.sum(axis=0)
        out[f"{f}_in"] = int(x[abi.Dir.IN])
        out[f"{f}_out"] = int(x[abi.Dir.OUT])
    return out


def _drops(v) -> dict:
    """Dropped packets/bytes per cause (block, fw, police) and direction."""
    out = {}
    for c in abi.Drop:
        p, b = v["drop_packets"][c], v["drop_bytes"][c]
        if p.any():
            out[c.name.lower()] = {"packets_in": int(p[0]), "packets_out": int(p[1]),
                                   "bytes_in": int(b[0]), "bytes_out": int(b[1])}
    return out


class Reader:
    """Absolute counters, or deltas against the previous call of drain()."""

    def __init__(self, dp):
        self.dp = dp
        self._addr_deltas = drain.Deltas()
        self._prev_arrays: dict[str, np.ndarray] = {}

    def _arrays(self) -> dict[str, np.ndarray]:
        return {n: drain.read(self.dp.maps[n])[1] for n in ("acct_vlans", "acct_ports", "acct_ifaces")}

    def baseline(self) -> None:
        """Start counting deltas from now (the kernel counters carry on)."""
        self._addr_deltas.seed(*drain.read(self.dp.maps["acct_addrs"]))
        self._prev_arrays = self._arrays()

    def drain(self) -> dict:
        d = self._addr_deltas.update(*drain.read(self.dp.maps["acct_addrs"]))
        arrays = self._arrays()
        deltas = {n: drain.array_delta(v, self._prev_arrays.get(n)) for n, v in arrays.items()}
        self._prev_arrays = arrays
        return report(d.keys, d.values, deltas, self.dp.hooked_slots(), self._class_of)

    def totals(self) -> dict:
        """Absolute counters since the datapath was first attached."""
        keys, vals = drain.read(self.dp.maps["acct_addrs"])
        return report(keys, vals, self._arrays(), self.dp.hooked_slots(), self._class_of)

    def _class_of(self, addr: np.ndarray):
        """The address's class as the kernel holds it (longest prefix match)."""
        k = np.zeros(1, abi.CLASS_KEY)
        k["prefixlen"], k["addr"] = 128, addr
        return self.dp.maps["acct_classes"].lookup(k[0])


def report(addr_keys, addr_vals, arrays: dict, slots: dict[int, tuple[int, abi.Role]],
           class_of=None) -> dict:
    addrs = {}
    for k, v in zip(addr_keys, addr_vals):
        row = pairs(v, ("packets", "bytes", "drop_packets", "drop_bytes"))
        cls = class_of(k["addr"]) if class_of else None
        sys_policy = int(cls["sys_policy"]) if cls is not None else 0
        if any(row.values()) or sys_policy:
            blocked = sys_policy & abi.SYS_DENY_MASK and not sys_policy & abi.SysPolicy.ALLOW
            row["verdict"] = "drop" if blocked else "pass"
            row["sys_policy"] = sys_policy
            if cls is not None and int(cls["fw"]) == abi.Fw.RULES:
                row["fw"] = "rules"
            elif cls is not None and int(cls["fw"]) == abi.Fw.DROP:
                row["fw"] = "drop"
            row["drops"] = _drops(v)
            addrs[format_addr(k["addr"])] = row
    out = {"addrs": addrs, "vlans": {}, "ports": {}, "ifaces": {}, "health": {}}
    for name, key in (("acct_vlans", "vlans"), ("acct_ports", "ports")):
        vals = arrays[name]
        label = vlan_label if key == "vlans" else port_label
        moved = np.flatnonzero((vals["packets"] != 0).any(axis=1))
        out[key] = {label(int(i)): pairs(vals[i]) for i in moved}
    ifs = arrays["acct_ifaces"]
    totals = dict.fromkeys(("packets_in", "packets_out", "bytes_in", "bytes_out"), 0)
    unattr = dict.fromkeys(("unattr_packets_in", "unattr_packets_out",
                            "unattr_bytes_in", "unattr_bytes_out"), 0)
    health = {h.name.lower(): 0 for h in abi.Health}
    for ifindex, (slot, role) in slots.items():
        v = ifs[slot]
        row = pairs(v, ("packets", "bytes", "unattr_packets", "unattr_bytes",
                         "drop_packets", "drop_bytes"))
        row["role"] = role.name.lower()
        row["health"] = {h.name.lower(): int(v["health"][h]) for h in abi.Health}
        out["ifaces"][ifindex] = row
        for h in abi.Health:
            health[h.name.lower()] += int(v["health"][h])
        if role == abi.Role.LAN:  # only LAN hooks account
            for k in totals:
                totals[k] += row[k]
            for k in unattr:
                unattr[k] += row[k]
    out["totals"] = totals | unattr
    out["health"] = health
    return out
