"""Record management-interface transcripts from a real OpenVPN server, for the
unit tests' replays (tests/openvpn/transcripts/*.json).

    sudo .venv/bin/python -m tests.openvpn.capture [OUTDIR]

Each transcript is {"openvpn": version line, "steps": [{"send": command} |
{"recv": text exactly as received, CRLFs included}, ...]}. The commands are
the ones a management client following the protocol sends; they are typed
here by hand, not by acctd, so the replays test acctd against OpenVPN rather
than against itself. Also records the environment OpenVPN gives
client-connect/client-disconnect scripts (hook_env.json).
"""
from __future__ import annotations

import json
import queue
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import rig

HERE = Path(__file__).parent / "transcripts"


class Recorder:
    """A management client that records everything, line by line."""

    def __init__(self, sock: socket.socket):
        self.s = sock
        self.steps: list[dict] = []
        self.lines: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        pending = b""
        while True:
            try:
                data = self.s.recv(65536)
            except OSError:
                data = b""
            with self.lock:
                if not data:
                    self.lines.put(None)
                    return
                text = data.decode()
                if self.steps and "recv" in self.steps[-1]:
                    self.steps[-1]["recv"] += text
                else:
                    self.steps.append({"recv": text})
            pending += data
            if pending == b"ENTER PASSWORD:":
                self.lines.put("ENTER PASSWORD:")
                pending = b""
                continue
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self.lines.put(line.decode().rstrip("\r"))

    def send(self, cmd: str):
        with self.lock:
            self.steps.append({"send": cmd})
        self.s.sendall(cmd.encode() + b"\n")

    def wait(self, pattern: str, timeout: float = 20.0) -> str:
        end = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.01, end - time.monotonic()))
            if line is None:
                raise EOFError(pattern)
            if line.startswith(pattern):
                return line

    def status(self) -> list[str]:
        """`status 3`: the CLIENT_LIST rows."""
        self.send("status 3")
        rows = []
        while (line := self.wait("")) != "END":
            if line.startswith("CLIENT_LIST"):
                rows.append(line)
        return rows

    def settle(self, seconds: float):
        time.sleep(seconds)

    def dump(self, path: Path, version: str):
        with self.lock:
            path.write_text(json.dumps({"openvpn": version, "steps": self.steps}, indent=1) + "\n")


def connect(pair: rig.Pair, server: rig.Server, mgmt: str) -> socket.socket:
    if mgmt == "unix":
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(server.sock))
        return s
    with pair.inside(pair.server):
        return socket.create_connection(("127.0.0.1", rig.MGMT_PORT))


def ids(line: str) -> list[str]:
    """">CLIENT:CONNECT,0,1" -> ["0", "1"]"""
    return line.split(":", 1)[1].split(",")[1:]


def plain(pair: rig.Pair, d: Path, out: Path, version: str):
    """TCP with a password; no client auth: ESTABLISHED, bytecount, status 3,
    the client leaving (no >CLIENT:DISCONNECT without client auth: the
    client is gone from `status 3` once the server's delayed exit, 5 s, has
    run), a script dump of the hook environment."""
    srv = rig.Server(pair, d, "tcp", password="s3cret", script=rig.env_dump_script(d)).start()
    r = Recorder(connect(pair, srv, "tcp"))
    r.wait("ENTER PASSWORD:")
    r.send("s3cret")
    r.wait(">INFO:")
    r.send("bytecount 1")
    r.wait("SUCCESS:")
    r.status()
    cli = rig.Client(pair, d, "alice").start()
    r.wait(">CLIENT:ESTABLISHED")
    r.wait(">CLIENT:ENV,END")
    pair.run(pair.client, "ping", "-c", "3", "-i", "0.3", "-q", rig.SERVER_TUN,
             capture_output=True)
    r.settle(1.2)
    r.status()
    r.send("status 2")
    r.wait("END")
    cli.stop()
    for _ in range(20):
        r.settle(1.0)
        if not r.status():
            break
    else:
        raise TimeoutError("alice still listed 20 s after leaving")
    r.settle(0.3)
    r.dump(out / "plain.json", version)
    env = {kind: rig.read_env(d, kind) for kind in ("client-connect", "client-disconnect")}
    keep = ("script_type", "common_name", "username", "ifconfig_pool_remote_ip",
            "ifconfig_pool_remote_ip6", "trusted_ip", "trusted_port", "untrusted_ip",
            "bytes_sent", "bytes_received", "time_unix", "time_duration", "time_ascii",
            "ifconfig_pool_netmask", "dev", "verb")
    env = {k: {n: v for n, v in e.items() if n in keep} for k, e in env.items()}
    (out / "hook_env.json").write_text(json.dumps({"openvpn": version, **env}, indent=1) + "\n")
    srv.stop()


