"""OpenVPN accounting without a server: settings, the management protocol
replayed from transcripts recorded from OpenVPN 2.6.14
(tests/openvpn/transcripts, made by tests/openvpn/capture.py), the
per-client interval logic on an injected clock, and the script-mode hook."""

import json
import os
from pathlib import Path

import pytest

from acctd.aaa import openvpn
from acctd.aaa.openvpn import (Event, HookError, HookExit, Notification, OpenVpnSettings, Parser,
                               Prompt, Reply, Tracker, hook_main, parse_status)

TRANSCRIPTS = Path(__file__).parent.parent / "openvpn" / "transcripts"
PASSWORDS = ("s3cret", "wrong")


def transcript(name: str) -> list[dict]:
    return json.loads((TRANSCRIPTS / f"{name}.json").read_text())["steps"]


def received(name: str) -> bytes:
    return "".join(s["recv"] for s in transcript(name) if "recv" in s).encode()


def replay(name: str, tracker: Tracker, clock, on_send=None):
    """Feed a transcript through Parser and Tracker, registering the commands
    as they were sent when it was recorded. Returns (commands the tracker
    asked for, events), each in order."""
    p = Parser()
    cmds, events = [], []
    for step in transcript(name):
        if "send" in step:
            sent = step["send"]
            p.expect(openvpn.PASSWORD_PROMPT if sent in PASSWORDS else sent)
            if on_send:
                on_send(sent)
            continue
        for msg in p.feed(step["recv"].encode()):
            if isinstance(msg, Prompt):
                p.prompt_answers_password()
                continue
            c, e = tracker.handle(msg, clock())
            cmds += c
            events += e
    return cmds, events


class Clock:
    def __init__(self, t: float, step: float = 0.0):
        self.t, self.step = t, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


# --- settings ----------------------------------------------------------------------

def test_settings_defaults():
    s = OpenVpnSettings.from_mapping({"management": "127.0.0.1:7505"})
    assert s == OpenVpnSettings(management=("tcp", "127.0.0.1", 7505))
    assert (s.interim_interval, dict(s.intervals), s.status_interval, s.reconnect_backoff,
            s.reconnect_backoff_max, s.password_file) == (60, {}, 5.0, 1.0, 60.0, None)
    assert OpenVpnSettings.from_mapping({}).management is None   # script mode only


def test_settings_full_table(tmp_path):
    pw = tmp_path / "mgmt.pw"
    pw.write_text("s3cret\nignored\n")
    pw.chmod(0o600)
    s = OpenVpnSettings.from_mapping({
        "management": "unix:run/mgmt.sock", "password-file": "mgmt.pw", "interim-interval": 600,
        "intervals": {"alice": 60, "bob": 90}, "status-interval": 2.5,
        "reconnect-backoff": 0.5, "reconnect-backoff-max": 30}, base=tmp_path)
    assert s.management == ("unix", str(tmp_path / "run/mgmt.sock"))
    assert s.password_file == str(pw)
    assert s.password() == "s3cret"
    assert (s.interim_interval, dict(s.intervals), s.status_interval, s.reconnect_backoff,
            s.reconnect_backoff_max) == (600, {"alice": 60, "bob": 90}, 2.5, 0.5, 30.0)


@pytest.mark.parametrize("text, want", [
    ("127.0.0.1:7505", ("tcp", "127.0.0.1", 7505)),
    ("[::1]:7505", ("tcp", "::1", 7505)),
    ("localhost:1", ("tcp", "localhost", 1)),
    ("unix:/run/openvpn/mgmt.sock", ("unix", "/run/openvpn/mgmt.sock")),
])
def test_management_forms(text, want):
    assert openvpn.parse_management(text) == want


