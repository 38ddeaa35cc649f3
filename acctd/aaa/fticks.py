"""F-TICKS, the federation log format for login statistics: one line per login
success or failure (login service, RADIUS, OpenVPN), written to syslog and/or
a file; and the reader that loads F-TICKS lines from anyone's logs into
DuckDB and counts logins per day, realm, visited country and result.

The line (the F-TICKS grammar; eduroam's attributes):

    F-TICKS/<federation>/<version>#REALM=…#VISCOUNTRY=…#VISINST=…#CSI=…#RESULT=OK|FAIL#…#

    F-TICKS/eduroam/1.0#REALM=example.org#VISCOUNTRY=UY#VISINST=UDELAR#
        CSI=5d1c…(64 hex)#RESULT=OK#PN=9f86…(64 hex)#TS=1709287200#

  REALM       the user's AAA realm (the `realm` given, else the part of the
              user name after the last "@")
  VISCOUNTRY  ISO 3166 code of the country where the login happened (config)
  VISINST     the visited institution (config)
  CSI         Calling-Station-Id: the device's MAC (or the client address)
  RESULT      OK or FAIL
  PN          the user name (a participant identifier, as the IdPs write it)
  AP          the authenticating party (the IdP): `ap`, for the logins acctd
              itself decides
  RP          the relying party (the service the user logs in to): `rp`
  AN          the authentication method (login, radius, openvpn), when given
  TS          the event time, whole seconds since the epoch (UTC)

`reporting`, radsecproxy's FTicksReporting: "full" (the default) writes
every attribute known; "basic" only REALM, VISCOUNTRY, CSI, RESULT and TS
(radsecproxy's basic line, with the time acctd's own file needs). `mac`,
radsecproxy's FTicksMAC, says how CSI is written: fully-key-hashed (the
default with a key), vendor-key-hashed (the MAC's vendor prefix "00:11:22:"
kept, then the HMAC of the whole MAC, so it matches the fully-hashed form),
vendor-hashed and fully-hashed (SHA-256, no key), original, or static
("undisclosed"). A CSI that is no MAC (a client address) is hashed whole.

Privacy: CSI and PN are HMAC-SHA-256 (hex) of the value under the key in
`key-file`; a MAC is first normalised (00:11:22:33:44:55) so one device hashes
alike whoever reported it. Without a key they are left out (as the IdPs leave
out the user when no salt is set); raw values appear only with `raw-values =
true`. Values keep only the grammar's characters (ASCII letters and digits,
`_ - : . , ;`): accents are folded ("é" -> "e"), anything else is removed
("a#b=c@d" -> "abcd"); an attribute left empty is left out.

Reading is tolerant of where a line sits (a syslog line of RFC 3164 or 5424,
an ISO-timestamped rsyslog or `journalctl -o short-iso` line, FreeRADIUS's
ctime-stamped radius.log, radsecproxy's syslog lines, a journald export entry,
a bare file line): the `F-TICKS/` marker may be anywhere. It is strict about
the line itself: a malformed line is counted under a reason (MALFORMED) and
skipped, never fatal. The standard attributes above (and RP, AM) must obey
the grammar, and RESULT must be there (a line is a login to count); other
attributes are kept whatever they hold, and a line whose extension
attributes break it (FreeRADIUS's `User-eduroam=%{User-Name}`) is imported
and counted as "nonconforming". The event time is TS, else the syslog time
of the line (RFC 3164 lines carry no year: the year that puts the line no
later than a day past the file's modification time), else its journald
entry's __REALTIME_TIMESTAMP; a line with none is malformed (no-timestamp).
"""

from __future__ import annotations

import datetime as dt
import errno
import gzip
import hashlib
import hmac
import logging
import os
import re
import socket
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo

from acctd.config.schema import (Check, Invalid, Table, boolean, choice, file_path,
                                 secret_file, setting)
from acctd.services.contract import Core, Service

log = logging.getLogger("acctd.fticks")

MARKER = "F-TICKS/"
RESULTS = ("OK", "FAIL")
# attributes held to the grammar; the rest are extensions, kept as they come
STANDARD = ("REALM", "VISCOUNTRY", "VISINST", "CSI", "RESULT", "PN", "AP", "RP", "AN", "AM",
            "TS")
