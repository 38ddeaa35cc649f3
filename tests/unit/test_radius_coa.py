"""The CoA/Disconnect receiver without sockets (acctd.aaa.coa): every
row of the module's outcome table over packets built with acctd.aaa.radius
(and two that FreeRADIUS's radclient built), the replies' signatures, the
replay cache over a fake clock, Mikrotik-Rate-Limit, and the [coa]
settings. The receiver against the real radclient is in tests/radius."""

import dataclasses
import hashlib
import hmac
import ipaddress
import logging
import socket
import struct

import pytest

from acctd.aaa import radius, coa as rc

SECRET = b"coa secret / 5176"
NOW = 1_700_000_000
DISC, COA = radius.DISCONNECT_REQUEST, radius.COA_REQUEST
SRC = ("127.0.0.1", 40000)

# Sent by FreeRADIUS 3.2.1's radclient (secret xyzzy5461, Event-Timestamp
# 1700000000), captured off a UDP socket: an independent implementation's
# Request Authenticator, Message-Authenticator and VSA encoding.
RADCLIENT_SECRET = b"xyzzy5461"
# User-Name alice, Acct-Session-Id 0000000765920080, Framed-IP-Address
# 10.0.0.5, NAS-IP-Address 192.0.2.1, WISPr-Bandwidth-Max-Down 2000000,
# WISPr-Bandwidth-Max-Up 1000000, Mikrotik-Rate-Limit "1M/2M"
RADCLIENT_COA = bytes.fromhex(
    "2b8e007674f16d990de30e965a5cd64098244b530107616c6963652c12303030303030303736353932303038"
    "3008060a0000050406c000020137066553f100501223e7bbb73a7ad14ab967265b5c9beb161a0c0000372a08"
    "06001e84801a0c0000372a0706000f42401a0d00003a8c0807314d2f324d")
# Acct-Session-Id 0000000765920080, NAS-Identifier acctd-test, Proxy-State 0x71, 0x72
RADCLIENT_DISCONNECT = bytes.fromhex(
    "280400509324f3f8b0720b5642291d3d127b2b0a2c1230303030303030373635393230303830200c61636374"
    "642d7465737437066553f10050128ca36b20fc1eac3334ae3b76ab79b2cf210371210372")


class Handler:
    """Records calls; finds a session for any ident without User-Name
    mallory; raises if told to."""

    def __init__(self, fail=False):
        self.fail = fail
        self.calls: list[tuple] = []

    def _found(self, ident):
        if self.fail:
            raise RuntimeError("enforcement is down")
        return ident.get("User-Name") != "mallory"

    def disconnect(self, ident):
        self.calls.append(("disconnect", ident))
        return self._found(ident)

    def coa(self, ident, rate_in, rate_out):
        self.calls.append(("coa", ident, rate_in, rate_out))
        return self._found(ident)


class Clock:
    def __init__(self, t=NOW):
        self.t = t

    def __call__(self):
        return self.t


def secret_file(tmp_path, name="coa.secret", secret=SECRET, mode=0o600):
    p = tmp_path / name
    p.write_bytes(secret + b"\n")
    p.chmod(mode)
    return p


def settings(tmp_path, **kw) -> rc.CoaSettings:
    d = {"listen": "127.0.0.1:3799",
         "clients": [{"address": "127.0.0.0/30", "secret-file": str(secret_file(tmp_path))}],
         "nas-ip": "192.0.2.1", "nas-identifier": "acctd-test"} | kw
    return rc.CoaSettings.from_mapping(d)


@pytest.fixture
def receiver(tmp_path):
    return rc.Receiver(settings(tmp_path), Handler(), Clock())


def vsa(name, value):
    return ("Vendor-Specific", radius.encode_vsa(name, value))


def request(code=DISC, attrs=(("User-Name", "alice"),), *, ident=7, ts=NOW, ma=True,
            secret=SECRET) -> bytes:
    attrs = list(attrs) + ([("Event-Timestamp", ts)] if ts is not None else [])
    return radius.dynamic_request(code, ident, attrs, secret, with_message_authenticator=ma)


