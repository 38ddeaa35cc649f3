"""acctctl top: rates from counter snapshots, key handling, and the table rendered
at fixed widths with colour off (snapshot-style: the expected text is below)."""

import io

import pytest
from rich.console import Console

from acctctl import top as T
from acctctl.top import Row, TopState, handle_key
from acctd.model.addresses import parse_addr, parse_prefix
from acctd.model.units import Unit, UnitSet


def c(pi, po, bi, bo):
    return {"packets_in": pi, "packets_out": po, "bytes_in": bi, "bytes_out": bo}


UNITS = {
    "alice": {"groups": ["staff", "all"], "today": {"bytes_in": 5_000_000, "bytes_out": 1_000_000},
              "month": {"bytes_in": 120_000_000_000, "bytes_out": 3_456_789_000}},
    "bob": {"groups": ["guests", "all"], "today": 0, "month": 1000},
    "carol": {"groups": ["staff", "all"], "today": 2_500, "month": 99_960},
}

PREV = {
    "ts": 100.0,
    "addrs": [{"addr": "10.1.0.2", "unit": "alice", **c(100, 50, 10_000, 5_000)},
              {"addr": "10.1.0.3", "unit": "bob", **c(0, 0, 0, 0)},
              {"addr": "10.1.0.9", "unit": "bob", **c(7, 7, 700, 700)},       # gone in CUR
              {"addr": "10.1.0.4", "unit": "carol", **c(5000, 5000, 9_000_000, 900)}],
    "vlans": {"100": c(10, 10, 1000, 1000), "inner-300": c(0, 0, 0, 0)},
    "ports": {"tcp/443": c(5, 5, 500, 500), "udp/53": c(1, 1, 100, 100)},
    "units": UNITS,
}
CUR = {
    "ts": 102.0,
    "addrs": [{"addr": "10.1.0.2", "unit": "alice", **c(2100, 1050, 3_010_000, 105_000)},
              {"addr": "10.1.0.3", "unit": "bob", **c(20, 10, 20_000, 1_000)},
              # went backwards: re-created since PREV, all of it is new
              {"addr": "10.1.0.4", "unit": "carol", **c(4, 2, 4000, 250)},
              # new and unattributed
              {"addr": "192.168.255.254", **c(2, 2, 200, 200)}],
    "vlans": {"100": c(1010, 510, 2_001_000, 51_000), "inner-300": c(4, 0, 1_000, 0)},
    "ports": [{"label": "tcp/443", **c(1005, 505, 2_000_500, 50_500)},
              {"label": "icmp", **c(2, 2, 196, 196)}],
    "units": UNITS,
}


def by_key(rows):
    return {r.key: r for r in rows}


# --- rates ---------------------------------------------------------------------

def test_rates_are_counter_deltas_over_elapsed_seconds():
    r = T.rates(PREV, CUR)
    a = by_key(r["addrs"])
    assert a["10.1.0.2"] == Row("10.1.0.2", 12_000_000.0, 400_000.0, 1000.0, 500.0,
                                unit="alice", groups=("staff", "all"))
    assert a["10.1.0.3"] == Row("10.1.0.3", 80_000.0, 4_000.0, 10.0, 5.0,
                                unit="bob", groups=("guests", "all"))
    # counters went backwards: the entry was re-created, its whole value is new
    assert (a["10.1.0.4"].bits_in, a["10.1.0.4"].bits_out, a["10.1.0.4"].pkts_in,
            a["10.1.0.4"].pkts_out) == (16_000.0, 1_000.0, 2.0, 1.0)
    assert a["192.168.255.254"] == Row("192.168.255.254", 800.0, 800.0, 1.0, 1.0)
    assert "10.1.0.9" not in a   # gone: no rate

    u = by_key(r["units"])
    assert set(u) == {"alice", "bob", "carol", T.UNATTRIBUTED}
    assert u["alice"].bits_in == 12_000_000.0 and u["bob"].pkts_out == 5.0
    assert u["carol"].groups == ("staff", "all")
    assert u[T.UNATTRIBUTED].bits_out == 800.0

    v = by_key(r["vlans"])
    assert v["100"] == Row("100", 8_000_000.0, 200_000.0, 500.0, 250.0)
    assert v["inner-300"] == Row("inner-300", 4_000.0, 0.0, 2.0, 0.0)
    p = by_key(r["ports"])
    assert p["tcp/443"] == Row("tcp/443", 8_000_000.0, 200_000.0, 500.0, 250.0)
    assert p["icmp"] == Row("icmp", 784.0, 784.0, 1.0, 1.0)   # new since PREV


