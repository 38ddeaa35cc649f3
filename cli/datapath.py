"""acctctl: the datapath without the daemon: attach, detach, the counters
since attach, the BPF source."""

from __future__ import annotations

import click

from acctctl.common import datapath, echo, health_words, json_option, nbytes, out, run, table


@click.command()
@click.option("--lan", multiple=True, metavar="IF[:MODE]", help="Subscriber-facing interface.")
@click.option("--wan", multiple=True, metavar="IF[:MODE]", help="Upstream interface.")
@json_option
@click.pass_context
def attach(ctx, lan, wan, as_json):
    """Build (if needed), pin and hook the programs. Counters continue."""
    from acctd.daemon.main import parse_hook
    from acctd.kernel import abi

    def go():
        dp = datapath(ctx)
        for note in dp.attach([parse_hook(s, abi.Role.LAN) for s in lan] +
                              [parse_hook(s, abi.Role.WAN) for s in wan]):
            click.echo(f"acctctl: {note}", err=True)
        out({"prog_ids": dp.prog_ids()}, as_json, lambda r: echo(
            "attached; programs " + ", ".join(f"{k} {v}" for k, v in r["prog_ids"].items())))
    run(go)


@click.command()
@click.option("--force", is_flag=True,
              help="Detach even while a daemon holds the datapath (it attaches again at its "
                   "next drain, and says so).")
@click.pass_context
def detach(ctx, force):
    """Unhook every interface and remove all pins: nothing is left behind.

    Refused while another process (a running acctd) holds the pinned maps:
    stop it first, or give --force."""
    from acctd.errors import Conflict, NotAttached

    def go():
        dp = datapath(ctx)
        if not dp.exists():
            raise NotAttached(f"nothing to detach: no acctd datapath pinned under {dp.pin_dir}")
        dp.require_access()  # an unprivileged caller: exit 4, before any syscall
        holders = dp.holders()
        who = ", ".join(f"{name} (pid {pid})" for pid, name in holders)
        if holders and not force:
            raise Conflict(f"the datapath under {dp.pin_dir} is in use by {who}: stop it "
                           "first, or `acctctl detach --force` (a running acctd attaches "
                           "again at its next drain)")
        unhooked = dp.detach()
        click.echo(f"detached {len(unhooked)} interface(s), pins removed")
        if holders:
            click.echo(f"acctctl: {who} still holds the old maps", err=True)
    run(go)


@click.command()
@json_option
@click.pass_context
def show(ctx, as_json):
    """Counters since attach: per address, VLAN, port, interface; health."""
    def go():
        from acctd.kernel.reader import Reader
        out(Reader(datapath(ctx).open()).totals(), as_json, _print_report)
    run(go)


def _counters(r: dict) -> list:
    return [r["packets_in"], nbytes(r["bytes_in"]), r["packets_out"], nbytes(r["bytes_out"])]


def _print_report(rep: dict) -> None:
    cols = ["packets in", "bytes in", "packets out", "bytes out"]
    for title, key, rows in (("addresses", "address", rep["addrs"]),
                             ("VLANs", "vlan", rep["vlans"]), ("ports", "port", rep["ports"])):
        table(title, [key, *cols],
              [[str(k), *_counters(r)] for k, r in
               sorted(rows.items(), key=lambda kv: -(kv[1]["bytes_in"] + kv[1]["bytes_out"]))])
    t = rep["totals"]
    echo(f"totals       in {t['packets_in']} pkts {nbytes(t['bytes_in'])}   out "
         f"{t['packets_out']} pkts {nbytes(t['bytes_out'])}")
    echo(f"unattributed in {t['unattr_packets_in']} pkts {nbytes(t['unattr_bytes_in'])}   out "
         f"{t['unattr_packets_out']} pkts {nbytes(t['unattr_bytes_out'])}")
    echo("health       " + health_words(rep["health"]))


@click.command()
@click.pass_context
def source(ctx):
    """Print the exact BPF source and flags the loader compiles."""
    from acctd.kernel.build import Build, Sizes
    o = ctx.obj
    b = Build(Sizes(pin_root=o["pin_root"], flows=o["flows"], addrs=o["addrs"]))
    click.echo(f"/* cflags: {' '.join(b.cflags)} */\n/* build id: {b.build_id:016x} */")
    click.echo(b.source)


COMMANDS = [attach, detach, show, source]