# parse_line's reasons, plus import_files' own "no-timestamp"
MALFORMED = ("bad-header", "no-attributes", "unterminated", "bad-attribute", "bad-value",
             "duplicate-attribute", "no-result", "bad-result", "bad-ts", "no-timestamp")

_LABEL = re.compile(r"[A-Za-z0-9_\-:.,;]+", re.ASCII)
_NAME = re.compile(r"[A-Za-z0-9]+", re.ASCII)
_NOT_LABEL = re.compile(r"[^A-Za-z0-9_\-:.,;]", re.ASCII)

FACILITIES = {"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
              "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
              **{f"local{i}": 16 + i for i in range(8)}}
LOG_INFO = 6

FTICKS_TABLE = """CREATE TABLE IF NOT EXISTS fticks (
    ts TIMESTAMP NOT NULL, federation VARCHAR NOT NULL, version VARCHAR NOT NULL,
    realm VARCHAR, viscountry VARCHAR, visinst VARCHAR, csi VARCHAR,
    result VARCHAR NOT NULL, raw_line_hash VARCHAR PRIMARY KEY, source_file VARCHAR NOT NULL)"""
_COLS = ("ts", "federation", "version", "realm", "viscountry", "visinst", "csi", "result",
         "raw_line_hash", "source_file")
_BATCH = 50_000


def clean(text: Any) -> str:
    """A value in the F-TICKS character set: accents folded to ASCII, every
    other character outside `A-Za-z0-9_-:.,;` removed."""
    s = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode()
    return _NOT_LABEL.sub("", s)


# --- settings ---------------------------------------------------------------------------

def _label(what: str) -> Check:
    def check(v, ctx):
        if not isinstance(v, str):
            raise Invalid(f"expected {what} (quote it: \"1.0\"), got {v!r}")
        if not _LABEL.fullmatch(v):
            raise Invalid(f"{v!r} is outside the F-TICKS character set "
                          f"(ASCII letters, digits and _ - : . , ;)")
        return v
    return check


def _country(v, ctx) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z]{2}", v, re.ASCII):
        raise Invalid(f"expected a two-letter ISO 3166 country code, got {v!r}")
    return v.upper()


REPORTING = ("basic", "full")
MAC_MODES = ("static", "original", "vendor-hashed", "vendor-key-hashed", "fully-hashed",
             "fully-key-hashed")
BASIC = ("REALM", "VISCOUNTRY", "CSI", "RESULT", "TS")


def _lower_choice(*values: str) -> Check:
    """One of values, also in radsecproxy's spelling (VendorKeyHashed, Full)."""
    def check(v, ctx):
        key = re.sub(r"(?<=[a-z])(?=[A-Z])", "-", v).lower() if isinstance(v, str) else v
        if key not in values:
            raise Invalid(f"expected one of {', '.join(values)}, got {v!r}")
        return key
    return check


def _tag(v, ctx) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,32}", v):
        raise Invalid(f"expected up to 32 letters, digits, '_', '.' or '-', got {v!r}")
    return v


@dataclass(frozen=True)
class FticksSettings(Table):
    """The [fticks] table. The HMAC key is read from key-file at load."""

    federation: str = setting(check=_label("the F-TICKS federation name, e.g. \"eduroam\""))
    version: str = setting("1.0", check=_label("a version string"))
    visinst: str | None = setting(None, check=_label("the visited institution"))
    viscountry: str | None = setting(None, check=_country)
    key_file: str | None = setting(None, check=secret_file())
    raw_values: bool = setting(False, check=boolean())   # true: CSI and PN written as they are
    syslog: bool = setting(False, check=boolean())
    syslog_facility: str = setting("auth", check=choice(*FACILITIES))
    syslog_socket: str = setting("/dev/log", check=file_path("a socket path"))
    syslog_tag: str = setting("acctd", check=_tag)
    file: str | None = setting(None, check=file_path())
    ap: str | None = setting(None, check=_label("the authenticating party (IdP)"))
    rp: str | None = setting(None, check=_label("the relying party"))
    reporting: str = setting("full", check=_lower_choice(*REPORTING))
    mac: str | None = setting(None, check=_lower_choice(*MAC_MODES))  # None: by key/raw-values
    key: bytes | None = field(default=None, repr=False)   # from key_file

    def finish(self, ctx) -> FticksSettings:
        if not self.syslog and not self.file:
            raise Invalid("F-TICKS needs a destination: syslog = true and/or file = PATH")
        if self.mac and self.mac.endswith("key-hashed") and not self.key_file:
            raise Invalid(f"mac = {self.mac!r} needs key-file")
        return replace(self, key=read_key(self.key_file)) if self.key_file else self

    @property
    def mac_mode(self) -> str | None:
        """How CSI is written; None: left out (no key, no raw-values)."""
        if self.mac:
            return self.mac
        return "original" if self.raw_values else "fully-key-hashed" if self.key else None