@pytest.mark.parametrize("table, message", [
    ({"management": "vpn.example.org:7505"},
     "management: 'vpn.example.org' is not an IP address or localhost"),
    ({"management": "127.0.0.1:0"}, "management: port must be 1-65535, got '0'"),
    ({"management": "127.0.0.1:http"}, "management: port must be 1-65535, got 'http'"),
    ({"management": "7505"}, 'management: expected "HOST:PORT" or "unix:PATH", got \'7505\''),
    ({"management": "unix:"}, "management: unix: needs a socket path"),
    ({"management": 7505}, 'management: expected "HOST:PORT" or "unix:PATH", got 7505'),
    ({"interim-interval": -1}, "interim-interval: must be 0 (no interims) or 1-86400 seconds, "
                               "got -1"),
    ({"interim-interval": 1.5}, "interim-interval: expected whole seconds, got 1.5"),
    ({"interim-interval": True}, "interim-interval: expected whole seconds, got True"),
    ({"intervals": {"alice": 86401}},
     "intervals.alice: must be 0 (no interims) or 1-86400 seconds, got 86401"),
    ({"intervals": [60]}, "intervals: expected a table of common name = seconds, got [60]"),
    ({"status-interval": -1}, "status-interval: must be 0 and at most 86400 seconds, got -1"),
    ({"reconnect-backoff": 0},
     "reconnect-backoff: must be more than 0 and at most 86400 seconds, got 0"),
    ({"reconnect-backoff": 10, "reconnect-backoff-max": 5},
     "reconnect-backoff-max: 5 is less than reconnect-backoff (10)"),
    ({"manegement": "127.0.0.1:7505"}, "manegement: unknown key; expected one of interim-interval, "
     "intervals, management, password-file, reconnect-backoff, reconnect-backoff-max, "
     "status-interval"),
])
def test_settings_errors_name_the_key(table, message):
    with pytest.raises(ValueError) as e:
        OpenVpnSettings.from_mapping(table)
    assert str(e.value) == message


def test_password_file_must_be_private(tmp_path):
    pw = tmp_path / "mgmt.pw"
    pw.write_text("s3cret\n")
    pw.chmod(0o640)
    with pytest.raises(ValueError) as e:
        OpenVpnSettings.from_mapping({"password-file": str(pw)})
    assert str(e.value) == (f"password-file: {pw} is accessible by group or others (mode 0640); "
                            "chmod 600 it and let only acctd's user own it")
    pw.chmod(0o604)
    with pytest.raises(ValueError, match="accessible by group or others"):
        OpenVpnSettings.from_mapping({"password-file": str(pw)})
    with pytest.raises(ValueError) as e:
        OpenVpnSettings.from_mapping({"password-file": str(tmp_path / "none")})
    assert str(e.value) == f"password-file: {tmp_path / 'none'}: No such file or directory"
    pw.write_text("\nsecond\n")
    pw.chmod(0o600)
    with pytest.raises(ValueError) as e:
        OpenVpnSettings.from_mapping({"password-file": str(pw)})
    assert str(e.value) == f"password-file: {pw}: the first line is empty"


def test_password_file_checked_again_at_each_connection(tmp_path):
    pw = tmp_path / "mgmt.pw"
    pw.write_text("one\n")
    pw.chmod(0o600)
    s = OpenVpnSettings.from_mapping({"password-file": str(pw)})
    pw.write_text("two\n")                       # rotated: read afresh
    assert s.password() == "two"
    os.chmod(pw, 0o644)
    with pytest.raises(ValueError, match="accessible by group or others"):
        s.password()


# --- the protocol --------------------------------------------------------------------

def kinds(msgs):
    out = []
    for m in msgs:
        if isinstance(m, Notification):
            out.append(m.kind)
        elif isinstance(m, Reply):
            out.append(f"reply {m.command}")
        else:
            out.append("prompt")
    return out


def parse_transcript(name: str, chunk: int | None = None):
    """All messages of a transcript, fed whole per step or `chunk` bytes at a time."""
    p = Parser()
    msgs = []
    for step in transcript(name):
        if "send" in step:
            p.expect(openvpn.PASSWORD_PROMPT if step["send"] in PASSWORDS else step["send"])
            continue
        data = step["recv"].encode()
        for i in range(0, len(data), chunk or len(data)):
            for m in p.feed(data[i:i + (chunk or len(data))]):
                msgs.append(m)
                if isinstance(m, Prompt):
                    p.prompt_answers_password()
    return msgs


