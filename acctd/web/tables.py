"""A table the console shows, and the same table as CSV and JSON: one
definition per table, so a download has exactly the numbers on the page
(exact integers; the page formats them, the files do not)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json

from acctd.common.display import format_bytes

# how a column's values are shown on the page (files always carry them raw)
BYTES, RATE, TEXT, TIME = "bytes", "rate", "text", "time"


@dataclasses.dataclass
class Table:
    name: str                          # the `table=` of its download links
    title: str
    columns: list[tuple[str, str, str]]  # (key, heading, kind)
    rows: list[dict]
    empty: str = "nothing to show"

    def shown(self, row: dict, key: str, kind: str) -> str:
        v = row.get(key)
        if v is None:
            return "-"
        if kind == BYTES:
            return format_bytes(v)
        if kind == RATE:
            return format_rate(v)
        if kind == TIME:  # local time as the daemon labels it, to the minute
            return str(v)[:16].replace("T", " ")
        if isinstance(v, (list, tuple)):
            return " ".join(map(str, v))
        return str(v)

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([k for k, _, _ in self.columns])
        for r in self.rows:
            w.writerow([_cell(r.get(k)) for k, _, _ in self.columns])
        return buf.getvalue()

    def records(self) -> list[dict]:
        return [{k: r.get(k) for k, _, _ in self.columns} for r in self.rows]


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return " ".join(map(str, v))
    return str(v)


def as_json(tables: list[Table]) -> str:
    return json.dumps({t.name: t.records() for t in tables}, indent=1, default=str)


def format_rate(bps: float | int | None) -> str:
    """bit/s, 1000-based, as links are sold (acctctl's convention)."""
    if bps is None:
        return "-"
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.3g} {unit}"
    return f"{bps:.0f} bit/s"