def read_key(path: str) -> bytes:
    """The HMAC key (acctd.common.secret_files: owner-only file, line ending dropped)."""
    from acctd.common.secret_files import read_private
    return read_private(path, "key-file:")


# --- writing ----------------------------------------------------------------------------

def hash_value(key: bytes, value: str) -> str:
    """HMAC-SHA-256 of the value's UTF-8 bytes, lower-case hex."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def _csi_text(csi: str) -> str:
    from acctd.services.mac_control import MacError, normalize_mac
    try:
        return normalize_mac(csi)
    except MacError:
        return csi.strip()


def _private(s: FticksSettings, value: str | None, csi: bool) -> str | None:
    if value is None or not str(value).strip():
        return None
    if csi:
        return _csi(s, _csi_text(str(value)))
    text = str(value).strip()
    if s.raw_values:
        return clean(text)
    if s.key:
        return hash_value(s.key, text)
    return None


_MAC = re.compile(r"(?:[0-9a-f]{2}:){5}[0-9a-f]{2}")


def _csi(s: FticksSettings, text: str) -> str | None:
    """CSI as `mac_mode` says (radsecproxy's FTicksMAC)."""
    mode = s.mac_mode
    if mode is None:
        return None
    if mode == "static":
        return "undisclosed"
    if mode == "original":
        return clean(text)
    digest = hash_value(s.key, text) if mode.endswith("key-hashed") else \
        hashlib.sha256(text.encode()).hexdigest()
    if mode.startswith("vendor") and _MAC.fullmatch(text):
        return text[:9] + digest  # "00:11:22:" + the hash of the whole MAC
    return digest


def _result(result: Any) -> str:
    if isinstance(result, bool):
        return "OK" if result else "FAIL"
    if isinstance(result, str) and result.upper() in RESULTS:
        return result.upper()
    raise ValueError(f"result: expected OK, FAIL or a bool, got {result!r}")


def format_line(settings: FticksSettings, *, realm: str | None, user: str | None,
                csi: str | None, result: bool | str, ap: str | None = None,
                rp: str | None = None, ts: float | dt.datetime | None = None,
                method: str | None = None,
                extra: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> str:
    """One F-TICKS line, without a newline. realm None: taken from the user
    name after its last "@". ap, rp: the settings' unless given. ts: epoch
    seconds or an aware datetime (None: no TS attribute). method: AN (login,
    radius, openvpn). extra: more attributes, names of ASCII letters and
    digits, not a standard one (left out at the basic reporting level)."""
    ap, rp = ap or settings.ap, rp or settings.rp
    if realm is None and user and "@" in user:
        realm = user.rsplit("@", 1)[1]
    attrs: list[tuple[str, str | None]] = [
        ("REALM", clean(realm) if realm else None),
        ("VISCOUNTRY", settings.viscountry),
        ("VISINST", settings.visinst),
        ("CSI", _private(settings, csi, csi=True)),
        ("RESULT", _result(result)),
        ("PN", _private(settings, user, csi=False)),
        ("AP", clean(ap) if ap else None),
        ("RP", clean(rp) if rp else None),
        ("AN", clean(method) if method else None),
    ]
    if ts is not None:
        secs = ts.timestamp() if isinstance(ts, dt.datetime) else float(ts)
        attrs.append(("TS", str(int(secs))))
    for name, value in (extra.items() if isinstance(extra, Mapping) else extra):
        if not _NAME.fullmatch(name) or name.upper() in STANDARD:
            raise ValueError(f"extra F-TICKS attribute {name!r}: expected ASCII letters and "
                             f"digits, not one of {', '.join(STANDARD)}")
        attrs.append((name, clean(value)))
    if settings.reporting == "basic":
        attrs = [(k, v) for k, v in attrs if k in BASIC]
    body = "#".join(f"{k}={v}" for k, v in attrs if v)
    return f"{MARKER}{settings.federation}/{settings.version}#{body}#"


class Emitter:
    """Writes F-TICKS lines to the configured file (appended, one write per
    line, O_APPEND so other writers and logrotate's copytruncate interleave
    whole lines) and/or syslog (an RFC 3164 datagram to the syslog socket,
    as syslog(3) sends it). emit() never raises for I/O: a line that cannot be
    written is logged and counted in `lost` (a login must not fail because
    its statistics could not be written). Opening the file can raise."""

    def __init__(self, settings: FticksSettings, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.clock = clock
        self.written = 0
        self.lost = 0
        self._fd: int | None = None
        self._sock: socket.socket | None = None
        self._warned: set[str] = set()
        if settings.file:
            self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.settings.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                       0o640)

    def reopen(self) -> None:
        """Open the file again (after logrotate moved it; on SIGHUP)."""
        if self.settings.file:
            fd = self._open()
            old, self._fd = self._fd, fd
            if old is not None:
                os.close(old)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def emit(self, *, realm: str | None = None, user: str | None = None,
             csi: str | None = None, result: bool | str, ap: str | None = None,
             rp: str | None = None, method: str | None = None,
             ts: float | dt.datetime | None = None,
             extra: Mapping[str, str] | None = None) -> str:
        """Format one login (TS: now unless given) and write it; returns the line."""
        when = self.clock() if ts is None else ts
        line = format_line(self.settings, realm=realm, user=user, csi=csi, result=result, ap=ap,
                           rp=rp, ts=when, method=method, extra=extra or ())
        if self._fd is not None:
            self._write_file(line)
        if self.settings.syslog:
            secs = when.timestamp() if isinstance(when, dt.datetime) else float(when)
            self._send_syslog(line, secs)
        return line

    def _problem(self, where: str, e: OSError) -> None:
        self.lost += 1
        # one message per kind of failure until it recovers, not one per login
        if where not in self._warned:
            self._warned.add(where)
            log.error("F-TICKS line not written to %s: %s", where, e)

    def _recovered(self, where: str) -> None:
        self.written += 1
        if where in self._warned:
            self._warned.discard(where)
            log.warning("F-TICKS lines are written to %s again", where)

    def _write_file(self, line: str) -> None:
        data = (line + "\n").encode()
        try:
            n = os.write(self._fd, data)
            if n != len(data):
                raise OSError(errno.ENOSPC, f"short write ({n} of {len(data)} bytes)")
        except OSError as e:
            self._problem(self.settings.file, e)
        else:
            self._recovered(self.settings.file)

    def syslog_datagram(self, line: str, secs: float) -> bytes:
        pri = FACILITIES[self.settings.syslog_facility] * 8 + LOG_INFO
        stamp = time.strftime("%b %e %H:%M:%S", time.localtime(secs))
        return f"<{pri}>{stamp} {self.settings.syslog_tag}[{os.getpid()}]: {line}".encode()

    def _send_syslog(self, line: str, secs: float) -> None:
        data = self.syslog_datagram(line, secs)
        where = f"syslog ({self.settings.syslog_socket})"
        for attempt in (1, 2):  # the syslog daemon may have restarted: connect once more
            try:
                if self._sock is None:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    try:
                        sock.connect(self.settings.syslog_socket)
                    except OSError:
                        sock.close()
                        raise
                    self._sock = sock
                self._sock.send(data)
            except OSError as e:
                if self._sock is not None:
                    self._sock.close()
                    self._sock = None
                if attempt == 2:
                    self._problem(where, e)
            else:
                self._recovered(where)
                return


# --- reading ----------------------------------------------------------------------------

_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug",
                                       "Sep", "Oct", "Nov", "Dec"), 1)}
