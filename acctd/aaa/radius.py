"""RADIUS packet codec for accounting (RFC 2865/2866, RFC 2869, RFC 3162,
RFC 3579 Message-Authenticator, RFC 5997 Status-Server, RFC 6911) and
Dynamic Authorization (RFC 5176 CoA and Disconnect): the attributes acctd
sends and receives, encode, decode, sign and verify. No sockets.

Attribute names and value names are FreeRADIUS's dictionary spellings, so a
packet printed here reads like `radclient -x` output.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import ipaddress
import struct
from collections.abc import Iterable, Sequence
from typing import Any, Union

# --- packet codes ---------------------------------------------------------------

ACCESS_REQUEST = 1
ACCESS_ACCEPT = 2
ACCESS_REJECT = 3
ACCOUNTING_REQUEST = 4
ACCOUNTING_RESPONSE = 5
STATUS_SERVER = 12
DISCONNECT_REQUEST = 40     # RFC 5176 §2.3
DISCONNECT_ACK = 41
DISCONNECT_NAK = 42
COA_REQUEST = 43
COA_ACK = 44
COA_NAK = 45

CODES = {ACCESS_REQUEST: "Access-Request", ACCESS_ACCEPT: "Access-Accept",
         ACCESS_REJECT: "Access-Reject", ACCOUNTING_REQUEST: "Accounting-Request",
         ACCOUNTING_RESPONSE: "Accounting-Response", STATUS_SERVER: "Status-Server",
         DISCONNECT_REQUEST: "Disconnect-Request", DISCONNECT_ACK: "Disconnect-ACK",
         DISCONNECT_NAK: "Disconnect-NAK", COA_REQUEST: "CoA-Request", COA_ACK: "CoA-ACK",
         COA_NAK: "CoA-NAK"}

HEADER_LEN = 20
MAX_PACKET = 4096          # RFC 2865 §3
MAX_VALUE = 253            # one attribute's value, RFC 2865 §5

# --- the dictionary -----------------------------------------------------------------
# name -> (type number, data type); data types as RFC 8044 names them.

ATTRIBUTES: dict[str, tuple[int, str]] = {
    "User-Name": (1, "string"),
    "User-Password": (2, "octets"),       # hidden: see hide_password / reveal_password
    "CHAP-Password": (3, "octets"),
    "NAS-IP-Address": (4, "ipv4addr"),
    "NAS-Port": (5, "integer"),
    "Service-Type": (6, "integer"),
    "Framed-IP-Address": (8, "ipv4addr"),
    "Framed-IP-Netmask": (9, "ipv4addr"),
    "Reply-Message": (18, "string"),
    "State": (24, "octets"),
    "Class": (25, "octets"),
    "Vendor-Specific": (26, "octets"),    # see encode_vsa / decode_vsa
    "Session-Timeout": (27, "integer"),
    "Called-Station-Id": (30, "string"),
    "Calling-Station-Id": (31, "string"),
    "NAS-Identifier": (32, "string"),
    "Proxy-State": (33, "octets"),
    "Acct-Status-Type": (40, "integer"),
    "Acct-Delay-Time": (41, "integer"),
    "Acct-Input-Octets": (42, "integer"),
    "Acct-Output-Octets": (43, "integer"),
    "Acct-Session-Id": (44, "string"),
    "Acct-Authentic": (45, "integer"),
    "Acct-Session-Time": (46, "integer"),
    "Acct-Input-Packets": (47, "integer"),
    "Acct-Output-Packets": (48, "integer"),
    "Acct-Terminate-Cause": (49, "integer"),
    "Acct-Multi-Session-Id": (50, "string"),
    "Acct-Input-Gigawords": (52, "integer"),
    "Acct-Output-Gigawords": (53, "integer"),
    "Event-Timestamp": (55, "time"),
    "NAS-Port-Type": (61, "integer"),
    "Message-Authenticator": (80, "octets"),
    "CHAP-Challenge": (60, "octets"),
    "Acct-Interim-Interval": (85, "integer"),
    "NAS-Port-Id": (87, "string"),
    "NAS-IPv6-Address": (95, "ipv6addr"),
    "Framed-Interface-Id": (96, "ifid"),
    "Framed-IPv6-Prefix": (97, "ipv6prefix"),
    "Error-Cause": (101, "integer"),      # RFC 5176 §3.5
    "Delegated-IPv6-Prefix": (123, "ipv6prefix"),
    "Framed-IPv6-Address": (168, "ipv6addr"),
}
BY_NUMBER: dict[int, tuple[str, str]] = {n: (name, t) for name, (n, t) in ATTRIBUTES.items()}

MESSAGE_AUTHENTICATOR = ATTRIBUTES["Message-Authenticator"][0]

# Enumerated values (FreeRADIUS's VALUE lines for these attributes).
VALUES: dict[str, dict[str, int]] = {
    "Acct-Status-Type": {"Start": 1, "Stop": 2, "Interim-Update": 3,
                         "Accounting-On": 7, "Accounting-Off": 8},
    "Acct-Authentic": {"RADIUS": 1, "Local": 2, "Remote": 3, "Diameter": 4},
    "Acct-Terminate-Cause": {
        "User-Request": 1, "Lost-Carrier": 2, "Lost-Service": 3, "Idle-Timeout": 4,
        "Session-Timeout": 5, "Admin-Reset": 6, "Admin-Reboot": 7, "Port-Error": 8,
        "NAS-Error": 9, "NAS-Request": 10, "NAS-Reboot": 11, "Port-Unneeded": 12,
        "Port-Preempted": 13, "Port-Suspended": 14, "Service-Unavailable": 15,
        "Callback": 16, "User-Error": 17, "Host-Request": 18,
        "Supplicant-Restart": 19, "Reauthentication-Failure": 20, "Port-Reinit": 21,
        "Port-Disabled": 22},
    "NAS-Port-Type": {"Async": 0, "Sync": 1, "ISDN": 2, "Virtual": 5, "Ethernet": 15,
                      "Wireless-802.11": 19},
    "Service-Type": {"Login-User": 1, "Framed-User": 2, "Authorize-Only": 17},
    # RFC 5176 §3.5 (FreeRADIUS dictionary.rfc3576 and dictionary.rfc5176)
    "Error-Cause": {
        "Residual-Context-Removed": 201, "Invalid-EAP-Packet": 202,
        "Unsupported-Attribute": 401, "Missing-Attribute": 402,
        "NAS-Identification-Mismatch": 403, "Invalid-Request": 404,
        "Unsupported-Service": 405, "Unsupported-Extension": 406,
        "Invalid-Attribute-Value": 407, "Administratively-Prohibited": 501,
        "Proxy-Request-Not-Routable": 502, "Session-Context-Not-Found": 503,
        "Session-Context-Not-Removable": 504, "Proxy-Processing-Error": 505,
        "Resources-Unavailable": 506, "Request-Initiated": 507,
        "Multiple-Session-Selection-Unsupported": 508},
}

# Vendor-Specific attributes (RFC 2865 §5.26, the vendor's type/length/value
# format): name -> (vendor id, vendor type, data type), from FreeRADIUS's
# dictionary.wispr and dictionary.mikrotik.
VENDORS = {"WISPr": 14122, "Mikrotik": 14988}
VENDOR_ATTRIBUTES: dict[str, tuple[int, int, str]] = {
    "WISPr-Bandwidth-Min-Up": (14122, 5, "integer"),     # bit/s
    "WISPr-Bandwidth-Min-Down": (14122, 6, "integer"),
    "WISPr-Bandwidth-Max-Up": (14122, 7, "integer"),
    "WISPr-Bandwidth-Max-Down": (14122, 8, "integer"),
    "Mikrotik-Rate-Limit": (14988, 8, "string"),         # "rx[/tx] ..." from the NAS's side
}
VENDOR_BY_NUMBER: dict[tuple[int, int], tuple[str, str]] = {
    (v, n): (name, t) for name, (v, n, t) in VENDOR_ATTRIBUTES.items()}

START, STOP, INTERIM_UPDATE = 1, 2, 3


class PacketError(ValueError):
    """A packet that is malformed, or fails its authenticator checks."""


Value = Union[str, int, bytes, dt.datetime, ipaddress.IPv4Address, ipaddress.IPv6Address,
              ipaddress.IPv6Network]


def attribute(name: str) -> tuple[int, str]:
    try:
        return ATTRIBUTES[name]
    except KeyError:
        raise ValueError(f"unknown RADIUS attribute {name!r}") from None


def value_number(name: str, value: int | str) -> int:
    """An enumerated value as its number: "Interim-Update" -> 3, 3 -> 3."""
    if isinstance(value, str):
        try:
            return VALUES[name][value]
        except KeyError:
            known = ", ".join(VALUES.get(name, {})) or "none"
            raise ValueError(f"{name}: unknown value {value!r} (known: {known})") from None
    return value


def value_name(name: str, number: int) -> str | int:
    """An enumerated value's name where the dictionary has one, else the number."""
    for k, v in VALUES.get(name, {}).items():
        if v == number:
            return k
    return number


