"""One mechanism for every settings table: a frozen dataclass whose fields
declare their TOML key, their check and their default (`setting`), read from
a TOML table by `Table.from_mapping`.

Unknown keys are mistakes (a typo must not silently do nothing). Every
mistake is an `Invalid` carrying the key it is about, so the loader points
at that key's own line; nobody guesses the key from a message. A check is a
function (value, Context) -> the typed value, raising Invalid (or
ValueError) with what was expected; rules across fields go in the table's
`finish()`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import os
import re
import zoneinfo
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TypeAlias, TypeVar

# What TOML can hold: tables carried as data (the importer's [billing]) are this.
TomlValue: TypeAlias = (str | int | float | bool | dt.datetime | dt.date | dt.time
                        | tuple["TomlValue", ...] | Mapping[str, "TomlValue"])


class Invalid(ValueError):
    """A settings mistake: `reason` says what was expected, `key` where. A
    check of one value may name a place inside it ("[2]", ".address"): the
    table puts its key in front ("clients[2].address")."""

    def __init__(self, reason: str, key: str | None = None):
        self.reason, self.key = reason, key
        super().__init__(f"{key}: {reason}" if key else reason)


def top_key(key: str | None) -> str | None:
    """The table's own key a nested key is under ("clients[2].address": clients)."""
    return re.split(r"[\[.]", key, maxsplit=1)[0] if key else None


@dataclasses.dataclass(frozen=True)
class Context:
    """What checks may need besides the value: relative paths are relative
    to the config file's directory; `given` are the keys as the table wrote
    them (a rule across fields names the spelling the user chose)."""
    base_dir: str = "."
    given: frozenset[str] = frozenset()
    aliases: Mapping[str, tuple[str, ...]] = dataclasses.field(
        default_factory=lambda: MappingProxyType({}))

    def spelled(self, key: str) -> str:
        return next((k for k in (key, *self.aliases.get(key, ())) if k in self.given), key)


Check = Callable[[object, Context], object]
T = TypeVar("T", bound="Table")


def setting(default=dataclasses.MISSING, *, check: Check, key: str | None = None,
            aliases: tuple[str, ...] = (), example: str | None = None,
            default_factory=dataclasses.MISSING):
    """A field read from `key` (default: the field name, kebab-cased), or
    one of its `aliases` (other spellings the reference uses), through
    `check`. Without a default the key is required (`example`: a value to
    suggest when it is missing)."""
    required = default is dataclasses.MISSING and default_factory is dataclasses.MISSING
    meta = {"key": key, "check": check, "required": required, "aliases": aliases,
            "example": example}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class Table:
    """Base of settings dataclasses."""

    @classmethod
    def keys(cls) -> dict[str, dataclasses.Field]:
        """key -> field, for every field read from the table."""
        return {f.metadata["key"] or f.name.replace("_", "-"): f
                for f in dataclasses.fields(cls) if "check" in f.metadata}

    @classmethod
    def from_mapping(cls: type[T], doc: Mapping, base: str | os.PathLike = ".") -> T:
        """The table from a TOML mapping; Invalid names the key at fault.
        Relative paths are taken relative to `base` (the config's directory)."""
        if not isinstance(doc, Mapping):
            raise Invalid(f"expected a table, got {type(doc).__name__}")
        fields = cls.keys()
        ctx = Context(os.fspath(base), frozenset(doc),
                      MappingProxyType({k: f.metadata["aliases"] for k, f in fields.items()}))
        spelling = {a: k for k, f in fields.items() for a in f.metadata["aliases"]}
        for key in doc:
            if key not in fields and key not in spelling:
                raise Invalid(f"unknown key; expected one of {', '.join(sorted(fields))}", key)
        kw = {}
        for key, f in fields.items():
            given = [k for k in (key, *f.metadata["aliases"]) if k in doc]
            if len(given) > 1:
                raise Invalid(f"given twice (also as {given[0]})", given[1])
            if not given:
                if f.metadata["required"]:
                    example = f.metadata["example"]
                    raise Invalid("required key is missing" +
                                  (f"; e.g. {key} = {example}" if example else ""), key)
                continue
            try:
                kw[f.name] = f.metadata["check"](doc[given[0]], ctx)
            except Invalid as e:
                inner = e.key and e.key[0] in "[."
                raise Invalid(e.reason, given[0] + e.key if inner else e.key or given[0]) from None
            except ValueError as e:
                raise Invalid(str(e), given[0]) from None
        return cls(**kw).finish(ctx)

    def finish(self: T, ctx: Context) -> T:
        """Rules across fields (raise Invalid(reason, key)) and values derived
        from several; returns the finished table."""
        return self


