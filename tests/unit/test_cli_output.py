"""acctctl's output, exactly: every read command against the real control
server, the stub daemon (real services, real storage with known counts, a
fixed clock; no kernel) or an offline database, and the whole printed text
compared. Human text by default, JSON with --json; bytes in one unit system
(acctd.common.display); names escaped and never taken as rich markup;
tables never cut off a terminal (CliRunner is not one)."""

import contextlib
import datetime as dt
import json
import threading

import numpy as np
import pytest
from click.testing import CliRunner

from acctctl.main import main
from acctd.config import loads
from acctd.control import server as ctl
from acctd.store import rollup
from acctd.store.database import Storage

from .daemon_stub import daemon_stub

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 4, 10, 30, tzinfo=UTC)   # a Wednesday
BIG = 2_082_097_909                                  # the number, cut to 20820979…

CONFIG = """
[[policy]]
name = "ip"
target = "proto ip"

[[policy]]
name = "web"
target = "proto tcp port 80"

[[unit]]
type = "group"
name = "customers"

[[unit]]
type = "host"
name = "alice"
ip = "10.0.0.1"
parents = ["customers"]
acct-policy = ["ip", "web"]

[[unit]]
type = "user"
name = "[red]bob"
acct-policy = ["ip"]
"""


def commit(st, cfg, ts, rows):
    """One drain at `ts`: rows of (unit, policy or None for all traffic, bytes in, bytes out),
    one packet per 1000 bytes (at least one)."""
    def oid(objs, name):
        return int(next(o.oid for o in objs if o.name == name), 16)
    cols = {k: [] for k in ("unit_oid", "policy_oid", "dir", "packets", "bytes")}
    for unit, policy, *both in rows:
        for d, b in enumerate(both):
            cols["unit_oid"].append(oid(cfg.units, unit))
            cols["policy_oid"].append(rollup.ALL_TRAFFIC if policy is None
                                      else oid(cfg.policies, policy))
            cols["dir"].append(d)
            cols["packets"].append(max(1, b // 1000))
            cols["bytes"].append(b)
    types_ = {"unit_oid": np.uint32, "policy_oid": np.uint32, "dir": np.uint8,
              "packets": np.uint64, "bytes": np.uint64}
    st.commit(rollup.rollup({k: np.array(v, types_[k]) for k, v in cols.items()}, ts, UTC), {})


def known_counts(st, cfg):
    commit(st, cfg, dt.datetime(2026, 3, 2, 9, 0, 10, tzinfo=UTC),      # Monday
           [("alice", "ip", 5_000, 700), ("alice", None, 5_000, 700)])
    commit(st, cfg, dt.datetime(2026, 3, 4, 10, 0, 10, tzinfo=UTC),     # this hour
           [("alice", "ip", BIG, 20_000_000), ("alice", "web", 1_536, 512),
            ("alice", None, BIG, 20_000_000)])


@contextlib.contextmanager
def serving(tmp_path):
    (tmp_path / "acctd.toml").write_text(CONFIG)
    cfg = loads(CONFIG, str(tmp_path / "acctd.toml"))
    st = Storage(str(tmp_path / "acctd.duckdb"), UTC)
    known_counts(st, cfg)
    with daemon_stub(cfg, st, clock=lambda: NOW) as d:
        d.drain_locked = lambda: {}   # no kernel: a binding change has nothing to drain
        s = ctl.ControlServer(str(tmp_path / "ctl.sock"), d.dispatcher)
        # polled often: shutdown() waits for the next poll, 0.5 s by default
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.01},
                         daemon=True).start()
        s.daemon = d
        yield s
        s.shutdown()
        s.server_close()
    st.close()


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """One daemon for the commands that change nothing."""
    with serving(tmp_path_factory.mktemp("acctd")) as s:
        yield s


@pytest.fixture
def fresh(tmp_path):
    """A daemon of its own, for a test that changes something."""
    with serving(tmp_path) as s:
        yield s


def acctctl(srv, *args, code=0):
    res = CliRunner().invoke(main, ["--socket", srv.path, *args], env={"COLUMNS": "60"})
    assert res.exit_code == code, res.output
    return res.output


# --- the model ------------------------------------------------------------------------

