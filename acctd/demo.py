"""`sudo make demo`: acctd on a throwaway namespace network, with traffic.

Two subscribers (alice on sub1, bob on sub2) reach a server (srv) through
a gateway (gw). The whole pipeline runs on the gateway: lan1 hooked with
TC, lan2 with XDP (generic), wan0 with TC (enforce-only); units, policies,
rollups in a DuckDB file. The demo sends pings, exact TCP transfers to
ports 80 and 8080, DNS-sized UDP and VLAN-tagged frames, then prints the
per-unit report (NeTAMS `show list`) and what acctd counted per address,
port and VLAN next to what was sent.
It ends after the scenario when not on a terminal, or after --duration
seconds of repeated rounds on one; everything is removed at the end.

The namespace testbed is the one the system tests use (tests/netns), so run
this from a checkout (make demo does).
"""

from __future__ import annotations

import os
import sys
import time

import click


@click.command()
@click.option("--duration", default=20.0, help="Seconds to keep generating traffic on a terminal.")
def main(duration: float) -> None:
    if os.geteuid() != 0:
        raise SystemExit("demo: needs root (namespaces, BPF): sudo make demo")
    sys.path.insert(0, os.getcwd())
    from rich.console import Console
    from rich.table import Table

    import datetime as dt
    import tempfile

    from acctd import config
    from acctd.daemon.core import Daemon
    from acctd.kernel.build import Sizes
    from acctd.kernel.reader import Reader
    from acctd.store import queries
    from tests.netns.topology import LINKS, Topology

    con = Console()
    interactive = sys.stdout.isatty()
    deadline = time.monotonic() + duration
    with Topology(prefix="acctdemo") as topo:
        tmp = tempfile.mkdtemp(prefix="acctd-demo-")
        cfg_path = os.path.join(tmp, "acctd.toml")
        with open(cfg_path, "w") as f:
            # the same configuration the pipeline tests check against ground truth
            with open(os.path.join("tests", "netns", "testbed.toml")) as t:
                f.write(t.read().format(delay=300, db=os.path.join(tmp, "acctd.duckdb"),
                                        alice=LINKS["sub1"].v4(), bob=LINKS["sub2"].v4()))
        cfg = config.load(cfg_path)
        d = Daemon(cfg, Sizes(pin_root=f"/sys/fs/bpf/acctd-demo-{os.getpid()}", flows=16384,
                              addrs=1024), netns=topo.ns["gw"])
        dp = d.dp
        try:
            con.print("[bold]acctd[/] on gw: lan1=tc lan2=xdp-generic wan0=tc (enforce only), "
                      f"config {cfg_path}")
            d.start()
            reader = Reader(dp)
            reader.baseline()
            sent: dict[str, list[int]] = {}
            rounds = 0
            while True:
                rounds += 1
                srv = LINKS["srv"].v4()
                p = topo.ping("sub1", srv, count=20, size=100)
                _add(sent, "sub1 -> srv  icmp", p.request.packets, p.request.ip_bytes)
                p = topo.ping("sub2", LINKS["sub1"].v4(), count=10, size=500)
                _add(sent, "sub2 -> sub1 icmp", p.request.packets, p.request.ip_bytes)
                for port in (80, 8080):
                    n = topo.tcp_transfer("sub1", "srv", srv, 1_000_000, port=port)
                    _add(sent, f"sub1 -> srv  tcp/{port} payload", 0, n)
                t = topo.send_vlan_frames("sub2", "eth0", LINKS["sub2"].mac(gw=True), LINKS["sub2"].v4(),
                                          srv, vlan_ids=[100], count=25, payload_len=200)
                _add(sent, "sub2 vlan 100 udp", t.packets, t.ip_bytes)
                if not interactive or time.monotonic() >= deadline:
                    break
            rep = reader.drain()
            d.drain()
            now = dt.datetime.now(dt.timezone.utc)
            lists = [queries.report_list(d.storage, d.snapshot, u, now) for u in ("alice", "bob", "customers")]
        finally:
            d.close()
            dp.detach()

    t = Table(title=f"acctd counted ({rounds} round(s) of traffic)")
    for col in ("address", "packets in", "bytes in", "packets out", "bytes out"):
        t.add_column(col, justify="left" if col == "address" else "right")
    for addr, r in sorted(rep["addrs"].items()):
        t.add_row(addr, str(r["packets_in"]), str(r["bytes_in"]), str(r["packets_out"]), str(r["bytes_out"]))
    con.print(t)
    t = Table(title="by service port / VLAN")
    for col in ("key", "packets in", "bytes in", "packets out", "bytes out"):
        t.add_column(col, justify="left" if col == "key" else "right")
    for k, r in list(rep["ports"].items()) + [(f"vlan {k}", v) for k, v in rep["vlans"].items()]:
        t.add_row(k, str(r["packets_in"]), str(r["bytes_in"]), str(r["packets_out"]), str(r["bytes_out"]))
    con.print(t)
    t = Table(title="what was sent (ground truth from the traffic generators)")
    t.add_column("traffic")
    t.add_column("packets", justify="right")
    t.add_column("IP bytes", justify="right")
    for k, (pk, b) in sent.items():
        t.add_row(k, str(pk) if pk else "-", str(b))
    con.print(t)
    for r in lists:
        t = Table(title=f"unit {r['unit']} ({r['oid']}): this drain (= today, this month)")
        for col in ("policy", "dir", "packets", "bytes"):
            t.add_column(col, justify="left" if col in ("policy", "dir") else "right")
        for p in r["policies"]:
            t.add_row(p["policy"], p["dir"], str(p["flow"]["packets"]), str(p["flow"]["bytes"]))
        con.print(t)
    con.print("totals:", rep["totals"])
    con.print("health:", {k: v for k, v in rep["health"].items() if v})
    con.print("[green]programs detached, pins and namespaces removed[/]")




def _add(sent: dict, key: str, packets: int, nbytes: int) -> None:
    cur = sent.setdefault(key, [0, 0])
    cur[0] += packets
    cur[1] += nbytes


if __name__ == "__main__":
    main()
