"""The CoA/Disconnect receiver (acctd.aaa.coa) against FreeRADIUS's
radclient: the receiver runs in-process on a free loopback port with a
recording handler, radclient sends real requests, and each gets the
outcome the module's table documents. A request that must get no reply is
sent once (`-r 1 -t 1`) and radclient reports "No reply" after a second;
the server's per-reason counters say which row refused it.

radclient signs CoA and Disconnect requests itself and adds a
Message-Authenticator where the input lists one (as 0x00); it verifies
the replies' Response Authenticator and Message-Authenticator and prints
nothing for a reply that fails them, so a printed reply is a valid one. An
unlisted source is radclient's own: `Packet-Src-IP-Address = 127.0.0.2`
binds its socket to that second loopback address.
"""

from __future__ import annotations

import re
import select
import socket
import subprocess
import threading
import time

import pytest

from acctd.aaa import coa as rc

pytestmark = pytest.mark.peers

SECRET = "coa test secret / 5176"
NAS_IP = "192.0.2.1"


class Recorder:
    """The handler: alice and bob have sessions, nobody else."""

    def __init__(self):
        self.calls: list[tuple] = []

    def disconnect(self, ident):
        self.calls.append(("disconnect", ident))
        return ident.get("User-Name") in ("alice", "bob")

    def coa(self, ident, rate_in, rate_out):
        self.calls.append(("coa", ident, rate_in, rate_out))
        return ident.get("User-Name") in ("alice", "bob")


@pytest.fixture
def coa(tmp_path):
    secret = tmp_path / "coa.secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    settings = rc.CoaSettings.from_mapping({
        "listen": "127.0.0.1:0", "nas-ip": NAS_IP,
        "clients": [{"address": "127.0.0.1", "secret-file": "coa.secret"}]}, base=tmp_path)
    server = rc.CoaServer(settings, Recorder())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def send(radclient: str, port: int, command: str, attrs: str, *, secret: str = SECRET,
         tries: int = 1) -> tuple[str | None, dict[str, str], str]:
    """radclient -x: (reply code name or None, reply attributes, its output)."""
    r = subprocess.run([radclient, "-x", "-r", str(tries), "-t", "1", f"127.0.0.1:{port}",
                        command, secret], input=attrs, text=True, capture_output=True,
                       timeout=20)
    out = r.stdout + r.stderr
    m = re.search(r"^Received (\S+) Id \d+ .*\n((?:\t.*\n)*)", out, re.M)
    if m is None:
        assert "No reply from server" in out, out
        return None, {}, out
    attrs_out = dict(line.strip().split(" = ", 1) for line in m.group(2).splitlines())
    return m.group(1), attrs_out, out


def request(*lines: str, stamp: float | None = None, ma: bool = True) -> str:
    """radclient input: the lines, an Event-Timestamp (now unless given) and
    a Message-Authenticator (radclient computes it)."""
    out = list(lines) + [f"Event-Timestamp = {int(time.time() if stamp is None else stamp)}"]
    if ma:
        out.append("Message-Authenticator = 0x00")
    return "\n".join(out) + "\n"


ALICE = ('User-Name = "alice"', 'Acct-Session-Id = "0000000765920080"',
         "Framed-IP-Address = 10.0.0.5", f"NAS-IP-Address = {NAS_IP}")


def test_disconnect_is_acked_and_the_handler_called_once(radclient, coa):
    code, attrs, out = send(radclient, coa.address[1], "disconnect", request(*ALICE))
    assert code == "Disconnect-ACK", out
    assert "Message-Authenticator" in attrs and "Error-Cause" not in attrs
    assert [c[0] for c in coa.receiver.handler.calls] == ["disconnect"]
    ident = coa.receiver.handler.calls[0][1]
    assert {k: str(v) for k, v in ident.items()} == {
        "User-Name": "alice", "Acct-Session-Id": "0000000765920080",
        "Framed-IP-Address": "10.0.0.5"}


class LossyRelay:
    """A UDP relay between radclient and the receiver that loses the first
    reply: radclient then retransmits the same request, as over a lossy
    link. It keeps every request and reply it saw."""

    def __init__(self, upstream: tuple[str, int], drop_replies: int = 1):
        self.upstream, self.drop = upstream, drop_replies
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind(("127.0.0.1", 0))
        self.requests: list[bytes] = []
        self.replies: list[bytes] = []
        self._stop = False
        self._client = None
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    @property
    def port(self) -> int:
        return self.front.getsockname()[1]

    def _run(self):
        while not self._stop:
            ready, _, _ = select.select([self.front, self.back], [], [], 0.1)
            if self.front in ready:
                data, self._client = self.front.recvfrom(4096)
                self.requests.append(data)
                self.back.sendto(data, self.upstream)
            if self.back in ready:
                data = self.back.recv(4096)
                self.replies.append(data)
                if self.drop:
                    self.drop -= 1
                else:
                    self.front.sendto(data, self._client)

    def close(self):
        self._stop = True
        self._t.join(2)
        self.front.close()
        self.back.close()


