"""acctctl: drive and inspect acctd from a terminal.

One click group; the commands live by area (accounting, blocks,
billing, subscribers, aaa, operations, datapath, importers, monitor), each asking the daemon
for a command of the registry (acctd/control/commands.py) through
acctctl.common, which also maps errors to exit codes. Imports stay lazy:
`acctctl --help` must not pull in bcc, numpy or pyroute2.
"""

from __future__ import annotations

import click

from acctctl import (aaa, accounting, billing, blocks, collector, datapath, importers, invoicing,
                     monitor, operations, subscribers, web)
from acctctl.common import Exit

__all__ = ["Exit", "main"]


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
              help="Config for unit and policy names with --db (the zone with --central).")
@click.option("--central", default=None, metavar="DSN",
              help="Read the gateways' shared PostgreSQL (list, stat, top, quota show).")
@click.option("--connect", default=None, metavar="HOST:PORT",
              help="Use the daemon's TLS listener instead of the local socket.")
@click.option("--user", default=None, help="User name for --connect.")
@click.option("--password-file", type=click.File("r"), default=None,
              help="File holding the password for --connect (else prompted).")
@click.option("--cafile", type=click.Path(dir_okay=False), default=None,
              help="CA (or the server's own) certificate to check --connect against.")
@click.pass_context
def main(ctx, pin_root, netns, flows, addrs, socket_path, db, config_path, central, connect,
         user, password_file, cafile):
    """Operate the acctd traffic accountant."""
    ctx.obj = dict(pin_root=pin_root, netns=netns, flows=flows, addrs=addrs,
                   socket=socket_path, db=db, config=config_path, central=central,
                   connect=connect, user=user, password_file=password_file, cafile=cafile)


for _area in (accounting, blocks, billing, invoicing, subscribers, aaa, operations, datapath,
              importers, monitor, collector, web):
    for _cmd in _area.COMMANDS:
        main.add_command(_cmd)


if __name__ == "__main__":
    main()
