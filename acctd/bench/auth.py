"""`make bench`, authorization: what one Access-Request costs acctd's
RADIUS server (acctd.aaa.radius_auth), as JSON lines {"name", "value",
"unit"}. The wire side (Message-Authenticator, password, cache, signed
reply) with a decider that accepts at once; the discard of junk; a
retransmission from the cache; and the argon2id check of a password with
the production parameters, which dominates a real decision. No sockets."""

from __future__ import annotations

import logging
import os
import tempfile
import time

from acctd.aaa import radius
from acctd.aaa.radius_auth import AuthReceiver, AuthSettings, Verdict
from acctd.bench.control import emit

SECRET = b"bench secret"


class Accept:
    def authorize(self, req):
        return Verdict(True, "", (("Session-Timeout", 3600), ("Acct-Interim-Interval", 300)))


def per_second(fn, n: int) -> float:
    t = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t)


def main() -> None:
    logging.getLogger("acctd.radius_auth").setLevel(logging.ERROR)   # the junk is logged
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "secret")
        with open(path, "wb") as f:
            f.write(SECRET)
        os.chmod(path, 0o600)
        settings = AuthSettings.from_mapping(
            {"clients": [{"address": "127.0.0.0/8", "secret-file": path}]}, base=d)
    r = AuthReceiver(settings, Accept())
    reqs = [radius.access_request(i % 256, os.urandom(16), [("User-Name", f"u{i}")], SECRET,
                                  password="pw") for i in range(10000)]   # within the cache
    emit("auth_wire_accepts_per_s",
         per_second(lambda i: r.handle(reqs[i], ("127.0.0.1", 1000 + i)), len(reqs)), "req/s")
    emit("auth_retransmissions_per_s",
         per_second(lambda i: r.handle(reqs[i], ("127.0.0.1", 1000 + i)), len(reqs)), "req/s")
    junk = [os.urandom(64) for _ in range(20000)]
    emit("auth_junk_discards_per_s",
         per_second(lambda i: r.handle(junk[i], ("127.0.0.1", 9)), len(junk)), "req/s")
    from argon2 import PasswordHasher
    h = PasswordHasher()
    stored = h.hash("password")
    t = time.perf_counter()
    for _ in range(5):
        h.verify(stored, "password")
    emit("auth_argon2id_verify_ms", (time.perf_counter() - t) / 5 * 1000, "ms")


if __name__ == "__main__":
    main()