def signed(code=DISC, attrs=(("User-Name", "alice"),), *, ts=NOW, ma=True,
           secret=SECRET) -> bytes:
    """What request() builds, but attributes may also be (type, raw octets),
    so values acctd.aaa.radius would refuse to encode go in."""
    enc = [(t, v) if isinstance(t, int) else (radius.attribute(t)[0], radius.encode_value(t, v))
           for t, v in attrs]
    enc = ([(80, bytes(16))] if ma else []) + enc + \
        ([(55, struct.pack("!I", ts))] if ts is not None else [])
    data = radius.encode(radius.Packet(code, 7, bytes(16), enc))
    if ma:   # RFC 5176 §3.4: over the packet with a zero authenticator field
        data = data[:22] + hmac.new(secret, data, hashlib.md5).digest() + data[38:]
    return data[:4] + hashlib.md5(data + secret).digest() + data[20:]


def _wrong_ma():
    # the Message-Authenticator for another secret, the Request Authenticator for ours
    data = signed(secret=b"not the secret")
    return data[:4] + hashlib.md5(data[:4] + bytes(16) + data[20:] + SECRET).digest() + data[20:]


# --- the outcome table, row by row --------------------------------------------------------


ROWS = [
    # (row, description, source, datagram, kind, reason)
    (1, "unlisted source", ("127.0.0.9", 40000), request(), "discard", "unlisted-source"),
    (1, "unlisted IPv6 source", ("::1", 40000), request(), "discard", "unlisted-source"),
    (2, "shorter than a header", SRC, b"\x28\x01\x00\x14", "discard", "malformed"),
    (2, "attribute past the end", SRC, request()[:-3], "discard", "malformed"),
    (3, "an Access-Request", SRC, signed(radius.ACCESS_REQUEST), "discard", "unsupported-code"),
    (3, "a Status-Server", SRC, radius.status_server(7, bytes(16), SECRET), "discard",
     "unsupported-code"),
    (4, "wrong secret", SRC, request(secret=b"wrong"), "discard", "bad-authenticator"),
    (4, "an attribute changed in transit", SRC,
     request()[:-1] + bytes([request()[-1] ^ 1]), "discard", "bad-authenticator"),
    (5, "no Message-Authenticator", SRC, request(ma=False), "discard",
     "no-message-authenticator"),
    (6, "Message-Authenticator for another secret", SRC, _wrong_ma(), "discard",
     "bad-message-authenticator"),
    (6, "two Message-Authenticators", SRC,
     signed(attrs=[("User-Name", "alice"), (80, bytes(16))]), "discard",
     "bad-message-authenticator"),
    (6, "an 8-octet Message-Authenticator", SRC,
     signed(attrs=[("User-Name", "alice"), (80, bytes(8))], ma=False), "discard",
     "bad-message-authenticator"),
    (9, "no Event-Timestamp", SRC, request(ts=None), "discard", "no-event-timestamp"),
    (9, "a 2-octet Event-Timestamp", SRC,
     signed(attrs=[("User-Name", "alice"), (55, b"\x65\x53")], ts=None), "discard",
     "bad-event-timestamp"),
    (9, "two Event-Timestamps", SRC,
     signed(attrs=[("User-Name", "alice"), ("Event-Timestamp", NOW)]), "discard",
     "bad-event-timestamp"),
    (10, "Event-Timestamp 301 s old", SRC, request(ts=NOW - 301), "discard",
     "stale-event-timestamp"),
    (10, "Event-Timestamp 301 s ahead", SRC, request(ts=NOW + 301), "discard",
     "stale-event-timestamp"),
    (12, "NAS-IP-Address not ours", SRC,
     request(attrs=[("User-Name", "alice"), ("NAS-IP-Address", "192.0.2.99")]), "nak",
     "NAS-Identification-Mismatch"),
    (12, "NAS-IPv6-Address not ours", SRC,
     request(attrs=[("User-Name", "alice"), ("NAS-IPv6-Address", "2001:db8::1")]), "nak",
     "NAS-Identification-Mismatch"),
    (12, "NAS-Identifier not ours", SRC,
     request(attrs=[("User-Name", "alice"), ("NAS-Identifier", "bras-7")]), "nak",
     "NAS-Identification-Mismatch"),
    (12, "mismatch wins over an unsupported attribute", SRC,
     request(attrs=[("State", b"x"), ("User-Name", "alice"), ("NAS-Identifier", "bras-7")]),
     "nak", "NAS-Identification-Mismatch"),
    (13, "Service-Type Authorize-Only", SRC,
     request(COA, [("User-Name", "alice"), ("Service-Type", "Authorize-Only"),
                   ("State", b"abc")]), "nak", "Unsupported-Service"),
    (14, "State", SRC, request(attrs=[("User-Name", "alice"), ("State", b"abc")]), "nak",
     "Unsupported-Attribute"),
    (14, "Reply-Message", SRC, request(attrs=[("User-Name", "alice"),
                                             ("Reply-Message", "bye")]),
     "nak", "Unsupported-Attribute"),
    (14, "a rate in a Disconnect-Request", SRC,
     request(attrs=[("User-Name", "alice"), vsa("WISPr-Bandwidth-Max-Down", 10 ** 6)]), "nak",
     "Unsupported-Attribute"),
    (14, "Acct-Terminate-Cause in a CoA-Request", SRC,
     request(COA, [("User-Name", "alice"), vsa("WISPr-Bandwidth-Max-Down", 10 ** 6),
                   ("Acct-Terminate-Cause", "Admin-Reset")]), "nak", "Unsupported-Attribute"),
    (14, "another vendor's VSA", SRC,
     request(COA, [("User-Name", "alice"), vsa("WISPr-Bandwidth-Max-Down", 10 ** 6),
                   ("Vendor-Specific", struct.pack("!IBB", 9, 1, 3) + b"x")]), "nak",
     "Unsupported-Attribute"),
    (14, "a WISPr attribute that is not a rate", SRC,
     request(COA, [("User-Name", "alice"), vsa("WISPr-Bandwidth-Max-Down", 10 ** 6),
                   ("Vendor-Specific", struct.pack("!IBB", 14122, 2, 5) + b"hut")]), "nak",
     "Unsupported-Attribute"),
    (14, "an attribute acctd has no name for", SRC,
     signed(attrs=[("User-Name", "alice"), (89, b"cui")]), "nak", "Unsupported-Attribute"),
    (15, "a 3-octet Framed-IP-Address", SRC,
     signed(attrs=[("User-Name", "alice"), (8, b"\x0a\x00\x00")]), "nak",
     "Invalid-Attribute-Value"),
    (15, "an empty User-Name", SRC, signed(attrs=[(1, b"")]), "nak",
     "Invalid-Attribute-Value"),
    (15, "a 2-octet WISPr rate", SRC,
     request(COA, [("User-Name", "alice"),
                   ("Vendor-Specific", struct.pack("!IBB", 14122, 8, 4) + b"\x01\x02")]),
     "nak", "Invalid-Attribute-Value"),
    (15, "Mikrotik-Rate-Limit with bursts", SRC,
     request(COA, [("User-Name", "alice"), vsa("Mikrotik-Rate-Limit", "1M/2M 2M/4M")]), "nak",
     "Invalid-Attribute-Value"),
    (15, "Mikrotik-Rate-Limit junk", SRC,
     request(COA, [("User-Name", "alice"), vsa("Mikrotik-Rate-Limit", "fast")]), "nak",
     "Invalid-Attribute-Value"),
    (16, "User-Name twice", SRC,
     request(attrs=[("User-Name", "alice"), ("User-Name", "bob")]), "nak", "Invalid-Request"),
    (16, "WISPr-Bandwidth-Max-Down twice", SRC,
     request(COA, [("User-Name", "alice"), vsa("WISPr-Bandwidth-Max-Down", 10 ** 6),
                   vsa("WISPr-Bandwidth-Max-Down", 10 ** 6)]), "nak", "Invalid-Request"),
    (16, "WISPr and Mikrotik disagree", SRC,
     request(COA, [("User-Name", "alice"), vsa("WISPr-Bandwidth-Max-Down", 10 ** 6),
                   vsa("Mikrotik-Rate-Limit", "1M/2M")]), "nak", "Invalid-Request"),
    (17, "no session identification", SRC, request(attrs=[("NAS-Identifier", "acctd-test")]),
     "nak", "Missing-Attribute"),
    (17, "a CoA-Request without a rate", SRC, request(COA), "nak", "Missing-Attribute"),
    (18, "an unknown session", SRC, request(attrs=[("User-Name", "mallory")]), "nak",
     "Session-Context-Not-Found"),
    (18, "a CoA for an unknown session", SRC,
     request(COA, [("User-Name", "mallory"), vsa("WISPr-Bandwidth-Max-Up", 10 ** 6)]), "nak",
     "Session-Context-Not-Found"),
    (20, "Disconnect-Request", SRC, request(), "ack", "ack"),
    (20, "Disconnect-Request from another address of the prefix", ("127.0.0.3", 1), request(),
     "ack", "ack"),
    (20, "from an IPv4-mapped address (a dual-stack socket)", ("::ffff:127.0.0.2", 1),
     request(), "ack", "ack"),
    (20, "Event-Timestamp 300 s old", SRC, request(ts=NOW - 300), "ack", "ack"),
    (20, "NAS identification that is ours (nas-ip, listen, nas-identifier)", SRC,
     request(attrs=[("User-Name", "alice"), ("NAS-IP-Address", "192.0.2.1"),
                    ("NAS-IP-Address", "127.0.0.1"), ("NAS-Identifier", "acctd-test")]),
     "ack", "ack"),
    (20, "Acct-Terminate-Cause in a Disconnect-Request", SRC,
     request(attrs=[("Acct-Session-Id", "0000000765920080"),
                    ("Acct-Terminate-Cause", "Admin-Reset")]), "ack", "ack"),
    (20, "CoA-Request with WISPr rates", SRC,
     request(COA, [("User-Name", "alice"), vsa("WISPr-Bandwidth-Max-Down", 10 ** 7),
                   vsa("WISPr-Bandwidth-Max-Up", 10 ** 6)]), "ack", "ack"),
]


