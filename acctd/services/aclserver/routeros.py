"""The RouterOS back-end: blocked addresses as entries of a firewall
address list, with a timeout, through the RouterOS API (the binary
protocol on TCP 8728, or 8729 with TLS).

The protocol: a sentence is a run of words, each a length (1 to 5 bytes,
more leading one bits for longer) and its bytes, ended by an empty word.
Replies are `!re` (one row), `!done`, `!trap` (an error, then `!done`) and
`!fatal` (the router closes). Login is `/login =name= =password=` (RouterOS
6.43 and later). acctd's entries carry the comment "acctd" so a resync only
ever removes what acctd added.
"""

from __future__ import annotations

import re
import socket
import ssl

from acctd.services.aclserver.enforcer import Backend, Entry, RouterError

TIMEOUT = 10.0
MAX_WORD = 1 << 20        # a reply word longer than this is not a router talking
MAX_REPLY = 100_000       # rows of one reply
COMMENT = "acctd"


def encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    if n < 0x4000:
        return (n | 0x8000).to_bytes(2, "big")
    if n < 0x200000:
        return (n | 0xC00000).to_bytes(3, "big")
    if n < 0x10000000:
        return (n | 0xE0000000).to_bytes(4, "big")
    return b"\xf0" + n.to_bytes(4, "big")


def encode_sentence(words) -> bytes:
    out = bytearray()
    for w in words:
        b = w.encode("utf-8")
        out += encode_length(len(b)) + b
    return bytes(out + b"\x00")


def duration_text(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


_UPTIME = re.compile(r"(\d+)([wdhms])")
_UPTIME_S = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_uptime(text: str) -> float | None:
    """RouterOS "1w2d3h4m5s" -> seconds."""
    parts = _UPTIME.findall(text or "")
    return float(sum(int(n) * _UPTIME_S[u] for n, u in parts)) if parts else None


class Connection:
    """One API session: send a sentence, read the reply's sentences."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""
        self.done: dict[str, str] = {}

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RouterError("RouterOS API: the router closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _length(self) -> int:
        b = self._read(1)[0]
        if b < 0x80:
            return b
        if b < 0xC0:
            return int.from_bytes(bytes([b & 0x3F]) + self._read(1), "big")
        if b < 0xE0:
            return int.from_bytes(bytes([b & 0x1F]) + self._read(2), "big")
        if b < 0xF0:
            return int.from_bytes(bytes([b & 0x0F]) + self._read(3), "big")
        if b == 0xF0:
            return int.from_bytes(self._read(4), "big")
        raise RouterError(f"RouterOS API: bad length byte 0x{b:02x}")

    def sentence(self) -> list[str]:
        words = []
        while True:
            n = self._length()
            if n == 0:
                return words
            if n > MAX_WORD:
                raise RouterError(f"RouterOS API: a word of {n} bytes")
            words.append(self._read(n).decode("utf-8", "replace"))

    def talk(self, *words: str) -> list[dict[str, str]]:
        """Run one command: its rows (!re), and in `done` the attributes of
        its !done (=ret= of an add); RouterError on !trap or !fatal."""
        self.sock.sendall(encode_sentence(words))
        rows, trap = [], None
        while True:
            s = self.sentence()
            if not s:
                continue
            attrs = dict(w[1:].split("=", 1) for w in s[1:] if w.startswith("=") and "=" in w[1:])
            if s[0] == "!re":
                if len(rows) >= MAX_REPLY:
                    raise RouterError("RouterOS API: reply too long")
                rows.append(attrs)
            elif s[0] == "!trap":
                trap = attrs.get("message", "error")
            elif s[0] == "!fatal":
                raise RouterError(f"RouterOS API: fatal: {' '.join(s[1:])}")
            elif s[0] == "!done":
                self.done = attrs
                if trap is not None:
                    raise RouterError(f"RouterOS {words[0]}: {trap}")
                return rows


class RouterOsBackend(Backend):
    kind = "routeros"

    def __init__(self, name: str, host: str, port: int, user: str, password: str,
                 address_list: str, tls: bool = False, expiry: float | None = None):
        super().__init__(name)
        self.host, self.port, self.user, self.password = host, port, user, password
        self.list, self.tls, self.expiry = address_list, tls, expiry
        self.conn: Connection | None = None
        self.ids: dict[str, str] = {}       # address -> .id of acctd's entry

    def connect(self) -> None:
        if self.conn is not None:
            return
        try:
            sock = socket.create_connection((self.host, self.port), TIMEOUT)
            sock.settimeout(TIMEOUT)
            if self.tls:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        except OSError as e:
            raise RouterError(f"RouterOS {self.host}:{self.port}: {e.strerror or e}") from None
        conn = Connection(sock)
        try:
            conn.talk("/login", f"=name={self.user}", f"=password={self.password}")
        except (RouterError, OSError):
            sock.close()
            raise
        self.conn = conn

    def _talk(self, *words: str) -> list[dict[str, str]]:
        self.connect()
        try:
            return self.conn.talk(*words)
        except OSError as e:
            self.close()
            raise RouterError(f"RouterOS {self.host}:{self.port}: {e}") from None
        except RouterError as e:
            if "closed" in str(e) or "fatal" in str(e):
                self.close()
            raise

    @staticmethod
    def _addr(address: str) -> str:
        """RouterOS writes a host without /32."""
        return address.removesuffix("/32").removesuffix("/128")

    def apply(self, entry: Entry) -> None:
        timeout = [f"=timeout={duration_text(self.expiry)}"] if self.expiry else []
        known = self.ids.get(entry.address)
        if known is not None:
            try:
                self._talk("/ip/firewall/address-list/set", f"=.id={known}", *timeout)
                return
            except RouterError as e:
                if "no such item" not in str(e):
                    raise
        try:
            self._talk("/ip/firewall/address-list/add", f"=list={self.list}",
                       f"=address={self._addr(entry.address)}", *timeout,
                       f"=comment={COMMENT} {entry.reason}".rstrip())
        except RouterError as e:
            if "already have such entry" not in str(e):
                raise
            return   # there already: the next resync learns its .id
        ret = self.conn.done.get("ret") if self.conn else None
        if ret:
            self.ids[entry.address] = ret

    def withdraw(self, address: str) -> None:
        known = self.ids.pop(address, None)
        if known is None:
            return
        try:
            self._talk("/ip/firewall/address-list/remove", f"=.id={known}")
        except RouterError as e:
            if "no such item" not in str(e):
                raise

    def held(self) -> dict[str, object]:
        rows = self._talk("/ip/firewall/address-list/print", f"?list={self.list}")
        self.ids = {}
        for r in rows:
            if not r.get("comment", "").startswith(COMMENT) or "address" not in r:
                continue
            a = r["address"]
            a = a if "/" in a else a + ("/128" if ":" in a else "/32")
            self.ids[a] = r.get(".id", "")
        return {a: "block" for a in self.ids}

    def uptime(self) -> float | None:
        rows = self._talk("/system/resource/print", "=.proplist=uptime")
        return parse_uptime(rows[0].get("uptime", "")) if rows else None

    def wants(self, entry: Entry) -> bool:
        return entry.bw is None

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.sock.close()
            finally:
                self.conn = None
