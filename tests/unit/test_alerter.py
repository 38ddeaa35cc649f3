"""The alerter against a real SMTP server (aiosmtpd on 127.0.0.1): notices
arrive with the right recipients, subjects and figures; nothing is lost or
doubled while the server is down or after the sender is SIGKILLed."""

import email
import email.policy
import os
import signal
import ssl
import subprocess
import sys
import textwrap
from datetime import datetime

import pytest

aiosmtpd = pytest.importorskip("aiosmtpd")
from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult  # noqa: E402

from acctd.services.alerter import (BACKOFF_BASE, BACKOFF_CAP, Mailer, MailSettings, QuotaNotice,
                                    backoff, recipients)
from tests.ports import free_port

ADMINS = ("noc@isp.example", "boss@isp.example")
OWNER = "client12@example.net"
T0 = 1_700_000_000.0


class Sink:
    """Collects what the server accepted."""

    def __init__(self):
        self.got = []

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.got.append((tuple(envelope.rcpt_tos), msg, session))
        return "250 OK queued"


class Server:
    """A real aiosmtpd server on a fixed ephemeral port that can be stopped
    and started again (same port), as a mail relay going down and back."""

    def __init__(self, **smtp_kw):
        self.port = free_port()
        self.sink = Sink()
        self.smtp_kw = smtp_kw
        self.ctl = None

    def start(self):
        self.ctl = Controller(self.sink, hostname="127.0.0.1", port=self.port, **self.smtp_kw)
        self.ctl.start()

    def stop(self):
        self.ctl.stop()
        self.ctl = None


@pytest.fixture
def server():
    s = Server()
    s.start()
    yield s
    if s.ctl:
        s.stop()


def mailer(server, outbox, language="en", **kw) -> Mailer:
    st = MailSettings(host="127.0.0.1", port=server.port, sender="acctd@isp.example",
                      admins=ADMINS, language=language, timeout=5, **kw)
    return Mailer(st, outbox)


def notice(kind, **kw):
    d = dict(kind=kind, unit="client12", oid="0A12B3", period="day", direction="in",
             usage=2_684_355, quota=3 * 1024 * 1024, email=OWNER)
    d.update(kw)
    return QuotaNotice(**d)


# --- pure parts ---------------------------------------------------------------------

def test_backoff_doubles_and_is_capped():
    assert [backoff(n) for n in (1, 2, 3)] == [BACKOFF_BASE, 2 * BACKOFF_BASE, 4 * BACKOFF_BASE]
    assert backoff(50) == backoff(1000) == BACKOFF_CAP


def test_recipients_owner_first_then_admins_once():
    assert recipients(OWNER, ADMINS) == (OWNER, *ADMINS)
    assert recipients(None, ADMINS) == ADMINS
    assert recipients("NOC@isp.example", ADMINS) == ("NOC@isp.example", "boss@isp.example")


def test_settings_from_table(tmp_path):
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "pw").chmod(0o600)
    table = {"smtp-server": "mx", "smtp-port": 587, "starttls": True, "smtp-user": "acctd",
             "smtp-password-file": "pw", "admins": "noc@x", "language": "ru"}
    st = MailSettings.from_mapping(table, base=tmp_path)
    assert (st.host, st.port, st.starttls, st.admins, st.language) == \
        ("mx", 587, True, ("noc@x",), "ru")
    assert st.password_file == str(tmp_path / "pw")
    with pytest.raises(ValueError, match="smtp-sever"):
        MailSettings.from_mapping({"smtp-sever": "mx"})
    with pytest.raises(ValueError, match="language"):
        MailSettings.from_mapping({"language": "de"})
    with pytest.raises(ValueError, match="smtp-user: smtp-user needs smtp-password-file"):
        MailSettings.from_mapping({"smtp-user": "acctd"})
    # the password file follows the rule of every secret file, checked at load
    (tmp_path / "pw").chmod(0o640)
    with pytest.raises(ValueError, match="smtp-password-file: .*pw is accessible by group or "
                                         "others"):
        MailSettings.from_mapping(table, base=tmp_path)


# --- against the real server ---------------------------------------------------------