def test_parse_plain_transcript():
    msgs = parse_transcript("plain")
    assert kinds(msgs) == [
        "prompt", f"reply {openvpn.PASSWORD_PROMPT}", "INFO", "reply bytecount 1",
        "reply status 3", "CLIENT:ESTABLISHED", "BYTECOUNT_CLI", "BYTECOUNT_CLI",
        "reply status 3", "reply status 2", "BYTECOUNT_CLI", "NOTIFY",
        "reply status 3", "reply status 3", "reply status 3", "reply status 3"]
    est = msgs[5]
    assert est.args == ("0",)
    env = dict(est.env)
    assert {k: env[k] for k in ("common_name", "ifconfig_pool_remote_ip",
                                "ifconfig_pool_remote_ip6", "trusted_ip", "trusted_port",
                                "time_unix")} == {
        "common_name": "alice", "ifconfig_pool_remote_ip": "10.8.0.2",
        "ifconfig_pool_remote_ip6": "fd00:8::1000", "trusted_ip": "10.99.0.2",
        "trusted_port": "59261", "time_unix": "1795285133"}
    assert len(env) == 55 and "END" not in env    # 55 ENV lines before END in plain.json
    assert [m.args for m in msgs if m[0] == "BYTECOUNT_CLI"] == [
        ("0", "1902", "2019"), ("0", "2152", "2127"), ("0", "2325", "2343")]
    assert msgs[1].lines == ("SUCCESS: password is correct",)
    assert msgs[11].args == ("info,remote-exit,EXIT",)


def test_chunking_does_not_matter():
    whole = parse_transcript("client_auth")
    assert parse_transcript("client_auth", chunk=1) == whole
    assert parse_transcript("client_auth", chunk=7) == whole
    assert parse_transcript("plain", chunk=3) == parse_transcript("plain")


def test_parse_client_auth_transcript():
    msgs = parse_transcript("client_auth")
    assert kinds(msgs) == [
        "INFO", "reply bytecount 2", "CLIENT:CONNECT", "reply client-auth-nt 0 1",
        "CLIENT:ADDRESS", "CLIENT:ADDRESS", "CLIENT:ESTABLISHED", "BYTECOUNT_CLI",
        "reply client-kill 0", "CLIENT:CONNECT", "reply status 3",
        'reply client-deny 1 1 "blocked by acctd" "access blocked"', "BYTECOUNT_CLI",
        "CLIENT:DISCONNECT", "CLIENT:DISCONNECT"]
    connect = msgs[2]
    assert connect.args == ("0", "1")
    env = dict(connect.env)
    assert len(env) == 47                               # 47 ENV lines before END
    assert {k: env[k] for k in ("n_clients", "password", "untrusted_port", "untrusted_ip",
                                "common_name", "username", "IV_VER")} == {
        "n_clients": "0", "password": "", "untrusted_port": "56889", "untrusted_ip": "10.99.0.2",
        "common_name": "alice", "username": "", "IV_VER": "2.6.14"}
    assert "ifconfig_pool_remote_ip" not in env         # no address before auth
    assert msgs[4].args == ("0", "10.8.0.2", "1")
    assert msgs[5].args == ("0", "fd00:8::1000", "1")
    gone = dict(msgs[13].env)
    assert (gone["bytes_sent"], gone["bytes_received"], gone["time_duration"]) == \
        ("2515", "2298", "7")
    assert msgs[14].args == ("1",) and dict(msgs[14].env) == {}   # denied: an empty ENV
    assert all(m.ok for m in msgs if isinstance(m, Reply))


def test_parse_status_3_and_2_alike():
    msgs = parse_transcript("plain")
    s3, s2 = msgs[8], msgs[9]
    row = {"cn": "alice", "real": "10.99.0.2:59261", "addr": "10.8.0.2", "addr6": "fd00:8::1000",
           "received": 2260, "sent": 2343, "since": 1795285133, "cid": 0}
    assert parse_status(s3.lines) == [row]
    assert parse_status(s2.lines) == [row]
    assert parse_status(msgs[4].lines) == []                       # nobody yet
    pending = parse_status(parse_transcript("client_auth")[10].lines)
    assert [(r["cid"], r["addr"], r["addr6"]) for r in pending] == [
        (0, "10.8.0.2", "fd00:8::1000"), (1, "", "")]               # 1 still authenticating


