"""NetFlow v9 (RFC 3954) and IPFIX (RFC 7011): sets of templates, options
templates and data, walked set by set; the records of a data set are one
np.frombuffer with the template's dtype.

Every length is checked against the set and the message it sits in; a
template that lies about its fields is refused (the packet counts as
malformed); data for a template not (yet) known is skipped and counted."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from acctd.services.collector.records import RECORD, Malformed, empty, put_v4
from acctd.services.collector.templates import SAMPLING, VARLEN, Store, Template, check_fields

V9_HEADER = struct.Struct(">HHIIII")    # version, count, uptime ms, unix secs, sequence, source id
IPFIX_HEADER = struct.Struct(">HHIII")  # version, length, export secs, sequence, domain
SET = struct.Struct(">HH")
V9_SCOPE = 0xFFFFFFFF   # as the enterprise of v9 scope fields: never a known field


@dataclass
class Result:
    records: np.ndarray
    sequence: int = 0
    unknown_template: int = 0     # data records skipped: no template for them yet
    refused_templates: int = 0    # over a cap
    skipped_varlen: int = 0       # data sets of templates with variable-length fields
    templates: list = field(default_factory=list)
    domain: int = 0               # observation domain (v9: source id)
    data_records: int = 0         # data records of known templates (IPFIX's sequence counts them)


def decode_v9(data: bytes, exporter: str, store: Store) -> Result:
    if len(data) < V9_HEADER.size:
        raise Malformed("v9: shorter than its header")
    version, _count, uptime, secs, seq, domain = V9_HEADER.unpack_from(data)
    if version != 9:
        raise Malformed("v9: bad version")
    clock = (secs * 1000 - uptime, secs)
    return _sets(data, V9_HEADER.size, len(data), exporter, domain, store, clock, seq, ipfix=False)


def decode_ipfix(data: bytes, exporter: str, store: Store) -> Result:
    if len(data) < IPFIX_HEADER.size:
        raise Malformed("ipfix: shorter than its header")
    version, length, secs, seq, domain = IPFIX_HEADER.unpack_from(data)
    if version != 10 or not IPFIX_HEADER.size <= length <= len(data):
        raise Malformed(f"ipfix: bad version or message length {length}")
    return _sets(data, IPFIX_HEADER.size, length, exporter, domain, store, (None, secs), seq,
                 ipfix=True)


def _sets(data, pos, end, exporter, domain, store: Store, clock, seq, ipfix: bool) -> Result:
    res = Result(empty(), seq, domain=domain)
    parts = []
    tmpl_id, opts_id = (2, 3) if ipfix else (0, 1)
    while pos < end:
        if end - pos < SET.size:
            if ipfix:
                raise Malformed("set header cut short")
            break  # v9 allows padding at the end of a packet
        sid, slen = SET.unpack_from(data, pos)
        if slen < SET.size or pos + slen > end:
            raise Malformed(f"set {sid} of length {slen} past the message")
        body, bend = pos + SET.size, pos + slen
        if sid == tmpl_id or sid == opts_id:
            _templates(data, body, bend, exporter, domain, store, res, sid == opts_id, ipfix)
        elif sid >= 256:
            t = store.get(exporter, domain, sid)
            if t is None:
                res.unknown_template += 1
            elif t.dtype is None:
                res.skipped_varlen += 1
            else:
                n = (bend - body) // t.dtype.itemsize  # the rest is padding
                res.data_records += n
                recs = np.frombuffer(data, t.dtype, n, body)
                if t.options:
                    _sampling(recs, exporter, domain, store)
                elif n:
                    parts.append(_records(recs, clock, store.sampling.get((exporter, domain), 1)))
        elif ipfix or sid > 1:
            raise Malformed(f"reserved set id {sid}")
        pos = bend
    if parts:
        res.records = np.concatenate(parts)
    return res


def _templates(data, pos, end, exporter, domain, store, res, options, ipfix) -> None:
    """Template records of one set, each checked before it is kept."""
    while end - pos >= 4:
        if options and not ipfix:  # v9: template id, scope length, option length (bytes)
            if end - pos < 6:
                raise Malformed("v9 options template cut short")
            tid, scope_len, opt_len = struct.unpack_from(">HHH", data, pos)
            pos += 6
            if scope_len % 4 or opt_len % 4:
                raise Malformed("v9 options template lengths not in fields")
            count, scope = (scope_len + opt_len) // 4, scope_len // 4
        else:
            tid, count = struct.unpack_from(">HH", data, pos)
            pos += 4
            scope = 0
            if options:
                if end - pos < 2:
                    raise Malformed("options template cut short")
                scope = struct.unpack_from(">H", data, pos)[0]
                pos += 2
        if tid < 256:
            if ipfix and count == 0 and tid in (2, 3):  # withdraw all of this kind
                store.withdraw(exporter, domain, None)
                continue
            raise Malformed(f"template id {tid}")
        if count == 0:
            if ipfix:
                store.withdraw(exporter, domain, tid)
                continue
            raise Malformed("template with no fields")
        if scope > count:
            raise Malformed("options template scope larger than its fields")
        fields = []
        for i in range(count):
            if end - pos < 4:
                raise Malformed(f"template {tid} past its set")
            ie, n = struct.unpack_from(">HH", data, pos)
            pos += 4
            # v9 scope types (system, interface, line card, cache, template)
            # are a numbering of their own: kept apart from the data fields
            pen = V9_SCOPE if options and not ipfix and i < scope else 0
            if ipfix and ie & 0x8000:  # an enterprise field: skipped by its length
                if end - pos < 4:
                    raise Malformed(f"template {tid} past its set")
                pen = struct.unpack_from(">I", data, pos)[0]
                ie &= 0x7FFF
                pos += 4
            if n == VARLEN and not ipfix:
                raise Malformed("v9 has no variable-length fields")
            fields.append((ie, n, pen))
        fields = tuple(fields)
        check_fields(fields)
        t = Template(tid, fields, options, scope)
        if store.add(exporter, domain, t):
            res.templates.append(tid)
        else:
            res.refused_templates += 1


def _sampling(recs: np.ndarray, exporter, domain, store: Store) -> None:
    """Options data carrying the sampling interval: the domain's rate."""
    for name in SAMPLING:
        if name in recs.dtype.names and len(recs):
            rate = int(recs[name][-1])
            store.sampling[(exporter, domain)] = max(rate, 1)
            store.changed = True
            return


