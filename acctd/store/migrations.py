"""The database schema as numbered steps. A new database runs them all; an
older one runs those it has not had, each in its own transaction with the
version it reaches (meta.schema_version), so a crash leaves a database at
one version or the next, never between. Add a step; never edit one that
has shipped.

The schema they build (timestamps UTC, TIMESTAMP without zone; every unit
oid a UINTEGER, as the datapath's rows carry it):

  meta        key, value: schema_version, abi_version, last_drain, and the
              small state kept as JSON (run-time units, CoA rates)
  raw         ts, unit_oid, policy_oid, dir, packets, bytes     (NeTAMS RAW)
  rollup      kind, period_start, unit_oid, policy_oid, dir, packets, bytes:
              every drain's rows once per hour, day, week and month; primary
              key on all but the counters                      (NeTAMS SUMMARY)
  checkpoint_keys  map, slot, w0..w5: every checkpoint slot's key;
  checkpoint_vals  map, chunk, n, key_type, val_type, vals, alive: their
              counters, the kernel's the committed rows correspond to
              (acctd/store/checkpoint.py)
  sys_policy  unit_oid, bits: system policies set at run time
  quota       unit_oid, spec; quota_state id, state (JSON)
  sessions    who held which address when, with exact counts
  login       unit_oid, record (JSON): the login service's records; changed:
              when an act to share last changed it (central: the last wins)
  unit_mac    unit_oid, mac: MACs recorded by `mac fixate`
  account     the billing accounts (NeTAMS `account`), account_unit their units
  ledger      every fee, overdraft, payment and adjustment: the balance is its sum
  rating      per month, the rating state of every (account, subplan): bytes and money
              rated so far (acctd.services.billing.rating.SLOT rows, one blob)
  account_terms  per account: postpaid or prepaid, exempt from blocking, transit
              (charged its 95th percentile); changed (central: the last wins)
  invoice     a postpaid account's month: number, due date, amount due, lines
  monitor     per-flow rows of the monitored units with the remote peer
              (acctd/store/monitor.py)
  central_outbox  seq, ts, n, rows: each drain's rows for PostgreSQL, written
              in the drain's transaction, deleted once shipped
              (acctd/services/central/)
  rollup_by   keyed_by (addr, port, vlan), kind (day, month, year), period_start,
              key_hi, key_lo, packets and bytes in and out: the period tops,
              upserted in the drain's transaction (acctd.store.rollup.BY)
"""

from __future__ import annotations

from collections.abc import Callable

from acctd.store.rollup import PERIODS


def _v1(con) -> None:
    """The first schema: rows, their period sums, the checkpoint."""
    con.execute(f"""
        CREATE TYPE period AS ENUM {tuple(PERIODS)};
        CREATE TABLE raw (
            ts TIMESTAMP NOT NULL, unit_oid UINTEGER NOT NULL, policy_oid UINTEGER NOT NULL,
            dir UTINYINT NOT NULL, packets UBIGINT NOT NULL, bytes UBIGINT NOT NULL);
        CREATE TABLE summary (
            kind period NOT NULL, period_start TIMESTAMP NOT NULL, unit_oid UINTEGER NOT NULL,
            policy_oid UINTEGER NOT NULL, dir UTINYINT NOT NULL,
            packets UBIGINT NOT NULL, bytes UBIGINT NOT NULL,
            PRIMARY KEY (kind, period_start, unit_oid, policy_oid, dir));
        CREATE TABLE checkpoint (
            map VARCHAR NOT NULL, chunk INTEGER NOT NULL, n INTEGER NOT NULL,
            key_type VARCHAR NOT NULL, val_type VARCHAR NOT NULL,
            keys BLOB NOT NULL, vals BLOB NOT NULL, PRIMARY KEY (map, chunk));
    """)