def test_one_snapshot_or_no_time_gives_zero_rates_but_all_rows():
    for r in (T.rates(None, CUR), T.rates(CUR, CUR)):
        assert {row.key for row in r["units"]} == {"alice", "bob", "carol"}
        assert len(r["addrs"]) == 4
        assert all(x.bits_in == x.bits_out == x.pkts_in == x.pkts_out == 0
                   for rows in r.values() for x in rows)


def test_idle_units_get_a_zero_row_and_quiet_unattributed_none():
    cur = dict(PREV, ts=101.0)
    units = by_key(T.rates(PREV, cur)["units"])
    assert set(units) == {"alice", "bob", "carol"}
    assert units["alice"].bits_in == 0.0


def test_addresses_without_unit_are_matched_with_a_unitset():
    us = UnitSet([Unit("group", "all"),
                  Unit("net", "lan", nets=(parse_prefix("10.1.0.0/24"),), parents=("all",)),
                  Unit("host", "alice", addrs=(parse_addr("10.1.0.2"),), parents=("all",))])
    assert us.names_of(["10.1.0.2", "10.1.0.7", "2001:db8::1"]) == ["alice", "lan", None]
    assert us.names_of([]) == []
    prev = {"ts": 0.0, "addrs": {"10.1.0.2": c(0, 0, 0, 0), "10.1.0.7": c(0, 0, 0, 0)}}
    cur = {"ts": 1.0, "addrs": {"10.1.0.2": c(1, 0, 100, 0), "10.1.0.7": c(2, 0, 10, 0)},
           "units": {"alice": {"groups": ["all"]}, "lan": {"groups": ["all"]}}}
    u = by_key(T.rates(prev, cur, unitset=us)["units"])
    assert (u["alice"].bits_in, u["lan"].bits_in, u["lan"].pkts_in) == (800.0, 80.0, 2.0)


def test_totals_from_unit_summaries_and_optional_per_view_totals():
    t = T.totals(CUR, "units")
    assert t["alice"] == (6_000_000, 123_456_789_000)
    assert t["bob"] == (0, 1000)
    assert T.totals(CUR, "ports") == {}
    month = {"bytes_in": 1, "bytes_out": 2}
    snap = {"totals": {"ports": {"tcp/443": {"today": 5, "month": month}}}}
    assert T.totals(snap, "ports") == {"tcp/443": (5, 3)}


# --- keys ----------------------------------------------------------------------

def test_sort_column_cycles_both_ways():
    s = TopState()
    seen = []
    for _ in T.SORTS:
        seen.append(s.sort)
        s = handle_key(s, "s")
    assert seen == list(T.SORTS) and s.sort == "rate"
    assert handle_key(s, ">").sort == "in"
    assert handle_key(s, "<").sort == "month"
    assert handle_key(handle_key(s, "<"), ">").sort == "rate"


def test_switch_what_is_listed():
    s = TopState()
    assert [handle_key(s, k).view for k in "uavp"] == ["units", "addrs", "vlans", "ports"]
    assert handle_key(handle_key(s, "p"), "s").view == "ports"


def test_group_filter_cycles_through_groups_and_back_to_all():
    s = TopState(groups=("all", "guests", "staff"))
    seq = []
    for _ in range(4):
        s = handle_key(s, "g")
        seq.append(s.group)
    assert seq == ["all", "guests", "staff", None]
    assert handle_key(s, "G").group == "staff"
    # a group that vanished from the snapshot restarts the cycle
    assert handle_key(TopState(group="gone", groups=("a", "b")), "g").group == "a"
    assert handle_key(TopState(), "g").group is None   # no groups: stays on all