_ISO = re.compile(r"\s*(?:<\d{1,3}>)?(?:1 )?(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)"
                  r"(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d)?\b", re.ASCII)
_CTIME = re.compile(r"\s*(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([A-Z][a-z]{2}) +(\d{1,2}) "
                    r"(\d\d):(\d\d):(\d\d) (\d{4})\b", re.ASCII)
_BSD = re.compile(r"\s*(?:<\d{1,3}>)?([A-Z][a-z]{2}) +(\d{1,2}) (\d\d):(\d\d):(\d\d)\b", re.ASCII)


def _local(naive: dt.datetime, zone: dt.tzinfo | None) -> dt.datetime:
    return naive.astimezone() if zone is None else naive.replace(tzinfo=zone)


def prefix_time(head: str, zone: dt.tzinfo | None = None,
                ref: dt.datetime | None = None) -> dt.datetime | None:
    """The time a log line's prefix (the text before the marker) carries, as
    an aware datetime, or None. Times without an offset are in `zone` (None:
    the local zone). ref: the file's modification time, for RFC 3164's year."""
    try:
        m = _ISO.match(head)
        if m:
            y, mo, d, hh, mi, ss, frac, off = m.groups()
            us = int((frac or "0")[:6].ljust(6, "0"))
            naive = dt.datetime(int(y), int(mo), int(d), int(hh), int(mi), int(ss), us)
            if off is None:
                return _local(naive, zone)
            if off == "Z":
                return naive.replace(tzinfo=dt.timezone.utc)
            off = off.replace(":", "")
            delta = dt.timedelta(hours=int(off[1:3]), minutes=int(off[3:5]))
            return naive.replace(tzinfo=dt.timezone(-delta if off[0] == "-" else delta))
        m = _CTIME.match(head)
        if m and m.group(1) in _MONTHS:
            mon, d, hh, mi, ss, y = m.groups()
            return _local(dt.datetime(int(y), _MONTHS[mon], int(d), int(hh), int(mi), int(ss)),
                          zone)
        m = _BSD.match(head)
        if m and m.group(1) in _MONTHS:
            mon, d, hh, mi, ss = m.groups()
            ref = ref or dt.datetime.now(dt.timezone.utc)
            for year in (ref.year, ref.year - 1):
                try:
                    t = _local(dt.datetime(year, _MONTHS[mon], int(d), int(hh), int(mi),
                                           int(ss)), zone)
                except ValueError:      # 29 Feb of a common year
                    continue
                if t <= ref + dt.timedelta(days=1):
                    return t
    except ValueError:
        return None
    return None