# --- values ---------------------------------------------------------------------------

def encode_value(name: str, value: Any) -> bytes:
    """One attribute's value as it goes on the wire (without type/length)."""
    _, kind = attribute(name)
    try:
        if kind == "string":
            b = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        elif kind == "octets":
            b = bytes(value)
        elif kind == "integer":
            n = value_number(name, value)
            if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < 1 << 32:
                raise ValueError(f"needs an unsigned 32-bit integer, got {value!r}")
            b = struct.pack("!I", n)
        elif kind == "time":
            n = int(value.timestamp()) if isinstance(value, dt.datetime) else value
            if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < 1 << 32:
                raise ValueError(f"needs seconds since 1970 as an unsigned 32-bit integer, "
                                 f"got {value!r}")
            b = struct.pack("!I", n)
        elif kind == "ipv4addr":
            b = ipaddress.IPv4Address(value).packed
        elif kind == "ipv6addr":
            b = ipaddress.IPv6Address(value).packed
        elif kind == "ipv6prefix":
            net = ipaddress.IPv6Network(value)   # strict: host bits must be zero
            # RFC 3162 §2.3: reserved, length, prefix. The prefix may stop after
            # the octets its length covers; all 16 go, as FreeRADIUS sends it,
            # since some decoders accept nothing shorter.
            b = bytes((0, net.prefixlen)) + net.network_address.packed
        elif kind == "ifid":
            b = bytes(value)
            if len(b) != 8:
                raise ValueError(f"needs 8 octets, got {len(b)}")
        else:  # pragma: no cover - the dictionary has no other kinds
            raise AssertionError(kind)
    except (TypeError, ValueError, AttributeError) as e:
        if isinstance(e, ValueError) and str(e).startswith(name):
            raise
        raise ValueError(f"{name}: {e}") from None
    if not b or len(b) > MAX_VALUE:
        raise ValueError(f"{name}: a value must be 1-{MAX_VALUE} octets, got {len(b)}")
    return b