EXPECT = {
    "en": {"soft": "[acctd] client12: 85.3% of the daily incoming quota used",
           "hard": "[acctd] client12: daily incoming quota exceeded, access blocked",
           "return": "[acctd] client12: access restored",
           "figures": ("Usage: 2684355 bytes (2.56 MiB)", "Quota: 3145728 bytes (3.00 MiB)",
                       "Ratio: 85.3%", "oid 0A12B3")},
    "ru": {"soft": "[acctd] client12: израсходовано 85.3% суточной квоты (входящий трафик)",
           "hard": "[acctd] client12: суточная квота превышена, доступ закрыт",
           "return": "[acctd] client12: доступ восстановлен",
           "figures": ("Использовано: 2684355 байт (2.56 MiB)", "Квота: 3145728 байт (3.00 MiB)",
                       "Доля: 85.3%", "oid 0A12B3")},
}


@pytest.mark.parametrize("language", ["en", "ru"])
def test_quota_notices_arrive_with_recipients_subjects_and_figures(server, tmp_path, language):
    m = mailer(server, tmp_path / "outbox", language)
    ids = [m.notify_quota(notice(k), now=T0) for k in ("soft", "hard", "return")]
    assert [r.id for r in m.queue()] == ids
    d = m.deliver_due(T0)
    assert d.sent == tuple(ids) and not d.deferred and not d.failed
    assert m.queue() == []
    assert len(server.sink.got) == 3
    for (rcpts, msg, _), kind in zip(server.sink.got, ("soft", "hard", "return")):
        assert rcpts == (OWNER, *ADMINS)
        assert msg["To"] == ", ".join((OWNER, *ADMINS))
        assert msg["From"] == "acctd@isp.example"
        assert msg["Subject"] == EXPECT[language][kind]
        assert msg["Auto-Submitted"] == "auto-generated"
        body = msg.get_content()
        for fig in EXPECT[language]["figures"]:
            assert fig in body


def test_unit_without_email_goes_to_admins_only(server, tmp_path):
    m = mailer(server, tmp_path / "outbox")
    m.notify_quota(notice("hard", email=None), now=T0)
    m.deliver_due(T0)
    assert [g[0] for g in server.sink.got] == [ADMINS]


@pytest.mark.parametrize("language,subject,line", [
    ("en", "[acctd] client12: weekly traffic report, week of 2026-11-16", "web"),
    ("ru", "[acctd] client12: недельный отчёт о трафике с 2026-11-16", "итого"),
])
def test_weekly_report_per_policy(server, tmp_path, language, subject, line):
    m = mailer(server, tmp_path / "outbox", language)
    m.report("client12", "0A12B3", OWNER, "week", datetime(2026, 11, 16),
             [("ip", 123_456_789, 2345), ("web", 1_048_576, 10)], now=T0)
    m.deliver_due(T0)
    (rcpts, msg, _), = server.sink.got
    assert rcpts == (OWNER, *ADMINS) and msg["Subject"] == subject
    body = msg.get_content()
    assert "123456789 (118 MiB)" in body and "1048576 (1.00 MiB)" in body
    assert "124505365 (119 MiB)" in body       # the total of in
    assert any(ln.startswith(line) for ln in body.splitlines())


def test_server_down_backs_off_then_every_message_arrives_once(server, tmp_path):
    out = tmp_path / "outbox"
    m = mailer(server, out)
    server.stop()
    ids = [m.notify_quota(notice(k, unit=f"u{i}"), now=T0)
           for i, k in enumerate(("soft", "hard", "return", "soft"))]

    d = m.deliver_due(T0)
    assert d.deferred == tuple(ids) and not d.sent
    rows = m.queue()
    assert {r.attempts for r in rows} == {1}
    assert {r.next_try for r in rows} == {T0 + BACKOFF_BASE}
    assert all("ConnectionRefused" in r.last_error for r in rows)

    assert m.deliver_due(T0 + BACKOFF_BASE - 1).deferred == ()     # not due yet: no attempt
    assert {r.attempts for r in m.queue()} == {1}
    t = T0 + BACKOFF_BASE
    m.deliver_due(t)
    assert {r.next_try for r in m.queue()} == {t + 2 * BACKOFF_BASE}
    for _ in range(10):                                              # the delay stops growing
        t = m.queue()[0].next_try
        m.deliver_due(t)
    rows = m.queue()
    assert {r.attempts for r in rows} == {12}
    assert {r.next_try - t for r in rows} == {BACKOFF_CAP}

    # a restarted daemon sees the same attempts (state is on disk)
    assert [(r.id, r.attempts) for r in mailer(server, out).queue()] == \
        [(r.id, r.attempts) for r in rows]

    server.start()
    d = m.deliver_due(rows[0].next_try)
    assert d.sent == tuple(ids)
    m.deliver_due(rows[0].next_try + 10 * BACKOFF_CAP)               # nothing left to resend
    got = server.sink.got
    assert sorted(g[1]["Subject"].split(":")[0] for g in got) == \
        ["[acctd] u0", "[acctd] u1", "[acctd] u2", "[acctd] u3"]
    assert len({g[1]["Message-ID"] for g in got}) == 4
    assert m.queue() == []


