"""DuckDB storage, written only by the daemon: raw drain rows, period rollups,
and the kernel-counter checkpoint they correspond to, all in one transaction.

Why one transaction: the kernel counters are monotonic, and the daemon's
deltas are taken against the last committed counter values. If rollups and
the checkpoint commit together, a SIGKILL at any instant leaves either both
(the next drain's deltas start from them) or neither (the previous
checkpoint, whose rollups are exactly what the table holds): no byte is lost
or counted twice.

The tables and their numbered migrations: acctd/store/migrations.py. Unit
oids are integers in SQL and hex text ("02A1F3") in Python; this module
converts between them. policy_oid 0 is all of a unit's traffic; unit_oid 0
is unattributed traffic; policy_oids rollup.DROPPED count what the datapath
dropped, per cause (see acctd.store.rollup).

The file holds password hashes (logins): the daemon keeps it, its WAL and
a state directory it creates owner-only (0600, 0700) whatever the umask.
DuckDB's own checkpoint waits for a 16 MiB WAL, so a quiet daemon kept its
data in the WAL alone for hours; a commit folds the WAL into the file once
it holds WAL_LIMIT bytes or CHECKPOINT_EVERY seconds of commits.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from zoneinfo import ZoneInfo

import duckdb
import numpy as np

from acctd.errors import AcctError
from acctd.kernel import abi
from acctd.store import migrations
from acctd.store.checkpoint import Checkpoint, CheckpointError
from acctd.store.rollup import (BY, PERIODS, REST, TOP_KEEP, TOP_PERIODS, Rollup, from_us,
                                 label, period_end, period_start, to_us)

log = logging.getLogger("acctd.storage")

# bytes of WAL a commit folds into the file. A fold rewrites every row group
# the commits since the last one touched (the rollup rows, the checkpoint's
# counters), so a daemon of 1M flows (~46 MB of WAL a drain) folding after
# every drain paid it every drain: at this size it folds every third, 0.13 s
# saved per drain, and a start replays at most this much (153 MB: 1 s).
WAL_LIMIT = 128 << 20
CHECKPOINT_EVERY = 300.0  # seconds of commits that may live in the WAL alone
_KINDS = "['hour', 'day', 'week', 'month']"
_ROLLUP_KEY = ("kind", "period_start", "unit_oid", "policy_oid", "dir")
_BY, _TOP_KINDS = str(list(BY)), str(list(TOP_PERIODS))
_ADD = ", ".join(f"{c} = {c} + excluded.{c}"
                 for c in ("packets_in", "packets_out", "bytes_in", "bytes_out"))

# Who held which address when (acctd.model.sessions); open sessions have no stop.
_SESSION_COLS = ("id", "unit_oid", "addr", "source", "start", "mac", "nas", "port", "stop",
                 "stop_cause", "packets_in", "packets_out", "bytes_in", "bytes_out",
                 "nas_bytes_in", "nas_bytes_out")

# The maps a daemon checkpoints, with the dtypes load_checkpoint() expects.
CHECKPOINT_TYPES = {"acct_addrs": (abi.ADDR_KEY, abi.ADDR_VAL),
                    "acct_flows": (abi.FLOW_KEY, abi.FLOW_VAL)}


class StorageError(AcctError):
    """The database cannot be used as it is (wrong version, ABI, locked, damaged)."""


def damage(path: str, e: Exception) -> StorageError | None:
    """A DuckDB error that means a damaged file or WAL, as one line: which
    file, what to do, and that the kernel loses nothing meanwhile; else None."""
    text = str(e)
    reason = re.sub(r'^[A-Za-z ]*Error: |Failure while replaying WAL file "[^"]*": |'
                    r'The file "[^"]*" exists, but it is ', "", text).strip()
    if "replaying WAL" in text and not reason.startswith("Corrupt database file"):
        # without it the file's older checkpoint stands: the next drain accounts
        # the traffic since then (into one interval); other changes are lost
        where, what = f"{path}.wal", ("the write-ahead log is damaged (%s): move it aside "
                                      "(the next drain accounts the traffic since the last "
                                      "checkpoint; other changes since then are lost)")
    elif re.search(r"[Cc]orrupt|checksum|not a valid DuckDB database", text):
        # its WAL goes too: replayed into a new database it would not fit
        where, what = path, (f"the database is damaged (%s): move it aside, with "
                             f"{os.path.basename(path)}.wal if there is one,")
    else:
        return None
    return StorageError(f"{where}: {what % reason} or restore a copy, then start acctd again; "
                        "the kernel keeps counting meanwhile (the pinned maps persist)")


def open_error(path: str, e: Exception) -> StorageError:
    return damage(path, e) or StorageError(f"cannot open {path}: {e}")


def _private_dir(path: str) -> None:
    """The state directory, made owner-only if we make it (one that exists
    is the operator's choice)."""
    if path and not os.path.isdir(path):
        os.makedirs(path, 0o700, exist_ok=True)
        os.chmod(path, 0o700)  # makedirs' mode goes through the umask


def _private_file(path: str, create: bool = False) -> None:
    """Owner-only; with `create`, an empty one where none is (DuckDB appends
    to an empty WAL, and would otherwise create it through the umask)."""
    if create:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            return
        except FileExistsError:
            pass
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o600)


