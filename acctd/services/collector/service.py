"""The collector service (NeTAMS `service data-source`, types netflow and
raw): each `[[collector]]` is a numbered data source. A netflow one
listens for NetFlow v5/v9, IPFIX and sFlow v5 from its accepted exporters;
its records become flows in the kernel's columnar layout and join the
next drain (acctd/daemon/core.py), so they are accounted, rolled up and
charged exactly as the kernel's. A raw one accounts `acctctl rawdata`.

What a drain commits: the flows received up to its start. A failed commit
gives them back to the next one. UDP is not retransmitted, so what a
`kill -9` loses is what was received since the last commit (at most one
lookup-delay); nothing is ever counted twice. Templates are saved beside
the database after each commit and read back at start."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import threading
import time

import numpy as np

from acctd.config.schema import Invalid, Table, choice, each, integer, setting, string
from acctd.errors import BadRequest
from acctd.kernel import abi
from acctd.model import sources
from acctd.services.collector import flows
from acctd.services.collector.listener import Listener
from acctd.services.collector.templates import Store
from acctd.services.contract import Collected, Core, Drain, Service
from acctd.store import interval, rollup

log = logging.getLogger("acctd.collector")

BATCH = 4096           # records turned into flows together
COMPACT = 1 << 18      # flow rows held before they are merged by key
MAX_ROWS = 1 << 22     # distinct flows held at most between drains; beyond, dropped (counted)


def _listen(v, ctx) -> tuple[str, int]:
    """"[ADDR:]PORT" (NeTAMS `listen ip port`: "0 20001" also reads)."""
    text = str(v).strip()
    host, sep, port = text.replace(" ", ":", 1).rpartition(":") if not isinstance(v, int) \
        else ("", "", str(v))
    host = host.strip("[]") if sep else ""
    if host in ("", "0"):
        host = "0.0.0.0"
    try:
        ipaddress.ip_address(host)
        p = int(port)
    except ValueError:
        raise Invalid(f"expected [ADDRESS:]PORT, got {v!r}") from None
    if not 1 <= p <= 65535:
        raise Invalid(f"port must be 1..65535, got {p}")
    return host, p


def _network(v, ctx):
    try:
        return ipaddress.ip_network(str(v), strict=False)
    except ValueError:
        raise Invalid(f"expected an exporter address or prefix, got {v!r}") from None


@dataclasses.dataclass(frozen=True)
class CollectorSettings(Table):
    """One [[collector]]: data source `id` (units name it in ds-list)."""
    id: int = setting(check=integer(1, sources.MAX_SOURCE, "a data-source number"), example="1")
    type: str = setting("netflow", check=choice("netflow", "raw"))
    listen: tuple[str, int] = setting(("0.0.0.0", 20001), check=_listen)
    source: tuple = setting((), check=each(_network, "exporter addresses"))
    clock: str = setting("remote", check=choice("remote", "local"))
    templates: int = setting(256, check=integer(1, 65535, "templates per observation domain"))
    name: str = setting("", check=string("a name"))

    def finish(self, ctx):
        if self.type == "netflow" and not self.source:
            raise Invalid("a netflow data source needs the exporters it accepts, e.g. "
                          "source = [\"192.0.2.1\"]", "source")
        return self


class _Source:
    """One netflow data source's listener and what it has received."""

    def __init__(self, core: Core, s: CollectorSettings, state_dir: str):
        self.settings = s
        self.store = Store(per_domain=s.templates)
        self.path = os.path.join(state_dir, f"collector-{s.id}.templates.json")
        kept = self.store.load(self.path)
        if kept:
            log.info("collector %d: %d templates from the last run", s.id, kept)
        self.core = core
        self.lock = threading.Lock()
        self.raw: list[np.ndarray] = []
        self.n_raw = 0
        self.keys: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.rows = 0
        self.dropped = 0         # flows over MAX_ROWS between two drains, not accounted
        self.unmatched = 0       # records with no local address of a unit of this source
        self._takes = (None, None)
        self.listener = Listener(*s.listen, s.source, self.store, self.receive, s.clock,
                                 core.netns)

    def receive(self, records, exporter, ex) -> None:
        with self.lock:
            self.raw.append(records)
            self.n_raw += len(records)
            if self.n_raw >= BATCH:
                self._convert()

    def _convert(self) -> None:
        """Raw records -> flows under the current model (caller holds lock)."""
        if not self.raw:
            return
        recs = _join(self.raw, self.n_raw)
        self.raw, self.n_raw = [], 0
        units = self.core.snapshot.units
        if self._takes[0] is not units:
            self._takes = (units, sources.takes(units, self.settings.id))
        k, v, unmatched = flows.to_flows(recs, units, self._takes[1], self.settings.id)
        self.unmatched += unmatched
        self.keys.append(k)
        self.vals.append(v)
        self.rows += len(k)
        if self.rows >= COMPACT and len(self.keys) > 1:
            k, v = flows.compact(np.concatenate(self.keys), np.concatenate(self.vals))
            self.keys, self.vals, self.rows = [k], [v], len(k)
        while self.rows > MAX_ROWS and len(self.keys) > 1:  # distinct flows beyond the cap
            gone = self.keys.pop()
            self.vals.pop()
            self.rows -= len(gone)
            self.dropped += len(gone)

    def take(self):
        self.listener.flush()
        with self.lock:
            self._convert()
            keys, vals = self.keys, self.vals
            self.keys, self.vals, self.rows = [], [], 0
        if not keys:
            return None
        return np.concatenate(keys), np.concatenate(vals)

    def give_back(self, taken) -> None:
        with self.lock:
            self.keys.insert(0, taken[0])
            self.vals.insert(0, taken[1])
            self.rows += len(taken[0])

    def save(self) -> None:
        if self.store.changed:
            try:
                self.store.save(self.path)
            except OSError as e:
                log.warning("collector %d: cannot save templates to %s: %s",
                            self.settings.id, self.path, e)

    def status(self) -> dict:
        st = self.listener.status()
        return {"id": self.settings.id, "type": "netflow", **st,
                "unmatched": self.unmatched, "dropped": self.dropped}