def parse_line(text: str, *, zone: dt.tzinfo | None = None, ref: dt.datetime | None = None,
               fallback_ts: dt.datetime | None = None) -> dict | str | None:
    """Read one log line. None: no F-TICKS marker in it (not an F-TICKS line).
    A str: the line is malformed, and why (one of MALFORMED). Otherwise a
    dict: federation, version, attrs (name -> value, in line order), ts (an
    aware datetime from TS, else the line's syslog time, else fallback_ts;
    None if none), ts_source ("TS", "prefix", "fallback" or None) and
    nonconforming (an extension attribute breaks the grammar). zone, ref:
    see prefix_time."""
    i = text.find(MARKER)
    if i < 0:
        return None
    head, body = text[:i], text[i + len(MARKER):].rstrip()
    last = body.rfind("#")
    if last < 0:
        return "no-attributes"
    tail = body[last + 1:]
    # what may follow the line: nothing, or a quote/space closing its container (JSON, linelog)
    if tail and tail[0] not in "\"' \t":
        return "unterminated"
    first = body.find("#")
    header = body[:first].split("/")
    if len(header) != 2 or not all(_LABEL.fullmatch(p) for p in header):
        return "bad-header"
    if first == last:
        return "no-attributes"
    attrs: dict[str, str] = {}
    nonconforming = False
    for item in body[first + 1:last].split("#"):
        name, eq, value = item.partition("=")
        if not eq or not name:
            return "bad-attribute"
        if name in attrs:
            return "duplicate-attribute"
        if name in STANDARD:
            if not _LABEL.fullmatch(value):
                return "bad-value"
        elif not (_NAME.fullmatch(name) and _LABEL.fullmatch(value)):
            nonconforming = True
        attrs[name] = value
    if "RESULT" not in attrs:
        return "no-result"
    if attrs["RESULT"] not in RESULTS:
        return "bad-result"
    source = None
    if "TS" in attrs:
        if not attrs["TS"].isdigit():
            return "bad-ts"
        try:
            ts = dt.datetime.fromtimestamp(int(attrs["TS"]), dt.timezone.utc)
        except (OverflowError, ValueError, OSError):
            return "bad-ts"
        source = "TS"
    else:
        ts = prefix_time(head, zone, ref)
        if ts is not None:
            source = "prefix"
        elif fallback_ts is not None:
            ts, source = fallback_ts, "fallback"
    return {"federation": header[0], "version": header[1], "attrs": attrs, "ts": ts,
            "ts_source": source, "nonconforming": nonconforming}


