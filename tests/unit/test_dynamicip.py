"""The dynamicip directory: scanning, bind/unbind events, and a poller that
notices files created, rewritten in place and removed, and costs little when
nothing changed."""

import logging
import os

import pytest

from acctd.services import dynamicip
from acctd.services.dynamicip import Event

LATER = 10**30  # a clock far past every file's mtime: no timestamp is racy


def write(d, name, text):
    (d / name).write_text(text)


def test_scan_reads_the_first_nonempty_line_of_each_address_file(tmp_path):
    write(tmp_path, "193.97.238.10", "alice\n")
    write(tmp_path, "193.97.238.11", "\n\n  bob  \nsecond line\n")
    write(tmp_path, "2001:DB8:0::5", "carol")            # canonical text is the key
    write(tmp_path, "::ffff:193.97.238.12", "dave\n")    # IPv4-mapped: as IPv4
    assert dynamicip.scan(str(tmp_path)) == {
        "193.97.238.10": "alice", "193.97.238.11": "bob",
        "2001:db8::5": "carol", "193.97.238.12": "dave"}


def test_scan_skips_files_being_written_empty_ones_and_directories(tmp_path):
    write(tmp_path, "10.0.0.1", "alice")
    write(tmp_path, ".10.0.0.2", "tmp")
    write(tmp_path, "10.0.0.3~", "backup")
    write(tmp_path, "10.0.0.4.tmp", "partial")
    write(tmp_path, "10.0.0.5", "")
    write(tmp_path, "10.0.0.6", " \n\t\n")
    (tmp_path / "10.0.0.7").mkdir()
    assert dynamicip.scan(tmp_path) == {"10.0.0.1": "alice"}


def test_scan_never_looks_up_excluded_networks(tmp_path):
    for host in (1, 3, 9):
        write(tmp_path, f"193.97.238.{host}", f"user{host}")
    write(tmp_path, "192.168.5.5", "lan")
    write(tmp_path, "2001:db8::1", "v6")
    write(tmp_path, "2001:db8:1::1", "v6b")
    exclude = ["193.97.238.1 255.255.255.255",        # nacctd's "address netmask"
               "193.97.238.3\t255.255.255.255",
               "192.168.0.0/16",
               "2001:db8::/48"]
    assert dynamicip.scan(tmp_path, exclude) == {"193.97.238.9": "user9", "2001:db8:1::1": "v6b"}


def test_networks_are_parsed_loosely_and_mapped_nets_become_ipv4():
    nets = dynamicip.parse_networks(["10.1.2.3/8", "::ffff:10.0.0.0/104", "2001:db8::/32"])
    assert [str(n) for n in nets] == ["10.0.0.0/8", "10.0.0.0/8", "2001:db8::/32"]
    with pytest.raises(ValueError, match="not a network"):
        dynamicip.parse_networks(["10.0.0.0 255.0.0.0 extra"])
    with pytest.raises(ValueError, match="not a network"):
        dynamicip.parse_networks(["eth0"])


def test_names_that_are_no_address_are_ignored_and_logged_once(tmp_path, caplog):
    write(tmp_path, "10.0.0.1", "alice")
    write(tmp_path, "README", "not an address")
    write(tmp_path, "fe80::1%eth0", "scoped")
    write(tmp_path, "010.0.0.1", "leading zero")
    w = dynamicip.DirWatcher(tmp_path, clock_ns=lambda: LATER)
    with caplog.at_level(logging.WARNING, "acctd.dynamicip"):
        assert w.poll() == [Event("bind", "10.0.0.1", "alice")]
        write(tmp_path, "10.0.0.2", "bob")               # rescan: same bad names again
        assert w.poll() == [Event("bind", "10.0.0.2", "bob")]
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 3
    assert all("not an address" in m for m in warned)


def test_diff_orders_unbinds_then_binds_by_address():
    old = {"10.0.0.10": "alice", "10.0.0.2": "bob", "2001:db8::1": "carol", "10.0.0.3": "dave"}
    new = {"10.0.0.10": "alice", "10.0.0.2": "eve", "10.0.0.9": "bob", "10.0.0.3": "dave"}
    assert dynamicip.diff(old, new) == [
        ("unbind", "10.0.0.2", "bob"),
        ("unbind", "2001:db8::1", "carol"),
        ("bind", "10.0.0.2", "eve"),          # a changed user: unbind, then bind
        ("bind", "10.0.0.9", "bob"),          # numeric order: .9 before .10
    ]
    assert dynamicip.diff(new, new) == []