def test_password_prompt_needs_the_whole_prompt():
    p = Parser()
    assert p.feed(b"ENTER PASS") == []
    assert p.feed(b"WORD:") == [Prompt("ENTER PASSWORD:")]
    p.expect(openvpn.PASSWORD_PROMPT)
    # a wrong password is answered with the prompt again (hold.json)
    assert [m for m in p.feed(b"ENTER PASSWORD:")] == [Prompt("ENTER PASSWORD:")]
    assert p.prompt_answers_password() is True
    assert p.prompt_answers_password() is False


def test_wrong_password_transcript():
    steps = transcript("hold")
    assert [s.get("recv", s.get("send")) for s in steps[:4]] == [
        "ENTER PASSWORD:", "wrong", "ENTER PASSWORD:", "s3cret"]


def test_notification_inside_a_multiline_reply():
    """Real-time lines may come between the lines of a reply; both survive."""
    msgs = parse_transcript("plain")
    status_lines = msgs[8].lines
    p = Parser()
    p.expect("status 3")
    data = "\r\n".join(status_lines[:3]) + "\r\n>BYTECOUNT_CLI:0,2152,2127\r\n" + \
        "\r\n".join(status_lines[3:]) + "\r\n"
    got = p.feed(data.encode())
    assert got == [Notification("BYTECOUNT_CLI", ("0", "2152", "2127")),
                   Reply("status 3", status_lines)]


def test_error_ends_a_multiline_reply():
    p = Parser()
    p.expect("status 9")
    p.expect("bytecount 5")
    got = p.feed(b"ERROR: status command failed\r\nSUCCESS: bytecount interval changed\r\n")
    assert got == [Reply("status 9", ("ERROR: status command failed",)),
                   Reply("bytecount 5", ("SUCCESS: bytecount interval changed",))]
    assert not got[0].ok and got[1].ok


# --- the tracker on the transcripts ---------------------------------------------------

def test_plain_transcript_start_and_stop_from_status():
    """No client auth: no >CLIENT:DISCONNECT, the stop comes from the status
    poll that no longer lists the client, with the counters of the last one
    that did: exactly what the client-disconnect script got in the same run."""
    hook = json.loads((TRANSCRIPTS / "hook_env.json").read_text())["client-disconnect"]
    t = Tracker(300)
    cmds, events = replay("plain", t, Clock(1795285140.0))
    assert cmds == ["bytecount 300", "status 3"]
    assert events == [
        Event("start", ("alice", "10.8.0.2", "10.99.0.2", 0, 1795285133.0)),
        Event("stop", ("alice", 0, 2377, 2325, 7.0, 1795285140.0))]
    assert (2377, 2325) == (int(hook["bytes_sent"]), int(hook["bytes_received"]))
    assert t.clients == {}


def test_plain_transcript_interims_each_second():
    """interval 1 and a clock a second further for each message: every
    BYTECOUNT_CLI and status row is an interim, in the unit's direction
    (bytes_in = OpenVPN's bytes sent)."""
    t = Tracker(1)
    _, events = replay("plain", t, Clock(1795285133.0, 1.0))
    assert [e.args[2:4] for e in events if e.kind == "interim"] == [
        (2019, 1902), (2127, 2152), (2343, 2260), (2343, 2260), (2343, 2325),
        (2377, 2325), (2377, 2325), (2377, 2325)]
    assert events[-1].kind == "stop" and events[-1].args[2:4] == (2377, 2325)