@pytest.mark.parametrize("row, what, source, data, kind, reason",
                         ROWS, ids=[f"row{r[0]:02d}-{r[1]}" for r in ROWS])
def test_outcome_table(receiver, caplog, row, what, source, data, kind, reason):
    caplog.set_level(logging.INFO, "acctd.radius_coa")
    out = receiver.handle(data, source)
    assert (out.kind, out.reason) == (kind, reason), out.detail
    assert receiver.stats == {reason: 1}
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    if kind == "discard":
        assert out.reply is None
        assert receiver.handler.calls == []
        assert len(warnings) == 1 and reason in warnings[0].getMessage()
        return
    assert len(warnings) == (kind != "ack")
    p = radius.verify_response(out.reply, data, SECRET, require_message_authenticator=True)
    code = data[0]
    ack, nak = (code + 1, code + 2)
    assert p.code == (ack if kind == "ack" else nak)
    if kind == "nak":
        assert radius.value_name("Error-Cause", p.get("Error-Cause")) == reason
        assert reason in warnings[0].getMessage()
        assert len(receiver.handler.calls) == (reason in ("Session-Context-Not-Found",))
    else:
        assert p.get("Error-Cause") is None
        assert len(receiver.handler.calls) == 1


def test_the_table_covers_every_row_but_the_ones_tested_on_their_own():
    # 7, 8 (retransmission, replay), 11 (cache full), 19 (handler raises) below
    assert {r[0] for r in ROWS} | {7, 8, 11, 19} == set(range(1, 21))