def decode_value(name: str, raw: bytes) -> Value:
    """The inverse of encode_value; integers stay numbers (see value_name)."""
    _, kind = attribute(name)
    if kind == "string":
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw
    if kind == "octets":
        return raw
    if kind in ("integer", "time"):
        if len(raw) != 4:
            raise PacketError(f"{name}: an integer is 4 octets, got {len(raw)}")
        n = struct.unpack("!I", raw)[0]
        return dt.datetime.fromtimestamp(n, dt.timezone.utc) if kind == "time" else n
    if kind == "ipv4addr":
        if len(raw) != 4:
            raise PacketError(f"{name}: an IPv4 address is 4 octets, got {len(raw)}")
        return ipaddress.IPv4Address(raw)
    if kind == "ipv6addr":
        if len(raw) != 16:
            raise PacketError(f"{name}: an IPv6 address is 16 octets, got {len(raw)}")
        return ipaddress.IPv6Address(raw)
    if kind == "ipv6prefix":
        if not 2 <= len(raw) <= 18 or raw[1] > 128 or len(raw) - 2 < (raw[1] + 7) // 8:
            raise PacketError(f"{name}: malformed prefix {raw.hex()}")
        addr = ipaddress.IPv6Address(raw[2:].ljust(16, b"\0"))
        try:
            return ipaddress.IPv6Network((addr, raw[1]))
        except ValueError:
            raise PacketError(f"{name}: bits set past the prefix length in {raw.hex()}") from None
    if kind == "ifid":
        if len(raw) != 8:
            raise PacketError(f"{name}: an interface id is 8 octets, got {len(raw)}")
        return raw
    raise AssertionError(kind)  # pragma: no cover


