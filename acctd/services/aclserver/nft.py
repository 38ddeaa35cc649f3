"""The nftables back-end: blocked addresses as elements of a named set on a
Linux router, with a timeout, through libnftables JSON.

The operator owns the table, the set (`flags timeout`, and `interval` for
net units) and the rule that drops what is in it (`ip saddr @acctd_blocked
drop`: the rule says the direction). acctd only adds and removes elements.
Locally (in this namespace) the JSON goes through the libnftables binding;
in another namespace or over SSH it is piped to `nft -j -f -` behind a
command prefix (`ip netns exec R`, `ssh root@router`). Every command is one
JSON batch, applied atomically: a refresh is add, delete, add, so the
timeout starts again, and a withdraw is add then delete, so removing what
is not there is no error.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess

from acctd.services.aclserver.enforcer import Backend, Entry, RouterError

TIMEOUT = 10.0      # seconds a command may take (an SSH connection included)


class NftBackend(Backend):
    kind = "nft"

    def __init__(self, name: str, family: str, table: str, set4: str | None,
                 set6: str | None, command: tuple[str, ...] = (), expiry: float | None = None):
        super().__init__(name)
        self.family, self.table, self.set4, self.set6 = family, table, set4, set6
        self.command = tuple(command)
        self.expiry = expiry
        self._lib = None

    def wants(self, entry: Entry) -> bool:
        v6 = ipaddress.ip_network(entry.address).version == 6
        return entry.bw is None and bool(self.set6 if v6 else self.set4)

    def _run(self, cmds: list[dict]) -> dict:
        doc = json.dumps({"nftables": cmds})
        if not self.command:
            if self._lib is None:
                import nftables  # Debian's python3-nftables: libnftables in this process
                self._lib = nftables.Nftables()
                self._lib.set_json_output(True)
            rc, out, err = self._lib.cmd(doc)
        else:
            try:
                p = subprocess.run([*self.command, "nft", "-j", "-f", "-"], input=doc,
                                   capture_output=True, text=True, timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                raise RouterError(f"nft: no answer within {TIMEOUT:g} s") from None
            rc, out, err = p.returncode, p.stdout, p.stderr
        if rc != 0:
            first = next((ln for ln in err.splitlines() if "Error" in ln), err.strip())
            raise RouterError(f"nft: {first[:300]}")
        return json.loads(out) if out.strip() else {}

    def _set_of(self, address: str) -> str:
        return self.set6 if ipaddress.ip_network(address).version == 6 else self.set4

    @staticmethod
    def _val(address: str):
        net = ipaddress.ip_network(address)
        if net.prefixlen == net.max_prefixlen:
            return str(net.network_address)
        return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}

    def _element(self, verb: str, address: str, timeout: bool) -> dict:
        val = self._val(address)
        elem = {"elem": {"val": val, "timeout": int(self.expiry)}} \
            if timeout and self.expiry else val
        return {verb: {"element": {"family": self.family, "table": self.table,
                                   "name": self._set_of(address), "elem": [elem]}}}

    def apply(self, entry: Entry) -> None:
        a = entry.address
        cmds = [self._element("add", a, True)]
        if self.expiry:  # the timeout starts again
            cmds += [self._element("delete", a, False), self._element("add", a, True)]
        self._run(cmds)

    def withdraw(self, address: str) -> None:
        self._run([self._element("add", address, True), self._element("delete", address, False)])

    def held(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for name in {self.set4, self.set6} - {None}:
            doc = self._run([{"list": {"set": {"family": self.family, "table": self.table,
                                               "name": name}}}])
            for item in doc.get("nftables", []):
                for e in item.get("set", {}).get("elem", []):
                    val = e["elem"]["val"] if isinstance(e, dict) and "elem" in e else e
                    if isinstance(val, dict) and "prefix" in val:
                        val = f"{val['prefix']['addr']}/{val['prefix']['len']}"
                    out[str(ipaddress.ip_network(val))] = "block"
        return out
