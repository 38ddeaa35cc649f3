"""IPFIX (RFC 7011): a 16-byte header whose sequence number counts the
data records sent before the message (options data records too), flow
start and end as epoch milliseconds (flowStartMilliseconds,
flowEndMilliseconds), the options scope observationDomainId."""

from __future__ import annotations

import struct

import numpy as np

from acctd.services.export.messages import Now
from acctd.services.export.templated import (OPTION_FIELDS, OPTIONS_TEMPLATE, TemplateEncoder,
                                             option_pairs)

HEADER = np.dtype([("version", ">u2"), ("length", ">u2"), ("export_time", ">u4"),
                   ("sequence", ">u4"), ("domain", ">u4")])
OBSERVATION_DOMAIN_ID = 149


class IpfixEncoder(TemplateEncoder):
    format = "ipfix"
    header = HEADER
    time_fields = ((152, "start", ">u8"), (153, "end", ">u8"))
    pad_sets = False

    def fill_times(self, rows, rec, now):
        rows["start"], rows["end"] = now.epoch_ms(rec["start_ns"]), now.epoch_ms(rec["end_ns"])

    def fill_header(self, hdr, counts, lengths, now):
        hdr["version"], hdr["length"] = 10, lengths
        hdr["export_time"], hdr["domain"] = now.wall_ns // 10**9, self.domain

    def sequence_steps(self, counts):
        return counts                   # data records

    def template_message(self, now: Now) -> bytes:
        tmpl = b"".join(t.record() for t in self.flow_templates.values())
        opt = struct.pack(">HHH", OPTIONS_TEMPLATE, 1 + len(OPTION_FIELDS), 1) + \
            struct.pack(">HH", OBSERVATION_DOMAIN_ID, 4) + option_pairs(OPTION_FIELDS)
        sets = [(2, tmpl), (3, opt), (OPTIONS_TEMPLATE, self.options_values(">u4"))]
        body = b"".join(struct.pack(">HH", sid, 4 + len(b)) + b for sid, b in sets)
        head = struct.pack(">HHIII", 10, 16 + len(body), now.wall_ns // 10**9, self.sequence,
                           self.domain)
        self.sequence = (self.sequence + 1) & 0xFFFF_FFFF   # the options data record counts (RFC 7011 3.1)
        return head + body
