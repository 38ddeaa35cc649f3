"""The acl-server service without routers: its config and errors, the
desired set from the enforcement plan, the pusher's contract against an
in-memory router (resync, changes at once, never-block, the rule limit,
restart detection, expiry refresh, failures), the RouterOS back-end
against a replayed API exchange, and `acctctl aclserver show`'s text.
The real routers (nftables, BIRD over BGP) are in tests/aclserver."""
from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

import pytest

from acctd import config as config_mod
from acctd.config import ConfigError
from acctd.kernel import abi
from acctd.model import enforcement
from acctd.model.snapshot import Snapshot
from acctd.services.aclserver.enforcer import Backend, Entry, Pusher, desired_of
from acctd.services.aclserver.routeros import RouterOsBackend
from acctd.services.aclserver.service import AclServerService

DATA = Path(__file__).parent.parent / "data" / "routeros"
DENY, QUOTA, MONEY = (int(b) for b in (abi.SysPolicy.DENY, abi.SysPolicy.QUOTA,
                                       abi.SysPolicy.MONEY))

UNITS = """
[[policy]]
name = "ip"
target = "proto ip"

[[unit]]
type = "group"
name = "g"

[[unit]]
type = "host"
name = "alice"
ip = "10.0.0.5"
acct-policy = ["ip"]
parents = ["g"]

[[unit]]
type = "net"
name = "office"
net = ["10.0.1.0/24", "2001:db8:1::/48"]
acct-policy = ["ip"]

[[unit]]
type = "host"
name = "carol"
ip = "10.0.0.7"
acct-policy = ["ip"]
bw = "8M in 2M out"
"""

ACL = """
[aclserver]
delay = 60
never-block = ["10.0.1.0/24"]

[[aclserver.backend]]
name = "edge"
type = "bgp"
hostname = "192.0.2.10"
peer-as = 65001
local-as = 65002
router-id = "192.0.2.20"
flowspec = true
direction = "dst"
community = "65535:666"

[[aclserver.backend]]
name = "fw"
type = "nft"
dynamic-name = "blocked"
"""


def load(text: str, tmp_path) -> config_mod.Config:
    p = tmp_path / "acctd.toml"
    p.write_text(text)
    return config_mod.load(p)


def error(text: str, tmp_path) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        load(text, tmp_path)
    return e.value


# --- config ---------------------------------------------------------------------------

def test_config_reads_every_backend(tmp_path):
    a = load(UNITS + ACL, tmp_path).aclserver
    assert a.delay == 60 and [str(p) for p in a.never_block] == ["10.0.1.0/24"]
    bgp, nft = a.backend
    assert (bgp.type, bgp.hostname, bgp.peer_as, bgp.flowspec, bgp.direction, bgp.rtbh) == \
        ("bgp", "192.0.2.10", 65001, True, "dst", True)
    assert (nft.type, nft.dynamic_name, nft.table, nft.family) == \
        ("nft", "blocked", "acctd", "inet")


def test_config_default_delay_is_netams_300(tmp_path):
    a = load('[aclserver]\n[[aclserver.backend]]\nname = "fw"\ntype = "nft"\n', tmp_path)
    assert a.aclserver.delay == 300 and a.aclserver.expiry is None


@pytest.mark.parametrize("extra, line, key, reason", [
    ('flowspec = true\n', 7, "backend", "[aclserver] key 'backend[0].flowspec': not a key of "
     "a nft back-end; it takes command, direction, dynamic-name, expiry, family, name, netns, "
     "set-uptime, set6, table, type"),
    ('direction = "in"\n', 7, "backend", "[aclserver] key 'backend[0].direction': expected one "
     "of src, dst, got 'in'"),
    ('expiry = 30\n', 7, "backend", "[aclserver] key 'backend[0].expiry': an expiry of 30 s "
     "would lapse before the next refresh: make it longer than delay (60 s)"),
])
def test_config_mistakes_name_file_line_key(tmp_path, extra, line, key, reason):
    text = ('[aclserver]\ndelay = 60\n\n[[aclserver.backend]]\nname = "fw"\ntype = "nft"\n'
            + extra)
    e = error(text, tmp_path)
    assert (e.line, e.key, e.reason) == (line, key, reason)
    assert str(e) == f"{tmp_path / 'acctd.toml'}:{line}: {reason}"


