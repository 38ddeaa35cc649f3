"""RADIUS accounting without a RADIUS server: the codec against the RFCs'
own packets and one built by FreeRADIUS's radclient, Message-Authenticator
both ways, 64-bit counters as Gigawords, settings and the secret file, the
spool across SIGKILL, interim scheduling, and retransmission as seen by a
plain UDP socket. The real server is in tests/radius."""

import datetime as dt
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

from acctd.aaa import radius, radius_accounting as ra
from acctd.model.sessions import CAUSES, Session

RFC_SECRET = b"xyzzy5461"
# RFC 2865 §7.1: Access-Request for "nemo" and the Access-Accept answering it
RFC2865_REQUEST = bytes.fromhex(
    "010000380f403f9473978057bd83d5cb98f4227a01066e656d6f02120dbe708d93d413ce3196e43f782a0aee"
    "0406c0a80110050600000003")
RFC2865_ACCEPT = bytes.fromhex(
    "0200002686fe220e7624ba2a1005f6bf9b55e0b20606000000010f06000000000e06c0a80103")
# RFC 5997 §6: Status-Server to the authentication port, and its Access-Accept
RFC5997_STATUS_AUTH = bytes.fromhex(
    "0cda00268a54f4686fb394c52866e302185d062350125a665e2e1e8411f3e243822097c84fa3")
RFC5997_ACCEPT = bytes.fromhex("02da0014ef0d552a4bf2d693ec2b6fe8b5411d66")
# RFC 5997 §6: Status-Server to the accounting port, and its Accounting-Response
# (the RFC prints code 02 for the response; the authenticator is the one of a 05)
RFC5997_STATUS_ACCT = bytes.fromhex(
    "0cb30026925f6b66dd5fed571fcb1db7ad3882605012e8d6eabda910875cd91fdade26367858")
RFC5997_ACCT_RESPONSE = bytes.fromhex("05b300140f6f92145f107e2f504e860a4860669c")
# An Accounting-Request sent by FreeRADIUS 3.2.1's radclient (secret xyzzy5461,
# Message-Authenticator last), captured off a UDP socket: an independent
# implementation's Request Authenticator and Message-Authenticator.
RADCLIENT_ACCT = bytes.fromhex(
    "041a008f72456525ab2b070d1508234aab653db80107616c6963652806000000032c1230303030303032413635"
    "4630433142330406c000020108060a0000056114003020010db8000100000000000000000000a81220010db800"
    "00000000000000000000052a062a05f20034060000000130060000000737066553f10050127bd1a1eae5898acf"
    "6302cfbae5b22015")

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
E0 = int(T0.timestamp())
GiB = 1 << 30


def flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]


# --- codec: RFC vectors -------------------------------------------------------------

def test_rfc2865_access_request_decodes_and_reencodes_byte_for_byte():
    p = radius.decode(RFC2865_REQUEST)
    assert (p.code, p.identifier, p.authenticator.hex()) == \
        (radius.ACCESS_REQUEST, 0, "0f403f9473978057bd83d5cb98f4227a")
    assert p.get("User-Name") == "nemo"
    assert str(p.get("NAS-IP-Address")) == "192.168.1.16"
    assert p.get("NAS-Port") == 3
    assert [t for t, _ in p.attributes] == [1, 2, 4, 5]
    assert radius.encode(p) == RFC2865_REQUEST


def test_rfc2865_access_accept_verifies_against_its_request():
    p = radius.verify_response(RFC2865_ACCEPT, RFC2865_REQUEST, RFC_SECRET)
    assert p.code == radius.ACCESS_ACCEPT
    assert p.get("Service-Type") == 1
    with pytest.raises(radius.PacketError, match="Response Authenticator does not match"):
        radius.verify_response(RFC2865_ACCEPT, RFC2865_REQUEST, b"xyzzy5462")
    with pytest.raises(radius.PacketError, match="Response Authenticator does not match"):
        radius.verify_response(flip(RFC2865_ACCEPT, 25), RFC2865_REQUEST, RFC_SECRET)


