"""acctctl: drive and inspect acctd from a terminal.

Imports stay lazy: `acctctl --help` must not pull in bcc, numpy or pyroute2.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import sys

import click


class Exit(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    NOT_ATTACHED = 3     # no datapath pinned: attach, or start acctd
    PERMISSION = 4       # the daemon refused this uid or this level
    NOT_RUNNING = 5      # no daemon on the control socket


def _datapath(ctx):
    from acctd.kernel.build import Sizes
    from acctd.kernel.datapath import Datapath
    o = ctx.obj
    return Datapath(Sizes(pin_root=o["pin_root"], flows=o["flows"], addrs=o["addrs"]), netns=o["netns"])


def _run(fn):
    """Operator errors print one line and a meaningful exit code."""
    from acctd.control.client import NotRunning
    from acctd.errors import AcctError
    try:
        return fn()
    except AcctError as e:
        text = str(e)
        if isinstance(e, NotRunning):
            code = Exit.NOT_RUNNING
        elif text.startswith("permission denied"):
            code = Exit.PERMISSION
        elif "no acctd datapath pinned" in text:
            code = Exit.NOT_ATTACHED
        else:
            code = Exit.ERROR
        click.echo(f"acctctl: {e}", err=True)
        sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--pin-root", default="/sys/fs/bpf/acctd", show_default=True, help="bpffs directory of the pins.")
@click.option("--netns", default=None, help="Network namespace (under /run/netns) of the interfaces.")
@click.option("--flows", default=65536, show_default=True, help="Flow table size (attach).")
@click.option("--addrs", default=16384, show_default=True, help="Address table size (attach).")
@click.option("--socket", "socket_path", default="/run/acctd/acctd.sock", show_default=True,
              help="The daemon's control socket.")
@click.option("--db", type=click.Path(dir_okay=False), default=None,
              help="Read this database directly (only while the daemon is stopped).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Config for unit and policy names with --db.")
@click.option("--connect", default=None, metavar="HOST:PORT",
              help="Use the daemon's TLS listener instead of the local socket.")
@click.option("--user", default=None, help="User name for --connect.")
@click.option("--password-file", type=click.File("r"), default=None,
              help="File holding the password for --connect (else prompted).")
@click.option("--cafile", type=click.Path(dir_okay=False), default=None,
              help="CA (or the server's own) certificate to check --connect against.")
@click.pass_context
def main(ctx, pin_root, netns, flows, addrs, socket_path, db, config_path, connect, user,
         password_file, cafile):
    """Operate the acctd traffic accountant."""
    ctx.obj = dict(pin_root=pin_root, netns=netns, flows=flows, addrs=addrs,
                   socket=socket_path, db=db, config=config_path, connect=connect, user=user,
                   password_file=password_file, cafile=cafile)


def _ask(ctx, cmd: str, **args):
    """Ask the daemon, or with --db answer from the database file itself
    (DuckDB has one writer: never open it while the daemon runs)."""
    o = ctx.obj
    if o["connect"]:
        from acctd.control.client import call_tcp
        if not o["user"]:
            raise click.UsageError("--connect needs --user")
        password = o["password_file"].read().strip() if o["password_file"] else \
            click.prompt("password", hide_input=True, err=True)
        return call_tcp(o["connect"], cmd, o["user"], password, o["cafile"], **args)
    if not o["db"]:
        from acctd.control.client import call
        return call(o["socket"], cmd, **args)
    import datetime as dt

    from acctd.config import load
    from acctd.store import queries
    from acctd.store.database import Storage
    if not o["config"]:
        raise click.UsageError("--db needs --config to know the units and policies")
    cfg = load(o["config"])
    if cmd in ("units", "policies"):
        return getattr(queries, f"report_{cmd}")(cfg)
    if cmd not in ("list", "stat"):
        raise click.UsageError(f"{cmd} needs the running daemon")
    with Storage(o["db"], cfg.processor.zone, read_only=True) as st:
        now = dt.datetime.now(dt.timezone.utc)
        if cmd == "list":
            return queries.report_list(st, cfg, args["unit"], now)
        return queries.report_stat(st, cfg, args["unit"], args["period"], now)


def _out(data, as_json: bool, render) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=1, default=str))
    else:
        render(data)


def _table(title: str, cols: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table
    t = Table(title=title)
    for i, c in enumerate(cols):
        numeric = bool(rows) and all(isinstance(r[i], (int, float)) for r in rows)
        t.add_column(c, justify="right" if numeric else "left")
    for r in rows:
        t.add_row(*(str(x) for x in r))
    Console().print(t)


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@main.command()
@click.pass_context
def flush(ctx):
    """Drain and commit now; returns after the commit."""
    _run(lambda: click.echo(json.dumps(_ask(ctx, "flush"))))


@main.command()
@click.option("--type", "type_", type=click.Choice(["host", "cluster", "net", "user", "group"]))
@click.option("--name", help="Names containing this.")
@click.option("--email", help="E-mails containing this.")
@click.option("--policy", help="Units whose acct-policy list names this policy.")
@click.option("--syspolicy", is_flag=True, help="Only units with a system policy set (blocked...).")
@click.option("--mac", "show_mac", is_flag=True, help="Show each unit's MAC (mac-control).")
@json_option
@click.pass_context
def units(ctx, type_, name, email, policy, syspolicy, show_mac, as_json):
    """The configured units, with filters (NeTAMS show units)."""
    def get():
        from acctd.store.queries import filter_units
        f = {"type": type_, "name": name, "email": email, "policy": policy, "syspolicy": syspolicy}
        return filter_units(_ask(ctx, "units"), f)
    cols = ["name", "oid", "type", "addresses", "parents", "acct-policy"]

    def render(us):
        extra = any("sys_policy" in u for u in us)
        _table("units", cols + (["mac"] if show_mac else []) + (["sys-policy"] if extra else []),
               [[u["name"], u["oid"], u["type"], " ".join(u["addrs"] + u["nets"]),
                 ",".join(u["parents"]), " ".join(u["acct_policy"])] +
                ([u.get("mac") or "-"] if show_mac else []) +
                ([" ".join(u.get("sys_policy", []))] if extra else []) for u in us])
    _run(lambda: _out(get(), as_json, render))


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("words", nargs=-1, required=True,
                metavar="NAME sys-... | add host|user NAME [ip A|auto] [parent G]... | del NAME")
@click.pass_context
def unit(ctx, words):
    """A unit's system policy; add or delete units made at run time.

    NAME sys-deny|sys-allow|sys-{deny|allow}-{quota|login|money|mac}: the
    kernel drops or passes the unit's addresses at once, and it stays so
    across restarts (NeTAMS unit ... sys-deny).

    add host|user NAME [ip A|auto] [parent G]... [email E]: a unit made at
    run time, kept in the database; `ip auto` takes the next free address of
    [processor] auto-assign and prints it. del NAME removes such a unit."""
    w = list(words)
    if w[0] == "add":
        if len(w) < 3 or w[1] not in ("host", "user"):
            raise click.UsageError("unit add host|user NAME [ip A|auto] [parent G]... [email E]")
        args = {"kind": w[1], "name": w[2], "parents": []}
        rest = w[3:]
        while rest:
            if len(rest) < 2 or rest[0] not in ("ip", "parent", "email"):
                raise click.UsageError(f"unit add: expected ip, parent or email, got {rest[0]!r}")
            if rest[0] == "parent":
                args["parents"].append(rest[1])
            else:
                args[rest[0]] = rest[1]
            rest = rest[2:]
        _run(lambda: click.echo(json.dumps(_ask(ctx, "unit-add", **args))))
    elif w[0] == "del" and len(w) == 2:
        _run(lambda: click.echo(json.dumps(_ask(ctx, "unit-del", name=w[1]))))
    elif len(w) == 2:
        _run(lambda: click.echo(json.dumps(_ask(ctx, "sys", unit=w[0], policy=w[1]))))
    else:
        raise click.UsageError("expected NAME sys-..., add ... or del NAME")


@main.group()
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
    _run(lambda: _out(_ask(ctx, "fticks-import", paths=paths), as_json,
                      lambda r: click.echo(r["text"])))


@fticks.command("report")
@click.option("--since", help="First day (YYYY-MM-DD).")
@json_option
@click.pass_context
def fticks_report(ctx, since, as_json):
    """Logins per day x realm x visited country x result."""
    _run(lambda: _out(_ask(ctx, "fticks-report", since=since), as_json,
                      lambda r: click.echo(r["text"])))


@main.group()
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
@click.pass_context
def radius_import(ctx, details, sqlite, postgres, since, chunk):
    """Read sessions (address-to-user history and NAS-reported usage) and
    store them, with a progress bar; sessions already imported are skipped,
    so an interrupted import is finished by running it again."""
    import datetime as dt

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
        with Progress(transient=not sys.stderr.isatty()) as bar:
            task = bar.add_task("importing sessions", total=len(sess))
            for i in range(0, len(sess), chunk):
                part = sess[i:i + chunk]
                for k, v in _ask(ctx, "radius-import", sessions=part).items():
                    if isinstance(v, int):
                        totals[k] = totals.get(k, 0) + v
                bar.advance(task, len(part))
        totals["malformed_records"] = malformed
        click.echo(json.dumps(totals))
    _run(go)


@main.command("openvpn-hook")
@click.pass_context
def openvpn_hook(ctx):
    """client-connect / client-disconnect script for OpenVPN servers without
    a management interface (--script-security 2): reports the session to the
    daemon from OpenVPN's environment. Exit 1 refuses a blocked client; 2 is
    an error (OpenVPN refuses then too: accounting fails closed)."""
    from acctd.aaa.openvpn import HookError, HookExit, hook_main
    from acctd.control.client import NotRunning
    from acctd.errors import AcctError
    try:
        event = hook_main(os.environ)
        reply = _ask(ctx, "openvpn-event", event=event)
    except (HookError, AcctError, NotRunning, OSError) as e:
        click.echo(f"acctctl openvpn-hook: {e}", err=True)
        sys.exit(HookExit.ERROR)
    if not reply.get("allowed", True):
        click.echo(f"acctctl openvpn-hook: refused: {reply.get('reason')}", err=True)
        sys.exit(HookExit.REFUSED)
    sys.exit(HookExit.OK)


@main.group()
def openvpn():
    """OpenVPN sessions from the management interface."""


@openvpn.command("clients")
@json_option
@click.pass_context
def openvpn_clients(ctx, as_json):
    """Connected clients with the server's byte counts."""
    _run(lambda: _out(_ask(ctx, "openvpn-clients"), as_json, lambda rows: _table(
        "openvpn clients", ["user", "cid", "vpn address", "in B", "out B"],
        [[r["user"], r["cid"], r["vpn_addr"], r["bytes_in"], r["bytes_out"]] for r in rows])))


