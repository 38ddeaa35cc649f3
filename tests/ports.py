"""Loopback ports for the servers a test starts.

A port that the kernel handed out for bind(0) is in the ephemeral range,
where any unbound socket that sends (a DNS lookup, an exporter's UDP
socket, a client's connect) can take it before the server binds it: CI
once lost nfcapd that way. These ports are taken below that range, where
only an explicit bind lands, and each is checked free for TCP and UDP."""

from __future__ import annotations

import itertools
import os
import random
import socket

_LOW, _HIGH = 20000, 32000     # below net.ipv4.ip_local_port_range (32768-60999)
_next = itertools.count(random.Random(os.getpid()).randrange(_LOW, _HIGH))


def _free(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port() -> int:
    """A port of 127.0.0.1 that is free for both TCP and UDP now and that
    the kernel does not hand out by itself. Each call returns another one."""
    for _ in range(_HIGH - _LOW):
        port = _LOW + (next(_next) - _LOW) % (_HIGH - _LOW)
        if _free(port):
            return port
    raise RuntimeError(f"no free port in {_LOW}-{_HIGH}")
