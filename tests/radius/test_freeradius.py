"""RADIUS accounting against a real FreeRADIUS (tests/radius/conftest.py):
what acctd counted is what radacct holds, Gigawords included; the server
demands Message-Authenticator and gets it; retransmissions are new packets;
failover; and through a server outage and a SIGKILL of the client with
records pending, radacct ends up with every record once."""

import datetime as dt
import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from acctd.aaa import radius, radius_accounting as ra
from acctd.model.sessions import Session

from tests.ports import free_port

pytestmark = pytest.mark.peers

GiB = 1 << 30


def settings(tmp_path, fr, servers=None, **kw) -> ra.RadiusSettings:
    secret = tmp_path / "radius.secret"
    secret.write_text(fr.secret + "\n")
    secret.chmod(0o600)
    return ra.RadiusSettings.from_mapping({
        "servers": servers or [fr.address], "secret-file": str(secret), "nas-ip": "192.0.2.1",
        "nas-identifier": "acctd-test", "timeout": 2.0, "retries": 1} | kw)


def client(tmp_path, fr, servers=None, **kw) -> ra.RadiusAccounting:
    return ra.RadiusAccounting(settings(tmp_path, fr, servers, **kw), tmp_path / "spool")


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def key(req: dict) -> tuple:
    """What the server can tell a record by (not Identifier, delay or MA)."""
    return tuple(v for k, v in req.items() if k not in ("id", "delay", "ma"))


def test_start_interims_stop_land_in_radacct_with_gigawords(tmp_path, freeradius):
    fr = freeradius
    c = client(tmp_path, fr)
    t0 = now_utc() - dt.timedelta(seconds=1000)
    v4 = Session(7, "0A0001", "10.0.0.5", "login", t0, mac="52:54:00:12:34:56", port="eth1")
    v6 = Session(8, "0A0002", "2001:db8::8", "command", t0)
    pfx = Session(9, "0A0003", "2001:db8:9::/48", "file", t0)
    users = {7: "alice", 8: "bob", 9: "carol"}
    for s in (v4, v6, pfx):
        c.start(s, users[s.id])
    assert c.flush(5)
    rows = {r["acctsessionid"]: r for r in fr.radacct()}
    assert len(rows) == 3
    r = rows[ra.acct_session_id(v4)]
    assert (r["username"], r["nasipaddress"], r["nasportid"], r["callingstationid"],
            r["framedipaddress"], r["acctstarttime"], r["acctstoptime"], r["acctinputoctets"],
            r["acctoutputoctets"]) == \
        ("alice", "192.0.2.1", "eth1", "52-54-00-12-34-56", "10.0.0.5",
         int(t0.timestamp()), None, 0, 0)
    assert rows[ra.acct_session_id(v6)]["framedipv6address"] == "2001:db8::8"
    assert rows[ra.acct_session_id(pfx)]["framedipv6prefix"] == "2001:db8:9::/48"

    # counters seeded past 4 GiB (and past 2**32 packets one way)
    counts = {}
    for step, t in ((1, 300), (2, 600)):
        for s in (v4, v6, pfx):
            s.bytes_in = step * 5 * GiB + s.id * 1_000_003      # to the subscriber
            s.bytes_out = step * 3 * GiB + s.id * 7             # from the subscriber
            s.packets_in, s.packets_out = step * 4_000_000 + s.id, step * 2_000_000
            c.interim(s, users[s.id], now=t0 + dt.timedelta(seconds=t))
        assert c.flush(5)
        for s in (v4, v6, pfx):
            row = next(r for r in fr.radacct() if r["acctsessionid"] == ra.acct_session_id(s))
            # RADIUS input is what the NAS port received: the subscriber's upload
            assert (row["acctinputoctets"], row["acctoutputoctets"], row["acctsessiontime"],
                    row["acctupdatetime"]) == \
                (s.bytes_out, s.bytes_in, t, int(t0.timestamp()) + t)
            assert row["acctinputoctets"] > 4 * GiB or step == 1
    for s, cause, rfc in ((v4, "idle-timeout", "Idle-Timeout"), (v6, "admin-reset", "Admin-Reset"),
                          (pfx, "address-moved", "Port-Preempted")):
        s.bytes_in += 123_456_789
        s.stop, s.stop_cause = t0 + dt.timedelta(seconds=900), cause
        c.stop(s, users[s.id])
        counts[ra.acct_session_id(s)] = (s.bytes_out, s.bytes_in, rfc)
    assert c.flush(5)
    c.close()
    assert {r["acctsessionid"]: (r["acctinputoctets"], r["acctoutputoctets"],
                                 r["acctterminatecause"]) for r in fr.radacct()} == counts
    assert {(r["acctstoptime"], r["acctsessiontime"]) for r in fr.radacct()} == \
        {(int(t0.timestamp()) + 900, 900)}
    reqs = fr.requests()
    assert Counter(r["status"] for r in reqs) == \
        {"Start": 3, "Interim-Update": 6, "Stop": 3}
    assert all(r["ma"].startswith("0x") and len(r["ma"]) == 34 for r in reqs)
    stop = next(r for r in reqs if r["status"] == "Stop" and r["user"] == "alice")
    assert (int(stop["in_giga"]) << 32 | int(stop["in_oct"]),
            int(stop["out_giga"]) << 32 | int(stop["out_oct"]),
            int(stop["in_pkt"]), int(stop["out_pkt"])) == \
        (v4.bytes_out, v4.bytes_in, v4.packets_out, v4.packets_in)
    assert os.listdir(tmp_path / "spool") == []


