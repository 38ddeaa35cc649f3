"""acctd: the accounting daemon, in the foreground.

With --config: hook the configured interfaces, drain every lookup-delay,
account units and policies, commit to DuckDB with the counter checkpoint,
and serve acctctl on the control socket.

Without a config (--lan/--wan): only the datapath loader, which prints each
drain; handy to try the counters without a database.

Either way the interfaces are hooked reusing pinned programs and maps when
they are current (counters continue across restarts), and the programs
stay attached when acctd exits, by SIGTERM or SIGKILL alike.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time

import click

from acctd.errors import AcctError
from acctd.kernel import abi


def parse_hook(spec: str, role: abi.Role):
    from acctd.kernel.datapath import HOOKS, Hook
    name, _, mode = spec.partition(":")
    mode = mode or "tc"
    if mode not in HOOKS:
        raise click.BadParameter(f"{spec}: hook mode must be one of {', '.join(HOOKS)}")
    return Hook(name, role, mode)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="acctd TOML configuration (see acctd.example.toml).")
@click.option("--socket", "socket_path", default=None,
              help="Control socket (default /run/acctd/acctd.sock).")
@click.option("--log-file", default=None, type=click.Path(dir_okay=False),
              help="Log here instead of stderr (`acctctl rotate log` reopens it).")
@click.option("--lan", multiple=True, metavar="IF[:MODE]",
              help="Subscriber-facing interface (accounts). MODE: xdp-native, xdp-generic, tc.")
@click.option("--wan", multiple=True, metavar="IF[:MODE]",
              help="Upstream interface (enforces only, never accounts).")
@click.option("--netns", default=None, help="Network namespace (under /run/netns) of the interfaces.")
@click.option("--pin-root", default=abi.PIN_ROOT, show_default=True)
@click.option("--flows", default=65536, show_default=True, help="Flows expected between drains.")
@click.option("--addrs", default=16384, show_default=True, help="Local addresses with exact counters.")
@click.option("--interval", default=30.0, show_default=True, help="Seconds between drains (lookup-delay).")
@click.option("--once", is_flag=True,
              help="Attach, drain once (with --config: and commit), exit.")
@click.option("--check", is_flag=True,
              help="Check the --config file and its interfaces (in --netns) as a start or reload "
                   "would, and exit (1: refused).")
@click.option("--json", "as_json", is_flag=True, help="Print each drain as a JSON line.")
def main(config_path, socket_path, log_file, lan, wan, netns, pin_root, flows, addrs, interval, once,
         check, as_json):
    """Count traffic per address, port and VLAN with XDP/TC."""
    if check:
        if not config_path:
            raise click.UsageError("--check needs --config")
        sys.exit(check_config(config_path, netns))
    if config_path:
        sys.exit(run_daemon(config_path, socket_path, netns, pin_root, flows, addrs, log_file,
                            once=once))
    from acctd.kernel.build import Sizes
    from acctd.kernel.datapath import Datapath
    from acctd.kernel.reader import Reader

    hooks = [parse_hook(s, abi.Role.LAN) for s in lan] + [parse_hook(s, abi.Role.WAN) for s in wan]
    if not hooks:
        raise click.UsageError("give at least one --lan interface")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        dp = Datapath(Sizes(flows=flows, addrs=addrs, pin_root=pin_root), netns=netns)
        for note in dp.attach(hooks):
            click.echo(f"acctd: {note}", err=True)
        ids = dp.prog_ids()
        print(json.dumps({"event": "attached", "prog_ids": ids,
                          "hooks": [h.__dict__ | {"role": h.role.name} for h in hooks]},
                         default=str), flush=True)
        reader = Reader(dp)
        reader.baseline()
        while True:
            if once or stop.wait(interval):
                report = reader.drain()
                _print(report, as_json)
                break
            _print(reader.drain(), as_json)
    except AcctError as e:
        click.echo(f"acctd: {e}", err=True)
        sys.exit(1)


def check_config(path: str, netns: str | None) -> int:
    """What a start or reload would refuse: the file, and its interfaces in
    the namespace."""
    from acctd import config
    from acctd.daemon.core import interface_error
    from acctd.kernel.datapath import Datapath, NoSuchInterface
    try:
        cfg = config.load(path)
        try:
            Datapath(netns=netns).check_interfaces(i.name for i in cfg.interfaces)
        except NoSuchInterface as e:
            raise interface_error(cfg, e) from None
        click.echo(config.summary(cfg))
    except AcctError as e:
        click.echo(f"acctd: {e}", err=True)
        return 1
    return 0


def run_daemon(config_path, socket_path, netns, pin_root, flows, addrs, log_file=None,
               once: bool = False) -> int:
    from acctd import config
    from acctd.control.server import DEFAULT_SOCKET, ControlServer, TcpControlServer, socket_dir
    from acctd.daemon import instance, log
    from acctd.daemon.core import Daemon
    from acctd.daemon.systemd import Notifier
    from acctd.kernel.build import Sizes
    from acctd.services.flowlog import FlowLogService

    log.setup(path=log_file)
    stop = threading.Event()
    d = None

    def on_stop(*_):
        stop.set()
        if d is not None:
            d.mailbox.wake()
    # Handlers only set flags: the loop does the work, between drains.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_stop)
    signal.signal(signal.SIGHUP, lambda *_: d is not None and d.mailbox.ask_reload())
    signal.signal(signal.SIGUSR1, lambda *_: log.set_debug(True))
    signal.signal(signal.SIGUSR2, lambda *_: log.set_debug(False))
    signal.signal(signal.SIGWINCH, lambda *_: log.log_version())
    socket_path = socket_path or DEFAULT_SOCKET
    try:
        cfg = config.load(config_path)
        # before touching the datapath: a second daemon would take over the socket
        instance.refuse_second(socket_path, cfg.storage.path)
        socket_dir(socket_path)
        d = Daemon(cfg, Sizes(flows=flows, addrs=addrs, pin_root=pin_root), netns=netns)
        d.start()
        if once:  # one drain committed, no socket: cron jobs and tests
            try:
                print(json.dumps({"event": "drained", **d.drain()}), flush=True)
            finally:
                d.close()
            return 0
        server = ControlServer(socket_path, d.dispatcher)
        tcp = TcpControlServer(cfg.server, d.dispatcher) if cfg.server else None
    except AcctError as e:
        if d is not None:  # two started at once: the other one won the database's lock
            try:
                instance.refuse_second(socket_path, cfg.storage.path)
            except AcctError as running:
                e = running
        click.echo(f"acctd: {e}", err=True)
        return 1
    # net-acct: SIGTSTP pauses the flow log (mv it away), SIGCONT resumes
    flowlog = d.service(FlowLogService)
    signal.signal(signal.SIGTSTP, lambda *_: flowlog.set_paused(True))
    signal.signal(signal.SIGCONT, lambda *_: flowlog.set_paused(False))
    server.serve_in_thread()
    if tcp:
        tcp.serve_in_thread()
    for note in d.notices:
        click.echo(f"acctd: {note}", err=True)
    print(json.dumps({"event": "started", "prog_ids": d.dp.prog_ids(), "socket": server.path,
                      "lookup_delay": cfg.processor.lookup_delay}), flush=True)
    sd = Notifier()  # does nothing outside systemd
    sd.ready(f"hooked {len(cfg.interfaces)} interface(s), socket {server.path}")

    try:
        d.run(stop, notifier=sd)
    finally:
        for srv in (server, tcp):
            if srv:
                srv.shutdown()
                srv.server_close()
        d.close()
    return 0


def _print(report: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report), flush=True)
        return
    t = report["totals"]
    print(f"{time.strftime('%H:%M:%S')} in {t['bytes_in']} B / {t['packets_in']} p, "
          f"out {t['bytes_out']} B / {t['packets_out']} p, "
          f"{len(report['addrs'])} addresses moved", flush=True)


if __name__ == "__main__":
    main()
