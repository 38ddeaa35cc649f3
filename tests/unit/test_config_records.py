"""Per-unit quota and login lines in the config ([quota.units.X].raw,
[login.units.X].raw, as `acctctl import netams` carries NeTAMS's `set`
lines) are applied at start and when a reload changes them; a login
record's def-state (NeTAMS def_state) decides whether it starts open."""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest

from acctd.config import load
from acctd.services.login import LoginService
from acctd.services.quota import QuotaService
from acctd.store.database import Storage

from .daemon_stub import ALICE, daemon_stub

NOW = dt.datetime(2026, 11, 21, 12, 5, tzinfo=dt.timezone.utc)
BOB = '\n[[unit]]\ntype = "user"\nname = "bob"\nacct-policy = ["ip"]\n'


def write(tmp_path, extra: str) -> str:
    p = tmp_path / "acctd.toml"
    p.write_text(ALICE + BOB + f'[storage]\npath = "{tmp_path / "acctd.duckdb"}"\n' + extra)
    return str(p)


@contextlib.contextmanager
def _stub(path):
    """A daemon of the config file at `path` (so reload re-reads it) on its database."""
    cfg = load(path)
    storage = Storage(cfg.storage.path, cfg.processor.zone)
    try:
        with daemon_stub(cfg, storage=storage, clock=lambda: NOW) as d:
            yield d
    finally:
        storage.close()


def quota_lines(d, unit: str) -> list[str]:
    return d.call("quota-show", unit=unit)["text"].splitlines()


def test_config_quota_lines_are_applied_at_start_and_on_a_changed_reload(tmp_path):
    path = write(tmp_path, '[quota]\n[quota.units.alice]\nraw = ["day 3M in", '
                           '"block-policy ip soft-treshold 50"]\n')
    with _stub(path) as d:
        oid = d.snapshot.unit("alice").oid
        assert quota_lines(d, "alice") == [
            "QUOTA: alice policy ip set block-policy ip soft-treshold 50",
            f"UNIT {oid} (alice) SYST: ACCT is present",
            "DAY in: 0 B, quota 3.00 MiB, ratio 0.00% -> [+]"]
        d.call("quota-set", argv=["alice", "day", "5M", "in"])  # by hand, at run time
        d.reload()                                            # same lines: kept
        assert quota_lines(d, "alice")[2] == "DAY in: 0 B, quota 5.00 MiB, ratio 0.00% -> [+]"
        with open(path, "a") as f:
            f.write('[quota.units.bob]\nraw = ["month 1G sum"]\n')
        d.reload()
        assert quota_lines(d, "bob")[2] == "MONTH sum: 0 B, quota 1.00 GiB, ratio 0.00% -> [+]"
        assert quota_lines(d, "alice")[2] == "DAY in: 0 B, quota 3.00 MiB, ratio 0.00% -> [+]"


def test_a_config_quota_line_for_an_unknown_unit_is_logged_not_fatal(tmp_path, caplog):
    path = write(tmp_path, '[quota]\n[quota.units.carol]\nraw = ["day 3M in"]\n')
    with _stub(path) as d:
        assert d.service(QuotaService).core.storage.quotas() == {}
    assert "[quota.units.carol]: unknown unit 'carol'; that line is not applied" in caplog.text


def test_config_login_lines_make_a_record_that_blocks_until_login(tmp_path):
    path = write(tmp_path, '[login]\n[login.units.alice]\nraw = ["password s3cret inact 600"]\n')
    with _stub(path) as d:
        svc = d.service(LoginService)
        oid = d.snapshot.unit("alice").oid
        assert list(svc.blocks()) == [oid]
        assert svc.table.get(oid).inact == 600
        assert d.call("login", unit="alice", password="s3cret")["ok"]
        assert svc.blocks() == {}


def test_def_state_open_starts_the_unit_open(tmp_path):
    path = write(tmp_path, '[login]\n[login.units.alice]\nraw = ["password s3cret def-state open"]\n'
                           '[login.units.bob]\nraw = ["password s3cret"]\n')
    with _stub(path) as d:
        svc = d.service(LoginService)
        assert list(svc.blocks()) == [d.snapshot.unit("bob").oid]
        assert svc.table.get(d.snapshot.unit("alice").oid).opened_at == NOW


def test_def_state_closed_closes_a_login_at_restart_keep_keeps_it(tmp_path):
    path = write(tmp_path, '[login]\n[login.units.alice]\nraw = ["password s3cret def-state closed"]\n'
                           '[login.units.bob]\nraw = ["password s3cret"]\n')
    with _stub(path) as d:
        for u in ("alice", "bob"):
            assert d.call("login", unit=u, password="s3cret")["ok"]
        assert d.service(LoginService).blocks() == {}
    with _stub(path) as d:  # a restart
        assert list(d.service(LoginService).blocks()) == [d.snapshot.unit("alice").oid]


def test_service_def_state_applies_to_records_without_their_own(tmp_path):
    path = write(tmp_path, '[login]\ndef-state = "open"\n[login.units.alice]\n'
                           'raw = ["password s3cret"]\n')
    with _stub(path) as d:
        assert d.service(LoginService).blocks() == {}


def test_config_schedules_are_added_at_start_and_follow_a_reload(tmp_path):
    """[scheduler] schedule lines (NeTAMS `schedule ...`, as the importer
    writes them) are entries owned by the config: kept across a restart with
    their due time, replaced when changed, deleted when the config drops them."""
    path = write(tmp_path, '[scheduler]\nschedule = ["oid 08A001 time daily action flush", '
                           '"oid 08A002 time 10min action status"]\n')

    def rows(d):
        return {r["oid"]: (r["interval"], r["action"], r["user"], r["due"])
                for r in d.call("schedule-list")}
    with _stub(path) as d:
        first = rows(d)
        assert {o: r[:3] for o, r in first.items()} == {
            "08A001": ("daily", "flush", "config"), "08A002": ("10min", "status", "config")}
        mine = d.call("schedule-add", spec="time hourly action units")["oid"]  # root's own
    with _stub(path) as d:  # a restart: unchanged entries keep their due times
        assert {o: r for o, r in rows(d).items() if o != mine} == first
        write(tmp_path, '[scheduler]\nschedule = ["oid 08A001 time weekly action flush"]\n')
        d.reload()
        assert {o: r[:3] for o, r in rows(d).items()} == {
            "08A001": ("weekly", "flush", "config"), mine: ("hourly", "units", "root")}


def test_config_login_lines_are_applied_again_only_when_they_change(tmp_path):
    """Hashing a password is slow, so a restart does not redo unchanged lines:
    a password `login set` gave since stays, until the config's line changes."""
    path = write(tmp_path, '[login]\n[login.units.alice]\nraw = ["password s3cret"]\n')
    with _stub(path) as d:
        d.call("login-set", unit="alice", words=["password", "changed"])
    with _stub(path) as d:
        assert d.call("login", unit="alice", password="changed")["ok"]
    write(tmp_path, '[login]\n[login.units.alice]\nraw = ["password other inact 600"]\n')
    with _stub(path) as d:
        assert not d.call("login", unit="alice", password="changed")["ok"]
        assert d.call("login", unit="alice", password="other")["ok"]
        assert d.service(LoginService).table.get(d.snapshot.unit("alice").oid).inact == 600


def test_a_quota_block_policy_that_is_no_policy_is_refused_at_load(tmp_path):
    from acctd.errors import ConfigError
    path = write(tmp_path, '[quota]\nblock-policy = "transit"\n')
    with pytest.raises(ConfigError, match=r"\[quota\] key 'block-policy': no policy 'transit'"):
        load(path)
