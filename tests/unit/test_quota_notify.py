"""Quota notices go where the quota's `notify` says (NeTAMS `notify
{soft|hard|return} {none}|[{owner}] [USER ...]`): the owner's e-mail, the
named [[user]]s' e-mail, nobody for {none}; the alerter's admins are copied."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from acctd.config import loads
from acctd.services.alerter import AlerterService
from acctd.services.quota import QuotaService, QuotaSpec, check

from tests.ports import free_port

from .daemon_stub import ALICE, daemon_stub

NOW = dt.datetime(2026, 11, 21, 12, 5, tzinfo=dt.timezone.utc)
MB = 1024 * 1024


def config(tmp_path, admins: str = "[]") -> str:
    return ALICE.replace('acct-policy = ["ip"]', 'acct-policy = ["ip"]\nemail = "alice@isp.example"') + f"""
[storage]
path = "{tmp_path / 'acctd.duckdb'}"
[alerter]
smtp-server = "127.0.0.1"
smtp-port = {free_port()}
admins = {admins}
[quota]
[[user]]
name = "admin"
level = "admin"
uid = 1000
email = "root@isp.example"
[[user]]
name = "ops"
level = "viewer"
uid = 1001
email = "ops@isp.example"
"""


def mailed(tmp_path, words: list[str], used: int, admins: str = "[]") -> list[tuple[str, ...]]:
    """`quota set alice WORDS`, then a day's usage of `used` bytes in: the
    recipients of each notice queued, in order."""
    cfg = loads(config(tmp_path, admins))
    with daemon_stub(cfg, tmp_path=tmp_path) as d:
        d.call("quota-set", argv=["alice", *words])
        svc = d.service(QuotaService)
        oid = d.snapshot.unit("alice").oid
        specs = {o: QuotaSpec.from_dict(v) for o, v in d.storage.quotas().items()}
        res = check(specs, svc.settings, {oid: {"day": (used, 0)}}, None, NOW, ZoneInfo("UTC"))
        for e in res.events:
            svc._mail(e)
        return [r.to for r in d.service(AlerterService).mailer.queue()]


def test_default_notify_goes_to_the_owner(tmp_path):
    assert mailed(tmp_path, ["day", "10M", "in"], 9 * MB) == [("alice@isp.example",)]


def test_notify_names_users_and_owner(tmp_path):
    words = ["notify", "hard", "{owner}", "admin", "ops", "day", "10M", "in"]
    assert mailed(tmp_path, words, 11 * MB) == [
        ("alice@isp.example", "root@isp.example", "ops@isp.example")]


def test_notify_user_only_leaves_the_owner_out(tmp_path):
    assert mailed(tmp_path, ["notify", "soft", "admin", "day", "10M", "in"], 9 * MB) == [
        ("root@isp.example",)]


def test_notify_none_sends_nothing_not_even_to_the_admins(tmp_path):
    words = ["notify", "hard", "{none}", "day", "10M", "in"]
    assert mailed(tmp_path, words, 11 * MB, admins='["noc@isp.example"]') == []
    # ... while another event still goes to the owner, with the admins copied
    assert mailed(tmp_path, words, 9 * MB, admins='["noc@isp.example"]') == [
        ("alice@isp.example", "noc@isp.example")]



def test_the_notice_links_the_units_traffic_page_of_html_url(tmp_path):
    """[html] url (NeTAMS `html url`): the quota notice, as a real SMTP
    server receives it, links the unit's page of the static reports."""
    pytest.importorskip("aiosmtpd")
    from .test_alerter import Server
    smtp = Server()
    smtp.start()
    try:
        text = config(tmp_path).replace("smtp-port = ", f"smtp-port = {smtp.port}\n#") + \
            '[html]\nurl = "https://stats.isp.example/traffic"\n'
        with daemon_stub(loads(text), tmp_path=tmp_path) as d:
            d.call("quota-set", argv=["alice", "day", "10M", "in"])
            svc = d.service(QuotaService)
            oid = d.snapshot.unit("alice").oid
            specs = {o: QuotaSpec.from_dict(v) for o, v in d.storage.quotas().items()}
            for e in check(specs, svc.settings, {oid: {"day": (11 * MB, 0)}}, None, NOW,
                           ZoneInfo("UTC")).events:
                svc._mail(e)
            assert d.service(AlerterService).mailer.deliver_due().sent
        (rcpts, msg, _), = smtp.sink.got
        assert rcpts == ("alice@isp.example",)
        assert msg.get_content().replace("\r\n", "\n").endswith(
            "Period: day, incoming\n\n"
            "Your traffic: https://stats.isp.example/traffic/units/alice/index.html\n")
    finally:
        smtp.stop()
