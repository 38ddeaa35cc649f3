"""What NetFlow v9 and IPFIX share: flows described by templates (one for
IPv4 flows, one for IPv6), an options template with the exporter's
statistics and its sampling (none: every packet is counted), and the
template message resent on a timer and every N messages.

A template is a list of (information element, field name, numpy type);
the record dtype is built from it, big-endian and packed, so one template
is one dtype and a batch of flows is filled column by column."""

from __future__ import annotations

import dataclasses
import functools
import struct
from typing import ClassVar

import numpy as np

from acctd.services.export.encoder import Encoder
from acctd.services.export.messages import MESSAGE_MAX, Now, cut, interfaces, layout, ports

V4_TEMPLATE, V6_TEMPLATE, OPTIONS_TEMPLATE = 256, 257, 258


@dataclasses.dataclass(frozen=True)
class Template:
    id: int
    fields: tuple[tuple[int, str, str], ...]    # (element id, name, numpy type)

    @functools.cached_property
    def dtype(self) -> np.dtype:
        return np.dtype([(name, t) for _, name, t in self.fields])

    def record(self) -> bytes:
        """The template record: id, field count, (element id, length) pairs."""
        dt = self.dtype
        out = struct.pack(">HH", self.id, len(self.fields))
        for ie, name, _ in self.fields:
            out += struct.pack(">HH", ie, dt.fields[name][0].itemsize)
        return out


def flow_fields(times: tuple[tuple[int, str, str], ...], v6: bool) -> tuple:
    """A flow template's fields; ICMP type and code go in both the
    destination port and icmpTypeCode (collectors read one or the other),
    the outer VLAN in both vlanId and dot1qVlanId, and the inner one of an
    802.1ad flow in dot1qCustomerVlanId (0: none)."""
    addr = (("saddr", 27, "16u1"), ("daddr", 28, "16u1")) if v6 else \
        (("saddr", 8, "4u1"), ("daddr", 12, "4u1"))
    return ((1, "octets", ">u8"), (2, "packets", ">u8"), *times,
            *((ie, name, t) for name, ie, t in addr),
            (10, "in_if", ">u4"), (14, "out_if", ">u4"), (7, "sport", ">u2"),
            (11, "dport", ">u2"), (4, "proto", "u1"), (5, "tos", "u1"),
            (6, "tcp_flags", "u1"), (61, "direction", "u1"), (58, "vlan", ">u2"),
            (243, "dot1q_vlan", ">u2"), (245, "customer_vlan", ">u2"),
            (139 if v6 else 32, "icmp", ">u2"))


# The options record: scope (filled by the format), messages and flow
# records exported so far, sampling interval 1 (none) and algorithm 0.
OPTION_FIELDS = ((41, "messages", ">u8"), (42, "records", ">u8"),
                 (34, "sampling_interval", ">u4"), (35, "sampling_algorithm", "u1"))


