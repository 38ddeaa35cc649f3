"""acctctl: drive and inspect acctd from a terminal.

Imports stay lazy: `acctctl --help` must not pull in bcc, numpy or pyroute2.
"""

from __future__ import annotations

import enum
import json
import sys

import click


class Exit(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    NOT_ATTACHED = 3


def _datapath(ctx):
    from acctd.build import Sizes
    from acctd.datapath import Datapath
    o = ctx.obj
    return Datapath(Sizes(pin_root=o["pin_root"], flows=o["flows"], addrs=o["addrs"]), netns=o["netns"])


def _run(fn):
    """Operator errors print one line and a meaningful exit code."""
    from acctd.errors import AcctError
    try:
        return fn()
    except AcctError as e:
        code = Exit.NOT_ATTACHED if "no acctd datapath pinned" in str(e) else Exit.ERROR
        click.echo(f"acctctl: {e}", err=True)
        sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--pin-root", default="/sys/fs/bpf/acctd", show_default=True, help="bpffs directory of the pins.")
@click.option("--netns", default=None, help="Network namespace (under /run/netns) of the interfaces.")
@click.option("--flows", default=65536, show_default=True, help="Flow table size (attach).")
@click.option("--addrs", default=16384, show_default=True, help="Address table size (attach).")
@click.pass_context
def main(ctx, pin_root, netns, flows, addrs):
    """Operate the acctd traffic accountant."""
    ctx.obj = dict(pin_root=pin_root, netns=netns, flows=flows, addrs=addrs)


@main.command()
@click.option("--lan", multiple=True, metavar="IF[:MODE]", help="Subscriber-facing interface.")
@click.option("--wan", multiple=True, metavar="IF[:MODE]", help="Upstream interface.")
@click.pass_context
def attach(ctx, lan, wan):
    """Build (if needed), pin and hook the programs. Counters continue."""
    from acctd import abi
    from acctd.main import parse_hook

    def go():
        dp = _datapath(ctx)
        dp.attach([parse_hook(s, abi.Role.LAN) for s in lan] + [parse_hook(s, abi.Role.WAN) for s in wan])
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
        from acctd.reader import Reader
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
    from acctd.netams import import_file

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
    from acctd.build import Build, Sizes
    o = ctx.obj
    b = Build(Sizes(pin_root=o["pin_root"], flows=o["flows"], addrs=o["addrs"]))
    click.echo(f"/* cflags: {' '.join(b.cflags)} */\n/* build id: {b.build_id:016x} */")
    click.echo(b.source)


if __name__ == "__main__":
    main()
