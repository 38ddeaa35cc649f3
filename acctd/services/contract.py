"""The contract between the daemon's core and its services (STYLE 16).

A service is one module's class, built from its own settings table. It
reaches the daemon only through `Core`, a narrow typed view: the lock, the
model snapshot, storage, enforce(), the other services. The core calls
each hook point on every service, in the fixed order of
acctd.daemon.core.SERVICES:

    start()      state from the database (no peers yet)
    serve()      threads and sockets that talk to peers
    collected()  a data source's counts for this drain (drain_failed(): not committed)
    in_drain()   inside the drain's transaction: what commits with the counts
    after_drain()  after the commit (mail, RADIUS interims, flow log, quotas)
    settle()     after the drain, outside the lock: changes that drain again
    tick()       every loop wake-up (about once a second)
    reload()     a new configuration, under the core's lock unless the
                 service says otherwise (the core re-applies enforcement after)
    close()

and the events: blocks(), fw_blocks() and rate_limits() (what a service holds against
units, which enforce() merges), blocks_changed(), session_started(),
session_stopping(), login_attempted(). Each has a default that does
nothing. Control commands are methods, named by the registry
(acctd/control/commands.py) as "<name>.<method>".
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, ClassVar, Protocol, TypeVar

import numpy as np

if TYPE_CHECKING:
    from acctd.config.loader import Config
    from acctd.control.dispatch import Dispatcher
    from acctd.model.sessions import Session
    from acctd.model.snapshot import Snapshot
    from acctd.store.database import Storage

S = TypeVar("S", bound="Service")


@dataclasses.dataclass(frozen=True)
class Drain:
    """One committed drain, as the services see it."""
    now: dt.datetime                 # its end (UTC): the rows' time
    snapshot: Snapshot               # the model it was accounted against
    rows: Mapping[str, np.ndarray]   # oid-keyed rows (acctd.store.interval.columns)
    flow_keys: np.ndarray            # the flows that moved, and their deltas: the kernel's
                                     # and the data sources' (acctd/model/sources.py)
    flow_values: np.ndarray
    addr_keys: np.ndarray            # the local addresses that moved, and their deltas
    addr_values: np.ndarray


@dataclasses.dataclass(frozen=True)
class Collected:
    """What a data source other than the kernel adds to a drain: flows in
    the kernel's layout (their source in the ifindex, acctd/model/sources.py),
    the per-address deltas they add up to, and rows already oid-keyed
    (rawdata), or None."""
    flow_keys: np.ndarray
    flow_values: np.ndarray
    addr_keys: np.ndarray
    addr_values: np.ndarray
    rows: Mapping[str, np.ndarray] | None = None


class Core(Protocol):
    """What a service may use of the daemon."""

    lock: threading.RLock            # one drain, commit or query at a time
    storage: Storage
    services: Mapping[str, Service]  # every service by name, in the order of SERVICES
    clock: Callable[[], dt.datetime]
    netns: str | None                # the namespace of the hooked interfaces

    @property
    def snapshot(self) -> Snapshot: ...

    @property
    def config(self) -> Config: ...

    @property
    def state_dir(self) -> str: ...  # beside the database: spool, outbox, schedules

    @property
    def dispatcher(self) -> Dispatcher: ...   # control requests (scheduled commands)

    def service(self, kind: type[S]) -> S: ...

    def enforce(self) -> dict: ...   # the kernel made equal to the decided blocks and limits

    def drain_locked(self) -> dict: ...  # drain now (the caller holds the lock)

    def rebuild(self, fitted: Snapshot | None = None) -> None: ...   # a new snapshot

    def sys_policy_bits(self) -> dict[int, int]: ...   # every unit's blocks, by index

    def set_sys_policy(self, unit: str, word: str) -> dict: ...   # an admin's sys-... word

    def ifnames(self) -> dict[int, str]: ...

    def session_started(self, session: Session, user: str) -> None: ...

    def session_stopping(self, session: Session, user: str, cause: str,
                         now: dt.datetime) -> None: ...

    def login_attempted(self, who: str, ok: bool, reason: str, addr: str | None,
                        mac: str | None, method: str, rp: str | None = None) -> None: ...


class Service:
    """Base of the services: every hook does nothing until overridden."""

    name: ClassVar[str]              # the registry's target name
    # False for a service whose reload joins threads that take the core's
    # lock (a server answering with enforce()): it reloads after the others,
    # outside the lock. The others reload under it, so no event sees a
    # service half reconfigured.
    reload_under_lock: ClassVar[bool] = True

    def __init__(self, core: Core, settings):
        self.core = core
        self.settings = settings

    @staticmethod
    def settings_of(config: Config):
        """This service's table of a configuration (None: not configured)."""
        return None

    def start(self) -> None:
        pass

    def serve(self) -> None:
        pass

    def in_drain(self, drain: Drain, tx: Storage) -> None:
        """tx: the storage, inside the drain's open transaction: what is
        written here commits with the counts, or not at all."""

    def collected(self, snapshot: Snapshot) -> Collected | None:
        """A data source's counts for the drain starting now (taken: a
        drain_failed() gives them back)."""
        return None

    def drain_failed(self) -> None:
        """The drain that took collected() did not commit."""

    def after_drain(self, drain: Drain) -> None:
        pass

    def settle(self) -> None:
        pass

    def tick(self) -> None:
        pass

    def reload(self, settings) -> None:
        self.settings = settings

    def restart(self, settings) -> None:
        """reload() of a service that serves from its settings (a server,
        a client): changed settings close it and serve again."""
        if settings != self.settings:
            self.close()
            self.settings = settings
            self.serve()

    def close(self) -> None:
        pass

    def status(self) -> dict | None:
        """A section of `acctctl status`, or None."""
        return None

    def blocks(self) -> Mapping[str, int]:
        """unit oid -> the acctd.kernel.abi.SysPolicy bits this service holds."""
        return {}

    def fw_blocks(self) -> Mapping[str, tuple[tuple[str, ...], int]]:
        """unit oid -> (policies whose traffic the kernel drops for it, the
        SysPolicy bits to hold instead if they cannot be compiled)."""
        return {}

    def rate_limits(self) -> Mapping[str, tuple[int | None, int | None]]:
        """unit oid -> (in, out) bit/s replacing the config's bw."""
        return {}

    def blocks_changed(self, moved: Mapping[str, tuple[int, int, str]]) -> None:
        """Blocks the kernel took on or let go: prefix -> (bits before, bits
        now, unit oid)."""

    def session_started(self, session: Session, user: str) -> None:
        pass

    def session_stopping(self, session: Session, user: str, cause: str,
                         now: dt.datetime) -> None:
        """Before the database closes the session."""

    def login_attempted(self, who: str, ok: bool, reason: str, addr: str | None,
                        mac: str | None, method: str, rp: str | None = None) -> None:
        """rp: who asked (a RADIUS NAS), when it is not this host."""
