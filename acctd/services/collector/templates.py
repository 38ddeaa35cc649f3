"""Templates of NetFlow v9 and IPFIX exporters: each a numpy dtype built
once, so a data set decodes with one np.frombuffer.

Hardened as a flow parser must be (pmacct #934 and #923 took template
lengths off the wire): every field length is checked against its type,
a template's record length against the set it came in, templates are
capped per exporter and observation domain and exporters per store, and
only the field list (not the dtype) is what persists across a restart."""

from __future__ import annotations

import functools
import json
import os
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from acctd.services.collector.records import Malformed

VARLEN = 0xFFFF
MAX_FIELDS = 128          # fields per template; more is refused, not kept
MAX_RECORD = 65535 - 16   # no record is longer than a message

# Information elements acctd reads (v9 and IPFIX share the numbers), with
# the lengths each may have: counters may use reduced-size encoding
# (RFC 7011 §6.2), addresses and ports may not.
UINT = (1, 2, 4, 8)
FIELDS = {
    1: ("bytes", UINT), 2: ("packets", UINT), 85: ("bytes_total", UINT),
    86: ("packets_total", UINT), 4: ("proto", (1,)), 5: ("tos", (1,)),
    6: ("tcp_flags", (1, 2)), 7: ("sport", (2,)), 11: ("dport", (2,)),
    8: ("saddr4", (4,)), 12: ("daddr4", (4,)), 27: ("saddr6", (16,)),
    28: ("daddr6", (16,)), 60: ("ip_ver", (1,)), 32: ("icmp", (2,)), 139: ("icmp6", (2,)),
    21: ("last_up", (4,)), 22: ("first_up", (4,)), 150: ("start_s", (4,)),
    151: ("end_s", (4,)), 152: ("start_ms", (8,)), 153: ("end_ms", (8,)),
    34: ("sampling", UINT), 50: ("sampling_random", UINT), 305: ("packet_interval", UINT),
    306: ("packet_space", UINT),
}
SAMPLING = ("sampling", "sampling_random", "packet_interval")


@dataclass(frozen=True)
class Template:
    """One template: its fields as (id, length, enterprise), and the dtype
    of its records (None when a field has variable length)."""
    tid: int
    fields: tuple[tuple[int, int, int], ...]
    options: bool = False
    scope_count: int = 0

    @functools.cached_property
    def dtype(self) -> np.dtype | None:
        return _dtype(self.fields)

    @property
    def length(self) -> int:
        return sum(n for _, n, _ in self.fields if n != VARLEN)


_dtypes: dict = {}


def _dtype(fields) -> np.dtype | None:
    """The record dtype: known fields by name, the rest as anonymous bytes;
    an unknown enterprise field is skipped this way, never fatal."""
    if fields in _dtypes:
        return _dtypes[fields]
    if any(n == VARLEN for _, n, _ in fields):
        dt = None
    else:
        names, formats, offsets, off = [], [], [], 0
        for ie, n, pen in fields:
            known = FIELDS.get(ie) if pen == 0 else None
            if known and known[0] not in names:
                names.append(known[0])
                formats.append(("u1", (n,)) if known[0] in ("saddr6", "daddr6") else f">u{n}")
                offsets.append(off)
            off += n
        dt = np.dtype({"names": names, "formats": formats, "offsets": offsets,
                       "itemsize": off})
    if len(_dtypes) > 4096:  # a cache, bounded like everything else here
        _dtypes.clear()
    _dtypes[fields] = dt
    return dt


def check_fields(fields) -> None:
    """Every known field's length must be one its type allows."""
    if not fields or len(fields) > MAX_FIELDS:
        raise Malformed(f"template with {len(fields)} fields")
    total = 0
    for ie, n, pen in fields:
        if n == 0:
            raise Malformed(f"template field {ie} of length 0")
        known = FIELDS.get(ie) if pen == 0 else None
        if known and n != VARLEN and n not in known[1]:
            raise Malformed(f"template field {ie} ({known[0]}) of length {n}")
        if known and n == VARLEN:
            raise Malformed(f"template field {ie} ({known[0]}) of variable length")
        if n != VARLEN:
            total += n
    if total > MAX_RECORD:
        raise Malformed(f"template records of {total} bytes")


class Store:
    """Templates by (exporter, observation domain, template id), capped:
    at most `per_domain` templates in a domain, `domains` domains per
    exporter and `exporters` exporters; a template over a cap is refused
    and counted, the ones kept stay valid. Memory is bounded by
    exporters x domains x per_domain x MAX_FIELDS, whatever arrives."""

    def __init__(self, per_domain: int = 256, domains: int = 16, exporters: int = 256):
        self.per_domain, self.domains, self.exporters = per_domain, domains, exporters
        self._t: OrderedDict[str, OrderedDict[int, dict[int, Template]]] = OrderedDict()
        self.sampling: dict[tuple[str, int], int] = {}  # from options data
        self.changed = False

    def get(self, exporter: str, domain: int, tid: int) -> Template | None:
        return self._t.get(exporter, {}).get(domain, {}).get(tid)

    def count(self, exporter: str) -> int:
        return sum(len(d) for d in self._t.get(exporter, {}).values())

    def add(self, exporter: str, domain: int, t: Template) -> bool:
        """Keep a template (a refresh replaces it); False when a cap refused it."""
        doms = self._t.get(exporter)
        if doms is None:
            if len(self._t) >= self.exporters:
                return False
            doms = self._t[exporter] = OrderedDict()
        dom = doms.get(domain)
        if dom is None:
            if len(doms) >= self.domains:
                return False
            dom = doms[domain] = {}
        if t.tid not in dom and len(dom) >= self.per_domain:
            return False
        if dom.get(t.tid) != t:
            dom[t.tid] = t
            self.changed = True
        return True

    def withdraw(self, exporter: str, domain: int, tid: int | None) -> None:
        """IPFIX withdrawal: one template, or (tid None) all of the set's kind."""
        dom = self._t.get(exporter, {}).get(domain)
        if dom is None:
            return
        if tid is None:
            dom.clear()
        else:
            dom.pop(tid, None)
        self.changed = True

    # -- across restarts: the field lists, in a file of the state directory ----------

    def save(self, path: str) -> None:
        data = {"templates": [[e, d, t.tid, [list(f) for f in t.fields], t.options, t.scope_count]
                              for e, doms in self._t.items() for d, dom in doms.items()
                              for t in dom.values()],
                "sampling": [[e, d, r] for (e, d), r in self.sampling.items()]}
        tmp = f"{path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self.changed = False

    def load(self, path: str) -> int:
        """Templates saved by an earlier run; a damaged file is ignored (the
        exporters resend their templates) and the count of kept ones returned."""
        try:
            with open(path) as f:
                data = json.load(f)
            for e, d, tid, fields, options, scope in data["templates"]:
                fields = tuple((int(a), int(b), int(c)) for a, b, c in fields)
                check_fields(fields)
                self.add(str(e), int(d), Template(int(tid), fields, bool(options), int(scope)))
            for e, d, r in data.get("sampling", ()):
                self.sampling[(str(e), int(d))] = int(r)
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, TypeError, KeyError, Malformed):
            self._t.clear()
            return 0
        self.changed = False
        return sum(self.count(e) for e in self._t)