def _v2(con) -> None:
    """The tables the services added while schema 1 stood (each was made on
    first use, so an old database may have any of them)."""
    con.execute("""
        CREATE TABLE IF NOT EXISTS syspolicy (unit_oid UINTEGER PRIMARY KEY,
                                              bits UINTEGER NOT NULL);
        CREATE TABLE IF NOT EXISTS quota (unit_oid VARCHAR PRIMARY KEY, spec VARCHAR NOT NULL);
        CREATE TABLE IF NOT EXISTS quota_state (id INTEGER PRIMARY KEY, state VARCHAR NOT NULL);
        CREATE TABLE IF NOT EXISTS sessions (
            id BIGINT PRIMARY KEY, unit_oid VARCHAR NOT NULL, addr VARCHAR NOT NULL,
            source VARCHAR NOT NULL, start TIMESTAMP NOT NULL, mac VARCHAR NOT NULL,
            nas VARCHAR NOT NULL, port VARCHAR NOT NULL, stop TIMESTAMP,
            stop_cause VARCHAR NOT NULL,
            packets_in UBIGINT NOT NULL, packets_out UBIGINT NOT NULL,
            bytes_in UBIGINT NOT NULL, bytes_out UBIGINT NOT NULL);
        ALTER TABLE sessions ADD COLUMN IF NOT EXISTS nas_bytes_in UBIGINT;
        ALTER TABLE sessions ADD COLUMN IF NOT EXISTS nas_bytes_out UBIGINT;
        CREATE TABLE IF NOT EXISTS login (unit_oid VARCHAR PRIMARY KEY, record VARCHAR NOT NULL);
        CREATE TABLE IF NOT EXISTS unit_mac (unit_oid VARCHAR PRIMARY KEY, mac VARCHAR NOT NULL);
    """)


_HEX = "CAST('0x' || unit_oid AS UINTEGER)"


def _v3(con) -> None:
    """One word and one type each: `summary` is `rollup` (the module that
    fills it), `syspolicy` is `sys_policy`, and every unit oid a UINTEGER
    (quota, login and unit_mac kept hex text, sessions too)."""
    con.execute("ALTER TABLE summary RENAME TO rollup")
    con.execute("ALTER TABLE syspolicy RENAME TO sys_policy")
    con.execute(f"ALTER TABLE sessions ALTER unit_oid TYPE UINTEGER USING {_HEX}")
    # a key column cannot change type in place: rebuild those tables
    for table, value in (("quota", "spec"), ("login", "record"), ("unit_mac", "mac")):
        con.execute(f"CREATE TABLE {table}_v3 (unit_oid UINTEGER PRIMARY KEY, "
                    f"{value} VARCHAR NOT NULL)")
        con.execute(f"INSERT INTO {table}_v3 SELECT {_HEX}, {value} FROM {table}")
        con.execute(f"DROP TABLE {table}")
        con.execute(f"ALTER TABLE {table}_v3 RENAME TO {table}")


# Money is DECIMAL with 9 places, more than any currency's minor units:
# the service quantizes to [billing] decimals before it writes.
MONEY = "DECIMAL(38, 9)"


def _v4(con) -> None:
    """Billing: accounts and their units, the append-only ledger, and the
    rating state (what of a period has been charged, so a drain re-run after
    a crash charges only the rest). The ledger and the rating state have no
    index: a drain writes 10,000 rows and a 0.5 MB state in milliseconds,
    where a key's index costs tens; seq is unique by construction (max + 1
    under the daemon's lock) and the state has one row a month."""
    con.execute(f"""
        CREATE TABLE account (
            oid UINTEGER PRIMARY KEY, name VARCHAR NOT NULL UNIQUE,
            description VARCHAR NOT NULL DEFAULT '', email VARCHAR NOT NULL DEFAULT '',
            password VARCHAR NOT NULL DEFAULT '',
            plan INTEGER, nextplan INTEGER, nextplan_from TIMESTAMP,
            status VARCHAR NOT NULL DEFAULT 'active',
            credit_limit {MONEY} NOT NULL DEFAULT 0,
            created TIMESTAMP NOT NULL, changed TIMESTAMP NOT NULL, blocked TIMESTAMP);
        CREATE TABLE account_unit (
            unit_oid UINTEGER PRIMARY KEY, account_oid UINTEGER NOT NULL);
        CREATE TABLE ledger (
            seq BIGINT NOT NULL, ts TIMESTAMP NOT NULL, account_oid UINTEGER NOT NULL,
            kind VARCHAR NOT NULL, plan INTEGER, subplan INTEGER,
            period_start TIMESTAMP, period_end TIMESTAMP,
            amount {MONEY} NOT NULL,
            bytes_in UBIGINT NOT NULL DEFAULT 0, bytes_out UBIGINT NOT NULL DEFAULT 0,
            cause VARCHAR NOT NULL DEFAULT '', reference VARCHAR);
        CREATE TABLE rating (month TIMESTAMP NOT NULL, slots BLOB NOT NULL);
    """)




