"""What the control servers need from a daemon, for testing them without a
kernel: its config and lock, and a main loop that answers every flush."""

import contextlib
import socket
import threading
import types

from acctd.daemon.core import Mailbox


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def daemon_stub(cfg):
    """(state, mailbox): the state a ControlServer serves, and the mailbox its
    flush requests go to, answered with {"drain": 1} as the main loop would."""
    state = types.SimpleNamespace(cfg=cfg, clock=None, lock=threading.Lock(), storage=None)
    mailbox = Mailbox()
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            waiters, _reload = mailbox.wait(0.05, stop)
            mailbox.done(waiters, {"drain": 1}, None)
    threading.Thread(target=loop, daemon=True).start()
    try:
        yield state, mailbox
    finally:
        stop.set()