def test_client_auth_transcript_allows_then_denies():
    blocked = set()
    t = Tracker(300, is_blocked=lambda cn: cn in blocked)

    def on_send(cmd):
        if cmd.startswith("client-kill"):   # what ManagementClient.kill() does
            blocked.add("alice")
            assert t.kill("alice") == [cmd]
    cmds, events = replay("client_auth", t, Clock(1795285148.0), on_send)
    assert cmds == ["bytecount 300", "status 3", "client-auth-nt 0 1",
                    'client-deny 1 1 "blocked by acctd" "access blocked"']
    assert [c for c in (s.get("send") for s in transcript("client_auth")) if c and
            c.startswith("client-")] == ["client-auth-nt 0 1", "client-kill 0",
                                         'client-deny 1 1 "blocked by acctd" "access blocked"']
    assert events == [
        Event("start", ("alice", "10.8.0.2", "10.99.0.2", 0, 1795285141.0)),
        Event("stop", ("alice", 0, 2515, 2298, 7.0, 1795285148.0))]   # DISCONNECT's own counters
    assert t.client_auth


def test_hold_is_released_after_bytecount():
    t = Tracker(300, {"alice": 60})
    cmds, events = replay("hold", t, Clock(0.0))
    assert cmds == ["bytecount 60", "status 3", "hold release"]
    assert events == [] and t.synced


# --- per-client intervals -------------------------------------------------------------

def established(cid: int, cn: str, t0: int, addr="10.8.0.2", addr6="fd00:8::1000") -> Notification:
    """An ESTABLISHED notification with the fields acctd reads, as in plain.json."""
    env = dict(next(m for m in parse_transcript("plain") if m[0] == "CLIENT:ESTABLISHED").env)
    env.update(common_name=cn, time_unix=str(t0), ifconfig_pool_remote_ip=addr,
               ifconfig_pool_remote_ip6=addr6)
    return Notification("CLIENT:ESTABLISHED", (str(cid),), env)


def bytecount(cid: int, rx: int, tx: int) -> Notification:
    return Notification("BYTECOUNT_CLI", (str(cid), str(rx), str(tx)))


def attached(t: Tracker) -> list[str]:
    cmds, _ = t.handle(Notification("INFO", ("OpenVPN Management Interface Version 5",)), 0)
    t.handle(Reply("status 3", ("END",)), 0)
    return cmds


def test_base_interval_is_the_gcd():
    t = Tracker(300, {"alice": 60, "bob": 90})
    assert t.base_interval() == 30
    assert attached(t) == ["bytecount 30", "status 3"]
    assert t.set_interval("carol", 45) == ["bytecount 15"]
    assert t.set_interval("carol", 45) == []                  # unchanged: nothing to send
    assert t.set_interval("carol", None) == ["bytecount 30"]
    assert t.interval("alice") == 60 and t.interval("zed") == 300
    t.detach()
    assert t.set_interval("alice", 7) == []                   # told at the next attach
    assert attached(t) == ["bytecount 1", "status 3"]


def test_interims_at_each_clients_own_interval():
    t = Tracker(6, {"alice": 2, "bob": 3})
    attached(t)
    t0 = 1000
    t.handle(established(0, "alice", t0), t0 + 0.2)
    t.handle(established(1, "bob", t0, "10.8.0.3", "fd00:8::1001"), t0 + 0.2)
    got = []
    for s in range(1, 13):        # OpenVPN reports each second while there is traffic
        for cid in (0, 1):
            _, ev = t.handle(bytecount(cid, 100 * s, 10 * s), t0 + s + 0.01)
            got += [(e.args[0], int(e.args[4]) - t0, e.args[2], e.args[3]) for e in ev]
    assert got == [("alice", 2, 20, 200), ("bob", 3, 30, 300), ("alice", 4, 40, 400),
                   ("alice", 6, 60, 600), ("bob", 6, 60, 600), ("alice", 8, 80, 800),
                   ("bob", 9, 90, 900), ("alice", 10, 100, 1000), ("alice", 12, 120, 1200),
                   ("bob", 12, 120, 1200)]