def test_row07_a_retransmission_gets_the_same_reply_and_no_second_action(receiver, caplog):
    data = request()
    first = receiver.handle(data, SRC)
    again = receiver.handle(data, SRC)
    assert (first.kind, again.kind, again.reason) == ("ack", "resend", "retransmission")
    assert again.reply == first.reply
    assert receiver.handler.calls == [("disconnect", {"User-Name": "alice"})]
    # a NAKed request too: the same NAK, the handler asked once
    nak = request(attrs=[("User-Name", "mallory")], ident=8)
    assert receiver.handle(nak, SRC).reply == receiver.handle(nak, SRC).reply
    assert len(receiver.handler.calls) == 2
    assert receiver.stats == {"ack": 1, "Session-Context-Not-Found": 1, "retransmission": 2}


@pytest.mark.parametrize("source", [("127.0.0.1", 40001), ("127.0.0.2", 40000)],
                         ids=["another port", "another listed address"])
def test_row08_the_same_request_from_elsewhere_is_a_replay(receiver, source):
    data = request()
    assert receiver.handle(data, SRC).kind == "ack"
    out = receiver.handle(data, source)
    assert (out.kind, out.reason, out.reply) == ("discard", "replay", None)
    assert len(receiver.handler.calls) == 1


def test_row08_a_new_identifier_is_a_new_request_not_a_retransmission(receiver):
    assert receiver.handle(request(ident=7), SRC).kind == "ack"
    assert receiver.handle(request(ident=8), SRC).kind == "ack"
    assert len(receiver.handler.calls) == 2