def test_a_record_resent_after_a_crash_is_the_same_record(tmp_path, freeradius):
    """The window SIGKILL can hit: the server answered, the spool file was
    not yet removed. The record goes again, and radacct does not change."""
    fr = freeradius
    c = client(tmp_path, fr)
    t0 = now_utc() - dt.timedelta(seconds=100)
    s = Session(3, "0A0001", "10.0.0.3", "login", t0)
    c.start(s, "dave")
    assert c.flush(5)
    s.bytes_in, s.bytes_out = 6 * GiB, 5
    s.stop, s.stop_cause = t0 + dt.timedelta(seconds=60), "user-request"
    rid = c.stop(s, "dave")
    saved = (tmp_path / "spool" / f"{rid}.json").read_bytes()
    assert c.flush(5)
    c.close()
    before = fr.radacct()
    (tmp_path / "spool" / f"{rid}.json").write_bytes(saved)
    again = client(tmp_path, fr)   # a new socket: to the server, a new request
    assert [r.id for r in again.pending()] == [rid]
    assert again.flush(5)
    again.close()
    assert fr.radacct() == before
    assert (before[0]["acctoutputoctets"], before[0]["acctinputoctets"]) == (6 * GiB, 5)
    stops = [r for r in fr.requests() if r["status"] == "Stop"]
    assert len(stops) == 2 and key(stops[0]) == key(stops[1])
    assert int(stops[1]["delay"]) >= int(stops[0]["delay"])


def test_server_requires_message_authenticator_and_the_secret(tmp_path, freeradius):
    fr = freeradius
    attrs = [("Acct-Status-Type", "Start"), ("Acct-Session-Id", "X1"), ("User-Name", "eve"),
             ("NAS-IP-Address", "192.0.2.1")]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        for ident, ma, expect in ((9, False, None), (10, True, radius.ACCOUNTING_RESPONSE)):
            req = radius.accounting_request(ident, attrs, fr.secret, with_message_authenticator=ma)
            s.sendto(req, ("127.0.0.1", fr.port))
            try:
                got = radius.verify_response(s.recv(4096), req, fr.secret).code
            except socket.timeout:
                got = None
            assert got == expect, f"Message-Authenticator {ma}"
    # our client, with the wrong secret: dropped by the server, kept in the spool
    st = settings(tmp_path, fr)
    bad = ra.RadiusAccounting(st, tmp_path / "spool", secret=b"not the secret")
    rid = bad.start(Session(1, "0A0001", "10.0.0.1", "login", now_utc()), "mallory")
    assert bad.flush(1.0) is False
    bad.close()
    assert [r.id for r in ra.RadiusAccounting(st, tmp_path / "spool").pending()] == [rid]
    assert [r["user"] for r in fr.requests()] == ["eve"]
    assert "invalid Message-Authenticator" in fr.stdout.read_text()


class LossyRelay:
    """UDP relay in front of the server that drops the first transmission
    of every record: what a lossy path does, so retransmissions reach a
    real server. Remembers every request it saw."""

    def __init__(self, server_port: int):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = ("127.0.0.1", server_port)
        self.seen: list[radius.Packet] = []
        self.dropped: list[radius.Packet] = []
        self._client = None
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        first = set()
        while not self._stop.is_set():
            if not select.select([self.sock], [], [], 0.05)[0]:
                continue
            data, src = self.sock.recvfrom(4096)
            if src == self.server:
                self.sock.sendto(data, self._client)
                continue
            self._client = src
            p = radius.decode(data)
            self.seen.append(p)
            k = (p.get("Acct-Session-Id"), p.get("Acct-Status-Type"))
            if k not in first:
                first.add(k)
                self.dropped.append(p)
                continue
            self.sock.sendto(data, self.server)

    def close(self):
        self._stop.set()
        self._t.join()
        self.sock.close()