def test_rfc5997_status_server_is_built_byte_for_byte():
    assert radius.status_server(0xda, RFC5997_STATUS_AUTH[4:20], RFC_SECRET) == \
        RFC5997_STATUS_AUTH
    assert radius.status_server(0xb3, RFC5997_STATUS_ACCT[4:20], RFC_SECRET) == \
        RFC5997_STATUS_ACCT
    assert radius.verify_response(RFC5997_ACCEPT, RFC5997_STATUS_AUTH, RFC_SECRET).code == \
        radius.ACCESS_ACCEPT


def test_rfc5997_accounting_response_is_built_byte_for_byte():
    assert radius.response(RFC5997_STATUS_ACCT, radius.ACCOUNTING_RESPONSE, RFC_SECRET) == \
        RFC5997_ACCT_RESPONSE
    p = radius.verify_response(RFC5997_ACCT_RESPONSE, RFC5997_STATUS_ACCT, RFC_SECRET)
    assert (p.code, p.identifier, p.attributes) == (radius.ACCOUNTING_RESPONSE, 0xb3, [])


def test_radclient_accounting_request_verifies():
    p = radius.verify_accounting_request(RADCLIENT_ACCT, RFC_SECRET)
    assert [(k, str(v) if not isinstance(v, (int, bytes)) else v) for k, v in p.items()
            if k != "Message-Authenticator"] == [
        ("User-Name", "alice"), ("Acct-Status-Type", 3),
        ("Acct-Session-Id", "0000002A65F0C1B3"), ("NAS-IP-Address", "192.0.2.1"),
        ("Framed-IP-Address", "10.0.0.5"), ("Framed-IPv6-Prefix", "2001:db8:1::/48"),
        ("Framed-IPv6-Address", "2001:db8::5"), ("Acct-Input-Octets", 705032704),
        ("Acct-Input-Gigawords", 1), ("Acct-Output-Packets", 7),
        ("Event-Timestamp", "2023-11-14 22:13:20+00:00")]
    assert radius.join64(p.get("Acct-Input-Gigawords"), p.get("Acct-Input-Octets")) == 5_000_000_000
    # our encoder writes the same octets for the same values (prefix in 16 octets)
    assert radius.encode_attributes([("Framed-IPv6-Prefix", "2001:db8:1::/48")]) == \
        [(97, bytes.fromhex("003020010db8000100000000000000000000"))]
    with pytest.raises(radius.PacketError, match="authenticator does not match"):
        radius.verify_accounting_request(RADCLIENT_ACCT, b"wrong")
    # a changed attribute with a recomputed Request Authenticator: only the
    # Message-Authenticator can tell
    bad = flip(RADCLIENT_ACCT, 22)
    import hashlib
    bad = bad[:4] + hashlib.md5(bad[:4] + bytes(16) + bad[20:] + RFC_SECRET).digest() + bad[20:]
    with pytest.raises(radius.PacketError, match="Message-Authenticator does not match"):
        radius.verify_accounting_request(bad, RFC_SECRET)


# --- codec: our packets ----------------------------------------------------------------

ATTRS = [("Acct-Status-Type", "Stop"), ("Acct-Session-Id", "0000002A65920080"),
         ("User-Name", "alice"), ("NAS-IP-Address", "192.0.2.1"),
         ("NAS-Identifier", "acctd"), ("Framed-IPv6-Address", "2001:db8::5"),
         ("Framed-IPv6-Prefix", "2001:db8:1::/48"), ("Event-Timestamp", E0),
         ("Acct-Input-Octets", 123), ("Acct-Input-Gigawords", 5),
         ("Acct-Terminate-Cause", "Idle-Timeout"), ("Acct-Delay-Time", 7)]