@openvpn.command("interval")
@click.argument("user")
@click.argument("seconds", type=int, required=False)
@click.pass_context
def openvpn_interval(ctx, user, seconds):
    """Set USER's interim interval while connected (none: back to the default)."""
    _run(lambda: click.echo(json.dumps(_ask(ctx, "openvpn-interval", user=user, seconds=seconds))))


@main.group()
def mac():
    """MAC control (NeTAMS mac control|fixate): units' MACs against the
    kernel's neighbour table."""


@mac.command("check")
@json_option
@click.pass_context
def mac_check(ctx, as_json):
    """Compare now: mismatched units (blocked with mac-control = block)."""
    _run(lambda: _out(_ask(ctx, "mac-check"), as_json,
                      lambda r: click.echo(json.dumps(r, indent=1))))


@mac.command("fixate")
@click.option("--overwrite", is_flag=True, help="Replace MACs already recorded.")
@json_option
@click.pass_context
def mac_fixate(ctx, overwrite, as_json):
    """Record the MACs seen now for host and user units (kept in the database)."""
    _run(lambda: _out(_ask(ctx, "mac-fixate", overwrite=overwrite), as_json,
                      lambda r: click.echo(json.dumps(r, indent=1))))


@main.command()
@json_option
@click.pass_context
def policies(ctx, as_json):
    """The configured policies and their targets."""
    _run(lambda: _out(_ask(ctx, "policies"), as_json, lambda ps: _table(
        "policies", ["name", "oid", "target"], [[p["name"], p["oid"], p["target"]] for p in ps])))


