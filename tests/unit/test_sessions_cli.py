"""Sessions and logins as an operator meets them: acctctl session and login
commands end to end (the CLI, a real control server, the daemon's real
services over real storage; no kernel: a drain charges the counts the test
gives), with the exact text and exit code of each answer."""

import datetime as dt

import pytest
from click.testing import CliRunner

from acctctl.main import main
from acctd.config import loads
from acctd.control import server as ctl
from acctd.services.login import LoginService
from acctd.services.sessions import SessionsService, add_counts

from .daemon_stub import daemon_stub
from .test_login import CHEAP

CONFIG = """[session]
ports = { "nas1:7" = "10.0.0.7", "nas2:7" = "10.0.2.7" }
""" + "".join(f'[[unit]]\ntype = "user"\nname = "{n}"\n'
             for n in ("alice", "carol", "dave", "erin"))

T0 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.timezone.utc)


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def acctctl(tmp_path):
    """acctctl(*words, input=None) -> (exit code, stdout + stderr); .clock,
    .daemon, and .traffic: user -> (packets in, packets out, bytes in,
    bytes out) the next drain charges to the user's open session."""
    clock = Clock()
    with daemon_stub(loads(CONFIG, str(tmp_path / "acctd.toml")), tmp_path=tmp_path,
                     clock=clock) as d:
        traffic = {}

        def drain():
            sessions = d.service(SessionsService)
            for x in sessions.open.values():
                c = traffic.pop(d.snapshot.name_of(x.unit_oid), None)
                if c:
                    d.storage.charge_sessions({x.id: c})
                    add_counts(x, c)
            return {}
        d.drain_locked = drain
        d.service(LoginService).table.hasher = CHEAP
        srv = ctl.ControlServer(str(tmp_path / "ctl.sock"), d.dispatcher)
        srv.serve_in_thread()

        def run(*words, input=None):
            # off a terminal, as in a pipe: every column whole, whatever its width
            r = CliRunner().invoke(main, ["--socket", srv.path, *words], input=input)
            assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
            return r.exit_code, r.output
        run.clock, run.daemon, run.traffic = clock, d, traffic
        yield run
        srv.shutdown()
        srv.server_close()


# --- login -------------------------------------------------------------------------

def test_a_malformed_mac_or_address_is_one_line_before_the_password_is_asked(acctctl):
    """item 24: a MAC or address typo is told at once, without a password
    prompt, with nothing logged as a login attempt."""
    assert acctctl("login", "set", "alice", "password", "secret")[0] == 0
    assert acctctl("login", "in", "alice", "--mac", "zz", input="secret\n") == (
        1, "acctctl: mac: expected a MAC like 00:11:22:33:44:55, 00-11-22-33-44-55 or "
           "0011.2233.4455, got 'zz'\n")
    assert acctctl("login", "out", "alice", "--ip", "10.0.0.300", input="secret\n") == (
        1, "acctctl: ip: expected an IP address, got '10.0.0.300'\n")
    assert acctctl("login", "show", "alice") == (0, "alice (026622) closed, never opened\n")


def test_login_show_says_never_used_and_lists_closed_records_too(acctctl):
    """item 25: right after a login nothing is used yet (no "-1 sec. ago"),
    timeouts that are off say so, and without a unit every record is
    listed, closed ones included."""
    acctctl("login", "set", "alice", "password", "secret", "inact", "600")
    acctctl("login", "set", "carol", "password", "secret2", "abs", "3600")
    acctctl("login", "set", "dave", "password", "secret3")
    assert acctctl("login", "in", "alice", "--password-file", "-", input="secret\n") == (
        0, "OK: login success from ip:0.0.0.0, mac:00:00:00:00:00:00\n")
    acctctl("login", "in", "carol", "--password-file", "-", input="secret2\n")
    acctctl.clock.advance(30)
    acctctl("login", "out", "carol", "--password-file", "-", input="secret2\n")
    acctctl.clock.advance(5)
    assert acctctl("login", "show") == (0, (
        "alice (026622) opened 35 sec. ago, no traffic counted since\n"
        "\tabsolute timeout off, inactivity timeout in 565 sec.\n"
        "carol (027981) closed, last opened 35 sec. ago\n"
        "dave (02FA12) closed, never opened\n"))
    assert acctctl("login", "show", "erin") == (0, "erin has no login record\n")


