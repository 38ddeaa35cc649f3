"""The period tops: per local address, service port and VLAN, a day's,
month's and year's exact counts, through the drain's rows (rollup.by_key),
the commit and `top-by`; a past period trimmed to its biggest keys keeps
its total; the console's overview and its CSV carry the period's figures.

Ground truth is the flows as written here, summed by plain loops, never by
the code under test."""

import csv
import datetime as dt
import io
import json
import types
from collections import defaultdict
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from acctd.errors import BadRequest
from acctd.kernel import abi
from acctd.kernel.drain import Deltas
from acctd.model.addresses import parse_addr
from acctd.model.units import Unit, UnitSet
from acctd.store import database, queries
from acctd.store.database import Storage
from acctd.store.rollup import by_key, rollup

BERLIN = ZoneInfo("Europe/Berlin")
UTC = dt.timezone.utc
# 2026-12-01 23:30 local: the drains cross midnight into 2 December
T0 = dt.datetime(2026, 12, 1, 22, 30, tzinfo=UTC)
STEP = dt.timedelta(minutes=10)
ALICE, BOB, NOBODY = "10.0.0.1", "2001:db8::2", "10.0.0.9"

# (local, remote, dir, proto, local port, remote port, vlan outer, vlan inner)
FLOWS = [
    (ALICE, "192.0.2.1", abi.Dir.OUT, 6, 40001, 443, 0, 0),     # tcp/443
    (ALICE, "192.0.2.1", abi.Dir.IN, 6, 40001, 443, 0, 0),
    (ALICE, "192.0.2.7", abi.Dir.IN, 6, 22, 51000, 10, 0),      # a server: tcp/22
    (BOB, "2001:db8:f::1", abi.Dir.OUT, 17, 53000, 53, 20, 7),  # QinQ: 20 and inner 7
    (BOB, "2001:db8:f::1", abi.Dir.IN, 17, 53000, 53, 20, 7),
    (NOBODY, "192.0.2.9", abi.Dir.OUT, 1, 8, 0, 10, 0),         # icmp: its own slot
    (ALICE, "192.0.2.9", abi.Dir.OUT, 6, 443, 40002, 0, 0),     # tcp/443 again, from the
]                                                               # other side


def flow_keys():
    f = np.zeros(len(FLOWS), abi.FLOW_KEY)
    for i, (loc, rem, d, proto, lport, rport, vo, vi) in enumerate(FLOWS):
        mine, peer = (np.frombuffer(parse_addr(a), np.uint8) for a in (loc, rem))
        f[i]["ifindex"], f[i]["dir"], f[i]["proto"] = 2, d, proto
        f[i]["ip_ver"] = 6 if ":" in loc else 4
        f[i]["vlan_outer"], f[i]["vlan_inner"] = vo, vi
        out = d == abi.Dir.OUT
        f[i]["saddr"], f[i]["daddr"] = (mine, peer) if out else (peer, mine)
        f[i]["sport"], f[i]["dport"] = (lport, rport) if out else (rport, lport)
    return f


def grows(step: int, i: int) -> tuple[int, int]:
    """What flow i gains at drain `step`: (packets, bytes)."""
    p = (3 * i + 5 * step) % 7 + 1
    return p, p * (60 + 37 * i)


def kernel(step: int):
    """Flow and address counters after `step` drains."""
    fv = np.zeros(len(FLOWS), abi.FLOW_VAL)
    addrs = sorted({f[0] for f in FLOWS})
    av = np.zeros(len(addrs), abi.ADDR_VAL)
    for j in range(1, step + 1):
        for i, f in enumerate(FLOWS):
            p, b = grows(j, i)
            fv[i]["packets"] += p
            fv[i]["bytes"] += b
            a = addrs.index(f[0])
            av[a]["packets"][f[2]] += p
            av[a]["bytes"][f[2]] += b
    ak = np.zeros(len(addrs), abi.ADDR_KEY)
    for n, a in enumerate(addrs):
        ak[n]["addr"] = np.frombuffer(parse_addr(a), np.uint8)
    return fv, ak, av


def truth(steps) -> dict[str, dict[str, list[int]]]:
    """{by: {key: [packets in, packets out, bytes in, bytes out]}} over the drains."""
    out = {"addr": defaultdict(lambda: [0] * 4), "port": defaultdict(lambda: [0] * 4),
           "vlan": defaultdict(lambda: [0] * 4)}
    for j in steps:
        for i, (loc, _, d, proto, lport, rport, vo, vi) in enumerate(FLOWS):
            p, b = grows(j, i)
            port = {6: f"tcp/{min(lport, rport)}", 17: f"udp/{min(lport, rport)}"}.get(
                proto, {1: "icmp"}.get(proto))
            keys = [("addr", loc), ("port", port), ("vlan", "untagged" if vo == 0 else str(vo))]
            if vi:
                keys.append(("vlan", f"inner-{vi}"))
            for by, k in keys:
                out[by][k][d] += p
                out[by][k][2 + d] += b
    return out