def test_pause_quit_rows_and_unknown_keys():
    s = TopState()
    assert handle_key(s, " ").paused and not handle_key(handle_key(s, " "), " ").paused
    assert handle_key(s, "q").quit and handle_key(s, "Q").quit
    assert handle_key(s, "+").n == T.DEFAULT_ROWS + 1
    assert handle_key(TopState(n=1), "-").n == 1
    assert handle_key(s, "x") is s and handle_key(s, "\x1b") is s
    with pytest.raises(ValueError):
        TopState(view="flows")
    with pytest.raises(ValueError):
        TopState(sort="name")


# --- selection -----------------------------------------------------------------

def test_select_sorts_filters_and_shares_of_the_whole():
    rows = T.rates(PREV, CUR)
    tots = T.totals(CUR, "units")
    lines, matched = T.select(TopState(), rows, tots)
    assert [ln.row.key for ln in lines] == ["alice", "bob", "carol", T.UNATTRIBUTED]
    assert matched == 4
    whole = 12_400_000 + 84_000 + 17_000 + 1_600
    assert lines[0].share == pytest.approx(100 * 12_400_000 / whole)
    assert sum(ln.share for ln in lines) == pytest.approx(100.0)

    # the filter keeps the share of everything, not of the group
    lines, matched = T.select(TopState(group="guests"), rows, tots)
    assert [ln.row.key for ln in lines] == ["bob"] and matched == 1
    assert lines[0].share == pytest.approx(100 * 84_000 / whole)

    # by month; rows with no summary sort last and have no share
    lines, _ = T.select(TopState(sort="month"), rows, tots)
    assert [ln.row.key for ln in lines] == ["alice", "carol", "bob", T.UNATTRIBUTED]
    assert lines[-1].share is None and lines[-1].month is None

    lines, matched = T.select(TopState(view="addrs", sort="pps_out", n=2), rows, tots)
    assert [ln.row.key for ln in lines] == ["10.1.0.2", "10.1.0.3"] and matched == 4
    # the group filter does not apply to VLANs and ports
    assert T.select(TopState(view="vlans", group="staff"), rows)[1] == 2


def test_human_units():
    rates = (0, 53.3, 999.4, 999.96, 12_345_678, 123_456_789, 1.5e9)
    assert [T.human_rate(x) for x in rates] == ["0 bit/s", "53.3 bit/s", "999 bit/s", "1.0 kbit/s",
                                                "12.3 Mbit/s", "123 Mbit/s", "1.5 Gbit/s"]
    assert [T.human_pps(x) for x in (0, 0.5, 99.94, 100, 12_345, 2_500_000)] == \
        ["0", "0.5", "99.9", "100", "12.3k", "2.5M"]
    assert [T.human_bytes(x) for x in (None, 0, 999, 1000, 99_960, 123_456_789_000)] == \
        ["-", "0 B", "999 B", "1000 B", "97.6 KiB", "115 GiB"]   # acctctl's one unit system


# --- rendering -----------------------------------------------------------------

def render(state, rows, tots, width, height=None):
    console = Console(width=width, color_system=None, record=True)
    console.print(T.build_table(state, rows, tots, width, height))
    return [line.rstrip() for line in console.export_text().splitlines()]


EXPECTED_80 = """\
acctd top: units by bit/s in+out (4/4)
unit                 bit/s in   bit/s out pps in pps out    today    month     %
alice             12.0 Mbit/s  400 kbit/s   1.0k     500 5.72 MiB  115 GiB  99.2
bob               80.0 kbit/s  4.0 kbit/s   10.0     5.0      0 B   1000 B   0.7
carol             16.0 kbit/s  1.0 kbit/s    2.0     1.0 2.44 KiB 97.6 KiB   0.1
(unattributed)      800 bit/s   800 bit/s    1.0     1.0        -        -   0.0
keys: s/</> sort  u/a/v/p units/addrs/vlans/ports  g group  space pause  q quit"""