def test_the_cache_lives_as_long_as_the_event_timestamp_is_current(receiver):
    data = request(ts=NOW)
    assert receiver.handle(data, SRC).kind == "ack"
    receiver.clock.t = NOW + 300
    assert receiver.handle(data, SRC).reason == "retransmission"
    receiver.clock.t = NOW + 300.5
    assert receiver.handle(data, SRC).reason == "stale-event-timestamp"
    assert receiver._seen == {}
    assert len(receiver.handler.calls) == 1


def test_without_event_timestamps_replays_are_caught_for_one_window(tmp_path):
    clock = Clock()
    r = rc.Receiver(settings(tmp_path, **{"require-event-timestamp": False,
                                          "event-window": 60}), Handler(), clock)
    data = request(ts=None)
    assert r.handle(data, SRC).kind == "ack"
    assert r.handle(data, ("127.0.0.1", 1)).reason == "replay"
    clock.t += 61
    assert r.handle(data, ("127.0.0.1", 1)).kind == "ack"  # the documented limit
    assert len(r.handler.calls) == 2


def test_row11_a_full_cache_refuses_rather_than_forgets(receiver, monkeypatch, caplog):
    monkeypatch.setattr(rc, "MAX_CACHED", 2)
    for i in range(2):
        assert receiver.handle(request(ident=i), SRC).kind == "ack"
    out = receiver.handle(request(ident=2), SRC)
    assert (out.kind, out.reason) == ("discard", "cache-full")
    assert any(r.levelno == logging.ERROR and "cache full" in r.getMessage()
               for r in caplog.records)
    receiver.clock.t = NOW + 301
    assert receiver.handle(request(ident=3, ts=NOW + 301), SRC).kind == "ack"


def test_row19_a_failing_handler_gets_resources_unavailable(tmp_path, caplog):
    r = rc.Receiver(settings(tmp_path), Handler(fail=True), Clock())
    data = request()
    out = r.handle(data, SRC)
    p = radius.verify_response(out.reply, data, SECRET, require_message_authenticator=True)
    assert (p.code, p.get("Error-Cause")) == (radius.DISCONNECT_NAK, 506)
    assert out.reason == "Resources-Unavailable"
    assert any(r.exc_info and "handler failed" in r.getMessage() for r in caplog.records)


# --- replies -------------------------------------------------------------------------------

def test_replies_sign_with_the_request_authenticator_and_echo_proxy_state(receiver):
    data = request(attrs=[("Proxy-State", b"p1"), ("User-Name", "alice"), ("Proxy-State", b"p2")])
    reply = receiver.handle(data, SRC).reply
    p = radius.decode(reply)
    # RFC 5176 §3.4: the reply's Message-Authenticator over the request's authenticator
    assert p.raw("Message-Authenticator") == [
        radius.message_authenticator(reply, SECRET, data[4:20])]
    assert p.authenticator == radius.response_authenticator(reply, data[4:20], SECRET)
    assert p.raw("Proxy-State") == [b"p1", b"p2"]
    assert p.identifier == 7


def test_radclient_packets(tmp_path):
    """Requests signed by FreeRADIUS's radclient pass, and mean what they say."""
    s = rc.CoaSettings.from_mapping({
        "clients": [{"address": "127.0.0.1",
                     "secret-file": str(secret_file(tmp_path, secret=RADCLIENT_SECRET))}],
        "nas-ip": "192.0.2.1", "nas-identifier": "acctd-test"})
    h = Handler()
    r = rc.Receiver(s, h, Clock(NOW + 5))
    out = r.handle(RADCLIENT_COA, SRC)
    assert out.kind == "ack", out.detail
    ident = {"User-Name": "alice", "Acct-Session-Id": "0000000765920080",
             "Framed-IP-Address": ipaddress.IPv4Address("10.0.0.5")}
    # WISPr down 2M = Mikrotik tx 2M -> in; WISPr up 1M = Mikrotik rx 1M -> out
    assert h.calls == [("coa", ident, 2_000_000, 1_000_000)]
    out = r.handle(RADCLIENT_DISCONNECT, SRC)
    assert out.kind == "ack", out.detail
    assert radius.decode(out.reply).raw("Proxy-State") == [b"q", b"r"]
    assert h.calls[1] == ("disconnect", {"Acct-Session-Id": "0000000765920080"})