def test_interval_0_turns_interims_off():
    """The plugin proposal: "A value of 0 will disable accounting information
    to be sent"; start and stop still come."""
    assert Tracker().default == 60                           # its default: 60 s
    t = Tracker(0, {"bob": 2})
    assert attached(t) == ["bytecount 2", "status 3"]        # for bob only
    t0 = 1000
    t.handle(established(0, "alice", t0), t0 + 0.2)
    t.handle(established(1, "bob", t0, "10.8.0.3", "fd00:8::1001"), t0 + 0.2)
    got = []
    for s in range(1, 5):
        for cid in (0, 1):
            _, ev = t.handle(bytecount(cid, 100 * s, 10 * s), t0 + s + 0.01)
            got += [(e.kind, e.args[0], int(e.args[4]) - t0) for e in ev]
    assert got == [("interim", "bob", 2), ("interim", "bob", 4)]
    assert t.set_interval("bob", 0) == ["bytecount 0"]      # nobody reports: OpenVPN stops
    _, ev = t.handle(bytecount(1, 900, 90), t0 + 9.01)
    assert ev == []
    assert t.set_interval("bob", None) == ["bytecount 2"]   # back to the configuration
    _, ev = t.handle(Notification("CLIENT:DISCONNECT", ("0",), {"bytes_sent": "400",
                                                                 "bytes_received": "40"}), t0 + 10)
    assert [(e.kind, e.args[0]) for e in ev] == [("stop", "alice")]


def test_changed_interval_takes_effect_at_the_next_report():
    t = Tracker(300, {"alice": 2})
    attached(t)
    t0 = 1000
    t.handle(established(0, "alice", t0), t0)
    times = []
    for s in range(1, 21):
        if s == 5:
            assert t.set_interval("alice", 5) == ["bytecount 5"]
        if s == 12:
            assert t.set_interval("alice", 1) == ["bytecount 1"]
        _, ev = t.handle(bytecount(0, s, s), t0 + s)
        times += [int(e.args[4]) - t0 for e in ev]
    # 2 s until the change at 5 s; then 5 s after the last report (4): 9;
    # then 1 s from the change at 12 on, the first at once since 9 + 1 <= 12
    assert times == [2, 4, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20]


def test_interval_counts_whole_seconds_like_openvpn():
    """OpenVPN reports when its whole-second clock has moved on by N; a
    report 0.02 s after the last in wall time may be a second later."""
    t = Tracker(1)
    attached(t)
    t.handle(established(0, "alice", 1000), 1000.5)
    _, ev = t.handle(bytecount(0, 1, 1), 1000.99)
    assert ev == []
    _, ev = t.handle(bytecount(0, 2, 2), 1001.01)
    assert [e.args[2] for e in ev] == [2]


# --- blocking and resync ----------------------------------------------------------

def test_kill_each_instance_once():
    t = Tracker(300)
    attached(t)
    t.handle(established(3, "alice", 1000), 1000)
    t.handle(established(4, "alice", 1001, "10.8.0.3", ""), 1001)
    t.handle(established(5, "bob", 1001, "10.8.0.4", ""), 1001)
    assert t.kill("alice") == ["client-kill 3", "client-kill 4"]
    assert t.kill("alice") == []
    assert t.kill("nobody") == []


def test_blocked_at_established_is_halted_and_never_started():
    t = Tracker(300, is_blocked=lambda cn: cn == "alice")
    attached(t)
    cmds, events = t.handle(established(7, "alice", 1000), 1000)
    assert (cmds, events) == (["client-kill 7 HALT"], [])
    assert t.handle(bytecount(7, 10, 10), 1002) == ([], [])
    # still listed during its delayed exit: not started by the poll either
    rows = [{"cn": "alice", "real": "10.99.0.2:5000", "addr": "10.8.0.2", "addr6": "",
             "received": 10, "sent": 10, "since": 1000, "cid": 7}]
    assert t.resync(rows, 1003) == ([], [])
    assert t.resync([], 1006) == ([], [])
    assert t.refused == set()


def test_reauth_of_a_blocked_unit_is_denied():
    blocked = set()
    t = Tracker(300, is_blocked=lambda cn: cn in blocked)
    env = {"common_name": "alice", "username": ""}
    assert t.handle(Notification("CLIENT:REAUTH", ("0", "2"), env), 0)[0] == \
        ["client-auth-nt 0 2"]
    blocked.add("alice")
    assert t.handle(Notification("CLIENT:REAUTH", ("0", "3"), env), 0)[0] == \
        ['client-deny 0 3 "blocked by acctd" "access blocked"']