def _v5(con) -> None:
    """Postpaid billing: an account's terms (postpaid or prepaid, exempt
    from blocking, transit: billed by its 95th percentile) and the invoices issued, each
    fixed once issued (lines as JSON: they describe ledger rows, they are not rows)."""
    con.execute(f"""
        CREATE TABLE account_terms (
            account_oid UINTEGER PRIMARY KEY, postpaid BOOLEAN NOT NULL DEFAULT false,
            exempt BOOLEAN NOT NULL DEFAULT false, transit BOOLEAN NOT NULL DEFAULT false);
        CREATE TABLE invoice (
            account_oid UINTEGER NOT NULL, month DATE NOT NULL, number VARCHAR NOT NULL UNIQUE,
            issued TIMESTAMP NOT NULL, period_end TIMESTAMP NOT NULL, due TIMESTAMP NOT NULL,
            amount_due {MONEY} NOT NULL, doc VARCHAR NOT NULL,
            PRIMARY KEY (account_oid, month));
    """)




def _v6(con) -> None:
    """The monitor service's per-flow rows (`monitor to storage`)."""
    con.execute("""
        CREATE TABLE monitor (
            ts TIMESTAMP NOT NULL, unit_oid UINTEGER NOT NULL, dir UTINYINT NOT NULL,
            proto UTINYINT NOT NULL, ifindex UINTEGER NOT NULL,
            local_hi UBIGINT NOT NULL, local_lo UBIGINT NOT NULL, local_port USMALLINT NOT NULL,
            remote_hi UBIGINT NOT NULL, remote_lo UBIGINT NOT NULL,
            remote_port USMALLINT NOT NULL, packets UBIGINT NOT NULL, bytes UBIGINT NOT NULL,
            first TIMESTAMP NOT NULL, last TIMESTAMP NOT NULL);
    """)  # no index: rows arrive in ts order, so DuckDB's zone maps serve retention and --from


def _v7(con) -> None:
    """The outbox for the central PostgreSQL: one row per drain, its rows
    packed (acctd.services.central.ship.ROW), so a drain adds one row
    whatever its size; kind 0 is a drain, other kinds (the billing
    ledger's) ride the same sequence (acctd.services.central.ship.SHIPPERS)."""
    con.execute("""
        CREATE TABLE central_outbox (
            seq UBIGINT PRIMARY KEY, ts TIMESTAMP NOT NULL, n INTEGER NOT NULL,
            rows BLOB NOT NULL, kind UTINYINT NOT NULL DEFAULT 0);
    """)


def _v8(con) -> None:
    """The period tops (acctd.store.rollup.BY): per local address, service
    port and VLAN, each day's, month's and year's counts in and out; a
    period that is over keeps its biggest keys and one rest row."""
    con.execute("""
        CREATE TYPE top_by AS ENUM ('addr', 'port', 'vlan');
        CREATE TYPE top_period AS ENUM ('day', 'month', 'year');
        CREATE TABLE rollup_by (
            keyed_by top_by NOT NULL, kind top_period NOT NULL, period_start TIMESTAMP NOT NULL,
            key_hi UBIGINT NOT NULL, key_lo UBIGINT NOT NULL,
            packets_in UBIGINT NOT NULL, packets_out UBIGINT NOT NULL,
            bytes_in UBIGINT NOT NULL, bytes_out UBIGINT NOT NULL,
            PRIMARY KEY (keyed_by, kind, period_start, key_hi, key_lo));
    """)


def _v9(con) -> None:
    """When each login record last changed by a set, login, logout or close
    (not a timeout here, nor a start's def-state), and each account's terms:
    with [central] the last change on any gateway is the one
    (acctd/services/central/logins.py, invoicing.py)."""
    con.execute("ALTER TABLE login ADD COLUMN changed TIMESTAMP")
    con.execute("ALTER TABLE account_terms ADD COLUMN changed TIMESTAMP")


def _v10(con) -> None:
    """The export service's open flow-cache entries (acctd/store/export.py):
    the flow key as six words, what the entry moved since its last record."""
    con.execute("""
        CREATE TABLE export_cache (
            exporter VARCHAR NOT NULL, k0 UBIGINT NOT NULL, k1 UBIGINT NOT NULL,
            k2 UBIGINT NOT NULL, k3 UBIGINT NOT NULL, k4 UBIGINT NOT NULL, k5 UBIGINT NOT NULL,
            packets UBIGINT NOT NULL, bytes UBIGINT NOT NULL, start_ns UBIGINT NOT NULL,
            end_ns UBIGINT NOT NULL, tcp_flags UINTEGER NOT NULL);
    """)  # no index: a drain's DELETE joins its keys against one scan