def encode_vsa(name: str, value: Any) -> bytes:
    """A Vendor-Specific attribute's value (vendor id, then one sub-attribute)
    for a VENDOR_ATTRIBUTES name: pass it as ("Vendor-Specific", bytes)."""
    try:
        vendor, number, kind = VENDOR_ATTRIBUTES[name]
    except KeyError:
        raise ValueError(f"unknown vendor-specific attribute {name!r}") from None
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 32:
            raise ValueError(f"{name}: needs an unsigned 32-bit integer, got {value!r}")
        b = struct.pack("!I", value)
    else:
        b = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if not b or len(b) > MAX_VALUE - 6:
        raise ValueError(f"{name}: a value must be 1-{MAX_VALUE - 6} octets, got {len(b)}")
    return struct.pack("!IBB", vendor, number, len(b) + 2) + b


def decode_vsa(raw: bytes) -> tuple[int, list[tuple[str | int, Value]]]:
    """(vendor id, [(name, decoded value)]) of a Vendor-Specific value that
    uses the RFC 2865 §5.26 sub-attribute format; sub-attributes not in
    VENDOR_ATTRIBUTES come as (vendor type, raw). PacketError if the value
    does not parse (a vendor with another format, say)."""
    if len(raw) < 4:
        raise PacketError(f"Vendor-Specific of {len(raw)} octets has no vendor id")
    vendor = struct.unpack("!I", raw[:4])[0]
    out: list[tuple[str | int, Value]] = []
    i = 4
    if i == len(raw):
        raise PacketError(f"Vendor-Specific for vendor {vendor} carries no attribute")
    while i < len(raw):
        if i + 2 > len(raw) or raw[i + 1] < 2 or i + raw[i + 1] > len(raw):
            raise PacketError(f"Vendor-Specific for vendor {vendor}: malformed "
                              f"sub-attribute at offset {i}")
        t, v = raw[i], bytes(raw[i + 2:i + raw[i + 1]])
        i += raw[i + 1]
        name, kind = VENDOR_BY_NUMBER.get((vendor, t), (None, None))
        if name is None:
            out.append((t, v))
        elif kind == "integer":
            if len(v) != 4:
                raise PacketError(f"{name}: an integer is 4 octets, got {len(v)}")
            out.append((name, struct.unpack("!I", v)[0]))
        else:
            try:
                out.append((name, v.decode("utf-8")))
            except UnicodeDecodeError:
                out.append((name, v))
    return vendor, out


def split64(n: int) -> tuple[int, int]:
    """A 64-bit counter as (Gigawords, Octets): RFC 2869 §5.1-5.2."""
    if not 0 <= n < 1 << 64:
        raise ValueError(f"a counter must be 0 .. 2**64-1, got {n}")
    return n >> 32, n & 0xFFFFFFFF


def join64(gigawords: int, octets: int) -> int:
    return gigawords << 32 | octets


# --- packets --------------------------------------------------------------------------

@dataclasses.dataclass
class Packet:
    """A decoded packet. `attributes` keeps the wire order and unknown types
    as (type number, raw value)."""
    code: int
    identifier: int
    authenticator: bytes
    attributes: list[tuple[int, bytes]]

    def raw(self, name: str) -> list[bytes]:
        n = attribute(name)[0]
        return [v for t, v in self.attributes if t == n]

    def get(self, name: str, default: Any = None) -> Any:
        """The first value of attribute `name`, decoded."""
        vals = self.raw(name)
        return decode_value(name, vals[0]) if vals else default

    def items(self) -> list[tuple[str | int, Value]]:
        """(name, decoded value) in wire order; unknown types as (number, raw)."""
        out: list[tuple[str | int, Value]] = []
        for t, v in self.attributes:
            if t in BY_NUMBER:
                out.append((BY_NUMBER[t][0], decode_value(BY_NUMBER[t][0], v)))
            else:
                out.append((t, v))
        return out


def encode_attributes(attrs: Iterable[tuple[str, Any]]) -> list[tuple[int, bytes]]:
    return [(attribute(name)[0], encode_value(name, value)) for name, value in attrs]


def _pack(code: int, identifier: int, authenticator: bytes,
          attributes: Sequence[tuple[int, bytes]]) -> bytes:
    if not 0 <= identifier <= 255:
        raise ValueError(f"identifier must be 0-255, got {identifier}")
    if len(authenticator) != 16:
        raise ValueError(f"authenticator must be 16 octets, got {len(authenticator)}")
    body = b"".join(struct.pack("!BB", t, len(v) + 2) + v for t, v in attributes)
    length = HEADER_LEN + len(body)
    if length > MAX_PACKET:
        raise ValueError(f"packet of {length} octets exceeds RADIUS's {MAX_PACKET}")
    return struct.pack("!BBH", code, identifier, length) + authenticator + body