def _records(recs: np.ndarray, clock, sampling: int) -> np.ndarray:
    names = recs.dtype.names
    out = np.zeros(len(recs), RECORD)
    v6 = "saddr6" in names and "daddr6" in names
    if "saddr4" in names and "daddr4" in names:
        put_v4(out, "saddr", recs["saddr4"])
        put_v4(out, "daddr", recs["daddr4"])
        out["ip_ver"] = 4
    elif v6:
        out["saddr"] = recs["saddr6"]
        out["daddr"] = recs["daddr6"]
        out["ip_ver"] = 6
    else:
        return empty()  # no addresses: not a flow acctd can attribute
    if v6 and "saddr4" in names and "ip_ver" in names:  # a template with both families
        six = recs["ip_ver"] == 6
        out["saddr"][six] = recs["saddr6"][six]
        out["daddr"][six] = recs["daddr6"][six]
        out["ip_ver"][six] = 6
    for dst, srcs in (("bytes", ("bytes", "bytes_total")),
                      ("packets", ("packets", "packets_total"))):
        for s in srcs:
            if s in names:
                out[dst] = recs[s]
                break
    for k in ("proto", "tos", "sport", "dport"):
        if k in names:
            out[k] = recs[k]
    if "tcp_flags" in names:
        out["tcp_flags"] = recs["tcp_flags"] & 0xFF
    icmp = "icmp6" if "icmp6" in names else "icmp" if "icmp" in names else None
    if icmp and "proto" in names:  # type and code in place of the ports, as the kernel does
        ic = np.isin(out["proto"], (1, 58)) & (out["dport"] == 0)
        out["sport"][ic] = recs[icmp][ic] >> 8
        out["dport"][ic] = recs[icmp][ic] & 0xFF
    boot_ms, secs = clock
    if "start_ms" in names:
        out["first_ms"] = recs["start_ms"]
        out["last_ms"] = recs["end_ms"] if "end_ms" in names else recs["start_ms"]
    elif "start_s" in names:
        out["first_ms"] = recs["start_s"].astype(np.uint64) * 1000
        out["last_ms"] = (recs["end_s"] if "end_s" in names else recs["start_s"]).astype(
            np.uint64) * 1000
    elif boot_ms is not None and "first_up" in names and "last_up" in names:
        out["first_ms"] = boot_ms + recs["first_up"].astype(np.int64)
        out["last_ms"] = boot_ms + recs["last_up"].astype(np.int64)
    else:
        out["first_ms"] = out["last_ms"] = secs * 1000
    rate = recs["sampling"] if "sampling" in names else sampling
    out["sampling"] = np.maximum(rate, 1)
    return out