def _open_text(path: str):
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _line_hash(line: str, occurrence: int) -> str:
    # identical lines of one file are distinct logins: the n-th copy hashes with its number
    data = line if occurrence == 0 else f"{line}\0{occurrence}"
    return hashlib.sha256(data.encode()).hexdigest()


def _utc_naive(t: dt.datetime) -> dt.datetime:
    return t.astimezone(dt.timezone.utc).replace(tzinfo=None)


def import_files(con, paths: Iterable[str | os.PathLike], *, zone: dt.tzinfo | str | None = None,
                 examples: int = 10) -> dict:
    """Load the F-TICKS lines of log files (plain or .gz) into the `fticks`
    table of a DuckDB connection (created if missing). Lines without the
    marker are skipped; malformed ones are counted per reason, never fatal;
    a file that cannot be read is listed and the others are still imported.

    Re-importing is safe: a row's key (raw_line_hash) is the SHA-256 of the
    line as written, prefix included (a journald export MESSAGE line: with
    its entry's __REALTIME_TIMESTAMP; the n-th identical line of a file: with
    n), so a file imported again, or its rotated copy (syslog -> syslog.1),
    adds nothing; such lines count as duplicates. source_file is the file a
    line was first imported from.

    zone: the zone of syslog times written without an offset (None: local).
    Returns counts: files, lines, fticks (lines with the marker), imported,
    duplicates, nonconforming, malformed {reason: n}, unreadable [(path,
    error)], examples [(path, line number, reason)] (the first few)."""
    if isinstance(zone, str):
        zone = ZoneInfo(zone)
    con.execute(FTICKS_TABLE)
    stats: dict[str, Any] = {"files": 0, "lines": 0, "fticks": 0, "imported": 0,
                             "duplicates": 0, "nonconforming": 0, "malformed": Counter(),
                             "unreadable": [], "examples": []}
    for p in paths:
        path = os.fspath(p)
        try:
            f = _open_text(path)
            ref = dt.datetime.fromtimestamp(os.stat(path).st_mtime, dt.timezone.utc)
        except OSError as e:
            stats["unreadable"].append((path, e.strerror or str(e)))
            continue
        source = os.path.abspath(path)
        rows: list[tuple] = []
        seen: Counter = Counter()
        journal_ts: dt.datetime | None = None
        try:
            with f:
                for lineno, raw in enumerate(f, 1):
                    stats["lines"] += 1
                    line = raw.rstrip("\r\n")
                    if not line:
                        journal_ts = None        # the end of a journald export entry
                        continue
                    if line.startswith("__REALTIME_TIMESTAMP="):
                        journal_ts = _journal_time(line)
                        continue
                    if MARKER not in line:
                        continue
                    stats["fticks"] += 1
                    r = parse_line(line, zone=zone, ref=ref, fallback_ts=journal_ts)
                    if isinstance(r, dict) and r["ts"] is None:
                        r = "no-timestamp"
                    if isinstance(r, str):
                        stats["malformed"][r] += 1
                        if len(stats["examples"]) < examples:
                            stats["examples"].append((path, lineno, r))
                        continue
                    stats["nonconforming"] += r["nonconforming"]
                    # a journal MESSAGE line has no time of its own: its entry's is part of it
                    text = line if r["ts_source"] != "fallback" else \
                        f"{r['ts'].isoformat()} {line}"
                    rows.append(_row(r, text, seen[text], source))
                    seen[text] += 1
                    if len(rows) >= _BATCH:
                        _insert(con, rows, stats)
                        rows = []
        except (OSError, EOFError) as e:   # a truncated .gz, an I/O error: keep what was read
            stats["unreadable"].append((path, getattr(e, "strerror", None) or str(e)))
        _insert(con, rows, stats)
        stats["files"] += 1
    stats["malformed"] = dict(sorted(stats["malformed"].items()))
    return stats


