"""RADIUS accounting import (Freeside's radacct import): sessions from a
FreeRADIUS `radacct` SQL table or its `detail` files become closed acctd
sessions of source "radius": which user held which address when, and what
the NAS counted.

    records = read_detail(path, errors)      # or read_radacct(dbapi_connection)
    sessions = to_sessions(records)
    counts = import_sessions(storage.con, sessions, unit_oid_of, progress)

Directions: RADIUS counts from the NAS's side (Acct-Input-Octets is what the
user sent), acctd from the subscriber's (in = towards the local address). So
bytes_in = Acct-Output-Octets (acctoutputoctets) and bytes_out =
Acct-Input-Octets, packets likewise; Gigawords add 2**32 each.

Times are UTC. A detail record's time is its Event-Timestamp (what radacct
stores), else its Timestamp (the time FreeRADIUS received it) less
Acct-Delay-Time, else its header line, less the delay; texts without an
offset (the header, an Event-Timestamp in a local zone abbreviation, a MySQL
DATETIME) are read in `zone` (None: this machine's local zone). Times keep
whole seconds, as RADIUS sends them.
"""

from __future__ import annotations

import datetime as dt
import gzip
import ipaddress
import logging
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

log = logging.getLogger("acctd.radius_import")

SOURCE = "radius"
STATUSES = ("Start", "Interim-Update", "Stop")
# Acct-Status-Type by number (RFC 2866, 2869), as a detail file without dictionaries prints it
_STATUS_CODES = {"1": "Start", "2": "Stop", "3": "Interim-Update", "7": "Accounting-On",
                 "8": "Accounting-Off", "Alive": "Interim-Update"}
# Acct-Terminate-Cause by number (RFC 2866 5.10)
_CAUSES = {1: "User-Request", 2: "Lost-Carrier", 3: "Lost-Service", 4: "Idle-Timeout",
           5: "Session-Timeout", 6: "Admin-Reset", 7: "Admin-Reboot", 8: "Port-Error",
           9: "NAS-Error", 10: "NAS-Request", 11: "NAS-Reboot", 12: "Port-Unneeded",
           13: "Port-Preempted", 14: "Port-Suspended", 15: "Service-Unavailable",
           16: "Callback", 17: "User-Error", 18: "Host-Request"}
# read_radacct's columns: FreeRADIUS's schema (every dialect) has them all
RADACCT_COLUMNS = ("acctsessionid", "acctuniqueid", "username", "nasipaddress", "nasportid",
                   "acctstarttime", "acctstoptime", "acctsessiontime", "acctinputoctets",
                   "acctoutputoctets", "callingstationid", "framedipaddress",
                   "framedipv6address", "acctterminatecause")
# read_detail's reasons for skipping a block
MALFORMED = ("bad-header", "bad-line", "no-status", "no-session-id", "bad-number", "no-time")

_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug",
                                       "Sep", "Oct", "Nov", "Dec"), 1)}
_CTIME = re.compile(r"(?:[A-Z][a-z]{2} +)?([A-Z][a-z]{2}) +(\d{1,2}) +(\d\d):(\d\d):(\d\d) +"
                    r"(\d{4})", re.ASCII)
# FreeRADIUS 3 prints dates as "%b %e %Y %H:%M:%S %Z"
_EVENT = re.compile(r"([A-Z][a-z]{2}) +(\d{1,2}) +(\d{4}) +(\d\d):(\d\d):(\d\d)(?: +(\S+))?",
                    re.ASCII)
_ATTR = re.compile(r"\s+([A-Za-z0-9][A-Za-z0-9_.:\-]*)\s+(?:=|:=|\+=)\s?(.*)", re.ASCII)
_UTC_NAMES = ("UTC", "GMT", "Z", "UT")


class DetailError(ValueError):
    pass


# --- times and values -------------------------------------------------------------------------

def _aware(naive: dt.datetime, zone: dt.tzinfo | None) -> dt.datetime:
    t = naive.astimezone() if zone is None else naive.replace(tzinfo=zone)
    return _utc(t)


def _utc(t: dt.datetime) -> dt.datetime:
    return t.astimezone(dt.timezone.utc).replace(microsecond=0)


def _epoch(n: int | float) -> dt.datetime:
    return _utc(dt.datetime.fromtimestamp(int(n), dt.timezone.utc))


