"""acctctl radius import and fticks import/report end to end: the CLI, a
real control server and the daemon's real import methods over real storage
(no kernel)."""

import datetime as dt

import pytest
from click.testing import CliRunner

from acctctl.main import main
from acctd.config import loads
from acctd.control import server as ctl
from acctd.store.database import Storage

from .daemon_stub import daemon_stub
from .test_radius_import import DAY1, DAY2

CONFIG = """
[[unit]]
type = "user"
name = "alice"
[[unit]]
type = "user"
name = "bob"
"""


@pytest.fixture
def srv(tmp_path):
    cfg = loads(CONFIG, str(tmp_path / "acctd.toml"))
    st = Storage(str(tmp_path / "acctd.duckdb"), dt.timezone.utc)
    with daemon_stub(cfg, st) as d:
        s = ctl.ControlServer(str(tmp_path / "ctl.sock"), d.dispatcher)
        s.serve_in_thread()
        s.daemon = d
        yield s
        s.shutdown()
        s.server_close()
    st.close()


def test_radius_import_in_chunks_and_again_adds_nothing(srv, tmp_path):
    (tmp_path / "d1").write_text(DAY1)
    (tmp_path / "d2").write_text(DAY2)
    args = ["--socket", srv.path, "radius", "import", "--detail", str(tmp_path / "d1"),
            "--detail", str(tmp_path / "d2"), "--chunk", "1", "--json"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    import json
    got = json.loads(first.stdout)   # the progress bar is on stderr
    stored = srv.daemon.storage.sessions()
    assert got["imported"] == len(stored) > 0 and got["malformed_records"] == 3
    assert {s.source for s in stored} == {"radius"}
    again = json.loads(CliRunner().invoke(main, args).stdout)
    assert again.get("imported", 0) == 0 and again["duplicates"] == got["imported"]
    assert len(srv.daemon.storage.sessions()) == len(stored)


def test_fticks_import_and_report(srv, tmp_path):
    log = tmp_path / "syslog"
    log.write_text(
        "Mar  2 10:00:00 rp radsecproxy[1]: F-TICKS/eduroam/1.0#REALM=a.example#"
        "VISCOUNTRY=UY#VISINST=X#CSI=abc#RESULT=OK#\n"
        "Mar  2 11:00:00 rp radsecproxy[1]: F-TICKS/eduroam/1.0#REALM=a.example#"
        "VISCOUNTRY=UY#VISINST=X#CSI=abd#RESULT=FAIL#\n"
        "Mar  2 12:00:00 rp radsecproxy[1]: F-TICKS/eduroam/1.0#REALM=broken\n")
    res = CliRunner().invoke(main, ["--socket", srv.path, "fticks", "import", str(log)])
    assert res.exit_code == 0, res.output
    rep = CliRunner().invoke(main, ["--socket", srv.path, "fticks", "report", "--json"])
    import json
    rows = json.loads(rep.output)["rows"]
    assert sorted((r["result"], r["logins"]) for r in rows) == [("FAIL", 1), ("OK", 1)]
    assert "unterminated" in res.output or "malformed" in res.output
    # the broken line is counted with its reason, and the rest still loaded
    again = CliRunner().invoke(main, ["--socket", srv.path, "fticks", "import", str(log), "--json"])
    stats = json.loads(again.output)
    assert stats["malformed"] == {"unterminated": 1} and stats["duplicates"] == 2