# --- rates ---------------------------------------------------------------------------------

@pytest.mark.parametrize("attrs, rate_in, rate_out", [
    ([vsa("WISPr-Bandwidth-Max-Down", 8_000_000)], 8_000_000, None),
    ([vsa("WISPr-Bandwidth-Max-Up", 512_000)], None, 512_000),
    ([vsa("Mikrotik-Rate-Limit", "512k/4M")], 4_000_000, 512_000),
    ([vsa("Mikrotik-Rate-Limit", "2M")], 2_000_000, 2_000_000),
    ([vsa("Mikrotik-Rate-Limit", "0/0")], 0, 0),
    ([vsa("WISPr-Bandwidth-Max-Down", 4_000_000), vsa("Mikrotik-Rate-Limit", "512k/4M")],
     4_000_000, 512_000),
    # two sub-attributes in one Vendor-Specific
    ([("Vendor-Specific", radius.encode_vsa("WISPr-Bandwidth-Max-Down", 3)
       + radius.encode_vsa("WISPr-Bandwidth-Max-Up", 4)[4:])], 3, 4),
])
def test_coa_rates_reach_the_handler_per_direction(receiver, attrs, rate_in, rate_out):
    out = receiver.handle(request(COA, [("Framed-IPv6-Prefix", "2001:db8:9::/48")] + attrs),
                          SRC)
    assert out.kind == "ack", out.detail
    assert receiver.handler.calls == [
        ("coa", {"Framed-IPv6-Prefix": ipaddress.IPv6Network("2001:db8:9::/48")},
         rate_in, rate_out)]


@pytest.mark.parametrize("text, want", [
    ("1M/10M", (10_000_000, 1_000_000)), ("512k", (512_000, 512_000)),
    ("64K/128K", (128_000, 64_000)), ("1G/1G", (10 ** 9, 10 ** 9)), ("0/0", (0, 0)),
    ("1000/2000", (2000, 1000)),
])
def test_parse_rate_limit(text, want):
    assert rc.parse_rate_limit(text) == want


@pytest.mark.parametrize("text", ["", "fast", "1M/", "1.5M/2M", "1m/2m", "1M/2M 2M/4M",
                                  "1M/2M 0/0 0/0 0/0 8", "-1/2"])
def test_parse_rate_limit_refuses(text):
    with pytest.raises(ValueError):
        rc.parse_rate_limit(text)


def test_judge_passes_every_session_attribute(receiver):
    attrs = [("User-Name", "alice"), ("Acct-Session-Id", "S1"), ("NAS-Port-Id", "eth1"),
             ("Calling-Station-Id", "52-54-00-12-34-56"), ("Framed-IP-Address", "10.0.0.5"),
             ("Framed-IPv6-Address", "2001:db8::8"), ("Framed-IPv6-Prefix", "2001:db8:9::/48")]
    a = rc.judge(radius.decode(request(attrs=attrs)), receiver.settings)
    assert a == rc.Action("disconnect", {k: radius.decode_value(k, radius.encode_value(k, v))
                                         for k, v in attrs})
    assert isinstance(a.ident["Framed-IP-Address"], ipaddress.IPv4Address)


def test_without_nas_identity_configured_any_nas_attribute_mismatches(tmp_path):
    s = dataclasses.replace(settings(tmp_path), nas_ip="", nas_identifier="",
                            listen=("0.0.0.0", 3799))
    for attr in (("NAS-IP-Address", "127.0.0.1"), ("NAS-Identifier", "x")):
        v = rc.judge(radius.decode(request(attrs=[("User-Name", "a"), attr])), s)
        assert v.cause == "NAS-Identification-Mismatch", attr


# --- settings ------------------------------------------------------------------------------

