"""The state an encoder keeps for one stream to one collector: its
observation domain, sequence number, counters and when templates are due.
The formats are its subclasses (netflow_v5, templated: v9 and IPFIX)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from acctd.services.export.messages import Now


class Encoder:
    """Records (records.RECORD rows) to the messages of one stream."""

    format: ClassVar[str]

    def __init__(self, domain: int, template_packets: int = 0, template_refresh_s: float = 0):
        self.domain = domain
        self.template_packets = template_packets     # resend every N messages (0: never)
        self.template_refresh_ns = int(template_refresh_s * 1e9)   # and every T (0: never)
        self.sequence = 0        # as the format counts it (flows, messages, data records)
        self.messages = 0        # sent, templates included
        self.records = 0         # flow records sent
        self.skipped = 0         # records the format cannot carry (IPv6 in v5)

    def encode(self, records: np.ndarray, now: Now) -> list[memoryview]:
        raise NotImplementedError

    def templates(self, now: Now) -> list[bytes]:
        """The template message a new connection starts with (none for v5)."""
        return []

    def status(self) -> dict:
        return {"format": self.format, "domain": self.domain, "sequence": self.sequence,
                "messages": self.messages, "records": self.records, "skipped": self.skipped}
