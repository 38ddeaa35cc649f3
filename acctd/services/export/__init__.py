"""NetFlow v5, v9 and IPFIX export of the drained flows (NeTAMS `monitor to
netflow`): `records` (the flow cache and its timeouts), one encoder module
per format (`netflow_v5`, `netflow_v9`, `ipfix`, over `templated` and
`messages`), `transport` (UDP, IPFIX over TCP), `service` (the [[export]]
tables at work)."""

from acctd.services.export.service import ExportService, ExportSettings

__all__ = ["ExportService", "ExportSettings"]