def test_config_bgp_needs_its_as_numbers_and_a_community(tmp_path):
    base = '[aclserver]\n[[aclserver.backend]]\nname = "e"\ntype = "bgp"\nhostname = "10.0.0.1"\n'
    e = error(base, tmp_path)
    assert e.reason == "[aclserver] key 'backend[0].type': a bgp back-end needs peer-as"
    assert e.line == 4
    e = error(base + 'peer-as = 1\nlocal-as = 2\nrouter-id = "10.0.0.2"\ncommunity = "666"\n',
              tmp_path)
    assert (e.line, e.reason) == (9, "[aclserver] key 'backend[0].community': expected a BGP "
                                     "community like \"65535:666\", got '666'")


def test_config_backend_names_are_unique(tmp_path):
    one = '[[aclserver.backend]]\nname = "fw"\ntype = "nft"\n'
    e = error("[aclserver]\n" + one + one, tmp_path)
    assert (e.line, e.reason) == (6, "[aclserver] key 'backend[1].name': back-end 'fw' is "
                                     "named twice")


# --- the desired set -------------------------------------------------------------------

def test_desired_set_is_every_address_of_every_blocked_unit_and_the_bw_units(tmp_path):
    cfg = load(UNITS, tmp_path)
    snap = Snapshot.build(cfg)
    idx = {u.name: i for i, u in enumerate(snap.units)}
    bits = {idx["alice"]: DENY | QUOTA, idx["office"]: MONEY}
    got = desired_of(enforcement.plan(snap, bits, None))
    assert got == {
        "10.0.0.5/32": Entry("10.0.0.5/32", "sys-deny,sys-deny-quota"),
        "10.0.1.0/24": Entry("10.0.1.0/24", "sys-deny-money"),
        "2001:db8:1::/48": Entry("2001:db8:1::/48", "sys-deny-money"),
        "10.0.0.7/32": Entry("10.0.0.7/32", "bw", (8_000_000, 2_000_000)),
    }
    # blocked with a bw: the block, not the limit
    bits[idx["carol"]] = DENY
    assert desired_of(enforcement.plan(snap, bits, None))["10.0.0.7/32"] == \
        Entry("10.0.0.7/32", "sys-deny")


# --- the pusher against an in-memory router ----------------------------------------------

class MemoryRouter(Backend):
    """A router as a dict; `fail` makes every command raise; `boot` is when
    it came up (uptime = now - boot)."""
    kind = "memory"

    def __init__(self, name="mem", expiry=None, max_entries=None):
        super().__init__(name)
        self.table: dict[str, object] = {}
        self.commands: list[tuple] = []
        self.fail: str | None = None
        self.expiry, self.max_entries = expiry, max_entries
        self.boot = 0.0
        self.now = lambda: 100.0

    def _do(self, *cmd):
        if self.fail:
            raise OSError(self.fail)
        self.commands.append(cmd)

    def apply(self, entry):
        self._do("apply", entry.address)
        self.table[entry.address] = self.action(entry)

    def withdraw(self, address):
        self._do("withdraw", address)
        self.table.pop(address, None)

    def held(self):
        self._do("held")
        return dict(self.table)

    def uptime(self):
        if self.fail:
            raise OSError(self.fail)
        return self.now() - self.boot


def block(addr, reason="sys-deny"):
    return Entry(addr, reason)


@pytest.fixture
def pusher():
    made = []

    def make(router, **kw):
        p = Pusher(router, kw.pop("delay", 3600), check_every=0.05, **kw)
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()


def test_start_resync_makes_the_router_equal_to_the_desired_set(pusher):
    r = MemoryRouter()
    r.table = {"10.9.9.9/32": "block", "10.0.0.5/32": "block"}   # one stale, one right
    p = pusher(r)
    p.set_desired({"10.0.0.5/32": block("10.0.0.5/32"), "10.0.0.6/32": block("10.0.0.6/32")},
                  resync=True)
    p.start()
    assert p.wait_idle(5)
    assert r.table == {"10.0.0.5/32": "block", "10.0.0.6/32": "block"}
    # only what differed was sent
    assert r.commands == [("held",), ("apply", "10.0.0.6/32"), ("withdraw", "10.9.9.9/32")]
    st = p.status()
    assert st["pushed"] == {"10.0.0.5/32": "sys-deny", "10.0.0.6/32": "sys-deny"}
    assert (st["pending"], st["up"], st["router_uptime"], st["resyncs"]) == ({}, True, 100.0, 1)