@main.command("list")
@click.argument("unit")
@json_option
@click.pass_context
def list_(ctx, unit, as_json):
    """Per policy: in/out for the last drain, hour, day, week, month (show list full)."""
    def render(r):
        rows = [[p["policy"], p["dir"], *(p[k]["bytes"] for k in ("flow", "hour", "day", "week", "month"))]
                for p in r["policies"]]
        _table(f"{r['unit']} ({r['oid']}), bytes", ["policy", "dir", "flow", "hour", "day", "week", "month"], rows)
        if "checks" in r:
            _table("acct-policy walk since the daemon started (flows)", ["policy", "", "check", "match"],
                   [[c["policy"], "", c["check"], c["match"]] for c in r["checks"]])
    _run(lambda: _out(_ask(ctx, "list", unit=unit), as_json, render))


@main.command()
@click.argument("unit")
@click.option("--period", type=click.Choice(["week", "month"]), default="week", show_default=True)
@json_option
@click.pass_context
def stat(ctx, unit, period, as_json):
    """Hourly rows of this week or month (show stat)."""
    _run(lambda: _out(_ask(ctx, "stat", unit=unit, period=period), as_json, lambda r: _table(
        f"{r['unit']} ({r['oid']}), {period}", ["hour", "policy", "dir", "packets", "bytes"],
        [[x["hour"], x["policy"], x["dir"], x["packets"], x["bytes"]] for x in r["rows"]])))


