"""Login records across gateways (README "Several gateways"): the login
service's records (argon2id password hashes, bound MAC, timeouts, opened
or closed) as one row a unit in the server's `login` table; the later
change wins. What counts as a change is an act: login set, a login or
logout, a config line; a timeout closes a login only on the gateway that
timed it out (each counts its own traffic, and the others' last use comes
with their records), and each gateway decides the login blocks from the
records. NOTIFY acctd_login; every gateway takes the newer rows on it and
at connect (only those written since it last read: their `version`).
"""

from __future__ import annotations

import datetime as dt


LOCK = 0x61636375   # pg_advisory_xact_lock key of login writes: versions in commit order


def publish(conn, gateway_id: int, changed: dict[str, tuple[dict, dt.datetime]]) -> None:
    """Upsert these records (oid -> (record, when)); one changed later elsewhere is kept."""
    import psycopg.types.json
    with conn.transaction():
        # one writer at a time: a reader that saw version N has every write up to N
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
        conn.cursor().executemany(
            "INSERT INTO login VALUES (%s, %s, %s, %s, nextval('login_version')) "
            "ON CONFLICT (unit_oid) DO UPDATE SET record = excluded.record, changed = "
            "excluded.changed, gateway_id = excluded.gateway_id, version = excluded.version "
            "WHERE login.changed < excluded.changed",
            [(int(oid, 16), psycopg.types.json.Jsonb(rec), when, gateway_id)
             for oid, (rec, when) in sorted(changed.items())])
        conn.execute("NOTIFY acctd_login")


def newer(conn, have: dict[str, dt.datetime], after: int = 0
          ) -> tuple[dict[str, tuple[dict, dt.datetime]], int]:
    """The server's records written since version `after` and changed later
    than this gateway's (or not here); and the last version read."""
    out, last = {}, after
    for unit_oid, rec, changed, version in conn.execute(
            "SELECT unit_oid, record, changed, version FROM login WHERE version > %s "
            "ORDER BY unit_oid", (after,)).fetchall():
        oid = f"{int(unit_oid):06X}"
        last = max(last, int(version))
        if oid not in have or have[oid] < changed:
            out[oid] = (rec, changed)
    return out, last