def _v11(con) -> None:
    """The checkpoint by slot (acctd/store/checkpoint.py), so a drain writes
    the new keys and the changed counters only: each map's entries, in the
    order the old table held them, become slots 0, 1, ..., all live."""
    import numpy as np

    from acctd.store import checkpoint as ck
    con.execute(f"""
        CREATE TABLE checkpoint_keys (
            map VARCHAR NOT NULL, slot UBIGINT NOT NULL,
            {", ".join(f"w{i} UBIGINT NOT NULL" for i in range(ck.KEY_WORDS))});
        CREATE TABLE checkpoint_vals (
            map VARCHAR NOT NULL, chunk INTEGER NOT NULL, n INTEGER NOT NULL,
            key_type VARCHAR NOT NULL, val_type VARCHAR NOT NULL, vals BLOB NOT NULL,
            alive BLOB, PRIMARY KEY (map, chunk));
    """)
    old: dict[str, list] = {}
    for name, n, kt, vt, kb, vb in con.execute(
            "SELECT map, n, key_type, val_type, keys, vals FROM checkpoint ORDER BY map, chunk"
            ).fetchall():
        old.setdefault(name, []).append((n, kt, vt, kb, vb))
    for name, rows in old.items():
        kt, vt = rows[0][1], rows[0][2]
        keys, vals = b"".join(r[3] for r in rows), b"".join(r[4] for r in rows)
        n = sum(r[0] for r in rows)
        ksize, vsize = (len(keys) // n, len(vals) // n) if n else (0, 0)
        w = ck.key_words(np.frombuffer(keys, np.dtype((np.void, ksize)))) if n else None
        if n:
            con.register("acct_v11_keys", {
                "slot": np.arange(n, dtype=np.uint64),
                **{f"w{i}": np.ascontiguousarray(w[:, i]) for i in range(ck.KEY_WORDS)}})
            con.execute(f"INSERT INTO checkpoint_keys SELECT ?, slot, "
                        f"{', '.join(f'w{i}' for i in range(ck.KEY_WORDS))} FROM acct_v11_keys",
                        [name])
            con.unregister("acct_v11_keys")
        for chunk in range(max(-(-n // ck.CHUNK), 1)):
            lo, hi = chunk * ck.CHUNK, min((chunk + 1) * ck.CHUNK, n)
            con.execute("INSERT INTO checkpoint_vals VALUES (?, ?, ?, ?, ?, ?, NULL)",
                        [name, chunk, hi - lo, kt, vt, vals[lo * vsize:hi * vsize]])
    con.execute("DROP TABLE checkpoint")


def _v12(con) -> None:
    """The records an IPFIX-over-TCP export made due and its collector has
    not acknowledged yet (acctd/store/export.py), one row per batch."""
    con.execute("""
        CREATE TABLE export_spool (
            exporter VARCHAR NOT NULL, seq UBIGINT NOT NULL, n INTEGER NOT NULL,
            records BLOB NOT NULL, PRIMARY KEY (exporter, seq));
    """)


MIGRATIONS: tuple[tuple[int, Callable], ...] = ((1, _v1), (2, _v2), (3, _v3), (4, _v4), (5, _v5),
                                                 (6, _v6),
                                                 (7, _v7),
                                                 (8, _v8),
                                                 (9, _v9),
                                                 (10, _v10),
                                                 (11, _v11),
                                                 (12, _v12))
VERSION = MIGRATIONS[-1][0]


def version_of(con) -> int:
    """The schema version of a database (0: empty)."""
    have = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'meta'"
                       ).fetchall()[0][0]
    if not have:
        return 0
    rows = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    return int(rows[0][0]) if rows else 0


def upgrade(con, abi_version: int) -> list[int]:
    """Run the steps a database has not had; returns their numbers."""
    def meta(c) -> None:
        c.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, "
                  "value VARCHAR NOT NULL)")
        c.execute("INSERT OR REPLACE INTO meta VALUES ('abi_version', ?)", [str(abi_version)])

    done = []
    if version_of(con) == 0:
        _in_transaction(con, meta)
    for number, step in MIGRATIONS:
        if number <= version_of(con):
            continue

        def stepped(c, step=step, number=number) -> None:
            step(c)
            c.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(number)])
        _in_transaction(con, stepped)
        done.append(number)
    return done


def _in_transaction(con, work: Callable) -> None:
    """All of work, or (an error, a kill) none of it."""
    con.execute("BEGIN")
    try:
        work(con)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