def _oid(oid: str | int) -> int:
    """A unit oid as SQL keeps it."""
    return int(oid, 16) if isinstance(oid, str) else int(oid)


def _hex(oid: int) -> str:
    """A unit oid as Python keeps it (the model's text form)."""
    return f"{int(oid):06X}"


class Storage:
    """The daemon's database. `zone` decides local periods for the queries.

    DuckDB allows one writing process; a second open fails with a
    StorageError naming the lock, which is what acctctl reports while the
    daemon runs.
    """

    def __init__(self, path: str | os.PathLike, zone: ZoneInfo | str = "UTC",
                 raw_retention: int = 30 * 86400, read_only: bool = False,
                 wal_limit: int = WAL_LIMIT, checkpoint_every: float = CHECKPOINT_EVERY):
        self.path = os.fspath(path)
        self.zone = ZoneInfo(zone) if isinstance(zone, str) else zone
        self.raw_retention = raw_retention
        # a file we write: kept owner-only, its WAL folded by our checkpoints
        self.wal = None if read_only or self.path.startswith(":memory:") else f"{self.path}.wal"
        self.wal_limit, self.checkpoint_every = wal_limit, checkpoint_every
        self._folded, self._fold_failed = time.monotonic(), False
        self._checkpoint = Checkpoint()
        try:
            if self.wal:
                _private_dir(os.path.dirname(os.path.abspath(self.path)))
            self.con = duckdb.connect(self.path, read_only=read_only)
            try:
                if self.wal:
                    _private_file(self.path)
                    _private_file(self.wal, create=True)
                    # fold_wal checkpoints first; DuckDB's own one only as a backstop
                    self.con.execute("SET checkpoint_threshold = '1GiB'")
                self._upgrade(read_only)
            except BaseException:
                self.con.close()
                raise
        except duckdb.Error as e:
            raise open_error(self.path, e) from None
        except OSError as e:
            raise StorageError(f"cannot open {self.path}: {e.strerror}") from None

    def _upgrade(self, read_only: bool) -> None:
        version = migrations.version_of(self.con)
        if version != migrations.VERSION:
            if read_only:
                what = "not an acctd database" if version == 0 else \
                    f"schema version {version}, this acctd reads {migrations.VERSION}: start " \
                    "acctd once (it upgrades the database) before reading it read-only"
                raise StorageError(f"{self.path}: {what}")
            if version > migrations.VERSION:
                raise StorageError(f"{self.path}: schema version {version} is newer than this "
                                   f"acctd ({migrations.VERSION}): downgrading is not supported")
            migrations.upgrade(self.con, abi.ABI_VERSION)

    def close(self) -> None:
        self.con.close()

    @contextlib.contextmanager
    def reported(self):
        """DuckDB reads a block when a query first needs it, so damage can
        show after the open: inside this, as the open reports it."""
        try:
            yield self
        except duckdb.Error as e:
            err = damage(self.path, e)
            if err is None:
                raise
            raise err from None

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def meta(self, key: str) -> str | None:
        # fetchall: this duckdb refuses new work while a result is unfinished
        rows = self.con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchall()
        return rows[0][0] if rows else None

    def forget_checkpoint(self) -> None:
        """The pinned maps are of another ABI version than the checkpoint (an
        upgrade moved them to a new pin directory, which starts at zero): the
        checkpoint no longer describes them, so it goes, in one transaction
        with the version it now stands for."""
        self.con.execute("BEGIN")
        self.con.execute("DELETE FROM checkpoint_keys")
        self.con.execute("DELETE FROM checkpoint_vals")
        self.con.execute("UPDATE meta SET value = ? WHERE key = 'abi_version'",
                         [str(abi.ABI_VERSION)])
        self.con.execute("COMMIT")
        self._checkpoint = Checkpoint()

    def set_meta(self, key: str, value: str) -> None:
        self.con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])

    @property
    def last_drain(self) -> dt.datetime | None:
        v = self.meta("last_drain")
        return None if v is None else from_us(int(v))

    # --- the daemon's write path ------------------------------------------------

    def _sql(self, sql: str, params=None):
        """Every statement of a commit goes through here (tests crash inside it)."""
        return self.con.execute(sql, params)

    def commit(self, rollup: Rollup,
               checkpoint: Mapping[str, tuple[np.ndarray, np.ndarray]],
               in_transaction: Callable[[Storage], None] | None = None,
               matched: Mapping[str, tuple[np.ndarray | None, np.ndarray]] | None = None) -> None:
        """Store one drain atomically: raw rows, rollup upserts, retention, checkpoint.

        checkpoint: map name -> (keys, values), the full counter state after
        this drain: what the next drain's deltas subtract. Maps not named keep
        no checkpoint after this commit. rollup.ts becomes `last_drain`; a
        wall clock stepped back only moves rows between periods.
        in_transaction(self) writes what must commit with the counts (the
        services' in_drain: session counts), inside the same transaction.
        matched: map name -> (Delta.base, Delta.prev) of the drain's deltas,
        so the checkpoint finds each key's slot without a join of its own.

        On any error nothing is written and the exception propagates; the
        daemon's in-memory baseline is then ahead of the file, so it must
        reseed from load_checkpoint() before the next drain.
        """
        ts_us = to_us(rollup.ts)
        self.con.register("acct_raw_batch", rollup.raw)
        self.con.register("acct_rollup_batch", rollup.per_period)
        if rollup.by_period is not None:
            self.con.register("acct_by_batch", rollup.by_period)
        try:
            with self.reported():  # a damaged block: one line, not DuckDB's
                self._sql("BEGIN")
                try:
                    adopt = self._write(ts_us, len(rollup.per_period["packets"]), checkpoint,
                                        matched)
                    if rollup.by_period is not None:
                        self._write_tops(rollup.by_period)
                    if in_transaction is not None:
                        in_transaction(self)
                    self._sql("COMMIT")
                    self._checkpoint.images = adopt
                except BaseException:
                    try:
                        self.con.execute("ROLLBACK")
                    except duckdb.Error:
                        pass  # the original error says more; nothing was committed either way
                    raise
        finally:
            self.con.unregister("acct_raw_batch")
            self.con.unregister("acct_rollup_batch")
            if rollup.by_period is not None:
                self.con.unregister("acct_by_batch")
        self.fold_wal()

    def fold_wal(self) -> bool:
        """CHECKPOINT when the WAL holds wal_limit bytes or checkpoint_every
        seconds of commits, so the data is in the database file itself;
        True if it did. A failed one is retried at the next commit."""
        if self.wal is None:
            return False
        size = os.path.getsize(self.wal) if os.path.exists(self.wal) else 0
        due = size >= self.wal_limit or \
            (size > 0 and time.monotonic() - self._folded >= self.checkpoint_every)
        if due:
            try:
                self.con.execute("CHECKPOINT")
                self._folded = time.monotonic()
                self._fold_failed = False
            except duckdb.Error as e:
                if not self._fold_failed:  # once, not at every commit
                    log.warning("checkpoint of %s failed, retried at every commit: %s",
                                self.path, e)
                self._fold_failed, due = True, False
        _private_file(self.wal, create=True)
        return due

    def charge_sessions(self, charges: Mapping[int, tuple[int, int, int, int]]) -> None:
        """Add a drain's counts to open sessions: session id -> (packets in,
        packets out, bytes in, bytes out). Inside the drain's transaction."""
        for sid, (pi, po, bi, bo) in charges.items():
            self._sql("UPDATE sessions SET packets_in = packets_in + ?, packets_out = "
                      "packets_out + ?, bytes_in = bytes_in + ?, bytes_out = bytes_out + ? "
                      "WHERE id = ?", [pi, po, bi, bo, sid])

    def _write(self, ts_us: int, rows: int, checkpoint, matched) -> dict:
        self._sql("INSERT INTO raw SELECT make_timestamp($ts), unit_oid, policy_oid, dir, "
                  "packets, bytes FROM acct_raw_batch", {"ts": ts_us})
        # An upsert in two joins: ON CONFLICT probes the key index once per
        # row, which is half the drain at a million flows; the batch's keys
        # are unique (rollup() sums them), so update-then-insert is the same.
        batch = (f"(SELECT {_KINDS}[kind + 1]::period AS kind, make_timestamp(start) AS "
                 "period_start, unit_oid, policy_oid, dir, packets, bytes FROM acct_rollup_batch) b")
        same = " AND ".join(f"r.{c} = b.{c}" for c in _ROLLUP_KEY)
        updated = self._sql(f"UPDATE rollup r SET packets = r.packets + b.packets, bytes = "
                            f"r.bytes + b.bytes FROM {batch} WHERE {same}").fetchall()[0][0]
        # in a period's later drains every row exists: the join is skipped
        self._sql(f"INSERT INTO rollup SELECT b.* FROM {batch} ANTI JOIN rollup r ON {same} "
                  "WHERE $more", {"more": updated < rows})
        if self.raw_retention is not None:
            self._sql("DELETE FROM raw WHERE ts < make_timestamp($cut)",
                      {"cut": ts_us - self.raw_retention * 1_000_000})
        adopt = self._checkpoint.write(self.con, self._sql, checkpoint, matched)
        self._sql("INSERT OR REPLACE INTO meta VALUES ('last_drain', ?)", [str(ts_us)])
        return adopt

    def _write_tops(self, batch: Mapping[str, np.ndarray]) -> None:
        """The period tops: a drain upserts its day's rows only; the first
        drain of a new day folds the day before into its month and year,
        then trims each period that is over to its TOP_KEEP biggest keys of
        each kind, the rest summed into the REST row (exact for any top N up
        to TOP_KEEP, and for the period's total). So a drain writes one row
        per key, not three; the open month and year are their rows plus
        the open day's (report_top_by). meta tops_open: the open periods."""
        now = {k: int(batch["start"][batch["kind"] == i][0])
               for i, k in enumerate(TOP_PERIODS) if (batch["kind"] == i).any()}
        if not now:
            return
        opened = json.loads(self.meta("tops_open") or "{}")
        day = opened.get("day")
        # a clock stepped back into a folded day: this drain goes to every kind itself
        kinds = "true" if day is not None and now["day"] < day else "kind = 0"
        self._sql(f"INSERT INTO rollup_by SELECT {_BY}[keyed_by + 1]::top_by, "
                  f"{_TOP_KINDS}[kind + 1]::top_period, make_timestamp(start), key_hi, key_lo, "
                  f"packets_in, packets_out, bytes_in, bytes_out FROM acct_by_batch "
                  f"WHERE {kinds} ON CONFLICT DO UPDATE SET {_ADD}")
        if day is not None and now["day"] <= day:
            return
        if day is not None:
            closed = from_us(day)
            for kind in ("month", "year"):
                self._sql(f"INSERT INTO rollup_by SELECT keyed_by, '{kind}', "
                          "make_timestamp($to), key_hi, key_lo, packets_in, packets_out, "
                          "bytes_in, bytes_out FROM rollup_by WHERE kind = 'day' "
                          f"AND period_start = make_timestamp($day) ON CONFLICT DO UPDATE SET {_ADD}",
                          {"to": to_us(period_start(kind, closed, self.zone)), "day": day})
        for kind, start in now.items():
            if start > opened.get(kind, start - 1):
                self._trim_tops(kind, opened.get(kind, 0), start)
        self._sql("INSERT OR REPLACE INTO meta VALUES ('tops_open', ?)",
                  [json.dumps(now, sort_keys=True)])

    def _trim_tops(self, kind: str, since_us: int, open_us: int) -> None:
        """Trim the `kind` periods from since_us (the one that was open) to open_us."""
        ranked = ("SELECT keyed_by, kind, period_start, key_hi, key_lo, packets_in, packets_out, "
                  "bytes_in, bytes_out, row_number() OVER (PARTITION BY keyed_by, period_start "
                  "ORDER BY bytes_in::HUGEINT + bytes_out DESC, key_hi, key_lo) AS r "
                  "FROM rollup_by WHERE kind = $k AND period_start >= make_timestamp($since) "
                  "AND period_start < make_timestamp($open) "
                  "AND NOT (key_hi = $rest AND key_lo = $rest)")
        bind = {"k": kind, "since": since_us, "open": open_us, "rest": REST, "keep": TOP_KEEP}
        self._sql(f"INSERT INTO rollup_by SELECT keyed_by, kind, period_start, $rest, $rest, "
                  f"sum(packets_in), sum(packets_out), sum(bytes_in), sum(bytes_out) "
                  f"FROM ({ranked}) WHERE r > $keep GROUP BY keyed_by, kind, period_start "
                  f"ON CONFLICT DO UPDATE SET {_ADD}", bind)
        self._sql(f"DELETE FROM rollup_by USING ({ranked}) x WHERE x.r > $keep "
                  "AND rollup_by.keyed_by = x.keyed_by AND rollup_by.kind = x.kind "
                  "AND rollup_by.period_start = x.period_start AND rollup_by.key_hi = x.key_hi "
                  "AND rollup_by.key_lo = x.key_lo", bind)

    def load_checkpoint(self, types: Mapping[str, tuple[np.dtype, np.dtype]] = CHECKPOINT_TYPES
                        ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The committed counter state: map name -> (keys, values), for Deltas.seed().

        Values come back in their full dtype with the counter fields
        (drain.counter_fields) filled and every other field zero. Only maps
        named in `types` are returned, and their stored layout must match: a
        checkpoint from another ABI would give wrong deltas, so it is refused
        rather than guessed at. An empty dict: nothing committed yet.
        """
        try:
            return self._checkpoint.load(self.con, types)
        except CheckpointError as e:
            raise StorageError(f"{self.path}: {e}") from None

    # --- sessions ---------------------------------------------------------------------

    def start_session(self, s) -> int:
        """Record a new open session (acctd.model.sessions.Session); returns its id."""
        sid = self.con.execute("SELECT coalesce(max(id), 0) + 1 FROM sessions").fetchall()[0][0]
        self.con.execute("INSERT INTO sessions (id, unit_oid, addr, source, start, mac, nas, port, "
                         "stop, stop_cause, packets_in, packets_out, bytes_in, bytes_out) VALUES "
                         "(?, ?, ?, ?, ?, ?, ?, ?, NULL, '', 0, 0, 0, 0)",
                         [sid, _oid(s.unit_oid), s.addr, s.source, s.start.replace(tzinfo=None),
                          s.mac, s.nas, s.port])
        return int(sid)

    def set_session_nas_bytes(self, sid: int, bytes_in: int, bytes_out: int) -> None:
        self.con.execute("UPDATE sessions SET nas_bytes_in = ?, nas_bytes_out = ? WHERE id = ?",
                         [bytes_in, bytes_out, sid])

    def stop_session(self, sid: int, when: dt.datetime, cause: str) -> None:
        self.con.execute("UPDATE sessions SET stop = ?, stop_cause = ? WHERE id = ? AND stop IS NULL",
                         [when.replace(tzinfo=None), cause, sid])

    def sessions(self, open_only: bool = False, unit_oid: str | None = None,
                 limit: int | None = None) -> list:
        """Sessions, newest first, as acctd.model.sessions.Session (times in UTC)."""
        from acctd.model.sessions import Session
        q = f"SELECT {', '.join(_SESSION_COLS)} FROM sessions WHERE true"
        args: list = []
        if open_only:
            q += " AND stop IS NULL"
        if unit_oid is not None:
            q += " AND unit_oid = ?"
            args.append(_oid(unit_oid))
        q += " ORDER BY id DESC" + (f" LIMIT {int(limit)}" if limit else "")
        out = []
        for row in self.con.execute(q, args).fetchall():
            d = dict(zip(_SESSION_COLS, row))
            d["unit_oid"] = _hex(d["unit_oid"])
            for k in ("start", "stop"):
                if d[k] is not None:
                    d[k] = d[k].replace(tzinfo=dt.timezone.utc)
            out.append(Session(**d))
        return out

    # --- login records (acctd.services.login) ------------------------------------------------------

    def login_records(self) -> dict[str, dict]:
        rows = self.con.execute("SELECT unit_oid, record FROM login").fetchall()
        return {_hex(oid): json.loads(rec) for oid, rec in rows}

    def set_login_record(self, oid: str, record: dict | None,
                         changed: dt.datetime | None = None) -> None:
        """Store (or with None remove) one unit's login record; changed: when
        an act to share changed it (None: it keeps the time it had)."""
        if record is None:
            self.con.execute("DELETE FROM login WHERE unit_oid = ?", [_oid(oid)])
        else:
            self.con.execute(
                "INSERT INTO login VALUES (?, ?, ?) ON CONFLICT (unit_oid) DO UPDATE SET "
                "record = excluded.record, changed = coalesce(excluded.changed, login.changed)",
                [_oid(oid), json.dumps(record, sort_keys=True),
                 None if changed is None else
                 changed.astimezone(dt.timezone.utc).replace(tzinfo=None)])

    def login_stamps(self) -> dict[str, dt.datetime]:
        """oid -> when (UTC) its login record last changed by an act to share."""
        return {_hex(oid): ch.replace(tzinfo=dt.timezone.utc) for oid, ch in self.con.execute(
            "SELECT unit_oid, changed FROM login WHERE changed IS NOT NULL").fetchall()}

    # --- MACs recorded by `mac fixate` ----------------------------------------------

    def unit_macs(self) -> dict[str, str]:
        return {_hex(o): m for o, m in
                self.con.execute("SELECT unit_oid, mac FROM unit_mac").fetchall()}

    def set_unit_mac(self, oid: str, mac: str) -> None:
        self.con.execute("INSERT OR REPLACE INTO unit_mac VALUES (?, ?)", [_oid(oid), mac])

    # --- system policies ---------------------------------------------------------------

    def sys_policies(self) -> dict[str, int]:
        """System policies set at run time (acctctl unit NAME sys-...), by unit oid."""
        return {_hex(o): int(b) for o, b in
                self.con.execute("SELECT unit_oid, bits FROM sys_policy").fetchall()}

    def set_sys_policy(self, unit_oid: str, bits: int) -> None:
        self.con.execute("INSERT INTO sys_policy VALUES ($o, $b) ON CONFLICT (unit_oid) "
                         "DO UPDATE SET bits = excluded.bits", {"o": _oid(unit_oid), "b": bits})

    # --- quotas (kept in the database, not the config) ------------------------------

    def quotas(self) -> dict[str, dict]:
        """Quota records by unit oid (quota.QuotaSpec.to_dict form)."""
        return {_hex(o): json.loads(s) for o, s in
                self.con.execute("SELECT unit_oid, spec FROM quota").fetchall()}

    def set_quota(self, unit_oid: str, spec: dict | None) -> None:
        if spec is None:
            self.con.execute("DELETE FROM quota WHERE unit_oid = $o", {"o": _oid(unit_oid)})
            return
        self.con.execute("INSERT INTO quota VALUES ($o, $s) ON CONFLICT (unit_oid) DO UPDATE "
                         "SET spec = excluded.spec", {"o": _oid(unit_oid), "s": json.dumps(spec)})

    def quota_state(self) -> dict | None:
        rows = self.con.execute("SELECT state FROM quota_state WHERE id = 1").fetchall()
        return json.loads(rows[0][0]) if rows else None

    def set_quota_state(self, state: dict) -> None:
        self.con.execute("INSERT INTO quota_state VALUES (1, $s) ON CONFLICT (id) DO UPDATE "
                         "SET state = excluded.state", {"s": json.dumps(state)})

    # --- reports ----------------------------------------------------------------------

    def _starts(self, now: dt.datetime) -> dict[str, int]:
        return {k: to_us(period_start(k, now, self.zone)) for k in PERIODS}

    def unit_totals(self, unit_oid: str | int, now: dt.datetime) -> list[dict]:
        """Per policy and dir: packets and bytes for the last drain ("flow") and the
        current hour, day, week and month (NeTAMS `show list full`).

        Rows are {"policy_oid", "dir", "flow", "hour", "day", "week", "month"},
        each period a (packets, bytes) pair, sorted by policy_oid then dir.
        """
        u = _oid(unit_oid)
        s = self._starts(now)
        rows = self.con.execute(
            "SELECT kind::VARCHAR, policy_oid, dir, packets, bytes FROM rollup "
            "WHERE unit_oid = $u AND ((kind = 'hour' AND period_start = make_timestamp($hour)) "
            "OR (kind = 'day' AND period_start = make_timestamp($day)) "
            "OR (kind = 'week' AND period_start = make_timestamp($week)) "
            "OR (kind = 'month' AND period_start = make_timestamp($month)))",
            {"u": u, **s}).fetchall()
        flow = self.con.execute(
            "SELECT 'flow', policy_oid, dir, packets, bytes FROM raw WHERE unit_oid = $u "
            "AND ts = (SELECT max(ts) FROM raw WHERE ts <= make_timestamp($now))",
            {"u": u, "now": to_us(now)}).fetchall()
        out: dict[tuple[int, int], dict] = {}
        for kind, pol, d, p, b in rows + flow:
            r = out.setdefault((pol, d), {"policy_oid": pol, "dir": d,
                                          **{k: (0, 0) for k in ("flow", *PERIODS)}})
            r[kind] = (int(p), int(b))
        return [out[k] for k in sorted(out)]

    def stat(self, unit_oid: str | int, period: str, now: dt.datetime) -> list[dict]:
        """Hourly rows of the week or month containing `now` (NeTAMS `show stat`).

        Rows are {"start" (UTC datetime), "label" (local time with offset),
        "policy_oid", "dir", "packets", "bytes"}, in time order.
        """
        if period not in ("week", "month"):
            raise ValueError(f"expected period 'week' or 'month', got {period!r}")
        lo = period_start(period, now, self.zone)
        hi = period_end(period, lo, self.zone)
        rows = self.con.execute(
            "SELECT epoch_us(period_start), policy_oid, dir, packets, bytes FROM rollup "
            "WHERE kind = 'hour' AND unit_oid = $u AND period_start >= make_timestamp($lo) "
            "AND period_start < make_timestamp($hi) ORDER BY 1, 2, 3",
            {"u": _oid(unit_oid), "lo": to_us(lo), "hi": to_us(hi)}).fetchall()
        out = []
        for us, pol, d, p, b in rows:
            start = from_us(us)
            out.append({"start": start, "label": label(start, self.zone), "policy_oid": pol,
                        "dir": d, "packets": int(p), "bytes": int(b)})
        return out

    def unit_period_bytes(self, kind: str, now: dt.datetime) -> dict[int, tuple[int, int]]:
        """All traffic (policy_oid 0) of every unit in the current `kind`
        period: {unit_oid: (bytes in, bytes out)} (for the top view)."""
        rows = self.con.execute(
            "SELECT unit_oid, dir, bytes FROM rollup WHERE kind = $k AND policy_oid = 0 "
            "AND period_start = make_timestamp($s)",
            {"k": kind, "s": to_us(period_start(kind, now, self.zone))}).fetchall()
        out: dict[int, list[int]] = {}
        for oid, d, b in rows:
            out.setdefault(int(oid), [0, 0])[int(d)] = int(b)
        return {k: (v[0], v[1]) for k, v in out.items()}

    def month_report(self, now: dt.datetime) -> dict[str, np.ndarray]:
        """Every unit's month so far: numpy columns unit_oid, policy_oid, dir,
        packets, bytes, sorted by unit, policy and dir (policy_oid 0: all traffic)."""
        return self.con.execute(
            "SELECT unit_oid, policy_oid, dir, packets, bytes FROM rollup "
            "WHERE kind = 'month' AND period_start = make_timestamp($m) ORDER BY 1, 2, 3",
            {"m": to_us(period_start("month", now, self.zone))}).fetchnumpy()