def test_retransmissions_get_a_new_identifier_and_a_longer_delay(tmp_path, freeradius):
    fr = freeradius
    relay = LossyRelay(fr.port)
    try:
        c = client(tmp_path, fr, servers=[f"127.0.0.1:{relay.port}"], timeout=1.2, retries=2)
        s = Session(5, "0A0001", "10.0.0.9", "login", now_utc())
        c.start(s, "frank")
        assert c.flush(10)
        c.close()
    finally:
        relay.close()
    assert len(relay.dropped) == 1 and len(relay.seen) == 2
    lost, got = relay.seen
    # the retry went out later, so it says so (how much later depends on the
    # machine's load: only the order is certain)
    assert lost.get("Acct-Delay-Time") <= 1
    assert got.get("Acct-Delay-Time") > lost.get("Acct-Delay-Time")
    assert lost.identifier != got.identifier and lost.authenticator != got.authenticator
    (req,) = fr.requests()
    assert (int(req["id"]), int(req["delay"])) == (got.identifier, got.get("Acct-Delay-Time"))


def test_failover_to_the_next_server(tmp_path, freeradius):
    fr = freeradius
    dead = free_port()   # nothing listens there
    c = client(tmp_path, fr, servers=[f"127.0.0.1:{dead}", fr.address], timeout=0.2, retries=1)
    s = Session(6, "0A0001", "10.0.0.6", "login", now_utc())
    t = time.monotonic()
    c.start(s, "grace")
    assert c.flush(5)
    took = time.monotonic() - t
    c.close()
    assert [r["username"] for r in fr.radacct()] == ["grace"]
    assert took >= 0.6   # 0.2 + 0.4 s on the dead one first (the rest depends on the load)


DRIVER = textwrap.dedent("""
    # acctd's RADIUS client in its own process: JSON commands on stdin, one
    # JSON answer per command on stdout; delivery runs in the sender thread.
    import datetime as dt, json, sys
    from acctd.aaa import radius_accounting as ra
    from acctd.model.sessions import Session
    c = ra.RadiusAccounting(ra.RadiusSettings.from_mapping(json.loads(sys.argv[1])), sys.argv[2])
    c.run_sender()
    print(json.dumps({"pending": len(c.pending())}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "flush":
            ok = c.flush(cmd["timeout"])
            print(json.dumps({"flushed": ok, "pending": len(c.pending())}), flush=True)
            continue
        d = cmd["session"]
        for k in ("start", "stop"):
            d[k] = d[k] and dt.datetime.fromisoformat(d[k])
        s = Session(**d)
        if cmd["op"] == "stop":
            rid = c.stop(s, cmd["user"])
        else:
            rid = getattr(c, cmd["op"])(s, cmd["user"], *([cmd["now"]] if "now" in cmd else []))
        print(json.dumps({"id": rid}), flush=True)
""")


class Driver:
    def __init__(self, tmp_path, fr):
        secret = tmp_path / "radius.secret"
        secret.write_text(fr.secret)
        secret.chmod(0o600)
        cfg = {"servers": [fr.address], "secret-file": str(secret), "nas-ip": "192.0.2.1",
               "timeout": 2.0, "retries": 1}
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        self.p = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(cfg),
                                   str(tmp_path / "spool")], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=env)
        self.hello = self._read()

    def _read(self) -> dict:
        line = self.p.stdout.readline()
        assert line, f"driver died: {self.p.poll()}"
        return json.loads(line)

    def __call__(self, **cmd) -> dict:
        self.p.stdin.write(json.dumps(cmd, default=str) + "\n")
        self.p.stdin.flush()
        return self._read()

    def send(self, op, s: Session, user: str, **kw) -> str:
        d = {k: getattr(s, k) for k in Session.__dataclass_fields__}
        for k in ("start", "stop"):
            d[k] = d[k] and d[k].isoformat()
        return self(op=op, session=d, user=user, **kw)["id"]