def test_watcher_follows_login_change_and_logout(tmp_path):
    w = dynamicip.DirWatcher(tmp_path, clock_ns=lambda: LATER)
    assert w.poll() == []
    write(tmp_path, "193.97.238.20", "alice\n")        # slip.login
    write(tmp_path, "193.97.238.21", "bob\n")
    assert w.poll() == [Event("bind", "193.97.238.20", "alice"),
                        Event("bind", "193.97.238.21", "bob")]
    assert w.lookup("193.97.238.20") == "alice" and w.lookup("193.97.238.99") is None
    os.remove(tmp_path / "193.97.238.20")              # slip.logout
    write(tmp_path, "193.97.238.21", "robert\n")
    assert w.poll() == [Event("unbind", "193.97.238.20", "alice"),
                        Event("unbind", "193.97.238.21", "bob"),
                        Event("bind", "193.97.238.21", "robert")]
    assert w.bindings == {"193.97.238.21": "robert"}


def test_poll_returns_nothing_and_rescans_nothing_when_nothing_changed(tmp_path):
    write(tmp_path, "10.0.0.1", "alice")
    w = dynamicip.DirWatcher(tmp_path, clock_ns=lambda: LATER)
    assert w.poll() == [Event("bind", "10.0.0.1", "alice")]
    scans = w.scans
    for _ in range(3):
        assert w.poll() == []
    assert w.scans == scans                              # only stats, no listing


def test_a_file_rewritten_in_place_is_noticed(tmp_path):
    path = tmp_path / "10.0.0.1"
    write(tmp_path, "10.0.0.1", "bob\n")
    os.utime(path, ns=(10**18, 10**18))
    w = dynamicip.DirWatcher(tmp_path, clock_ns=lambda: LATER)
    w.poll()
    ino = path.stat().st_ino
    with open(path, "r+") as f:                          # same inode, same size
        f.write("eve\n")
    os.utime(path, ns=(10**18 + 10**7, 10**18 + 10**7))  # the next clock tick
    assert path.stat().st_ino == ino
    assert w.poll() == [Event("unbind", "10.0.0.1", "bob"), Event("bind", "10.0.0.1", "eve")]


def test_a_change_within_the_same_clock_tick_is_not_missed(tmp_path, monkeypatch):
    # a filesystem whose timestamps cannot tell the two writes apart
    monkeypatch.setattr(dynamicip, "_sig", lambda st: ("same",))
    path = tmp_path / "10.0.0.1"
    write(tmp_path, "10.0.0.1", "bob\n")
    now = path.stat().st_mtime_ns
    w = dynamicip.DirWatcher(tmp_path, clock_ns=lambda: now + 10**6)  # mtime is racy
    w.poll()
    write(tmp_path, "10.0.0.1", "eve\n")
    assert w.poll() == [Event("unbind", "10.0.0.1", "bob"), Event("bind", "10.0.0.1", "eve")]


def test_an_empty_file_filled_in_later_binds(tmp_path):
    w = dynamicip.DirWatcher(tmp_path, clock_ns=lambda: LATER)
    write(tmp_path, "10.0.0.1", "")                      # touch, then echo
    assert w.poll() == []
    with open(tmp_path / "10.0.0.1", "w") as f:
        f.write("alice\n")
    assert w.poll() == [Event("bind", "10.0.0.1", "alice")]


def test_a_file_renamed_into_place_is_noticed(tmp_path):
    write(tmp_path, "10.0.0.1", "bob\n")
    w = dynamicip.DirWatcher(tmp_path, clock_ns=lambda: LATER)
    w.poll()
    write(tmp_path, ".10.0.0.1.new", "eve\n")            # being written: not yet
    assert w.poll() == []
    os.rename(tmp_path / ".10.0.0.1.new", tmp_path / "10.0.0.1")
    assert w.poll() == [Event("unbind", "10.0.0.1", "bob"), Event("bind", "10.0.0.1", "eve")]


def test_excluded_addresses_never_bind_in_the_watcher(tmp_path):
    w = dynamicip.DirWatcher(tmp_path, ["193.97.238.3 255.255.255.255"], clock_ns=lambda: LATER)
    write(tmp_path, "193.97.238.3", "dialin-host")
    write(tmp_path, "193.97.238.4", "alice")
    assert w.poll() == [Event("bind", "193.97.238.4", "alice")]
    assert w.lookup("193.97.238.3") is None