class CollectorService(Service):
    name = "collector"

    def __init__(self, core: Core, settings):
        super().__init__(core, settings)
        self.sources: list[_Source] = []
        self._taken: list[tuple[_Source, tuple]] = []
        self._raw: list[dict] = []      # rawdata rows waiting for their drain

    @staticmethod
    def settings_of(config):
        return config.collector

    def serve(self) -> None:
        for i, s in enumerate(self.settings or ()):
            if s.type != "netflow":
                continue
            try:
                src = _Source(self.core, s, self.core.state_dir)
            except OSError as e:  # the port is taken, the address is not ours
                from acctd.config.loader import error_at
                raise error_at(self.core.config.path, f"cannot listen on {s.listen[0]}:"
                               f"{s.listen[1]}: {e.strerror or e}", "collector", i,
                               "listen") from None
            src.listener.start()
            self.sources.append(src)
            log.info("collector %d: listening on %s:%d for %s", s.id, *src.listener.address,
                     ", ".join(map(str, s.source)))

    def reload(self, settings) -> None:
        self.restart(settings)

    def close(self) -> None:
        for src in self.sources:
            src.listener.close()
            src.save()
        self.sources = []

    # -- the drain ---------------------------------------------------------------------

    def collected(self, snapshot) -> Collected | None:
        self._taken = [(src, t) for src in self.sources if (t := src.take()) is not None]
        raw, self._raw = self._raw, []
        if not self._taken and not raw:
            return None
        if self._taken:
            keys = np.concatenate([t[0] for _, t in self._taken])
            vals = np.concatenate([t[1] for _, t in self._taken])
        else:
            keys, vals = np.zeros(0, abi.FLOW_KEY), np.zeros(0, abi.FLOW_VAL)
        ak, av = flows.addr_deltas(keys, vals, time.clock_gettime_ns(time.CLOCK_MONOTONIC))
        return Collected(keys, vals, ak, av, _rows(snapshot, raw) if raw else None)

    def drain_failed(self) -> None:
        """The drain did not commit: its flows go to the next one (a rawdata
        command's counts were refused with it, and its caller was told)."""
        for src, t in self._taken:
            src.give_back(t)
        self._taken = []

    def after_drain(self, drain: Drain) -> None:
        self._taken = []
        for src in self.sources:
            src.save()

    def status(self) -> dict | None:
        if not self.settings:
            return None
        return {"collector": {"sources": [src.status() for src in self.sources] +
                              [{"id": s.id, "type": "raw"} for s in self.settings
                               if s.type == "raw"]}}

    # -- NeTAMS rawdata ------------------------------------------------------------------

    def rawdata(self, unit: str, argv: list[str]) -> dict:
        """`acctctl rawdata UNIT [POLICY] in BYTES out BYTES`: counts from an
        outside source, committed in a drain of their own before this returns."""
        if not any(s.type == "raw" for s in self.settings or ()):
            raise BadRequest("rawdata needs a [[collector]] with type = \"raw\"")
        policy, counts = parse_rawdata(argv)
        with self.core.lock:
            snap = self.core.snapshot
            i = snap.find(unit)
            p = None
            if policy is not None:
                p = snap.config.policies.find(policy)
            self._raw.append({"unit": i, "policy": p, "in": counts[0], "out": counts[1]})
            try:
                self.core.drain_locked()
            finally:
                self._raw = []
        u = snap.units.units[i]
        return {"unit": u.name, "policy": policy, "in": counts[0], "out": counts[1]}


