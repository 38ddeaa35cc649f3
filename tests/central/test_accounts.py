"""Billing accounts across gateways: made or changed on one, in PostgreSQL
and on the others (NOTIFY), again after a reconnect; the last change wins."""

import threading

import pytest

from acctd.errors import Conflict
from acctd.kernel.abi import SysPolicy
from acctd.services.billing.service import BillingService
from tests.central.gateways import gateway, status, wait
from tests.central.test_ledger import ACCOUNT, BILLING, bits

pytestmark = pytest.mark.peers


def shown(d, name: str = "acc") -> str:
    return d.service(BillingService).account_show(name)["text"]


def test_an_account_made_on_one_gateway_and_changed_on_another_is_everywhere(
        cluster, central_dsn, tmp_path):
    with gateway(central_dsn, "gw-a", tmp_path, extra=BILLING) as a, \
            gateway(central_dsn, "gw-b", tmp_path, extra=BILLING) as b:
        wait(lambda: status(a)["state"] == status(b)["state"] == "connected")
        a.service(BillingService).account_create("acc", ACCOUNT)
        want = "Name acc (000001) ACTIVE bal: 0.00 cred_lim: -10.00 plan: metered\n"
        # made in two steps (create, then its words): b ends at the second
        wait(lambda: "acc" in b.service(BillingService).account_show()["text"] and
             shown(b) == want)
        assert b.service(BillingService).account_show("acc")["account"]["units"] == \
            [b.snapshot.unit("alice").oid]
        # blocked by the operator on b: a's kernel holds alice too
        b.service(BillingService).account_set("acc", ["block", "credit-limit", "-20"])
        wait(lambda: bits(a, "alice") == SysPolicy.MONEY, timeout=2)
        # the block (NOTIFY acctd_block) may reach a's kernel before the account's words do
        blocked = "Name acc (000001) BLOCKED (block) bal: 0.00 cred_lim: -20.00 plan: metered\n"
        wait(lambda: shown(a) == blocked, timeout=2)
        # changed while the server is away: the others have it after the reconnect
        cluster.kill9()
        try:
            wait(lambda: status(a)["state"] == "unreachable")
            a.service(BillingService).account_set("acc", ["unblock"])
        finally:
            cluster.start()
        wait(lambda: shown(b).startswith("Name acc (000001) ACTIVE"), timeout=20)
        wait(lambda: bits(a, "alice") == bits(b, "alice") == 0, timeout=5)


def oids(d) -> dict[str, int]:
    with d.lock:
        return {a.name: a.oid for a in d.service(BillingService).accounts.values()}


def test_two_gateways_making_accounts_at_once_never_make_one_oid(cluster, central_dsn,
                                                                   tmp_path):
    with gateway(central_dsn, "gw-a", tmp_path, extra=BILLING) as a, \
            gateway(central_dsn, "gw-b", tmp_path, extra=BILLING) as b:
        wait(lambda: status(a)["state"] == status(b)["state"] == "connected")
        names = {a: [f"a{i}" for i in range(8)], b: [f"b{i}" for i in range(8)]}
        errors = []

        def make(d):
            try:
                for n in names[d]:
                    d.service(BillingService).account_create(n)
            except Exception as e:   # noqa: BLE001 - reported below
                errors.append(e)
        threads = [threading.Thread(target=make, args=(d,)) for d in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        everyone = sorted(names[a] + names[b])
        wait(lambda: sorted(oids(a)) == sorted(oids(b)) == everyone)
        assert oids(a) == oids(b)
        assert sorted(oids(a).values()) == list(range(1, 17))
        # while the server is away, no account is made, and the reply says why
        cluster.kill9()
        try:
            wait(lambda: status(a)["state"] == "unreachable")
            with pytest.raises(Conflict, match=r"^account 'late' not made: the central "
                               r"PostgreSQL is unreachable \(.*\) and account oids come "
                               r"from it"):
                a.service(BillingService).account_create("late")
        finally:
            cluster.start()
        assert "late" not in oids(a)