def test_accounting_request_round_trip_with_message_authenticator_first():
    data = radius.accounting_request(17, ATTRS, "s3cret")
    p = radius.verify_accounting_request(data, "s3cret")
    assert (p.code, p.identifier) == (radius.ACCOUNTING_REQUEST, 17)
    assert p.attributes[0][0] == radius.MESSAGE_AUTHENTICATOR
    got = p.items()[1:]
    assert [k for k, _ in got] == [k for k, _ in ATTRS]
    assert p.get("Acct-Status-Type") == radius.STOP
    assert p.get("Acct-Terminate-Cause") == 4
    assert str(p.get("Framed-IPv6-Prefix")) == "2001:db8:1::/48"
    assert p.get("Event-Timestamp") == T0
    assert radius.describe(p).splitlines()[:3] == [
        "Accounting-Request Id 17",
        f"\tMessage-Authenticator = 0x{p.attributes[0][1].hex()}",
        "\tAcct-Status-Type = Stop"]
    # the Message-Authenticator is HMAC-MD5 with a zeroed authenticator field
    import hashlib
    import hmac
    zeroed = data[:4] + bytes(16) + data[20:22] + bytes(16) + data[38:]
    assert p.attributes[0][1] == hmac.new(b"s3cret", zeroed, hashlib.md5).digest()
    unsigned = radius.accounting_request(17, ATTRS, "s3cret", with_message_authenticator=False)
    assert radius.verify_accounting_request(unsigned, "s3cret").raw("Message-Authenticator") == []
    assert len(data) == len(unsigned) + 18


@pytest.mark.parametrize("zero_vector", [True, False])
def test_reply_message_authenticator_round_trip(zero_vector):
    req = radius.accounting_request(3, ATTRS, "s3cret")
    rep = radius.response(req, radius.ACCOUNTING_RESPONSE, "s3cret",
                          with_message_authenticator=True)
    if not zero_vector:  # RFC 3579's form: the request's authenticator in the HMAC
        ma = radius.message_authenticator(rep, "s3cret", req[4:20])
        rep = rep[:22] + ma + rep[38:]
        rep = rep[:4] + radius.response_authenticator(rep, req[4:20], "s3cret") + rep[20:]
    p = radius.verify_response(rep, req, "s3cret", require_message_authenticator=True)
    assert p.raw("Message-Authenticator") == [rep[22:38]]
    tampered = rep[:22] + bytes(16) + rep[38:]
    tampered = tampered[:4] + radius.response_authenticator(tampered, req[4:20], "s3cret") + \
        tampered[20:]
    with pytest.raises(radius.PacketError, match="reply Message-Authenticator does not match"):
        radius.verify_response(tampered, req, "s3cret")


def test_reply_checks():
    req = radius.accounting_request(3, ATTRS, "s3cret")
    rep = radius.response(req, radius.ACCOUNTING_RESPONSE, "s3cret")
    with pytest.raises(radius.PacketError, match="has no Message-Authenticator"):
        radius.verify_response(rep, req, "s3cret", require_message_authenticator=True)
    other = radius.accounting_request(4, ATTRS, "s3cret")
    with pytest.raises(radius.PacketError, match="identifier 3 does not match the request's 4"):
        radius.verify_response(rep, other, "s3cret")
    # padding past the Length field is ignored (RFC 2865 §3)
    assert radius.verify_response(rep + b"\0\0", req, "s3cret").code == radius.ACCOUNTING_RESPONSE


def test_gigawords_split_of_64_bit_counters():
    assert radius.split64(0) == (0, 0)
    assert radius.split64(2**32 - 1) == (0, 4294967295)
    assert radius.split64(2**32) == (1, 0)
    assert radius.split64(5 * 2**32 + 123) == (5, 123)
    assert radius.split64(2**64 - 1) == (4294967295, 4294967295)
    for n in (0, 1, 2**32 - 1, 2**32, 6_000_000_000, 2**63 + 12345, 2**64 - 1):
        assert radius.join64(*radius.split64(n)) == n
    for bad in (-1, 2**64):
        with pytest.raises(ValueError, match="a counter must be 0 .. 2\\*\\*64-1"):
            radius.split64(bad)


@pytest.mark.parametrize("name,value,msg", [
    ("Acct-Input-Octets", 2**32, "Acct-Input-Octets: needs an unsigned 32-bit integer"),
    ("Acct-Input-Octets", -1, "Acct-Input-Octets: needs an unsigned 32-bit integer"),
    ("Acct-Status-Type", "Begin", "Acct-Status-Type: unknown value 'Begin' \\(known: Start,"),
    ("Framed-IP-Address", "10.0.0.300", "Framed-IP-Address: "),
    ("Framed-IPv6-Prefix", "2001:db8::1/64", "Framed-IPv6-Prefix: .*has host bits set"),
    ("User-Name", "x" * 254, "User-Name: a value must be 1-253 octets, got 254"),
    ("User-Name", "", "User-Name: a value must be 1-253 octets, got 0"),
    ("Frobnicate", 1, "unknown RADIUS attribute 'Frobnicate'"),
])
def test_bad_values_are_refused_clearly(name, value, msg):
    with pytest.raises(ValueError, match=msg):
        radius.encode_value(name, value)


