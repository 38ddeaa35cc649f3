"""Units made at run time (acctctl unit add, auto-units) across gateways:
each gateway puts its own into the server's `runtime_unit` table (the
first gateway to make a name keeps it), NOTIFY acctd_unit; the others make
the ones they lack, with the same oid, on it and at connect. A unit
deleted on one gateway is marked deleted there (`deleted`), and the others
delete theirs on it and at connect; made again, the row is the new unit.
Which units this gateway has published is kept in its DuckDB (meta
central_units_shared), so one deleted during an outage, or before a
restart, is deleted everywhere when the link returns.
"""

from __future__ import annotations

from collections.abc import Iterable


def publish(conn, gateway_id: int, new: list[dict], again: list[dict] = (),
            deleted: list[dict] = ()) -> None:
    """new: made here since the last publish (a deleted row of the name is
    made again); again: all this gateway's, at connect (a deleted row
    stays deleted); deleted: deleted here."""
    import psycopg.types.json
    with conn.transaction():
        cur = conn.cursor()
        if new:
            cur.executemany(
                "INSERT INTO runtime_unit VALUES (%s, %s, %s) ON CONFLICT (name) DO UPDATE "
                "SET spec = excluded.spec, gateway_id = excluded.gateway_id, deleted = NULL "
                "WHERE runtime_unit.deleted IS NOT NULL",
                [(s["name"], psycopg.types.json.Jsonb(s), gateway_id) for s in new])
        if again:
            cur.executemany(
                "INSERT INTO runtime_unit VALUES (%s, %s, %s) ON CONFLICT (name) DO NOTHING",
                [(s["name"], psycopg.types.json.Jsonb(s), gateway_id) for s in again])
        if deleted:
            cur.executemany(
                "UPDATE runtime_unit SET deleted = now() WHERE name = %s AND spec->>'oid' = %s "
                "AND deleted IS NULL", [(s["name"], s["oid"]) for s in deleted])
        conn.execute("NOTIFY acctd_unit")


def missing(conn, known: Iterable[str]) -> list[dict]:
    """The server's run-time units whose names this gateway has no unit of."""
    known = set(known)
    return [spec for name, spec in conn.execute(
        "SELECT name, spec FROM runtime_unit WHERE deleted IS NULL ORDER BY name").fetchall()
        if name not in known]


def deleted(conn) -> dict[str, str]:
    """name -> oid of the run-time units deleted on some gateway."""
    return {name: oid for name, oid in conn.execute(
        "SELECT name, spec->>'oid' FROM runtime_unit WHERE deleted IS NOT NULL").fetchall()}