def test_settings_defaults_and_forms(tmp_path):
    secret_file(tmp_path)
    s = rc.CoaSettings.from_mapping(
        {"clients": [{"address": "10.1.0.0/16", "secret-file": "coa.secret"},
                     {"address": "10.1.2.3", "secret-file": "coa.secret"}]}, base=tmp_path)
    assert (s.listen, s.event_window, s.require_event_timestamp, s.nas_ip) == \
        (("127.0.0.1", 3799), 300, True, "")
    assert s.clients[0].secret == SECRET and s.clients[0].secret_file == str(
        tmp_path / "coa.secret")
    assert SECRET.decode() not in repr(s)
    assert s.client("10.1.2.3").network == ipaddress.ip_network("10.1.2.3/32")  # longest
    assert s.client("10.1.9.9").network == ipaddress.ip_network("10.1.0.0/16")
    assert s.client("::ffff:10.1.9.9").network == ipaddress.ip_network("10.1.0.0/16")
    assert s.client("10.2.0.1") is None
    for text, want in (("10.0.0.1", ("10.0.0.1", 3799)), ("10.0.0.1:1700", ("10.0.0.1", 1700)),
                       ("[::1]:3799", ("::1", 3799)), ("::", ("::", 3799)),
                       ("127.0.0.1:0", ("127.0.0.1", 0))):
        assert rc.CoaSettings.from_mapping({"listen": text, "clients": [
            {"address": "::1", "secret-file": "coa.secret"}]}, base=tmp_path).listen == want


@pytest.mark.parametrize("change, msg", [
    ({"port": 3799}, "port: unknown key; expected one of clients, event-window, listen"),
    ({"clients": []}, "clients: expected a list of .*address"),
    ({"clients": "127.0.0.1"}, "clients: expected a list of"),
    ({"clients": ["127.0.0.1"]}, "clients\\[0\\]: expected a table"),
    ({"clients": [{"address": "127.0.0.1"}]}, "clients\\[0\\].secret-file: required key is missing"),
    ({"clients": [{"secret-file": "s"}]}, "clients\\[0\\].address: required key is missing"),
    ({"clients": [{"address": "localhost", "secret-file": "coa.secret"}]},
     "clients\\[0\\].address: expected an IP address or prefix"),
    ({"clients": [{"address": "10.0.0.1/8", "secret-file": "coa.secret"}]},
     "clients\\[0\\].address: expected an IP address or prefix \\(host bits zero\\)"),
    ({"clients": [{"address": "10.0.0.1", "secret-file": "coa.secret", "port": 1}]},
     "clients\\[0\\].port: unknown key"),
    ({"clients": [{"address": "10.0.0.1", "secret-file": "coa.secret"},
                  {"address": "10.0.0.1/32", "secret-file": "coa.secret"}]},
     "clients\\[1\\].address: 10.0.0.1/32 is listed twice"),
    ({"clients": [{"address": "10.0.0.1", "secret-file": "nope"}]},
     "clients\\[0\\].secret-file: .*nope: No such file or directory"),
    ({"clients": [{"address": "10.0.0.1", "secret-file": "open.secret"}]},
     "clients\\[0\\].secret-file: .*open.secret is accessible by group or others "
     "\\(mode 0644\\); chmod 600"),
    ({"clients": [{"address": "10.0.0.1", "secret-file": "empty.secret"}]},
     "clients\\[0\\].secret-file: .*empty.secret is empty"),
    ({"listen": "localhost:3799"}, "listen: 'localhost:3799': 'localhost' is not an IP"),
    ({"listen": "127.0.0.1:99999"}, "listen: '127.0.0.1:99999': port must be"),
    ({"listen": 3799}, "listen: expected \"address\\[:port\\]\""),
    ({"event-window": 0}, "event-window: expected seconds \\(an integer between 1 and 3600\\), got 0"),
    ({"event-window": 7200}, "event-window: expected seconds \\(an integer between 1 and 3600"),
    ({"event-window": True}, "event-window: expected seconds"),
    ({"event-window": 1.5}, "event-window: expected seconds"),
    ({"require-event-timestamp": "yes"}, "require-event-timestamp: expected true or false"),
    ({"nas-ip": "bras"}, "nas-ip: expected an IP address, got 'bras'"),
    ({"nas-identifier": 7}, "nas-identifier: expected a string"),
])
def test_settings_errors_name_the_key(tmp_path, change, msg):
    secret_file(tmp_path)
    secret_file(tmp_path, "open.secret", mode=0o644)
    (tmp_path / "empty.secret").write_bytes(b"\n")
    (tmp_path / "empty.secret").chmod(0o600)
    d = {"clients": [{"address": "127.0.0.1", "secret-file": "coa.secret"}]} | change
    with pytest.raises(ValueError, match=msg):
        rc.CoaSettings.from_mapping(d, base=tmp_path)


# --- the socket ----------------------------------------------------------------------------