def test_rendered_at_80_columns_without_colour():
    rows = T.rates(PREV, CUR)
    assert "\n".join(render(TopState(), rows, T.totals(CUR, "units"), 80)) == EXPECTED_80


EXPECTED_PORTS_60_PAUSED = """\
acctd top: ports by pkt/s in (2/2) [paused]
port                     bit/s in   bit/s out    today     %
tcp/443                8.0 Mbit/s  200 kbit/s        -  99.8
icmp                    784 bit/s   784 bit/s        -   0.2
s/</> sort  u a v p list  g group  space pause  q quit"""


def test_rendered_at_60_columns_drops_columns_not_rows():
    rows = T.rates(PREV, CUR)
    state = TopState(view="ports", sort="pps_in", paused=True)
    assert "\n".join(render(state, rows, T.totals(CUR, "ports"), 60)) == EXPECTED_PORTS_60_PAUSED


def test_names_are_text_not_markup_and_controls_are_escaped():
    cur = {"ts": 1.0, "addrs": [], "vlans": {}, "ports": {},
           "units": {"[red]x": {"groups": []}, "\x1b[2Jwipe": {"groups": []}}}
    lines = render(TopState(sort="today"), T.rates(None, cur), T.totals(cur, "units"), 80)
    assert sorted(ln.split()[0] for ln in lines[2:4]) == ["[red]x", "\\x1b[2Jwipe"]


def big_snapshot(n=60):
    """Many units with long names, IPv6 addresses and big numbers: the worst case for width."""
    addrs, units = [], {}
    for i in range(n):
        name = f"unit-with-a-rather-long-name-{i:03d}"
        units[name] = {"groups": ["g%d" % (i % 3)], "today": 10 ** (i % 15) * 7,
                       "month": 10 ** (i % 16) * 9}
        ip = f"2001:db8:ffff:ffff:ffff:ffff:ffff:{i:04x}" if i % 2 else f"203.0.113.{i}"
        addrs.append({"addr": ip, "unit": name, **c(i * 10 ** 7, i, i * 10 ** 12, 3 ** i)})
    return {"ts": 5.0, "addrs": addrs, "units": units,
            "vlans": {f"inner-{i}": c(i, i, i, i) for i in range(n)},
            "ports": {f"udp/{i}": c(i, i, i, i) for i in range(n)}}


@pytest.mark.parametrize("view", T.VIEWS)
@pytest.mark.parametrize("sort", ["rate", "month"])
def test_fits_80x24(view, sort):
    cur = big_snapshot()
    rows = T.rates(dict(cur, ts=4.0, addrs=[], vlans={}, ports={}), cur)
    lines = render(TopState(view=view, sort=sort, group="g1" if view == "units" else None),
                   rows, T.totals(cur, view), 80, height=24)
    assert len(lines) <= 24
    assert max(len(ln) for ln in lines) <= 80
    # the whole header on one line
    assert lines[1].split() == [T.NAME_HEADERS[view], "bit/s", "in", "bit/s", "out",
                                "pps", "in", "pps", "out", "today", "month", "%"]
    assert lines[-1].startswith("keys:")
    # title + header + 20 rows (of 60, or 20 in group g1) + footer: one line per row
    assert len(lines) == 3 + T.DEFAULT_ROWS == 23


@pytest.mark.parametrize("width", [60, 45, 30])
def test_narrow_widths_render_one_line_per_row(width):
    cur = big_snapshot(10)
    rows = T.rates(dict(cur, ts=4.0), cur)
    lines = render(TopState(view="addrs"), rows, T.totals(cur, "addrs"), width)
    assert len(lines) == 3 + 10
    assert max(len(ln) for ln in lines) <= width
    assert all(len(ln.split()) >= 2 for ln in lines[2:-1])   # name and at least one rate


def test_height_limits_the_rows():
    cur = big_snapshot()
    rows = T.rates(None, cur)
    assert len(render(TopState(n=50), rows, {}, 80, height=10)) == 10
    assert len(render(TopState(n=5), rows, {}, 80, height=24)) == 8