@main.command()
@click.option("--lan", multiple=True, metavar="IF[:MODE]", help="Subscriber-facing interface.")
@click.option("--wan", multiple=True, metavar="IF[:MODE]", help="Upstream interface.")
@click.pass_context
def attach(ctx, lan, wan):
    """Build (if needed), pin and hook the programs. Counters continue."""
    from acctd.daemon.main import parse_hook
    from acctd.kernel import abi

    def go():
        dp = _datapath(ctx)
        for note in dp.attach([parse_hook(s, abi.Role.LAN) for s in lan] +
                              [parse_hook(s, abi.Role.WAN) for s in wan]):
            click.echo(f"acctctl: {note}", err=True)
        click.echo(json.dumps({"prog_ids": dp.prog_ids()}))
    _run(go)


@main.command()
@click.pass_context
def detach(ctx):
    """Unhook every interface and remove all pins: nothing is left behind."""
    def go():
        unhooked = _datapath(ctx).detach()
        click.echo(f"detached {len(unhooked)} interface(s), pins removed")
    _run(go)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def show(ctx, as_json):
    """Counters since attach: per address, VLAN, port, interface; health."""
    def go():
        from acctd.kernel.reader import Reader
        rep = Reader(_datapath(ctx).open()).totals()
        if as_json:
            click.echo(json.dumps(rep, indent=1))
            return
        _print_report(rep)
    _run(go)