class TemplateEncoder(Encoder):
    header: ClassVar[np.dtype]
    time_fields: ClassVar[tuple]          # the flow's start and end
    pad_sets: ClassVar[bool]              # v9 pads sets to 4 bytes

    def __init__(self, domain: int, template_packets: int = 0, template_refresh_s: float = 0):
        super().__init__(domain, template_packets, template_refresh_s)
        self.flow_templates = {
            4: Template(V4_TEMPLATE, flow_fields(self.time_fields, False)),
            6: Template(V6_TEMPLATE, flow_fields(self.time_fields, True))}
        self._since_template = 0            # data messages since the last template message
        self._template_ns: int | None = None  # when it was sent

    # -- the format's parts ------------------------------------------------------
    def fill_times(self, rows: np.ndarray, rec: np.ndarray, now: Now) -> None:
        raise NotImplementedError

    def fill_header(self, hdr: np.ndarray, counts: np.ndarray, lengths: np.ndarray,
                    now: Now) -> None:
        raise NotImplementedError

    def template_message(self, now: Now) -> bytes:
        raise NotImplementedError

    def sequence_steps(self, counts: np.ndarray) -> np.ndarray:
        """How far each data message (of `counts` records) moves the sequence."""
        raise NotImplementedError

    # -- encoding ------------------------------------------------------------------
    def encode(self, records: np.ndarray, now: Now) -> list[memoryview]:
        """Data messages (each one set: IPv4 or IPv6 flows), with the template
        message put in front when due and then every template_packets
        messages; sequence numbers set column-wise, Python only per template."""
        out: list[memoryview] = []
        for ver, template in self.flow_templates.items():
            rec = records[records["key"]["ip_ver"] == ver]
            if len(rec):
                out += self._encode(template, rec, now)
        return out

    def _encode(self, template: Template, rec: np.ndarray, now: Now) -> list[memoryview]:
        heads, counts, slots, lengths = self._data(template, rec, now)
        m, every = len(counts), self.template_packets
        insert = np.zeros(m, bool)
        if self._template_due(now):
            insert[0::every or m] = True
        elif every:
            insert[every - self._since_template::every] = True
        step = self.sequence_steps(counts)
        # each template message takes one number (v9: a message; IPFIX: its
        # options data record) before the data message it precedes
        seq = self.sequence + np.cumsum(step) - step + np.cumsum(insert)
        heads["sequence"] = seq & 0xFFFF_FFFF
        views = cut(heads, slots, lengths)
        out: list[memoryview] = []
        prev = 0
        for i in np.flatnonzero(insert).tolist():
            out += views[prev:i]
            self.sequence = int(seq[i] - 1) & 0xFFFF_FFFF
            out.append(memoryview(self._templates(now)))
            prev = i
        out += views[prev:]
        self.sequence = int(seq[-1] + step[-1]) & 0xFFFF_FFFF
        last = np.flatnonzero(insert)
        self._since_template = m - int(last[-1]) if len(last) else self._since_template + m
        self.records += len(rec)
        self.messages += m
        return out

    def templates(self, now: Now) -> list[bytes]:
        return [self._templates(now)]

    def _templates(self, now: Now) -> bytes:
        msg = self.template_message(now)
        self._since_template, self._template_ns = 0, now.mono_ns
        self.messages += 1
        return msg

    def _template_due(self, now: Now) -> bool:
        if self._template_ns is None:
            return self.template_packets > 0 or self.template_refresh_ns > 0
        return (0 < self.template_packets <= self._since_template or
                0 < self.template_refresh_ns <= now.mono_ns - self._template_ns)

    def _data(self, template: Template, rec: np.ndarray, now: Now):
        dt = template.dtype
        per = (MESSAGE_MAX - self.header.itemsize - 4) // dt.itemsize
        while self.pad_sets and (per * dt.itemsize) % 4:
            per -= 1
        head = np.dtype([*((n, self.header.fields[n][0]) for n in self.header.names),
                         ("set_id", ">u2"), ("set_len", ">u2")])
        heads, counts, slots = layout(head, dt, len(rec), per)
        rows = slots[:len(rec)]
        rows["octets"], rows["packets"] = rec["bytes"], rec["packets"]
        self.fill_times(rows, rec, now)
        key = rec["key"]
        width = 4 if template.id == V4_TEMPLATE else 16
        rows["saddr"], rows["daddr"] = key["saddr"][:, 16 - width:], key["daddr"][:, 16 - width:]
        rows["in_if"], rows["out_if"], rows["direction"] = interfaces(key)
        rows["sport"], rows["dport"], rows["icmp"] = ports(key)
        rows["proto"], rows["tos"], rows["vlan"] = key["proto"], key["tos"], key["vlan_outer"]
        rows["dot1q_vlan"], rows["customer_vlan"] = key["vlan_outer"], key["vlan_inner"]
        rows["tcp_flags"] = rec["tcp_flags"] & 0xFF
        body = counts * dt.itemsize
        if self.pad_sets:
            body += -body % 4
        heads["set_id"], heads["set_len"] = template.id, 4 + body
        lengths = self.header.itemsize + 4 + body
        self.fill_header(heads, counts, lengths, now)
        return heads, counts, slots, lengths

    def options_values(self, scope_dtype: str) -> bytes:
        """The options data record: this stream's domain and counters."""
        dt = np.dtype([("scope", scope_dtype), *((n, t) for _, n, t in OPTION_FIELDS)])
        row = np.zeros(1, dt)
        row["scope"], row["messages"], row["records"] = self.domain, self.messages, self.records
        row["sampling_interval"], row["sampling_algorithm"] = 1, 0
        return row.tobytes()


def option_pairs(fields) -> bytes:
    return b"".join(struct.pack(">HH", ie, np.dtype(t).itemsize) for ie, _, t in fields)


def padded(body: bytes, pad: bool) -> bytes:
    return body + b"\0" * (-len(body) % 4 if pad else 0)