def client_auth(pair: rig.Pair, d: Path, out: Path, version: str):
    """Unix socket, --management-client-auth: CONNECT answered with
    client-auth-nt, then client-kill, the reconnect (its CONNECT comes before
    the old instance's DISCONNECT) denied with client-deny."""
    srv = rig.Server(pair, d, "unix", client_auth=True).start()
    r = Recorder(connect(pair, srv, "unix"))
    r.wait(">INFO:")
    r.send("bytecount 2")
    r.wait("SUCCESS:")
    cli = rig.Client(pair, d, "alice").start(wait=False)
    cid, kid = ids(r.wait(">CLIENT:CONNECT,"))
    r.wait(">CLIENT:ENV,END")
    r.send(f"client-auth-nt {cid} {kid}")
    r.wait(">CLIENT:ESTABLISHED")
    r.wait(">CLIENT:ENV,END")
    cli.wait_up()
    pair.run(pair.client, "ping", "-c", "3", "-i", "0.5", "-q", rig.SERVER_TUN,
             capture_output=True)
    r.send(f"client-kill {cid}")
    cid2, kid2 = ids(r.wait(">CLIENT:CONNECT,"))
    r.wait(">CLIENT:ENV,END")
    r.status()      # the new instance is listed without a VPN address until auth
    r.send(f'client-deny {cid2} {kid2} "blocked by acctd" "access blocked"')
    r.wait(f">CLIENT:DISCONNECT,{cid}")
    r.wait(">CLIENT:ENV,END")
    r.wait(f">CLIENT:DISCONNECT,{cid2}")
    r.wait(">CLIENT:ENV,END")
    r.settle(0.3)
    r.dump(out / "client_auth.json", version)
    cli.proc.wait(5)
    srv.stop()


def hold(pair: rig.Pair, d: Path, out: Path, version: str):
    """--management-hold: the server waits for `hold release`; and a wrong password."""
    pw = "s3cret"
    srv = rig.Server(pair, d, "tcp", password=pw, hold=True).start(ready=False)
    r = Recorder(connect(pair, srv, "tcp"))
    r.wait("ENTER PASSWORD:")
    r.send("wrong")
    r.wait("ENTER PASSWORD:")
    r.send(pw)
    r.wait(">HOLD:")
    r.send("bytecount 5")
    r.wait("SUCCESS:")
    r.send("hold release")
    r.wait("SUCCESS:")
    rig.wait_log(srv.log, rig.READY, proc=srv.proc)
    r.status()
    r.settle(0.3)
    r.dump(out / "hold.json", version)
    srv.stop()


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else HERE
    out.mkdir(parents=True, exist_ok=True)
    why = rig.have_openvpn()
    if why:
        print(why, file=sys.stderr)
        return 1
    version = rig.sh("openvpn", "--version", check=False).splitlines()[0]
    rig.remove_stale()
    for scenario in (plain, client_auth, hold):
        with tempfile.TemporaryDirectory() as tmp, rig.Pair() as pair:
            d = rig.make_pki(Path(tmp))
            scenario(pair, d, out, version)
            print(f"{scenario.__name__}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
