"""NetFlow v9 (RFC 3954): a 20-byte header whose sequence number counts
messages, flowsets padded to 4 bytes, flow start and end as sysUptime
milliseconds (FIRST_SWITCHED, LAST_SWITCHED), the options scope "System"
holding the source id (the observation domain)."""

from __future__ import annotations

import struct

import numpy as np

from acctd.services.export.messages import Now, uptime_ms
from acctd.services.export.templated import (OPTION_FIELDS, OPTIONS_TEMPLATE, TemplateEncoder,
                                             option_pairs, padded)

HEADER = np.dtype([("version", ">u2"), ("count", ">u2"), ("sys_uptime", ">u4"),
                   ("unix_secs", ">u4"), ("sequence", ">u4"), ("source_id", ">u4")])
SCOPE_SYSTEM = 1


class V9Encoder(TemplateEncoder):
    format = "v9"
    header = HEADER
    time_fields = ((22, "start", ">u4"), (21, "end", ">u4"))
    pad_sets = True

    def fill_times(self, rows, rec, now):
        rows["start"], rows["end"] = uptime_ms(rec["start_ns"]), uptime_ms(rec["end_ns"])

    def fill_header(self, hdr, counts, lengths, now):
        hdr["version"], hdr["count"], hdr["sys_uptime"] = 9, counts, now.uptime_ms_at_second
        hdr["unix_secs"], hdr["source_id"] = now.wall_ns // 10**9, self.domain

    def sequence_steps(self, counts):
        return np.ones_like(counts)     # messages

    def template_message(self, now: Now) -> bytes:
        tmpl = b"".join(t.record() for t in self.flow_templates.values())
        opt = struct.pack(">HHH", OPTIONS_TEMPLATE, 4, 4 * len(OPTION_FIELDS)) + \
            struct.pack(">HH", SCOPE_SYSTEM, 4) + option_pairs(OPTION_FIELDS)
        sets = [(0, tmpl), (1, opt), (OPTIONS_TEMPLATE, self.options_values(">u4"))]
        body = b"".join(struct.pack(">HH", sid, 4 + len(padded(b, True))) + padded(b, True)
                        for sid, b in sets)
        head = struct.pack(">HHIIII", 9, len(self.flow_templates) + 2, now.uptime_ms_at_second,
                           now.wall_ns // 10**9, self.sequence, self.domain)
        self.sequence = (self.sequence + 1) & 0xFFFF_FFFF
        return head + body