@pytest.mark.parametrize("data,msg", [
    (b"\x05\x01\x00", "shorter than the 20-octet header"),
    (b"\x05\x01\x00\x13" + bytes(16), "Length field 19 outside 20-4096"),
    (b"\x05\x01\x00\x30" + bytes(16), "Length field says 48 octets, datagram has 20"),
    (b"\x05\x01\x00\x17" + bytes(16) + b"\x01\x01\x00", "attribute 1 at offset 20 has bad length 1"),
    (b"\x05\x01\x00\x17" + bytes(16) + b"\x01\x05\x00", "attribute 1 at offset 20 has bad length 5"),
])
def test_malformed_packets_are_refused_clearly(data, msg):
    with pytest.raises(radius.PacketError, match=msg):
        radius.decode(data)


def test_every_session_stop_cause_has_a_terminate_cause():
    names = {v: k for k, v in radius.VALUES["Acct-Terminate-Cause"].items()}
    assert {c: names[ra.terminate_cause(c)] for c in CAUSES} == ra.TERMINATE_CAUSES
    assert ra.terminate_cause("NAS-Reboot") == 11
    assert ra.terminate_cause(None) == 1
    with pytest.raises(ValueError, match="unknown session stop cause 'tired'"):
        ra.terminate_cause("tired")


# --- records ------------------------------------------------------------------------------

def settings(tmp_path, **kw):
    secret = tmp_path / "radius.secret"
    if not secret.exists():
        secret.write_text("s3cret\n")
        secret.chmod(0o600)
    d = {"servers": ["127.0.0.1:1813"], "secret-file": str(secret), "nas-ip": "192.0.2.1",
         "nas-identifier": "acctd-1"} | kw
    return ra.RadiusSettings.from_mapping(d)


def session(**kw):
    d = dict(id=42, unit_oid="0A0001", addr="10.0.0.5", source="login", start=T0)
    return Session(**(d | kw))


def test_records_carry_the_accounting_attributes(tmp_path):
    st = settings(tmp_path)
    s = session(mac="aa:bb:cc:dd:ee:0f", port="eth1")
    assert ra.build_record(st, "Start", s, "alice", E0) == [
        ("Acct-Status-Type", "Start"), ("Acct-Session-Id", "0000002A65920080"),
        ("User-Name", "alice"), ("NAS-IP-Address", "192.0.2.1"),
        ("NAS-Identifier", "acctd-1"), ("NAS-Port-Id", "eth1"),
        ("Calling-Station-Id", "AA-BB-CC-DD-EE-0F"), ("Framed-IP-Address", "10.0.0.5"),
        ("Event-Timestamp", E0)]
    # acctd "in" is towards the subscriber: the NAS port's Output
    s.bytes_in, s.packets_in = 5 * 2**32 + 123, 2**32 + 9
    s.bytes_out, s.packets_out = 2**32 - 1, 20
    s.stop = T0 + dt.timedelta(seconds=400)
    assert ra.build_record(st, "Stop", s, "alice", E0 + 400, "idle-timeout")[-8:] == [
        ("Acct-Input-Octets", 4294967295), ("Acct-Input-Gigawords", 0),
        ("Acct-Input-Packets", 20),
        ("Acct-Output-Octets", 123), ("Acct-Output-Gigawords", 5),
        ("Acct-Output-Packets", 9),   # packet counts wrap at 2**32, as on a NAS
        ("Acct-Session-Time", 400), ("Acct-Terminate-Cause", 4)]