def test_a_change_goes_to_the_router_at_once(pusher):
    r = MemoryRouter()
    p = pusher(r)
    p.set_desired({}, resync=True)
    p.start()
    assert p.wait_idle(5)
    p.change({"10.0.0.5/32": block("10.0.0.5/32")})
    assert p.wait_idle(1) and r.table == {"10.0.0.5/32": "block"}
    p.change({"10.0.0.5/32": None})
    assert p.wait_idle(1) and r.table == {}
    assert r.commands == [("held",), ("apply", "10.0.0.5/32"), ("withdraw", "10.0.0.5/32")]


def test_never_block_prefixes_are_refused_with_one_logged_reason(pusher, caplog):
    import ipaddress
    r = MemoryRouter()
    p = pusher(r, never_block=[ipaddress.ip_network("192.0.2.0/24"),
                               ipaddress.ip_network("2001:db8::/32")])
    with caplog.at_level(logging.WARNING, "acctd.aclserver"):
        p.set_desired({"192.0.2.7/32": block("192.0.2.7/32"),
                       "192.0.0.0/16": block("192.0.0.0/16", "sys-deny-money"),
                       "10.0.0.5/32": block("10.0.0.5/32")}, resync=True)
        p.set_desired({"192.0.2.7/32": block("192.0.2.7/32"),
                       "10.0.0.5/32": block("10.0.0.5/32")})
        p.start()
        assert p.wait_idle(5)
    assert r.table == {"10.0.0.5/32": "block"}
    assert p.status()["refused"] == {"192.0.2.7/32": "never-block 192.0.2.0/24"}
    assert [m.getMessage() for m in caplog.records] == [
        "aclserver mem: not pushing 192.0.2.7/32 (sys-deny): never-block 192.0.2.0/24",
        "aclserver mem: not pushing 192.0.0.0/16 (sys-deny-money): never-block 192.0.2.0/24"]


def test_the_rule_limit_keeps_blocks_before_rate_limits(pusher):
    r = MemoryRouter(max_entries=2)
    p = pusher(r)
    p.set_desired({"10.0.0.7/32": Entry("10.0.0.7/32", "bw", (8000, 8000)),
                   "10.0.0.5/32": block("10.0.0.5/32"),
                   "10.0.0.6/32": block("10.0.0.6/32")}, resync=True)
    p.start()
    assert p.wait_idle(5)
    assert set(r.table) == {"10.0.0.5/32", "10.0.0.6/32"}
    assert p.status()["refused"] == {"10.0.0.7/32": "rule limit 2 reached"}
    # a block arriving at the limit pushes out a rate limit, never another block
    p.change({"10.0.0.6/32": None, "10.0.0.8/32": Entry("10.0.0.8/32", "bw", (8000, 8000))})
    assert p.wait_idle(5) and set(r.table) == {"10.0.0.5/32", "10.0.0.8/32"}
    p.change({"10.0.0.9/32": block("10.0.0.9/32")})
    assert p.wait_idle(5) and set(r.table) == {"10.0.0.5/32", "10.0.0.9/32"}
    p.change({"10.0.0.10/32": block("10.0.0.10/32")})
    assert p.wait_idle(5) and set(r.table) == {"10.0.0.5/32", "10.0.0.9/32"}
    assert p.status()["refused"] == {"10.0.0.7/32": "rule limit 2 reached",
                                     "10.0.0.8/32": "rule limit 2 reached",
                                     "10.0.0.10/32": "rule limit 2 reached"}


def test_a_router_that_restarted_is_resynced(pusher):
    r = MemoryRouter()
    clock = [100.0]
    r.now = lambda: clock[0]
    p = pusher(r, clock=lambda: clock[0])
    p.set_desired({"10.0.0.5/32": block("10.0.0.5/32")}, resync=True)
    p.start()
    assert p.wait_idle(5) and p.status()["resyncs"] == 1
    r.table.clear()            # the router rebooted and forgot
    r.boot = clock[0] = 200.0  # ...and its uptime starts again
    assert _until(lambda: r.table == {"10.0.0.5/32": "block"}, 5)
    assert p.status()["resyncs"] == 2 and p.status()["router_uptime"] == 0.0


def test_with_an_expiry_every_resync_refreshes_every_entry(pusher):
    r = MemoryRouter(expiry=600)
    p = pusher(r, delay=0.2)
    p.set_desired({"10.0.0.5/32": block("10.0.0.5/32")}, resync=True)
    p.start()
    assert _until(lambda: r.commands.count(("apply", "10.0.0.5/32")) >= 3, 5)


