"""Sessions: "user unit U held address A from T1 to T2", whoever said so
(login service, acctctl session start, a dynamicip file, auto-units).

A user unit's address is its session's address; binding and unbinding are
the only ways it changes. Counts follow the holder exactly: the daemon
drains under the old binding before every change (a batch of changes, such
as a dynamicip scan, shares one drain), so no interval's counts ever need
splitting between two holders. Each drain adds the user's exact counts (its
all-traffic row) to its open session in the same transaction as the rows
themselves, so a session's totals equal the accounting's.

Pure: acctd.services.sessions keeps them, acctd.store.database stores them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

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
