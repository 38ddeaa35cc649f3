"""The nacctd flow log: exact lines from flow arrays, and a file that loses and
duplicates nothing across pause/move/resume and rotation."""

import datetime as dt
import json
import os

import numpy as np
import pytest

from acctd.kernel import abi
from acctd.model.addresses import format_addr, parse_addr
from acctd.services import flowlog

README_TIME = 786476591  # the time on the sample line of net-acct's README
DEVICES = {2: "eth0", 3: "ppp0"}


def flows(*rows):
    """rows: (ifindex, dir, proto, src, sport, dst, dport, packets, bytes)."""
    k = np.zeros(len(rows), abi.FLOW_KEY)
    v = np.zeros(len(rows), abi.FLOW_VAL)
    for i, (ifindex, d, proto, src, sport, dst, dport, packets, nbytes) in enumerate(rows):
        k[i]["ifindex"], k[i]["dir"], k[i]["proto"] = ifindex, d, proto
        k[i]["ip_ver"] = 6 if ":" in src else 4
        k[i]["sport"], k[i]["dport"] = sport, dport
        k[i]["saddr"] = np.frombuffer(parse_addr(src), np.uint8)
        k[i]["daddr"] = np.frombuffer(parse_addr(dst), np.uint8)
        v[i]["packets"], v[i]["bytes"] = packets, nbytes
        v[i]["first_ns"], v[i]["last_ns"] = 1, 2
    return k, v


OUT, IN = abi.Dir.OUT, abi.Dir.IN


def lines(k, v, **kw):
    kw.setdefault("now", README_TIME)
    kw.setdefault("devices", DEVICES)
    return flowlog.format_lines(k, v, **kw)


# -- line format -------------------------------------------------------------------

def test_ipv4_tcp_is_the_readme_sample_line():
    k, v = flows((2, OUT, 6, "193.98.158.1", 119, "192.76.152.9", 2072, 9, 5370))
    assert lines(k, v) == ["786476591\t6\t193.98.158.1\t119\t192.76.152.9\t2072\t5370\teth0\tunknown"]


def test_udp_user_is_the_local_address_user():
    k, v = flows((3, OUT, 17, "10.0.0.5", 5353, "192.0.2.1", 53, 1, 80),
                 (3, IN, 17, "192.0.2.1", 53, "10.0.0.5", 5353, 1, 120),
                 (3, IN, 17, "10.0.0.5", 53, "10.0.0.7", 5353, 1, 60))
    users = {"10.0.0.5": "alice", "192.0.2.1": "not-local"}
    assert lines(k, v, user=users.get) == [
        "786476591\t17\t10.0.0.5\t5353\t192.0.2.1\t53\t80\tppp0\talice",
        "786476591\t17\t192.0.2.1\t53\t10.0.0.5\t5353\t120\tppp0\talice",
        "786476591\t17\t10.0.0.5\t53\t10.0.0.7\t5353\t60\tppp0\tunknown",  # in: 10.0.0.7's
    ]


def test_icmp_prints_ports_as_zero_like_nacctd():
    # the key keeps ICMP type/code in sport/dport; nacctd wrote 0 0
    k, v = flows((2, OUT, 1, "10.0.0.5", 8, "192.0.2.1", 0, 3, 252),
                 (2, IN, 1, "192.0.2.1", 0, "10.0.0.5", 0, 3, 252))
    assert lines(k, v) == ["786476591\t1\t10.0.0.5\t0\t192.0.2.1\t0\t252\teth0\tunknown",
                           "786476591\t1\t192.0.2.1\t0\t10.0.0.5\t0\t252\teth0\tunknown"]


def test_ipv6_tcp_and_icmpv6():
    k, v = flows((2, OUT, 6, "2001:db8::5", 40000, "2001:db8:0:1::80", 443, 10, 1500),
                 (2, IN, 58, "fe80::1", 128, "2001:db8::5", 0, 1, 104))
    users = {"2001:db8::5": "bob"}
    assert lines(k, v, user=users.get) == [
        "786476591\t6\t2001:db8::5\t40000\t2001:db8:0:1::80\t443\t1500\teth0\tbob",
        "786476591\t58\tfe80::1\t0\t2001:db8::5\t0\t104\teth0\tbob",
    ]


def test_time_from_datetime_device_fallback_and_names_without_whitespace():
    k, v = flows((7, OUT, 6, "10.0.0.5", 1, "10.9.9.9", 2, 1, 1),
                 (2, OUT, 6, "10.0.0.6", 1, "10.9.9.9", 2, 1, 1))
    when = dt.datetime.fromtimestamp(README_TIME + 0.9, dt.timezone.utc)
    users = {"10.0.0.5": "John Smith\t", "10.0.0.6": "  "}
    assert lines(k, v, now=when, devices={2: "my eth"}, user=users.get) == [
        "786476591\t6\t10.0.0.5\t1\t10.9.9.9\t2\t1\tif7\tJohn_Smith",
        "786476591\t6\t10.0.0.6\t1\t10.9.9.9\t2\t1\tmy_eth\tunknown",
    ]


