"""acctd-web: the console's process. Serves the Flask app with waitress on
a local address (put a TLS reverse proxy in front of it and give
--behind-tls); asks the daemon through its control socket, as a viewer
[[user]] of its own (uid acctd-web), and on behalf of whoever logged in."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from acctd.control.server import DEFAULT_SOCKET
from acctd.web.metrics import DEFAULT_ALLOW, parse_allow

log = logging.getLogger("acctd.web")


def listen_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected host:port, e.g. 127.0.0.1:8080, got {text!r}")
    return host.strip("[]"), int(port)


def allow_list(text: str) -> tuple:
    try:
        return parse_allow(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="acctd-web", description=__doc__.splitlines()[0])
    p.add_argument("--socket", default=DEFAULT_SOCKET, help="the daemon's control socket")
    p.add_argument("--listen", type=listen_address, default=("127.0.0.1", 8080),
                   metavar="HOST:PORT", help="where to serve (default 127.0.0.1:8080)")
    p.add_argument("--behind-tls", action="store_true",
                   help="served through a TLS proxy on 127.0.0.1: cookies are Secure, its "
                        "X-Forwarded-Proto and X-Forwarded-For are trusted (the login limit "
                        "per client address needs the client's address)")
    p.add_argument("--metrics-allow", type=allow_list, default=DEFAULT_ALLOW, metavar="NETS",
                   help="addresses or networks (comma-separated) that may scrape /metrics "
                        f"without logging in (default {DEFAULT_ALLOW}; \"\" = none)")
    p.add_argument("--metrics-top-units", type=int, default=0, metavar="N",
                   help="export this month's bytes of the top N units on /metrics (default 0)")
    p.add_argument("--threads", type=int, default=8)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="acctd-web: %(message)s")
    if os.geteuid() == 0:
        log.warning("running as root: run acctd-web as its own unprivileged user "
                    "(packaging/systemd/acctd-web.service)")
    import waitress

    from acctd.web.app import Daemon, create_app
    app = create_app(Daemon(a.socket), secure=a.behind_tls, metrics_allow=a.metrics_allow,
                     metrics_top_units=a.metrics_top_units)
    host, port = a.listen
    extra = {"trusted_proxy": "127.0.0.1",
             "trusted_proxy_headers": "x-forwarded-proto x-forwarded-for"} if a.behind_tls else {}
    try:
        waitress.serve(app, host=host, port=port, threads=a.threads, ident="acctd-web", **extra)
    except OSError as e:
        print(f"acctd-web: cannot listen on {host}:{port}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
