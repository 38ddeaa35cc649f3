"""sd_notify against a real AF_UNIX datagram socket, as systemd listens."""

import os
import socket
import time

import pytest

from acctd.daemon.systemd import Notifier


@pytest.fixture
def listener(tmp_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    s.bind(path)
    s.settimeout(2)
    yield path, s
    s.close()


def recv(s) -> str:
    return s.recv(4096).decode()


def test_each_message_is_one_exact_datagram(listener):
    path, s = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready()
    assert recv(s) == "READY=1"
    assert n.status("drain 3: 120 rows\ncommitted")
    assert recv(s) == "STATUS=drain 3: 120 rows committed"  # no newline smuggles a variable
    assert n.watchdog()
    assert recv(s) == "WATCHDOG=1"
    assert n.stopping()
    assert recv(s) == "STOPPING=1"
    assert n.ready("attached 2 interfaces")
    assert recv(s) == "READY=1\nSTATUS=attached 2 interfaces"
    n.close()


def test_reloading_carries_the_monotonic_time_of_the_request(listener):
    path, s = listener
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert Notifier({"NOTIFY_SOCKET": path}).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = recv(s).split("\n")
    assert first == "RELOADING=1"
    key, _, usec = second.partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(usec) <= after


def test_abstract_socket():
    name = f"acctd-test-notify-{os.getpid()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(2)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).watchdog()
        assert recv(s) == "WATCHDOG=1"
    finally:
        s.close()


@pytest.mark.parametrize("env", [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "vsock:2:1234"}])
def test_outside_systemd_nothing_happens(env):
    n = Notifier(env)
    assert not n.enabled
    for call in (n.ready, n.watchdog, n.stopping, n.reloading):
        assert call() is False
    assert n.status("x") is False
    assert n.watchdog_interval() is None


def test_a_vanished_socket_is_not_an_error(tmp_path):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert n.enabled
    assert n.ready() is False


def test_reads_the_process_environment_by_default(listener, monkeypatch):
    path, s = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert Notifier().ready()
    assert recv(s) == "READY=1"


@pytest.mark.parametrize("env, seconds", [
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),  # our parent's
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({"WATCHDOG_PID": str(os.getpid())}, None),
    ({}, None),
])
def test_watchdog_interval(env, seconds):
    assert Notifier(env).watchdog_interval() == seconds
