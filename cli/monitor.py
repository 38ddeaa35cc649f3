"""acctctl monitor: which units the monitor service follows (NeTAMS `monitor
unit`, `show monitor`), and what their stored flows say (`monitor query`)."""

from __future__ import annotations

import csv
import sys

import click

from acctctl.common import ask, echo, json_option, nbytes, out, run, table, when


@click.group()
def monitor():
    """Per-flow monitoring of units, with their remote peers."""


def _render_show(r: dict) -> None:
    if not r["configured"]:
        echo("monitor: no [monitor] in the configuration")
        return
    units = ", ".join(f"{u['name']} ({u['oid']})" for u in r["units"]) or "none"
    lines = [f"monitored units: {units}", f"to: {' '.join(r['to'])}"]
    if "storage" in r["to"]:
        lines.append(f"storage: {r['rows_stored']} rows stored, {r['rows_pruned']} pruned, "
                     f"retention {r['retention']} s")
    if r["file"]:
        f = r["file"]
        lines.append(f"file: {f['path']} ({f['format']}), {f['lines_written']} lines, "
                     f"{f['queued']} queued, {f['errors']} errors")
    if r["netflow"]:
        lines.append(f"netflow: {r['netflow']}")
    echo("\n".join(lines))


@monitor.command("show")
@json_option
@click.pass_context
def monitor_show(ctx, as_json):
    """The monitored units and the destinations (NeTAMS `show monitor`)."""
    run(lambda: out(ask(ctx, "monitor-show"), as_json, _render_show))


@monitor.command("unit")
@click.argument("action", type=click.Choice(["add", "remove"]))
@click.argument("unit")
@json_option
@click.pass_context
def monitor_unit(ctx, action, unit, as_json):
    """add: monitor UNIT (a name or an oid), NeTAMS `monitor unit`; remove:
    stop, `no monitor unit`. Kept across restarts."""
    run(lambda: out(ask(ctx, f"monitor-unit-{action}", unit=unit), as_json, _render_show))


QUERY_COLUMNS = ["peer", "proto", "port", "bytes_in", "bytes_out", "packets_in",
                 "packets_out", "first", "last"]


@monitor.command("query")
@click.argument("unit")
@click.option("--peer", metavar="PREFIX", help="Only remote peers in this address or prefix.")
@click.option("--port", type=click.IntRange(0, 65535), help="Only flows with this port (either side).")
@click.option("--from", "since", metavar="TIME", help="From this time (ISO 8601, local zone).")
@click.option("--to", "until", metavar="TIME", help="Up to this time (not included).")
@click.option("--top", type=click.IntRange(1), help="Only the N biggest peers.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV with exact byte counts.")
@json_option
@click.pass_context
def monitor_query(ctx, unit, peer, port, since, until, top, as_csv, as_json):
    """Who UNIT exchanged traffic with: per remote peer, port and protocol,
    bytes and packets in and out (exact sums of the stored flows), the
    biggest first. UNIT's members are included."""
    def render(r):
        if as_csv:
            w = csv.writer(sys.stdout, lineterminator="\n")
            w.writerow(QUERY_COLUMNS)
            for p in r["peers"]:
                w.writerow([p[c] for c in QUERY_COLUMNS])
            return
        table(f"{r['unit']} ({r['oid']}): peers", QUERY_COLUMNS, [
            [p["peer"], p["proto"], p["port"], nbytes(p["bytes_in"]), nbytes(p["bytes_out"]),
             p["packets_in"], p["packets_out"], when(p["first"]), when(p["last"])]
            for p in r["peers"]])
    run(lambda: out(ask(ctx, "monitor-query", unit=unit, peer=peer, port=port, since=since,
                        until=until, top=top), as_json, render))


COMMANDS = [monitor]
