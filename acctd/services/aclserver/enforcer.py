"""The "remote enforcer" contract, and the pusher that keeps one router
equal to acctd's decided blocks.

A back-end knows one router. It offers idempotent apply(entry) and
withdraw(address), held() (what the router holds now, read back from it)
and uptime() (seconds since the router, or our session with it, came up:
a smaller number than last time means it restarted and forgot). The pusher
owns a worker thread per back-end: changes reach the router at once, and a
full resync (the desired set against held()) runs at start, on reconnect,
after the router restarted, and every `delay` seconds. Nothing here blocks
the caller: the daemon's lock is never held while a router is slow.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import threading
import time
from collections.abc import Iterable, Mapping

from acctd.kernel import abi
from acctd.model import enforcement, sys_policy

log = logging.getLogger("acctd.aclserver")

RETRY_MIN = 1.0        # seconds before retrying a router that failed, doubling
RETRY_MAX = 30.0       # ...up to this (or delay, if shorter): a router back is seen soon
UPTIME_CHECK = 1.0     # how often the router's uptime (session) is read between resyncs


@dataclasses.dataclass(frozen=True)
class Entry:
    """One thing a router should hold for an address: a block (bw None)
    or, for a unit with `bw`, its rate limits (FlowSpec only)."""
    address: str                 # canonical prefix text: "10.0.0.5/32", "2001:db8::5/128"
    reason: str = ""             # "sys-deny,quota"; "bw" for a rate limit
    bw: tuple[int | None, int | None] | None = None   # bit/s (to the unit, from it)


class Backend:
    """One router. apply/withdraw/held raise OSError (or RouterError) when
    the router cannot be reached or refuses; the pusher records and retries."""

    kind = "?"
    expiry: float | None = None      # seconds an entry lives on the router unless refreshed
    max_entries: int | None = None   # a per-peer rule limit (FlowSpec)

    def __init__(self, name: str):
        self.name = name

    def connect(self) -> None:
        """(Re)open what apply() needs (a speaker, a session). Idempotent."""

    def apply(self, entry: Entry) -> None:
        raise NotImplementedError

    def withdraw(self, address: str) -> None:
        raise NotImplementedError

    def held(self) -> dict[str, object]:
        """address -> action (see action()) of what the router holds."""
        raise NotImplementedError

    def action(self, entry: Entry):
        """What the router holds for an entry, as held() reads it back (the
        reason is ours, not the router's)."""
        return "block" if entry.bw is None else ("bw", entry.bw)

    def uptime(self) -> float | None:
        return None

    def wants(self, entry: Entry) -> bool:
        """Whether this back-end carries the entry at all (RTBH has no rates)."""
        return True

    def close(self) -> None:
        pass


class RouterError(Exception):
    """A router refused a command: its words."""


def canonical(prefix_text: str) -> str:
    return str(ipaddress.ip_network(prefix_text, strict=False))


def desired_of(classes: Mapping) -> dict[str, Entry]:
    """The entries every router should hold, from the enforcement plan
    (enforcement.plan): a block for every address of a blocked unit, and
    its `bw` for the others that have one. ::/0 of `restrict all` is no unit's: never pushed."""
    out: dict[str, Entry] = {}
    for pfx, spec in classes.items():
        if not spec.unit_oid:
            continue
        addr = canonical(enforcement.prefix_text(pfx))
        if sys_policy.verdict(spec.sys_policy) == abi.Verdict.DROP:
            out[addr] = Entry(addr, ",".join(sys_policy.words(spec.sys_policy)))
        elif spec.bw and any(spec.bw):
            out[addr] = Entry(addr, "bw", tuple(spec.bw))
    return out


def refused_by(address: str, never: Iterable) -> object | None:
    """The never-block prefix an address touches (inside it, or holding it), or None."""
    net = ipaddress.ip_network(address)
    for p in never:
        if p.version == net.version and (net.subnet_of(p) or net.supernet_of(p)):
            return p
    return None


class Pusher:
    """Keeps one back-end equal to the desired set, on its own thread."""

    def __init__(self, backend: Backend, delay: float, never_block=(), set_uptime=None,
                 clock=time.monotonic, check_every: float = UPTIME_CHECK):
        self.backend = backend
        self.check_every = check_every
        self.delay = delay
        self.never_block = tuple(never_block)
        self.set_uptime = set_uptime
        self.clock = clock
        self.desired: dict[str, Entry] = {}
        self.pushed: dict[str, Entry] = {}    # what we know the router holds
        self.refused: dict[str, str] = {}     # address -> why it is never pushed
        self.last_error: str = ""
        self.last_error_at: float | None = None
        self.last_resync: float | None = None
        self.resyncs = 0
        self.router_uptime: float | None = None
        self.up = False
        self._failing = ""        # the failure logged, until a round succeeds
        self._uptime_seen: float | None = None     # the clock when the router came up
        self._want_resync = True
        self._syncing = False     # a resync is between reading held() and its last command
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._work, name=f"aclserver-{backend.name}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    # the daemon's side

    def set_desired(self, desired: Mapping[str, Entry], resync: bool = False) -> None:
        """The whole desired set (at start, reload, each resync period)."""
        with self._cond:
            self.refused = {a: why for a, why in self.refused.items() if a in desired}
            self.desired = self._admit(desired, {})
            self._want_resync |= resync
            self._cond.notify_all()

    def change(self, entries: Mapping[str, Entry | None]) -> None:
        """Addresses whose entry changed (None: no longer blocked or limited)."""
        with self._cond:
            for addr, e in entries.items():
                if e is None:
                    self.desired.pop(addr, None)
                    self.refused.pop(addr, None)
                else:
                    self.desired.pop(addr, None)
                    self.desired.update(self._admit({addr: e}, self.desired))
            self._cond.notify_all()

    def _admit(self, desired: Mapping[str, Entry], held: Mapping) -> dict[str, Entry]:
        """What of `desired` may go to the router besides `held`: never a
        never-block prefix, never more than the back-end's rule limit
        (blocks before rate limits; a rate limit refused for room comes
        back with the next whole set). Refusals are logged once each."""
        out = {}
        limit = self.backend.max_entries
        n = len(held)
        for addr, e in sorted(desired.items(), key=lambda kv: kv[1].bw is not None):
            if not self.backend.wants(e):
                continue
            p = refused_by(addr, self.never_block)
            if p is None and limit is not None and n >= limit and e.bw is None:
                n -= self._evict_a_rate(held, limit)   # a block before a rate limit
            why = f"never-block {p}" if p is not None else \
                f"rule limit {limit} reached" if limit is not None and n >= limit else None
            if why:
                if self.refused.get(addr) != why:
                    log.warning("aclserver %s: not pushing %s (%s): %s",
                                self.backend.name, addr, e.reason, why)
                self.refused[addr] = why
                continue
            self.refused.pop(addr, None)
            out[addr] = e
            n += 1
        return out

    def _evict_a_rate(self, held: dict, limit: int) -> int:
        """Make room in `held` (the desired set a change goes into) by
        refusing one rate limit; 1 if one was, else 0."""
        victim = next((a for a, e in held.items() if e.bw is not None), None)
        if victim is None:
            return 0
        del held[victim]
        self.refused[victim] = f"rule limit {limit} reached"
        log.warning("aclserver %s: not pushing %s (bw): rule limit %d reached, a block "
                    "goes first", self.backend.name, victim, limit)
        return 1

    def wait_idle(self, timeout: float) -> bool:
        """Until the router holds the desired set (for tests)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.pending() or self._want_resync or self._syncing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def pending(self) -> dict[str, str]:
        """address -> what is still to be done on the router (caller holds _cond)."""
        out = {a: "apply" for a, e in self.desired.items() if self.pushed.get(a) != e}
        out.update({a: "withdraw" for a in self.pushed if a not in self.desired})
        return out

    def status(self) -> dict:
        b = self.backend
        with self._cond:
            pend = self.pending()
            return {"name": b.name, "kind": b.kind, "up": self.up,
                    "pushed": {a: e.reason for a, e in sorted(self.pushed.items())},
                    "pending": dict(sorted(pend.items())),
                    "refused": dict(sorted(self.refused.items())),
                    "last_error": self.last_error,
                    "router_uptime": self.router_uptime,
                    "resyncs": self.resyncs, "expiry": b.expiry}

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(10)
        self.backend.close()

    # the worker's side

    def _work(self) -> None:
        retry = RETRY_MIN
        next_check = 0.0
        while True:
            with self._cond:
                while not self._closing and not self._want_resync and not self.pending() \
                        and self.clock() < next_check:
                    self._cond.wait(max(0.0, next_check - self.clock()))
                if self._closing:
                    return
            try:
                if self.clock() >= next_check:
                    self._check_router()
                    next_check = self.clock() + self.check_every
                if self._want_resync or self.last_resync is None \
                        or self.clock() - self.last_resync >= self.delay:
                    self._resync()
                else:
                    self._push_changes()
                retry = RETRY_MIN
                if self.up:        # the router answered too: a new failure is news again
                    self._failing = ""
            except Exception as e:  # noqa: BLE001 - the router's failure is recorded, not raised
                self._failed(e)
                with self._cond:
                    self.up = False
                    self._want_resync = True    # reconnect: what it holds is unknown
                    self._cond.wait(retry)
                retry = min(retry * 2, max(min(self.delay, RETRY_MAX), RETRY_MIN))

    def _check_router(self) -> None:
        """A router that restarted (its uptime went back), or that is back
        after it could not be asked, gets a full resync. One that cannot be
        asked is down, but commands still go out: a BGP speaker holds them
        for the session's return, and elsewhere they fail on their own."""
        self.backend.connect()
        try:
            up = self.set_uptime if self.set_uptime is not None else self.backend.uptime()
        except Exception as e:  # noqa: BLE001 - recorded; the pushes decide the rest
            self._failed(e)
            with self._cond:
                self.up, self.router_uptime = False, None
            return
        now = self.clock()
        came_up = None if up is None else now - up
        with self._cond:
            if not self.up and self.resyncs:
                self._want_resync = True     # back: what it holds is unknown
            self.up = True
            if up is not None and self._uptime_seen is not None \
                    and came_up > self._uptime_seen + 1.0:
                log.info("aclserver %s: the router restarted (uptime %.0f s): resync",
                         self.backend.name, up)
                self._want_resync = True
            if came_up is not None:
                self._uptime_seen = came_up
            self.router_uptime = up

    def _resync(self) -> None:
        with self._cond:
            self._want_resync = False
            self._syncing = True
            desired = dict(self.desired)
        try:
            self._resync_to(desired)
        finally:
            with self._cond:
                self._syncing = False
                self._cond.notify_all()

    def _resync_to(self, desired: dict[str, Entry]) -> None:
        held = self.backend.held()
        refresh = self.backend.expiry is not None
        n = 0
        for addr, e in desired.items():
            if refresh or held.get(addr) != self.backend.action(e):
                self.backend.apply(e)
                n += 1
            with self._cond:
                self.pushed[addr] = e
        for addr in held:
            if addr not in desired:
                self.backend.withdraw(addr)
                n += 1
        with self._cond:
            for addr in list(self.pushed):
                if addr not in desired:
                    del self.pushed[addr]
            self.last_resync = self.clock()
            self.resyncs += 1
            self._cond.notify_all()
        log.debug("aclserver %s: resync: %d desired, %d held, %d commands",
                  self.backend.name, len(desired), len(held), n)

    def _push_changes(self) -> None:
        with self._cond:
            todo = self.pending()
            desired = dict(self.desired)
        for addr, what in todo.items():
            if what == "apply":
                e = desired[addr]
                log.debug("aclserver %s: apply %s (%s)", self.backend.name, addr, e.reason)
                self.backend.apply(e)
                with self._cond:
                    self.pushed[addr] = e
            else:
                log.debug("aclserver %s: withdraw %s", self.backend.name, addr)
                self.backend.withdraw(addr)
                with self._cond:
                    self.pushed.pop(addr, None)
        with self._cond:
            self._cond.notify_all()

    def _failed(self, e: Exception) -> None:
        msg = f"{type(e).__name__}: {e}" if not isinstance(e, (OSError, RouterError)) else str(e)
        with self._cond:
            self.last_error, self.last_error_at = msg, time.time()
        if msg != self._failing:  # the same failure every retry is logged once
            log.warning("aclserver %s: %s", self.backend.name, msg)
            self._failing = msg