def test_a_failing_router_is_logged_once_retried_and_resynced(pusher, caplog):
    r = MemoryRouter()
    r.fail = "connection refused"
    p = pusher(r)
    with caplog.at_level(logging.WARNING, "acctd.aclserver"):
        p.set_desired({"10.0.0.5/32": block("10.0.0.5/32")}, resync=True)
        p.start()
        assert _until(lambda: p.status()["last_error"] == "connection refused", 5)
        st = p.status()
        assert (st["up"], st["pending"]) == (False, {"10.0.0.5/32": "apply"})
        r.fail = None
        assert p.wait_idle(5)
        assert _until(lambda: p.status()["up"], 2)   # the next check sees it answer
    assert r.table == {"10.0.0.5/32": "block"}
    assert [m.getMessage() for m in caplog.records] == ["aclserver mem: connection refused"]


def _until(pred, timeout):
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


# --- RouterOS against a replayed exchange -------------------------------------------------

def _length(n: int) -> bytes:
    """The API's word length, written out here apart from the back-end's encoder."""
    if n < 0x80:
        return bytes([n])
    assert n < 0x4000
    return bytes([0x80 | n >> 8, n & 0xFF])


def _sentence(words: list[str]) -> bytes:
    return b"".join(_length(len(w.encode())) + w.encode() for w in words) + b"\x00"


class ReplayRouter:
    """A TCP server that expects the client's sentences of a transcript,
    byte for byte, and answers with the router's. `~` lines may come at any
    time (the pusher's uptime checks). Anything else: recorded in `wrong`,
    and the connection closed."""

    def __init__(self, path: Path):
        self.steps, self.anytime = [], None
        for line in path.read_text().splitlines():
            if not line or line.startswith("#"):
                continue
            mark, words = line[0], line[2:].split(" | ")
            if mark in ">~":
                self.steps.append((mark, _sentence(words), []))
            else:
                self.steps[-1][2].append(_sentence(words))
        self.anytime = [s for s in self.steps if s[0] == "~"]
        self.script = [s for s in self.steps if s[0] == ">"]
        self.wrong: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        conn, _ = self.sock.accept()
        buf = b""
        with conn:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
                while b"\x00" in buf:
                    for mark, want, replies in self.anytime + self.script[:1]:
                        if buf.startswith(want):
                            buf = buf[len(want):]
                            if mark == ">":
                                self.script.pop(0)
                            conn.sendall(b"".join(replies))
                            break
                    else:
                        self.wrong.append(buf)
                        return


def test_routeros_address_list_against_a_replayed_api_exchange(pusher, tmp_path):
    """RouterOS cannot run here: this replays a recorded exchange
    (tests/data/routeros/address_list.txt) through a fake router."""
    fake = ReplayRouter(DATA / "address_list.txt")
    b = RouterOsBackend("mt", "127.0.0.1", fake.port, "acctd", "s3cret", "acctd_blocked",
                        expiry=600)
    p = pusher(b, delay=3600)
    p.set_desired({"10.0.0.5/32": block("10.0.0.5/32")}, resync=True)
    p.start()
    assert p.wait_idle(5), (p.status(), fake.wrong)
    p.change({"10.0.1.0/24": block("10.0.1.0/24", "sys-deny-money")})
    assert p.wait_idle(5), (p.status(), fake.wrong)
    p.change({"10.0.0.5/32": None})
    assert p.wait_idle(5), (p.status(), fake.wrong)
    assert fake.wrong == [] and fake.script == []
    st = p.status()
    # the operator's own entry (*6, not commented acctd) was never touched
    assert st["pushed"] == {"10.0.1.0/24": "sys-deny-money"}
    assert st["router_uptime"] == 3 * 86400 + 4 * 3600 + 5 * 60 + 6
    assert st["last_error"] == ""


# --- acctctl aclserver show -----------------------------------------------------------

