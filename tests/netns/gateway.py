"""What the tests that run a Daemon on the testbed's gateway share: its
interfaces as config (and the head of a config with a database), a unit's
all-traffic totals, and acctd as a real process (for kill -9)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys

BIN = os.path.dirname(sys.executable)

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


class Process:
    """acctd --config CONFIG on the gateway, as a real process."""

    def __init__(self, topo, tmp, config: str, tag: str = "p"):
        self.cfg, self.sock = tmp / "acctd.toml", str(tmp / "acctd.sock")
        self.cfg.write_text(config)
        pin = f"/sys/fs/bpf/acctd-{tag}-{os.getpid()}-{random.randrange(1 << 30)}"
        self.base = ["--pin-root", pin, "--netns", topo.ns["gw"]]
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [f"{BIN}/acctd", "--config", str(self.cfg), "--socket", self.sock, "--flows", "4096",
             "--addrs", "256", *self.base],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline(), self.proc.stderr.read()

    def ctl(self, *args: str):
        r = subprocess.run([f"{BIN}/acctctl", "--socket", self.sock, *self.base, *args],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout) if "--json" in args else r.stdout

    def kill(self, sig: int = signal.SIGKILL) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(60)

    def close(self) -> None:
        """Stopped if it runs, and the hooks detached."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(20)
        subprocess.run([f"{BIN}/acctctl", *self.base, "detach"], capture_output=True, timeout=60)
