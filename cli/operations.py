"""acctctl: running the daemon: status and health, the live top view, users
and connections, reload, debug, logs, mail, schedules, the config."""

from __future__ import annotations

import json

import click

from acctctl.common import (ask, central_answer, echo, health_words, json_option, nbytes, out,
                            run, table, when)


def _fields(v) -> str:
    """A service's status as text: `key value, key value`, lists space-separated."""
    if isinstance(v, dict):
        return ", ".join(f"{k} {_fields(x)}" for k, x in v.items())
    if isinstance(v, list):
        return " ".join(map(str, v)) or "-"
    return "-" if v is None else str(v)


@click.command()
@json_option
@click.pass_context
def status(ctx, as_json):
    """The daemon: drains, last commit and last error, load, free disk, program ids."""
    def render(st):
        echo(f"config      {st['config']}")
        echo(f"drains      {st['drains']} since start, last committed {when(st['last_drain'])}")
        err, failed = st.get("last_error"), st.get("failed_drains", 0)
        if failed:
            echo(f"FAILING     the last {failed} drain(s) did not commit; the kernel keeps "
                 "counting and the next drain retries")
        if err:
            echo(f"last error  {when(err['at'])}: {err['error']}")
        echo(f"load        {' '.join(f'{x:.2f}' for x in st['load'])}")
        for path, free in st["disk_free_bytes"].items():
            echo(f"disk free   {nbytes(free)} in {path}")
        echo("programs    " + (", ".join(f"{k} {v}" for k, v in st["datapath"]["prog_ids"].items())
                              or "none"))
        _attachment(st["datapath"])
        for name, v in (st.get("services") or {}).items():
            if name == "collector":
                _collector(v)
            else:
                echo(f"{name:<11} {_fields(v)}")
    run(lambda: out(ask(ctx, "status"), as_json, render))


def _collector(st: dict) -> None:
    """A line per data source, and one per exporter it heard from."""
    for src in st["sources"]:
        if src["type"] == "raw":
            echo(f"collector   {src['id']}: raw (acctctl rawdata)")
            continue
        echo(f"collector   {src['id']}: netflow on {src['listen']}, {src['unmatched']} records "
             f"of no unit of this source, {src['refused']} packets from other addresses"
             + (f" (last {src['last_refused']})" if src["refused"] else "")
             + (f", {src['dropped']} flows dropped (too many between drains)"
                if src["dropped"] else ""))
        for addr, e in src["exporters"].items():
            echo(f"  exporter  {addr}: {e['packets']} packets, {e['records']} records, "
                 f"{e['malformed']} malformed, {e['templates']} templates"
                 + (f", {e['unknown_template']} sets before their template"
                    if e["unknown_template"] else "")
                 + (f", {e['refused_templates']} templates over the cap"
                    if e["refused_templates"] else "")
                 + (f", {e['lost']} lost (sequence numbers)" if e.get("lost") else "")
                 + (f"; last error: {e['last_error']}" if e["last_error"] else ""))


def _attachment(dp: dict) -> None:
    """The datapath check of every drain, loud when it found pins or hooks missing."""
    att = dp.get("attachment") or {}
    last = att.get("last_incident")
    if not last:
        return
    state = f"ATTACHED AGAIN ({att['reattached']} time(s))" if last["reattached"] else \
        f"NOT ATTACHED: {last.get('error', '')}"
    echo(f"datapath    {state}; at {when(last['at'])}: {'; '.join(last['problems'])}")