@pytest.mark.parametrize("addr,attrs", [
    ("10.0.0.5", [("Framed-IP-Address", "10.0.0.5")]),
    ("10.0.0.0/24", [("Framed-IP-Address", "10.0.0.0"), ("Framed-IP-Netmask", "255.255.255.0")]),
    ("2001:db8::5", [("Framed-IPv6-Address", "2001:db8::5")]),
    ("2001:db8:7::/48", [("Framed-IPv6-Prefix", "2001:db8:7::/48")]),
    ("", []),
])
def test_session_addresses_become_framed_attributes(addr, attrs):
    assert ra.address_attributes(addr) == attrs


def test_ipv6_nas_and_static_units(tmp_path):
    st = settings(tmp_path, **{"nas-ip": "2001:db8::1"})
    s = ra.static_session("0b00ff", "192.0.2.99", T0)
    a = ra.build_record(st, "Start", s, "server-room", E0)
    assert a[1] == ("Acct-Session-Id", "U0B00FF65920080")
    assert ("NAS-IPv6-Address", "2001:db8::1") in a
    with pytest.raises(ValueError, match="no user name"):
        ra.build_record(st, "Start", s, "", E0)
    with pytest.raises(ValueError, match="is not an IP address or prefix"):
        ra.build_record(st, "Start", session(addr="nowhere"), "alice", E0)


# --- settings and the secret ------------------------------------------------------------

def test_settings_from_a_radius_table(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"top secret\r\n")
    secret.chmod(0o600)
    st = ra.RadiusSettings.from_mapping({
        "servers": ["radius1.example:1813", "[2001:db8::2]:1646", "192.0.2.7", "2001:db8::3"],
        "secret-file": "secret", "nas-ip": "192.0.2.1", "nas-identifier": "acctd-1",
        "interim-interval": 600, "timeout": 2.5, "retries": 3, "static-units": True},
        base=tmp_path)
    assert st == ra.RadiusSettings(
        servers=(ra.Server("radius1.example", 1813), ra.Server("2001:db8::2", 1646),
                 ra.Server("192.0.2.7", 1813), ra.Server("2001:db8::3", 1813)),
        secret_file=str(secret), nas_ip="192.0.2.1", nas_identifier="acctd-1",
        interim_interval=600, timeout=2.5, retries=3, static_units=True)
    assert [str(s) for s in st.servers] == ["radius1.example:1813", "[2001:db8::2]:1646",
                                           "192.0.2.7:1813", "[2001:db8::3]:1813"]
    assert st.read_secret() == b"top secret"


@pytest.mark.parametrize("change,msg", [
    ({"servers": []}, "servers: expected at least one server"),
    ({"servers": ["host:0"]}, "servers: server 'host:0': port must be 1-65535"),
    ({"servers": ["[::1"]},
     "servers: server '\\[::1': expected host, host:port, IPv6 or \\[IPv6\\]:port"),
    ({"servers": "a:1 b:2"}, "servers: server 'a:1 b:2': expected host, host:port"),
    ({"servers": ["radius:x"]}, "servers: server 'radius:x': port must be 1-65535"),
    ({"servers": [1813]}, "servers: expected a list of"),
    ({"interim-interval": 30}, "interim-interval: expected 0 \\(off\\) or at least 60 seconds"),
    ({"timeout": 0}, "timeout: expected seconds \\(a number above 0 and at most 60\\)"),
    ({"retries": 8}, "retries: expected retransmissions \\(an integer between 0 and 7\\)"),
    ({"nas-ip": "", "nas-identifier": ""}, "nas-ip: set nas-ip or nas-identifier"),
    ({"nas-ip": "acctd.example"}, "nas-ip: expected an IP address"),
    ({"static-units": "yes"}, "static-units: expected true or false"),
    ({"secret": "s3cret"}, "secret: unknown key; expected one of interim-interval, nas-identifier"),
])
def test_bad_settings_are_refused_clearly(tmp_path, change, msg):
    with pytest.raises(ValueError, match=msg):
        settings(tmp_path, **change)