def test_message_id_and_date_are_fixed_at_enqueue(server, tmp_path):
    """A retry sends the same Message-ID, so a duplicate after an ambiguous
    failure is recognisable."""
    m = mailer(server, tmp_path / "outbox")
    mid = m.notify_quota(notice("soft"), now=T0)
    msg = m.outbox.messages()[0]
    a, b = m.compose(msg), m.compose(msg)
    assert a["Message-ID"] == b["Message-ID"] == msg.message_id and mid in msg.message_id
    assert a["Date"] == b["Date"]
    m.deliver_due(T0)
    assert server.sink.got[0][1]["Message-ID"] == msg.message_id


def test_permanent_refusal_is_kept_in_failed_not_retried(tmp_path):
    class Refuse(Sink):
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            return "550 no such user"
    s = Server()
    s.sink = Refuse()
    s.start()
    try:
        m = mailer(s, tmp_path / "outbox")
        mid = m.notify_quota(notice("hard"), now=T0)
        d = m.deliver_due(T0)
        assert d.failed == (mid,)
        (row,) = m.queue()
        assert row.state == "failed" and "550" in row.last_error
        assert m.deliver_due(T0 + BACKOFF_CAP).failed == ()
    finally:
        s.stop()


def test_expired_message_is_buried(server, tmp_path):
    m = Mailer(MailSettings(host="127.0.0.1", port=server.port), tmp_path / "outbox",
               max_age=3600)
    server.stop()
    mid = m.enqueue(["a@x"], "s", "b", now=T0)
    m.deliver_due(T0)
    assert m.deliver_due(T0 + 3600).failed == (mid,)
    assert [(r.state, r.attempts) for r in m.queue()] == [("failed", 2)]
    assert "expired" in m.queue()[0].last_error