def _join(parts: list[np.ndarray], n: int) -> np.ndarray:
    """One array of many small ones of one dtype (np.concatenate promotes
    a structured dtype once per part: slow for thousands of packets)."""
    if len(parts) == 1:
        return parts[0]
    out = np.empty(n, parts[0].dtype)
    at = 0
    for p in parts:
        out[at:at + len(p)] = p
        at += len(p)
    return out


def parse_rawdata(argv: list[str]) -> tuple[str | None, tuple[int, int]]:
    """[POLICY] in BYTES out BYTES (either or both, any order)."""
    words = list(argv)
    policy = None
    if words and words[0] not in ("in", "out"):
        policy = words.pop(0)
    got = {"in": 0, "out": 0}
    if not words or len(words) % 2:
        raise BadRequest("usage: rawdata UNIT [POLICY] in BYTES out BYTES")
    for w, n in zip(words[::2], words[1::2]):
        if w not in got or not n.isdigit() or int(n) >= 1 << 63:
            raise BadRequest(f"rawdata: expected in|out and a byte count, got {w!r} {n!r}")
        got[w] = int(n)
    return policy, (got["in"], got["out"])


def _rows(snap, raw: list[dict]) -> dict[str, np.ndarray]:
    """rawdata counts as oid-keyed rows: the unit's total (and its groups'),
    and the policy's row when one was named."""
    leaf = np.array([r["unit"] for r in raw], np.int32)
    b = np.array([[r["in"], r["out"]] for r in raw], np.uint64)
    zero = np.zeros_like(b)
    _, ub, _, _ = interval.unit_sums(snap, leaf, zero, b)
    u, d = np.nonzero(ub)
    parts = [(snap.unit_oids[u], np.full(len(u), rollup.ALL_TRAFFIC), d, ub[u, d])]
    for r in raw:
        if r["policy"] is not None:
            for d in (0, 1):
                n = r["in"] if d == 0 else r["out"]
                if n:
                    parts.append((snap.unit_oids[[r["unit"]]], snap.policy_oids[[r["policy"]]],
                                  np.array([d]), np.array([n], np.uint64)))
    cols = [np.concatenate([np.asarray(p[j]) for p in parts]) for j in range(4)]
    return {"unit_oid": cols[0].astype(np.uint32), "policy_oid": cols[1].astype(np.uint32),
            "dir": cols[2].astype(np.uint8), "packets": np.zeros(len(cols[0]), np.uint64),
            "bytes": cols[3].astype(np.uint64)}
