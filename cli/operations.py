"""acctctl: running the daemon: status and health, the live top view, users
and connections, reload, debug, logs, mail, schedules, the config."""

from __future__ import annotations

import json

import click

from acctctl.common import ask, json_option, out, run, table


@click.command()
@json_option
@click.pass_context
def status(ctx, as_json):
    """The daemon: drains, last commit, load, free disk, program ids."""
    def render(st):
        click.echo(f"config      {st['config']}\ndrains      {st['drains']} (last {st['last_drain']})")
        click.echo(f"load        {' '.join(f'{x:.2f}' for x in st['load'])}")
        for path, free in st["disk_free_bytes"].items():
            click.echo(f"disk free   {free / 2**30:.1f} GiB in {path}")
        click.echo(f"programs    {st['datapath']['prog_ids']}")
        _attachment(st["datapath"])
        for name, v in (st.get("services") or {}).items():
            click.echo(f"{name:<11} {json.dumps(v) if isinstance(v, dict) else v}")
    run(lambda: out(ask(ctx, "status"), as_json, render))


def _attachment(dp: dict) -> None:
    """The datapath check of every drain, loud when it found pins or hooks missing."""
    att = dp.get("attachment") or {}
    last = att.get("last_incident")
    if not last:
        return
    state = f"ATTACHED AGAIN ({att['reattached']} time(s))" if last["reattached"] else \
        f"NOT ATTACHED: {last.get('error', '')}"
    click.echo(f"datapath    {state}; at {last['at']}: {'; '.join(last['problems'])}")


@click.command()
@json_option
@click.pass_context
def health(ctx, as_json):
    """Datapath health: map fill, unattributed and dropped bytes, parse errors."""
    def render(st):
        dp = st["datapath"]
        for name, f in dp["fill"].items():
            click.echo(f"{name:<12} {f['entries']}/{f['max']} ({f['percent']}%)")
        click.echo(f"unattributed {dp['unattributed_bytes']} B   dropped {dp['dropped_bytes']} B   "
                   f"flow evictions {dp['flow_evictions']}")
        dropped = dp.get("dropped") or {}
        if any(v["packets"] for v in dropped.values()):
            click.echo("dropped      " + "   ".join(f"{k} {v['packets']} pkts {v['bytes']} B"
                                                   for k, v in dropped.items() if v["packets"]))
        click.echo("health       " + " ".join(f"{k}={v}" for k, v in dp["health"].items() if v))
        _attachment(dp)
    run(lambda: out(ask(ctx, "status")["datapath"] if as_json else ask(ctx, "status"),
                      as_json, render))


@click.command()
@click.option("--once", is_flag=True, help="Print one snapshot and exit (implied off a terminal).")
@click.option("--refresh", type=click.FloatRange(0.1, 1.0), default=1.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--rows", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--view", type=click.Choice(["units", "addrs", "vlans", "ports"]), default="units",
              show_default=True)
@click.option("--sort", type=click.Choice(["rate", "in", "out", "pps_in", "pps_out", "today", "month"]),
              default="rate", show_default=True)
@click.option("--group", default=None, help="Only units (and addresses) of this group.")
@json_option
@click.pass_context
def top(ctx, once, refresh, rows, view, sort, group, as_json):
    """Live top units/addresses/VLANs/ports by current rate, with today and month.

    Keys: s/</> sort column, u/a/v/p what is listed, g/G group filter,
    space pause, +/- rows, q quit."""
    def go():
        import time as _time

        from rich.console import Console

        from acctctl import top as top_mod

        def fetch():
            return ask(ctx, "rates")
        state = top_mod.TopState(view=view, sort=sort, group=group, n=rows)
        if as_json:
            prev = fetch()
            _time.sleep(1.0)
            cur = fetch()
            rws = top_mod.rates(prev, cur)
            click.echo(json.dumps(top_mod.as_json(state, rws, top_mod.totals(cur, view)), indent=1))
            return
        top_mod.top(fetch, Console(), once=once, refresh=refresh, state=state)
    run(go)


@click.command()
@json_option
@click.pass_context
def users(ctx, as_json):
    """Control-socket users and their levels (admin)."""
    run(lambda: out(ask(ctx, "users"), as_json, lambda us: table(
        "users", ["name", "level", "uid", "unix-user", "unix-group"],
        [[u["name"], u["level"], u["uid"] if u["uid"] is not None else "-", u["unix_user"] or "-",
          u["unix_group"] or "-"] for u in us])))


@click.command()
@json_option
@click.pass_context
def connections(ctx, as_json):
    """Who is connected to the control socket now (admin)."""
    run(lambda: out(ask(ctx, "connections"), as_json, lambda cs: table(
        "connections", ["user", "uid", "pid", "since"],
        [[c["user"], c["uid"], c["pid"], c["since"]] for c in cs])))


@click.command()
@click.argument("what", type=click.Choice(["log", "flowlog"]))
@click.pass_context
def rotate(ctx, what):
    """rotate log: reopen the daemon's log file after it was moved.
    rotate flowlog: rename the flow log to FILE.<time> and start a new one,
    losing and repeating no line."""
    run(lambda: click.echo(json.dumps(ask(ctx, f"rotate-{what}"))))