def test_a_retransmission_gets_the_same_reply_and_no_second_disconnect(radclient, coa):
    relay = LossyRelay(coa.address)
    try:
        code, _, out = send(radclient, relay.port, "disconnect", request(*ALICE), tries=2)
    finally:
        relay.close()
    assert code == "Disconnect-ACK", out
    # radclient's retransmission is the same datagram; the receiver answered
    # both alike and ended the session once
    assert len(relay.requests) == 2 and relay.requests[0] == relay.requests[1]
    assert len(relay.replies) == 2 and relay.replies[0] == relay.replies[1]
    assert len(coa.receiver.handler.calls) == 1
    assert coa.stats == {"ack": 1, "retransmission": 1}

    # the same datagram from another port is a replay: no reply
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        s.sendto(relay.requests[0], coa.address)
        with pytest.raises(socket.timeout):
            s.recv(4096)
    assert coa.stats["replay"] == 1
    assert len(coa.receiver.handler.calls) == 1


# Requests are built when the test runs (lambda): their Event-Timestamp is "now".
@pytest.mark.parametrize("attrs, secret, reason", [
    (lambda: request(*ALICE), "not the secret", "bad-authenticator"),
    (lambda: request(*ALICE, ma=False), SECRET, "no-message-authenticator"),
    (lambda: request(*ALICE, stamp=time.time() - 3600), SECRET, "stale-event-timestamp"),
    (lambda: request(*ALICE, "Packet-Src-IP-Address = 127.0.0.2"), SECRET, "unlisted-source"),
], ids=["wrong secret", "no Message-Authenticator", "Event-Timestamp an hour old",
        "unlisted source 127.0.0.2"])
def test_refused_requests_get_no_reply(radclient, coa, attrs, secret, reason):
    code, _, out = send(radclient, coa.address[1], "disconnect", attrs(), secret=secret)
    assert code is None, out
    assert coa.stats == {reason: 1}
    assert coa.receiver.handler.calls == []


def test_coa_with_wispr_rates_is_acked_and_the_handler_gets_them(radclient, coa):
    code, attrs, out = send(radclient, coa.address[1], "coa", request(
        'User-Name = "bob"', "WISPr-Bandwidth-Max-Down = 10000000",
        "WISPr-Bandwidth-Max-Up = 2000000"))
    assert code == "CoA-ACK", out
    # Max-Down is towards the subscriber: acctd's "in"
    assert coa.receiver.handler.calls == [("coa", {"User-Name": "bob"}, 10_000_000, 2_000_000)]


def test_coa_with_a_mikrotik_rate_limit_reads_rx_as_the_upload(radclient, coa):
    code, _, out = send(radclient, coa.address[1], "coa", request(
        'User-Name = "bob"', 'Mikrotik-Rate-Limit = "512k/4M"'))
    assert code == "CoA-ACK", out
    assert coa.receiver.handler.calls == [("coa", {"User-Name": "bob"}, 4_000_000, 512_000)]


@pytest.mark.parametrize("command, attrs, nak, cause", [
    ("disconnect", ('User-Name = "mallory"',), "Disconnect-NAK", "Session-Context-Not-Found"),
    ("coa", ('User-Name = "mallory"', "WISPr-Bandwidth-Max-Down = 1000000"), "CoA-NAK",
     "Session-Context-Not-Found"),
    ("coa", ('User-Name = "bob"',), "CoA-NAK", "Missing-Attribute"),
    ("disconnect", ('User-Name = "bob"', 'NAS-Identifier = "bras-7"'), "Disconnect-NAK",
     "NAS-Identification-Mismatch"),
], ids=["disconnect unknown session", "coa unknown session", "coa without a rate",
        "another NAS-Identifier"])
def test_requests_acctd_cannot_carry_out_are_naked(radclient, coa, command, attrs, nak, cause):
    code, reply, out = send(radclient, coa.address[1], command, request(*attrs))
    assert (code, reply.get("Error-Cause")) == (nak, cause), out
    assert "Message-Authenticator" in reply
    assert coa.stats == {cause: 1}