def test_server_answers_on_its_socket_and_stops(tmp_path):
    s = settings(tmp_path, listen="127.0.0.1:0")
    h = Handler()
    with rc.CoaServer(s, h, Clock()) as srv:
        host, port = srv.address
        assert host == "127.0.0.1" and port != 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(5)
            data = request()
            c.sendto(b"junk", (host, port))       # discarded; the server carries on
            c.sendto(data, (host, port))
            reply = c.recv(4096)
        assert radius.verify_response(reply, data, SECRET).code == radius.DISCONNECT_ACK
        assert srv.stats == {"malformed": 1, "ack": 1}
        with pytest.raises(ValueError, match=f"coa: listen 127.0.0.1:{port}: the port is in use"):
            rc.CoaServer(dataclasses.replace(s, listen=(host, port)), h).start()
    with pytest.raises(RuntimeError, match="not started"):
        srv.address
    srv.stop()   # twice is harmless


def test_server_refuses_an_address_it_does_not_have(tmp_path):
    s = settings(tmp_path, listen="192.0.2.77:0")
    with pytest.raises(ValueError, match="coa: listen 192.0.2.77:0: no such local address"):
        rc.CoaServer(s, Handler()).start()


# --- the codec additions (acctd.aaa.radius) -----------------------------------------------------

def test_dynamic_request_signs_as_radclient_does():
    p = radius.decode(RADCLIENT_COA)
    attrs = [(name, v) for name, v in p.items()
             if name not in ("Message-Authenticator", "Vendor-Specific")]
    ours = radius.dynamic_request(COA, p.identifier, attrs + [
        vsa("WISPr-Bandwidth-Max-Down", 2_000_000), vsa("WISPr-Bandwidth-Max-Up", 1_000_000),
        vsa("Mikrotik-Rate-Limit", "1M/2M")], RADCLIENT_SECRET)
    # radclient puts the Message-Authenticator where its input had it; the
    # same attributes in our order must verify the same way
    assert radius.request_authenticator_ok(ours, RADCLIENT_SECRET)
    assert radius.request_authenticator_ok(RADCLIENT_COA, RADCLIENT_SECRET)
    assert not radius.request_authenticator_ok(RADCLIENT_COA, SECRET)
    assert sorted(radius.decode(ours).attributes[1:]) == sorted(
        a for a in p.attributes if a[0] != 80)
    with pytest.raises(ValueError, match="Disconnect-Request \\(40\\) or CoA-Request \\(43\\)"):
        radius.dynamic_request(radius.ACCOUNTING_REQUEST, 1, [], SECRET)
    with pytest.raises(ValueError, match="added by dynamic_request"):
        radius.dynamic_request(DISC, 1, [("Message-Authenticator", bytes(16))], SECRET)


def test_vsa_round_trip_and_errors():
    raw = radius.encode_vsa("WISPr-Bandwidth-Max-Up", 7) + \
        radius.encode_vsa("WISPr-Bandwidth-Max-Down", 8)[4:]   # two in one, one vendor id
    assert radius.decode_vsa(raw) == (14122, [("WISPr-Bandwidth-Max-Up", 7),
                                             ("WISPr-Bandwidth-Max-Down", 8)])
    assert radius.decode_vsa(radius.encode_vsa("Mikrotik-Rate-Limit", "1M")) == \
        (14988, [("Mikrotik-Rate-Limit", "1M")])
    assert radius.decode_vsa(struct.pack("!IBB", 14122, 99, 3) + b"x") == (14122, [(99, b"x")])
    for bad in (b"\0\0", struct.pack("!I", 14122), struct.pack("!IBB", 14122, 8, 9) + b"x",
                struct.pack("!IBB", 14122, 8, 1)):
        with pytest.raises(radius.PacketError):
            radius.decode_vsa(bad)
    with pytest.raises(ValueError, match="unknown vendor-specific attribute 'X'"):
        radius.encode_vsa("X", 1)
    with pytest.raises(ValueError, match="unsigned 32-bit"):
        radius.encode_vsa("WISPr-Bandwidth-Max-Up", -1)
    assert radius.describe(radius.decode(radius.response(
        request(), radius.DISCONNECT_NAK, SECRET, [("Error-Cause", 503)]))) == \
        "Disconnect-NAK Id 7\n\tError-Cause = Session-Context-Not-Found"