def _row(r: dict, text: str, occurrence: int, source: str) -> tuple:
    """A parsed line as a row of the fticks table (_COLS), keyed by its text."""
    a = r["attrs"]
    return (_utc_naive(r["ts"]), r["federation"], r["version"], a.get("REALM"),
            a.get("VISCOUNTRY"), a.get("VISINST"), a.get("CSI"), a["RESULT"],
            _line_hash(text, occurrence), source)


class Recorder:
    """This daemon's own lines into the fticks table as it writes them, so
    `fticks report` counts them with nothing imported. Each is keyed as
    import_files would key it in the file it went to (the n-th identical
    line, which can only come within one second, with its number): importing
    that file later adds nothing. Lines sent to syslog carry a prefix there,
    so a syslog file holding them must not be imported as well."""

    def __init__(self, source: str):
        self.source = source          # source_file of the rows: the F-TICKS file, or "syslog"
        self._second: dt.datetime | None = None
        self._seen: Counter = Counter()   # identical lines of the current second
        self._table_made = False

    def record(self, con, line: str) -> None:
        r = parse_line(line)
        if not isinstance(r, dict) or r["ts"] is None:
            raise ValueError(f"not an F-TICKS line with a time: {line!r}")
        if r["ts"] != self._second:
            self._second, self._seen = r["ts"], Counter()
        if not self._table_made:  # once per daemon run, not per login
            con.execute(FTICKS_TABLE)
            self._table_made = True
        con.execute(f"INSERT OR IGNORE INTO fticks ({', '.join(_COLS)}) "
                    f"VALUES ({', '.join('?' * len(_COLS))})",
                    list(_row(r, line, self._seen[line], self.source)))
        self._seen[line] += 1


def _journal_time(line: str) -> dt.datetime | None:
    try:
        us = int(line.split("=", 1)[1])
        return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=us)
    except (ValueError, OverflowError):
        return None


def _insert(con, rows: list[tuple], stats: dict) -> None:
    if not rows:
        return
    import numpy as np
    cols = list(zip(*rows))
    batch = {name: np.array(col, dtype=object) for name, col in zip(_COLS, cols)}
    batch["ts"] = np.array(cols[0], dtype="datetime64[us]")
    con.register("fticks_batch", batch)
    try:
        n = con.execute(f"INSERT OR IGNORE INTO fticks SELECT {', '.join(_COLS)} "
                        f"FROM fticks_batch").fetchall()[0][0]
    finally:
        con.unregister("fticks_batch")
    stats["imported"] += n
    stats["duplicates"] += len(rows) - n


def format_import(stats: Mapping[str, Any]) -> str:
    """import_files' counts as a few lines for the operator."""
    mal = stats["malformed"]
    nmal = sum(mal.values())
    out = [f"{stats['files']} file(s), {stats['lines']} line(s), {stats['fticks']} F-TICKS "
           f"line(s): {stats['imported']} imported, {stats['duplicates']} duplicate(s), "
           f"{nmal} malformed"]
    if nmal:
        out.append("malformed: " + ", ".join(f"{r} {n}" for r, n in mal.items()))
    for path, lineno, reason in stats["examples"]:
        out.append(f"  {path}:{lineno}: {reason}")
    if stats["nonconforming"]:
        out.append(f"{stats['nonconforming']} line(s) with extension attributes outside the "
                   f"F-TICKS grammar (imported)")
    for path, err in stats["unreadable"]:
        out.append(f"cannot read {path}: {err}")
    return "\n".join(out)


# --- report -----------------------------------------------------------------------------

REPORT_COLUMNS = ("day", "realm", "viscountry", "result", "logins")


def report(con, since: dt.date | dt.datetime | None = None,
           zone: dt.tzinfo | str = "UTC") -> list[dict]:
    """Logins per day (in `zone`) x realm x visited country x result, oldest
    day first: dicts of REPORT_COLUMNS (day as YYYY-MM-DD; realm and
    viscountry None when the lines had none). since: a date (from its
    midnight in `zone`) or a datetime (naive: in `zone`)."""
    zone = ZoneInfo(zone) if isinstance(zone, str) else zone
    con.execute(FTICKS_TABLE)
    q = ("SELECT CAST(timezone(?, timezone('UTC', ts)) AS DATE) AS day, realm, viscountry, "
         "result, count(*) FROM fticks")
    args: list[Any] = [str(zone)]
    if since is not None:
        if not isinstance(since, dt.datetime):
            since = dt.datetime(since.year, since.month, since.day)
        if since.tzinfo is None:
            since = since.replace(tzinfo=zone)
        q += " WHERE ts >= ?"
        args.append(_utc_naive(since))
    q += (" GROUP BY ALL ORDER BY day, realm NULLS FIRST, viscountry NULLS FIRST, "
          "result DESC")   # OK before FAIL
    return [dict(zip(REPORT_COLUMNS, (day.isoformat(), realm, country, result, n)))
            for day, realm, country, result, n in con.execute(q, args).fetchall()]


