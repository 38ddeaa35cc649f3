"""The UDP sender's pacer, to a socket on loopback: a drain's datagrams
leave in order at udp-rate, a burst at a time; beyond the queue the newest
are dropped and counted; a close sends what waits, within its timeout;
udp-rate 0 sends at once, in the caller's thread."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from acctd.services.export.messages import Now
from acctd.services.export.netflow_v9 import V9Encoder
from acctd.services.export.records import FlowCache
from acctd.services.export.transport import UDP_BURST, UdpSender
from tests.flowgen import many


@pytest.fixture
def rx():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 23)
    s.settimeout(5)
    yield s
    s.close()


def records(n: int):
    """n records of distinct flows, as a cache makes them due (v9: about
    22 in a message)."""
    now = Now.sample()
    cache = FlowCache(0, 0)
    k, v = many(n, now.mono_ns)
    cache.add(k, v, now.mono_ns)
    return cache.expire(now.mono_ns), now


def sequences(rx: socket.socket, n: int) -> list[int]:
    """The v9 sequence numbers of the next n datagrams, as they arrive."""
    return [struct.unpack(">I", rx.recv(65536)[12:16])[0] for _ in range(n)]


def test_a_drains_datagrams_leave_in_order_at_the_rate(rx):
    s = UdpSender(f"127.0.0.1:{rx.getsockname()[1]}", V9Encoder(1), rate=1000)
    s.open()
    rec, now = records(4000)
    t0 = time.monotonic()
    s.send(rec, now)
    queued = s.status()["messages_queued"]
    n = s.encoder.status()["messages"]
    assert n > 150 and queued >= n - UDP_BURST     # handed to the pacer, not sent
    assert sequences(rx, n) == list(range(n))       # every one, in order
    took = time.monotonic() - t0
    bursts = -(-n // UDP_BURST)
    # the last burst waits for the ones before it at 1,000 a second
    assert (bursts - 1) * UDP_BURST / 1000 * 0.95 <= took <= n / 1000 + 2
    s.close()
    assert s.status()["messages_sent"] == n and s.status()["messages_dropped"] == 0


def test_beyond_the_queue_the_newest_are_dropped_and_counted(rx, caplog):
    s = UdpSender(f"127.0.0.1:{rx.getsockname()[1]}", V9Encoder(1), rate=100, queue=10)
    s.open()
    rec, now = records(1000)
    s.send(rec, now)
    n = s.encoder.status()["messages"]
    assert s.status()["messages_dropped"] == n - 10
    assert "the newest dropped (raise udp-rate)" in caplog.text
    assert sequences(rx, 10) == list(range(10))     # the first ten went
    s.close()
    assert s.status()["messages_sent"] == 10
    rx.settimeout(0.2)
    with pytest.raises(TimeoutError):
        rx.recv(65536)


def test_a_close_sends_what_waits_within_its_timeout(rx, caplog):
    s = UdpSender(f"127.0.0.1:{rx.getsockname()[1]}", V9Encoder(1), rate=200)
    s.open()
    rec, now = records(6000)
    s.send(rec, now)
    n = s.encoder.status()["messages"]
    t0 = time.monotonic()
    s.close(timeout=0.5)
    assert time.monotonic() - t0 < 1.5
    st = s.status()
    assert 0 < st["messages_sent"] < n and st["messages_sent"] + st["messages_dropped"] == n
    assert st["messages_queued"] == 0
    assert f"{st['messages_dropped']} datagrams not sent in 0.5 s at close" in caplog.text
    assert sequences(rx, st["messages_sent"]) == list(range(st["messages_sent"]))


def test_rate_0_sends_in_the_callers_thread(rx):
    s = UdpSender(f"127.0.0.1:{rx.getsockname()[1]}", V9Encoder(1), rate=0)
    s.open()
    rec, now = records(500)
    s.send(rec, now)
    n = s.encoder.status()["messages"]
    assert s.status()["messages_sent"] == n and s._thread is None
    assert sequences(rx, n) == list(range(n))
    s.close()
