"""acctctl: converting other accountants' configurations."""

from __future__ import annotations

import os

import click

from acctctl.common import run


@click.group("import")
def import_():
    """Convert other accountants' configurations to acctd's."""


def _codec(ctx, param, value: str) -> str:
    import codecs
    try:
        return codecs.lookup(value).name
    except LookupError:
        raise click.BadParameter(f"unknown encoding {value!r}") from None


@import_.command("netams")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the TOML here (default: stdout).")
@click.option("--encoding", default="utf-8", show_default=True, callback=_codec,
              help="The file's encoding (NeTAMS configs are often koi8-r or cp1251).")
def import_netams(file, output, encoding):
    """Translate a NeTAMS config into acctd TOML; report what cannot be carried.

    Every directive that has no equivalent yet is listed on stderr as
    FILE:LINE: directive: reason (and at the top of the TOML); the same
    reason on one line is listed once, with how many more there were.
    Nothing is dropped silently. Exit code 0 even with such warnings.

    The result is loaded as acctd would load it before anything is written;
    a mistake there is reported at its NeTAMS line, with exit code 1. So are
    binary files and bytes that are not in --encoding. A policy whose prefix
    file is missing here is carried with a warning: copy the file to where
    the target names it (relative to the output's directory). The output is
    written owner-only: it may hold `login set` passwords."""
    from acctd.importers import netams

    def go():
        base = os.path.dirname(os.path.abspath(output)) if output else os.getcwd()
        res = netams.import_file(file, encoding, base)
        for w in res.warnings:
            click.echo(w.format(file), err=True)
        netams.check(res, file, output)
        if output:
            from acctd.common.durable import write_file
            try:
                write_file(output, res.toml, 0o600)  # it may hold login passwords
            except OSError as e:
                raise click.FileError(output, e.strerror) from None
            click.echo(f"wrote {output}: {len(res.warnings)} directive(s) not carried", err=True)
        else:
            click.echo(res.toml, nl=False)
    run(go)


COMMANDS = [import_]