def test_user_is_asked_once_per_local_address():
    k, v = flows(*[(2, OUT, 6, f"10.0.0.{i % 3}", 1000 + i, "192.0.2.1", 80, 1, i)
                   for i in range(30)])
    asked = []
    out = lines(k, v, user=lambda a: asked.append(a) or "u" + a[-1])
    assert sorted(asked) == ["10.0.0.0", "10.0.0.1", "10.0.0.2"]
    assert [ln.rsplit("\t", 1)[1] for ln in out[:4]] == ["u0", "u1", "u2", "u0"]


def test_large_drain_matches_per_flow_formatting():
    rng = np.random.default_rng(7)
    rows = []
    for i in range(2000):
        src = f"10.{i % 5}.{i % 200}.{i % 13}" if i % 3 else f"2001:db8::{i:x}"
        dst = "192.0.2.1" if i % 3 else "2001:db8::1"
        rows.append((int(rng.integers(1, 4)), int(rng.integers(0, 2)), int(rng.choice([1, 6, 17, 58])),
                     src, int(rng.integers(0, 65536)), dst, int(rng.integers(0, 65536)),
                     int(rng.integers(1, 100)), int(rng.integers(0, 2**63))))
    k, v = flows(*rows)
    got = lines(k, v)
    for i, (ifindex, d, proto, src, sport, dst, dport, _, nbytes) in enumerate(rows):
        ported = proto in (6, 17)
        want = "\t".join(map(str, [README_TIME, proto, format_addr(k[i]["saddr"]), sport if ported else 0,
                                   format_addr(k[i]["daddr"]),
                                   dport if ported else 0, nbytes,
                                   DEVICES.get(ifindex, f"if{ifindex}"), "unknown"]))
        assert got[i] == want


def test_empty_drain_is_no_lines():
    k, v = flows()
    assert lines(k, v) == []


# -- field selection ---------------------------------------------------------------

def test_fields_are_selectable_and_print_in_the_configured_order():
    k, v = flows((2, IN, 6, "192.0.2.1", 80, "10.0.0.5", 40000, 12, 9000))
    assert lines(k, v, fields=["time", "src", "dst", "bytes"]) == \
        ["786476591\t192.0.2.1\t10.0.0.5\t9000"]
    assert lines(k, v, fields=("bytes", "packets", "dir", "device")) == ["9000\t12\tin\teth0"]
    assert lines(k, v, fields=flowlog.FIELDS) == [
        "786476591\t6\t192.0.2.1\t80\t10.0.0.5\t40000\t12\t9000\teth0\tunknown\tin"]


def test_json_lines_carry_the_same_fields_as_objects():
    k, v = flows((2, IN, 6, "192.0.2.1", 80, "10.0.0.5", 40000, 12, 9000),
                 (3, OUT, 17, "2001:db8::5", 53, "2001:db8::1", 5353, 1, 70))
    got = lines(k, v, fields=flowlog.FIELDS, style="json",
                user=lambda a: 'o"k\\' if a == "2001:db8::5" else None)
    assert got == [
        '{"time": 786476591, "proto": 6, "src": "192.0.2.1", "sport": 80, "dst": "10.0.0.5", '
        '"dport": 40000, "packets": 12, "bytes": 9000, "device": "eth0", "user": "unknown", '
        '"dir": "in"}',
        '{"time": 786476591, "proto": 17, "src": "2001:db8::5", "sport": 53, "dst": '
        '"2001:db8::1", "dport": 5353, "packets": 1, "bytes": 70, "device": "ppp0", '
        '"user": "o\\"k\\\\", "dir": "out"}']
    assert [json.loads(x)["user"] for x in got] == ["unknown", 'o"k\\']


def test_the_flowlog_table_takes_the_json_format(tmp_path):
    from acctd.config.loader import loads
    cfg = loads(f'[flowlog]\npath = "{tmp_path / "f"}"\nformat = "json"\n')
    assert cfg.flowlog.format == "json"
    from acctd.errors import ConfigError
    with pytest.raises(ConfigError, match="<string>:3: \\[flowlog\\] key 'format': expected "
                                          "one of nacctd, json, got 'xml'"):
        loads(f'[flowlog]\npath = "{tmp_path / "f"}"\nformat = "xml"\n')


