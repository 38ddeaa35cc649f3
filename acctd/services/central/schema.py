"""The central PostgreSQL's schema as numbered steps, applied by the first
gateway that connects (under an advisory lock, so two gateways starting
together do not both apply one), or refused when the server's schema is
newer than this acctd. Add a step; never edit one that has shipped.

  acctd_schema  version: the last step applied
  gateway       id, name, shipped_seq (the last drain of it stored: the
                idempotency key), shipped_at, seen
  raw           ts, gateway_id, seq, unit_oid, policy_oid, dir, packets,
                bytes: every shipped drain's rows (the DuckDB raw table's,
                per gateway), partitioned by month on ts (raw_YYYYMM);
                retention drops whole partitions. Only a BRIN index on ts:
                a b-tree per row would halve the COPY rate
  quota_total   gateway_id, kind, period_start, unit_oid, policy_oid, dir,
                bytes: each gateway's current-period totals (its DuckDB
                rollup rows, absolute, so idempotent) of the units that have
                a quota anywhere, written after each shipment; what shared
                quotas add up
  unit, policy  oid, name: the names the gateways know (for acctctl --central)
  block         gateway_id, unit_oid, bits: the blocks each gateway (or the
                "operator" pseudo-gateway) holds, as abi.SysPolicy bits;
                a change is NOTIFY acctd_block
  quota         unit_oid, spec (JSON, quota.QuotaSpec.to_dict), gateway_id:
                every gateway's quota records (the last `quota set` wins)
  ledger        gateway_id, seq (the gateway's DuckDB ledger seq: the key),
                and the billing ledger row's columns: every row each gateway
                wrote, shipped through the outbox (balances.py); an account's
                balance is the sum over all gateways; NOTIFY acctd_ledger
  account       oid, spec (JSON: the billing account's fields and units),
                changed, gateway_id: the last change of each account on any
                gateway (accounts.py); NOTIFY acctd_account
  runtime_unit  name, spec (JSON, runtime_units.to_dict), gateway_id: the
                units made at run time on any gateway (units.py); NOTIFY
                acctd_unit; deleted: when a gateway deleted it (the
                others delete theirs; made again, the row is new)
  account_oid   oid, gateway_id, name, at: every account oid handed out
                (accounts.allocate), so two gateways never make one oid
  login         unit_oid, record (JSON, login.LoginRecord.to_dict), changed,
                gateway_id: the last change of each login record on any
                gateway (logins.py); version: from login_version at each
                write, so a gateway reads only what is new; NOTIFY acctd_login
  account_terms account_oid, postpaid, exempt, transit, changed, gateway_id:
                the last change of each account's terms (invoicing.py);
                NOTIFY acctd_terms
  invoice       account_oid, month (the key: issued once across gateways),
                number, issued, period_end, due, amount_due, doc (JSON),
                gateway_id: who issued it (invoicing.py); NOTIFY acctd_invoice
Timestamps are timestamptz; oids integers as in DuckDB (policy_oid bigint:
the dropped-traffic oids are above 2^31).
"""

from __future__ import annotations

from acctd.errors import AcctError

LOCK = 0x61636374  # pg_advisory_xact_lock key of schema changes and partitions ("acct")


class CentralError(AcctError):
    """The central server cannot be used as it is (schema newer, refused)."""


_V1 = """
CREATE TABLE acctd_schema (version integer NOT NULL);
INSERT INTO acctd_schema VALUES (0);
CREATE TABLE gateway (
    id smallserial PRIMARY KEY, name text UNIQUE NOT NULL,
    shipped_seq bigint NOT NULL DEFAULT 0, shipped_at timestamptz, seen timestamptz);
CREATE TABLE raw (
    ts timestamptz NOT NULL, gateway_id smallint NOT NULL, seq bigint NOT NULL,
    unit_oid integer NOT NULL, policy_oid bigint NOT NULL, dir smallint NOT NULL,
    packets bigint NOT NULL, bytes bigint NOT NULL) PARTITION BY RANGE (ts);
CREATE INDEX raw_ts ON raw USING brin (ts);
CREATE TABLE unit (unit_oid integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE policy (policy_oid bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE block (
    gateway_id smallint NOT NULL REFERENCES gateway, unit_oid integer NOT NULL,
    bits integer NOT NULL, at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, unit_oid));
CREATE TABLE quota (unit_oid integer PRIMARY KEY, spec jsonb NOT NULL,
                    gateway_id smallint NOT NULL REFERENCES gateway);
CREATE TABLE quota_total (
    gateway_id smallint NOT NULL REFERENCES gateway, kind text NOT NULL,
    period_start timestamptz NOT NULL, unit_oid integer NOT NULL, policy_oid bigint NOT NULL,
    dir smallint NOT NULL, bytes bigint NOT NULL,
    PRIMARY KEY (unit_oid, kind, period_start, gateway_id, policy_oid, dir));
"""