def test_login_set_names_an_unknown_unit_and_says_what_it_set(acctctl):
    """item 30: the one "unknown unit" wording, exit 1; a record set is
    told in words (JSON with --json)."""
    assert acctctl("login", "set", "nosuch", "password", "secret") == (
        1, "acctctl: unknown unit 'nosuch'\n")
    assert acctctl("login", "set", "alice", "password", "secret", "inact", "600",
                   "mac", "0A-0B-0C-0D-0E-0F", "strict") == (
        0, "login of alice (026622): inactivity timeout 600 sec., absolute timeout off, "
           "mac 0a:0b:0c:0d:0e:0f (strict)\n")
    assert acctctl("login", "set", "alice", "inact", "5") == (
        1, "acctctl: inact must be 0 (off) or between 60 and 43200 seconds, got 5\n")


# --- sessions ------------------------------------------------------------------------

def test_session_commands_name_the_user_and_say_what_they_did(acctctl):
    """item 26: start, stop and kill-expired print the user's name, as
    session list does, and what happened to each session."""
    assert acctctl("session", "start", "carol", "--ip", "10.0.0.5") == (
        0, "session 1: carol at 10.0.0.5 started\n")
    assert acctctl("session", "start", "carol", "--ip", "10.0.0.5") == (
        0, "session 1: carol at 10.0.0.5 already open\n")
    acctctl.clock.advance(3725)
    acctctl.traffic["carol"] = (3, 4, 1500, 2_082_097_909)
    assert acctctl("session", "stop", "carol") == (
        0, "session 1: carol at 10.0.0.5 ended (user-request) after 1:02:05: "
           "1500 bytes in, 2082097909 bytes out\n")
    assert acctctl("session", "kill-expired") == (0, "no session ended\n")
    acctctl("session", "start", "dave", "--ip", "10.0.0.6")
    acctctl("unit", "dave", "sys-deny")
    assert acctctl("session", "kill-expired") == (
        0, "session 2: dave at 10.0.0.6 ended (expired) after 0:00:00: "
           "0 bytes in, 0 bytes out\n")


def test_session_list_shows_every_column_exactly(acctctl):
    """item 27: MAC, NAS, port, packets and duration, and the exact byte
    counts, as the README promises."""
    acctctl("session", "start", "carol", "--ip", "10.0.0.5", "--mac", "00-1A-2B-3C-4D-5E",
            "--nas", "192.0.2.7", "--port", "7")
    acctctl.clock.advance(90061)
    acctctl.traffic["carol"] = (12, 34, 567, 2_082_097_909)
    acctctl("session", "stop", "carol")
    acctctl("session", "start", "erin", "--ip", "2001:db8::9")
    code, text = acctctl("session", "list")
    assert code == 0
    assert text.splitlines()[1:] == [
        "┏━━━━┳━━━━━━━┳━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━┳━━━━━━━━━┳"
        "━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━┳"
        "━━━━━━━━━━━━┳━━━━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━━┓",
        "┃ id ┃ user  ┃ addr        ┃ mac               ┃ nas       ┃ port ┃ source  ┃"
        " start (UTC)         ┃ stop (UTC)          ┃ duration       ┃ cause        ┃"
        " packets in ┃ packets out ┃ bytes in ┃  bytes out ┃",
        "┡━━━━╇━━━━━━━╇━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━╇━━━━━━━━━╇"
        "━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━╇"
        "━━━━━━━━━━━━╇━━━━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━━┩",
        "│  2 │ erin  │ 2001:db8::9 │ -                 │ -         │ -    │ command │"
        " 2026-03-03 11:01:01 │ -                   │ -              │ -            │"
        "          0 │           0 │        0 │          0 │",
        "│  1 │ carol │ 10.0.0.5    │ 00:1a:2b:3c:4d:5e │ 192.0.2.7 │ 7    │ command │"
        " 2026-03-02 10:00:00 │ 2026-03-03 11:01:01 │ 1 day, 1:01:01 │ user-request │"
        "         12 │          34 │      567 │ 2082097909 │",
        "└────┴───────┴─────────────┴───────────────────┴───────────┴──────┴─────────┴"
        "─────────────────────┴─────────────────────┴────────────────┴──────────────┴"
        "────────────┴─────────────┴──────────┴────────────┘",
    ]