@pytest.mark.parametrize("fields, msg", [
    (["time", "port"], "unknown flow log field 'port'"),
    (["time", "bytes", "time"], "listed twice: time"),
    ([], "at least one field"),
])
def test_bad_field_lists_are_refused(fields, msg):
    with pytest.raises(ValueError, match=msg):
        flowlog.check_fields(fields)
    with pytest.raises(ValueError, match=msg):
        flowlog.FlowLog("/nonexistent/flowlog", fields)


def test_format_line_of_one_record():
    k, v = flows((2, OUT, 6, "193.98.158.1", 119, "192.76.152.9", 2072, 9, 5370))
    assert flowlog.format_line(k[0], v[0], now=README_TIME, devices=DEVICES,
                               fields=("proto", "bytes")) == "6\t5370"


# -- the file ------------------------------------------------------------------------

class Drains:
    """Successive drains, each with its own lines, so every line is unique."""

    def __init__(self):
        self.n = 0
        self.all: list[str] = []

    def next(self, flows_per_drain=3) -> list[str]:
        self.n += 1
        out = [f"{1000 + self.n}\t6\t10.0.0.{i}\t1\t192.0.2.1\t80\t{self.n * 100 + i}\teth0\tunknown"
               for i in range(flows_per_drain)]
        self.all += out
        return out


def read_lines(path):
    with open(path) as f:
        text = f.read()
    assert text == "" or text.endswith("\n")
    return text.splitlines()


def test_lines_are_appended_drain_by_drain(tmp_path):
    path = tmp_path / "flowlog"
    fl, d = flowlog.FlowLog(str(path)), Drains()
    for _ in range(3):
        assert fl.write(d.next()) == 3
    assert read_lines(path) == d.all
    assert fl.status()["lines_written"] == 9


def test_append_formats_with_the_logs_fields(tmp_path):
    path = tmp_path / "flowlog"
    fl = flowlog.FlowLog(str(path), ["src", "bytes", "user"])
    k, v = flows((2, OUT, 6, "10.0.0.5", 1, "192.0.2.1", 80, 1, 777))
    assert fl.append(k, v, now=README_TIME, devices=DEVICES, user={"10.0.0.5": "eve"}.get) == 1
    assert read_lines(path) == ["10.0.0.5\t777\teve"]


def test_pause_move_resume_loses_and_duplicates_nothing(tmp_path):
    path = tmp_path / "flowlog"
    fl, d = flowlog.FlowLog(str(path)), Drains()
    fl.write(d.next())
    fl.write(d.next())
    before = list(d.all)
    fl.pause()                                   # SIGTSTP
    assert fl.write(d.next()) == 0               # a drain while paused: queued
    os.rename(path, tmp_path / "flowlog.old")    # the archiver moves the file away
    assert fl.write(d.next()) == 0
    assert not path.exists()
    assert fl.queued == 6
    assert fl.resume() == 6                      # SIGCONT: queued lines first ...
    fl.write(d.next())                           # ... then the next drains
    fl.write(d.next())
    old, new = read_lines(tmp_path / "flowlog.old"), read_lines(path)
    assert old == before
    assert old + new == d.all
    assert len(set(old + new)) == len(d.all)
    assert fl.queued == 0 and fl.dropped == 0


def test_pause_without_moving_appends_to_the_same_file(tmp_path):
    path = tmp_path / "flowlog"
    fl, d = flowlog.FlowLog(str(path)), Drains()
    fl.write(d.next())
    fl.pause()
    fl.pause()                                   # twice is once
    fl.write(d.next())
    assert len(read_lines(path)) == 3
    fl.resume()
    fl.resume()
    fl.write(d.next())
    assert read_lines(path) == d.all


def test_the_queue_is_bounded_and_counts_what_it_dropped(tmp_path):
    path = tmp_path / "flowlog"
    fl, d = flowlog.FlowLog(str(path), queue_limit=5), Drains()
    fl.pause()
    first, second = d.next(), d.next()
    fl.write(first)
    fl.write(second)                             # 2 of these 3 fit
    assert (fl.queued, fl.dropped) == (5, 1)
    assert fl.resume() == 5
    assert read_lines(path) == first + second[:2]  # the oldest kept, in order
    assert fl.status()["dropped"] == 1


def test_the_moved_file_is_followed_even_without_pause(tmp_path):
    # opened per drain, as nacctd did: a plain mv never loses a line
    path = tmp_path / "flowlog"
    fl, d = flowlog.FlowLog(str(path)), Drains()
    fl.write(d.next())
    os.rename(path, tmp_path / "moved")
    fl.write(d.next())
    assert read_lines(tmp_path / "moved") + read_lines(path) == d.all