def test_units_prints_names_as_text_not_markup(srv):
    assert acctctl(srv, "units") == """\
                               units                                
┏━━━━━━━━━━━┳━━━━━━━━┳━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━━━━┓
┃ name      ┃ oid    ┃ type  ┃ addresses ┃ parents   ┃ acct-policy ┃
┡━━━━━━━━━━━╇━━━━━━━━╇━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━━━━┩
│ customers │ 057354 │ group │           │           │             │
│ alice     │ 020435 │ host  │ 10.0.0.1  │ customers │ ip web      │
│ [red]bob  │ 02E607 │ user  │           │           │ ip          │
└───────────┴────────┴───────┴───────────┴───────────┴─────────────┘
"""


POLICIES = """\
              policies               
┏━━━━━━┳━━━━━━━━┳━━━━━━━━━━━━━━━━━━━┓
┃ name ┃ oid    ┃ target            ┃
┡━━━━━━╇━━━━━━━━╇━━━━━━━━━━━━━━━━━━━┩
│ ip   │ 14242D │ proto ip          │
│ web  │ 14008A │ proto tcp port 80 │
└──────┴────────┴───────────────────┘
"""


def test_policies(srv):
    assert acctctl(srv, "policies") == POLICIES


def test_policies_offline(tmp_path):
    (tmp_path / "acctd.toml").write_text(CONFIG)
    res = CliRunner().invoke(main, ["--db", str(tmp_path / "none.duckdb"), "--config",
                                    str(tmp_path / "acctd.toml"), "policies"])
    assert (res.exit_code, res.output) == (0, POLICIES)


# --- the counts: never cut, one unit system -------------------------------------------

LIST = """\
                         alice (020435), bytes                         
┏━━━━━━━━┳━━━━━┳━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━┓
┃ policy ┃ dir ┃     flow ┃     hour ┃      day ┃     week ┃    month ┃
┡━━━━━━━━╇━━━━━╇━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━┩
│ (all)  │ in  │ 1.94 GiB │ 1.94 GiB │ 1.94 GiB │ 1.94 GiB │ 1.94 GiB │
│ (all)  │ out │ 19.1 MiB │ 19.1 MiB │ 19.1 MiB │ 19.1 MiB │ 19.1 MiB │
│ web    │ in  │ 1.50 KiB │ 1.50 KiB │ 1.50 KiB │ 1.50 KiB │ 1.50 KiB │
│ web    │ out │    512 B │    512 B │    512 B │    512 B │    512 B │
│ ip     │ in  │ 1.94 GiB │ 1.94 GiB │ 1.94 GiB │ 1.94 GiB │ 1.94 GiB │
│ ip     │ out │ 19.1 MiB │ 19.1 MiB │ 19.1 MiB │ 19.1 MiB │ 19.1 MiB │
└────────┴─────┴──────────┴──────────┴──────────┴──────────┴──────────┘
 acct-policy walk, flows  
┏━━━━━━━━┳━━━━━━━┳━━━━━━━┓
┃ policy ┃ check ┃ match ┃
┡━━━━━━━━╇━━━━━━━╇━━━━━━━┩
│ ip     │     0 │     0 │
│ web    │     0 │     0 │
└────────┴───────┴───────┘
"""