def test_a_failing_is_blocked_allows(caplog):
    def broken(cn):
        raise RuntimeError("daemon gone")
    t = Tracker(300, is_blocked=broken)
    env = {"common_name": "alice"}
    assert t.handle(Notification("CLIENT:CONNECT", ("0", "1"), env), 0)[0] == \
        ["client-auth-nt 0 1"]
    assert "is_blocked('alice') failed; allowing" in caplog.text


def test_resync_after_reconnect():
    """While acctd was away: alice (cid 0) left, bob (cid 1) stayed, carol
    (cid 2) came; and a restarted server reuses cid 3 for dave."""
    blocked = {"carol"}
    t = Tracker(300, is_blocked=lambda cn: cn in blocked)
    attached(t)
    t.handle(established(0, "alice", 1000), 1000)
    t.handle(established(1, "bob", 1000, "10.8.0.3", ""), 1000)
    t.handle(established(3, "erin", 1000, "10.8.0.5", ""), 1000)
    t.handle(bytecount(0, 500, 700), 1301)      # due (300 s): an interim
    t.detach()
    assert not t.synced
    rows = [
        {"cn": "bob", "real": "10.99.0.3:4000", "addr": "10.8.0.3", "addr6": "", "received": 40,
         "sent": 50, "since": 1000, "cid": 1},
        {"cn": "carol", "real": "[2001:db8::7]:4001", "addr": "", "addr6": "fd00:8::1002",
         "received": 10, "sent": 20, "since": 1200, "cid": 2},
        {"cn": "dave", "real": "10.99.0.6:4002", "addr": "10.8.0.5", "addr6": "",
         "received": 1, "sent": 2, "since": 1390, "cid": 3},
    ]
    cmds, events = t.resync(rows, 1400.5)
    assert cmds == ["client-kill 2"]
    assert events == [
        Event("interim", ("bob", 1, 50, 40, 1400.5)),
        Event("start", ("carol", "fd00:8::1002", "2001:db8::7", 2, 1200.0)),
        Event("stop", ("erin", 3, 0, 0, 400.5, 1400.5)),
        Event("start", ("dave", "10.8.0.5", "10.99.0.6", 3, 1390.0)),
        Event("stop", ("alice", 0, 700, 500, 400.5, 1400.5)),
    ]
    assert sorted(t.clients) == [1, 2, 3] and t.synced
    assert t.clients[2].killed and t.clients[2].real_port == 4001


# --- script mode ----------------------------------------------------------------------

def hook_env(kind: str) -> dict:
    return json.loads((TRANSCRIPTS / "hook_env.json").read_text())[kind]


def test_hook_connect():
    assert hook_main(hook_env("client-connect")) == {
        "event": "start", "source": "openvpn", "user": "alice", "addr": "10.8.0.2",
        "addr6": "fd00:8::1000", "real_addr": "10.99.0.2", "real_port": 59261,
        "time": 1795285133.0}


def test_hook_disconnect():
    assert hook_main(hook_env("client-disconnect")) == {
        "event": "stop", "source": "openvpn", "user": "alice", "addr": "10.8.0.2",
        "addr6": "fd00:8::1000", "real_addr": "10.99.0.2", "real_port": 59261,
        "time": 1795285140.0, "bytes_in": 2377, "bytes_out": 2325, "duration": 7.0,
        "cause": "user-request"}


def test_hook_ipv6_only_and_username():
    env = hook_env("client-connect")
    del env["ifconfig_pool_remote_ip"], env["common_name"]
    env["username"] = "bob"
    ev = hook_main(env)
    assert (ev["user"], ev["addr"], ev["addr6"]) == ("bob", "fd00:8::1000", "fd00:8::1000")