def test_rotate_renames_and_continues_in_a_fresh_file(tmp_path):
    path = tmp_path / "flowlog"
    t = dt.datetime(2024, 3, 1, 12, 30, 5).timestamp()   # local time, as the name is
    fl, d = flowlog.FlowLog(str(path), clock=lambda: t), Drains()
    fl.write(d.next())
    fl.write(d.next())
    first = list(d.all)
    rotated = fl.rotate()
    assert rotated == f"{path}.20240301-123005"
    assert read_lines(rotated) == first
    assert path.exists() and read_lines(path) == []      # fresh file right away
    fl.write(d.next())
    second = d.all[len(first):]
    assert fl.rotate() == f"{path}.20240301-123005.1"    # same second: never replaced
    fl.write(d.next())
    assert read_lines(f"{path}.20240301-123005.1") == second
    assert read_lines(rotated) + read_lines(f"{rotated}.1") + read_lines(path) == d.all


def test_rotate_to_a_given_name(tmp_path):
    path = tmp_path / "flowlog"
    fl, d = flowlog.FlowLog(str(path)), Drains()
    fl.write(d.next())
    assert fl.rotate("flowlog.monday") == str(tmp_path / "flowlog.monday")
    fl.write(d.next())
    (tmp_path / "archive").mkdir()
    assert fl.rotate(str(tmp_path / "archive" / "tuesday")) == str(tmp_path / "archive" / "tuesday")
    fl.write(d.next())
    with pytest.raises(FileExistsError):
        fl.rotate("flowlog.monday")                      # never overwritten
    with pytest.raises(ValueError, match="the flow log itself"):
        fl.rotate("flowlog")
    assert (read_lines(tmp_path / "flowlog.monday") + read_lines(tmp_path / "archive" / "tuesday")
            + read_lines(path)) == d.all


def test_rotate_before_any_line_and_while_paused(tmp_path):
    path = tmp_path / "flowlog"
    fl, d = flowlog.FlowLog(str(path)), Drains()
    assert fl.rotate() is None                           # nothing to rotate yet
    assert read_lines(path) == []
    fl.write(d.next())
    fl.pause()
    fl.write(d.next())
    assert fl.rotate("r1") == str(tmp_path / "r1")
    assert not path.exists()                             # paused: no new file yet
    fl.resume()
    assert read_lines(tmp_path / "r1") + read_lines(path) == d.all


def test_a_partial_last_line_from_a_crash_is_cut_before_appending(tmp_path):
    path = tmp_path / "flowlog"
    path.write_text("1000\t6\t10.0.0.1\t1\t192.0.2.1\t80\t100\teth0\tunknown\n1001\t6\t10.0")
    fl, d = flowlog.FlowLog(str(path)), Drains()
    fl.write(d.next())
    assert read_lines(path) == ["1000\t6\t10.0.0.1\t1\t192.0.2.1\t80\t100\teth0\tunknown"] + d.all


def test_a_file_of_only_a_partial_line_is_emptied(tmp_path):
    path = tmp_path / "flowlog"
    path.write_text("x" * 70000)                 # longer than one backwards read
    fl, d = flowlog.FlowLog(str(path)), Drains()
    fl.write(d.next())
    assert read_lines(path) == d.all


def test_a_failed_write_leaves_no_part_of_the_block_and_keeps_the_lines(tmp_path, monkeypatch):
    path = tmp_path / "flowlog"
    fl, d = flowlog.FlowLog(str(path)), Drains()
    fl.write(d.next())
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(flowlog.os, "write", half_then_full)
    assert fl.write(d.next()) == 0
    monkeypatch.setattr(flowlog.os, "write", real_write)
    assert read_lines(path) == d.all[:3]                 # cut back to the last block
    assert fl.status()["errors"] == 1 and "No space" in fl.status()["last_error"]
    assert fl.queued == 3
    fl.write(d.next())                                   # retried first, in order
    assert read_lines(path) == d.all


def test_an_unopenable_path_queues_until_it_can_be_written(tmp_path):
    path = tmp_path / "later" / "flowlog"
    fl, d = flowlog.FlowLog(str(path)), Drains()
    assert fl.write(d.next()) == 0
    assert fl.queued == 3 and fl.errors == 1
    (tmp_path / "later").mkdir()
    assert fl.write(d.next()) == 6
    assert read_lines(path) == d.all


def test_close_writes_what_a_pause_held(tmp_path):
    path = tmp_path / "flowlog"
    fl, d = flowlog.FlowLog(str(path), fsync=True), Drains()
    fl.write(d.next())
    fl.pause()
    fl.write(d.next())
    assert fl.close() == 3
    assert read_lines(path) == d.all