def test_a_missing_directory_reads_as_empty(tmp_path):
    d = tmp_path / "run"
    w = dynamicip.DirWatcher(d, clock_ns=lambda: LATER)
    assert w.poll() == []
    d.mkdir()
    write(d, "10.0.0.1", "alice")
    assert w.poll() == [Event("bind", "10.0.0.1", "alice")]
    os.remove(d / "10.0.0.1")
    d.rmdir()
    assert w.poll() == [Event("unbind", "10.0.0.1", "alice")]


def test_a_file_taken_over_by_another_user_moves_the_address(tmp_path):
    """The service: a file renamed over with another user's name ends the old
    session as address-moved (the address went to someone else); a file
    removed ends it as file-removed."""
    from acctd.config import loads
    from acctd.services.dynamicip import DynamicIpService

    from .daemon_stub import daemon_stub
    dyn = tmp_path / "dyn"
    dyn.mkdir()
    cfg = loads(f'[dynamicip]\ndir = "{dyn}"\n' + "".join(
        f'[[unit]]\ntype = "user"\nname = "{n}"\n' for n in ("bob", "eve")),
        str(tmp_path / "acctd.toml"))
    with daemon_stub(cfg, tmp_path=tmp_path) as d:
        d.drain_locked = lambda: {}
        svc = d.service(DynamicIpService)
        write(dyn, "10.0.0.1", "bob\n")
        svc.tick()
        write(dyn, ".10.0.0.1.new", "eve\n")
        os.rename(dyn / ".10.0.0.1.new", dyn / "10.0.0.1")
        svc.tick()
        os.remove(dyn / "10.0.0.1")
        svc.tick()
        rows = d.call("session-list")
    assert [(r["user"], r["addr"], r["source"], r["stop_cause"]) for r in rows] == [
        ("eve", "10.0.0.1", "file", "file-removed"),
        ("bob", "10.0.0.1", "file", "address-moved"),
    ]


def test_dynamicnet_looks_names_up_only_inside_its_networks(tmp_path):
    """nacctd: `dynamicnet 193.97.238.0 255.255.255.0` -- "the addresses on
    this network should be looked up", less the exclude-name-lookup ones."""
    for name in ("193.97.238.3", "193.97.238.9", "10.0.0.1", "2001:db8::1"):
        write(tmp_path, name, f"u{name[-1]}")
    only = ["193.97.238.0 255.255.255.0"]
    assert dynamicip.scan(tmp_path, ["193.97.238.3/32"], only) == {"193.97.238.9": "u9"}
    w = dynamicip.DirWatcher(tmp_path, only=["10.0.0.0/8", "2001:db8::/32"],
                             clock_ns=lambda: LATER)
    assert w.poll() == [Event("bind", "10.0.0.1", "u1"), Event("bind", "2001:db8::1", "u1")]


def test_dynamicnet_in_the_config_and_the_service(tmp_path):
    from acctd.config import loads
    from acctd.errors import ConfigError
    from acctd.services.dynamicip import DynamicIpService

    from .daemon_stub import daemon_stub
    dyn = tmp_path / "dyn"
    dyn.mkdir()
    head = f'[dynamicip]\ndir = "{dyn}"\n'
    with pytest.raises(ConfigError) as e:
        loads(head + 'dynamicnet = ["ppp0"]\n', str(tmp_path / "bad.toml"))
    assert str(e.value) == (f"{tmp_path}/bad.toml:3: [dynamicip] key 'dynamicnet': "
                            "not a network: 'ppp0' ('ppp0' does not appear to be an IPv4 or "
                            "IPv6 network)")
    cfg = loads(head + 'dynamicnet = ["193.97.238.0/24"]\n' + "".join(
        f'[[unit]]\ntype = "user"\nname = "{n}"\n' for n in ("bob", "eve")),
        str(tmp_path / "acctd.toml"))
    with daemon_stub(cfg, tmp_path=tmp_path) as d:
        d.drain_locked = lambda: {}
        write(dyn, "193.97.238.7", "bob\n")
        write(dyn, "10.0.0.7", "eve\n")          # outside the dynamicnet: never looked up
        d.service(DynamicIpService).tick()
        rows = d.call("session-list")
    assert [(r["user"], r["addr"], r["stop_cause"]) for r in rows] == [
        ("bob", "193.97.238.7", "")]
