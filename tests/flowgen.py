"""Crafted flow-table drains for the export tests: FLOW_KEY / FLOW_VAL
arrays as the kernel's drain hands them over."""

from __future__ import annotations

import ipaddress

import numpy as np

from acctd.kernel import abi
from acctd.model.addresses import parse_addr


def flows(specs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """One key and delta per spec: src, dst (address text), and optional
    proto, sport, dport, dir ("in"/"out"), ifindex, tos, vlan, inner_vlan, packets,
    bytes, first_ns, last_ns, flags."""
    k = np.zeros(len(specs), abi.FLOW_KEY)
    v = np.zeros(len(specs), abi.FLOW_VAL)
    for i, s in enumerate(specs):
        k[i]["ifindex"] = s.get("ifindex", 3)
        k[i]["dir"] = abi.Dir.OUT if s.get("dir", "out") == "out" else abi.Dir.IN
        k[i]["ip_ver"] = ipaddress.ip_address(s["src"]).version
        k[i]["proto"] = s.get("proto", 6)
        k[i]["tos"] = s.get("tos", 0)
        k[i]["vlan_outer"] = s.get("vlan", 0)
        k[i]["vlan_inner"] = s.get("inner_vlan", 0)
        k[i]["sport"], k[i]["dport"] = s.get("sport", 40000 + i), s.get("dport", 80)
        k[i]["saddr"] = np.frombuffer(parse_addr(s["src"]), np.uint8)
        k[i]["daddr"] = np.frombuffer(parse_addr(s["dst"]), np.uint8)
        v[i]["packets"], v[i]["bytes"] = s.get("packets", 1), s.get("bytes", 100)
        v[i]["first_ns"], v[i]["last_ns"] = s.get("first_ns", 0), s.get("last_ns", 0)
        v[i]["tcp_flags"] = s.get("flags", 0)
    return k, v


def many(n: int, now_ns: int, v6_every: int = 4, seed: int = 1):
    """n distinct flows (every v6_every-th one IPv6) with random counts."""
    rng = np.random.default_rng(seed)
    k = np.zeros(n, abi.FLOW_KEY)
    v = np.zeros(n, abi.FLOW_VAL)
    i = np.arange(n)
    v6 = (i % v6_every) == 0 if v6_every else np.zeros(n, bool)
    k["ifindex"], k["dir"], k["proto"] = 2 + i % 3, i % 2, np.where(i % 7 == 0, 17, 6)
    k["ip_ver"] = np.where(v6, 6, 4)
    k["sport"], k["dport"] = 1024 + i % 60000, 443
    k["tos"] = (i % 4) << 2
    k["saddr"][~v6, 10:12] = 0xFF
    k["daddr"][~v6, 10:12] = 0xFF
    k["saddr"][~v6, 12] = 10
    k["saddr"][~v6, 13:16] = np.stack([(i >> 16) & 0xFF, (i >> 8) & 0xFF, i & 0xFF], 1)[~v6]
    k["daddr"][~v6, 12:16] = [198, 51, 100, 7]
    k["saddr"][v6, 0:2] = [0x20, 0x01]
    k["saddr"][v6, 12:16] = np.stack([(i >> 24) & 0xFF, (i >> 16) & 0xFF, (i >> 8) & 0xFF,
                                      i & 0xFF], 1)[v6]
    k["daddr"][v6, 0:2] = [0x20, 0x01]
    k["daddr"][v6, 15] = 9
    v["packets"] = rng.integers(1, 1000, n)
    v["bytes"] = v["packets"] * rng.integers(40, 1500, n)
    v["first_ns"] = now_ns - rng.integers(1, 10**9, n)
    v["last_ns"] = now_ns - rng.integers(0, 10**6, n)
    v["tcp_flags"] = np.where(k["proto"] == 6, 0x18, 0)
    return k, v
