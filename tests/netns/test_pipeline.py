"""The whole pipeline with real traffic: units and policies from a config,
`acctd --config` on the gateway, `acctctl flush`, then `acctctl list --json`
must equal ground truth for every unit and policy; and SIGKILLs of the
daemon at random moments under traffic must neither lose nor double a byte.

Ground truth never comes from acctd: pings and UDP datagrams have computed
sizes, and the TCP transfer is measured on the server's interface, with
segmentation offloads off so its counters count wire packets.
"""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .topology import LINKS, Topology, Traffic, wire_ip_totals
from acctd.services.alerter import AlerterService
from acctd.services.quota import QuotaService
from tests.ports import free_port

pytestmark = [pytest.mark.root, pytest.mark.netns]

SUB1, SUB2, SRV = LINKS["sub1"], LINKS["sub2"], LINKS["srv"]
BIN = os.path.dirname(sys.executable)

CONFIG = (Path(__file__).parent / "testbed.toml").read_text()


class Acctd:
    """acctd --config on the gateway, as a real process."""

    def __init__(self, topo: Topology, tmp, delay: int = 300):
        self.topo, self.tmp = topo, tmp
        self.cfg = tmp / "acctd.toml"
        self.cfg.write_text(CONFIG.format(delay=delay, db=tmp / "acctd.duckdb",
                                          alice=SUB1.v4(), bob=SUB2.v4()))
        self.sock = str(tmp / "acctd.sock")
        self.pin_root = f"/sys/fs/bpf/acctd-pl-{os.getpid()}-{random.randrange(1 << 30)}"
        self.proc: subprocess.Popen | None = None

    def start(self, env: dict | None = None) -> dict:
        self.proc = subprocess.Popen(
            [f"{BIN}/acctd", "--config", str(self.cfg), "--netns", self.topo.ns["gw"],
             "--pin-root", self.pin_root, "--socket", self.sock, "--flows", "16384",
             "--addrs", "1024"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})})
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"acctd did not start: {self.proc.stderr.read()}")
        return json.loads(line)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)

    def ctl(self, *args: str):
        res = subprocess.run([f"{BIN}/acctctl", "--socket", self.sock, "--pin-root", self.pin_root,
                              "--netns", self.topo.ns["gw"], *args],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout) if "--json" in args else res.stdout

    def unit(self, name: str) -> dict:
        """{(policy, dir): bytes and packets of the last drain and this month}."""
        got = self.ctl("list", name, "--json")
        return {(p["policy"], p["dir"]): p for p in got["policies"]}

    def tops(self, by: str) -> dict[str, tuple[int, int, int, int]]:
        """This month's top-by rows: {key: (packets in, bytes in, packets out, bytes out)}."""
        got = self.ctl("top-by", by, "--period", "month", "--limit", "1000", "--json")
        return {r["key"]: (r["packets_in"], r["bytes_in"], r["packets_out"], r["bytes_out"])
                for r in got["rows"]}

    def detach(self) -> None:
        subprocess.run([f"{BIN}/acctctl", "--pin-root", self.pin_root, "--netns", self.topo.ns["gw"],
                        "detach"], capture_output=True, timeout=60)

    def kill_under_pings(self, rng: random.Random, rounds: int) -> tuple[Traffic, list[dict]]:
        """Rounds of alice pinging srv while the daemon is killed at a random
        moment and started again: what she sent, and each start's reply."""
        sent, starts = Traffic(0, 0), []
        for _ in range(rounds):
            # traffic in the background while the daemon drains every second
            burst = rng.randrange(20, 60)
            pinger = self.topo.popen("sub1", ["ping", "-q", "-i", "0.005", "-c", str(burst), "-s",
                                              "100", SRV.v4()], stdout=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.05, 1.5))
            self.kill()
            pinger.wait(30)
            sent += Traffic(burst, burst * 128)
            starts.append(self.start())
        return sent, starts


@pytest.fixture
def wire(topo):
    """Offloads off everywhere: interface counters count wire packets."""
    topo.set_all_offloads(False)
    return topo


