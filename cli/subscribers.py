"""acctctl: who holds which address: sessions, the login service, MAC
control."""

from __future__ import annotations

import datetime as dt

import click

from acctctl.common import ask, echo, json_option, out, run, table


@click.group()
def session():
    """User sessions: which user unit holds which address (Freeside-style)."""


SESSION_COLUMNS = ["id", "user", "addr", "mac", "nas", "port", "source", "start (UTC)",
                   "stop (UTC)", "duration", "cause", "packets in", "packets out", "bytes in",
                   "bytes out"]


def _time(iso: str | None) -> str:
    if not iso:
        return "-"
    return dt.datetime.fromisoformat(iso).astimezone(dt.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    return "-" if seconds is None else str(dt.timedelta(seconds=int(seconds)))


def _session_table(rows: list[dict]) -> None:
    """`session list`: every field of the record, bytes and packets exact."""
    table("sessions", SESSION_COLUMNS,
          [[x["id"], x["user"], x["addr"], x["mac"] or "-", x["nas"] or "-", x["port"] or "-",
            x["source"], _time(x["start"]), _time(x["stop"]), _duration(x["duration"]),
            x["stop_cause"] or "-", x["packets_in"], x["packets_out"], x["bytes_in"],
            x["bytes_out"]] for x in rows])


def _session_changes(r: dict) -> None:
    """What `session start|stop|kill-expired` did, a line per session."""
    for x in r["sessions"]:
        who = f"session {x['id']}: {x['user']} at {x['addr']}"
        if x["change"] == "started":
            click.echo(f"{who} started")
        elif x["change"] == "unchanged":
            click.echo(f"{who} already open")
        else:
            click.echo(f"{who} ended ({x['stop_cause']}) after {_duration(x['duration'])}: "
                       f"{x['bytes_in']} bytes in, {x['bytes_out']} bytes out")
    if not r["sessions"]:
        click.echo("no session ended")


@session.command("start")
@click.argument("user")
@click.option("--ip", help="The address the user holds from now.")
@click.option("--port", help="A NAS port; its address comes from [session] ports.")
@click.option("--nas", help="The NAS (address or name) the port belongs to.")
@click.option("--nas-port", "nas_port", help="Same as --port, with --nas.")
@click.option("--mac", help="The MAC address, when known.")
@click.option("--force", is_flag=True, help="End the session of another user holding the "
              "address (refused without).")
@json_option
@click.pass_context
def session_start(ctx, user, ip, port, nas, nas_port, mac, force, as_json):
    """Bind USER to an address (freeside-login). The traffic counted so far
    stays with the address's previous holder; the session-start command of
    [session] runs with user, ip, nasip, nasfqdn in its environment."""
    port = port or nas_port
    if not ip and not port:
        raise click.UsageError("give --ip, or --port (with --nas when ports are per NAS)")
    run(lambda: out(ask(ctx, "session-start", user=user, ip=ip, port=port, nas=nas, mac=mac,
                        force=force), as_json, _session_changes))


@session.command("stop")
@click.argument("user", required=False)
@click.option("--ip", help="The session at this address.")
@click.option("--port", help="The session on this NAS port.")
@click.option("--nas", help="The NAS the port belongs to.")
@click.option("--nas-port", "nas_port", help="Same as --port, with --nas.")
@json_option
@click.pass_context
def session_stop(ctx, user, ip, port, nas, nas_port, as_json):
    """End a session (freeside-logout username ( portnum | ip | nasnum
    nasport )): USER's, or the one at --ip, or on --port (of --nas); each
    one given must match it. It holds no address any more. Exit 1 when no
    open session matches."""
    port = port or nas_port
    if not (user or ip or port):
        raise click.UsageError("give USER, --ip or --port (with --nas when ports are per NAS)")
    run(lambda: out(ask(ctx, "session-stop", user=user, ip=ip, port=port, nas=nas), as_json,
                    _session_changes))


@session.command("list")
@click.argument("user", required=False)
@click.option("--open", "open_only", is_flag=True, help="Only sessions still open.")
@click.option("--limit", default=100, show_default=True)
@json_option
@click.pass_context
def session_list(ctx, user, open_only, limit, as_json):
    """Sessions, newest first, with their exact byte and packet counts."""
    run(lambda: out(ask(ctx, "session-list", user=user, open=open_only, limit=limit),
                      as_json, _session_table))


@session.command("kill-expired")
@json_option
@click.pass_context
def session_kill_expired(ctx, as_json):
    """End the sessions of users whose access is blocked now (schedule it:
    acctctl schedule add time hourly action "session kill-expired")."""
    run(lambda: out(ask(ctx, "session-kill-expired"), as_json, _session_changes))


@click.group("login")
def login_group():
    """The login service (NeTAMS service login): a unit with a login record
    is blocked until it logs in, and again after its timeouts."""


@login_group.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("unit")
@click.argument("words", nargs=-1, required=True)
@json_option
@click.pass_context
def login_set(ctx, unit, words, as_json):
    """UNIT [password P] [inact SEC] [abs SEC] [mac M|none] [strict|nostrict]"""
    def said(r):
        secs = {k: f"{r[k]} sec." if r[k] else "off" for k in ("inact", "abs")}
        echo(f"login of {r['unit']} ({r['oid']}): inactivity timeout {secs['inact']}, "
             f"absolute timeout {secs['abs']}, mac {r['mac'] or 'none'}"
             f"{' (strict)' if r['strict'] else ''}")
    run(lambda: out(ask(ctx, "login-set", unit=unit, words=list(words)), as_json, said))


def _login_cmd(cmd: str):
    @click.argument("unit")
    @click.option("--password-file", type=click.File(), help="Read the password from a file "
                  "(- for stdin); otherwise it is asked for.")
    @click.option("--ip", help="The address the unit logs in from.")
    @click.option("--mac", help="The MAC address it logs in with.")
    @click.pass_context
    def go(ctx, unit, password_file, ip, mac):
        from acctd.services.login import arguments
        run(lambda: arguments(ip, mac))  # a typo is told before the password is asked for
        pw = password_file.readline().rstrip("\n") if password_file else \
            click.prompt("password", hide_input=True)
        r = run(lambda: ask(ctx, cmd, unit=unit, password=pw, ip=ip, mac=mac))
        echo(r["reply"])
        if not r["ok"]:
            raise SystemExit(1)
    return go


login_group.command("in", help="Log UNIT in (NeTAMS login): prints the reply, exit 1 on "
                    "failure.")(_login_cmd("login"))
login_group.command("out", help="Log UNIT out (NeTAMS logout).")(_login_cmd("logout"))


@login_group.command("portal")
@click.argument("unit")
@click.option("--ip", required=True, help="The client's address (the login page's visitor).")
@click.option("--logout", is_flag=True, help="Log out instead.")
@click.option("--password-file", type=click.File(), help="Read the password from a file "
              "(- for stdin); otherwise it is asked for.")
@click.pass_context
def login_portal(ctx, unit, ip, logout, password_file):
    """Log UNIT in from ADDR as a login page does (the console's /hotspot,
    [captive]): prints what the page says, exit 1 on failure."""
    pw = password_file.readline().rstrip("\n") if password_file else \
        click.prompt("password", hide_input=True)
    r = run(lambda: ask(ctx, "portal-login", unit=unit, password=pw, ip=ip, logout=logout))
    echo(r["message"])
    if not r["ok"]:
        raise SystemExit(1)


@login_group.command("show")
@click.argument("unit", required=False)
@json_option
@click.pass_context
def login_show(ctx, unit, as_json):
    """Every login record, or UNIT's, open or closed: opened ago, last used,
    the absolute and inactivity deadlines (show login)."""
    run(lambda: out(ask(ctx, "login-show", unit=unit), as_json,
                      lambda r: echo(r["text"])))


@click.group()
def mac():
    """MAC control (NeTAMS mac control|fixate): units' MACs against the
    kernel's neighbour table."""


@mac.command("check")
@json_option
@click.pass_context
def mac_check(ctx, as_json):
    """Compare now: mismatched units (blocked with mac-control = block)."""
    def render(r):
        table(f"MAC mismatches (mac-control {r['mode'] or 'off'})",
              ["unit", "oid", "address", "expected", "seen"],
              [[m["unit"], oid, m["addr"], m["expected"], m["seen"]]
               for oid, m in sorted(r["mismatched"].items())])
    run(lambda: out(ask(ctx, "mac-check"), as_json, render))


@mac.command("fixate")
@click.option("--overwrite", is_flag=True, help="Replace MACs already recorded.")
@json_option
@click.pass_context
def mac_fixate(ctx, overwrite, as_json):
    """Record the MACs seen now for host and user units (kept in the database)."""
    run(lambda: out(ask(ctx, "mac-fixate", overwrite=overwrite), as_json, lambda r: table(
        f"MACs recorded: {len(r)}", ["unit", "mac"], sorted([u, m] for u, m in r.items()))))


COMMANDS = [session, login_group, mac]
