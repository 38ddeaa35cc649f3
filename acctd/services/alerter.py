"""E-mail alerts (NeTAMS `service alerter`): quota notices and traffic reports,
rendered in English or Russian and sent through SMTP from a persisted outbox.

Outbox: one JSON file per message in a durable directory (written to a
temporary name, fsynced and renamed), so a message exists whole or not at
all, even after SIGKILL or power loss. Delivery removes the file only after the
server accepted the message (250 after DATA).

Delivery is at-least-once, not exactly-once. SMTP has no idempotent
submit: if the connection dies after the server queued the message but
before its 250 reached us, or the daemon dies between the 250 and the
unlink, the message is sent again on the next try. Every message carries
a Message-ID fixed at enqueue time (and the same Date), so a duplicate has
identical headers and body and can be recognised: some mailbox providers
and clients collapse it, most MTAs deliver both. The windows are small: the
unlink is the first thing done after the 250. What cannot happen is a loss: a message leaves the
outbox only when accepted, expired (max-age) or refused permanently (5xx),
and the last two go to `failed/` rather than disappearing.

Single writer: one daemon owns an outbox directory. deliver_due() blocks on
the network (bounded by the SMTP timeout); AlerterService runs it on a
thread of its own, off the drain loop.
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import logging
import os
import secrets
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from email.header import Header
from email.mime.text import MIMEText
from pathlib import Path

from acctd.common import durable
from acctd.common.display import format_bytes
from acctd.common.secret_files import read_private
from acctd.config.schema import (Invalid, Table, boolean, choice, file_path, integer, number,
                                 secret_file, setting, string)
from acctd.errors import BadRequest
from acctd.services.contract import Core, Service

log = logging.getLogger("acctd.alerter")

LANGUAGES = ("en", "ru")
KINDS = ("soft", "hard", "return")
PERIODS = ("hour", "day", "week", "month")
DIRECTIONS = ("in", "out", "sum")

BACKOFF_BASE = 60.0        # first retry a minute after a failure
BACKOFF_CAP = 3600.0       # then doubling, but at least hourly
MAX_AGE = 5 * 86400.0      # as sendmail's default queue lifetime


# --- settings ---------------------------------------------------------------------

def _addresses(v, ctx) -> tuple[str, ...]:
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(a, str) and a.strip() for a in items):
        raise Invalid(f"expected e-mail addresses, got {v!r}")
    return tuple(a.strip() for a in items)


@dataclasses.dataclass(frozen=True)
class MailSettings(Table):
    """The [alerter] table: where and how to send. The password is read from
    a file at each connection, so it is neither in the config nor stale
    after rotation."""
    host: str = setting("localhost", key="smtp-server", check=string("a host name or address"))
    port: int = setting(25, key="smtp-port", check=integer(1, 65535, "a port"))
    starttls: bool = setting(False, check=boolean())
    # CA file to verify the server; None: system CAs
    tls_ca: str | None = setting(None, check=file_path("a CA certificate file"))
    user: str | None = setting(None, key="smtp-user", check=string("a user name"))
    password_file: str | None = setting(None, key="smtp-password-file", check=secret_file())
    sender: str = setting("acctd@localhost", key="from", check=string("an e-mail address"))
    # admin users' addresses, copied on every notice
    admins: tuple[str, ...] = setting((), check=_addresses)
    language: str = setting("en", check=choice(*LANGUAGES))   # NeTAMS `language { ru | en }`
    timeout: float = setting(30.0, check=number(0, what="seconds", open_lo=True))

    def finish(self, ctx) -> "MailSettings":
        if self.user and not self.password_file:
            raise Invalid("smtp-user needs smtp-password-file", "smtp-user")
        return self


# --- pure helpers: figures, recipients, backoff, templates --------------------------

def recipients(owner: str | None, admins: Iterable[str]) -> tuple[str, ...]:
    """`{owner}` (the unit's e-mail, if any) then admin users, each once."""
    out: list[str] = []
    for a in (owner, *admins):
        if a and a.lower() not in (x.lower() for x in out):
            out.append(a)
    return tuple(out)


def backoff(attempts: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Delay after the attempts-th failure: base, 2·base, 4·base … capped."""
    return durable.backoff(attempts, base, cap)


@dataclasses.dataclass(frozen=True)
class QuotaNotice:
    """What the quota service reports: a soft/hard threshold crossed or access
    returned, for one unit, period and direction."""
    kind: str                 # soft | hard | return
    unit: str
    oid: str
    period: str               # hour | day | week | month
    direction: str            # in | out | sum
    usage: int                # bytes counted so far in the period
    quota: int                # bytes allowed in the period
    email: str | None = None  # the unit's owner
    # the quota's notify recipients as addresses; None: the owner. The admins
    # are copied either way (a notify of {none} sends no notice at all).
    to: tuple[str, ...] | None = None
    url: str | None = None    # the unit's traffic page ([html] url), linked in the body

    def __post_init__(self):
        for v, allowed, what in ((self.kind, KINDS, "kind"), (self.period, PERIODS, "period"),
                                 (self.direction, DIRECTIONS, "direction")):
            if v not in allowed:
                raise ValueError(f"{what} must be one of {', '.join(allowed)}, got {v!r}")

    @property
    def ratio(self) -> float:
        return self.usage / self.quota if self.quota else 0.0


_WORDS = {
    # Russian needs the adjective in three cases: "…% суточной квоты",
    # "суточная квота превышена", "превысил суточную квоту"
    "en": {"gen": {"hour": "hourly", "day": "daily", "week": "weekly", "month": "monthly"},
           "dir": {"in": "incoming", "out": "outgoing", "sum": "total"},
           "noun": {"hour": "hour", "day": "day", "week": "week", "month": "month"}},
    "ru": {"gen": {"hour": "часовой", "day": "суточной", "week": "недельной", "month": "месячной"},
           "nom": {"hour": "часовая", "day": "суточная", "week": "недельная", "month": "месячная"},
           "acc": {"hour": "часовую", "day": "суточную", "week": "недельную", "month": "месячную"},
           "dir": {"in": "входящий", "out": "исходящий", "sum": "суммарный"},
           "noun": {"hour": "час", "day": "сутки", "week": "неделя", "month": "месяц"}},
}

_QUOTA = {
    "en": {
        "soft": ("[acctd] {unit}: {pct}% of the {period_gen} {direction} quota used",
                 "Unit {unit} (oid {oid}) has used {pct}% of its {period_gen} quota "
                 "for {direction} traffic.\nAccess will be blocked when the quota is reached."),
        "hard": ("[acctd] {unit}: {period_nom} {direction} quota exceeded, access blocked",
                 "Unit {unit} (oid {oid}) has exceeded its {period_acc} quota "
                 "for {direction} traffic.\nAccess is blocked until the period ends."),
        "return": ("[acctd] {unit}: access restored",
                   "A new {period_noun} has begun; unit {unit} (oid {oid}) has access again."),
        "figures": "Usage: {usage} bytes ({usage_h})\nQuota: {quota} bytes ({quota_h})\n"
                   "Ratio: {pct}%\nPeriod: {period_noun}, {direction}",
        "url": "Your traffic: {url}",
    },
    "ru": {
        "soft": ("[acctd] {unit}: израсходовано {pct}% {period_gen} квоты ({direction} трафик)",
                 "Юнит {unit} (oid {oid}) израсходовал {pct}% {period_gen} квоты "
                 "({direction} трафик).\nПри достижении квоты доступ будет закрыт."),
        "hard": ("[acctd] {unit}: {period_nom} квота превышена, доступ закрыт",
                 "Юнит {unit} (oid {oid}) превысил {period_acc} квоту "
                 "({direction} трафик).\nДоступ закрыт до конца периода."),
        "return": ("[acctd] {unit}: доступ восстановлен",
                   "Начался новый период ({period_noun}); доступ юнита {unit} "
                   "(oid {oid}) восстановлен."),
        "figures": "Использовано: {usage} байт ({usage_h})\nКвота: {quota} байт ({quota_h})\n"
                   "Доля: {pct}%\nПериод: {period_noun}, {direction}",
        "url": "Ваш трафик: {url}",
    },
}


def render_quota(n: QuotaNotice, language: str = "en") -> tuple[str, str]:
    """(subject, body) of a quota notice, with usage, quota and ratio."""
    t, w = _QUOTA[language], _WORDS[language]
    f = {"unit": n.unit, "oid": n.oid, "direction": w["dir"][n.direction],
         "period_gen": w["gen"][n.period],
         "period_nom": w.get("nom", w["gen"])[n.period],
         "period_acc": w.get("acc", w["gen"])[n.period],
         "period_noun": w["noun"][n.period], "usage": n.usage, "quota": n.quota,
         "usage_h": format_bytes(n.usage), "quota_h": format_bytes(n.quota),
         # floored, so 79.99 % never reads as the 80 % threshold
         "pct": f"{int(n.ratio * 1000) / 10:.1f}"}
    subject, text = t[n.kind]
    link = "\n" + t["url"].format(url=n.url) + "\n" if n.url else ""
    return (subject.format(**f),
            text.format(**f) + "\n\n" + t["figures"].format(**f) + "\n" + link)


_REPORT = {
    "en": {"subject": {"day": "[acctd] {unit}: daily traffic report for {start}",
                       "week": "[acctd] {unit}: weekly traffic report, week of {start}"},
           "head": "Traffic of unit {unit} (oid {oid}), {period} from {start}.",
           "cols": ("policy", "in", "out"), "total": "total",
           "period": {"day": "daily", "week": "weekly"}},
    "ru": {"subject": {"day": "[acctd] {unit}: суточный отчёт о трафике за {start}",
                       "week": "[acctd] {unit}: недельный отчёт о трафике с {start}"},
           "head": "Трафик юнита {unit} (oid {oid}), {period} отчёт с {start}.",
           "cols": ("политика", "входящий", "исходящий"), "total": "итого",
           "period": {"day": "суточный", "week": "недельный"}},
}


def render_report(unit: str, oid: str, period: str, start: datetime,
                  rows: Sequence[tuple[str, int, int]], language: str = "en",
                  total: tuple[int, int] | None = None) -> tuple[str, str]:
    """(subject, body) of a daily or weekly traffic report: one line per
    acct-policy with bytes in and out, then a total line: `total` (the unit's
    all-traffic bytes in and out, as policies may overlap) or the rows' sum."""
    if period not in ("day", "week"):
        raise ValueError(f"report period must be day or week, got {period!r}")
    t = _REPORT[language]
    f = {"unit": unit, "oid": oid, "period": t["period"][period],
         "start": start.strftime("%Y-%m-%d")}
    width = max([len(t["cols"][0]), len(t["total"]), *(len(p) for p, _, _ in rows)])
    lines = [t["head"].format(**f), "",
             f"{t['cols'][0]:<{width}}  {t['cols'][1]:>22}  {t['cols'][2]:>22}"]

    def cell(b: int) -> str:
        return f"{b} ({format_bytes(b)})"
    for policy, b_in, b_out in rows:
        lines.append(f"{policy:<{width}}  {cell(b_in):>22}  {cell(b_out):>22}")
    tin, tout = total if total is not None else (sum(r[1] for r in rows), sum(r[2] for r in rows))
    lines.append(f"{t['total']:<{width}}  {cell(tin):>22}  {cell(tout):>22}")
    return t["subject"][period].format(**f), "\n".join(lines) + "\n"


# --- the outbox -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Message:
    """One queued e-mail. `id` names the outbox file; `message_id` is the
    RFC 5322 Message-ID, fixed at enqueue so every retry sends the same one."""
    id: str
    message_id: str
    to: tuple[str, ...]
    subject: str
    body: str
    created: float
    attempts: int = 0
    next_try: float = 0.0
    last_error: str = ""
    seq: int = 0              # enqueue order among messages created in the same second

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Message":
        d = json.loads(text)
        d["to"] = tuple(d["to"])
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class QueueRow:
    """A line of `acctctl alerter`."""
    id: str
    to: tuple[str, ...]
    subject: str
    attempts: int
    next_try: float
    last_error: str
    state: str             # queued | failed (kept in failed/, never retried)


class Outbox:
    """A durable directory (acctd.common.durable) of `<id>.json` message
    files, plus `failed/` for dead letters."""

    def __init__(self, path: str | os.PathLike):
        self.queued = durable.Directory(path)
        self.buried = durable.Directory(Path(path) / "failed")
        self.path, self.failed = self.queued.path, self.buried.path

    def write(self, m: Message) -> None:
        self.queued.write(f"{m.id}.json", m.to_json())

    def remove(self, mid: str) -> None:
        self.queued.remove(f"{mid}.json")

    def bury(self, m: Message) -> None:
        """Move to failed/: kept for the admin to read, never retried."""
        self.buried.write(f"{m.id}.json", m.to_json())
        self.remove(m.id)

    def _load(self, d: durable.Directory) -> list[Message]:
        out = []
        for p in d.files("*.json"):
            try:
                out.append(Message.from_json(p.read_text(encoding="utf-8")))
            except (ValueError, TypeError, KeyError) as e:
                # cannot come from our atomic writes; keep the bytes, stop retrying
                log.error("outbox file %s is unreadable (%s); renamed to .bad", p, e)
                p.rename(p.with_suffix(".bad"))
        return sorted(out, key=lambda m: (m.created, m.seq))

    def messages(self) -> list[Message]:
        return self._load(self.queued)

    def dead(self) -> list[Message]:
        return self._load(self.buried)


# --- the mailer -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Delivery:
    """What one deliver_due() did, by outbox id."""
    sent: tuple[str, ...] = ()
    deferred: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()   # buried: refused permanently or expired


class Mailer:
    """Queue and send alerts. Construct one per daemon on its outbox; a new
    Mailer on the same directory (after a crash) picks up where it left."""

    def __init__(self, settings: MailSettings, outbox: str | os.PathLike, *,
                 clock: Callable[[], float] = time.time,
                 max_age: float = MAX_AGE, backoff_base: float = BACKOFF_BASE,
                 backoff_cap: float = BACKOFF_CAP):
        self.settings = settings
        self.outbox = Outbox(outbox)
        self.clock = clock
        self.max_age = max_age
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap

    # enqueueing

    def enqueue(self, to: Sequence[str], subject: str, body: str,
                now: float | None = None) -> str:
        """Persist a message; returns its outbox id once it is on disk."""
        if not to:
            raise ValueError("a message needs at least one recipient")
        now = self.clock() if now is None else now
        mid = secrets.token_hex(6)
        domain = self.settings.sender.rpartition("@")[2] or "localhost"
        # short enough not to be folded: some tools compare the header raw
        m = Message(id=mid, message_id=f"<acctd.{int(now)}.{mid}@{domain}>",
                    to=tuple(to), subject=subject, body=body, created=now, next_try=now,
                    seq=time.time_ns())
        self.outbox.write(m)
        log.debug("queued %s to %s: %s", mid, ", ".join(to), subject)
        return mid

    def notify_quota(self, n: QuotaNotice, now: float | None = None) -> str | None:
        """Queue the notice; None when it has no recipient (an owner without
        e-mail, no one else named, no admins)."""
        to = recipients(n.email, self.settings.admins) if n.to is None else \
            recipients(None, (*n.to, *self.settings.admins))
        if not to:
            return None
        subject, body = render_quota(n, self.settings.language)
        return self.enqueue(to, subject, body, now)

    def report(self, unit: str, oid: str, email_addr: str | None, period: str,
               start: datetime, rows: Sequence[tuple[str, int, int]],
               now: float | None = None, *, to: Sequence[str] | None = None,
               total: tuple[int, int] | None = None) -> str:
        """Queue a traffic report to the unit's e-mail and the admins, or to
        exactly `to` (NeTAMS `send report to ...`)."""
        subject, body = render_report(unit, oid, period, start, rows, self.settings.language,
                                      total)
        return self.enqueue(tuple(to) if to is not None else
                            recipients(email_addr, self.settings.admins), subject, body, now)

    # the queue, for `acctctl alerter`

    def queue(self) -> list[QueueRow]:
        def row(m: Message, state: str) -> QueueRow:
            return QueueRow(m.id, m.to, m.subject, m.attempts, m.next_try, m.last_error, state)
        return ([row(m, "queued") for m in self.outbox.messages()]
                + [row(m, "failed") for m in self.outbox.dead()])

    # sending

    def compose(self, m: Message) -> MIMEText:
        """The same headers on every attempt, so a duplicate is recognisable.

        compat32 MIMEText + Header rather than EmailMessage: Python 3.11's
        folder drops the space between two RFC 2047 words at a fold, which
        turns "квота превышена" into "квотапревышена" for the reader."""
        ascii_body = m.body.isascii()
        em = MIMEText(m.body, "plain", "us-ascii" if ascii_body else "utf-8")
        em["From"] = self.settings.sender
        em["To"] = ", ".join(m.to)
        em["Subject"] = m.subject if m.subject.isascii() else Header(m.subject, "utf-8")
        em["Date"] = email.utils.formatdate(m.created, localtime=False)
        em["Message-ID"] = m.message_id
        em["Auto-Submitted"] = "auto-generated"   # RFC 3834: no vacation replies
        return em

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
        try:
            smtp.ehlo()
            if s.starttls:
                ctx = ssl.create_default_context(cafile=s.tls_ca)
                smtp.starttls(context=ctx)
                smtp.ehlo()
            if s.user:
                password = read_private(s.password_file, "smtp-password-file").decode()
                smtp.login(s.user, password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _defer(self, m: Message, now: float, error: str) -> bool:
        """Record a failed attempt; True if the message expired and was buried."""
        attempts = m.attempts + 1
        m = dataclasses.replace(m, attempts=attempts, last_error=error,
                                next_try=now + backoff(attempts, self.backoff_base,
                                                       self.backoff_cap))
        if now - m.created >= self.max_age:
            m = dataclasses.replace(m, last_error=f"expired after {attempts} attempts: {error}")
            self.outbox.bury(m)
            log.error("giving up on %s to %s: %s", m.id, ", ".join(m.to), m.last_error)
            return True
        self.outbox.write(m)
        log.warning("mail %s deferred (attempt %d, next in %.0fs): %s",
                    m.id, attempts, m.next_try - now, error)
        return False

    def _bury(self, m: Message, error: str) -> None:
        self.outbox.bury(dataclasses.replace(m, attempts=m.attempts + 1, last_error=error))
        log.error("mail %s to %s refused permanently: %s", m.id, ", ".join(m.to), error)

    def deliver_due(self, now: float | None = None) -> Delivery:
        """Try every message whose next_try has come, over one connection."""
        now = self.clock() if now is None else now
        due = [m for m in self.outbox.messages() if m.next_try <= now]
        if not due:
            return Delivery()
        sent: list[str] = []
        deferred: list[str] = []
        failed: list[str] = []
        try:
            smtp = self._connect()
        except (OSError, ValueError, smtplib.SMTPException) as e:
            # a 5xx at login, or a password file gone or opened to others, is a
            # configuration error, not the message's fault: retry
            for m in due:
                (failed if self._defer(m, now, _reason(e)) else deferred).append(m.id)
            return Delivery((), tuple(deferred), tuple(failed))
        try:
            for m in due:
                try:
                    refused = smtp.send_message(self.compose(m), self.settings.sender, list(m.to))
                except smtplib.SMTPRecipientsRefused as e:
                    codes = [c for c, _ in e.recipients.values()]
                    if all(500 <= c < 600 for c in codes):
                        self._bury(m, _reason(e))
                        failed.append(m.id)
                    else:
                        (failed if self._defer(m, now, _reason(e)) else deferred).append(m.id)
                    _rset(smtp)
                except smtplib.SMTPSenderRefused as e:
                    # our From is refused: the configuration's fault, not the message's
                    (failed if self._defer(m, now, _reason(e)) else deferred).append(m.id)
                    _rset(smtp)
                except smtplib.SMTPResponseException as e:
                    if 500 <= e.smtp_code < 600:
                        self._bury(m, _reason(e))
                        failed.append(m.id)
                    else:
                        (failed if self._defer(m, now, _reason(e)) else deferred).append(m.id)
                    _rset(smtp)
                except OSError as e:
                    # SMTPException is an OSError: this catches disconnects and
                    # other non-reply failures, after the reply cases above.
                    # ambiguous for this one (it may have been queued); the rest
                    # were not tried and stay due for the next call
                    (failed if self._defer(m, now, _reason(e)) else deferred).append(m.id)
                    break
                else:
                    # accepted: forget it before anything else can fail
                    retry = {r: c for r, (c, _) in refused.items() if 400 <= c < 500}
                    if retry:
                        self._defer(dataclasses.replace(m, to=tuple(retry)), now,
                                    f"recipients deferred: {refused}")
                    else:
                        self.outbox.remove(m.id)
                    if refused:
                        log.warning("mail %s: some recipients refused: %s", m.id, refused)
                    sent.append(m.id)
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()
        return Delivery(tuple(sent), tuple(deferred), tuple(failed))


def _reason(e: BaseException) -> str:
    if isinstance(e, smtplib.SMTPResponseException):
        msg = e.smtp_error.decode(errors="replace") if isinstance(e.smtp_error, bytes) \
            else str(e.smtp_error)
        return f"{e.smtp_code} {msg}"
    if isinstance(e, smtplib.SMTPRecipientsRefused):
        return "; ".join(f"{r}: {c} {m.decode(errors='replace') if isinstance(m, bytes) else m}"
                         for r, (c, m) in e.recipients.items())
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _rset(smtp: smtplib.SMTP) -> None:
    try:
        smtp.rset()
    except (OSError, smtplib.SMTPException):
        pass


# --- the service ----------------------------------------------------------------------

class AlerterService(Service):
    """NeTAMS `service alerter` in the daemon: the outbox lives in the state
    directory and a thread of its own delivers it, so SMTP waits never hold
    up draining. Without an [alerter] table, mail is off (mailer is None)."""

    name = "alerter"
    EVERY = 10.0   # seconds between delivery rounds

    def __init__(self, core: Core, settings: MailSettings | None):
        super().__init__(core, settings)
        self.mailer: Mailer | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._serving = False

    @staticmethod
    def settings_of(config):
        return config.alerter

    def start(self) -> None:
        self.reload(self.settings)

    def reload(self, settings: MailSettings | None) -> None:
        self.settings = settings
        if settings is None:
            self.mailer = None
        elif self.mailer is None:
            self.mailer = Mailer(settings, os.path.join(self.core.state_dir, "outbox"))
        else:
            self.mailer.settings = settings
        if self._serving:
            self.serve()  # a newly configured mailer gets its thread

    def serve(self) -> None:
        self._serving = True
        if self.mailer is not None and (self._thread is None or not self._thread.is_alive()):
            self._thread = threading.Thread(target=self._deliver, name="mail", daemon=True)
            self._thread.start()

    def _deliver(self) -> None:
        while not self._stop.wait(self.EVERY):
            mailer = self.mailer
            if mailer is None:
                continue
            try:
                mailer.deliver_due()
            except Exception:
                log.exception("mail delivery failed; retried later")

    def close(self) -> None:
        self._stop.set()

    def queue(self) -> list[dict]:
        """`acctctl alerter`: the outbox."""
        if self.mailer is None:
            raise BadRequest("no [alerter] in the configuration: mail is off")
        return [dataclasses.asdict(r) for r in self.mailer.queue()]