def tcp_phase(t: Topology, nbytes: int, port: int) -> tuple[Traffic, Traffic]:
    """alice -> srv:port, exactly nbytes of payload; (out, in) for alice, measured on srv."""
    before = t.snapshot()
    t.tcp_transfer("sub1", "srv", SRV.v4(), nbytes, port=port)
    t.quiesce()
    after = t.snapshot()
    return (wire_ip_totals("srv", SRV.host_if, before, after, direction="rx"),
            wire_ip_totals("srv", SRV.host_if, before, after, direction="tx"))


def test_list_equals_ground_truth_for_every_unit_and_policy(wire, tmp_path):
    topo = wire
    d = Acctd(topo, tmp_path)
    try:
        d.start()
        ping = topo.ping("sub1", SRV.v4(), count=12, size=200)
        tcp_out, tcp_in = tcp_phase(topo, 300_000, 80)
        alt_out, alt_in = tcp_phase(topo, 200_000, 8080)
        dns = topo.send_udp("sub2", SUB2.v4(), "srv", SRV.v4(), count=40, length=60, dport=53)
        bob_ping = topo.ping("sub2", SUB1.v4(), count=5, size=64)  # bob -> alice
        topo.quiesce()
        d.ctl("flush")

        def pair(o: Traffic, i: Traffic):
            return {"out": (o.packets, o.ip_bytes), "in": (i.packets, i.ip_bytes)}

        zero = Traffic(0, 0)
        alice_icmp = pair(ping.request, ping.reply + bob_ping.request)
        alice_icmp["out"] = (alice_icmp["out"][0] + bob_ping.reply.packets,
                             alice_icmp["out"][1] + bob_ping.reply.ip_bytes)
        alice_web = pair(tcp_out, tcp_in)
        alice_alt = pair(alt_out, alt_in)
        alice_all = {k: tuple(a + b + c for a, b, c in zip(alice_icmp[k], alice_web[k], alice_alt[k]))
                     for k in ("in", "out")}
        bob_dns = pair(dns, zero)
        bob_icmp = pair(bob_ping.request, bob_ping.reply)
        bob_all = {k: tuple(a + b for a, b in zip(bob_dns[k], bob_icmp[k])) for k in ("in", "out")}
        expect = {
            "alice": {"(all)": alice_all, "all-ip": alice_all, "icmp": alice_icmp, "web": alice_web,
                      "web-alt": alice_alt},
            "bob": {"(all)": bob_all, "all-ip": bob_all, "dns": bob_dns, "icmp": bob_icmp},
            "customers": {"(all)": {k: tuple(a + b for a, b in zip(alice_all[k], bob_all[k]))
                                    for k in ("in", "out")}},
        }
        for unit, policies in expect.items():
            got = d.unit(unit)
            for pol, dirs in policies.items():
                for direction, (packets, nbytes) in dirs.items():
                    row = got.get((pol, direction))
                    have = (row["flow"]["packets"], row["flow"]["bytes"]) if row else (0, 0)
                    assert have == (packets, nbytes), (unit, pol, direction)
                    if row:  # one drain so far: every period holds the same
                        assert row["month"] == row["flow"], (unit, pol, direction)
        units = d.ctl("units", "--json")
        assert {u["name"] for u in units} == {"customers", "alice", "bob"}
        assert [u["name"] for u in d.ctl("units", "--type", "group", "--json")] == ["customers"]
        assert [u["name"] for u in d.ctl("units", "--policy", "dns", "--json")] == ["bob"]
        conns = d.ctl("connections", "--json")
        assert len(conns) == 1 and conns[0]["uid"] == 0  # this very request
        assert d.ctl("rotate", "log", "--json") == {"log": "stderr", "rotated": False,
                                          "note": "logging to stderr: the journal rotates it"}
        health = d.ctl("health", "--json")
        assert health["fill"]["acct_addrs"]["entries"] >= 2
        assert health["unattributed_bytes"] == 0 and health["dropped_bytes"] == 0
        assert health["flow_evictions"] == 0
        # the period tops: this month's exact counts per address, service port and VLAN
        io = lambda p: (p["in"][0], p["in"][1], p["out"][0], p["out"][1])  # noqa: E731
        addrs, ports, vlans = (d.tops(by) for by in ("addr", "port", "vlan"))
        assert addrs[SUB1.v4()] == io(alice_all) and addrs[SUB2.v4()] == io(bob_all)
        assert (ports["tcp/80"], ports["tcp/8080"], ports["udp/53"]) == \
            (io(alice_web), io(alice_alt), io(bob_dns))
        assert ports["icmp"] == tuple(a + b for a, b in zip(io(alice_icmp), io(bob_icmp)))
        every = tuple(sum(r[i] for r in addrs.values()) for i in range(4))
        assert tuple(sum(r[i] for r in ports.values()) for i in range(4)) == every
        assert vlans == {"untagged": every}
        # the top view off a terminal: one snapshot, alice's month equals her (all) total
        out = d.ctl("top", "--json")
        row = {r["key"]: r for r in out}["alice"]
        assert row["month"] == alice_all["in"][1] + alice_all["out"][1]
        text = d.ctl("top", "--once")
        assert "alice" in text and max(len(line) for line in text.splitlines()) <= 80
        # a scheduled command runs with its owner's permissions, on its own
        drains = d.ctl("status", "--json")["drains"]
        d.ctl("schedule", "add", "time", "1sec", "action", "flush")
        assert [e["action"] for e in d.ctl("schedule", "list", "--json")] == ["flush"]
        deadline = time.monotonic() + 15
        while d.ctl("status", "--json")["drains"] < drains + 2:
            assert time.monotonic() < deadline, "the scheduled flush did not run"
            time.sleep(0.5)
        oid = d.ctl("schedule", "list", "--json")[0]["oid"]
        d.ctl("schedule", "del", oid)
        assert d.ctl("schedule", "list", "--json") == []
        live = d.ctl("list", "alice", "--json")
        checks = {c["policy"]: (c["check"], c["match"]) for c in live.pop("checks")}
        # alice's list: all-ip (default), icmp, web, web-alt; no "%": every flow checks all
        assert set(checks) == {"all-ip", "icmp", "web", "web-alt"}
        assert len({c for c, _ in checks.values()}) == 1
        assert checks["all-ip"][1] == checks["all-ip"][0]
        assert 0 < checks["web"][1] < checks["web"][0]
        d.stop()
        # with the daemon stopped, acctctl reads the database file itself
        res = subprocess.run([f"{BIN}/acctctl", "--db", str(tmp_path / "acctd.duckdb"),
                              "--config", str(d.cfg), "list", "alice", "--json"],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout) == live
    finally:
        d.stop()
        d.detach()


