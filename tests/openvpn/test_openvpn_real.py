"""acctd's OpenVPN accounting against a real OpenVPN 2.6 server and client
in network namespaces (tests/openvpn/rig.py): sessions appear with the VPN
address, interim byte counts match the tunnel's traffic exactly, a changed
interval takes effect, and a block disconnects the client and refuses it
when it comes back.

Ground truth for bytes: the server's tun device counts the tunnel's IP
packets (no link header) as OpenVPN reads and writes them; BYTECOUNT_CLI
counts the same packets on the transport socket, each grown by the data
channel's framing. With AES-256-GCM that is exactly 24 bytes a packet:
opcode and peer-id (P_DATA_V2) 4, packet-id 4, GCM tag 16. The tunnel is
kept quiet (no keepalive, no router solicitations), so nothing but the
test's datagrams crosses it while it is measured.
"""
from __future__ import annotations

import signal
import socket
import subprocess
import time

import pytest

from acctd.aaa.openvpn import hook_main

from . import rig

pytestmark = [pytest.mark.peers, pytest.mark.slow]

GCM_OVERHEAD = 4 + 4 + 16
UDP_IP = 28                      # IPv4 + UDP headers
PORT = 9000


def datagrams(vpn, src_ns, src, dst_ns, dst, count, size):
    """Send `count` datagrams of `size` payload bytes from src to dst through
    the tunnel and return how many arrived (they all must)."""
    with vpn.pair.inside(dst_ns):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with vpn.pair.inside(src_ns):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with rx, tx:
        rx.bind((dst, PORT))
        rx.settimeout(3)
        tx.bind((src, 0))
        got = 0
        for batch in range(0, count, 20):      # at most 20 in flight: nothing dropped
            n = min(20, count - batch)
            for _ in range(n):
                tx.sendto(bytes(size), (dst, PORT))
            for _ in range(n):
                got += len(rx.recv(65536)) == size
        return got


def interim_after(events, vpn, probe_at: float, cid: int):
    """Send one small datagram from the client (OpenVPN reports a client's
    counters when a packet from it arrives) and wait for the interim it
    triggers; returns the interim and the server's tun counters taken
    after it, when the tunnel is quiet again."""
    datagrams(vpn, vpn.pair.client, "10.8.0.2", vpn.pair.server, rig.SERVER_TUN, 1, 10)
    args = events.wait("interim", lambda a: a[1] == cid and a[4] >= probe_at, timeout=5)
    return args, vpn.pair.tun_counters(vpn.pair.server)


def test_session_appears_and_stops(vpn):
    """No client auth, TCP with a password: the session starts with the VPN
    address from >CLIENT:ESTABLISHED; it stops when `status 3` no longer
    lists the client, with the counters OpenVPN gave the client-disconnect
    script."""
    vpn.server(mgmt="tcp", password="s3cret", script=vpn.script())
    mc, events = vpn.management({"management": "127.0.0.1:7505",
                                 "password-file": vpn.password_file("s3cret"),
                                 "status-interval": 1})
    cli = vpn.client("alice")
    start = events.wait("start")
    hook = vpn.hook_env("client-connect")
    assert start == ("alice", "10.8.0.2", "10.99.0.2", 0, float(hook["time_unix"]))
    (c,) = mc.clients()
    assert (c.addr, c.addr6, c.real_port) == ("10.8.0.2", "fd00:8::1000",
                                             int(hook["trusted_port"]))
    vpn.pair.run(vpn.pair.client, "ping", "-c", "3", "-i", "0.2", "-q", rig.SERVER_TUN,
                 check=True, capture_output=True)
    cli.stop()
    stop = events.wait("stop", timeout=12)
    gone = vpn.hook_env("client-disconnect")
    ev = hook_main(gone)
    assert stop[:4] == ("alice", 0, int(gone["bytes_sent"]), int(gone["bytes_received"]))
    assert (ev["bytes_in"], ev["bytes_out"]) == stop[2:4]
    # noticed by the first poll after the server's delayed exit: within a poll
    assert int(gone["time_duration"]) <= stop[4] <= int(gone["time_duration"]) + 2.5
    assert mc.clients() == [] and mc.connects == 1


def test_interim_bytes_match_the_tunnel(vpn):
    """bytes_out (from the client) grows by the server tun's rx bytes plus
    24 per packet, bytes_in by its tx bytes plus 24 per packet, exactly."""
    vpn.server(mgmt="tcp")
    mc, events = vpn.management({"management": "127.0.0.1:7505", "interim-interval": 1,
                                 "status-interval": 0})
    vpn.client("alice")
    cid = events.wait("start")[3]
    time.sleep(1.5)                                   # the tunnel's start-up chatter is over
    i0, t0 = interim_after(events, vpn, time.time(), cid)
    up = datagrams(vpn, vpn.pair.client, "10.8.0.2", vpn.pair.server, rig.SERVER_TUN, 200, 1000)
    down = datagrams(vpn, vpn.pair.server, rig.SERVER_TUN, vpn.pair.client, "10.8.0.2", 100, 1400)
    assert (up, down) == (200, 100)
    time.sleep(1.1)                                   # OpenVPN's next whole second
    i1, t1 = interim_after(events, vpn, time.time(), cid)
    d = {k: t1[k] - t0[k] for k in t0}
    # the tun counters saw exactly the test's datagrams: 200 up + the probe, 100 down
    assert d == {"rx_packets": 201, "rx_bytes": 200 * (1000 + UDP_IP) + (10 + UDP_IP),
                 "tx_packets": 100, "tx_bytes": 100 * (1400 + UDP_IP)}
    bytes_in, bytes_out = i1[2] - i0[2], i1[3] - i0[3]
    assert bytes_out == d["rx_bytes"] + GCM_OVERHEAD * d["rx_packets"] == 210_462
    assert bytes_in == d["tx_bytes"] + GCM_OVERHEAD * d["tx_packets"] == 145_200


