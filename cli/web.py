"""acctctl's commands for charts and the web console: a unit's series and
the top units of a period (what the console draws, for scripts and checks),
and web login/logout (a person's password checked by the daemon, as the
console does it)."""

from __future__ import annotations

import os

import click

from acctctl.common import ask, echo, json_option, nbytes, out, run, table


@click.command()
@click.argument("unit")
@click.option("--view", type=click.Choice(["hour", "day", "month"]), default="day",
              show_default=True, help="hours of a day, days of a month, months of a year")
@click.option("--back", type=click.IntRange(0), default=0, show_default=True,
              help="periods before the current one (1: yesterday, last month, last year)")
@json_option
@click.pass_context
def series(ctx, unit, view, back, as_json):
    """A unit's traffic over time, per policy and direction, with totals and
    the 95th percentile of its hourly rates."""
    def render(r):
        table(f"{r['unit']} ({r['oid']}), {r['start']} .. {r['end']}",
              ["start", "policy", "dir", "packets", "bytes"],
              [[x["start"], x["policy"], x["dir"], x["packets"], nbytes(x["bytes"])]
               for x in r["rows"]])
        echo(f"total in {nbytes(r['total']['in'])}, out {nbytes(r['total']['out'])}; "
             f"95th percentile in {r['p95_bps']['in']} bit/s, out {r['p95_bps']['out']} bit/s")
    run(lambda: out(ask(ctx, "series", unit=unit, view=view, back=back), as_json, render))


@click.command("top-units")
@click.option("--period", type=click.Choice(["day", "month", "year"]), default="month",
              show_default=True)
@click.option("--back", type=click.IntRange(0), default=0, show_default=True)
@click.option("--limit", type=click.IntRange(1), default=10, show_default=True)
@json_option
@click.pass_context
def top_units(ctx, period, back, limit, as_json):
    """The units with the most bytes in a day, month or year."""
    run(lambda: out(ask(ctx, "top-units", period=period, back=back, limit=limit), as_json,
                    lambda r: table(f"top units, {r['start']} .. {r['end']}",
                                    ["unit", "in", "out", "total"],
                                    [[u["unit"], nbytes(u["bytes_in"]), nbytes(u["bytes_out"]),
                                      nbytes(u["bytes"])] for u in r["units"]])))


@click.command("top-by")
@click.argument("by", type=click.Choice(["addr", "port", "vlan"]))
@click.option("--period", type=click.Choice(["day", "month", "year"]), default="month",
              show_default=True)
@click.option("--back", type=click.IntRange(0), default=0, show_default=True,
              help="periods before the current one (1: yesterday, last month, last year)")
@click.option("--limit", type=click.IntRange(1, 1000), default=10, show_default=True)
@json_option
@click.pass_context
def top_by(ctx, by, period, back, limit, as_json):
    """The local addresses, service ports or VLANs with the most bytes in a
    day, month or year (the console's top tables; `acctctl top` shows rates now)."""
    what = {"addr": "addresses", "port": "ports", "vlan": "VLANs"}[by]

    def render(r):
        head = ["address", "unit"] if by == "addr" else ["port" if by == "port" else "VLAN"]
        table(f"top {what}, {r['start']} .. {r['end']}", [*head, "in", "out", "total"],
              [[x["key"], *([x["unit"] or "-"] if by == "addr" else []), nbytes(x["bytes_in"]),
                nbytes(x["bytes_out"]), nbytes(x["bytes"])] for x in r["rows"]])
        echo(f"all {what}: in {nbytes(r['total']['bytes_in'])}, "
             f"out {nbytes(r['total']['bytes_out'])}")
    run(lambda: out(ask(ctx, "top-by", by=by, period=period, back=back, limit=limit), as_json,
                    render))


@click.group()
def web():
    """The web console's logins, checked by the daemon (acctd-web uses these)."""


@web.command("login")
@click.argument("name")
@click.option("--unit", is_flag=True, help="NAME is a unit, with its login-service password")
@click.option("--account", is_flag=True, help="NAME is a billing account, with its password")
@json_option
@click.pass_context
def web_login(ctx, name, unit, account, as_json):
    """Check NAME's password (asked for) and print a token for requests on
    their behalf."""
    password = click.prompt("password", hide_input=True, err=True)
    run(lambda: out(ask(ctx, "web-login", name=name, password=password, unit=unit,
                        account=account), as_json,
                    lambda r: echo(f"{r['name']} ({r['level']}): {r['token']}")))


@web.command("logout")
@click.argument("token")
@click.pass_context
def web_logout(ctx, token):
    """End the session of a token."""
    run(lambda: echo("ended" if ask(ctx, "web-logout", token=token)["ended"] else "no such session"))


@click.command()
@click.option("--path", type=click.Path(file_okay=False), default=None,
              help="where to write (default: [html] path in the daemon's config)")
@click.option("--htaccess", is_flag=True, help="also write .htaccess files ([html] htaccess)")
@json_option
@click.pass_context
def html(ctx, path, htaccess, as_json):
    """Write the static HTML reports (NeTAMS html): the daemon writes them."""
    run(lambda: out(ask(ctx, "html", path=path and os.path.abspath(path), htaccess=htaccess),
                    as_json,
                    lambda r: echo(f"{r['files']} files written under {r['path']}")))


COMMANDS = [series, top_units, top_by, web, html]