def encode(p: Packet) -> bytes:
    """The packet as it stands (no signing)."""
    return _pack(p.code, p.identifier, p.authenticator, p.attributes)


def decode(data: bytes) -> Packet:
    """Parse a packet; structural checks only (RFC 2865 §3: octets past the
    Length field are padding and ignored; a shorter datagram is discarded)."""
    if len(data) < HEADER_LEN:
        raise PacketError(f"packet of {len(data)} octets is shorter than the "
                          f"{HEADER_LEN}-octet header")
    code, ident, length = struct.unpack("!BBH", data[:4])
    if not HEADER_LEN <= length <= MAX_PACKET:
        raise PacketError(f"Length field {length} outside {HEADER_LEN}-{MAX_PACKET}")
    if len(data) < length:
        raise PacketError(f"Length field says {length} octets, datagram has {len(data)}")
    attrs: list[tuple[int, bytes]] = []
    i = HEADER_LEN
    while i < length:
        if i + 2 > length:
            raise PacketError(f"truncated attribute header at offset {i}")
        t, alen = data[i], data[i + 1]
        if alen < 2 or i + alen > length:
            raise PacketError(f"attribute {t} at offset {i} has bad length {alen}")
        attrs.append((t, bytes(data[i + 2:i + alen])))
        i += alen
    return Packet(code, ident, bytes(data[4:HEADER_LEN]), attrs)


def _secret(secret: bytes | str) -> bytes:
    s = secret.encode() if isinstance(secret, str) else bytes(secret)
    if not s:
        raise ValueError("the RADIUS shared secret is empty")
    return s


def _with_ma(data: bytes, value: bytes) -> bytes:
    """`data` with its (first) Message-Authenticator's value replaced."""
    i = HEADER_LEN
    while i < len(data):
        t, alen = data[i], data[i + 1]
        if t == MESSAGE_AUTHENTICATOR:
            if alen != 18:
                raise PacketError(f"Message-Authenticator of length {alen}, not 18")
            return data[:i + 2] + value + data[i + alen:]
        i += alen
    raise ValueError("packet has no Message-Authenticator")


def message_authenticator(data: bytes, secret: bytes | str, authenticator: bytes) -> bytes:
    """RFC 3579 §3.2: HMAC-MD5 over the packet with the Message-Authenticator
    value zeroed and `authenticator` in the header's authenticator field.
    Which authenticator depends on the packet: its own Request Authenticator
    for Access-Request and Status-Server; sixteen zero octets for
    Accounting-Request (its Request Authenticator covers the
    Message-Authenticator, so it cannot go in); the request's authenticator
    for replies to Access-Request and Status-Server."""
    work = _with_ma(data[:4] + authenticator + data[HEADER_LEN:], bytes(16))
    return hmac.new(_secret(secret), work, hashlib.md5).digest()


def _length(data: bytes) -> bytes:
    return data[:struct.unpack("!H", data[2:4])[0]]


def _hashed_request(code: int, identifier: int, attrs: Iterable[tuple[str, Any]],
                    secret: bytes | str, with_message_authenticator: bool, caller: str) -> bytes:
    s = _secret(secret)
    enc = encode_attributes(attrs)
    if any(t == MESSAGE_AUTHENTICATOR for t, _ in enc):
        raise ValueError(f"Message-Authenticator is added by {caller}, not passed in")
    if with_message_authenticator:
        enc.insert(0, (MESSAGE_AUTHENTICATOR, bytes(16)))
    data = _pack(code, identifier, bytes(16), enc)
    if with_message_authenticator:
        data = _with_ma(data, message_authenticator(data, s, bytes(16)))
    auth = hashlib.md5(data + s).digest()
    return data[:4] + auth + data[HEADER_LEN:]


def accounting_request(identifier: int, attrs: Iterable[tuple[str, Any]], secret: bytes | str,
                       *, with_message_authenticator: bool = True) -> bytes:
    """A signed Accounting-Request. The Message-Authenticator goes first (as
    RFC 3579 recommends against BlastRADIUS-style attacks): computed with a
    zero authenticator field, then the Request Authenticator (RFC 2866 §3,
    MD5 over the packet with a zero authenticator, then the secret) over the
    packet that already carries it."""
    return _hashed_request(ACCOUNTING_REQUEST, identifier, attrs, secret,
                           with_message_authenticator, "accounting_request")