def model():
    us = UnitSet([Unit("host", "alice", addrs=(parse_addr(ALICE),)),
                  Unit("host", "bob", addrs=(parse_addr(BOB),))])
    return types.SimpleNamespace(units=us)


def drive(db: Storage, steps: int, t0: dt.datetime = T0) -> None:
    """The drain's path: deltas of the counters, by_key, rollup, commit."""
    flows, addrs = Deltas(), Deltas()
    keys = flow_keys()
    for step in range(1, steps + 1):
        fv, ak, av = kernel(step)
        f, a = flows.update(keys, fv), addrs.update(ak, av)
        empty = {k: np.zeros(0, t) for k, t in (("unit_oid", np.uint32), ("policy_oid", np.uint32),
                                                ("dir", np.uint8), ("packets", np.uint64),
                                                ("bytes", np.uint64))}
        db.commit(rollup(empty, t0 + step * STEP, BERLIN,
                         by_key(f.keys, f.values, a.keys, a.values)),
                  {"acct_flows": flows.previous, "acct_addrs": addrs.previous})


def as_truth(reply: dict) -> dict[str, list[int]]:
    return {r["key"]: [r["packets_in"], r["packets_out"], r["bytes_in"], r["bytes_out"]]
            for r in reply["rows"]}


# drains 1..2 fall on 1 December (23:40, 23:50 local), 3..8 on 2 December (00:00 on)
STEPS = 8
DEC1, DEC2 = range(1, 3), range(3, STEPS + 1)


@pytest.fixture
def db(tmp_path):
    with Storage(tmp_path / "tops.duckdb", BERLIN) as st:
        drive(st, STEPS)
        yield st


@pytest.mark.parametrize("by", ["addr", "port", "vlan"])
def test_each_period_holds_exactly_its_drains(db, by):
    now = T0 + STEPS * STEP
    m = model()
    for period, back, steps in (("day", 0, DEC2), ("day", 1, DEC1), ("month", 0, range(1, 9)),
                                ("year", 0, range(1, 9))):
        got = queries.report_top_by(db, m, by, period, back, 100, now)
        want = {k: v for k, v in truth(steps)[by].items()}
        assert as_truth(got) == want, (period, back)
        assert got["total"] == dict(zip(("packets_in", "packets_out", "bytes_in", "bytes_out"),
                                        (sum(v[i] for v in want.values()) for i in range(4))))
    day = queries.report_top_by(db, m, by, "day", 0, 100, now)
    totals = [r["bytes"] for r in day["rows"]]
    assert totals == sorted(totals, reverse=True)


def test_addresses_carry_their_unit_and_ports_and_vlans_their_labels(db):
    now = T0 + STEPS * STEP
    m = model()
    addrs = queries.report_top_by(db, m, "addr", "month", 0, 10, now)["rows"]
    assert {r["key"]: r["unit"] for r in addrs} == {ALICE: "alice", BOB: "bob", NOBODY: None}
    ports = queries.report_top_by(db, m, "port", "month", 0, 10, now)["rows"]
    assert sorted(r["key"] for r in ports) == ["icmp", "tcp/22", "tcp/443", "udp/53"]
    vlans = queries.report_top_by(db, m, "vlan", "month", 0, 10, now)["rows"]
    assert sorted(r["key"] for r in vlans) == ["10", "20", "inner-7", "untagged"]
    assert len(queries.report_top_by(db, m, "port", "month", 0, 2, now)["rows"]) == 2


def test_the_flows_slot_as_the_kernels_port_and_vlan_counters():
    """abi.port_slots and abi.vlan_slots follow acct_port_slot() and the
    acct_vlans counts of acct_lib.h, labelled as `acctctl top` labels them."""
    from acctd.kernel.reader import port_label, vlan_label
    k = flow_keys()
    assert [port_label(int(s)) for s in abi.port_slots(k)] == \
        ["tcp/443", "tcp/443", "tcp/22", "udp/53", "udp/53", "icmp", "tcp/443"]
    outer, qinq, inner = abi.vlan_slots(k)
    assert [vlan_label(int(s)) for s in outer] == \
        ["untagged", "untagged", "10", "20", "20", "10", "untagged"]
    assert qinq.tolist() == [3, 4] and [vlan_label(int(s)) for s in inner] == ["inner-7"] * 2