def _print_report(rep: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    con = Console()
    for title, rows in (("addresses", rep["addrs"]), ("VLANs", rep["vlans"]), ("ports", rep["ports"])):
        t = Table(title=title)
        for col in ("key", "packets_in", "bytes_in", "packets_out", "bytes_out"):
            t.add_column(col, justify="right" if col != "key" else "left")
        for k, r in sorted(rows.items(), key=lambda kv: -(kv[1]["bytes_in"] + kv[1]["bytes_out"])):
            t.add_row(str(k), *(str(r[c]) for c in ("packets_in", "bytes_in", "packets_out", "bytes_out")))
        con.print(t)
    con.print("totals:", rep["totals"])
    con.print("health:", rep["health"])


@main.command()
def version():
    """acctd's version and the datapath ABI it speaks."""
    from acctd import __version__
    from acctd.kernel.abi import ABI_VERSION
    click.echo(f"acctd {__version__} (datapath ABI v{ABI_VERSION})")


@main.command()
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
        for name, v in (st.get("services") or {}).items():
            click.echo(f"{name:<11} {json.dumps(v) if isinstance(v, dict) else v}")
    _run(lambda: _out(_ask(ctx, "status"), as_json, render))


@main.command()
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
    _run(lambda: _out(_ask(ctx, "status")["datapath"] if as_json else _ask(ctx, "status"),
                      as_json, render))


@main.command()
@json_option
@click.pass_context
def users(ctx, as_json):
    """Control-socket users and their levels (admin)."""
    _run(lambda: _out(_ask(ctx, "users"), as_json, lambda us: _table(
        "users", ["name", "level", "uid", "unix-user", "unix-group"],
        [[u["name"], u["level"], u["uid"] if u["uid"] is not None else "-", u["unix_user"] or "-",
          u["unix_group"] or "-"] for u in us])))


@main.command()
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
        from acctd.control.client import call

        def fetch():
            return call(ctx.obj["socket"], "rates")
        state = top_mod.TopState(view=view, sort=sort, group=group, n=rows)
        if as_json:
            prev = fetch()
            _time.sleep(1.0)
            cur = fetch()
            rws = top_mod.rates(prev, cur)
            click.echo(json.dumps(top_mod.as_json(state, rws, top_mod.totals(cur, view)), indent=1))
            return
        top_mod.top(fetch, Console(), once=once, refresh=refresh, state=state)
    _run(go)


@main.command()
@json_option
@click.pass_context
def connections(ctx, as_json):
    """Who is connected to the control socket now (admin)."""
    _run(lambda: _out(_ask(ctx, "connections"), as_json, lambda cs: _table(
        "connections", ["user", "uid", "pid", "since"],
        [[c["user"], c["uid"], c["pid"], c["since"]] for c in cs])))


@main.command()
@click.argument("what", type=click.Choice(["log", "flowlog"]))
@click.pass_context
def rotate(ctx, what):
    """rotate log: reopen the daemon's log file after it was moved.
    rotate flowlog: rename the flow log to FILE.<time> and start a new one,
    losing and repeating no line."""
    _run(lambda: click.echo(json.dumps(_ask(ctx, "rotate", what=what))))


@main.command()
@click.pass_context
def reload(ctx):
    """Re-read units, policies and users (as SIGHUP); programs stay attached."""
    _run(lambda: click.echo(json.dumps(_ask(ctx, "reload"))))


@main.command()
@click.argument("state", type=click.Choice(["on", "off"]))
@click.argument("category", required=False)
@click.pass_context
def debug(ctx, state, category):
    """Debug logging on or off, for one category (daemon, control, datapath, storage) or all."""
    _run(lambda: click.echo(json.dumps(_ask(ctx, "debug", on=state == "on", category=category))))


@main.group()
def quota():
    """Traffic quotas (NeTAMS service quota), kept in the database."""


@quota.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("words", nargs=-1, required=True)
@click.pass_context
def quota_set(ctx, words):
    """NAME [hour|day|week|month AMOUNT in|out|sum]... [soft-threshold N]
    [policy P] [block-policy P] [active|inactive] [notify ...]

    Example: acctctl quota set alice day 3M in month 100M sum. AMOUNT takes
    K, M, G (1024-based); 0 removes that quota. A hard quota blocks the unit
    in the kernel at the next drain; the next period lets it back."""
    _run(lambda: click.echo(json.dumps(_ask(ctx, "quota-set", argv=list(words)))))


@quota.command("show")
@click.argument("unit", required=False)
@click.option("--list", "list_only", is_flag=True, help="Only the units with an active quota.")
@json_option
@click.pass_context
def quota_show(ctx, unit, list_only, as_json):
    """Usage, quota, ratio and [+]/[-] per limit (NeTAMS show quota)."""
    def go():
        r = _ask(ctx, "quota-show", unit=unit, list=list_only)
        click.echo(json.dumps(r["units"], indent=1) if as_json else r["text"])
    _run(go)


@main.group("login")
def login_group():
    """The login service (NeTAMS service login): a unit with a login record
    is blocked until it logs in, and again after its timeouts."""


@login_group.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("unit")
@click.argument("words", nargs=-1, required=True)
@click.pass_context
def login_set(ctx, unit, words):
    """UNIT [password P] [inact SEC] [abs SEC] [mac M|none] [strict|nostrict]"""
    _run(lambda: click.echo(json.dumps(_ask(ctx, "login-set", unit=unit, words=list(words)))))


def _login_cmd(cmd: str):
    @click.argument("unit")
    @click.option("--password-file", type=click.File(), help="Read the password from a file "
                  "(- for stdin); otherwise it is asked for.")
    @click.option("--ip", help="The address the unit logs in from.")
    @click.option("--mac", help="The MAC address it logs in with.")
    @click.pass_context
    def go(ctx, unit, password_file, ip, mac):
        pw = password_file.readline().rstrip("\n") if password_file else \
            click.prompt("password", hide_input=True)
        r = _ask(ctx, cmd, unit=unit, password=pw, ip=ip, mac=mac)
        click.echo(r["reply"])
        if not r["ok"]:
            raise SystemExit(1)
    return go


login_group.command("in", help="Log UNIT in (NeTAMS login): prints the reply, exit 1 on "
                    "failure.")(_login_cmd("login"))
login_group.command("out", help="Log UNIT out (NeTAMS logout).")(_login_cmd("logout"))


@login_group.command("show")
@click.argument("unit", required=False)
@json_option
@click.pass_context
def login_show(ctx, unit, as_json):
    """Opened ago, last used, absolute and inactivity deadlines (show login)."""
    _run(lambda: _out(_ask(ctx, "login-show", unit=unit), as_json,
                      lambda r: click.echo(r["text"])))


@main.group()
def session():
    """User sessions: which user unit holds which address (Freeside-style)."""


def _session_rows(r) -> None:
    rows = r["sessions"] if isinstance(r, dict) else r
    _table("sessions", ["id", "user", "addr", "source", "start", "stop", "cause", "in B", "out B"],
           [[x["id"], x.get("user", x["unit_oid"]), x["addr"], x["source"], str(x["start"]),
             str(x["stop"] or "-"), x["stop_cause"] or "-", x["bytes_in"], x["bytes_out"]]
            for x in rows])


@session.command("start")
@click.argument("user")
@click.option("--ip", help="The address the user holds from now.")
@click.option("--port", help="A NAS port; its address comes from [session] ports.")
@click.option("--nas", help="The NAS (address or name) the port belongs to.")
@click.option("--nas-port", "nas_port", help="Same as --port, with --nas.")
@click.option("--mac", help="The MAC address, when known.")
@json_option
@click.pass_context
def session_start(ctx, user, ip, port, nas, nas_port, mac, as_json):
    """Bind USER to an address (freeside-login). The traffic counted so far
    stays with the address's previous holder; the session-start command of
    [session] runs with user, ip, nasip, nasfqdn in its environment."""
    port = port or nas_port
    if not ip and not port:
        raise click.UsageError("give --ip, or --port (with --nas when ports are per NAS)")
    _run(lambda: _out(_ask(ctx, "session-start", user=user, ip=ip, port=port, nas=nas, mac=mac),
                      as_json, _session_rows))


@session.command("stop")
@click.argument("user")
@json_option
@click.pass_context
def session_stop(ctx, user, as_json):
    """End USER's session (freeside-logout): it holds no address any more."""
    _run(lambda: _out(_ask(ctx, "session-stop", user=user), as_json, _session_rows))


@session.command("list")
@click.argument("user", required=False)
@click.option("--open", "open_only", is_flag=True, help="Only sessions still open.")
@click.option("--limit", default=100, show_default=True)
@json_option
@click.pass_context
def session_list(ctx, user, open_only, limit, as_json):
    """Sessions, newest first, with their exact byte counts."""
    _run(lambda: _out(_ask(ctx, "session-list", user=user, open=open_only, limit=limit),
                      as_json, _session_rows))


@session.command("kill-expired")
@json_option
@click.pass_context
def session_kill_expired(ctx, as_json):
    """End the sessions of users whose access is blocked now (schedule it:
    acctctl schedule add time hourly action "session kill-expired")."""
    _run(lambda: _out(_ask(ctx, "session-kill-expired"), as_json, _session_rows))


@main.command()
@json_option
@click.pass_context
def alerter(ctx, as_json):
    """The mail outbox: messages waiting, attempts, next try, last error."""
    _run(lambda: _out(_ask(ctx, "alerter"), as_json, lambda rows: _table(
        "alerter outbox", ["id", "to", "subject", "attempts", "next try", "last error", "state"],
        [[r["id"], ", ".join(r["to"]), r["subject"], r["attempts"], r["next_try"],
          r["last_error"] or "-", r["state"]] for r in rows])))


@main.group()
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
    _run(lambda: _out(_ask(ctx, "send-report", **req.to_args()), as_json, render))


@main.group()
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
    _run(lambda: click.echo(json.dumps(_ask(ctx, "schedule-add", spec=" ".join(spec)))))


@schedule.command("list")
@json_option
@click.pass_context
def schedule_list(ctx, as_json):
    """Entries with the time left until each runs (NeTAMS show schedule)."""
    def render(rows):
        from acctd.services.scheduler import format_table
        click.echo(format_table(rows))
    _run(lambda: _out(_ask(ctx, "schedule-list"), as_json, render))


@schedule.command("del")
@click.argument("oid")
@click.pass_context
def schedule_del(ctx, oid):
    """Delete an entry (its owner, or an admin)."""
    _run(lambda: click.echo(json.dumps(_ask(ctx, "schedule-del", oid=oid))))


@main.group("config")
def config_():
    """The running configuration."""


@config_.command("show")
@click.option("--unsecure", is_flag=True, help="Show secrets instead of masking them.")
@click.pass_context
def config_show(ctx, unsecure):
    """Print the configuration file the daemon loaded (secrets masked)."""
    _run(lambda: click.echo(_ask(ctx, "config", unsecure=unsecure)["text"], nl=False))


@main.command("hash-password")
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


@main.group("import")
def import_():
    """Convert other accountants' configurations to acctd's."""


@import_.command("netams")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the TOML here (default: stdout).")
def import_netams(file, output):
    """Translate a NeTAMS config into acctd TOML; report what cannot be carried.

    Every directive that has no equivalent yet is listed on stderr as
    FILE:LINE: directive: reason (and at the top of the TOML); nothing is
    dropped silently. Exit code 0 even with such warnings."""
    from acctd.config import loads
    from acctd.importers.netams import import_file

    def go():
        res = import_file(file)
        for w in res.warnings:
            click.echo(w.format(file), err=True)
        loads(res.toml, output or "<imported>")  # the result must load
        if output:
            with open(output, "w") as f:
                f.write(res.toml)
            click.echo(f"wrote {output}: {len(res.warnings)} directive(s) not carried", err=True)
        else:
            click.echo(res.toml, nl=False)
    _run(go)


@main.command()
@click.pass_context
def source(ctx):
    """Print the exact BPF source and flags the loader compiles."""
    from acctd.kernel.build import Build, Sizes
    o = ctx.obj
    b = Build(Sizes(pin_root=o["pin_root"], flows=o["flows"], addrs=o["addrs"]))
    click.echo(f"/* cflags: {' '.join(b.cflags)} */\n/* build id: {b.build_id:016x} */")
    click.echo(b.source)


if __name__ == "__main__":
    main()
