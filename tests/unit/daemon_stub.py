"""A Daemon without a kernel, for testing the control servers and the
services over real storage: the real core, services and dispatcher; the
datapath is never attached, enforce() only counts its calls, and a main
loop answers every flush (a drain of nothing) and reload."""

import contextlib
import threading

from acctd.daemon.core import Daemon
from acctd.store.database import Storage

# A config of one user unit counted under one policy.
ALICE = """
[[policy]]
name = "ip"
target = "proto ip"

[[unit]]
type = "user"
name = "alice"
acct-policy = ["ip"]
"""


@contextlib.contextmanager
def daemon_stub(cfg, storage: Storage | None = None, tmp_path=None, clock=None):
    """A Daemon of `cfg` whose storage is `storage` (else a new database
    under tmp_path, else in memory); flushes are answered with {"drain": 1}
    as the main loop would."""
    d = Daemon(cfg, **({"clock": clock} if clock else {}))
    own = storage is None
    if own:
        path = str(tmp_path / "acctd.duckdb") if tmp_path is not None else ":memory:"
        storage = Storage(path, cfg.processor.zone)
    d.storage = storage
    d.enforced = 0

    def enforce():
        d.enforced += 1
        return {}
    d.enforce = enforce
    d.drain = lambda: {"drain": 1}  # no kernel to drain
    d.start_services()
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            waiters, reloads = d.mailbox.wait(0.05, stop)
            d.mailbox.done(waiters, {"drain": 1}, None)
            if reloads is not None:
                d.answer_reload(reloads)
    threading.Thread(target=loop, daemon=True).start()
    try:
        yield d
    finally:
        stop.set()
        for s in reversed(d.services.values()):
            s.close()
        if own:
            storage.close()
