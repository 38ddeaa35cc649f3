"""Sessions (Freeside's session monitor): which user unit holds which address
now. Its settings are the [session] table: the commands run when a session
starts or stops, and the NAS ports a session started by port takes its
address from."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType

from acctd.config.schema import Invalid, Table, number, setting, strings
from acctd.model.addresses import parse_addr


def _command(v, ctx) -> tuple[str, ...]:
    argv = strings("a command as a list, e.g. [\"/usr/local/bin/hook\", \"start\"]",
                   split=False)(v, ctx)
    from acctd.services.access_script import validate
    err = validate(argv[0]) if argv else None
    if err:
        raise Invalid(err.replace("access-script", "command"))
    return argv


def _ports(v, ctx) -> Mapping[str, bytes]:
    if not isinstance(v, Mapping):
        raise Invalid("expected a table of port = address, e.g. { \"nas1:7\" = \"10.0.0.7\" }")
    out = {}
    for port, addr in v.items():
        try:
            out[str(port)] = parse_addr(addr if isinstance(addr, str) else "")
        except ValueError:
            raise Invalid(f"port {port}: expected an address, got {addr!r}") from None
    return MappingProxyType(out)


@dataclasses.dataclass(frozen=True)
class SessionSettings(Table):
    """Freeside-style session commands: argv lists run with the session in
    environment variables (user, ip, nasip, nasfqdn, nasport, mac), and the
    NAS ports ("port" or "nas:port") whose address a session started by port
    takes."""
    start: tuple[str, ...] = setting((), check=_command)
    stop: tuple[str, ...] = setting((), check=_command)
    ports: Mapping[str, bytes] = setting(default_factory=lambda: MappingProxyType({}),
                                         check=_ports)
    hook_timeout: float = setting(10.0, check=number(0, what="seconds", open_lo=True))