KILLER = textwrap.dedent("""
    import os, signal, sys
    from acctd.services.alerter import Mailer, MailSettings
    m = Mailer(MailSettings(host="127.0.0.1", port=int(sys.argv[2])), sys.argv[1])
    for i in range(20):
        m.enqueue(["owner%d@x.example" % i, "noc@x.example"], "alert %d" % i, "body %d" % i)
    print(m.queue()[0].id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_sigkill_after_enqueue_loses_nothing(server, tmp_path):
    out = tmp_path / "outbox"
    # a torn write from an earlier kill: never acknowledged, so dropped
    out.mkdir()
    (out / ".tmp-deadbeef0000.json").write_text('{"id": "dead')
    p = subprocess.run([sys.executable, "-c", KILLER, str(out), str(server.port)],
                       capture_output=True, text=True, timeout=60,
                       cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert p.returncode == -signal.SIGKILL, p.stderr
    m = mailer(server, out)                        # the restarted daemon
    rows = m.queue()
    assert len(rows) == 20 and rows[0].id == p.stdout.strip()
    assert not list(out.glob(".tmp-*"))
    d = m.deliver_due()
    assert len(d.sent) == 20
    subjects = sorted(g[1]["Subject"] for g in server.sink.got)
    assert subjects == sorted(f"alert {i}" for i in range(20))
    assert all(g[0][1] == "noc@x.example" for g in server.sink.got)


# --- STARTTLS and AUTH with a self-signed certificate ---------------------------------

@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    crt, key = d / "smtp.crt", d / "smtp.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(key), "-out", str(crt), "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return str(crt), str(key)


def test_starttls_and_auth(cert, tmp_path):
    crt, key = cert
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(crt, key)
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((mechanism, auth_data.login, auth_data.password))
        # handled=False: the server, not this hook, sends the 535
        return AuthResult(success=auth_data.password == b"s3cret", handled=False)

    s = Server(tls_context=ctx, require_starttls=True, authenticator=authenticator,
               auth_require_tls=True)
    s.start()
    try:
        pw = tmp_path / "smtp.pw"
        pw.write_text("s3cret\n")
        m = mailer(s, tmp_path / "outbox", starttls=True, tls_ca=crt,
                   user="acctd", password_file=str(pw))
        m.notify_quota(notice("hard"), now=T0)
        # the one rule for secret files: a password others may read is not used
        pw.chmod(0o644)
        assert m.deliver_due(T0).deferred and "chmod 600" in m.queue()[0].last_error
        assert not logins
        pw.chmod(0o600)
        assert len(m.deliver_due(T0 + 3600).sent) == 1
        (rcpts, msg, session), = s.sink.got
        assert session.ssl is not None                 # the mail went over TLS
        assert session.authenticated
        assert logins and logins[0][1:] == (b"acctd", b"s3cret")

        # an untrusted certificate is a delivery failure, kept for retry
        m2 = mailer(s, tmp_path / "outbox2", starttls=True)          # system CAs only
        m2.notify_quota(notice("soft"), now=T0)
        d = m2.deliver_due(T0)
        assert d.deferred and "CERTIFICATE_VERIFY_FAILED" in m2.queue()[0].last_error

        # a wrong password too
        pw.write_text("wrong")
        m3 = mailer(s, tmp_path / "outbox3", starttls=True, tls_ca=crt,
                    user="acctd", password_file=str(pw))
        m3.notify_quota(notice("soft"), now=T0)
        assert m3.deliver_due(T0).deferred and "535" in m3.queue()[0].last_error
        assert len(s.sink.got) == 1
    finally:
        s.stop()


def test_temporary_refusal_at_data_is_retried_and_arrives_once(tmp_path):
    class Busy(Sink):
        busy = 2

        async def handle_DATA(self, server, session, envelope):
            if self.busy:
                self.busy -= 1
                return "451 4.3.0 try again later"
            return await super().handle_DATA(server, session, envelope)
    s = Server()
    s.sink = Busy()
    s.start()
    try:
        m = mailer(s, tmp_path / "outbox")
        a = m.notify_quota(notice("soft"), now=T0)
        b = m.notify_quota(notice("hard"), now=T0)
        d = m.deliver_due(T0)              # both refused, on one connection (RSET between)
        assert d.deferred == (a, b), d
        assert all("451" in r.last_error for r in m.queue())
        d = m.deliver_due(T0 + BACKOFF_BASE)
        assert d.sent == (a, b)
        assert [g[1]["Subject"].split(": ")[1][:4] for g in s.sink.got] == ["85.3", "dail"]
        assert m.queue() == []
    finally:
        s.stop()


def test_ambiguous_failure_resends_with_the_same_message_id(tmp_path):
    """At-least-once, shown: the server keeps the message but the link dies
    before its 250 arrives. The retry is a duplicate the recipient can
    recognise by Message-ID; the untried message behind it is not charged
    an attempt."""
    class Drops(Sink):
        dropped = False

        async def handle_DATA(self, server, session, envelope):
            await super().handle_DATA(server, session, envelope)
            if not self.dropped:
                self.dropped = True
                server.transport.close()
            return "250 OK queued"
    s = Server()
    s.sink = Drops()
    s.start()
    try:
        m = mailer(s, tmp_path / "outbox")
        a = m.notify_quota(notice("hard"), now=T0)
        b = m.notify_quota(notice("return"), now=T0)
        d = m.deliver_due(T0)
        assert d.deferred == (a,) and not d.sent
        assert [(r.id, r.attempts) for r in m.queue()] == [(a, 1), (b, 0)]
        assert "SMTPServerDisconnected" in m.queue()[0].last_error
        assert m.deliver_due(T0 + 1).sent == (b,)                  # a waits for its backoff
        assert m.deliver_due(T0 + BACKOFF_BASE).sent == (a,)
        ids = [g[1]["Message-ID"] for g in s.sink.got]
        assert len(ids) == 3 and ids[0] == ids[2] != ids[1]
    finally:
        s.stop()