def to_time(v: Any, zone: dt.tzinfo | None = None) -> dt.datetime | None:
    """A radacct or detail time as an aware UTC datetime (None if there is
    none): epoch seconds (what FreeRADIUS's sqlite queries store), an aware
    or naive datetime, "YYYY-MM-DD HH:MM:SS[+zz]", "Mar  5 2024 10:00:00 UTC"."""
    if v is None or v == "" or v == 0:
        return None
    if isinstance(v, dt.datetime):
        return _utc(v) if v.tzinfo else _aware(v, zone)
    if isinstance(v, (int, float)):
        return _epoch(v)
    s = str(v).strip()
    if s.isdigit():
        return _epoch(int(s)) if int(s) else None
    if s.startswith("0000-00-00"):                      # MySQL's zero date
        return None
    m = _EVENT.fullmatch(s)
    if m and m.group(1) in _MONTHS:
        mon, d, y, hh, mi, ss, name = m.groups()
        naive = dt.datetime(int(y), _MONTHS[mon], int(d), int(hh), int(mi), int(ss))
        if name in _UTC_NAMES:
            return naive.replace(tzinfo=dt.timezone.utc)
        return _aware(naive, zone)      # a local zone's abbreviation (CET): this zone's time
    m = _CTIME.fullmatch(s)
    if m and m.group(1) in _MONTHS:
        mon, d, hh, mi, ss, y = m.groups()
        return _aware(dt.datetime(int(y), _MONTHS[mon], int(d), int(hh), int(mi), int(ss)), zone)
    try:
        t = dt.datetime.fromisoformat(s.replace(" UTC", "+00:00"))
    except ValueError:
        raise DetailError(f"not a time: {s!r}") from None
    return _utc(t) if t.tzinfo else _aware(t, zone)


def _addr(v: Any) -> str | None:
    if v is None or str(v).strip() in ("", "0.0.0.0", "::"):
        return None
    s = str(v).strip()
    try:
        return str(ipaddress.ip_interface(s).ip)        # postgres inet may carry a /prefix
    except ValueError:
        return s


def _mac(v: Any) -> str:
    if not v:
        return ""
    from acctd.services.mac_control import MacError, normalize_mac
    try:
        return normalize_mac(str(v))
    except MacError:
        return str(v).strip()                           # a phone number, a circuit id


def _cause(v: Any) -> str:
    """Acct-Terminate-Cause as acctd's stop cause words: "User-Request" -> "user-request"."""
    if v is None or v == "":
        return ""
    s = str(v).strip()
    if s.isdigit():
        s = _CAUSES.get(int(s), s)
    return s.lower().replace("_", "-")


def _int(v: Any) -> int:
    if v is None or v == "":
        return 0
    return int(v)


# --- detail files ---------------------------------------------------------------------------

def _unquote(text: str) -> str:
    """A FreeRADIUS-printed string value: quotes, \\\\ \\" \\n \\r \\t and \\ooo escapes."""
    s = text.strip()
    if len(s) < 2 or not (s[0] == s[-1] == '"'):
        if s.startswith('"'):
            raise DetailError("unterminated string")
        return s
    body, out, i = s[1:-1], [], 0
    while i < len(body):
        c = body[i]
        if c != "\\" or i + 1 == len(body):
            out.append(c)
            i += 1
            continue
        n = body[i + 1]
        if n in "01234567" and re.fullmatch(r"[0-7]{3}", body[i + 1:i + 4]):
            out.append(chr(int(body[i + 1:i + 4], 8)))
            i += 4
            continue
        out.append({"n": "\n", "r": "\r", "t": "\t"}.get(n, n))
        i += 2
    return "".join(out)