_V2 = """
CREATE TABLE ledger (
    gateway_id smallint NOT NULL REFERENCES gateway, seq bigint NOT NULL,
    ts timestamptz NOT NULL, account_oid integer NOT NULL, kind text NOT NULL,
    plan integer, subplan integer, period_start timestamptz, period_end timestamptz,
    amount numeric NOT NULL, bytes_in bigint NOT NULL, bytes_out bigint NOT NULL,
    cause text NOT NULL, reference text, PRIMARY KEY (gateway_id, seq));
CREATE INDEX ledger_account ON ledger (account_oid);
CREATE TABLE account (oid integer PRIMARY KEY, spec jsonb NOT NULL,
                      changed timestamptz NOT NULL, gateway_id smallint NOT NULL REFERENCES gateway);
CREATE TABLE runtime_unit (name text PRIMARY KEY, spec jsonb NOT NULL,
                           gateway_id smallint NOT NULL REFERENCES gateway);
"""

_V3 = """
CREATE TABLE account_oid (oid integer PRIMARY KEY, gateway_id smallint NOT NULL REFERENCES gateway,
                          name text NOT NULL, at timestamptz NOT NULL DEFAULT now());
CREATE SEQUENCE login_version;
CREATE TABLE login (unit_oid integer PRIMARY KEY, record jsonb NOT NULL,
                    changed timestamptz NOT NULL, gateway_id smallint NOT NULL REFERENCES gateway,
                    version bigint NOT NULL);
ALTER TABLE runtime_unit ADD COLUMN deleted timestamptz;
CREATE TABLE account_terms (
    account_oid integer PRIMARY KEY, postpaid boolean NOT NULL, exempt boolean NOT NULL,
    transit boolean NOT NULL, changed timestamptz NOT NULL,
    gateway_id smallint NOT NULL REFERENCES gateway);
CREATE TABLE invoice (
    account_oid integer NOT NULL, month date NOT NULL, number text NOT NULL UNIQUE,
    issued timestamptz NOT NULL, period_end timestamptz NOT NULL, due timestamptz NOT NULL,
    amount_due numeric NOT NULL, doc jsonb NOT NULL,
    gateway_id smallint NOT NULL REFERENCES gateway, PRIMARY KEY (account_oid, month));
"""

MIGRATIONS: tuple[tuple[int, str], ...] = ((1, _V1), (2, _V2), (3, _V3))
VERSION = MIGRATIONS[-1][0]


def version_of(conn) -> int:
    """The server's schema version (0: no acctd schema yet)."""
    if conn.execute("SELECT to_regclass('acctd_schema')").fetchone()[0] is None:
        return 0
    row = conn.execute("SELECT version FROM acctd_schema").fetchone()
    return int(row[0]) if row else 0


def refusal(have: int) -> str | None:
    """Why this acctd will not use a server at schema `have` (None: it will)."""
    if have > VERSION:
        return (f"central schema version {have} is newer than this acctd ({VERSION}): "
                "upgrade acctd on this gateway; it will not write to that server")
    return None


def migrate(conn) -> list[int]:
    """Apply the steps the server has not had, all in one transaction;
    returns their numbers. CentralError if the server is newer."""
    done = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
        have = version_of(conn)
        why = refusal(have)
        if why:
            raise CentralError(why)
        for number, sql in MIGRATIONS:
            if number > have:
                conn.execute(sql)
                conn.execute("UPDATE acctd_schema SET version = %s", (number,))
                done.append(number)
    return done
