"""Many gateways, one view: the [central] PostgreSQL (README "Several gateways").

Each drain's rows go into the DuckDB outbox in the drain's own transaction
(in_drain); a shipper thread of this service COPYs them to PostgreSQL in
seq order, exactly once (ship.py), and deletes them from the outbox after
PostgreSQL's COMMIT. The drain never waits for PostgreSQL: while it is
unreachable the outbox grows, the gateway keeps counting and enforcing
with the last shared state it had, and status and the log say so.

Shared state over the same connection:
- blocks: the blocks this gateway decides (its services' and the admin
  deny words) are kept in the server's `block` table (NOTIFY acctd_block);
  the others' are held here (blocks()) and reach the kernel through the
  core's enforce(). A reconnect reads the whole table again.
- quotas: the other gateways' totals of the quota units' current periods,
  read after every NOTIFY acctd_shipped, added to the local ones by the
  quota service (usage_elsewhere). During an outage they stay the last
  known, and a unit with a quota may spend `outage-allowance` bytes on
  this gateway before it is held (reason quota) until the link returns.
- balances: the billing ledger rides the same outbox (balances.py, kind
  LEDGER, on the same sequence as the drains); the other gateways' sums per
  account are read at connect and after every NOTIFY acctd_ledger
  (ledger_elsewhere) and billing adds them to its own. During an outage
  they stay the last known.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import threading
import time

from acctd.common.throttle import Throttle
from acctd.config.schema import Table, integer, setting, string
from acctd.errors import AcctError, Conflict
from acctd.kernel import abi
from acctd.model import sys_policy
from acctd.services.central import (accounts, balances, invoicing, logins, schema, ship,
                                    units)
from acctd.services.contract import Core, Drain, Service
from acctd.store.rollup import ALL_TRAFFIC, PERIODS, to_us

log = logging.getLogger("acctd.central")


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else repr(e)

BATCH = 64          # drains per PostgreSQL transaction while catching up,
BATCH_ROWS = 500_000    # and rows at most (unless one drain alone has more)
SHARED_UNITS = "central_units_shared"   # meta: the run-time units published (name -> oid)
CONNECTING = 5.0    # seconds an account create waits for the first connect
HEARTBEAT = 1.0     # seconds idle before a SELECT 1 checks the link
LINK_TIMEOUTS = {"connect_timeout": "3", "keepalives": "1", "keepalives_idle": "2",
                 "keepalives_interval": "1", "keepalives_count": "2",
                 "tcp_user_timeout": "3000"}


@dataclasses.dataclass(frozen=True)
class CentralSettings(Table):
    """The [central] table."""
    dsn: str = setting(check=string("a libpq connection string or URI"))
    gateway: str = setting(check=string("this gateway's name, unique among them"))
    retention_months: int = setting(13, check=integer(1, 1200, what="months"))
    retry: int = setting(2, check=integer(1, 3600, what="seconds"))
    # seconds a shipped drain stays in the outbox: what an asynchronous
    # standby may lack when it is promoted, shipped to it again
    keep_shipped: int = setting(900, check=integer(0, 86400, what="seconds"))
    # bytes a unit with a quota may move on this gateway while the server is
    # unreachable, before it is held (reason quota) until the link returns
    outage_allowance: int = setting(100 * 1024 ** 2, check=integer(0, what="bytes"))


class CentralService(Service):
    name = "central"
    shares_blocks = True   # its blocks() come from elsewhere: not published again
    reload_under_lock = False   # restart() joins the shipper, which takes the core's lock

    def __init__(self, core: Core, settings: CentralSettings | None):
        super().__init__(core, settings)
        self.conn = None
        self.gateway_id: int | None = None
        self.state = "off" if settings is None else "connecting"
        self.since = time.time()
        self.error: str | None = None
        self.shipped_seq = 0
        self.shipped_drains = 0
        self.caught_up: dict | None = None    # the last catch-up after an outage
        self.remote: dict[str, int] = {}       # unit oid -> bits held elsewhere
        self.published: dict[str, int] | None = None
        self.elsewhere: dict = {}              # (unit, policy) -> {period: (in, out)}
        self.elsewhere_starts: dict[str, dt.datetime] = {}
        self.watch: list[int] = []             # unit oids with a quota on any gateway
        self.ledger_elsewhere: dict = {}       # account oid -> the others' ledger sum
        self.payments_elsewhere: list = []     # the others' payments: (account, ts, amount)
        self._accounts_shared: dict | None = None   # account oid -> its `changed` published
        self._units_shared: dict | None = None      # name -> oid of the run-time units published
        self._logins_shared: dict | None = None     # unit oid -> its login `changed` published
        self._units_again = True                    # at connect: all run-time units again
        self._terms_shared: dict | None = None      # account oid -> its terms' `changed` published
        self._invoices_due = False                  # invoicing found last month's lacking
        self._changed_here = True                   # a login record or terms changed here
        self._login_version = 0                     # the server's login rows read up to this
        self._quotas_shared: dict | None = None
        self.outage_spend: dict[str, int] = {}  # unit oid -> bytes since the link went down
        self.outage_held: set[str] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._throttle = Throttle(log, 60.0)
        self._heard = time.monotonic()
        self._retained: float | None = None    # when retention last ran

    @staticmethod
    def settings_of(config):
        return config.central

    # -- hooks -------------------------------------------------------------------------

    def start(self) -> None:
        if self.settings is not None:
            self._watch_quotas()

    def serve(self) -> None:
        if self.settings is None:
            return
        self.state, self.since = "connecting", time.time()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="central", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join(10)
            self._thread = None
        self._close_conn()

    def reload(self, settings) -> None:
        self.restart(settings)

    def in_drain(self, drain: Drain, tx) -> None:
        """The drain's rows into the outbox, in its transaction."""
        if self.settings is None:
            return
        self.enqueue(tx, ship.DRAIN, drain.now, len(drain.rows["bytes"]), ship.pack(drain.rows))
        # after billing's in_drain (SERVICES order): the rows it rated now
        balances.enqueue_rows(self, tx, drain.now)

    def enqueue(self, tx, kind: int, ts: dt.datetime, n: int, payload: bytes) -> None:
        """One outbox row in the caller's transaction (tx: the drain's, or
        another commit's), the next of this gateway's sequence: how another
        service (the billing ledger) ships its rows with the drains, in
        order and exactly once (a shipper for its kind in ship.SHIPPERS)."""
        seq = int(tx.meta("central_seq") or 0) + 1
        tx.con.execute("INSERT INTO central_outbox VALUES (?, make_timestamp(?), ?, ?, ?)",
                       [seq, to_us(ts), n, payload, kind])
        tx.set_meta("central_seq", str(seq))

    def after_drain(self, drain: Drain) -> None:
        if self.settings is None:
            return
        if self.state != "connected":
            self._count_outage(drain)
        self._wake.set()

    def blocks_changed(self, moved) -> None:
        self._wake.set()   # the shipper publishes what this gateway decides now

    def blocks(self) -> dict[str, int]:
        out = dict(self.remote)
        for oid in self.outage_held:
            out[oid] = out.get(oid, 0) | abi.SysPolicy.QUOTA
        return out

    def status(self) -> dict | None:
        if self.settings is None:
            return None
        backlog = self.core.storage.con.execute(
            "SELECT count(*), coalesce(sum(n), 0) FROM central_outbox WHERE seq > ?",
            [self.shipped_seq]).fetchall()[0]
        return {"central": {
            "gateway": self.settings.gateway, "state": self.state,
            "since": dt.datetime.fromtimestamp(self.since, dt.timezone.utc).isoformat(),
            "error": self.error, "backlog_drains": int(backlog[0]),
            "backlog_rows": int(backlog[1]), "shipped_seq": self.shipped_seq,
            "shipped_drains": self.shipped_drains, "caught_up": self.caught_up,
            "blocks_from_elsewhere": len(self.remote),
            "held_for_outage": sorted(self.outage_held)}}

    # -- shared quotas -------------------------------------------------------------------

    def usage_elsewhere(self, oid: str, policy_oid: int, now: dt.datetime
                        ) -> dict[str, tuple[int, int]]:
        """The other gateways' bytes (in, out) of a unit's policy in the current
        periods, as last read (a period that turned since counts nothing yet)."""
        if self.settings is None:
            return {}
        cell = self.elsewhere.get((int(oid, 16), policy_oid), {})
        zone = self.core.snapshot.config.processor.zone
        starts = ship.period_bounds(now, zone)
        return {k: cell[k] for k in PERIODS
                if k in cell and self.elsewhere_starts.get(k) == starts[k]}

    def _watch_quotas(self) -> None:
        """Before the first connect: the units with a quota here."""
        self.watch = sorted(int(o, 16) for o in self.core.storage.quotas())

    def _count_outage(self, drain: Drain) -> None:
        """The outage rule: each quota unit's traffic here since the link went
        down, held once it passes the allowance."""
        rows = drain.rows
        quota_units = {f"{u:06X}" for u in self.watch}
        all_ = rows["policy_oid"] == ALL_TRAFFIC
        over = False
        for u, b in zip(rows["unit_oid"][all_], rows["bytes"][all_]):
            oid = f"{int(u):06X}"
            if oid in quota_units:
                self.outage_spend[oid] = self.outage_spend.get(oid, 0) + int(b)
                if self.outage_spend[oid] > self.settings.outage_allowance \
                        and oid not in self.outage_held:
                    self.outage_held.add(oid)
                    over = True
        if over:
            log.warning("central unreachable: %s over the outage allowance of %d bytes, "
                        "held until the link returns", ", ".join(sorted(self.outage_held)),
                        self.settings.outage_allowance)
            self.core.enforce()

    # -- the shipper thread --------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.conn is None and not self._connect():
                self._stop.wait(self.settings.retry)
                continue
            try:
                self._ship_backlog()
                self._publish_blocks()
                self._publish_runtime_units()   # before the accounts and logins naming them
                self._publish_accounts()
                if self._changed_here:
                    self._changed_here = False   # before reading: a change meanwhile flags again
                    self._publish_logins()
                    self._publish_terms()
                if self._invoices_due:
                    self._issue_invoices()
                if self._share_quotas():
                    self._publish_totals()
                self._retention()
                self._listen(0.2)
            except Exception as e:   # psycopg.Error, or the link cut mid-statement
                self._lost(e)

    def _link(self):
        """A new connection to the server."""
        import psycopg
        from psycopg.conninfo import conninfo_to_dict
        # a link that goes silent (no RST) must end the connection in
        # seconds, not the kernel's minutes; what the DSN says wins
        return psycopg.connect(autocommit=True,
                               **{**LINK_TIMEOUTS, **conninfo_to_dict(self.settings.dsn)})

    def new_account_oid(self, name: str, local_max: int) -> int:
        """An oid for a new billing account, from the server (accounts.allocate),
        on a connection of its own (the shipper's may be mid-statement);
        Conflict while the server is away. The caller holds no lock."""
        import psycopg
        deadline = time.monotonic() + CONNECTING
        while self.state == "connecting" and time.monotonic() < deadline:
            time.sleep(0.05)   # just started: the first connect is on its way
        if self.state == "connected":
            try:
                with self._link() as conn:
                    return accounts.allocate(conn, self.gateway_id, name, local_max)
            except psycopg.Error as e:
                why = _first_line(e)
        else:
            why = self.error or self.state
        raise Conflict(f"account {name!r} not made: the central PostgreSQL is unreachable "
                       f"({why}) and account oids come from it, so that two gateways never "
                       "make the same one; make it when status shows central connected")

    def ledger_elsewhere_rows(self, oid: int, start, end) -> list[tuple]:
        """The other gateways' ledger rows of an account, as the server has
        them (queries.ledger_rows), on a connection of its own; Conflict
        while the server is away. The caller holds no lock."""
        from acctd.services.central import queries
        return self._ask(lambda conn: queries.ledger_rows(conn, oid, start, end,
                                                          self.gateway_id),
                         "only this gateway's rows")

    def rows_for_months(self, oid: int, end) -> list[tuple]:
        """The other gateways' ledger rows of an account for the months before
        `end` (invoicing.ledger_elsewhere), on a connection of its own;
        Conflict while the server is away. The caller holds no lock."""
        return self._ask(lambda conn: invoicing.ledger_elsewhere(
            conn, self.gateway_id, [oid], end), "only this gateway's rows")

    def _ask(self, query, instead: str):
        """query(conn) on a connection of its own, or Conflict (`instead`, why)."""
        import psycopg
        if self.state == "connected":
            try:
                with self._link() as conn:
                    return query(conn)
            except psycopg.Error as e:
                why = _first_line(e)
        else:
            why = self.error or self.state
        raise Conflict(f"{instead}: the central PostgreSQL is unreachable ({why})")

    def _connect(self) -> bool:
        import psycopg
        s = self.settings
        try:
            conn = self._link()
        except psycopg.Error as e:
            self._down(_first_line(e))
            return False
        try:
            done = schema.migrate(conn)
            if done:
                log.info("central: schema steps %s applied", done)
            conn.execute("INSERT INTO gateway (name) VALUES (%s) ON CONFLICT (name) DO NOTHING",
                         (s.gateway,))
            self.gateway_id, self.shipped_seq = conn.execute(
                "SELECT id, shipped_seq FROM gateway WHERE name = %s", (s.gateway,)).fetchone()
            with self.core.lock:
                local = int(self.core.storage.meta("central_seq") or 0)
            if local < self.shipped_seq:   # its next drains would pass for shipped ones
                raise schema.CentralError(
                    f"gateway {s.gateway!r} has shipped drains up to {self.shipped_seq} and "
                    f"this database has made {local}: another gateway uses that name (or this "
                    "database is new or restored); give this one its own gateway name")
            conn.execute("LISTEN acctd_block")
            conn.execute("LISTEN acctd_shipped")
            conn.execute("LISTEN acctd_ledger")
            conn.execute("LISTEN acctd_account")
            conn.execute("LISTEN acctd_unit")
            conn.execute("LISTEN acctd_login")
            conn.execute("LISTEN acctd_terms")
            conn.execute("LISTEN acctd_invoice")
            self.conn = conn
            self._publish_units()
            self.published = None          # publish ours again, read everyone's
            self._quotas_shared = None
            self._resync_blocks()
            self._refresh_elsewhere()
            self._publish_totals()
            self._refresh_ledger()
            self._accounts_shared = self._logins_shared = self._terms_shared = None
            self._login_version = 0     # a promoted standby may have fewer: all again
            self._changed_here = True
            self._units_again = True
            self._resync_units()     # first: the accounts and logins may name these units
            self._resync_logins()
            self._resync_accounts()
            self._resync_terms()     # after the accounts they are of
            self._keep_invoices()
        except schema.CentralError as e:
            conn.close()
            self._refuse(str(e))
            return False
        except Exception as e:   # psycopg.Error, or the link cut mid-statement
            conn.close()
            self.conn = None
            self._down(_first_line(e))
            return False
        self._up()
        self._retained = None
        return True

    def _retention(self) -> None:
        """Whole month partitions past retention-months go, hourly and at connect."""
        if self._retained is not None and time.monotonic() - self._retained < 3600:
            return
        self._retained = time.monotonic()
        for name in ship.drop_old_partitions(self.conn, self.settings.retention_months,
                                             self.core.clock()):
            log.info("central: retention dropped partition %s", name)

    def _up(self) -> None:
        if self.outage_held or self.outage_spend:   # the shared totals count again
            self.outage_spend, self.outage_held = {}, set()
            self.core.enforce()
        was, self.state, self.error = self.state, "connected", None
        billing = self.core.services.get("billing")
        if billing is not None:                      # and the shared balances
            with self.core.lock:
                billing.balances_changed()
        if was == "unreachable":
            backlog = self._backlog()
            self._throttle.warning("up", "central %s reachable again after %d s: shipping %d "
                                   "drains", self.settings.gateway,
                                   round(time.time() - self.since), backlog)
            self.caught_up = {"drains": 0, "pending": backlog, "down_s": round(
                time.time() - self.since, 1), "done_at": None if backlog else
                dt.datetime.now(dt.timezone.utc).isoformat()}
        self.since = time.time()

    def _down(self, why: str) -> None:
        if self.state != "unreachable":
            self.since = time.time()
        self.state, self.error = "unreachable", why
        self._throttle.warning(
            "down", "central %s unreachable (%s): counting and enforcing with the last "
            "shared state, %d drains wait in the outbox", self.settings.gateway, why,
            self._backlog())

    def _refuse(self, why: str) -> None:
        if self.state != "refused":
            self.since = time.time()
        self.state, self.error = "refused", why
        self._throttle.warning("refused", "central: %s", why)

    def _lost(self, e: Exception) -> None:
        self._close_conn()
        self._down(_first_line(e))

    def _close_conn(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None

    def _backlog(self) -> int:
        with self.core.lock:
            return int(self.core.storage.con.execute(
                "SELECT count(*) FROM central_outbox WHERE seq > ?",
                [self.shipped_seq]).fetchall()[0][0])

    def _ship_backlog(self) -> None:
        while not self._stop.is_set():
            with self.core.lock:
                con = self.core.storage.con
                sizes = con.execute("SELECT seq, n FROM central_outbox WHERE seq > ? ORDER BY "
                                    "seq LIMIT ?", [self.shipped_seq, BATCH]).fetchall()
                last, total = None, 0
                for seq, n in sizes:   # a bounded transaction (and memory), one drain at least
                    if last is not None and total + n > BATCH_ROWS:
                        break
                    last, total = seq, total + n
                batch = [] if last is None else con.execute(
                    "SELECT seq, epoch_us(ts), kind, rows FROM central_outbox WHERE seq > ? "
                    "AND seq <= ? ORDER BY seq", [self.shipped_seq, last]).fetchall()
            if not batch:
                return
            drains = [(int(q), int(t), bytes(b)) for q, t, k, b in batch if k == ship.DRAIN]
            others = [(int(q), int(t), int(k), bytes(b)) for q, t, k, b in batch
                      if k != ship.DRAIN]
            try:
                self.shipped_seq, _ = ship.ship(self.conn, self.gateway_id, drains, others)
            except ship.UnknownKind as e:
                self._refuse(str(e))
                self._stop.wait(self.settings.retry)
                return
            # shipped drains stay keep_shipped seconds: a standby promoted
            # before it had them says so by its lower shipped_seq, and gets them
            with self.core.lock:
                self.core.storage.con.execute(
                    "DELETE FROM central_outbox WHERE seq <= ? AND ts < make_timestamp(?)",
                    [self.shipped_seq, to_us(self.core.clock()) - self.settings.keep_shipped
                     * 1_000_000])
            self.shipped_drains += len(batch)
            if self.caught_up is not None and self.caught_up["done_at"] is None:
                self.caught_up["drains"] += len(drains)
                if self._backlog() == 0:
                    self.caught_up["done_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
                    log.info("central %s caught up: %d drains shipped after the outage",
                             self.settings.gateway, self.caught_up["drains"])
            self._publish_totals()

    def _listen(self, timeout: float) -> None:
        got = set()
        for n in self.conn.notifies(timeout=timeout, stop_after=1):
            got.add(n.channel)
        if got:     # and whatever came with it: one change often sends several
            got.update(n.channel for n in self.conn.notifies(timeout=0))
        if got or time.monotonic() - self._heard > HEARTBEAT:
            if not got:
                self.conn.execute("SELECT 1")   # unacknowledged: tcp_user_timeout ends it
            self._heard = time.monotonic()
        # units before the accounts that name them, the blocks last: a block
        # then never shows ahead of the account change that made it
        if "acctd_unit" in got and self._resync_units():
            self._login_version = 0     # the records of units new here, skipped before
            got.add("acctd_login")
        if "acctd_login" in got:
            self._resync_logins()
        if "acctd_account" in got:
            self._resync_accounts()
        if "acctd_terms" in got:
            self._resync_terms()
        if "acctd_invoice" in got:
            self._keep_invoices()
        if "acctd_ledger" in got:
            self._refresh_ledger()
        if "acctd_shipped" in got:
            self._refresh_elsewhere()
        if "acctd_block" in got:
            self._resync_blocks()

    # -- shared state --------------------------------------------------------------------

    def _decided(self) -> dict[str, int]:
        """The blocks this gateway decides: its services' (not the ones
        carried from elsewhere) and the admin deny words stored."""
        with self.core.lock:
            out: dict[str, int] = {}
            for s in self.core.services.values():
                if getattr(s, "shares_blocks", False):
                    continue
                for oid, bits in s.blocks().items():
                    out[oid] = out.get(oid, 0) | int(bits)
            for oid, st in self.core.storage.sys_policies().items():
                deny, _ = sys_policy.split(st)
                if deny:
                    out[oid] = out.get(oid, 0) | deny
            return {o: b for o, b in out.items() if b}

    def _publish_blocks(self) -> None:
        mine = self._decided()
        if mine == self.published:
            return
        old = self.published or {}
        with self.conn.transaction():
            if self.published is None:
                self.conn.execute("DELETE FROM block WHERE gateway_id = %s", (self.gateway_id,))
            for oid in set(old) - set(mine):
                self.conn.execute("DELETE FROM block WHERE gateway_id = %s AND unit_oid = %s",
                                  (self.gateway_id, int(oid, 16)))
            for oid, bits in mine.items():
                if old.get(oid) != bits or self.published is None:
                    self.conn.execute(
                        "INSERT INTO block VALUES (%s, %s, %s, now()) ON CONFLICT (gateway_id, "
                        "unit_oid) DO UPDATE SET bits = excluded.bits, at = now()",
                        (self.gateway_id, int(oid, 16), bits))
            self.conn.execute("NOTIFY acctd_block")
        self.published = mine

    def _resync_blocks(self) -> None:
        rows = self.conn.execute(
            "SELECT unit_oid, bit_or(bits) FROM block WHERE gateway_id <> %s GROUP BY 1",
            (self.gateway_id,)).fetchall()
        remote = {f"{int(u):06X}": int(b) for u, b in rows if b}
        if remote != self.remote:
            self.remote = remote
            log.info("central: blocks from other gateways: %s",
                     {o: sys_policy.words(b) for o, b in sorted(remote.items())})
            self.core.enforce()

    def _share_quotas(self) -> bool:
        """This gateway's quota records into the server's `quota` table, and
        the units with a quota anywhere (whose totals are shared); True if
        this gateway's records changed."""
        import psycopg.types.json
        with self.core.lock:
            local = self.core.storage.quotas()
        changed = local != self._quotas_shared
        if changed:
            with self.conn.transaction():
                self.conn.execute("DELETE FROM quota WHERE gateway_id = %s AND NOT "
                                  "(unit_oid = ANY(%s))",
                                  (self.gateway_id, [int(o, 16) for o in local]))
                self.conn.cursor().executemany(
                    "INSERT INTO quota VALUES (%s, %s, %s) ON CONFLICT (unit_oid) DO UPDATE "
                    "SET spec = excluded.spec, gateway_id = excluded.gateway_id",
                    [(int(o, 16), psycopg.types.json.Jsonb(spec), self.gateway_id)
                     for o, spec in local.items()])
            self._quotas_shared = local
        anywhere = {r[0] for r in self.conn.execute("SELECT unit_oid FROM quota").fetchall()}
        watch = sorted(anywhere | {int(o, 16) for o in local})
        # a unit with a new quota elsewhere: our totals of it are owed now
        changed = changed or watch != self.watch
        self.watch = watch
        return changed

    def _publish_totals(self) -> None:
        """This gateway's current-period totals of the watched units, from its
        DuckDB rollups (committed drains, shipped or not), for the others."""
        if not self.watch:
            return
        zone = self.core.snapshot.config.processor.zone
        starts = ship.period_bounds(self.core.clock(), zone)
        when = " OR ".join(f"(kind = '{k}' AND period_start = make_timestamp(${k}))"
                           for k in PERIODS)
        with self.core.lock:
            rows = self.core.storage.con.execute(
                "SELECT kind::VARCHAR, epoch_us(period_start), unit_oid, policy_oid, dir, bytes "
                f"FROM rollup WHERE list_contains($units, unit_oid) AND ({when})",
                {"units": self.watch, **{k: to_us(v) for k, v in starts.items()}}).fetchall()
        ship.put_totals(self.conn, self.gateway_id, [
            (k, dt.datetime.fromtimestamp(us / 1e6, dt.timezone.utc), int(u), int(p), int(d),
             int(b)) for k, us, u, p, d, b in rows])

    def _refresh_elsewhere(self) -> None:
        if self._share_quotas():
            self._publish_totals()
        if not self.watch:
            self.elsewhere = {}
            return
        zone = self.core.snapshot.config.processor.zone
        starts = ship.period_bounds(self.core.clock(), zone)
        self.elsewhere = ship.totals(self.conn, starts, self.watch, self.gateway_id)
        self.elsewhere_starts = starts

    def _refresh_ledger(self) -> None:
        """The other gateways' ledger sums; billing decides again if they moved."""
        got = balances.elsewhere(self.conn, self.gateway_id)
        paid = balances.payments_elsewhere(self.conn, self.gateway_id)
        if got == self.ledger_elsewhere and paid == self.payments_elsewhere:
            return
        with self.core.lock:
            self.ledger_elsewhere, moved = got, paid != self.payments_elsewhere
            self.payments_elsewhere = paid
            billing = self.core.services.get("billing")
            if billing is not None:
                billing.balances_changed()
            invoicing_ = self.core.services.get("invoicing")
            if moved and invoicing_ is not None:   # an invoice paid elsewhere
                invoicing_.shared_changed()

    def _publish_accounts(self) -> None:
        """The billing accounts made or changed here since the last publish."""
        billing = self.core.services.get("billing")
        if billing is None:
            return
        with self.core.lock:
            have = dict(billing.accounts)
        shared = self._accounts_shared or {}
        changed = [a for a in have.values() if shared.get(a.oid) != a.changed]
        if changed:
            accounts.publish(self.conn, self.gateway_id, changed)
        self._accounts_shared = {oid: a.changed for oid, a in have.items()}

    def _resync_accounts(self) -> None:
        """The accounts changed later elsewhere, into DuckDB; billing decides again."""
        billing = self.core.services.get("billing")
        if billing is None:
            return
        with self.core.lock:
            specs = accounts.newer(self.conn, billing.accounts)
            if not specs:
                return
            refused = accounts.take(self.core.storage.con, specs)
            if refused:
                self._throttle.warning("account", "central: accounts %s not taken: another "
                                       "account here has the name", ", ".join(refused))
            billing.accounts_changed()
            # only the ones taken: one made here meanwhile is still to publish
            taken = {s["oid"] for s in specs}
            self._accounts_shared = {**(self._accounts_shared or {}), **{
                oid: a.changed for oid, a in billing.accounts.items() if oid in taken}}

    def _publish_logins(self) -> None:
        """The login records changed here (or taken) since the last publish."""
        login = self.core.services.get("login")
        if login is None:
            return
        shared = self._logins_shared or {}
        with self.core.lock:
            changed = {o: w for o, w in self.core.storage.login_stamps().items()
                       if shared.get(o) != w}
            recs = {o: (login.table.get(o).to_dict(), w) for o, w in changed.items()
                    if login.table.get(o) is not None}
        if recs:
            logins.publish(self.conn, self.gateway_id, recs)
        self._logins_shared = {**shared, **changed}

    def _resync_logins(self) -> None:
        """The login records changed later elsewhere, taken by the login service."""
        login = self.core.services.get("login")
        if login is None:
            return
        with self.core.lock:
            have = self.core.storage.login_stamps()
        got, self._login_version = logins.newer(self.conn, have, self._login_version)
        if not got:
            return
        with self.core.lock:   # what changed here meanwhile stays, if later
            have = self.core.storage.login_stamps()
            taken = login.take({o: v for o, v in got.items() if o not in have or
                                have[o] < v[1]})
        self._logins_shared = {**(self._logins_shared or {}), **{o: got[o][1] for o in taken}}
        try:
            login.settle()      # set-user-ip: the sessions the records taken open or end
        except AcctError as e:
            log.warning("central: a login taken from another gateway: %s", e)

    def _publish_terms(self) -> None:
        """The postpaid terms set here since the last publish."""
        from acctd.services.billing import invoices
        if "invoicing" not in self.core.services:
            return
        shared = self._terms_shared or {}
        with self.core.lock:
            changed = {o: v for o, v in invoices.terms_changes(self.core.storage.con).items()
                       if shared.get(o) != v[1]}
        if changed:
            invoicing.publish_terms(self.conn, self.gateway_id, changed)
        self._terms_shared = {**shared, **{o: v[1] for o, v in changed.items()}}

    def _resync_terms(self) -> None:
        """The terms changed later elsewhere, into DuckDB; invoicing and
        billing decide again."""
        from acctd.services.billing import invoices
        inv = self.core.services.get("invoicing")
        if inv is None:
            return
        with self.core.lock:
            have = {o: v[1] for o, v in invoices.terms_changes(self.core.storage.con).items()}
        got = invoicing.newer_terms(self.conn, have)
        if not got:
            return
        with self.core.lock:
            con = self.core.storage.con
            have = {o: v[1] for o, v in invoices.terms_changes(con).items()}
            taken = {o: v for o, v in got.items() if o not in have or have[o] < v[1]}
            for oid, (terms, when) in taken.items():
                invoices.set_terms(con, oid, terms, when)
            if taken:
                inv.shared_changed()
        self._terms_shared = {**(self._terms_shared or {}),
                              **{o: v[1] for o, v in taken.items()}}

    def changed_here(self) -> None:
        """A login record or an account's terms changed on this gateway (the
        login and invoicing services say so): the shipper publishes them
        now, and reads them only then."""
        self._changed_here = True
        self._wake.set()

    def invoices_wanted(self) -> None:
        """Invoicing found last month's invoices lacking here: the shipper
        issues them through the server (invoicing.py), when it can."""
        self._invoices_due = True
        self._wake.set()

    def _issue_invoices(self) -> None:
        from acctd.services.billing.invoices import bounds
        self._invoices_due = False
        inv = self.core.services.get("invoicing")
        if inv is None:
            return
        with self.core.lock:
            now = self.core.clock()
            month, oids = inv.to_issue(now)
            end = bounds(month, inv.zone)[1]
        if not oids:
            return
        rows = invoicing.ledger_elsewhere(self.conn, self.gateway_id, oids, end)
        with self.core.lock:
            docs = inv.compose_with(month, oids, now, rows)
        n = invoicing.claim(self.conn, self.gateway_id, month, end, docs)
        log.info("central: %d invoices for %s issued here, %d by other gateways", n,
                 f"{month:%Y-%m}", len(docs) - n)
        self._keep_invoices()

    def _keep_invoices(self) -> None:
        """The server's invoices this gateway lacks, into DuckDB."""
        from acctd.services.billing import invoices
        inv = self.core.services.get("invoicing")
        if inv is None:
            return
        with self.core.lock:
            have = {(int(a), m) for a, m in self.core.storage.con.execute(
                "SELECT account_oid, month FROM invoice").fetchall()}
        got = invoicing.issued(self.conn, have)
        if got:
            with self.core.lock:
                invoices.keep(self.core.storage.con, got)
                inv.shared_changed()

    def _shared_units(self) -> dict[str, str]:
        """name -> oid of the run-time units published from here (kept in
        DuckDB: a unit deleted while the link was down is known at connect).
        Under the lock."""
        if self._units_shared is None:
            raw = self.core.storage.meta(SHARED_UNITS)
            self._units_shared = json.loads(raw) if raw else {}
        return self._units_shared

    def _keep_shared_units(self, shared: dict[str, str]) -> None:
        if shared != self._shared_units():
            self.core.storage.set_meta(SHARED_UNITS, json.dumps(shared, sort_keys=True))
        self._units_shared = shared

    def _publish_runtime_units(self) -> None:
        """The run-time units made and deleted here since the last publish
        (at connect all of them again)."""
        from acctd.services.runtime_units import deleted, to_dict
        if "units" not in self.core.services:
            return
        with self.core.lock:
            mine = {u.name: to_dict(u) for u in self.core.services["units"].runtime}
            shared = dict(self._shared_units())
            by_command = {(d["name"], d["oid"]) for d in deleted(self.core.storage)}
        new = [s for n, s in mine.items() if shared.get(n) != s["oid"]]
        # deleted by `unit delete`: everywhere; one a reload dropped (it no
        # longer fits this gateway's config) stays on the others
        gone = [{"name": n, "oid": o} for n, o in shared.items()
                if n not in mine and (n, o) in by_command]
        if new or gone or (self._units_again and mine):
            units.publish(self.conn, self.gateway_id, new,
                          list(mine.values()) if self._units_again else [], gone)
        self._units_again = False
        with self.core.lock:
            self._keep_shared_units({n: s["oid"] for n, s in mine.items()})

    def _resync_units(self) -> bool:
        """The run-time units deleted elsewhere, deleted here; those made
        elsewhere that this gateway lacks, made here (all at once; one by one
        if one of them does not fit). Whether any was made."""
        from acctd.errors import AcctError
        from acctd.services.runtime_units import from_dict
        made = self.core.services.get("units")
        if made is None:
            return False
        with self.core.lock:
            gone = units.deleted(self.conn)
            shared = dict(self._shared_units())
            for u in [u for u in made.runtime if gone.get(u.name) == u.oid]:
                made.delete(u.name)
                shared.pop(u.name, None)
                log.info("central: unit %s (%s) deleted on another gateway, deleted here",
                         u.name, u.oid)
            # one this gateway had and deleted since (its deletion not yet
            # published: the link was down) is not made again
            specs = [s for s in units.missing(self.conn, self.core.snapshot.base.index)
                     if shared.get(s["name"]) != s["oid"]]
            if specs:
                try:
                    made.add_units([from_dict(s) for s in specs])
                except AcctError:
                    for s in specs:
                        try:
                            made.add_units([from_dict(s)])
                        except AcctError as e:
                            self._throttle.warning(f"unit {s['name']}", "central: unit %s "
                                                   "made elsewhere not made here: %s",
                                                   s["name"], e)
                # made from the server: not this gateway's to publish as new
                # (were one deleted meanwhile, that would make it again)
                have = {u.name: u.oid for u in made.runtime}
                shared.update({s["name"]: s["oid"] for s in specs
                               if have.get(s["name"]) == s["oid"]})
            self._keep_shared_units(shared)
            return bool(specs)

    def _publish_units(self) -> None:
        with self.core.lock:
            snap = self.core.snapshot
            units = [(int(u.oid, 16), u.name) for u in snap.units]
            policies = [(int(p.oid, 16), p.name) for p in snap.policies]
        with self.conn.transaction():
            self.conn.cursor().executemany(
                "INSERT INTO unit VALUES (%s, %s) ON CONFLICT (unit_oid) DO UPDATE "
                "SET name = excluded.name", units)
            self.conn.cursor().executemany(
                "INSERT INTO policy VALUES (%s, %s) ON CONFLICT (policy_oid) DO UPDATE "
                "SET name = excluded.name", policies)