@click.command()
@click.pass_context
def reload(ctx):
    """Re-read units, policies and users (as SIGHUP); programs stay attached."""
    run(lambda: click.echo(json.dumps(ask(ctx, "reload"))))


@click.command()
@click.argument("state", type=click.Choice(["on", "off"]))
@click.argument("category", required=False)
@click.pass_context
def debug(ctx, state, category):
    """Debug logging on or off, for one category (daemon, control, datapath, storage) or all."""
    run(lambda: click.echo(json.dumps(ask(ctx, "debug", on=state == "on", category=category))))


@click.command()
@json_option
@click.pass_context
def alerter(ctx, as_json):
    """The mail outbox: messages waiting, attempts, next try, last error."""
    run(lambda: out(ask(ctx, "alerter"), as_json, lambda rows: table(
        "alerter outbox", ["id", "to", "subject", "attempts", "next try", "last error", "state"],
        [[r["id"], ", ".join(r["to"]), r["subject"], r["attempts"], r["next_try"],
          r["last_error"] or "-", r["state"]] for r in rows])))


@click.group()
def send():
    """Send mail now (NeTAMS send): traffic reports."""


@send.command("report", context_settings={"ignore_unknown_options": True})
@click.argument("words", nargs=-1)
@json_option
@click.pass_context
def send_report(ctx, words, as_json):
    """Queue a traffic report per unit (NeTAMS send report).

    [to {owner}|admin|ADDRESS ...] [on UNIT[+] ...] [period day|week]

    The last complete day (yesterday) or week (Monday to Sunday) in the
    processor time zone: a line per acct-policy with bytes in and out, and
    the unit's total. UNIT+ adds every unit below UNIT; admin is the
    [alerter] admins. Default: every unit with an e-mail, to its owner and
    the admins, period day. Example: acctctl send report to '{owner}' on
    LAN+ period week."""
    from acctd.services.reports import parse
    try:
        req = parse(words)
    except ValueError as e:
        raise click.UsageError(str(e)) from None

    def render(r):
        click.echo(f"{r['period']} from {r['start']} to {r['end']}: "
                   f"{len(r['queued'])} report(s) queued")
        for q in r["queued"]:
            click.echo(f"  {q['unit']}: {', '.join(q['to'])} ({q['id']})")
        for k in r["skipped"]:
            click.echo(f"  {k['unit']}: skipped, {k['reason']}")
    run(lambda: out(ask(ctx, "send-report", **req.to_args()), as_json, render))


@click.group()
def schedule():
    """Scheduled commands (NeTAMS service scheduler), run with your permissions."""


@schedule.command("add", context_settings={"ignore_unknown_options": True})
@click.argument("spec", nargs=-1, required=True)
@click.pass_context
def schedule_add(ctx, spec):
    """Add: time <N sec|min|hour|day|week|month | hourly|daily|weekly|monthly |
    at-HH:MM[+|-]> action "<command> && <command>".

    Example: acctctl schedule add time daily action "flush && list alice".
    The action's commands are checked when it is added: flush, reload,
    units, policies, status, list, stat, debug, send report."""
    run(lambda: click.echo(json.dumps(ask(ctx, "schedule-add", spec=" ".join(spec)))))


@schedule.command("list")
@json_option
@click.pass_context
def schedule_list(ctx, as_json):
    """Entries with the time left until each runs (NeTAMS show schedule)."""
    def render(rows):
        from acctd.services.scheduler import format_table
        click.echo(format_table(rows))
    run(lambda: out(ask(ctx, "schedule-list"), as_json, render))


@schedule.command("del")
@click.argument("oid")
@click.pass_context
def schedule_del(ctx, oid):
    """Delete an entry (its owner, or an admin)."""
    run(lambda: click.echo(json.dumps(ask(ctx, "schedule-del", oid=oid))))


@click.group("config")
def config_():
    """The running configuration."""


@config_.command("show")
@click.option("--unsecure", is_flag=True, help="Show secrets instead of masking them.")
@click.pass_context
def config_show(ctx, unsecure):
    """Print the configuration file the daemon loaded (secrets masked)."""
    run(lambda: click.echo(ask(ctx, "config", unsecure=unsecure)["text"], nl=False))


@click.command()
def version():
    """acctd's version and the datapath ABI it speaks."""
    from acctd import __version__
    from acctd.kernel.abi import ABI_VERSION
    click.echo(f"acctd {__version__} (datapath ABI v{ABI_VERSION})")


@click.command("hash-password")
@click.option("--password-file", type=click.File("r"), default=None,
              help="Read the password from here (else prompted twice).")
def hash_password(password_file):
    """Print an argon2id hash for a [[user]]'s `password` (the TCP listener)."""
    from argon2 import PasswordHasher
    pw = password_file.read().strip() if password_file else \
        click.prompt("password", hide_input=True, confirmation_prompt=True, err=True)
    if len(pw) < 8:
        raise click.UsageError("use at least 8 characters")
    click.echo(PasswordHasher().hash(pw))


COMMANDS = [status, health, top, users, connections, rotate, reload, debug, alerter, send, schedule, config_, version, hash_password]