def dynamic_request(code: int, identifier: int, attrs: Iterable[tuple[str, Any]],
                    secret: bytes | str, *, with_message_authenticator: bool = True) -> bytes:
    """A signed Disconnect-Request or CoA-Request (what a Dynamic
    Authorization Client sends; acctd receives them, tests send them).
    RFC 5176 §2.3 and §3.4 sign them as an Accounting-Request: the
    Message-Authenticator over a zero authenticator field, then the Request
    Authenticator over the packet that carries it."""
    if code not in (DISCONNECT_REQUEST, COA_REQUEST):
        raise ValueError(f"dynamic_request builds Disconnect-Request ({DISCONNECT_REQUEST}) or "
                         f"CoA-Request ({COA_REQUEST}), not code {code}")
    return _hashed_request(code, identifier, attrs, secret, with_message_authenticator,
                           "dynamic_request")


def request_authenticator_ok(data: bytes, secret: bytes | str) -> bool:
    """Whether the Request Authenticator of an Accounting-, Disconnect- or
    CoA-Request is MD5(Code+Identifier+Length+16 zero octets+Attributes+
    secret) (RFC 2866 §3, RFC 5176 §2.3). `data` must have passed decode."""
    data = _length(data)
    want = hashlib.md5(data[:4] + bytes(16) + data[HEADER_LEN:] + _secret(secret)).digest()
    return hmac.compare_digest(want, data[4:HEADER_LEN])


def verify_accounting_request(data: bytes, secret: bytes | str) -> Packet:
    """The packet if its Request Authenticator (and Message-Authenticator,
    when present) match `secret`; else PacketError."""
    s = _secret(secret)
    p = decode(data)
    data = _length(data)
    if p.code != ACCOUNTING_REQUEST:
        raise PacketError(f"expected Accounting-Request, got code {p.code}")
    if not request_authenticator_ok(data, s):
        raise PacketError("Accounting-Request authenticator does not match the secret")
    mas = p.raw("Message-Authenticator")
    if mas and not hmac.compare_digest(message_authenticator(data, s, bytes(16)), mas[0]):
        raise PacketError("Message-Authenticator does not match the secret")
    return p


def status_server(identifier: int, authenticator: bytes, secret: bytes | str,
                  attrs: Iterable[tuple[str, Any]] = ()) -> bytes:
    """RFC 5997 Status-Server: a random authenticator and a
    Message-Authenticator (which it must carry) over it."""
    enc = [(MESSAGE_AUTHENTICATOR, bytes(16))] + encode_attributes(attrs)
    data = _pack(STATUS_SERVER, identifier, authenticator, enc)
    return _with_ma(data, message_authenticator(data, secret, authenticator))


def response_authenticator(data: bytes, request_authenticator: bytes,
                           secret: bytes | str) -> bytes:
    """RFC 2865 §3 / RFC 2866 §3: MD5(Code+ID+Length+RequestAuth+Attributes+Secret)."""
    data = _length(data)
    return hashlib.md5(data[:4] + request_authenticator + data[HEADER_LEN:]
                       + _secret(secret)).digest()


def verify_response(data: bytes, request: bytes, secret: bytes | str,
                    *, require_message_authenticator: bool = False) -> Packet:
    """Check a reply against the request it answers (whole packets): the
    identifier, the Response Authenticator, and a Message-Authenticator
    where there is one. RFC 3579 computes a reply's Message-Authenticator
    with the request's authenticator; FreeRADIUS signs an
    Accounting-Response with a zero one, as for the Accounting-Request.
    Either proves the secret, so either is accepted. Raises PacketError."""
    s = _secret(secret)
    p = decode(data)
    data = _length(data)
    if p.identifier != request[1]:
        raise PacketError(f"reply identifier {p.identifier} does not match the request's "
                          f"{request[1]}")
    req_auth = request[4:HEADER_LEN]
    if not hmac.compare_digest(response_authenticator(data, req_auth, s), p.authenticator):
        raise PacketError(f"{CODES.get(p.code, p.code)} Response Authenticator does not "
                          f"match (wrong secret, or not a reply to this request)")
    mas = p.raw("Message-Authenticator")
    if mas:
        if not any(hmac.compare_digest(message_authenticator(data, s, a), mas[0])
                   for a in (req_auth, bytes(16))):
            raise PacketError("reply Message-Authenticator does not match the secret")
    elif require_message_authenticator:
        raise PacketError("reply has no Message-Authenticator")
    return p


