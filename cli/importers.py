"""acctctl: converting other accountants' configurations."""

from __future__ import annotations

import click

from acctctl.common import run


@click.group("import")
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
    run(go)


COMMANDS = [import_]