def test_show_text(tmp_path):
    from click.testing import CliRunner

    from acctctl import blocks
    r = {"configured": True, "delay": 300, "never_block": ["192.0.2.0/24"], "backends": [
        {"name": "edge", "kind": "bgp", "up": True, "router_uptime": 4094.4,
         "pushed": {"10.0.0.5/32": "sys-deny"}, "pending": {"10.0.0.6/32": "apply"},
         "refused": {"192.0.2.7/32": "never-block 192.0.2.0/24"}, "last_error": "",
         "resyncs": 3, "expiry": None},
        {"name": "fw", "kind": "nft", "up": False, "router_uptime": None, "pushed": {},
         "pending": {}, "refused": {}, "last_error": "nft: Error: No such file or directory",
         "resyncs": 0, "expiry": 900}]}
    res = CliRunner().invoke(_cmd(blocks.render_aclserver, r), [])
    assert res.output == (
        "resync every 300 s; never-block: 192.0.2.0/24\n"
        "edge (bgp): up, router uptime 4094 s, 1 pushed, 1 pending, 3 resyncs\n"
        "  pushed   10.0.0.5/32  sys-deny\n"
        "  pending  10.0.0.6/32  apply\n"
        "  refused  192.0.2.7/32  never-block 192.0.2.0/24\n"
        "fw (nft): down, router uptime unknown, 0 pushed, 0 pending, 0 resyncs, expiry 900 s\n"
        "  last error: nft: Error: No such file or directory\n")


def _cmd(render, r):
    import click

    @click.command()
    def c():
        render(r)
    return c


def test_show_without_aclserver_says_so(tmp_path):
    from tests.unit.daemon_stub import daemon_stub
    cfg = load(UNITS, tmp_path)
    with daemon_stub(cfg, tmp_path=tmp_path) as d:
        svc = d.service(AclServerService)
        svc.serve()
        assert svc.show() == {"configured": False, "delay": None, "never_block": [],
                              "backends": []}
        assert d.dispatcher is not None