# --- checks ---------------------------------------------------------------------

def string(what: str = "a string") -> Check:
    def check(v, ctx):
        if not isinstance(v, str) or not v.strip():
            raise Invalid(f"expected {what}, got {v!r}")
        return v.strip()
    return check


def free_text() -> Check:
    """Any string, kept as written (descriptions)."""
    def check(v, ctx):
        if not isinstance(v, str):
            raise Invalid(f"expected a string, got {v!r}")
        return v
    return check


def integer(lo: int | None = None, hi: int | None = None, what: str = "an integer") -> Check:
    def check(v, ctx):
        if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo) \
                or (hi is not None and v > hi):
            bounds = (f" between {lo} and {hi}" if lo is not None and hi is not None else
                      f" >= {lo}" if lo is not None else f" <= {hi}" if hi is not None else "")
            raise Invalid(f"expected {what} (an integer{bounds}), got {v!r}")
        return v
    return check


def number(lo: float | None = None, hi: float | None = None, what: str = "a number",
           open_lo: bool = False) -> Check:
    """A float; `open_lo`: strictly above lo."""
    def check(v, ctx):
        ok = not isinstance(v, bool) and isinstance(v, (int, float))
        if ok and lo is not None:
            ok = v > lo if open_lo else v >= lo
        if ok and hi is not None:
            ok = v <= hi
        if not ok:
            lo_text = "" if lo is None else f" {'above' if open_lo else 'at least'} {lo:g}"
            hi_text = "" if hi is None else f"{' and' if lo is not None else ''} at most {hi:g}"
            raise Invalid(f"expected {what} (a number{lo_text}{hi_text}), got {v!r}")
        return float(v)
    return check


def boolean() -> Check:
    def check(v, ctx):
        if not isinstance(v, bool):
            raise Invalid(f"expected true or false, got {v!r}")
        return v
    return check


def choice(*values: str) -> Check:
    def check(v, ctx):
        if v not in values:
            raise Invalid(f"expected one of {', '.join(values)}, got {v!r}")
        return v
    return check


def strings(what: str = "strings", split: bool = True) -> Check:
    """A list of non-empty strings; with `split`, one string is split on
    whitespace (NeTAMS style: acct-policy = "ip !icmp")."""
    def check(v, ctx):
        if split and isinstance(v, str):
            return tuple(v.split())
        if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
            raise Invalid(f"expected a list of {what}, got {v!r}")
        return tuple(x.strip() for x in v)
    return check


def ip_address(empty: bool = False) -> Check:
    """An IP address written as a string, kept in its canonical text; with
    `empty`, "" too (not set)."""
    def check(v, ctx):
        if empty and v == "":
            return v
        if isinstance(v, str):
            try:
                return str(ipaddress.ip_address(v))
            except ValueError:
                pass
        raise Invalid(f"expected an IP address, got {v!r}")
    return check


def ip_network() -> Check:
    """An address or a prefix (host bits zero) written as a string."""
    def check(v, ctx):
        if isinstance(v, str):
            try:
                return ipaddress.ip_network(v)
            except ValueError:
                pass
        raise Invalid(f"expected an IP address or prefix (host bits zero), got {v!r}")
    return check


def file_path(what: str = "a file path") -> Check:
    """A path, made absolute against the config file's directory."""
    check_str = string(what)

    def check(v, ctx):
        return os.path.join(ctx.base_dir, check_str(v, ctx))
    return check


def secret_file() -> Check:
    """A path to a secret that only its owner may read (the one rule of
    acctd.common.secret_files), checked now so the mistake has a line."""
    as_path = file_path("a path to a file holding the secret")

    def check(v, ctx):
        from acctd.common.secret_files import read_private
        p = as_path(v, ctx)
        try:
            read_private(p, "")
        except ValueError as e:
            raise Invalid(str(e).strip()) from None
        return p
    return check


