"""acctctl: RADIUS, OpenVPN and F-TICKS."""

from __future__ import annotations

import contextlib
import os
import sys

import click

from acctctl.common import ask, echo, json_option, nbytes, out, run, table


@click.group()
def fticks():
    """F-TICKS login statistics (eduroam): import syslog files, report."""


@fticks.command("import")
@click.argument("files", nargs=-1, required=True)
@json_option
@click.pass_context
def fticks_import(ctx, files, as_json):
    """Load the F-TICKS lines of FILES (syslog, radsecproxy, FreeRADIUS
    linelog; plain or .gz) into the database. Malformed lines are counted and
    reported, never fatal; a file imported twice adds nothing."""
    paths = [os.path.abspath(f) for f in files]
    run(lambda: out(ask(ctx, "fticks-import", paths=paths), as_json,
                      lambda r: echo(r["text"])))


@fticks.command("report")
@click.option("--since", help="First day (YYYY-MM-DD).")
@json_option
@click.pass_context
def fticks_report(ctx, since, as_json):
    """Logins per day x realm x visited country x result."""
    run(lambda: out(ask(ctx, "fticks-report", since=since), as_json,
                      lambda r: echo(r["text"])))


@click.group()
def radius():
    """RADIUS: import sessions from FreeRADIUS (Freeside's radacct import)."""


@radius.command("import")
@click.option("--detail", "details", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="A FreeRADIUS detail file (plain or .gz); repeatable.")
@click.option("--sqlite", type=click.Path(exists=True, dir_okay=False),
              help="A FreeRADIUS SQLite database with a radacct table.")
@click.option("--postgres", metavar="DSN", help="A PostgreSQL radacct (needs python3-psycopg2).")
@click.option("--since", help="Only sessions that stopped on or after this day (YYYY-MM-DD).")
@click.option("--chunk", default=150, show_default=True, help="Sessions per request.")
@json_option
@click.pass_context
def radius_import(ctx, details, sqlite, postgres, since, chunk, as_json):
    """Read sessions (address-to-user history and NAS-reported usage) and
    store them, with a progress bar; sessions already imported are skipped,
    so an interrupted import is finished by running it again."""
    import datetime as dt

    from rich.console import Console
    from rich.progress import Progress

    from acctd.aaa import radius_import as ri
    if not (details or sqlite or postgres):
        raise click.UsageError("give --detail FILE, --sqlite DB or --postgres DSN")
    start = dt.datetime.fromisoformat(since).replace(tzinfo=dt.timezone.utc) if since else None

    def read() -> tuple[list[dict], int]:
        records: list[dict] = []
        errors: list = []
        for path in details:
            records += list(ri.read_detail(path, errors))
        for kind, target in (("sqlite", sqlite), ("postgres", postgres)):
            if not target:
                continue
            if kind == "sqlite":
                import sqlite3
                con = sqlite3.connect(target)
            else:
                try:
                    import psycopg2
                except ImportError:
                    raise click.ClickException("--postgres needs psycopg2 (Debian: python3-psycopg2)")
                con = psycopg2.connect(target)
            with contextlib.closing(con):
                records += list(ri.read_radacct(con, since=start))
        # a session counts when it ended on or after --since (its start may be earlier)
        sess = [s for s in ri.to_sessions(records)
                if s.get("stop") is not None and (start is None or s["stop"] >= start)]
        for s in sess:
            for k in ("start", "stop"):
                if isinstance(s.get(k), dt.datetime):
                    s[k] = s[k].isoformat()
        return sess, len(errors)

    def go() -> None:
        sess, malformed = read()
        totals: dict = {}
        with Progress(console=Console(stderr=True), transient=not sys.stderr.isatty()) as bar:
            task = bar.add_task("importing sessions", total=len(sess))
            for i in range(0, len(sess), chunk):
                part = sess[i:i + chunk]
                for k, v in ask(ctx, "radius-import", sessions=part).items():
                    if isinstance(v, int):
                        totals[k] = totals.get(k, 0) + v
                bar.advance(task, len(part))
        totals["malformed_records"] = malformed
        out(totals, as_json, lambda t: echo(
            ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(t.items()))))
    run(go)


@click.command("openvpn-hook")
@click.argument("via_file", required=False)
@click.pass_context
def openvpn_hook(ctx, via_file):
    """client-connect / client-disconnect script for OpenVPN servers without
    a management interface (--script-security 2): reports the session to the
    daemon from OpenVPN's environment. As --auth-user-pass-verify (via-file:
    OpenVPN passes VIA_FILE), checks the password against the login records.
    Exit 1 refuses the client (blocked, wrong password); 2 is an error
    (OpenVPN refuses then too: accounting fails closed)."""
    from acctd.aaa.openvpn import HookError, HookExit, hook_main
    from acctd.errors import AcctError
    try:
        event = hook_main(os.environ, via_file)
        reply = ask(ctx, "openvpn-event", event=event)
    except (HookError, AcctError, OSError) as e:
        click.echo(f"acctctl openvpn-hook: {e}", err=True)
        sys.exit(HookExit.ERROR)
    if not reply.get("allowed", True):
        click.echo(f"acctctl openvpn-hook: refused: {reply.get('reason')}", err=True)
        sys.exit(HookExit.REFUSED)
    sys.exit(HookExit.OK)


@click.group()
def openvpn():
    """OpenVPN sessions from the management interface."""


@openvpn.command("clients")
@json_option
@click.pass_context
def openvpn_clients(ctx, as_json):
    """Connected clients with the server's byte counts."""
    run(lambda: out(ask(ctx, "openvpn-clients"), as_json, lambda rows: table(
        "openvpn clients", ["user", "cid", "vpn address", "in", "out"],
        [[r["user"], r["cid"], r["vpn_addr"], nbytes(r["bytes_in"]), nbytes(r["bytes_out"])]
         for r in rows])))


@openvpn.command("interval")
@click.argument("user")
@click.argument("seconds", type=int, required=False)
@json_option
@click.pass_context
def openvpn_interval(ctx, user, seconds, as_json):
    """Set USER's interim interval while connected (none: back to the
    configuration; 0: no interims, start and stop only)."""
    run(lambda: out(ask(ctx, "openvpn-interval", user=user, seconds=seconds), as_json,
                    lambda r: echo(f"{r['user']}: interim updates every {r['interval']} s"
                                   if r["interval"] else f"{r['user']}: no interim updates")))


COMMANDS = [fticks, radius, openvpn_hook, openvpn]