def test_changed_interval_takes_effect(vpn):
    """OpenVPN is asked every second (the GCD); alice's reports pass every
    2 s, then every 3 s once set_interval() says so, counted from her last
    report. Steady traffic keeps OpenVPN reporting."""
    vpn.server(mgmt="tcp")
    mc, events = vpn.management({"management": "127.0.0.1:7505", "interim-interval": 1,
                                 "intervals": {"alice": 2}, "status-interval": 0})
    vpn.client("alice")
    events.wait("start")
    assert mc.tracker.asked == 1 and mc.interval("alice") == 2
    vpn.pair.popen(vpn.pair.client, "ping", "-i", "0.1", "-q", rig.SERVER_TUN,
                   stdout=subprocess.DEVNULL)
    events.wait("interim", skip=2, timeout=10)              # three at 2 s
    mc.set_interval("alice", 3)
    changed = len(events.of("interim"))
    events.wait("interim", skip=changed + 1, timeout=10)    # two at 3 s
    seconds = [int(a[4]) for a in events.of("interim")]
    gaps = [b - a for a, b in zip(seconds, seconds[1:])]
    assert gaps[:changed - 1] == [2] * (changed - 1)
    assert gaps[changed - 1:changed + 1] == [3, 3]
    assert mc.tracker.asked == 1 and mc.interval("alice") == 3


def test_block_kills_and_refuses_the_reconnect(vpn):
    """--management-client-auth over a Unix socket: alice is allowed at
    >CLIENT:CONNECT, kill() disconnects her (the session stops with the
    counters of >CLIENT:DISCONNECT, the ones the script got too), her
    client's reconnect is denied while she is blocked, and she is back once
    unblocked."""
    blocked: set[str] = set()
    srv = vpn.server(mgmt="unix", client_auth=True, script=vpn.script())
    mc, events = vpn.management({"management": f"unix:{srv.sock}"},
                                is_blocked=lambda cn: cn in blocked)
    cli = vpn.client("alice")
    assert events.wait("start")[:4] == ("alice", "10.8.0.2", "10.99.0.2", 0)
    blocked.add("alice")
    assert mc.kill("alice") == 1
    stop = events.wait("stop", timeout=12)
    gone = vpn.hook_env("client-disconnect")
    assert stop[:5] == ("alice", 0, int(gone["bytes_sent"]), int(gone["bytes_received"]),
                        float(gone["time_duration"]))
    # the client restarted, was denied and gave up
    assert cli.proc.wait(15) == 0
    assert "AUTH_FAILED,access blocked" in cli.log.read_text()
    assert "blocked by acctd" in srv.log.read_text()
    assert len(events.of("start")) == 1 and mc.clients() == []
    blocked.clear()
    vpn.client("alice")
    assert events.wait("start", skip=1)[:4] == ("alice", "10.8.0.2", "10.99.0.2", 2)


def test_resync_after_reconnecting(vpn):
    """A client connected before acctd attached is found by `status 3`; when
    the server dies and a new one comes up, acctd reconnects, and the
    session ends with the counters last seen."""
    srv = vpn.server(mgmt="tcp")
    vpn.client("alice")
    mc, events = vpn.management({"management": "127.0.0.1:7505", "reconnect-backoff": 0.2,
                                 "reconnect-backoff-max": 0.5, "status-interval": 0})
    start = events.wait("start", timeout=1)
    (c,) = mc.clients()
    assert start == ("alice", "10.8.0.2", "10.99.0.2", 0, c.start)
    seen = (c.bytes_in, c.bytes_out)
    assert min(seen) > 0
    srv.stop(signal.SIGKILL)                          # no goodbye to anyone
    vpn.server(mgmt="tcp")
    stop = events.wait("stop", timeout=10)
    assert stop[:4] == ("alice", 0, *seen)
    assert mc.connects == 2 and mc.clients() == []


def test_wrong_password_is_reported(vpn):
    vpn.server(mgmt="tcp", password="s3cret")
    mc, _ = vpn.management({"management": "127.0.0.1:7505",
                            "password-file": vpn.password_file("wrong"),
                            "reconnect-backoff": 5}, attach=False)
    end = time.monotonic() + 5
    while mc.last_error == "" and time.monotonic() < end:
        time.sleep(0.05)
    assert mc.last_error == "management password rejected"
    assert not mc.attached