def test_outage_and_sigkill_every_record_reaches_radacct_once(tmp_path, freeradius):
    fr = freeradius
    t0 = now_utc() - dt.timedelta(seconds=50)
    sessions = [Session(i, f"0A000{i}", f"10.0.1.{i}", "login", t0) for i in (1, 2, 3)]
    users = {1: "ann", 2: "ben", 3: "cat"}
    sent: dict[str, tuple] = {}   # record id -> (session id, status, counts)

    d = Driver(tmp_path, fr)
    assert d.hello == {"pending": 0}
    for s in sessions:
        sent[d.send("start", s, users[s.id])] = (s.id, "Start", None)
    for s in sessions:
        s.bytes_in, s.bytes_out, s.packets_in, s.packets_out = 3 * GiB, 2 * GiB, 3000, 2000
        sent[d.send("interim", s, users[s.id], now=t0.timestamp() + 20)] = \
            (s.id, "Interim-Update", (s.bytes_out, s.bytes_in))
    assert d(op="flush", timeout=5) == {"flushed": True, "pending": 0}

    fr.stop()   # outage: records pile up in the spool
    for s in sessions:
        s.bytes_in, s.bytes_out = 4 * GiB + s.id, 5 * GiB + 7 * s.id   # past 4 GiB
        sent[d.send("interim", s, users[s.id], now=t0.timestamp() + 40)] = \
            (s.id, "Interim-Update", (s.bytes_out, s.bytes_in))
    for s in sessions:
        s.bytes_in += GiB
        s.stop, s.stop_cause = t0 + dt.timedelta(seconds=45), "lost-carrier"
        sent[d.send("stop", s, users[s.id])] = (s.id, "Stop", (s.bytes_out, s.bytes_in))
    assert d(op="flush", timeout=0.5) == {"flushed": False, "pending": 6}
    d.p.send_signal(signal.SIGKILL)
    d.p.wait()
    assert d.p.returncode == -signal.SIGKILL
    spooled = sorted(p.stem for p in (tmp_path / "spool").iterdir())
    assert spooled == sorted(sent)[6:]

    fr.start()
    d2 = Driver(tmp_path, fr)
    assert d2.hello == {"pending": 6}
    assert d2(op="flush", timeout=10) == {"flushed": True, "pending": 0}
    d2.p.stdin.close()
    d2.p.wait(5)
    assert os.listdir(tmp_path / "spool") == []

    rows = {r["acctsessionid"]: r for r in fr.radacct()}
    assert {sid: (r["username"], r["acctinputoctets"], r["acctoutputoctets"],
                  r["acctterminatecause"], r["acctstoptime"], r["acctsessiontime"])
            for sid, r in rows.items()} == {
        ra.acct_session_id(s): (users[s.id], s.bytes_out, s.bytes_in, "Lost-Carrier",
                                int(t0.timestamp()) + 45, 45) for s in sessions}
    # each record reached the server exactly once, in order per session
    reqs = fr.requests()
    assert Counter(key(r) for r in reqs).most_common(1)[0][1] == 1
    got = [(next(s.id for s in sessions if ra.acct_session_id(s) == r["session"]), r["status"],
            None if r["status"] == "Start" else
            (int(r["in_giga"]) << 32 | int(r["in_oct"]), int(r["out_giga"]) << 32 | int(r["out_oct"])))
           for r in reqs]
    assert sorted(got, key=str) == sorted(sent.values(), key=str)
    for s in sessions:
        assert [g[1] for g in got if g[0] == s.id] == \
            ["Start", "Interim-Update", "Interim-Update", "Stop"]
    assert all(int(r["delay"]) >= 1 for r in reqs[6:])   # the spooled ones were late


def test_radclient_packets_verify_with_our_codec(radclient):
    """FreeRADIUS's own client signs an Accounting-Request; our codec
    accepts it, and the server accepts ours (the other tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        p = subprocess.Popen([radclient, "-r", "1", "-t", "1",
                              f"127.0.0.1:{s.getsockname()[1]}", "acct", "radclient secret"],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, text=True)
        p.communicate('User-Name = "heidi"\nAcct-Status-Type = Stop\nAcct-Session-Id = "S9"\n'
                      'Acct-Output-Gigawords = 3\nAcct-Output-Octets = 17\n'
                      'Framed-IPv6-Prefix = 2001:db8:a::/56\nMessage-Authenticator = 0x00\n',
                      timeout=10)
        data = s.recv(4096)
    pkt = radius.verify_accounting_request(data, "radclient secret")
    assert (pkt.get("User-Name"), pkt.get("Acct-Status-Type"), pkt.get("Acct-Session-Id"),
            radius.join64(pkt.get("Acct-Output-Gigawords"), pkt.get("Acct-Output-Octets")),
            str(pkt.get("Framed-IPv6-Prefix"))) == \
        ("heidi", radius.STOP, "S9", 3 * 2**32 + 17, "2001:db8:a::/56")
    assert pkt.raw("Message-Authenticator")