def test_list_off_a_terminal_is_never_cut(srv):
    """COLUMNS=60 and a 71-column table: off a terminal nothing is cut or folded."""
    assert acctctl(srv, "list", "alice") == LIST
    got = json.loads(acctctl(srv, "list", "alice", "--json"))
    assert got["policies"][0]["hour"] == {"packets": BIG // 1000, "bytes": BIG}   # exact


def test_stat(srv):
    assert acctctl(srv, "stat", "alice") == """\
                      alice (020435), week                       
┏━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━┳━━━━━┳━━━━━━━━━┳━━━━━━━━━━┓
┃ hour                      ┃ policy ┃ dir ┃ packets ┃    bytes ┃
┡━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━╇━━━━━╇━━━━━━━━━╇━━━━━━━━━━┩
│ 2026-03-02T09:00:00+00:00 │ (all)  │ in  │       5 │ 4.88 KiB │
│ 2026-03-02T09:00:00+00:00 │ (all)  │ out │       1 │    700 B │
│ 2026-03-02T09:00:00+00:00 │ ip     │ in  │       5 │ 4.88 KiB │
│ 2026-03-02T09:00:00+00:00 │ ip     │ out │       1 │    700 B │
│ 2026-03-04T10:00:00+00:00 │ (all)  │ in  │ 2082097 │ 1.94 GiB │
│ 2026-03-04T10:00:00+00:00 │ (all)  │ out │   20000 │ 19.1 MiB │
│ 2026-03-04T10:00:00+00:00 │ web    │ in  │       1 │ 1.50 KiB │
│ 2026-03-04T10:00:00+00:00 │ web    │ out │       1 │    512 B │
│ 2026-03-04T10:00:00+00:00 │ ip     │ in  │ 2082097 │ 1.94 GiB │
│ 2026-03-04T10:00:00+00:00 │ ip     │ out │   20000 │ 19.1 MiB │
└───────────────────────────┴────────┴─────┴─────────┴──────────┘
"""


def test_quota_set_and_show(fresh):
    assert acctctl(fresh, "quota", "set", "alice", "day", "3G", "in", "month", "100M", "sum") == \
        "quota of alice (020435): set alice active day 3G in month 100M sum\n"
    assert acctctl(fresh, "quota", "show", "alice") == """\
QUOTA: alice policy ip set sys-deny-quota
UNIT 020435 (alice) SYST: ACCT is present
DAY in: 1.94 GiB, quota 3.00 GiB, ratio 64.64% -> [+]
MONTH sum: 1.96 GiB, quota 100 MiB, ratio 2004.72% -> [-]
"""
    assert json.loads(acctctl(fresh, "quota", "set", "alice", "hour", "1K", "out", "--json")) == \
        {"unit": "alice", "oid": "020435",
         "set": "set alice active hour 1K out day 3G in month 100M sum"}


def test_flush_is_text_and_json(srv, monkeypatch):
    assert acctctl(srv, "flush") == "drain 1 committed\n"   # the stub's loop answers {"drain": 1}
    assert json.loads(acctctl(srv, "flush", "--json")) == {"drain": 1}
    summary = {"drain": 7, "ts": "2026-03-04T10:30:00.123456+00:00", "rows": 12, "flows": 3,
               "addrs": 2}   # what the real loop answers (Daemon.drain)
    monkeypatch.setattr(srv.daemon.commands, "flush", lambda: summary)
    assert acctctl(srv, "flush") == \
        "drain 7 committed at 2026-03-04 10:30:00 UTC: 12 rows, 3 flows, 2 addresses\n"


# --- run-time units, names ------------------------------------------------------------

def test_unit_add_and_del_are_text(fresh):
    assert acctctl(fresh, "unit", "add", "host", "carol", "ip", "10.0.0.3") == \
        "unit carol added: host 02E3CF, ip 10.0.0.3\n"
    assert acctctl(fresh, "unit", "del", "carol") == "unit carol (02E3CF) deleted\n"
    got = json.loads(acctctl(fresh, "unit", "add", "user", "dave", "--json"))
    assert got == {"unit": "dave", "oid": got["oid"], "type": "user", "ip": None}


def test_unit_add_refuses_control_characters(fresh):
    out = acctctl(fresh, "unit", "add", "host", "x\x1b[2J", "ip", "10.0.0.4", code=1)
    assert out == ("acctctl: unit name must be non-empty, without spaces or control characters, "
                   "got 'x\\x1b[2J'\n")
    assert "x\x1b" not in acctctl(fresh, "units", "--json")


def test_config_refuses_control_characters_at_the_line(tmp_path):
    from acctd.config import ConfigError
    bad = CONFIG.replace('name = "alice"', 'name = "al\\u001b[2Jice"')
    with pytest.raises(ConfigError) as e:
        loads(bad, str(tmp_path / "acctd.toml"))
    line = bad.splitlines().index('name = "al\\u001b[2Jice"') + 1
    assert str(e.value) == (f"{tmp_path / 'acctd.toml'}:{line}: [[unit]] #2 'al\\x1b[2Jice' key "
                            "'name': unit name must be non-empty, without spaces or control "
                            "characters, got 'al\\x1b[2Jice'")


def test_config_refuses_control_characters_in_policy_names(tmp_path):
    from acctd.config import ConfigError
    bad = CONFIG.replace('name = "web"', 'name = "w\u202eeb"')   # a bidi override
    with pytest.raises(ConfigError, match=r":7: \[\[policy\]\] #2 .* key 'name': policy name "
                                          r"must be non-empty, without spaces or control"):
        loads(bad, str(tmp_path / "acctd.toml"))


def test_sys_policy_is_text(fresh):
    assert acctctl(fresh, "unit", "alice", "sys-deny") == \
        "alice: sys-deny\n"


# --- the daemon -----------------------------------------------------------------------

# A status reply of the real shape (acctd/daemon/commands.py), commits failing.
STATUS = {
    "config": "/etc/acctd/acctd.toml", "drains": 12,
    "last_drain": "2026-03-04T10:29:30+00:00", "failed_drains": 2,
    "last_error": {"at": "2026-03-04T10:30:00+00:00",
                   "error": "IO Error: Could not write file \"acctd.duckdb.wal\": "
                            "No space left on device"},
    "load": (0.5, 0.25, 0.125), "disk_free_bytes": {"/var/lib/acctd": 20_000_000},
    "datapath": {"prog_ids": {"xdp": 41, "tc_ingress": 42, "tc_egress": 43},
                 "fill": {"acct_addrs": {"entries": 3, "max": 16384, "percent": 0.0},
                          "acct_flows": {"entries": 9, "max": 81920, "percent": 0.0}},
                 "health": {"non_ip": 4, "truncated": 0, "malformed": 1},
                 "unattributed_bytes": 3_000, "dropped_bytes": 1_536,
                 "dropped": {"block": {"packets": 2, "bytes": 1_536},
                             "fw": {"packets": 0, "bytes": 0}},
                 "flow_evictions": 0},
    "services": {"sessions_open": 1, "flowlog": {"path": "/var/log/flows", "fields": ["a", "b"],
                                                 "last_error": None}},
}


def test_status_says_commits_fail_with_human_units(srv, monkeypatch):
    monkeypatch.setattr(srv.daemon.commands, "status", lambda: STATUS)
    assert acctctl(srv, "status") == """\
config      /etc/acctd/acctd.toml
drains      12 since start, last committed 2026-03-04 10:29:30 UTC
FAILING     the last 2 drain(s) did not commit; the kernel keeps counting and the next drain retries
last error  2026-03-04 10:30:00 UTC: IO Error: Could not write file "acctd.duckdb.wal": No space left on device
load        0.50 0.25 0.12
disk free   19.1 MiB in /var/lib/acctd
programs    xdp 41, tc_ingress 42, tc_egress 43
sessions_open 1
flowlog     path /var/log/flows, fields a b, last_error -
"""
    assert json.loads(acctctl(srv, "status", "--json"))["last_error"] == STATUS["last_error"]


def test_status_shows_each_exporter(srv, monkeypatch):
    collector = {"sources": [
        {"id": 1, "type": "netflow", "listen": "0.0.0.0:2055", "refused": 3,
         "last_refused": "203.0.113.5", "unmatched": 12, "dropped": 0,
         "exporters": {"192.0.2.1": {"packets": 10, "records": 290, "malformed": 2,
                                     "unknown_template": 1, "refused_templates": 0,
                                     "unmatched": 0, "last_error": "v5: 40 bytes for 1 records",
                                     "templates": 0}}},
        {"id": 2, "type": "raw"}]}
    monkeypatch.setattr(srv.daemon.commands, "status",
                        lambda: {**STATUS, "failed_drains": 0, "last_error": None,
                                 "services": {"collector": collector}})
    out = acctctl(srv, "status").split("programs    xdp 41, tc_ingress 42, tc_egress 43\n")[1]
    assert out == """\
collector   1: netflow on 0.0.0.0:2055, 12 records of no unit of this source, 3 packets from \
other addresses (last 203.0.113.5)
  exporter  192.0.2.1: 10 packets, 290 records, 2 malformed, 0 templates, 1 sets before their \
template; last error: v5: 40 bytes for 1 records
collector   2: raw (acctctl rawdata)
"""


def test_rawdata_says_what_it_committed_and_refuses_without_a_raw_source(srv, monkeypatch):
    # this daemon has no [[collector]] of type raw: the service's own refusal, exit 1
    assert acctctl(srv, "rawdata", "alice", "in", "5", code=1) == \
        'acctctl: rawdata needs a [[collector]] with type = "raw"\n'
    col = srv.daemon.services["collector"]
    monkeypatch.setattr(col, "rawdata", lambda unit, argv: {"unit": unit, "policy": argv[0],
                                                           "in": 5, "out": 7})
    assert acctctl(srv, "rawdata", "alice", "web", "in", "5", "out", "7") == \
        "rawdata alice web: 5 bytes in, 7 bytes out, committed\n"


def test_health(srv, monkeypatch):
    monkeypatch.setattr(srv.daemon.commands, "status", lambda: STATUS)
    assert acctctl(srv, "health") == """\
acct_addrs   3/16384 (0.0%)
acct_flows   9/81920 (0.0%)
unattributed 2.93 KiB   dropped 1.50 KiB   flow evictions 0
dropped      block 2 pkts 1.50 KiB
health       non_ip=4 malformed=1
"""


def test_reload_debug_rotate_are_text(srv):
    assert acctctl(srv, "reload") == f"reloaded {srv.daemon.config.path}: no change\n"
    assert acctctl(srv, "debug", "on", "storage") == "debug on for storage\n"
    assert acctctl(srv, "debug", "off") == "debug off for all\n"
    assert acctctl(srv, "rotate", "log") == "logging to stderr: the journal rotates it\n"
    assert json.loads(acctctl(srv, "reload", "--json")) == \
        {"reloaded": srv.daemon.config.path, "changed": [], "units": 3, "policies": 2, "users": 0}


def test_schedule_add_list_del(fresh):
    out = acctctl(fresh, "schedule", "add", "time", "daily", "action", "flush")
    oid = out.split()[2]
    assert out == f"schedule entry {oid} added, first run 2026-03-05 00:00:00 UTC\n"
    assert acctctl(fresh, "schedule", "list") == \
        f"OID | INTERVAL | LEFT | ACTION\n{oid} | daily | 48600 | flush\n"
    assert acctctl(fresh, "schedule", "del", oid) == f"schedule entry {oid} deleted\n"
    assert json.loads(acctctl(fresh, "schedule", "list", "--json")) == []


def test_users_and_an_empty_table(srv):
    assert acctctl(srv, "users") == """\
                     users                     
┏━━━━━━┳━━━━━━━┳━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━━━┓
┃ name ┃ level ┃ uid ┃ unix-user ┃ unix-group ┃
┡━━━━━━╇━━━━━━━╇━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━━━┩
└──────┴───────┴─────┴───────────┴────────────┘
"""


# --- subscribers (their commands' own layout is another item's; the printing is this one's) --

def test_session_list(fresh):
    acctctl(fresh, "session", "start", "[red]bob", "--ip", "10.0.0.9")
    assert acctctl(fresh, "session", "list") == """\
                                                                            sessions                                                                             
┏━━━━┳━━━━━━━━━━┳━━━━━━━━━━┳━━━━━┳━━━━━┳━━━━━━┳━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━┓
┃ id ┃ user     ┃ addr     ┃ mac ┃ nas ┃ port ┃ source  ┃ start (UTC)         ┃ stop (UTC) ┃ duration ┃ cause ┃ packets in ┃ packets out ┃ bytes in ┃ bytes out ┃
┡━━━━╇━━━━━━━━━━╇━━━━━━━━━━╇━━━━━╇━━━━━╇━━━━━━╇━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━┩
│  1 │ [red]bob │ 10.0.0.9 │ -   │ -   │ -    │ command │ 2026-03-04 10:30:00 │ -          │ -        │ -     │          0 │           0 │        0 │         0 │
└────┴──────────┴──────────┴─────┴─────┴──────┴─────────┴─────────────────────┴────────────┴──────────┴───────┴────────────┴─────────────┴──────────┴───────────┘
"""


def test_login_show(fresh):
    acctctl(fresh, "login", "set", "alice", "password", "s3cretpw", "inact", "600")
    assert acctctl(fresh, "login", "show", "alice") == \
        "alice (020435) closed, never opened\n"


def test_fticks_report(fresh, tmp_path):
    log = tmp_path / "syslog"
    log.write_text("Mar  2 10:00:00 rp radsecproxy[1]: F-TICKS/eduroam/1.0#REALM=a.example#"
                   "VISCOUNTRY=UY#VISINST=X#CSI=abc#RESULT=OK#\n")
    assert acctctl(fresh, "fticks", "report") == (
        "no F-TICKS lines yet (acctd records its own with [fticks]; "
        "`acctctl fticks import` adds other servers')\n")
    acctctl(fresh, "fticks", "import", str(log))
    assert acctctl(fresh, "fticks", "report") == """\
DAY         REALM      VISCOUNTRY  RESULT  LOGINS
2026-03-02  a.example  UY          OK           1
total                                           1
"""


# --- the printers themselves ----------------------------------------------------------

def test_every_control_character_is_escaped_and_markup_is_text():
    from acctctl.common import escape
    assert escape("a\x1b[2Jb\rc\x08d\x9be\u202ef\u2028g\th") == \
        "a\\x1b[2Jb\\rc\\x08d\\x9be\\u202ef\\u2028g\\th"
    assert escape("[red]x ünïcode 名前") == "[red]x ünïcode 名前"


def test_a_table_escapes_cells_and_title(capsys):
    from acctctl.common import table
    table("t\x1b]0;owned\x07", ["name"], [["\x1b[2J[bold]x"]])
    got = capsys.readouterr().out
    assert "\x1b" not in got and "\x07" not in got
    assert "\\x1b[2J[bold]x" in got and "t\\x1b]0;owned\\x07" in got


def test_on_a_narrow_terminal_text_folds_and_figures_stay_whole():
    from rich.console import Console

    from acctctl.common import nbytes, table
    con = Console(width=40, force_terminal=True, color_system=None, record=True)
    table("t", ["a-rather-long-policy-name", "bytes", "packets"],
          [["x" * 30, nbytes(BIG), BIG]], console=con)
    text = con.export_text()
    assert "…" not in text
    assert "1.94 GiB" in text and str(BIG) in text and "x" * 10 in text
    assert max(len(ln) for ln in text.splitlines()) <= 40


def test_bytes_in_one_unit_system():
    from acctd.common.display import format_bytes
    assert [format_bytes(n) for n in (None, 0, 1023, 1024, 1536, 1023 * 1024, 20_000_000, BIG,
                                      2 ** 40)] == \
        ["-", "0 B", "1023 B", "1.00 KiB", "1.50 KiB", "1.00 MiB", "19.1 MiB", "1.94 GiB",
         "1.00 TiB"]


def test_an_error_reply_is_escaped_too(srv, monkeypatch):
    from acctd.errors import NotFound

    def refuse(**_):
        raise NotFound("unknown unit \x1b[2Jx")
    monkeypatch.setattr(srv.daemon.commands, "units", refuse)
    assert acctctl(srv, "units", code=1) == "acctctl: unknown unit \\x1b[2Jx\n"


# --- the rest, from replies of the real shape (their sources need a kernel, a mail
# --- server, an OpenVPN or a neighbour table; the printing is what is tested here)

def test_blocked(srv, monkeypatch):
    monkeypatch.setattr(srv.daemon.commands, "blocked", lambda: {
        "10.0.0.1/128": ["sys-deny", "sys-deny-quota"], "2001:db8::/64": ["sys-deny-money"]})
    assert acctctl(srv, "blocked") == (
        "10.0.0.1/128                             sys-deny sys-deny-quota\n"
        "2001:db8::/64                            sys-deny-money\n")


def test_alerter(srv, monkeypatch):
    monkeypatch.setattr(srv.daemon.services["alerter"], "queue", lambda: [
        {"id": "m1", "to": ["a@example.net", "noc@example.net"], "subject": "[acctd] alice",
         "attempts": 2, "next_try": 1772620200.0, "last_error": "421 try later",
         "state": "queued"}])
    assert acctctl(srv, "alerter") == """\
                                                   alerter outbox                                                    
┏━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┳━━━━━━━━┓
┃ id ┃ to                             ┃ subject       ┃ attempts ┃ next try                ┃ last error    ┃ state  ┃
┡━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━╇━━━━━━━━┩
│ m1 │ a@example.net, noc@example.net │ [acctd] alice │        2 │ 2026-03-04 10:30:00 UTC │ 421 try later │ queued │
└────┴────────────────────────────────┴───────────────┴──────────┴─────────────────────────┴───────────────┴────────┘
"""


def test_connections(srv, monkeypatch):
    monkeypatch.setattr(srv.daemon.dispatcher, "connections", lambda: [
        {"user": "root", "uid": 0, "pid": 4242, "since": "2026-03-04T10:29:00+00:00"}])
    assert acctctl(srv, "connections") == """\
                  connections                  
┏━━━━━━┳━━━━━┳━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━┓
┃ user ┃ uid ┃  pid ┃ since                   ┃
┡━━━━━━╇━━━━━╇━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━┩
│ root │   0 │ 4242 │ 2026-03-04 10:29:00 UTC │
└──────┴─────┴──────┴─────────────────────────┘
"""


def test_mac_check(srv, monkeypatch):
    monkeypatch.setattr(srv.daemon.services["mac"], "check", lambda: {
        "mode": "block", "mismatched": {"020435": {"unit": "alice", "addr": "10.0.0.1",
                                                   "expected": "02:00:00:00:00:01",
                                                   "seen": "02:00:00:00:00:99"}}})
    assert acctctl(srv, "mac", "check") == """\
                 MAC mismatches (mac-control block)                  
┏━━━━━━━┳━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━┓
┃ unit  ┃ oid    ┃ address  ┃ expected          ┃ seen              ┃
┡━━━━━━━╇━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━┩
│ alice │ 020435 │ 10.0.0.1 │ 02:00:00:00:00:01 │ 02:00:00:00:00:99 │
└───────┴────────┴──────────┴───────────────────┴───────────────────┘
"""


def test_openvpn_clients(srv, monkeypatch):
    monkeypatch.setattr(srv.daemon.services["openvpn"], "clients", lambda: [
        {"user": "alice", "cid": 3, "vpn_addr": "10.8.0.6", "bytes_in": BIG, "bytes_out": 900}])
    assert acctctl(srv, "openvpn", "clients") == """\
                openvpn clients                 
┏━━━━━━━┳━━━━━┳━━━━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━┓
┃ user  ┃ cid ┃ vpn address ┃       in ┃   out ┃
┡━━━━━━━╇━━━━━╇━━━━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━┩
│ alice │   3 │ 10.8.0.6    │ 1.94 GiB │ 900 B │
└───────┴─────┴─────────────┴──────────┴───────┘
"""


def test_quota_show_list_and_none(fresh):
    assert acctctl(fresh, "quota", "show") == "no quota\n"
    acctctl(fresh, "quota", "set", "alice", "day", "3G", "in")
    assert acctctl(fresh, "quota", "show", "--list") == "UNIT 020435 (alice)\n"


def test_config_show(srv):
    assert acctctl(srv, "config", "show") == CONFIG


def test_top_once_off_a_terminal_shows_every_column(srv, monkeypatch):
    """COLUMNS=60, but a pipe gets every column (a terminal drops pps first)."""
    first = {"ts": 1.0, "addrs": [{"addr": "10.0.0.1", "unit": "alice", "packets_in": 0,
                                   "packets_out": 0, "bytes_in": 0, "bytes_out": 0}],
             "vlans": {}, "ports": {},
             "units": {"alice": {"groups": ["customers"],
                                 "today": {"bytes_in": BIG, "bytes_out": 0},
                                 "month": {"bytes_in": BIG, "bytes_out": 1536}}}}
    second = dict(first, ts=2.0, addrs=[dict(first["addrs"][0], packets_in=10, bytes_in=12_500)])
    replies = iter([first, second])
    monkeypatch.setattr(srv.daemon.commands, "rates", lambda: next(replies))
    assert acctctl(srv, "top", "--once", "--refresh", "0.1") == """\
acctd top: units by bit/s in+out (1/1)                                        
unit               bit/s in   bit/s out pps in pps out    today    month     %
alice            100 kbit/s     0 bit/s   10.0       0 1.94 GiB 1.94 GiB 100.0
s/</> sort  u a v p list  g group  space pause  q quit                        
"""
