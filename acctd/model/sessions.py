"""Sessions: "user unit U held address A from T1 to T2", whoever said so
(login service, acctctl session start, a dynamicip file, auto-units).

A user unit's address is its session's address; binding and unbinding are
the only ways it changes. Counts follow the holder exactly: the daemon
drains under the old binding before every change (a batch of changes, such
as a dynamicip scan, shares one drain), so no interval's counts ever need
splitting between two holders. Each drain adds the user's exact counts (its
all-traffic row) to its open session in the same transaction as the rows
themselves, so a session's totals equal the accounting's.

Pure: the daemon persists sessions through acctd.store.database.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping

import numpy as np

from acctd.store import rollup

SOURCES = ("login", "command", "file", "auto", "radius", "openvpn")
# why a session ended (RADIUS Acct-Terminate-Cause words where they fit)
CAUSES = ("user-request", "admin-reset", "idle-timeout", "session-timeout", "lost-carrier",
          "address-moved", "rebound", "expired", "file-removed", "config-changed")


@dataclasses.dataclass
class Session:
    id: int
    unit_oid: str
    addr: str
    source: str
    start: dt.datetime
    mac: str = ""
    nas: str = ""
    port: str = ""
    stop: dt.datetime | None = None
    stop_cause: str = ""
    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    nas_bytes_in: int | None = None   # as the NAS reported them (OpenVPN's bytecount)
    nas_bytes_out: int | None = None

    @property
    def duration(self) -> float | None:
        return None if self.stop is None else (self.stop - self.start).total_seconds()

    def to_row(self) -> dict:
        """JSON-ready: times as ISO text."""
        d = dataclasses.asdict(self)
        d["duration"] = self.duration
        for k in ("start", "stop"):
            d[k] = d[k].isoformat() if d[k] else None
        return d


def charges(cols: Mapping[str, np.ndarray], open_sessions: Mapping[str, int]
            ) -> dict[int, tuple[int, int, int, int]]:
    """One drain's counts for each open session: session id -> (packets in,
    packets out, bytes in, bytes out), from the drain's oid-keyed rows
    (interval.columns): the unit's all-traffic rows. open_sessions: unit
    oid (hex text) -> session id."""
    if not open_sessions:
        return {}
    units = np.asarray(cols["unit_oid"])
    pol = np.asarray(cols["policy_oid"])
    want = {int(oid, 16): sid for oid, sid in open_sessions.items()}
    out: dict[int, list[int]] = {}
    sel = np.flatnonzero((pol == rollup.ALL_TRAFFIC) & np.isin(units, list(want)))
    for i in sel:
        sid = want[int(units[i])]
        c = out.setdefault(sid, [0, 0, 0, 0])
        d = int(cols["dir"][i])
        c[d] += int(cols["packets"][i])
        c[2 + d] += int(cols["bytes"][i])
    return {sid: tuple(c) for sid, c in out.items()}


def hook_env(user: str, addr: str, nas: str = "", port: str = "", mac: str = "") -> dict:
    """What a Freeside-style session-start/session-stop command receives, as
    environment variables (never interpolated into a shell string). The
    NAS's name is what it was given as; an address is not looked up, so a
    slow resolver never holds up a session."""
    import ipaddress
    try:
        ipaddress.ip_address(nas)
        nasfqdn = ""
    except ValueError:
        nasfqdn = nas
    return {"user": user, "ip": addr, "nasip": nas, "nasfqdn": nasfqdn, "nasport": port,
            "mac": mac}