_DURATION = re.compile(r"^(\d+)\s*([smhdw]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration(hi: int | None = None) -> Check:
    """Seconds, or "90m" / "12h" / "30d" / "2w"; at most `hi` seconds."""
    def check(v, ctx):
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            secs = v
        else:
            m = _DURATION.match(v.strip().lower()) if isinstance(v, str) else None
            if not m:
                raise Invalid("expected seconds or a duration like \"90m\", \"12h\", \"30d\", "
                              f"\"2w\", got {v!r}")
            secs = int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        if hi is not None and secs > hi:
            limit = f"{hi // 86400}d" if hi % 86400 == 0 else f"{hi} s"
            raise Invalid(f"expected a duration of at most {limit}, got {v!r}")
        return secs
    return check


def parsed(parse: Callable[[object], object]) -> Check:
    """A value checked by a parser of the model (parse_bw, normalize_mac ...):
    its ValueError is the reason."""
    def check(v, ctx):
        try:
            return parse(v)
        except ValueError as e:
            raise Invalid(str(e)) from None
    return check


def each(item: Check, what: str = "values") -> Check:
    """A list whose every element passes `item` (a single value is a list of one)."""
    def check(v, ctx):
        items = v if isinstance(v, list) else [v]
        out = []
        for i, x in enumerate(items):
            try:
                out.append(item(x, ctx))
            except Invalid as e:
                if not isinstance(v, list):
                    raise
                raise Invalid(e.reason, f"[{i}]{e.key or ''}") from None
        return tuple(out)
    return check


def tables(cls: type[Table], what: str) -> Check:
    """A list of tables, each a `cls`."""
    def check(v, ctx):
        if not isinstance(v, list) or not v:
            raise Invalid(f"expected a list of {what}, got {v!r}")
        out = []
        for i, x in enumerate(v):
            try:
                out.append(cls.from_mapping(x, ctx.base_dir))
            except Invalid as e:
                raise Invalid(e.reason, f"[{i}]" + (f".{e.key}" if e.key else "")) from None
        return tuple(out)
    return check


def table_of(value: Check, what: str = "a table") -> Check:
    """A TOML table of name = value, each value through `value`."""
    def check(v, ctx):
        if not isinstance(v, Mapping):
            raise Invalid(f"expected {what}, got {v!r}")
        out = {}
        for k, x in v.items():
            try:
                out[str(k)] = value(x, ctx)
            except Invalid as e:
                raise Invalid(e.reason, f".{k}") from None
        return MappingProxyType(out)
    return check


def time_zone(v, ctx) -> str:
    """An IANA time zone name."""
    tz = string("an IANA time zone name")(v, ctx)
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise Invalid(f"expected an IANA time zone like \"Europe/Moscow\", got {tz!r}") from None
    return tz


def numbered(cls: type[Table], what: str) -> Check:
    """A table of N = a `cls` table ([billing.plan.1]): N a whole number."""
    def check(v, ctx):
        if not isinstance(v, Mapping):
            raise Invalid(f"expected a table of {what} by number, got {v!r}")
        out = {}
        for k, x in v.items():
            if not str(k).isdigit():
                raise Invalid(f"expected {what} numbered 1, 2, ..., got {k!r}", f".{k}")
            try:
                out[int(k)] = cls.from_mapping(x, ctx.base_dir)
            except Invalid as e:
                raise Invalid(e.reason, f".{k}" + (f".{e.key}" if e.key else "")) from None
        return MappingProxyType(dict(sorted(out.items())))
    return check


def carried() -> Check:
    """A table carried as data for a later reader (kept read-only)."""
    def check(v, ctx):
        if not isinstance(v, Mapping):
            raise Invalid(f"expected a table, got {v!r}")
        return freeze(v)
    return check


def freeze(v):
    if isinstance(v, Mapping):
        return MappingProxyType({k: freeze(x) for k, x in v.items()})
    if isinstance(v, list):
        return tuple(freeze(x) for x in v)
    return v