@click.command()
@json_option
@click.pass_context
def health(ctx, as_json):
    """Datapath health: map fill, unattributed and dropped bytes, parse errors."""
    def render(dp):
        for name, f in dp["fill"].items():
            echo(f"{name:<12} {f['entries']}/{f['max']} ({f['percent']}%)")
        echo(f"unattributed {nbytes(dp['unattributed_bytes'])}   dropped "
             f"{nbytes(dp['dropped_bytes'])}   flow evictions {dp['flow_evictions']}")
        dropped = dp.get("dropped") or {}
        if any(v["packets"] for v in dropped.values()):
            echo("dropped      " + "   ".join(f"{k} {v['packets']} pkts {nbytes(v['bytes'])}"
                                             for k, v in dropped.items() if v["packets"]))
        echo("health       " + health_words(dp["health"]))
        _attachment(dp)
    run(lambda: out(ask(ctx, "status")["datapath"], as_json, render))


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

        if ctx.obj.get("central"):   # no rates there: today's and the month's bytes
            out(central_answer(ctx, "top", {"n": rows}), as_json, lambda rs: table(
                "top units today, every gateway", ["unit", "oid", "today in", "today out",
                                                   "month", "gateways"],
                [[r["unit"], r["oid"], nbytes(r["today_in"]), nbytes(r["today_out"]),
                  nbytes(r["month"]), r["gateways"]] for r in rs]))
            return

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
        [[c["user"], c["uid"], c["pid"], when(c["since"])] for c in cs])))


@click.command()
@click.argument("what", type=click.Choice(["log", "flowlog", "monitor"]))
@json_option
@click.pass_context
def rotate(ctx, what, as_json):
    """rotate log: move the daemon's log file (--log-file) to
    FILE.<YYYY-mm-dd_HH:MM> and start a new one (NeTAMS rotate log); one
    logrotate moved already is reopened. rotate flowlog: rename the flow log to FILE.<time> and start a new one,
    losing and repeating no line.
    rotate monitor: the same for the monitor's file, as FILE.%Y-%m-%d_%H:%M
    (NeTAMS `rotate monitor`)."""
    def render(r):
        if what == "flowlog":
            echo(f"flow log {r['flowlog']} moved to {r['rotated_to']}; a new one started")
        elif what == "monitor":
            echo(f"monitor file {r['file']} moved to {r['rotated_to']}; a new one started")
        else:
            echo(r.get("note", "not reopened") if not r["rotated"] else
                 f"log {r['log']} moved to {r['rotated_to']}; a new one started"
                 if r.get("rotated_to") else f"log {r['log']} reopened")
    run(lambda: out(ask(ctx, f"rotate-{what}"), as_json, render))


@click.command()
@json_option
@click.pass_context
def reload(ctx, as_json):
    """Re-read units, policies and users (as SIGHUP); programs stay attached.

    Waits for the daemon's verdict: a config it refuses is named with its
    file:line and the exit code is 1 (the running configuration stays)."""
    def render(v):
        what = f"{', '.join(v['changed'])} changed" if v["changed"] else "no change"
        echo(f"reloaded {v['reloaded']}: {what}")
    run(lambda: out(ask(ctx, "reload"), as_json, render))


@click.command()
@click.argument("state", type=click.Choice(["on", "off"]))
@click.argument("category", required=False)
@json_option
@click.pass_context
def debug(ctx, state, category, as_json):
    """Debug logging on or off, for one category (daemon, control, datapath,
    storage, quota, login, scheduler, alerter, billing, aclserver) or all."""
    run(lambda: out(ask(ctx, "debug", on=state == "on", category=category), as_json,
                    lambda r: echo(f"debug {'on' if r['debug'] else 'off'} for {r['category']}")))


