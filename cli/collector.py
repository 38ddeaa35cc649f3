"""acctctl: the data sources other than the kernel (NeTAMS service
data-source): `rawdata` accounts counts from an outside source."""

from __future__ import annotations

import click

from acctctl.common import ask, echo, json_option, out, run


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("unit")
@click.argument("words", nargs=-1, required=True, metavar="[POLICY] in BYTES out BYTES")
@json_option
@click.pass_context
def rawdata(ctx, unit, words, as_json):
    """Account BYTES for UNIT (and POLICY) from an outside source: NeTAMS
    rawdata, for a [[collector]] of type raw. Committed once, in a drain of
    its own, before this returns."""
    run(lambda: out(ask(ctx, "rawdata", unit=unit, argv=list(words)), as_json, lambda r: echo(
        f"rawdata {r['unit']}{' ' + r['policy'] if r['policy'] else ''}: {r['in']} bytes in, "
        f"{r['out']} bytes out, committed")))


COMMANDS = [rawdata]