def test_a_held_address_is_refused_without_force_and_told_with_it(acctctl):
    """item 28: dave cannot silently take carol's address: a conflict (exit
    1, nothing changed); with --force the output says which session ended."""
    acctctl("session", "start", "carol", "--ip", "10.0.0.5")
    assert acctctl("session", "start", "dave", "--ip", "10.0.0.5") == (
        1, "acctctl: address 10.0.0.5 is held by carol (session 1); give --force to end "
           "that session\n")
    assert [(x.id, x.addr) for x in acctctl.daemon.service(SessionsService).open.values()] == \
        [(1, "10.0.0.5")]
    acctctl.clock.advance(60)
    assert acctctl("session", "start", "dave", "--ip", "10.0.0.5", "--force") == (0, (
        "session 1: carol at 10.0.0.5 ended (address-moved) after 0:01:00: "
        "0 bytes in, 0 bytes out\n"
        "session 2: dave at 10.0.0.5 started\n"))


def test_stopping_a_user_without_a_session_is_not_found(acctctl):
    """item 28: no open session is said, with a non-zero exit."""
    assert acctctl("session", "stop", "erin") == (1, "acctctl: erin has no open session\n")
    assert acctctl("session", "stop", "erin", "--json") == (
        1, "acctctl: erin has no open session\n")
    assert acctctl("session", "stop", "nosuch") == (1, "acctctl: unknown unit 'nosuch'\n")


def test_session_stop_by_address_port_or_nas_port(acctctl):
    """freeside-logout username ( portnum | ip | nasnum nasport ): the session
    found by what is given, each part of which must match."""
    acctctl("session", "start", "carol", "--ip", "10.0.0.5")
    acctctl("session", "start", "dave", "--port", "7", "--nas", "nas1")   # 10.0.0.7
    acctctl("session", "start", "erin", "--port", "7", "--nas", "nas2")   # 10.0.2.7
    acctctl("session", "start", "alice", "--ip", "10.0.0.9")
    assert acctctl("session", "stop", "--ip", "::ffff:10.0.0.5") == (
        0, "session 1: carol at 10.0.0.5 ended (user-request) after 0:00:00: "
           "0 bytes in, 0 bytes out\n")
    assert acctctl("session", "stop", "--port", "7") == (
        1, "acctctl: 2 open sessions on port 7: give --nas too\n")
    assert acctctl("session", "stop", "dave", "--port", "7", "--nas", "nas2") == (
        1, "acctctl: dave on port nas2:7 has no open session\n")
    assert acctctl("session", "stop", "--nas", "nas2", "--nas-port", "7") == (
        0, "session 3: erin at 10.0.2.7 ended (user-request) after 0:00:00: "
           "0 bytes in, 0 bytes out\n")
    assert acctctl("session", "stop", "dave", "--port", "7") == (
        0, "session 2: dave at 10.0.0.7 ended (user-request) after 0:00:00: "
           "0 bytes in, 0 bytes out\n")
    assert acctctl("session", "stop", "--ip", "10.0.0.5") == (
        1, "acctctl: no open session at 10.0.0.5\n")
    assert acctctl("session", "stop", "--ip", "nowhere") == (
        1, "acctctl: session stop: not an address: 'nowhere'\n")
    assert acctctl("session", "stop")[0] == 2                   # usage: nothing to find it by
    assert [(r["user"], r["stop_cause"]) for r in acctctl.daemon.call("session-list", open=True)] \
        == [("alice", "")]