def test_a_past_period_keeps_its_biggest_keys_and_its_total(tmp_path, monkeypatch):
    """Once a drain opens 2 December, 1 December keeps TOP_KEEP keys of each
    kind and one rest row: its top N (N <= TOP_KEEP) and total stay exact;
    the open day and month keep every key."""
    monkeypatch.setattr(database, "TOP_KEEP", 2)
    with Storage(tmp_path / "t.duckdb", BERLIN) as st:
        drive(st, STEPS)
        now = T0 + STEPS * STEP
        m = model()
        want = truth(DEC1)["port"]
        rank = sorted(want, key=lambda k: (-(want[k][2] + want[k][3])))
        yesterday = queries.report_top_by(st, m, "port", "day", 1, 2, now)
        assert [r["key"] for r in yesterday["rows"]] == rank[:2]
        assert as_truth(yesterday) == {k: want[k] for k in rank[:2]}
        assert yesterday["total"]["bytes_in"] == sum(v[2] for v in want.values())
        kept = st.con.execute("SELECT count(*) FROM rollup_by WHERE keyed_by = 'port' AND "
                              "kind = 'day' AND period_start < make_timestamp($s)",
                              {"s": queries.to_us(now) - 86400 * 10**6 // 2}).fetchall()
        assert kept == [(3,)]  # two keys and the rest row
        assert len(queries.report_top_by(st, m, "port", "day", 0, 100, now)["rows"]) == 4
        assert as_truth(queries.report_top_by(st, m, "port", "month", 0, 100, now)) == \
            dict(truth(range(1, STEPS + 1))["port"])


def test_a_new_year_folds_and_trims_the_day_month_and_year_before(tmp_path, monkeypatch):
    """Across New Year's midnight: 31 December, December and 2026 keep two
    keys and a rest row each, their top and totals exact; 2027 has the rest."""
    monkeypatch.setattr(database, "TOP_KEEP", 2)
    t0 = dt.datetime(2026, 12, 31, 22, 30, tzinfo=UTC)  # 23:30 local
    with Storage(tmp_path / "y.duckdb", BERLIN) as st:
        drive(st, STEPS, t0)
        now, m = t0 + STEPS * STEP, model()
        old, new = truth(DEC1)["addr"], truth(DEC2)["addr"]
        rank = sorted(old, key=lambda k: -(old[k][2] + old[k][3]))
        for period in ("day", "month", "year"):
            past = queries.report_top_by(st, m, "addr", period, 1, 5, now)
            assert as_truth(past) == {k: old[k] for k in rank[:2]}, period
            assert past["total"]["bytes_out"] == sum(v[3] for v in old.values()), period
            assert as_truth(queries.report_top_by(st, m, "addr", period, 0, 5, now)) == new
        kept = st.con.execute("SELECT kind::VARCHAR, count(*) FROM rollup_by WHERE "
                              "keyed_by = 'addr' AND period_start < make_timestamp($s) "
                              "GROUP BY 1 ORDER BY 1", {"s": queries.to_us(now) - 3600 * 10**6}
                              ).fetchall()
        assert kept == [("day", 3), ("month", 3), ("year", 3)]


def test_bad_arguments_are_one_line_errors(db):
    now, m = T0, model()
    with pytest.raises(BadRequest, match="by: expected one of addr, port, vlan, got 'unit'"):
        queries.report_top_by(db, m, "unit", "day", 0, 10, now)
    with pytest.raises(BadRequest, match="period: expected one of day, month, year, got 'week'"):
        queries.report_top_by(db, m, "port", "week", 0, 10, now)
    with pytest.raises(BadRequest, match="limit: at most 1000"):
        queries.report_top_by(db, m, "port", "day", 0, 1001, now)


def test_the_overview_shows_the_periods_figures_and_its_csv_carries_them(db):
    """The console's top addresses, ports and VLANs follow ?period=&back=,
    with the rate now beside each row; the CSV has the exact bytes."""
    from acctd.control import commands
    from acctd.web.app import create_app
    import acctd.web.app as web_app
    m = model()
    now = T0 + STEPS * STEP
    rates = {"ts": 1.0, "addrs": [], "ports": {}, "vlans": {}, "units": {}}
    answers = {
        "web-login": lambda **a: {"token": "t", "name": "ops", "level": "operator", "unit": None},
        "status": lambda: {}, "rates": lambda: rates, "units": lambda **a: [],
        "top-units": lambda **a: {"period": a["period"], "start": "2026-12-02T00:00:00+01:00",
                                  "units": [], "total": {"in": 0, "out": 0, "units": 0}},
        "top-by": lambda **a: queries.report_top_by(db, m, now=now, **a),
    }
    web_app.RATE_GAP = 0.0
    app = create_app(lambda cmd, token=None, /, **args: answers[cmd](**commands.get(cmd).bind(args)))
    c = app.test_client()
    page = c.get("/login").get_data(as_text=True)
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    c.post("/login", data={"name": "ops", "password": "x", "csrf": csrf})
    html = c.get("/?period=day&back=1").get_data(as_text=True)
    assert "Top 10 ports, day from 2026-12-01" in html
    r = c.get("/?period=day&back=1&format=csv&table=top_ports")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    got = {x["key"]: [int(x[k]) for k in ("bytes_in", "bytes_out", "bps")]
           for x in csv.DictReader(io.StringIO(r.get_data(as_text=True)))}
    want = truth(DEC1)["port"]
    assert got == {k: [v[2], v[3], 0] for k, v in want.items()}
    tables = json.loads(c.get("/?period=month&format=json").get_data())
    month = truth(range(1, STEPS + 1))
    assert {x["key"]: (x["unit"], x["bytes_in"], x["bytes_out"]) for x in tables["top_addrs"]} \
        == {k: (u, v[2], v[3]) for (k, u), v in
            zip(((ALICE, "alice"), (BOB, "bob"), (NOBODY, None)),
                (month["addr"][a] for a in (ALICE, BOB, NOBODY)))}
    assert {x["key"]: (x["bytes_in"], x["bytes_out"]) for x in tables["top_vlans"]} == \
        {k: (v[2], v[3]) for k, v in month["vlan"].items()}
    # the rate now beside each row: the `rates` growth of its key
    rates["ports"] = {"tcp/443": {"packets_in": 1, "packets_out": 1, "bytes_in": 500,
                                  "bytes_out": 250}}
    rates["ts"] = 3.0
    tables = json.loads(c.get("/?period=month&format=json").get_data())
    assert {x["key"]: x["bps"] for x in tables["top_ports"]} == \
        {"tcp/443": (500 + 250) * 8 // 2, "tcp/22": 0, "udp/53": 0, "icmp": 0}


CLI_CONFIG = """
[processor]
time-zone = "Europe/Berlin"

[[policy]]
name = "ip"
target = "proto ip"

[[unit]]
type = "host"
name = "alice"
ip = "10.0.0.1"

[[unit]]
type = "host"
name = "bob"
ip = "2001:db8::2"
"""

TOP_PORTS_TEXT = """\
 top ports, 2026-12-01T00:00:00+01:00 .. 
        2026-12-02T00:00:00+01:00        
┏━━━━━━━━━┳━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━┓
┃ port    ┃    in ┃      out ┃    total ┃
┡━━━━━━━━━╇━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━┩
│ icmp    │   0 B │ 2.87 KiB │ 2.87 KiB │
│ tcp/443 │ 873 B │ 1.69 KiB │ 2.54 KiB │
└─────────┴───────┴──────────┴──────────┘
all ports: in 3.12 KiB, out 5.73 KiB
"""  # the ground truth of 1 December's two drains (truth(DEC1)), in acctctl's units


def test_acctctl_top_by_prints_the_period_and_its_json_is_the_reply(db, tmp_path):
    from click.testing import CliRunner

    from acctctl.main import main
    from acctd.config import loads
    from acctd.control import server as ctl

    from .daemon_stub import daemon_stub
    cfg = loads(CLI_CONFIG, str(tmp_path / "acctd.toml"))
    now = T0 + STEPS * STEP
    with daemon_stub(cfg, db, clock=lambda: now) as d:
        s = ctl.ControlServer(str(tmp_path / "ctl.sock"), d.dispatcher)
        s.serve_in_thread()
        try:
            def acctctl(*args):
                res = CliRunner().invoke(main, ["--socket", s.path, *args], env={"COLUMNS": "80"})
                assert res.exit_code == 0, res.output
                return res.output
            assert acctctl("top-by", "port", "--period", "day", "--back", "1", "--limit", "2") \
                == TOP_PORTS_TEXT
            got = json.loads(acctctl("top-by", "addr", "--period", "month", "--json"))
            assert got == d.call("top-by", by="addr", period="month")
            assert [(r["key"], r["unit"]) for r in got["rows"]] == \
                [(ALICE, "alice"), (BOB, "bob"), (NOBODY, None)]
            res = CliRunner().invoke(main, ["--socket", s.path, "top-by", "peer"])
            assert res.exit_code == 2 and "'peer' is not one of 'addr', 'port', 'vlan'" in \
                res.output
        finally:
            s.shutdown()
            s.server_close()