def format_report(rows: Iterable[Mapping[str, Any]]) -> str:
    """report()'s rows as a table: one line per row, "-" for a missing realm
    or country, and a total line."""
    rows = list(rows)
    head = ("DAY", "REALM", "VISCOUNTRY", "RESULT", "LOGINS")
    cells = [(r["day"], r["realm"] or "-", r["viscountry"] or "-", r["result"],
              str(r["logins"])) for r in rows]
    total = sum(r["logins"] for r in rows)
    foot = ("total", "", "", "", str(total))
    width = [max(len(c[i]) for c in [head, *cells, foot]) for i in range(5)]

    def line(c):
        return "  ".join([*(c[i].ljust(width[i]) for i in range(4)), c[4].rjust(width[4])])
    return "\n".join(line(c) for c in [head, *cells, foot]) + "\n"


# --- the service ------------------------------------------------------------------------

class FticksService(Service):
    """F-TICKS in the daemon: with [fticks], a line for every login success
    and failure (the login service, OpenVPN), written out and recorded in
    the database at once (Recorder), so `acctctl fticks report` counts them;
    always, `acctctl fticks import` adds the lines of other servers."""

    name = "fticks"

    def __init__(self, core: Core, settings: FticksSettings | None):
        super().__init__(core, settings)
        self.emitter: Emitter | None = None   # opened at the first login attempt
        self.recorder: Recorder | None = None
        self.unrecorded = 0                   # lines the database refused

    @staticmethod
    def settings_of(config):
        return config.fticks

    def reload(self, settings: FticksSettings | None) -> None:
        if settings != self.settings:
            self.close()  # reopened with the new settings when next used
        self.settings = settings

    def close(self) -> None:
        if self.emitter is not None:
            self.emitter.close()
            self.emitter = None
        self.recorder = None

    def status(self) -> dict | None:
        if self.emitter is None:
            return None
        return {"fticks": {"written": self.emitter.written, "lost": self.emitter.lost,
                           "unrecorded": self.unrecorded}}

    def login_attempted(self, who, ok, reason, addr, mac, method, rp=None) -> None:
        if reason.startswith("logout") or self.settings is None:
            return  # F-TICKS counts logins, not logouts
        if self.emitter is None:
            self.emitter = Emitter(self.settings, clock=lambda: self.core.clock().timestamp())
            file = self.settings.file
            self.recorder = Recorder(os.path.abspath(file) if file else "syslog")
        snap = self.core.snapshot
        name = snap.name_of(who) if who in snap.units.by_oid else str(who)
        line = self.emitter.emit(realm=None, user=name, csi=mac or addr, result=bool(ok),
                                 rp=rp, method=method)
        import duckdb
        try:
            with self.core.lock:
                self.recorder.record(self.core.storage.con, line)
        except duckdb.Error as e:  # a login must not fail because its statistics did
            self.unrecorded += 1
            if self.unrecorded == 1:
                log.error("F-TICKS line not recorded in the database: %s", e)

    # -- commands ---------------------------------------------------------------------

    def import_files(self, paths: list[str]) -> dict:
        with self.core.lock:
            stats = import_files(self.core.storage.con, paths,
                                 zone=self.core.config.processor.zone)
        return {**stats, "text": format_import(stats)}

    def report(self, since: str | None = None) -> dict:
        with self.core.lock:
            con = self.core.storage.con
            if not con.execute("SELECT count(*) FROM duckdb_tables() "
                               "WHERE table_name = 'fticks'").fetchall()[0][0]:
                return {"rows": [], "text": "no F-TICKS lines yet (acctd records its own "
                        "with [fticks]; `acctctl fticks import` adds other servers')"}
            rows = report(con, dt.date.fromisoformat(since) if since else None,
                          self.core.config.processor.time_zone)
        return {"rows": rows, "text": format_report(rows)}