def test_secret_file_must_be_private(tmp_path):
    st = settings(tmp_path)
    p = tmp_path / "radius.secret"
    p.chmod(0o640)
    with pytest.raises(ValueError, match=f"secret-file {p} is accessible by group or others "
                                         f"\\(mode 0640\\); chmod 600 it"):
        st.read_secret()
    with pytest.raises(ValueError, match="accessible by group or others"):
        ra.RadiusAccounting(st, tmp_path / "spool")
    p.chmod(0o600)
    assert st.read_secret() == b"s3cret"
    p.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        st.read_secret()
    p.unlink()
    with pytest.raises(ValueError, match="No such file or directory"):
        st.read_secret()


# --- the spool ----------------------------------------------------------------------------

def test_spooled_records_survive_a_reopen_in_order(tmp_path):
    st = settings(tmp_path)
    c = ra.RadiusAccounting(st, tmp_path / "spool")
    s = session()
    ids = [c.start(s, "alice")]
    s.bytes_in = 6_000_000_000
    ids.append(c.interim(s, "alice", now=T0 + dt.timedelta(seconds=300)))
    s.stop, s.stop_cause = T0 + dt.timedelta(seconds=400), "lost-carrier"
    ids.append(c.stop(s, "alice"))
    before = c.pending()
    assert [r.id for r in before] == ids == sorted(ids)
    assert [r.status for r in before] == ["Start", "Interim-Update", "Stop"]
    assert os.stat(tmp_path / "spool").st_mode & 0o777 == 0o700
    c.close()
    (tmp_path / "spool" / ".tmp-99999999999999999999").write_text('{"id": "torn')
    (tmp_path / "spool" / "00000000000000000001.json").write_text("not json")
    again = ra.RadiusAccounting(st, tmp_path / "spool")
    assert [(r.id, r.key(), r.event) for r in again.pending()] == \
        [(r.id, r.key(), r.event) for r in before]
    assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == sorted(
        [f"{i}.json" for i in ids] + ["00000000000000000001.bad"])
    assert again.start(session(id=43), "bob") > ids[-1]
    with pytest.raises(ValueError, match="is in use by another client"):
        ra.RadiusAccounting(st, tmp_path / "spool")
    again.close()
    assert len(ra.RadiusAccounting(st, tmp_path / "spool").pending()) == 4


def test_start_and_stop_are_spooled_once_per_session(tmp_path):
    c = ra.RadiusAccounting(settings(tmp_path), tmp_path / "spool")
    s = session()
    a = c.start(s, "alice")
    assert c.start(s, "alice") == a
    i1 = c.interim(s, "alice", now=E0 + 300)
    i2 = c.interim(s, "alice", now=E0 + 600)
    s.stop = T0 + dt.timedelta(seconds=700)
    z = c.stop(s, "alice", "admin-reset")
    assert c.stop(s, "alice", "admin-reset") == z
    assert [r.id for r in c.pending()] == [a, i1, i2, z]
    # nothing may follow a Stop: it would overwrite the final counts
    with pytest.raises(ValueError, match="session 42 has stopped: send its Stop, not an Interim"):
        c.interim(s, "alice")
    with pytest.raises(ValueError, match="session 0000002A65920080 is stopped: no Start after"):
        c.start(s, "alice")


def test_a_batch_of_interims_is_spooled_all_or_nothing(tmp_path):
    c = ra.RadiusAccounting(settings(tmp_path), tmp_path / "spool")
    ss = [session(id=i, bytes_in=i * GiB) for i in range(1, 6)]
    ids = c.interims([(s, f"u{s.id}") for s in ss], now=E0 + 300)
    assert [r.id for r in c.pending()] == ids == sorted(ids)
    assert [dict(r.attrs)["Acct-Output-Gigawords"] for r in c.pending()] == [0, 0, 0, 1, 1]
    assert [dict(r.attrs)["Acct-Output-Octets"] for r in c.pending()] == [GiB, 2 * GiB, 3 * GiB, 0, GiB]
    assert all(r.event == E0 + 300 for r in c.pending())
    ss[2].stop = T0
    with pytest.raises(ValueError, match="session 3 has stopped"):
        c.interims([(s, "u") for s in ss], now=E0 + 600)
    with pytest.raises(ValueError, match="names a session twice"):
        c.interims([(ss[0], "u"), (ss[0], "u")], now=E0 + 600)
    assert c.interims([]) == []
    c.close()
    assert [r.id for r in ra.RadiusAccounting(settings(tmp_path), tmp_path / "spool").pending()] \
        == ids
    assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == [f"{i}.json" for i in ids]


