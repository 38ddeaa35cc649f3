"""`make bench`: datapath figures as JSON lines {"name", "value", "unit"}.

Per-packet cost: BPF_PROG_RUN on the loopback device (a LAN interface in a
private pin root), the kernel's own per-run duration, minus the same for an
empty XDP program. Distinct flows are emulated by cycling through N
prebuilt packets (N/1024 ports on each of up to 1,024 local addresses), one
run each, after a warm-up pass that inserted them: every run then looks up
a different flow and address, as a busy link does, instead of hitting the
same cache-hot entry `repeat` times.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

import numpy as np

from acctd.kernel import abi, syscalls, drain
from acctd.kernel.build import Sizes
from acctd.kernel.datapath import Datapath

LO = 1


def emit(name: str, value: float, unit: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 4), "unit": unit}), flush=True)


BENCH_PROGRAMS = {"acct_bench.c": {"acct_xdp_bench": "XDP", "acct_xdp_bench_base": "XDP",
                                    "acct_tc_bench": "SCHED_CLS", "acct_tc_bench_base": "SCHED_CLS"}}


def packet() -> np.ndarray:
    """One Ethernet/IPv4/UDP frame from a local address (10.8.0.0), its
    lengths true to the frame (IP 46, UDP 26): the datapath refuses to
    account a packet whose IP length claims more than the frame carries."""
    f = bytearray(14 + 20 + 8 + 18)
    f[0:14] = bytes.fromhex("020000000002020000000001") + b"\x08\x00"
    f[14:34] = bytes.fromhex("4500002e00000000401100000a080000c0000201")
    f[34:42] = bytes.fromhex("04000035001a0000")
    return np.frombuffer(bytes(f), np.uint8).copy()


def mean_ns(fd: int, pkt: np.ndarray, repeat: int) -> float:
    return float(syscalls.prog_test_run(fd, pkt, repeat=repeat)[1])


def best(fn, tries: int = 3) -> float:
    """The machine is noisy: the least disturbed of a few runs."""
    return min(fn() for _ in range(tries))


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("bench: needs root (BPF_PROG_RUN)")
    # Each figure on a datapath sized as a site with that many flows would
    # size it: the flow table's bucket count decides its cache footprint.
    with bench_datapath(flows=65536, bench_programs=True) as (dp, build):
        bench_per_packet(build)
    with bench_datapath(flows=1_000_000, bench_programs=False) as (dp, build):
        bench_drain(dp)


@contextlib.contextmanager
def bench_datapath(flows: int, bench_programs: bool):
    from acctd.kernel.build import Build
    from acctd.kernel.pins import ensure_pin_dir
    sizes = Sizes(pin_root=f"/sys/fs/bpf/acctd-bench-{os.getpid()}", flows=flows, addrs=4096)
    ensure_pin_dir(sizes.pin_dir)
    build = Build(sizes, extra=BENCH_PROGRAMS if bench_programs else None)
    dp = Datapath(sizes)
    try:
        build.compile()
        dp.open_maps_only()
        cfg = np.zeros(1, abi.IFACE_CFG)
        cfg["role"], cfg["slot"] = int(abi.Role.LAN), 1
        dp.maps["acct_iface_cfg"].update(np.uint32(LO), cfg[0])
        yield dp, build
    finally:
        build.close()
        dp.detach()


def bench_per_packet(build) -> None:
    import ctypes
    fd = build.prog_fds
    pkt = packet()
    empty = best(lambda: mean_ns(fd["acct_xdp_empty"], pkt, 2_000_000))
    emit("datapath.empty_prog_ns", empty, "ns")
    emit("datapath.xdp_ns.flows_1",
         best(lambda: mean_ns(fd["acct_xdp"], pkt, 2_000_000)) - empty, "ns")
    bcfg = build.table("acct_bench_cfg")
    for n, label in ((1024, "flows_1k"), (65536, "flows_64k")):
        v = bcfg[ctypes.c_uint32(0)]
        v.nflows, v.naddrs = n, min(n, 1024)
        bcfg[ctypes.c_uint32(0)] = v
        repeat = max(16 * n, 1_000_000)
        mean_ns(fd["acct_xdp_bench"], pkt, 2 * n)  # warm-up: insert every flow
        base = best(lambda: mean_ns(fd["acct_xdp_bench_base"], pkt, repeat))
        emit(f"datapath.xdp_ns.{label}",
             best(lambda: mean_ns(fd["acct_xdp_bench"], pkt, repeat)) - base, "ns")
        if label == "flows_1k":
            bench_fw(build, repeat)
        if label == "flows_64k":
            bench_decision(build)
            mean_ns(fd["acct_tc_bench"], pkt, 2 * n)
            base = best(lambda: mean_ns(fd["acct_tc_bench_base"], pkt, repeat))
            emit("datapath.tc_ns.flows_64k",
                 best(lambda: mean_ns(fd["acct_tc_bench"], pkt, repeat)) - base, "ns")


def bench_decision(build) -> None:
    """Decision -> first dropped packet: the class of an address that is live
    in the table (the 64k-flow run filled it) is written and the generation
    bumped; the next packet from it runs through acct_xdp and must drop."""
    from acctd.kernel import enforcer
    from acctd.model import enforcement
    from acctd.model.addresses import parse_addr
    dp = Datapath(build.sizes)
    dp.open_maps_only()
    enf = enforcer.Enforcer(dp.maps)
    addr = (parse_addr("10.8.0.5"), 128)
    pkt = packet()
    pkt[26:30] = [10, 8, 0, 5]   # source 10.8.0.5
    fd = build.prog_fds["acct_xdp"]
    times = []
    for blocked in (True, False) * 5:
        t = time.perf_counter()
        enf.apply({addr: enforcement.ClassSpec(abi.SysPolicy.DENY if blocked else 0, abi.Fw.PASS,
                                           unit_oid="020001")})
        ret = syscalls.prog_test_run(fd, pkt)[0]
        times.append(time.perf_counter() - t)
        assert ret == (1 if blocked else 2), "verdict did not follow the decision"
    enf.apply({})
    dp.close()
    emit("enforce.decision_to_first_drop_ms", 1000 * sorted(times)[len(times) // 2], "ms")


def bench_fw(build, repeat: int) -> None:
    """A unit with a full fw-policy list whose last policy passes the packet,
    with a rate limit too high to drop: the worst case of the enforcement
    path, against the same packets with no class at all."""
    from acctd.kernel import enforcer
    from acctd.model import enforcement
    from acctd.model.addresses import parse_prefix
    dp = Datapath(build.sizes)
    dp.open_maps_only()
    enf = enforcer.Enforcer(dp.maps)
    rules = tuple(enforcement.Rule((enforcement.Atom(proto=6, dport=(p, p)),), False, f"14000{p}", None)
                  for p in range(1, abi.FW_ATOMS))
    rules += (enforcement.Rule((enforcement.Atom(proto=17),), False, "140000", (10 ** 10, 10 ** 10)),)
    enf.apply({parse_prefix("10.8.0.0/16"): enforcement.ClassSpec(0, abi.Fw.RULES, rules, "040001",
                                                               (10 ** 10, 10 ** 10))})
    fd = build.prog_fds
    pkt = packet()
    base = best(lambda: mean_ns(fd["acct_xdp_bench_base"], pkt, repeat))
    emit("datapath.xdp_ns.fw_8_atoms_policed",
         best(lambda: mean_ns(fd["acct_xdp_bench"], pkt, repeat)) - base, "ns")
    enf.apply({})
    dp.close()


def fill_flows(m: syscalls.Map, n: int) -> None:
    keys = np.zeros(n, abi.FLOW_KEY)
    keys["ifindex"] = 7
    keys["ip_ver"] = 4
    keys["proto"] = 17
    idx = np.arange(n, dtype=np.uint32)
    keys["saddr"][:, 10:12] = 0xFF
    keys["saddr"][:, 12] = 10
    keys["saddr"][:, 13:16] = np.stack([(idx >> 16) & 0xFF, (idx >> 8) & 0xFF, idx & 0xFF], 1)
    keys["sport"] = 5000
    vals = np.zeros((n, m.ncpus), abi.FLOW_VAL)
    vals["packets"] = 3
    vals["bytes"] = 1500
    for s in range(0, n, 65536):
        m.update_batch(keys[s:s + 65536], vals[s:s + 65536])


def bench_drain(dp: Datapath) -> None:
    flows = dp.maps["acct_flows"]
    keys, _ = flows.read_all()
    flows.delete_batch(keys)
    fill_flows(flows, 1_000_000)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        k, v = drain.read(flows)
        best = min(best, time.perf_counter() - t)
    assert len(k) == 1_000_000 and int(v["packets"].sum()) == 3 * flows.ncpus * 1_000_000
    emit("datapath.drain_s.flows_1m", best, "s")

    # 100k entries: bcc's items() (a get_next_key + lookup per entry) vs ours
    flows.delete_batch(k[100_000:])
    t = time.perf_counter()
    k, v = drain.read(flows)
    ours = time.perf_counter() - t
    assert len(k) == 100_000
    from acctd.kernel.build import amalgamate
    from bcc import BPF
    text = amalgamate(("acct_abi.h",)) + (
        f'BPF_TABLE_PINNED("lru_percpu_hash", struct acct_flow_key, struct acct_flow_val, '
        f'acct_flows, {flows.info.max_entries}, "{dp.pin_dir}/acct_flows");\n'
        "int dummy(void *ctx) { return 0; }\n")
    b = BPF(text=text.replace("__u8", "u8").replace("__u16", "u16").replace("__u32", "u32")
            .replace("__u64", "u64").encode())
    t = time.perf_counter()
    items = b[b"acct_flows"].items()
    total = sum(sum(c.packets for c in leaf) for _, leaf in items)
    theirs = time.perf_counter() - t
    b.cleanup()
    assert len(items) == 100_000 and total == int(v["packets"].sum())
    emit("datapath.drain_speedup_vs_items.flows_100k", theirs / ours, "x")

    # the reaper taking 100k idle flows out with their final counters (one
    # lookup-and-delete each: the kernel has no keyed batch of it)
    t = time.perf_counter()
    found, vals = flows.take(k)
    taken = drain.reduce_percpu(vals[found])
    emit("datapath.reap_s.flows_100k", time.perf_counter() - t, "s")
    assert found.all() and int(taken["packets"].sum()) == int(v["packets"].sum())


if __name__ == "__main__":
    main()