def response(request: bytes, code: int, secret: bytes | str,
             attrs: Iterable[tuple[str, Any]] = (), *,
             with_message_authenticator: bool = False) -> bytes:
    """A signed reply to `request` (what a server sends): the CoA receiver's
    ACKs and NAKs, and in tests a scripted peer where no real one can
    misbehave on purpose. A reply's Message-Authenticator is computed with
    the request's authenticator (RFC 3579 §3.2, RFC 5176 §3.4), except an
    Accounting-Response to an Accounting-Request (zero, as FreeRADIUS)."""
    s = _secret(secret)
    enc = encode_attributes(attrs)
    if with_message_authenticator:
        enc.insert(0, (MESSAGE_AUTHENTICATOR, bytes(16)))
    data = _pack(code, request[1], request[4:HEADER_LEN], enc)
    if with_message_authenticator:
        zero = code == ACCOUNTING_RESPONSE and request[0] != STATUS_SERVER
        data = _with_ma(data, message_authenticator(
            data, s, bytes(16) if zero else request[4:HEADER_LEN]))
    return data[:4] + response_authenticator(data, request[4:HEADER_LEN], s) + data[HEADER_LEN:]


# --- Access-Request (RFC 2865 §4.1, §5.2) --------------------------------------------------

MAX_PASSWORD = 128


def hide_password(password: bytes | str, authenticator: bytes, secret: bytes | str) -> bytes:
    """User-Password as it goes on the wire: padded to 16-octet blocks, each
    XORed with MD5(secret + the previous block), the first with the Request
    Authenticator (RFC 2865 §5.2)."""
    p = password.encode() if isinstance(password, str) else bytes(password)
    if not p or len(p) > MAX_PASSWORD:
        raise ValueError(f"User-Password: 1-{MAX_PASSWORD} octets, got {len(p)}")
    p += bytes(-len(p) % 16)
    s, prev, out = _secret(secret), authenticator, b""
    for i in range(0, len(p), 16):
        key = hashlib.md5(s + prev).digest()
        prev = bytes(a ^ b for a, b in zip(p[i:i + 16], key))
        out += prev
    return out


def reveal_password(hidden: bytes, authenticator: bytes, secret: bytes | str) -> bytes:
    """The inverse of hide_password, less the zero padding; PacketError for
    a value that is not 16-128 octets in whole blocks."""
    if not 16 <= len(hidden) <= MAX_PASSWORD or len(hidden) % 16:
        raise PacketError(f"User-Password of {len(hidden)} octets: RFC 2865 §5.2 "
                          f"wants 16-{MAX_PASSWORD} in blocks of 16")
    s, prev, out = _secret(secret), authenticator, b""
    for i in range(0, len(hidden), 16):
        key = hashlib.md5(s + prev).digest()
        out += bytes(a ^ b for a, b in zip(hidden[i:i + 16], key))
        prev = hidden[i:i + 16]
    return out.rstrip(b"\0")


def access_request(identifier: int, authenticator: bytes, attrs: Iterable[tuple[str, Any]],
                   secret: bytes | str, *, password: str | bytes | None = None,
                   with_message_authenticator: bool = True) -> bytes:
    """An Access-Request (what a NAS sends; tests build hostile ones): a
    random `authenticator`, the password hidden under it, the
    Message-Authenticator first (the BlastRADIUS advice) over the whole."""
    enc = encode_attributes(attrs)
    if password is not None:
        enc.insert(0, (ATTRIBUTES["User-Password"][0],
                       hide_password(password, authenticator, secret)))
    if with_message_authenticator:
        enc.insert(0, (MESSAGE_AUTHENTICATOR, bytes(16)))
    data = _pack(ACCESS_REQUEST, identifier, authenticator, enc)
    if with_message_authenticator:
        data = _with_ma(data, message_authenticator(data, secret, authenticator))
    return data


def describe(p: Packet) -> str:
    """radclient-style text, for logs and test failures."""
    lines = [f"{CODES.get(p.code, p.code)} Id {p.identifier}"]
    for name, v in p.items():
        if isinstance(name, str) and isinstance(v, int) and name in VALUES:
            v = value_name(name, v)
        elif isinstance(v, bytes):
            v = "0x" + v.hex()
        elif isinstance(v, dt.datetime):
            v = int(v.timestamp())
        lines.append(f"\t{name} = {v}")
    return "\n".join(lines)