KILLER = textwrap.dedent("""
    import datetime as dt, sys
    from acctd.aaa import radius_accounting as ra
    from acctd.model.sessions import Session
    st = ra.RadiusSettings.from_mapping({"servers": ["127.0.0.1:9"], "secret-file": sys.argv[1],
                                         "nas-identifier": "acctd"})
    c = ra.RadiusAccounting(st, sys.argv[2])
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    for i in range(1, 100000):
        s = Session(i, "0A0001", "10.0.0.5", "login", t0)
        print(c.start(s, "u%d" % i), flush=True)
""")


def test_sigkill_while_spooling_loses_no_acknowledged_record(tmp_path):
    st = settings(tmp_path)
    p = subprocess.Popen([sys.executable, "-c", KILLER, st.secret_file, str(tmp_path / "spool")],
                         stdout=subprocess.PIPE, text=True)
    acked = []
    while len(acked) < 200:   # kill it mid-stream, wherever it is
        acked.append(p.stdout.readline().strip())
    p.send_signal(signal.SIGKILL)
    p.wait()
    acked += p.stdout.read().split()   # whatever it printed before dying
    assert p.returncode == -signal.SIGKILL
    c = ra.RadiusAccounting(st, tmp_path / "spool")
    got = [r.id for r in c.pending()]
    # every acknowledged record is there, whole; at most the one being written
    # when the signal came is there too (or was torn and swept)
    assert got[:len(acked)] == acked
    assert len(got) - len(acked) in (0, 1)
    assert [r.session for r in c.pending()][:3] == \
        ["0000000165920080", "0000000265920080", "0000000365920080"]
    assert not [f for f in (tmp_path / "spool").iterdir() if not f.name.endswith(".json")]


# --- interim scheduling ---------------------------------------------------------------------

def test_due_interims_follow_the_interval_and_per_session_overrides(tmp_path):
    c = ra.RadiusAccounting(settings(tmp_path, **{"interim-interval": 300}), tmp_path / "spool")
    a, b, z = session(id=1), session(id=2), session(id=3, stop=T0 + dt.timedelta(seconds=5))
    for s in (a, b):
        c.start(s, "u")
    at = lambda sec: T0 + dt.timedelta(seconds=sec)  # noqa: E731
    assert c.due_interims(at(299), [a, b, z]) == []
    assert c.due_interims(at(300), [a, b, z]) == [a, b]
    c.interim(a, "u", now=at(300))
    assert c.due_interims(at(300), [a, b]) == [b]
    c.set_interim_interval(b, 900)   # as a server's Acct-Interim-Interval
    assert c.interim_interval(b) == 900 and c.interim_interval(a) == 300
    assert c.due_interims(at(599), [a, b]) == []
    assert c.due_interims(at(600), [a, b]) == [a]
    assert c.due_interims(at(900), [a, b]) == [a, b]
    c.set_interim_interval(b, 10)    # too often: RFC 2869's floor
    assert c.interim_interval(b) == 60
    c.set_interim_interval(b, None)
    assert c.interim_interval(b) == 300
    with pytest.raises(ValueError, match="positive number of seconds"):
        c.set_interim_interval(b, 0)
    # a session unknown to this process (acctd restarted) counts from its start
    fresh = ra.RadiusAccounting(settings(tmp_path, **{"interim-interval": 300}),
                                tmp_path / "spool2")
    assert fresh.due_interims(at(301), [a, session(id=9, start=at(100))]) == [a]
    off = ra.RadiusAccounting(settings(tmp_path, **{"interim-interval": 0}), tmp_path / "spool3")
    assert off.due_interims(at(10**6), [a]) == []


# --- retransmission on the wire -----------------------------------------------------------

