"""What the tests that run a Daemon in-process on the testbed's gateway
share: its interfaces as config (and the head of a config with a database),
and a unit's all-traffic totals."""

from __future__ import annotations

# lan1 and lan2 face sub1 and sub2, wan0 faces srv; TC hooks count exactly
# whatever the offloads (see topology.py).
HOOKS = """
[[interface]]
name = "lan1"
role = "lan"
hook = "tc"
[[interface]]
name = "lan2"
role = "lan"
hook = "tc"
[[interface]]
name = "wan0"
role = "wan"
hook = "tc"
"""

# A config's head with the database at "{db}": drains only when a test asks
# (lookup-delay 300), every unit counted under the policy "ip".
STORED = HOOKS + """
[processor]
lookup-delay = 300
default-acct-policy = ["ip"]
[storage]
path = "{db}\""""


def all_traffic(d, unit: str) -> dict:
    """{"in"/"out": (packets, bytes)} of the unit's month, all traffic."""
    from acctd.store.queries import report_list
    rows = report_list(d.storage, d.snapshot, unit, d.clock())["policies"]
    return {r["dir"]: (r["month"]["packets"], r["month"]["bytes"])
            for r in rows if r["policy"] == "(all)"}
