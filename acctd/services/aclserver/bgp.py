"""The BGP back-end: RTBH routes and FlowSpec rules announced by GoBGP.

acctd runs its own gobgpd (Debian's `gobgpd`) as a child, from a config it
writes beside the database, and drives it with the `gobgp` CLI over a unix
socket. GoBGP because it keeps a RIB that commands change one route at a
time (no config reload, unlike BIRD), reads back as JSON (what the speaker
holds, the session's state and the time it came up: the resync's inputs),
and speaks FlowSpec with traffic-rate in the same CLI. The child gets
SIGKILL when acctd dies (PR_SET_PDEATHSIG, through setpriv): the session drops and the
router withdraws every route, so a crashed acctd blocks nobody.

- RTBH: each blocked address as a /32 or /128 with the blackhole community
  (RFC 7999 65535:666 by default) and the configured next hop, which the
  router routes to a discard interface.
- FlowSpec (RFC 8955, 8956): discard for a blocked source (`direction src`)
  or destination (`dst`), and traffic-rate for a unit with `bw`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time

from acctd.services.aclserver.enforcer import Backend, Entry, RouterError

CLI_TIMEOUT = 10.0
START_TIMEOUT = 10.0
ESTABLISHED = 6          # GoBGP's session_state for Established
# util-linux's setpriv sets PR_SET_PDEATHSIG and execs: gobgpd (through
# `ip netns exec`, which execs too) gets SIGKILL when the thread that
# started it ends, with acctd or at close (no preexec_fn in a threaded process)
DIE_WITH_US = ("setpriv", "--pdeathsig", "KILL", "--")


def speaker_config(*, local_as: int, router_id: str, neighbor: str, peer_as: int,
                   port: int, local_address: str | None, multihop: int | None,
                   families: list[str], listen_port: int | None = None) -> str:
    """gobgpd's TOML: it connects out, and listens only on `listen_port`
    (the router may connect too: GoBGP's own first attempt waits seconds)."""
    lines = ["[global.config]", f"  as = {local_as}", f'  router-id = "{router_id}"',
             f"  port = {listen_port or -1}", "", "[[neighbors]]", "  [neighbors.config]",
             f'    neighbor-address = "{neighbor}"', f"    peer-as = {peer_as}",
             "  [neighbors.timers.config]", "    connect-retry = 2",
             "    idle-hold-time-after-reset = 1", "  [neighbors.transport.config]",
             f"    remote-port = {port}"]
    if local_address:
        lines.append(f'    local-address = "{local_address}"')
    if multihop:
        lines += ["  [neighbors.ebgp-multihop.config]", "    enabled = true",
                  f"    multihop-ttl = {multihop}"]
    for f in families:
        lines += ["  [[neighbors.afi-safis]]", "    [neighbors.afi-safis.config]",
                  f'      afi-safi-name = "{f}"']
    return "\n".join(lines) + "\n"


class BgpBackend(Backend):
    kind = "bgp"

    def __init__(self, name: str, state_dir: str, *, neighbor: str, peer_as: int,
                 local_as: int, router_id: str, port: int = 179,
                 local_address: str | None = None, multihop: int | None = None,
                 rtbh: bool = True, flowspec: bool = False, direction: str = "src",
                 community: str = "65535:666", next_hop: str = "192.0.2.1",
                 next_hop6: str = "100::1", max_rules: int | None = None,
                 netns: str | None = None, listen_port: int | None = None):
        super().__init__(name)
        self.neighbor, self.rtbh, self.flowspec = neighbor, rtbh, flowspec
        self.direction, self.community = direction, community
        self.next_hop, self.next_hop6 = next_hop, next_hop6
        self.max_entries = max_rules
        self.netns = netns
        base = os.path.join(state_dir, f"aclserver-{name}")
        self.conf_path, self.sock = base + ".gobgpd.toml", base + ".gobgp.sock"
        self.log_path = base + ".gobgpd.log"
        families = []
        for v in ("ipv4", "ipv6"):
            if rtbh:
                families.append(f"{v}-unicast")
            if flowspec:
                families.append(f"{v}-flowspec")
        self.config_text = speaker_config(local_as=local_as, router_id=router_id,
                                          neighbor=neighbor, peer_as=peer_as, port=port,
                                          local_address=local_address, multihop=multihop,
                                          families=families, listen_port=listen_port)
        self.proc: subprocess.Popen | None = None

    # the speaker

    def connect(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        if self.proc is not None:
            raise_later = f"gobgpd exited with status {self.proc.returncode} (see {self.log_path})"
            self.proc = None
            self._start()
            raise RouterError(raise_later)
        self._start()

    def _start(self) -> None:
        with open(self.conf_path, "w", encoding="utf-8") as f:
            f.write(self.config_text)
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        argv = ["gobgpd", "-f", self.conf_path, "--api-hosts", f"unix://{self.sock}",
                "--log-plain"]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen([*DIE_WITH_US, *argv], stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RouterError(f"gobgpd exited with status {self.proc.returncode} "
                                  f"(see {self.log_path})")
            if os.path.exists(self.sock):
                try:
                    self._cli("global")
                    return
                except RouterError:
                    pass
            time.sleep(0.05)
        raise RouterError(f"gobgpd did not answer within {START_TIMEOUT:g} s")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def _cli(self, *args: str) -> str:
        try:
            p = subprocess.run(["gobgp", "--target", f"unix://{self.sock}", *args],
                               capture_output=True, text=True, timeout=CLI_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise RouterError(f"gobgp {' '.join(args)}: no answer in {CLI_TIMEOUT:g} s") from None
        if p.returncode != 0:
            raise RouterError(f"gobgp {' '.join(args)}: {(p.stderr or p.stdout).strip()[:300]}")
        return p.stdout

    # the contract

    def rate(self, entry: Entry) -> float | None:
        """The FlowSpec traffic-rate of a unit's bw, bytes/s: the limit of
        the traffic the rule matches (direction src: from the unit, its
        `out`; dst: to it, its `in`)."""
        bits = entry.bw[1 if self.direction == "src" else 0]
        return float(bits // 8) if bits else None

    def wants(self, entry: Entry) -> bool:
        return entry.bw is None or self.flowspec and self.rate(entry) is not None

    def action(self, entry: Entry):
        return "block" if entry.bw is None else ("rate", self.rate(entry))

    @staticmethod
    def _family(address: str) -> str:
        return "ipv6" if ipaddress.ip_network(address).version == 6 else "ipv4"

    def _match(self, address: str) -> list[str]:
        return ["match", "source" if self.direction == "src" else "destination", address]

    def apply(self, entry: Entry) -> None:
        a, fam = entry.address, self._family(entry.address)
        if entry.bw is None and self.rtbh:
            hop = self.next_hop6 if fam == "ipv6" else self.next_hop
            self._cli("global", "rib", "-a", fam, "add", a, "nexthop", hop,
                      "community", self.community)
        elif self.rtbh:  # a rate limit where a block was
            self._cli("global", "rib", "-a", fam, "del", a)
        if self.flowspec:
            then = ["then", "discard"] if entry.bw is None else \
                ["then", "rate-limit", f"{self.rate(entry):.0f}"]
            self._cli("global", "rib", "-a", f"{fam}-flowspec", "add", *self._match(a), *then)

    def withdraw(self, address: str) -> None:
        fam = self._family(address)
        if self.rtbh:
            self._cli("global", "rib", "-a", fam, "del", address)
        if self.flowspec:
            self._cli("global", "rib", "-a", f"{fam}-flowspec", "del", *self._match(address))

    def held(self) -> dict[str, object]:
        """What the speaker announces: per address, "block" when every part
        of a block is there (the route, the discard rule), ("rate", r) for a
        rate rule alone, else "partial" (re-applied at the resync)."""
        routes, rules = set(), {}
        want_type = 2 if self.direction == "src" else 1
        for fam in ("ipv4", "ipv6"):
            if self.rtbh:
                for pfx, paths in self._rib(fam).items():
                    if any(self._has_community(p) for p in paths):
                        routes.add(str(ipaddress.ip_network(pfx)))
            if self.flowspec:
                for paths in self._rib(f"{fam}-flowspec").values():
                    for p in paths:
                        parts = p.get("nlri", {}).get("value", [])
                        if len(parts) != 1 or parts[0].get("type") != want_type:
                            continue
                        addr = str(ipaddress.ip_network(parts[0]["value"]["prefix"]))
                        rules[addr] = self._rate(p)
        out: dict[str, object] = {}
        for a in routes | set(rules):
            rate = rules.get(a)     # None: no rule, 0: discard, > 0: bytes/s
            if (not self.rtbh or a in routes) and (not self.flowspec or rate == 0):
                out[a] = "block"
            elif rate and rate > 0 and a not in routes:
                out[a] = ("rate", rate)
            else:
                out[a] = "partial"
        return out

    def _rib(self, family: str) -> dict:
        text = self._cli("global", "rib", "-a", family, "-j").strip()
        return json.loads(text) if text and text != "null" else {}

    def _has_community(self, path: dict) -> bool:
        hi, lo = (int(x) for x in self.community.split(":"))
        want = hi << 16 | lo
        return any(a.get("type") == 8 and want in a.get("communities", [])
                   for a in path.get("attrs", []))

    @staticmethod
    def _rate(path: dict) -> float:
        """The traffic-rate of a FlowSpec path, bytes/s (0: discard)."""
        for a in path.get("attrs", []):
            if a.get("type") == 16:
                for c in a.get("value", []):
                    if c.get("subtype") == 6:
                        return float(c.get("rate", 0))
        return -1.0

    def uptime(self) -> float | None:
        """Seconds the session with the router has been up; RouterError when it is not."""
        text = self._cli("neighbor", self.neighbor, "-j")
        n = json.loads(text)
        state = n.get("state", {}).get("session_state")
        if state != ESTABLISHED:
            raise RouterError(f"BGP session with {self.neighbor} is not established "
                              f"(state {state})")
        since = n.get("timers", {}).get("state", {}).get("uptime", {}).get("seconds")
        return max(0.0, time.time() - since) if since else None