def test_the_readme_example_loads(tmp_path):
    import re
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Blocking at the routers", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"\n(    \[aclserver\]\n.*?)\n\n(?!    \[\[)", section, re.S).group(1)
    text = "\n".join(ln[4:] for ln in block.splitlines())
    secret = tmp_path / "mt1.secret"
    secret.write_text("pw\n")
    secret.chmod(0o600)
    a = load(text, tmp_path).aclserver
    assert [(b.name, b.type) for b in a.backend] == [("edge1", "bgp"), ("fw1", "nft"),
                                                     ("mt1", "routeros")]
    assert (a.delay, a.expiry, a.backend[0].community, a.backend[0].max_rules) == \
        (300, 900, "65535:666", 1000)


def test_a_router_error_shows_in_show_and_a_reload_restarts_the_backends(tmp_path):
    """The daemon's service (no kernel): an nft command that fails is the
    back-end's last error in `aclserver show` (the daemon goes on); a reload
    that changes [aclserver] rebuilds the back-ends, one that does not keeps them."""
    from tests.unit.daemon_stub import daemon_stub
    fail = ('command = ["sh", "-c", "echo \'Error: Could not process rule: No such file or '
            'directory\' >&2; exit 1", "nft-fails"]\n')
    text = UNITS + ('[aclserver]\ndelay = 60\n[[aclserver.backend]]\nname = "fw"\ntype = "nft"\n'
                    + fail)
    cfg = load(text, tmp_path)
    with daemon_stub(cfg, tmp_path=tmp_path) as d:
        svc = d.service(AclServerService)
        svc.serve()
        first = svc.pushers[0]
        want = "nft: Error: Could not process rule: No such file or directory"
        assert _until(lambda: svc.show()["backends"][0]["last_error"] == want, 5)
        b = svc.show()["backends"][0]
        assert (b["name"], b["kind"], b["up"], b["pushed"]) == ("fw", "nft", False, {})
        assert d.call("aclserver-show")["backends"][0]["last_error"] == want
        # its line of `acctctl status`
        assert svc.status() == {"aclserver": {"fw": f"down, 0 pushed, 0 pending: {want}"}}
        d.reload()
        assert svc.pushers[0] is first
        (tmp_path / "acctd.toml").write_text(text.replace('"fw"', '"fw2"'))
        d.reload()
        assert [p.backend.name for p in svc.pushers] == ["fw2"] and svc.pushers[0] is not first


def test_a_router_that_cannot_be_asked_still_gets_the_commands_and_is_logged_once(pusher,
                                                                                   caplog):
    """A BGP session that is down: the speaker takes the commands (it
    announces them when the session returns), the back-end shows down, the
    failure is logged once, and the return brings a resync."""
    r = MemoryRouter()
    asked = {"fail": True}

    def uptime():
        if asked["fail"]:
            raise OSError("BGP session with 10.0.0.1 is not established (state 3)")
        return 5.0
    r.uptime = uptime
    p = pusher(r)
    with caplog.at_level(logging.WARNING, "acctd.aclserver"):
        p.set_desired({}, resync=True)
        p.start()
        assert p.wait_idle(5)
        p.change({"10.0.0.5/32": block("10.0.0.5/32")})
        assert p.wait_idle(5) and r.table == {"10.0.0.5/32": "block"}
        assert _until(lambda: p.status()["up"] is False, 1)
        import time
        time.sleep(0.3)     # several checks
        n = p.status()["resyncs"]
        asked["fail"] = False
        assert _until(lambda: p.status()["up"] and p.status()["resyncs"] == n + 1, 5)
    assert [m.getMessage() for m in caplog.records] == [
        "aclserver mem: BGP session with 10.0.0.1 is not established (state 3)"]


def test_routeros_replies_from_a_hostile_router_end_in_rows_or_a_router_error():
    """STYLE 19: whatever bytes come back, talk() returns rows or raises
    RouterError (a lost connection included), never anything else."""
    from hypothesis import given, settings, strategies as st

    from acctd.services.aclserver.enforcer import RouterError
    from acctd.services.aclserver.routeros import Connection, encode_sentence

    words = st.lists(st.sampled_from(["!re", "!done", "!trap", "!fatal", "=a=b", "=.id=*1",
                                      "=message=x", "", "=", "=ret="]), max_size=6)
    replies = st.lists(st.one_of(words.map(encode_sentence), st.binary(max_size=40)),
                       max_size=6).map(b"".join)

    @settings(max_examples=300, deadline=None)
    @given(replies)
    def check(data):
        a, b = socket.socketpair()
        try:
            b.sendall(data)
            b.shutdown(socket.SHUT_WR)
            a.settimeout(2)
            try:
                rows = Connection(a).talk("/ip/firewall/address-list/print")
            except RouterError:
                return
            assert isinstance(rows, list) and all(isinstance(r, dict) for r in rows)
        finally:
            a.close()
            b.close()
    check()


def test_acctctl_aclserver_show_end_to_end(tmp_path):
    """acctctl over a real control server, the daemon's service, a RouterOS
    back-end against the replayed exchange: the start's resync pushed the
    config's blocked unit, and show says so exactly (text and --json)."""
    from click.testing import CliRunner

    from acctctl.main import main
    from acctd.control import server as ctl
    from tests.unit.daemon_stub import daemon_stub
    fake = ReplayRouter(DATA / "address_list.txt")
    secret = tmp_path / "mt.secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    text = ('[[policy]]\nname = "ip"\ntarget = "proto ip"\n[[unit]]\ntype = "host"\n'
            'name = "bob"\nip = "10.0.0.5"\nacct-policy = ["ip"]\nsys-policy = ["sys-deny"]\n'
            '[aclserver]\ndelay = 300\nexpiry = 600\n[[aclserver.backend]]\nname = "mt"\n'
            f'type = "routeros"\nhostname = "127.0.0.1"\nport = {fake.port}\nuser = "acctd"\n'
            'password-file = "mt.secret"\n')
    with daemon_stub(load(text, tmp_path), tmp_path=tmp_path) as d:
        svc = d.service(AclServerService)
        svc.serve()
        assert svc.pushers[0].wait_idle(5), (svc.show(), fake.wrong)
        assert _until(lambda: svc.show()["backends"][0]["router_uptime"] is not None, 2)
        srv = ctl.ControlServer(str(tmp_path / "ctl.sock"), d.dispatcher)
        srv.serve_in_thread()
        try:
            r = CliRunner().invoke(main, ["--socket", srv.path, "aclserver", "show"])
            assert (r.exit_code, r.output) == (0, (
                "resync every 300 s; never-block: none\n"
                "mt (routeros): up, router uptime 273906 s, 1 pushed, 0 pending, 1 resyncs, "
                "expiry 600 s\n"
                "  pushed   10.0.0.5/32  sys-deny\n"))
            r = CliRunner().invoke(main, ["--socket", srv.path, "aclserver", "show", "--json"])
            import json
            b, = json.loads(r.output)["backends"]
            assert (b["pushed"], b["pending"], b["refused"], b["last_error"]) == \
                ({"10.0.0.5/32": "sys-deny"}, {}, {}, "")
        finally:
            srv.shutdown()
            srv.server_close()
    assert fake.wrong == []