class Hole:
    """A UDP socket that takes requests and answers none, or answers the
    ones it is told to: the client's retransmissions as sent. A scripted
    peer, because no real server can be made to drop or forge replies."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.got: list[bytes] = []
        self.reply = None   # fn(request) -> bytes | None
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            if not select.select([self.sock], [], [], 0.05)[0]:
                continue
            data, src = self.sock.recvfrom(4096)
            self.got.append(data)
            if self.reply and (out := self.reply(data)):
                self.sock.sendto(out, src)

    def close(self):
        self._stop.set()
        self._t.join()
        self.sock.close()


@pytest.fixture
def hole():
    h = Hole()
    yield h
    h.close()


def _client(tmp_path, port, clock, **kw):
    st = settings(tmp_path, servers=[f"127.0.0.1:{port}"], timeout=0.05, retries=2, **kw)
    return ra.RadiusAccounting(st, tmp_path / "spool", clock=clock)


def test_retransmission_with_a_new_delay_is_a_new_packet(tmp_path, hole):
    now = [E0 + 10.0]

    def clock():   # each transmission one second later
        now[0] += 1
        return now[0]
    c = _client(tmp_path, hole.port, clock)
    rid = c.start(session(), "alice")
    assert c.flush(0.5) is False
    c.close()
    pkts = [radius.verify_accounting_request(d, b"s3cret") for d in hole.got[:3]]
    assert [p.get("Acct-Delay-Time") for p in pkts] == [11, 12, 13]
    assert len({p.identifier for p in pkts}) == 3
    assert len({p.authenticator for p in pkts}) == 3
    strip = lambda p: [a for a in p.items() if a[0] not in  # noqa: E731
                       ("Acct-Delay-Time", "Message-Authenticator")]
    assert strip(pkts[0]) == strip(pkts[1]) == strip(pkts[2])
    assert [r.id for r in c.pending()] == [rid]   # unanswered: still spooled


def test_retransmission_with_the_same_delay_is_the_same_packet(tmp_path, hole):
    c = _client(tmp_path, hole.port, lambda: E0 + 0.5)
    c.start(session(), "alice")
    assert c.flush(0.3) is False
    c.close()
    assert len(hole.got) >= 3
    assert hole.got[0] == hole.got[1] == hole.got[2]


def test_forged_replies_are_ignored_and_the_record_kept(tmp_path, hole):
    hole.reply = lambda req: radius.response(req, radius.ACCOUNTING_RESPONSE, b"not the secret")
    c = _client(tmp_path, hole.port, lambda: E0)
    rid = c.start(session(), "alice")
    assert c.flush(0.3) is False
    assert [r.id for r in c.pending()] == [rid]
    hole.reply = lambda req: radius.response(req, radius.ACCOUNTING_RESPONSE, b"s3cret",
                                             with_message_authenticator=True)
    assert c.flush(5) is True
    assert c.pending() == [] and c.delivered == 1
    assert list((tmp_path / "spool").iterdir()) == []
    c.close()


def test_one_session_in_flight_at_a_time_others_in_parallel(tmp_path, hole):
    """A session's records go strictly in order: its Stop is not sent while
    its Interim is unanswered; other sessions are not held up."""
    answered: list[str] = []
    lost = []

    def reply(req):
        p = radius.decode(req)
        rec = f"{p.get('Acct-Session-Id')[7]}:" \
              f"{radius.value_name('Acct-Status-Type', p.get('Acct-Status-Type'))}"
        if rec == "1:Interim-Update" and len(lost) < 2:
            lost.append(rec)   # lose session 1's interim twice
            return None
        answered.append(rec)
        return radius.response(req, radius.ACCOUNTING_RESPONSE, b"s3cret")
    hole.reply = reply
    c = _client(tmp_path, hole.port, lambda: E0)
    a, b = session(id=1), session(id=2)
    c.start(a, "a"), c.start(b, "b")
    c.interim(a, "a", now=E0 + 300), c.interim(b, "b", now=E0 + 300)
    a.stop = b.stop = T0 + dt.timedelta(seconds=400)
    c.stop(a, "a"), c.stop(b, "b")
    assert c.flush(10) is True
    c.close()
    assert [x for x in answered if x[0] == "1"] == ["1:Start", "1:Interim-Update", "1:Stop"]
    assert [x for x in answered if x[0] == "2"] == ["2:Start", "2:Interim-Update", "2:Stop"]
    assert answered.index("2:Stop") < answered.index("1:Interim-Update")