def _blocks(lines: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    """(line number of the header, lines) per record: a record is a line at
    the margin and the indented lines after it; blank lines separate."""
    start, block = 0, []
    for n, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            if block:
                yield start, block
            block = []
            continue
        if not line[0].isspace() and block:
            yield start, block
            block = []
        if not block:
            start = n
        block.append(line)
    if block:
        yield start, block


def read_detail(path: str | os.PathLike, errors: list | None = None,
                zone: dt.tzinfo | None = None) -> Iterator[dict]:
    """Accounting records of a FreeRADIUS detail file (plain or .gz), in file
    order: Start, Interim-Update (Alive) and Stop. Other records (Accounting-
    On/Off) are passed over. A malformed block is skipped and appended to
    `errors` as (path:line, reason, detail), reason one of MALFORMED."""
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for lineno, block in _blocks(f):
            where = f"{path}:{lineno}"
            try:
                rec = _record(block, zone)
            except DetailError as e:
                reason, _, detail = str(e).partition(": ")
                if reason not in MALFORMED:
                    reason, detail = "bad-line", str(e)
                if errors is not None:
                    errors.append((where, reason, detail))
                log.warning("%s: skipped a malformed detail record: %s", where, e)
                continue
            if rec is not None:
                rec["where"] = where
                yield rec


def _record(block: list[str], zone: dt.tzinfo | None) -> dict | None:
    try:
        header = to_time(block[0].strip(), zone)
    except DetailError:
        header = None
    if header is None:
        raise DetailError(f"bad-header: {block[0].strip()!r} is not a date line")
    a: dict[str, str] = {}
    for line in block[1:]:
        m = _ATTR.fullmatch(line)
        if not m:
            raise DetailError(f"bad-line: {line.strip()!r}")
        name, value = m.groups()
        a.setdefault(name, _unquote(value))     # repeated attributes (Class, AVPairs): the first
    status = _STATUS_CODES.get(a.get("Acct-Status-Type", ""), a.get("Acct-Status-Type"))
    if not status:
        raise DetailError("no-status: no Acct-Status-Type")
    if status not in STATUSES:
        return None
    if not a.get("Acct-Session-Id"):
        raise DetailError("no-session-id: no Acct-Session-Id")
    try:
        delay = dt.timedelta(seconds=_int(a.get("Acct-Delay-Time")))
        when = to_time(a.get("Event-Timestamp"), zone)
        if when is None:
            when = to_time(a.get("Timestamp"), zone) or header
            when -= delay
        rec = {
            "status": status, "session_id": a["Acct-Session-Id"],
            "unique_id": a.get("Acct-Unique-Session-Id", ""),
            "user": a.get("User-Name", ""),
            "nas": a.get("NAS-IP-Address") or a.get("NAS-IPv6-Address")
            or a.get("NAS-Identifier") or "",
            "port": a.get("NAS-Port-Id") or a.get("NAS-Port") or "",
            "addr": _addr(a.get("Framed-IP-Address")) or _addr(a.get("Framed-IPv6-Address")),
            "mac": _mac(a.get("Calling-Station-Id")),
            "time": when, "start": None, "stop": None,
            "session_time": _int(a["Acct-Session-Time"]) if "Acct-Session-Time" in a else None,
            "input_octets": _int(a.get("Acct-Input-Octets"))
            + (_int(a.get("Acct-Input-Gigawords")) << 32),
            "output_octets": _int(a.get("Acct-Output-Octets"))
            + (_int(a.get("Acct-Output-Gigawords")) << 32),
            "input_packets": _int(a.get("Acct-Input-Packets")),
            "output_packets": _int(a.get("Acct-Output-Packets")),
            "cause": _cause(a.get("Acct-Terminate-Cause")),
        }
    except ValueError as e:
        raise DetailError(f"bad-number: {e}") from None
    return rec


# --- radacct --------------------------------------------------------------------------------

def read_radacct(con, since: dt.datetime | None = None, zone: dt.tzinfo | None = None,
                 table: str = "radacct") -> Iterator[dict]:
    """One record (status "radacct") per row of a FreeRADIUS radacct table
    over a DB-API connection (sqlite3; psycopg2 for PostgreSQL; any driver
    with `format`/`pyformat` parameters). Octet columns already include the
    Gigawords (FreeRADIUS's queries add them). since: only sessions that
    stopped then or later, and open ones (an aware datetime; naive: UTC)."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", table):
        raise ValueError(f"not a table name: {table!r}")
    since = None if since is None else (since if since.tzinfo else
                                        since.replace(tzinfo=dt.timezone.utc))
    q = f"SELECT {', '.join(RADACCT_COLUMNS)} FROM {table}"
    args: list = []
    mod = sys.modules.get(type(con).__module__.split(".")[0])
    style = getattr(mod, "paramstyle", "qmark")
    # sqlite keeps FreeRADIUS's times as epoch integers or text: compared in Python below
    if since is not None and style in ("format", "pyformat"):
        q += " WHERE acctstoptime >= %s OR acctstoptime IS NULL"
        args.append(since)
    cur = con.cursor()
    try:
        cur.execute(q, args) if args else cur.execute(q)
        while True:
            rows = cur.fetchmany(1000)
            if not rows:
                break
            for row in rows:
                r = dict(zip(RADACCT_COLUMNS, row))
                start = to_time(r["acctstarttime"], zone)
                stop = to_time(r["acctstoptime"], zone)
                if since is not None and stop is not None and stop < since:
                    continue
                yield {
                    "status": "radacct", "session_id": str(r["acctsessionid"] or ""),
                    "unique_id": str(r["acctuniqueid"] or ""), "user": r["username"] or "",
                    "nas": _addr(r["nasipaddress"]) or "", "port": str(r["nasportid"] or ""),
                    "addr": _addr(r["framedipaddress"]) or _addr(r["framedipv6address"]),
                    "mac": _mac(r["callingstationid"]),
                    "time": stop or start, "start": start, "stop": stop,
                    "session_time": None if r["acctsessiontime"] is None
                    else int(r["acctsessiontime"]),
                    "input_octets": _int(r["acctinputoctets"]),
                    "output_octets": _int(r["acctoutputoctets"]),
                    "input_packets": 0, "output_packets": 0,     # radacct has no packet counts
                    "cause": _cause(r["acctterminatecause"]),
                    "where": f"{table}:{r['acctuniqueid']}",
                }
    finally:
        cur.close()


# --- folding --------------------------------------------------------------------------------

def _new(r: dict) -> dict:
    start = r["start"]
    if start is None:
        # no Start seen: what FreeRADIUS's own queries insert, the event less the session time
        start = r["time"] - dt.timedelta(seconds=r["session_time"] or 0)
    return {"user": r["user"], "addr": r["addr"] or "", "mac": r["mac"], "nas": r["nas"],
            "port": r["port"], "start": start, "stop": None, "bytes_in": 0, "bytes_out": 0,
            "packets_in": 0, "packets_out": 0, "stop_cause": "", "source": SOURCE,
            "session_id": r["session_id"], "_started": r["status"] == "Start"}


def _update(s: dict, r: dict) -> None:
    # counters are cumulative: a later record's values replace an earlier one's
    if r["status"] != "Start":
        s["bytes_in"], s["bytes_out"] = r["output_octets"], r["input_octets"]
        s["packets_in"], s["packets_out"] = r["output_packets"], r["input_packets"]
    for k in ("addr", "mac", "user", "port"):
        if not s[k] and r[k]:
            s[k] = r[k]


def to_sessions(records: Iterable[dict]) -> list[dict]:
    """Fold records into sessions, oldest start first: the Start, Interim-
    Updates and Stop of one Acct-Session-Id on one NAS (in time order) make
    one session; a Start after a Stop (the NAS reused the id) begins another;
    a retransmitted Start or Stop changes nothing. A radacct row is a session
    already. Each session: user, addr, mac, nas, port, start, stop (None while
    open), bytes_in, bytes_out, packets_in, packets_out (acctd's directions,
    see the module doc), stop_cause, source ("radius"), session_id."""
    out: list[dict] = []
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        if r["status"] == "radacct":
            if r["start"] is None and r["stop"] is None:
                continue
            s = _new(r)
            _update(s, r)
            s["stop"], s["stop_cause"] = r["stop"], r["cause"]
            out.append(s)
        else:
            groups.setdefault((r["nas"], r["session_id"]), []).append(r)
    for recs in groups.values():
        recs.sort(key=lambda r: r["time"])               # stable: file order breaks ties
        cur: dict | None = None
        for r in recs:
            st = r["status"]
            if st == "Start":
                if cur is not None and cur["_started"] and cur["stop"] is None \
                        and cur["start"] == r["time"]:
                    continue                             # retransmitted Start
                if cur is not None:
                    out.append(cur)                      # stopped, or never will be
                cur = _new({**r, "start": r["time"]})
            elif cur is None or cur["stop"] is not None:
                if cur is not None and st == "Stop" and cur["stop"] == r["time"]:
                    continue                             # retransmitted Stop
                if cur is not None:
                    out.append(cur)
                cur = _new(r)
            _update(cur, r)
            if st == "Stop":
                cur["stop"], cur["stop_cause"] = r["time"], r["cause"]
        if cur is not None:
            out.append(cur)
    for s in out:
        s.pop("_started", None)
    out.sort(key=lambda s: (s["start"], s["nas"], s["session_id"]))
    return out


# --- into acctd's sessions table ------------------------------------------------------------

def _naive(t: dt.datetime) -> dt.datetime:
    return t.astimezone(dt.timezone.utc).replace(tzinfo=None)


_COLS = ("id", "unit_oid", "addr", "source", "start", "mac", "nas", "port", "stop",
         "stop_cause", "packets_in", "packets_out", "bytes_in", "bytes_out")
_TYPES = ("int64", "uint32", object, object, "datetime64[us]", object, object, object,
          "datetime64[us]", object, "uint64", "uint64", "uint64", "uint64")


def _insert(con, rows: list[tuple]) -> None:
    """One transaction per batch, column-wise (DuckDB's executemany costs ~1 ms a row)."""
    import numpy as np
    batch = {name: np.array(col, dtype=t) for name, t, col in zip(_COLS, _TYPES, zip(*rows))}
    con.register("radius_sessions_batch", batch)
    try:
        con.execute("BEGIN")
        try:
            con.execute(f"INSERT INTO sessions ({', '.join(_COLS)}) SELECT {', '.join(_COLS)} "
                        f"FROM radius_sessions_batch")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.unregister("radius_sessions_batch")


def import_sessions(con, sessions: Iterable[dict], unit_oid_of: Callable[[str], str | None],
                    progress: Callable[[int, int], None] | None = None,
                    chunk: int = 5000) -> dict:
    """Insert closed sessions into acctd's `sessions` table (DuckDB
    connection of acctd.store.database), ids continuing after the largest, each
    chunk in its own transaction (an interrupted import is resumed by running
    it again).

    unit_oid_of(user) -> the user unit's oid (hex text; the table keeps its integer), or
    None: asked once per user; sessions of unknown users are skipped and
    counted. Open sessions (no Stop yet) are skipped: an open session in the
    table is a live address binding, which only the daemon makes.

    A session is already imported when a `radius` session has the same
    (nas, port, start, addr, unit_oid): one RADIUS session read from a
    detail file and from radacct, or imported twice, has the same NAS, port,
    start second, address and user. (A Start lost on one side and not on the
    other gives the derived start, which may differ by the NAS's rounding.)

    progress(done, total) is called as sessions are handled. Returns counts:
    imported, duplicates, open, unknown_users (sessions), unknown ({user:
    sessions})."""
    sessions = list(sessions)
    total = len(sessions)
    counts: dict[str, Any] = {"imported": 0, "duplicates": 0, "open": 0, "unknown_users": 0,
                              "unknown": Counter()}
    seen = {(nas, port, start, addr, f"{oid:06X}") for nas, port, start, addr, oid in con.execute(
        "SELECT nas, port, start, addr, unit_oid FROM sessions WHERE source = ?",
        [SOURCE]).fetchall()}
    next_id = con.execute("SELECT coalesce(max(id), 0) + 1 FROM sessions").fetchall()[0][0]
    oids: dict[str, str | None] = {}
    if progress:
        progress(0, total)
    for lo in range(0, total, chunk):
        rows = []
        for s in sessions[lo:lo + chunk]:
            if s["stop"] is None:
                counts["open"] += 1
                continue
            user = s["user"]
            if user not in oids:
                oids[user] = unit_oid_of(user)
            oid = oids[user]
            if oid is None:
                counts["unknown_users"] += 1
                counts["unknown"][user] += 1
                continue
            start, stop = _naive(s["start"]), _naive(s["stop"])
            key = (s["nas"], s["port"], start, s["addr"], oid)
            if key in seen:
                counts["duplicates"] += 1
                continue
            seen.add(key)
            rows.append((next_id, int(oid, 16), s["addr"], SOURCE, start, s["mac"], s["nas"], s["port"],
                         stop, s["stop_cause"], s["packets_in"], s["packets_out"],
                         s["bytes_in"], s["bytes_out"]))
            next_id += 1
        if rows:
            _insert(con, rows)
            counts["imported"] += len(rows)
        if progress:
            progress(min(lo + chunk, total), total)
    counts["unknown"] = dict(sorted(counts["unknown"].items()))
    return counts
