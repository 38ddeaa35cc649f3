"""acctctl top: live rates per unit, address, VLAN or port from two counter snapshots.

A pure model (`rates`, `TopState`, `handle_key`, `select`, `build_table`) over
plain snapshot dicts, and two thin edges: `run_live` (rich Live + cbreak keys)
for terminals and `snapshot_once` for pipes. The daemon only has to hand out
cheap snapshots of its monotonic kernel counters; see `rates` for the shape.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from acctctl.common import escape
from acctd.common.display import format_bytes
from acctd.model import units as units_mod

VIEWS = ("units", "addrs", "vlans", "ports")
# Sort keys, in the order `s`/`>` cycle through them.
SORTS = ("rate", "in", "out", "pps_in", "pps_out", "today", "month")
SORT_LABELS = {"rate": "bit/s in+out", "in": "bit/s in", "out": "bit/s out",
               "pps_in": "pkt/s in", "pps_out": "pkt/s out", "today": "today", "month": "month"}
COUNTERS = ("packets_in", "packets_out", "bytes_in", "bytes_out")
UNATTRIBUTED = "(unattributed)"
DEFAULT_ROWS = 20   # title + header + 20 rows + footer = 23 lines: fits 80x24 with the cursor line
MAX_ROWS = 200
# Lines around the rows: title, header, footer.
CHROME_LINES = 3

Snapshot = Mapping[str, object]


# --- rates ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Row:
    """Current rate of one key (a unit name, an address, a VLAN or port label)."""

    key: str
    bits_in: float = 0.0
    bits_out: float = 0.0
    pkts_in: float = 0.0
    pkts_out: float = 0.0
    unit: str | None = None          # addresses: the unit they belong to
    groups: tuple[str, ...] = ()     # units and addresses: every group above the unit


def _section(snap: Snapshot | None, view: str) -> dict[str, Mapping]:
    """A snapshot section as {key: counters}; lists of rows ("addr"/"label"/"name") or
    reader.report()-style dicts are both accepted."""
    sec = (snap or {}).get(view) or {}
    if isinstance(sec, Mapping):
        return {str(k): v for k, v in sec.items()}
    field = {"addrs": "addr", "units": "name"}.get(view, "label")
    return {str(r[field]): r for r in sec}


def _delta(prev: Mapping | None, cur: Mapping) -> list[int]:
    """Counter growth since `prev`, in COUNTERS order.

    Kernel counters only grow, so any counter below its previous value means
    the entry was deleted and re-created (evicted, flushed, datapath reloaded)
    since the previous read. Then, as for an entry that was not there before,
    the current value counts as the growth: all of it happened after the
    previous read. Only the traffic between that read and the deletion is lost.
    """
    c = [int(cur.get(k, 0)) for k in COUNTERS]
    if prev is None:
        return c
    p = [int(prev.get(k, 0)) for k in COUNTERS]
    if any(x < y for x, y in zip(c, p)):
        return c
    return [x - y for x, y in zip(c, p)]


def unit_info(snap: Snapshot | None) -> dict[str, Mapping]:
    return _section(snap, "units")


def groups_of(snap: Snapshot | None) -> tuple[str, ...]:
    """Every group name any unit of the snapshot belongs to, sorted."""
    return tuple(sorted({g for info in unit_info(snap).values() for g in info.get("groups", ())}))


def rates(prev: Snapshot | None, cur: Snapshot,
          unitset: units_mod.UnitSet | None = None) -> dict[str, list[Row]]:
    """Rows per view ("units", "addrs", "vlans", "ports") from two snapshots.

    A snapshot is what the daemon's "rates" request returns:
      {"ts": <monotonic seconds of the read>,
       "addrs": [{"addr": "10.1.0.2", "unit": "alice"?, "packets_in", "packets_out",
                  "bytes_in", "bytes_out"}, ...],
       "vlans": {"100": {counters}, "inner-300": {...}},   # reader.report() shape
       "ports": {"tcp/443": {counters}, "icmp": {...}},
       "units": {"alice": {"groups": ["staff"], "today": {"bytes_in", "bytes_out"},
                           "month": {...}}}}
    Rates are counter growth / elapsed seconds (bits are bytes * 8). With no
    previous snapshot or no time elapsed every rate is 0. Addresses without a
    "unit" are matched with `unitset` when given, else unattributed. Every unit
    in "units" gets a row (0 when idle); unattributed traffic gets one when it moves.
    """
    elapsed = float(cur.get("ts", 0)) - float(prev.get("ts", 0)) if prev is not None else 0.0
    scale = 1.0 / elapsed if elapsed > 0 else 0.0
    info = unit_info(cur)

    def row(key, d, **kw):
        return Row(key, d[2] * 8 * scale, d[3] * 8 * scale, d[0] * scale, d[1] * scale, **kw)

    out: dict[str, list[Row]] = {}
    for view in ("vlans", "ports"):
        before = _section(prev, view)
        out[view] = [row(k, _delta(before.get(k), v)) for k, v in _section(cur, view).items()]

    before = _section(prev, "addrs")
    now = _section(cur, "addrs")
    owners = [v.get("unit") for v in now.values()]
    if unitset is not None and any(o is None for o in owners):
        owners = [o if o is not None else m for o, m in zip(owners, unitset.names_of(list(now)))]
    out["addrs"] = []
    per_unit: dict[str, list[int]] = {name: [0, 0, 0, 0] for name in info}
    for (addr, v), owner in zip(now.items(), owners):
        d = _delta(before.get(addr), v)
        groups = tuple(info.get(owner, {}).get("groups", ())) if owner else ()
        out["addrs"].append(row(addr, d, unit=owner, groups=groups))
        acc = per_unit.setdefault(owner or UNATTRIBUTED, [0, 0, 0, 0])
        for i in range(4):
            acc[i] += d[i]
    unattributed = per_unit.get(UNATTRIBUTED)
    # unattributed traffic gets a row only while it moves
    quiet = unattributed is not None and (scale == 0 or not any(unattributed))
    if quiet and UNATTRIBUTED not in info:
        del per_unit[UNATTRIBUTED]
    out["units"] = [row(name, d, unit=name, groups=tuple(info.get(name, {}).get("groups", ())))
                    for name, d in per_unit.items()]
    return out


def _bytes(v) -> int | None:
    if v is None:
        return None
    if isinstance(v, Mapping):
        return int(v.get("bytes_in", 0)) + int(v.get("bytes_out", 0))
    return int(v)


def totals(snap: Snapshot | None, view: str) -> dict[str, tuple[int | None, int | None]]:
    """{key: (today bytes, month bytes)} in + out, from the daemon's rollups.

    Units carry theirs in "units"; other views only if the snapshot has
    {"totals": {view: {key: {"today": .., "month": ..}}}}; missing ones show "-".
    """
    src = unit_info(snap) if view == "units" else dict((snap or {}).get("totals", {}).get(view, {}))
    return {k: (_bytes(v.get("today")), _bytes(v.get("month"))) for k, v in src.items()}


# --- state and keys ------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TopState:
    view: str = "units"               # one of VIEWS
    sort: str = "rate"                # one of SORTS, always descending
    group: str | None = None          # only units/addresses in this group (units and addrs views)
    groups: tuple[str, ...] = ()      # what `g` cycles through; refreshed from each snapshot
    paused: bool = False              # the display is frozen; counters are still read
    n: int = DEFAULT_ROWS             # rows at most (also limited by the terminal height)
    quit: bool = False

    def __post_init__(self):
        if self.view not in VIEWS:
            raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {self.view!r}")
        if self.sort not in SORTS:
            raise ValueError(f"sort must be one of {', '.join(SORTS)}, got {self.sort!r}")
        if not 1 <= self.n <= MAX_ROWS:
            raise ValueError(f"rows must be between 1 and {MAX_ROWS}, got {self.n}")


_VIEW_KEYS = {"u": "units", "a": "addrs", "v": "vlans", "p": "ports"}


def _cycle(seq, cur, step):
    i = seq.index(cur) if cur in seq else 0   # a vanished group: start from "all"
    return seq[(i + step) % len(seq)]


def handle_key(state: TopState, key: str) -> TopState:
    """The state after one key press; unknown keys change nothing.

    s or >  next sort column      <  previous sort column
    u a v p list units, addresses, VLANs, ports
    g / G   next / previous group filter (then back to all)
    + / -   one row more / fewer  space  pause     q  quit
    """
    rep = dataclasses.replace
    if key in ("s", ">"):
        return rep(state, sort=_cycle(SORTS, state.sort, 1))
    if key == "<":
        return rep(state, sort=_cycle(SORTS, state.sort, -1))
    if key in _VIEW_KEYS:
        return rep(state, view=_VIEW_KEYS[key])
    if key in ("g", "G"):
        return rep(state, group=_cycle((None, *state.groups), state.group, 1 if key == "g" else -1))
    if key == " ":
        return rep(state, paused=not state.paused)
    if key == "+":
        return rep(state, n=min(MAX_ROWS, state.n + 1))
    if key == "-":
        return rep(state, n=max(1, state.n - 1))
    if key in ("q", "Q"):
        return rep(state, quit=True)
    return state


# --- selection and rendering ---------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Line:
    row: Row
    today: int | None
    month: int | None
    share: float | None   # % of the sort column's whole, over every row of the view


def _metric(r: Row, t: tuple[int | None, int | None], sort: str) -> float | None:
    if sort == "rate":
        return r.bits_in + r.bits_out
    if sort in ("today", "month"):
        return t[0] if sort == "today" else t[1]
    return {"in": r.bits_in, "out": r.bits_out, "pps_in": r.pkts_in, "pps_out": r.pkts_out}[sort]


def select(state: TopState, rows, tots: Mapping | None = None,
           n: int | None = None) -> tuple[list[Line], int]:
    """The top rows of the state's view, sorted and filtered, and how many matched.

    `rows` is a list of Row or the dict `rates` returns. The share is taken of
    the whole view before the group filter, so a filtered list shows what its
    members take of everything.
    """
    if isinstance(rows, Mapping):
        rows = rows.get(state.view, [])
    tots = tots or {}
    none = (None, None)
    metrics = [_metric(r, tots.get(r.key, none), state.sort) for r in rows]
    whole = sum(m for m in metrics if m is not None)
    picked = list(zip(rows, metrics))
    if state.group is not None and state.view in ("units", "addrs"):
        picked = [(r, m) for r, m in picked if state.group in r.groups]
    picked.sort(key=lambda rm: (-(rm[1] or 0), rm[0].key))
    matched = len(picked)
    lines = []
    for r, m in picked[: state.n if n is None else n]:
        t = tots.get(r.key, none)
        share = None if m is None else (100.0 * m / whole if whole > 0 else 0.0)
        lines.append(Line(r, t[0], t[1], share))
    return lines, matched


def _si(value: float, unit: str, prefixes=("", "k", "M", "G", "T", "P"), sep=" ") -> str:
    """3 significant digits at most: "0 bit/s", "53.3 bit/s", "12.3 Mbit/s", "123 Mbit/s"."""
    if value == 0:
        return f"0{sep}{unit}".rstrip()
    for i, p in enumerate(prefixes):
        v = value / 1000 ** i
        text = f"{v:.1f}" if v < 99.95 else f"{v:.0f}"
        if float(text) < 1000 or i == len(prefixes) - 1:
            return f"{text}{sep}{p}{unit}".rstrip()
    raise AssertionError("unreachable")


def human_rate(bits: float) -> str:
    return _si(bits, "bit/s")


def human_pps(pkts: float) -> str:
    return _si(pkts, "", sep="")


def human_bytes(n: int | None) -> str:
    """Today's and the month's bytes: the one unit system of acctctl (IEC)."""
    return format_bytes(n)


# (id, header, width of the widest value). Widths are fixed so rows never wrap
# and the layout does not jump between refreshes.
_COLUMNS = (("in", "bit/s in", 11), ("out", "bit/s out", 11),
            ("pps_in", "pps in", 6), ("pps_out", "pps out", 7),
            ("today", "today", 8), ("month", "month", 8), ("share", "%", 5))
# Narrow terminals lose columns in this order (pairs go together).
_DROP = (("pps_in", "pps_out"), ("month",), ("today",), ("share",))
NAME_MIN = 15   # "255.255.255.255"
NAME_HEADERS = {"units": "unit", "addrs": "address", "vlans": "vlan", "ports": "port"}
_SORT_COLUMNS = {"rate": ("in", "out")}

_FOOTERS = ("keys: s/</> sort  u/a/v/p units/addrs/vlans/ports  g group  space pause  q quit",
            "s/</> sort  u a v p list  g group  space pause  q quit",
            "s sort  uavp list  g group  q quit",
            "q quit")


def columns_for(width: int) -> list[tuple[str, str, int]]:
    """The value columns that fit `width` next to a name column of NAME_MIN."""
    cols = list(_COLUMNS)
    drops = list(_DROP)
    # one space between columns, no outer padding
    while drops and sum(w + 1 for _, _, w in cols) + NAME_MIN > width:
        gone = drops.pop(0)
        cols = [c for c in cols if c[0] not in gone]
    return cols


def full_width(keys) -> int:
    """The width that shows every column and the longest of `keys` whole."""
    return max([NAME_MIN, *(len(escape(k)) for k in keys)]) + sum(w + 1 for _, _, w in _COLUMNS)


def _one_line(text: str) -> Text:
    return Text(text, no_wrap=True, overflow="ellipsis")


def build_table(state: TopState, rows, tots: Mapping | None, width: int,
                height: int | None = None) -> Table:
    """The top view as one table exactly `width` wide: title, header, rows, key help.

    With `height`, rows are limited so the whole fits in `height` lines.
    """
    n = state.n if height is None else max(1, min(state.n, height - CHROME_LINES))
    lines, matched = select(state, rows, tots, n)
    cols = columns_for(width)
    name_w = max(1, width - sum(w + 1 for _, _, w in cols))

    title = f"acctd top: {state.view} by {SORT_LABELS[state.sort]}"
    if state.group is not None and state.view in ("units", "addrs"):
        title += f", group {state.group}"
    title += f" ({len(lines)}/{matched})"
    if state.paused:
        title += " [paused]"
    footer = next((f for f in _FOOTERS if len(f) <= width), _FOOTERS[-1])

    table = Table(box=None, padding=(0, 1), collapse_padding=True, pad_edge=False,
                  show_edge=False, title=_one_line(title), title_justify="left",
                  title_style="bold", caption=_one_line(footer), caption_justify="left",
                  caption_style="dim", header_style="bold")
    sorted_cols = _SORT_COLUMNS.get(state.sort, (state.sort,))
    table.add_column(NAME_HEADERS[state.view], width=name_w, no_wrap=True, overflow="ellipsis")
    for cid, header, w in cols:
        table.add_column(header, width=w, justify="right", no_wrap=True, overflow="ellipsis",
                         header_style="bold reverse" if cid in sorted_cols else "bold")
    for ln in lines:
        r = ln.row
        cells = {"in": human_rate(r.bits_in), "out": human_rate(r.bits_out),
                 "pps_in": human_pps(r.pkts_in), "pps_out": human_pps(r.pkts_out),
                 "today": human_bytes(ln.today), "month": human_bytes(ln.month),
                 "share": "-" if ln.share is None else f"{ln.share:.1f}"}
        table.add_row(Text(escape(r.key)), *(cells[cid] for cid, _, _ in cols))  # not markup
    return table


def as_json(state: TopState, rows, tots: Mapping | None = None) -> list[dict]:
    """The selected rows as plain dicts, for `acctctl top --json`."""
    lines, _ = select(state, rows, tots)
    return [{"key": ln.row.key, "unit": ln.row.unit, "bits_in": ln.row.bits_in,
             "bits_out": ln.row.bits_out, "pkts_in": ln.row.pkts_in, "pkts_out": ln.row.pkts_out,
             "today": ln.today, "month": ln.month, "share": ln.share} for ln in lines]


# --- edges ---------------------------------------------------------------------

KeyReader = Callable[[float], "str | None"]


@contextlib.contextmanager
def stdin_keys(stream=None) -> Iterator[KeyReader]:
    """A key reader: keys(timeout) -> the keys typed, or None once timeout passed.

    On a TTY the terminal is put in cbreak mode (keys arrive unbuffered and
    unechoed; Ctrl-C still interrupts) and restored on exit; otherwise it only waits.
    """
    stream = sys.stdin if stream is None else stream
    try:
        fd = stream.fileno()
        tty_in = os.isatty(fd)
    except (AttributeError, OSError, ValueError):
        tty_in = False
    if not tty_in:
        def wait(timeout: float) -> None:
            time.sleep(timeout)
            return None
        yield wait
        return
    import select as select_mod
    import termios
    import tty
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        def read(timeout: float) -> str | None:
            ready, _, _ = select_mod.select([fd], [], [], timeout)
            if not ready:
                return None
            data = os.read(fd, 32).decode(errors="ignore")
            return data or "q"   # end of input: nothing more will come
        yield read
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run_live(fetch: Callable[[], Snapshot], console: Console, refresh: float = 1.0,
             keys: KeyReader | None = None, state: TopState | None = None,
             unitset: units_mod.UnitSet | None = None,
             clock: Callable[[], float] = time.monotonic) -> TopState:
    """Redraw the top view every `refresh` seconds (at most 1) until `q` or Ctrl-C.

    `fetch` returns a snapshot (see `rates`); `keys` reads keys (see
    `stdin_keys`, the default). While paused the counters are still read, so
    the first rates after resuming cover one interval, not the whole pause.
    Returns the final state.
    """
    if not 0 < refresh <= 1.0:
        raise ValueError(f"refresh must be above 0 and at most 1 second, got {refresh}")
    state = state or TopState()
    prev = fetch()
    shown = (rates(None, prev, unitset), prev)
    state = dataclasses.replace(state, groups=groups_of(prev))

    def render() -> Table:
        return build_table(state, shown[0], totals(shown[1], state.view),
                           console.width, console.height)

    with contextlib.ExitStack() as stack:
        if keys is None:
            keys = stack.enter_context(stdin_keys())
        live = stack.enter_context(Live(render(), console=console, auto_refresh=False,
                                        redirect_stdout=False, redirect_stderr=False))
        deadline = clock() + refresh
        try:
            while not state.quit:
                pressed = keys(max(0.0, deadline - clock()))
                if pressed and not pressed.startswith("\x1b"):   # arrows and friends: ignored
                    for key in pressed:
                        state = handle_key(state, key)
                    live.update(render(), refresh=True)
                if state.quit:
                    break
                if pressed is None or clock() >= deadline:
                    cur = fetch()
                    r = rates(prev, cur, unitset)
                    prev = cur
                    state = dataclasses.replace(state, groups=groups_of(cur))
                    if not state.paused:
                        shown = (r, cur)
                        live.update(render(), refresh=True)
                    deadline = clock() + refresh
        except KeyboardInterrupt:
            pass
    return state


def snapshot_once(fetch: Callable[[], Snapshot], console: Console, state: TopState | None = None,
                  interval: float = 1.0, unitset: units_mod.UnitSet | None = None,
                  sleep: Callable[[float], None] = time.sleep) -> Table:
    """Print one table and return it: rates over `interval` seconds between two
    fetches, or all 0 from a single fetch when `interval` is 0."""
    state = state or TopState()
    prev = fetch()
    if interval > 0:
        sleep(interval)
        cur = fetch()
        r = rates(prev, cur, unitset)
    else:
        cur, r = prev, rates(None, prev, unitset)
    if not console.is_terminal:  # a pipe: every column, and no name cut
        console.width = max(console.width, full_width(row.key for row in r[state.view]))
    table = build_table(state, r, totals(cur, state.view), console.width)
    console.print(table)
    return table


def top(fetch: Callable[[], Snapshot], console: Console | None = None, *, once: bool = False,
        refresh: float = 1.0, state: TopState | None = None,
        unitset: units_mod.UnitSet | None = None) -> TopState | Table:
    """Live view on a terminal, one snapshot elsewhere (or with `once`)."""
    console = console or Console()
    if once or not console.is_terminal:
        return snapshot_once(fetch, console, state, interval=refresh, unitset=unitset)
    return run_live(fetch, console, refresh=refresh, state=state, unitset=unitset)