# Each round is a daemon start: about 15 s under the VM tier's emulation, which asks for fewer.
KILL_ROUNDS = int(os.environ.get("ACCTD_KILL_ROUNDS", "10"))


def test_sigkill_under_traffic_loses_and_doubles_nothing(wire, tmp_path):
    topo = wire
    rng = random.Random(20261121)
    d = Acctd(topo, tmp_path, delay=1)
    try:
        first = d.start()
        sent, starts = d.kill_under_pings(rng, KILL_ROUNDS)
        assert all(s["prog_ids"] == first["prog_ids"] for s in starts)
        topo.quiesce()
        d.ctl("flush")
        alice = d.unit("alice")
        assert (alice[("icmp", "out")]["month"]["packets"], alice[("icmp", "out")]["month"]["bytes"]) \
            == (sent.packets, sent.ip_bytes)
        assert (alice[("(all)", "in")]["month"]["packets"], alice[("(all)", "in")]["month"]["bytes"]) \
            == (sent.packets, sent.ip_bytes)
        # the period tops commit with the counts: the pings' port, exactly once
        assert d.tops("port")["icmp"] == (sent.packets, sent.ip_bytes) * 2
    finally:
        d.stop()
        d.detach()


def test_sighup_reload_and_sigterm_restart_keep_totals_exact(wire, tmp_path):
    topo = wire
    """SIGHUP swaps units and policies without detaching; SIGTERM stops the
    daemon with programs still counting; the next start picks up exactly."""
    d = Acctd(topo, tmp_path, delay=1)
    sent = Traffic(0, 0)

    def burst(count: int) -> subprocess.Popen:
        return topo.popen("sub1", ["ping", "-q", "-i", "0.005", "-c", str(count), "-s", "100",
                                   SRV.v4()], stdout=subprocess.DEVNULL)
    # systemd's side of sd_notify: a real datagram socket
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(10)

    def expect(state: str) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if state in notify.recv(4096).decode().split("\n"):
                return
        raise AssertionError(f"no {state} from acctd")
    try:
        first = d.start(env={"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "2000000"})
        expect("READY=1")
        expect("WATCHDOG=1")
        p = burst(200)
        time.sleep(0.3)
        # reload mid-traffic: a new unit appears, nothing is detached
        d.cfg.write_text(d.cfg.read_text() + '\n[[unit]]\ntype = "host"\nname = "carol"\n'
                         'ip = "10.9.9.9"\n')
        d.proc.send_signal(signal.SIGHUP)
        expect("RELOADING=1")
        expect("READY=1")
        p.wait(30)
        sent += Traffic(200, 200 * 128)
        deadline = time.monotonic() + 10
        while "carol" not in {u["name"] for u in d.ctl("units", "--json")}:
            assert time.monotonic() < deadline, "SIGHUP did not reload the units"
            time.sleep(0.2)
        # stop mid-traffic: the programs keep counting while acctd is down
        p = burst(200)
        time.sleep(0.3)
        d.proc.terminate()
        expect("STOPPING=1")
        assert d.proc.wait(20) == 0
        p.wait(30)
        sent += Traffic(200, 200 * 128)
        assert d.start()["prog_ids"] == first["prog_ids"]
        topo.quiesce()
        d.ctl("flush")
        alice = d.unit("alice")
        for direction in ("out", "in"):
            month = alice[("(all)", direction)]["month"]
            assert (month["packets"], month["bytes"]) == (sent.packets, sent.ip_bytes), direction
            month = alice[("icmp", direction)]["month"]
            assert (month["packets"], month["bytes"]) == (sent.packets, sent.ip_bytes), direction
    finally:
        notify.close()
        d.stop()
        d.detach()


def test_sys_deny_blocks_in_the_kernel_and_survives_kill(wire, tmp_path):
    """`acctctl unit bob sys-deny`: bob's packets are dropped in the kernel at
    once, alice's are not; a kill -9 of the daemon changes nothing; after the
    restart its view equals the kernel's; sys-allow lets bob through."""
    topo = wire
    d = Acctd(topo, tmp_path)

    def bob_pings(n: int = 5) -> int:
        return topo.ping("sub2", SRV.v4(), count=n, size=56).received

    try:
        d.start()
        assert bob_pings() == 5
        reply = d.ctl("unit", "bob", "sys-deny", "--json")
        assert reply["sys_policy"] == ["sys-deny"] and SUB2.v4() in reply["changed"]
        assert reply["applied_ms"] < 100  # decision -> verdict in every CPU's copy
        assert bob_pings() == 0
        assert topo.ping("sub1", SRV.v4(), count=5, size=56).received == 5  # alice unaffected
        d.kill()
        assert bob_pings() == 0  # still blocked while the daemon is down
        d.start()
        blocked = d.ctl("units", "--sys-policy", "--json")
        assert [(u["name"], u["sys_policy"]) for u in blocked] == [("bob", ["sys-deny"])]
        shown = json.loads(subprocess.run(
            [f"{BIN}/acctctl", "--pin-root", d.pin_root, "--netns", topo.ns["gw"], "show", "--json"],
            capture_output=True, text=True, check=True).stdout)
        assert shown["addrs"][SUB2.v4()]["verdict"] == "drop"
        assert shown["addrs"][SUB2.v4()]["drop_packets_out"] == 10  # both blocked rounds
        d.ctl("unit", "bob", "sys-allow")
        assert bob_pings() == 5
    finally:
        d.stop()
        d.detach()


def test_hour_quota_blocks_in_the_kernel_and_the_next_hour_lets_through(wire, tmp_path):
    """A unit over its hour quota is dropped in the kernel at the next drain,
    other units are not; with the (injected) clock in the next hour it
    passes again."""
    import datetime as dt

    from acctd import config
    from acctd.daemon.core import Daemon
    from acctd.kernel.build import Sizes

    import email
    import email.policy

    from aiosmtpd.controller import Controller

    class Sink:  # a real SMTP server, started by the test
        got: list = []

        async def handle_DATA(self, server, session, envelope):
            self.got.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
            return "250 OK"

    smtp_port = free_port()
    sink = Sink()
    smtp = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    smtp.start()

    topo = wire
    clock = [dt.datetime(2026, 11, 21, 10, 5, tzinfo=dt.timezone.utc)]
    cfg_path = tmp_path / "acctd.toml"
    cfg_path.write_text(CONFIG.format(delay=300, db=tmp_path / "acctd.duckdb",
                                      alice=SUB1.v4(), bob=SUB2.v4()) +
                        f'\n[alerter]\nsmtp-server = "127.0.0.1"\nsmtp-port = {smtp_port}\n'
                        'from = "acctd@isp.example"\nadmins = ["noc@isp.example"]\n')
    d = Daemon(config.load(str(cfg_path)),
               Sizes(pin_root=f"/sys/fs/bpf/acctd-q-{os.getpid()}", flows=4096, addrs=256),
               netns=topo.ns["gw"], clock=lambda: clock[0])
    try:
        d.start()
        assert d.call("quota-set", argv=["alice", "hour", "2K", "out"])["set"] == \
            "set alice active hour 2K out"
        assert topo.ping("sub1", SRV.v4(), count=10, size=100).received == 10  # 1280 B out
        d.drain()
        assert not d.service(QuotaService).events  # below the soft threshold (80 % of 2048)
        assert topo.ping("sub1", SRV.v4(), count=10, size=100).received == 10  # 2560 B: over
        d.drain()
        assert [e.kind for e in d.service(QuotaService).events] == ["hard"]
        assert topo.ping("sub1", SRV.v4(), count=5, size=100).received == 0   # dropped in the kernel
        assert topo.ping("sub2", SRV.v4(), count=5, size=100).received == 5   # bob unaffected
        shown = d.call("quota-show", unit="alice")
        assert shown["units"][0]["blocked"] and "[-]" in shown["text"]
        clock[0] += dt.timedelta(hours=1)  # the next hour
        d.drain()
        assert [e.kind for e in d.service(QuotaService).events] == ["hard", "return"]
        assert topo.ping("sub1", SRV.v4(), count=5, size=100).received == 5
        # the notices went to the admin through the outbox and the SMTP server
        d.service(AlerterService).mailer.deliver_due(now=time.time() + 1)
        assert [m["To"] for m in sink.got] == ["noc@isp.example"] * 2
        assert all("alice" in m["Subject"] for m in sink.got)
    finally:
        smtp.stop()
        d.close()
        d.dp.detach()


def test_reaped_flows_are_accounted_and_are_not_evictions(wire, tmp_path):
    """Flows idle past flow-lifetime are taken out of the kernel table with
    their final counts (nothing lost), and `health` does not report them as
    LRU evictions."""
    from acctd import config
    from acctd.daemon.core import Daemon
    from acctd.kernel.build import Sizes
    from acctd.store.queries import report_list

    topo = wire
    cfg_path = tmp_path / "acctd.toml"
    cfg_path.write_text(CONFIG.replace("lookup-delay = {delay}", "lookup-delay = 1\nflow-lifetime = 1")
                        .format(db=tmp_path / "acctd.duckdb", alice=SUB1.v4(), bob=SUB2.v4()))
    d = Daemon(config.load(str(cfg_path)),
               Sizes(pin_root=f"/sys/fs/bpf/acctd-r-{os.getpid()}", flows=4096, addrs=256),
               netns=topo.ns["gw"])
    try:
        d.start()
        ping = topo.ping("sub1", SRV.v4(), count=8, size=100)
        d.drain()
        def echo_flows():
            return int((d.dp.maps["acct_flows"].read_all()[0]["proto"] == 1).sum())
        assert echo_flows() == 2    # out and in
        time.sleep(2.5)             # idle past flow-lifetime
        d.drain()
        # (by protocol: other flows, such as the namespaces' IPv6 neighbour
        # discovery, may start meanwhile)
        assert d.flows_reaped >= 2 and echo_flows() == 0
        assert d.call("status")["datapath"]["flow_evictions"] == 0
        alice = {(p["policy"], p["dir"]): p["month"]
                 for p in report_list(d.storage, d.snapshot, "alice", d.clock())["policies"]}
        assert (alice[("icmp", "out")]["packets"], alice[("icmp", "out")]["bytes"]) == \
            (ping.request.packets, ping.request.ip_bytes)
        assert (alice[("icmp", "in")]["packets"], alice[("icmp", "in")]["bytes"]) == \
            (ping.reply.packets, ping.reply.ip_bytes)
    finally:
        d.close()
        d.dp.detach()

