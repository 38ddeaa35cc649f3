"""Units made at run time (acctctl unit add, auto-units) across gateways:
each gateway puts its own into the server's `runtime_unit` table (the
first gateway to make a name keeps it), NOTIFY acctd_unit; the others make
the ones they lack, with the same oid, on it and at connect. A unit deleted
on one gateway stays on the others (unit delete there).
"""

from __future__ import annotations

from collections.abc import Iterable


def publish(conn, gateway_id: int, specs: list[dict]) -> None:
    import psycopg.types.json
    with conn.transaction():
        conn.cursor().executemany(
            "INSERT INTO runtime_unit VALUES (%s, %s, %s) ON CONFLICT (name) DO NOTHING",
            [(s["name"], psycopg.types.json.Jsonb(s), gateway_id) for s in specs])
        conn.execute("NOTIFY acctd_unit")


def missing(conn, known: Iterable[str]) -> list[dict]:
    """The server's run-time units whose names this gateway has no unit of."""
    known = set(known)
    return [spec for name, spec in conn.execute(
        "SELECT name, spec FROM runtime_unit ORDER BY name").fetchall() if name not in known]