@pytest.mark.parametrize("change, message", [
    ({"script_type": "up"}, "script_type must be user-pass-verify, client-connect or client-disconnect, got 'up'"),
    ({"common_name": None}, "common_name is not set"),
    ({"bytes_sent": None}, "bytes_sent is not set"),
    ({"bytes_received": "12k"}, "bytes_received: not a whole number: '12k'"),
    ({"time_duration": "-1"}, "time_duration: negative: -1"),
    ({"time_unix": ""}, "time_unix is not set"),
    ({"ifconfig_pool_remote_ip": "10.8.0.300"},
     "ifconfig_pool_remote_ip: not an address: '10.8.0.300'"),
    ({"ifconfig_pool_remote_ip": None, "ifconfig_pool_remote_ip6": None},
     "ifconfig_pool_remote_ip is not set (no VPN address for the session)"),
])
def test_hook_errors_name_the_variable(change, message):
    env = hook_env("client-disconnect")
    for k, v in change.items():
        if v is None:
            env.pop(k)
        else:
            env[k] = v
    with pytest.raises(HookError) as e:
        hook_main(env)
    assert str(e.value).startswith(message)


def test_hook_exit_codes():
    assert [int(c) for c in HookExit] == [0, 1, 2]


def test_verdicts_asked_beforehand_replace_is_blocked():
    """ManagementClient asks is_blocked before taking its lock, for the names
    Tracker.names() lists, and hands the answers in."""
    asked = []

    def is_blocked(cn):
        asked.append(cn)
        return True
    t = Tracker(300, is_blocked=is_blocked)
    connect = parse_transcript("client_auth")[2]
    assert Tracker.names(connect) == ["alice"]
    assert t.handle(connect, 0, {"alice": False})[0] == ["client-auth-nt 0 1"]
    assert asked == []
    status = parse_transcript("client_auth")[10]
    assert Tracker.names(status) == ["alice"]
    assert Tracker.names(parse_transcript("plain")[6]) == []         # BYTECOUNT_CLI
    assert t.handle(connect, 0)[0] == ['client-deny 0 1 "blocked by acctd" "access blocked"']
    assert asked == ["alice"]


def test_connect_checks_the_password_first_and_fails_closed(caplog):
    seen = []

    def check(name, password):
        seen.append((name, password))
        if password == "boom":
            raise RuntimeError("daemon gone")
        return None if password == "right" else "wrong user name or password"
    t = Tracker(300, is_blocked=lambda cn: False, check_login=check)
    env = {"common_name": "alice", "username": "alice", "password": "right"}
    assert t.handle(Notification("CLIENT:CONNECT", ("0", "1"), env), 0)[0] == \
        ["client-auth-nt 0 1"]
    env["password"] = "nope"
    assert t.handle(Notification("CLIENT:CONNECT", ("1", "1"), env), 0)[0] == \
        ['client-deny 1 1 "wrong user name or password" "wrong user name or password"']
    env["password"] = "boom"
    assert t.handle(Notification("CLIENT:CONNECT", ("2", "1"), env), 0)[0] == \
        ['client-deny 2 1 "login check failed" "login check failed"']
    assert "check_login('alice') failed; refusing" in caplog.text
    # asked beforehand (outside the client's lock): not asked again
    assert t.handle(Notification("CLIENT:CONNECT", ("3", "1"), env), 0, None, (None,))[0] == \
        ["client-auth-nt 3 1"]
    assert seen == [("alice", "right"), ("alice", "nope"), ("alice", "boom")]


def test_auth_user_pass_verify_reads_the_via_file(tmp_path):
    f = tmp_path / "up"
    f.write_text("alice\nsecret pw\n")
    env = {"script_type": "user-pass-verify", "username": "alice"}
    assert hook_main(env, str(f)) == {"event": "auth", "source": "openvpn", "user": "alice",
                                      "password": "secret pw"}
    assert hook_main({**env, "password": "via env"})["password"] == "via env"
    with pytest.raises(HookError, match="no password: use --auth-user-pass-verify CMD via-file"):
        hook_main(env)
    f.write_text("alice\n")
    with pytest.raises(HookError, match="expected a username line and a password line"):
        hook_main(env, str(f))