@click.command()
@json_option
@click.pass_context
def alerter(ctx, as_json):
    """The mail outbox: messages waiting, attempts, next try, last error."""
    run(lambda: out(ask(ctx, "alerter"), as_json, lambda rows: table(
        "alerter outbox", ["id", "to", "subject", "attempts", "next try", "last error", "state"],
        [[r["id"], ", ".join(r["to"]), r["subject"], r["attempts"], when(r["next_try"]),
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
        echo(f"{r['period']} from {r['start']} to {r['end']}: {len(r['queued'])} report(s) queued")
        for q in r["queued"]:
            echo(f"  {q['unit']}: {', '.join(q['to'])} ({q['id']})")
        for k in r["skipped"]:
            echo(f"  {k['unit']}: skipped, {k['reason']}")
    run(lambda: out(ask(ctx, "send-report", **req.to_args()), as_json, render))


@click.group()
def schedule():
    """Scheduled commands (NeTAMS service scheduler), run with your permissions."""


@schedule.command("add", context_settings={"ignore_unknown_options": True})
@click.argument("spec", nargs=-1, required=True)
@json_option
@click.pass_context
def schedule_add(ctx, spec, as_json):
    """Add: time <N sec|min|hour|day|week|month | hourly|daily|weekly|monthly |
    at-HH:MM[+|-]> action "<command> && <command>".

    Example: acctctl schedule add time daily action "flush && list alice".
    An action is any acctctl command that asks the daemon, in its words
    (`unit bob sys-deny`, `mac fixate`, `send report ...`), or the NeTAMS
    words for it (`service processor && unit host name bob sys-deny &&
    exit`, `show list`, `debug quota`); it is checked when it is added."""
    run(lambda: out(ask(ctx, "schedule-add", spec=" ".join(spec)), as_json,
                    lambda r: echo(f"schedule entry {r['oid']} added, first run "
                                   f"{when(r['due'])}")))


@schedule.command("list")
@json_option
@click.pass_context
def schedule_list(ctx, as_json):
    """Entries with the time left until each runs (NeTAMS show schedule)."""
    def render(rows):
        from acctd.services.scheduler import format_table
        echo(format_table(rows))
    run(lambda: out(ask(ctx, "schedule-list"), as_json, render))


@schedule.command("del")
@click.argument("oid")
@json_option
@click.pass_context
def schedule_del(ctx, oid, as_json):
    """Delete an entry (its owner, or an admin)."""
    run(lambda: out(ask(ctx, "schedule-del", oid=oid), as_json, lambda r: echo(
        f"schedule entry {r['deleted']} deleted")))


@click.group("config")
def config_():
    """The running configuration, and checking a new one."""


@config_.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
def config_check(path):
    """Check a config file as the daemon would load it (no daemon needed):
    one line, ok and what it holds, or the mistake at file:line, exit 1.
    `acctd --check` also looks the interfaces up."""
    from acctd import config
    run(lambda: click.echo(config.summary(config.load(path))))


@config_.command("show")
@click.option("--unsecure", is_flag=True, help="Show secrets instead of masking them.")
@click.option("--oids", is_flag=True, help="Say each unit's and policy's oid at its name.")
@click.pass_context
def config_show(ctx, unsecure, oids):
    """Print the configuration file the daemon loaded (secrets masked)."""
    run(lambda: echo(ask(ctx, "config", unsecure=unsecure, oids=oids)["text"]
                     .removesuffix("\n")))


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("words", nargs=-1, metavar="[log FILE [--header]]")
@json_option
@click.pass_context
def perf(ctx, words, as_json):
    """The last drains' timings by step, in ms, and the process's CPU and
    memory (NeTAMS show perf). log FILE appends the last drain's line to
    FILE; --header starts FILE anew with the column names (admin)."""
    from acctd.daemon.perf import HEADER, line
    w = list(words)
    if w[:1] == ["log"] and len(w) in (2, 3) and w[2:] in ([], ["--header"], ["header"]):
        run(lambda: out(ask(ctx, "perf-log", file=w[1], header=len(w) == 3), as_json,
                        lambda r: echo(f"{r['lines']} line(s) written to {r['file']}")))
    elif w:
        raise click.UsageError("expected perf, or perf log FILE [--header]")
    else:
        run(lambda: out(ask(ctx, "perf"), as_json,
                        lambda rows: echo("\n".join([HEADER, *map(line, rows)]))))


@click.command()
def version():
    """acctd's version and the datapath ABI it speaks."""
    from acctd.daemon.log import version_text
    click.echo(version_text())


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


COMMANDS = [status, health, top, users, connections, rotate, reload, debug, alerter, send, schedule, config_, version, hash_password, perf]
