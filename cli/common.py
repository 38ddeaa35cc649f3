"""What every acctctl command shares: asking the daemon (or, with --db, the
database itself) by a command of the registry (acctd/control/commands.py),
the output helpers, and the one place that turns errors into exit codes."""

from __future__ import annotations

import enum
import json
import sys

import click


class Exit(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    NOT_ATTACHED = 3     # no datapath pinned: attach, or start acctd
    PERMISSION = 4       # the daemon refused this uid or this level
    NOT_RUNNING = 5      # no daemon on the control socket


def exit_code(e: Exception) -> Exit:
    """The exit code of an error, from its machine-readable code alone."""
    from acctd.errors import Code, code_of
    return {Code.NOT_ATTACHED: Exit.NOT_ATTACHED, Code.PERMISSION: Exit.PERMISSION,
            Code.NOT_RUNNING: Exit.NOT_RUNNING}.get(code_of(e), Exit.ERROR)


def run(fn):
    """Operator errors print one line and a meaningful exit code."""
    from acctd.errors import AcctError
    try:
        return fn()
    except AcctError as e:
        click.echo(f"acctctl: {escape(e)}", err=True)  # it may quote a name from the wire
        sys.exit(exit_code(e))


def datapath(ctx):
    from acctd.kernel.build import Sizes
    from acctd.kernel.datapath import Datapath
    o = ctx.obj
    return Datapath(Sizes(pin_root=o["pin_root"], flows=o["flows"], addrs=o["addrs"]),
                    netns=o["netns"])


def ask(ctx, name: str, /, **args):
    """Ask the daemon for the registry's command `name`, or with --db answer
    from the database file itself (DuckDB has one writer: never open it
    while the daemon runs)."""
    from acctd.control import commands
    from acctd.errors import BadRequest
    cmd = commands.get(name)
    try:
        bound = cmd.bind(args)  # refused here, not after a round trip
    except BadRequest as e:
        raise click.UsageError(str(e)) from None
    o = ctx.obj
    if o.get("central"):
        return central_answer(ctx, name, bound)
    if o["connect"]:
        from acctd.control.client import call_tcp
        if not o["user"]:
            raise click.UsageError("--connect needs --user")
        if o.get("password") is None:  # once per acctctl run: top asks again and again
            o["password"] = o["password_file"].read().strip() if o["password_file"] else \
                click.prompt("password", hide_input=True, err=True)
        return call_tcp(o["connect"], name, o["user"], o["password"], o["cafile"], **args)
    if not o["db"]:
        from acctd.control.client import call
        return call(o["socket"], name, **args)
    if not cmd.offline:
        raise click.UsageError(f"{' '.join(cmd.cli)} needs the running daemon")
    return _offline(ctx, name, bound)


def _offline(ctx, name: str, args: dict):
    """A command the registry marks offline, from the config and a read-only
    open of the database: the queries the daemon runs."""
    import datetime as dt

    from acctd.config import load
    from acctd.store import queries
    from acctd.store.database import Storage
    o = ctx.obj
    if not o["config"]:
        raise click.UsageError("--db needs --config to know the units and policies")
    cfg = load(o["config"])
    if name == "units":
        return queries.filter_units(queries.report_units(cfg.units), args)
    if name == "policies":
        return queries.report_policies(cfg)
    with Storage(o["db"], cfg.processor.zone, read_only=True) as st, st.reported():
        now = dt.datetime.now(dt.timezone.utc)
        if name == "list" and args["unit"] is None:
            return queries.report_list_all(st, cfg, now)
        if name == "list":
            return queries.report_list(st, cfg, args["unit"], now)
        if name == "stat":
            return queries.report_stat(st, cfg, args["unit"], args["period"], now)
        if name == "series":
            return queries.report_series(st, cfg, now=now, **args)
        if name == "top-units":
            return queries.report_top_units(st, cfg, now=now, **args)
        if name == "top-by":
            return queries.report_top_by(st, cfg, now=now, **args)
        if name == "monitor-query":
            from acctd.services.monitor import answer_query
            return answer_query(st, cfg.units, **args)
    raise click.UsageError(f"{name} has no answer from the database alone")


CENTRAL = ("list", "stat", "quota-show", "top", "sys-policy", "billing-account",
           "billing-ledger", "billing-invoice")


def central_answer(ctx, name: str, args: dict):
    """A command answered from the gateways' shared PostgreSQL
    (acctd/services/central/queries.py); no gateway needs to run."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    import psycopg

    from acctd.errors import AcctError
    from acctd.services.central import queries
    o = ctx.obj
    if name not in CENTRAL:
        raise click.UsageError(f"--central answers {', '.join(CENTRAL)} only, not {name}")
    zone, quota, cfg = ZoneInfo("UTC"), None, None
    if o["config"]:
        from acctd.config import load
        cfg = load(o["config"])
        zone, quota = cfg.processor.zone, cfg.quota
    now = dt.datetime.now(dt.timezone.utc)
    try:
        with psycopg.connect(o["central"], connect_timeout=5) as conn:
            conn.execute("SET TIME ZONE 'UTC'")
            if name == "list":
                return queries.report_list(conn, args.get("unit"), now, zone)
            if name == "stat":
                return queries.report_stat(conn, args["unit"], args["period"], now, zone)
            if name == "sys-policy":
                try:
                    return queries.set_operator_block(conn, args["unit"], args["policy"])
                except ValueError as e:
                    raise click.ClickException(str(e)) from None
            if name == "top":
                return queries.report_top(conn, now, zone, args.get("n", 20))
            if name.startswith("billing-"):
                return _central_billing(conn, name, args, cfg, zone, now)
            if quota is None:
                from acctd.services.quota import QuotaSettings
                quota = QuotaSettings()
            return queries.report_quota(conn, args.get("unit"), now, zone, quota)
    except AcctError as e:    # a bad date or month
        raise click.ClickException(str(e)) from None
    except LookupError as e:
        raise click.ClickException(e.args[0]) from None
    except psycopg.Error as e:
        first = (str(e).strip().splitlines() or [repr(e)])[0]
        raise click.ClickException(f"central {o['central']}: {first}") from None


def _central_billing(conn, name: str, args: dict, cfg, zone, now):
    """`billing account|ledger|invoice` from the server; the tariff (plans,
    currency, time zone) and [invoicing] from --config, else the defaults."""
    from acctd.services.billing.invoicing import InvoicingSettings
    from acctd.services.billing.tariff import BillingSettings
    from acctd.services.central import queries
    billing = cfg.billing if cfg is not None and isinstance(cfg.billing, BillingSettings) \
        else BillingSettings()
    zone = billing.zone(zone)
    if name == "billing-account":
        return queries.report_accounts(conn, args.get("account"), args.get("full", False),
                                       billing, queries.Names(conn), zone)
    if name == "billing-ledger":
        return queries.report_ledger(conn, args["account"], args.get("since"),
                                     args.get("until"), billing, zone)
    invoicing = getattr(cfg, "invoicing", None) or InvoicingSettings()
    return queries.report_invoice(conn, args["account"], args.get("month"), billing, invoicing,
                                  now, zone)


def out(data, as_json: bool, render) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=1, default=str))
    else:
        render(data)


# -- what people read: every printer goes through escape() ---------------------------

def escape(text) -> str:
    """`text` safe on a terminal: every character Python would not print
    (ESC, CR, backspace, C1 controls, bidi overrides, line separators...)
    spelled out as \\x1b, \\r, \\u202e, so a unit name can neither clear the
    screen, move the cursor nor reorder a line."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in s)


def echo(text="") -> None:
    """Print text escaped, but for its newlines and tabs (the daemon's text
    replies are laid out with them)."""
    lines = str(text).removesuffix("\n").split("\n")  # a reply's last newline is echo's own
    click.echo("\n".join("\t".join(escape(part) for part in line.split("\t")) for line in lines))


def health_words(health: dict) -> str:
    """The datapath's non-zero health counters (packets), as `acctctl health`
    and `show` print them."""
    return " ".join(f"{k}={v}" for k, v in health.items() if v) or "no parse errors"


def when(t) -> str:
    """A time from the daemon (ISO 8601, or seconds since the epoch) to the
    second, in its own zone (UTC for epoch seconds); None is "never"."""
    import datetime as dt
    if t is None:
        return "never"
    at = dt.datetime.fromtimestamp(t, dt.timezone.utc) if isinstance(t, (int, float)) else \
        dt.datetime.fromisoformat(t)
    return at.strftime("%Y-%m-%d %H:%M:%S %Z").rstrip()


class Figure(str):
    """A formatted number (bytes, a rate): right-aligned and never cut."""


def nbytes(n) -> Figure:
    """Bytes as every acctctl command shows them (acctd.common.display)."""
    from acctd.common.display import format_bytes
    return Figure(format_bytes(n))


def table(title: str, cols: list[str], rows: list[list], console=None) -> None:
    """A table. Cells are text, never rich markup ("[red]x" prints as is),
    escaped; numbers are never cut: on a terminal narrower than the table
    text columns fold, and off a terminal the table keeps its full width."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text
    cells = [[escape(x) for x in r] for r in rows]
    t = Table(title=Text(escape(title), style="italic"))
    for i, c in enumerate(cols):
        if bool(rows) and all(isinstance(r[i], (int, float, Figure)) for r in rows):
            t.add_column(c, justify="right", no_wrap=True,
                         min_width=max(len(r[i]) for r in cells))
        else:
            t.add_column(c, overflow="fold")
    for r in cells:
        t.add_row(*(Text(x) for x in r))
    console = console or Console(highlight=False)
    if not console.is_terminal:  # a pipe: as wide as the table needs
        console.width = max(console.width, natural_width(console, t))
    console.print(t)


def natural_width(console, renderable) -> int:
    """How wide `renderable` is when nothing limits it."""
    from rich.measure import Measurement
    return Measurement.get(console, console.options.update(width=1 << 16), renderable).maximum


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