def test_as_json_rows():
    out = T.as_json(TopState(n=1), T.rates(PREV, CUR), T.totals(CUR, "units"))
    assert out == [{"key": "alice", "unit": "alice", "bits_in": 12_000_000.0, "bits_out": 400_000.0,
                    "pkts_in": 1000.0, "pkts_out": 500.0, "today": 6_000_000,
                    "month": 123_456_789_000, "share": pytest.approx(99.2, abs=0.05)}]


# --- edges ---------------------------------------------------------------------

def fetcher(*snaps):
    calls = []

    def fetch():
        calls.append(1)
        return snaps[min(len(calls), len(snaps)) - 1]
    return fetch, calls


def test_snapshot_once_prints_rates_between_two_fetches():
    fetch, calls = fetcher(PREV, CUR)
    slept = []
    console = Console(width=80, color_system=None, record=True, file=io.StringIO())
    T.snapshot_once(fetch, console, sleep=slept.append)
    assert slept == [1.0] and len(calls) == 2
    text = "\n".join(line.rstrip() for line in console.export_text().splitlines())
    assert text == EXPECTED_80


def test_snapshot_once_with_one_fetch_shows_zero_rates():
    fetch, calls = fetcher(CUR)
    console = Console(width=80, color_system=None, record=True, file=io.StringIO())
    T.snapshot_once(fetch, console, TopState(view="vlans"), interval=0)
    lines = console.export_text().splitlines()
    assert len(calls) == 1
    assert lines[2].split() == ["100", "0", "bit/s", "0", "bit/s", "0", "0", "-", "-", "0.0"]


def test_run_live_ticks_on_timeouts_and_applies_keys():
    fetch, calls = fetcher(PREV, CUR, CUR)
    pressed = iter([None, "v", " ", None, "\x1b[A", "gq"])
    out = io.StringIO()
    console = Console(width=80, height=24, color_system=None, file=out)
    state = T.run_live(fetch, console, refresh=1.0, keys=lambda timeout: next(pressed),
                       clock=lambda: 0.0)
    assert len(calls) == 3   # the first read, then one per timeout
    assert (state.view, state.paused, state.quit, state.group) == ("vlans", True, True, "all")
    assert state.groups == ("all", "guests", "staff")
    # a non-terminal console shows the final frame once: still PREV->CUR, frozen by the pause
    text = out.getvalue()
    assert "acctd top: vlans by bit/s in+out (2/2) [paused]" in text
    assert "8.0 Mbit/s" in text


def test_run_live_refreshes_at_least_every_second():
    fetch, _ = fetcher(CUR)
    console = Console(file=io.StringIO())
    with pytest.raises(ValueError, match="at most 1 second"):
        T.run_live(fetch, console, refresh=2.0, keys=lambda t: "q")
    assert T.run_live(fetch, console, refresh=0.5, keys=lambda t: "q").quit


def test_stdin_keys_without_a_terminal_only_waits():
    with T.stdin_keys(io.StringIO("q")) as keys:
        assert keys(0) is None


def test_top_prints_one_snapshot_when_not_a_terminal():
    fetch, calls = fetcher(CUR)
    console = Console(width=80, color_system=None, record=True, file=io.StringIO())
    T.top(fetch, console, refresh=0.001)
    assert len(calls) == 2
    assert console.export_text().startswith("acctd top: units by bit/s in+out (3/3)")


def test_snapshot_once_off_a_terminal_cuts_no_name_and_drops_no_column():
    cur = big_snapshot(3)
    fetch, _ = fetcher(dict(cur, ts=4.0), cur)
    console = Console(width=60, color_system=None, record=True, file=io.StringIO())
    T.snapshot_once(fetch, console, sleep=lambda s: None)
    lines = console.export_text().splitlines()
    assert lines[1].split() == ["unit", "bit/s", "in", "bit/s", "out", "pps", "in", "pps", "out",
                                "today", "month", "%"]
    assert sorted(ln.split()[0] for ln in lines[2:5]) == [
        f"unit-with-a-rather-long-name-{i:03d}" for i in range(3)]
    assert "…" not in "".join(lines)
