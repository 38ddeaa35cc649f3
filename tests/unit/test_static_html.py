"""The static HTML reports' choices (client-pages, display-health, display-top)
against the stub daemon of test_cli_output (real storage and commands, no
kernel: no health, which needs the datapath). The pages with real traffic,
.htaccess and a schedule are in tests/netns/test_reports.py."""

import json

import pytest

from acctd.errors import BadRequest
from acctd.web.static_site import HtmlSettings, write

from . import test_cli_output

srv = test_cli_output.srv  # its daemon, as a fixture here


def page_data(path) -> dict:
    text = path.read_text()
    return json.loads(text.split('id="page-data">', 1)[1].split("</script>", 1)[0])


def test_groups_only_writes_the_group_pages_with_their_members(srv, tmp_path):
    d = srv.daemon
    res = write(d.call, HtmlSettings(client_pages="groups", display_health=False,
                                     display_top=1), str(tmp_path))
    assert res["written"] == ["index.html", "groups/customers.html"]
    index = page_data(tmp_path / "index.html")
    assert "health" not in index
    month = d.call("top-units", period="month", limit=1)["units"]
    assert index["top_units_month"] == [
        {k: r[k] for k in ("unit", "bytes_in", "bytes_out", "bytes")} for r in month]
    alice = d.call("top-units", period="month", limit=10)["units"][0]
    assert alice["unit"] == "alice" and alice["bytes_in"] > 0
    assert page_data(tmp_path / "groups/customers.html")["members"] == [
        {"unit": "alice", "type": "host", "bytes_in": alice["bytes_in"],
         "bytes_out": alice["bytes_out"]}]
    assert '<a href="groups/customers.html">customers</a>' in \
        (tmp_path / "index.html").read_text()


def test_none_writes_the_index_only_and_a_unit_name_is_never_a_path(srv, tmp_path):
    d = srv.daemon
    res = write(d.call, HtmlSettings(client_pages="none", display_health=False), str(tmp_path))
    assert res["written"] == ["index.html"]
    bob = d.call("units", name="bob")[0]
    res = write(d.call, HtmlSettings(display_health=False, htaccess=True), str(tmp_path / "all"),
                staff=["ops"])
    assert f"units/oid-{bob['oid']}/index.html" in res["written"]
    assert (tmp_path / "all" / f"units/oid-{bob['oid']}/.htaccess").read_text().endswith(
        "Require user [red]bob ops\n")
    with pytest.raises(BadRequest, match="html: no directory: give --path DIR or set "
                                         r"\[html\] path"):
        write(d.call, HtmlSettings(display_health=False))


def test_another_directory_is_an_admins_to_choose(srv, tmp_path):
    from acctd.control.access import Level
    from acctd.control.dispatch import Caller
    from acctd.errors import PermissionDenied
    ops = Caller(4242, "ops", Level.OPERATOR)
    with pytest.raises(PermissionDenied) as e:
        srv.daemon.dispatcher.handle({"cmd": "html", "args": {"path": str(tmp_path)}}, ops)
    assert str(e.value) == ("html --path needs level admin; ops is operator (it writes the "
                            "[html] path)")
    assert list(tmp_path.iterdir()) == []


def test_listed_groups_write_their_own_members_pages_only(srv, tmp_path):
    """client-pages = ["customers"] (NeTAMS client-pages group G1): the
    group's page and its members' (alice), not bob's; notices link alice's
    page and give bob the index."""
    from acctd.web.static_site import page_url
    d = srv.daemon
    s = HtmlSettings(client_pages=("customers",), display_health=False,
                     url="https://stats.isp.example/")
    res = write(d.call, s, str(tmp_path))
    assert res["written"] == ["index.html", "groups/customers.html", "units/alice/index.html"]
    assert '<a href="../units/alice/index.html">alice</a>' in \
        (tmp_path / "groups/customers.html").read_text()
    alice, bob = (d.call("units", name=n)[0] for n in ("alice", "bob"))
    assert page_url(s, alice) == "https://stats.isp.example/units/alice/index.html"
    assert page_url(s, bob) == "https://stats.isp.example/"


def test_account_pages_need_billing(srv, tmp_path):
    res = write(srv.daemon.call, HtmlSettings(client_pages="none", account_pages="all",
                                              display_health=False), str(tmp_path))
    assert res["written"] == ["index.html"]
    assert "accounts/index.html" not in (tmp_path / "index.html").read_text()


@pytest.fixture
def billed(tmp_path):
    """The real billing and invoicing services (test_web's holders): acme
    holds alice, is postpaid and was invoiced for November; beta holds bob."""
    import datetime as dt

    from acctd.config import loads
    from acctd.services.billing.invoicing import InvoicingService

    from .daemon_stub import daemon_stub
    from .test_web import BILLING, CONFIG, NOW
    clock = [NOW - dt.timedelta(days=20)]
    with daemon_stub(loads(CONFIG + BILLING, "t.toml"), tmp_path=tmp_path,
                     clock=lambda: clock[0]) as d:
        d.call("billing-account-create", name="acme", words=[
            "plan", "2", "unit", "name", "alice", "add", "balance", "add", "20.00"])
        d.call("billing-account-create", name="beta",
               words=["plan", "2", "unit", "name", "bob", "add"])
        d.call("billing-terms", account="acme", words=["postpaid"])
        clock[0] = NOW
        d.service(InvoicingService).tick()
        yield d


def test_account_pages_show_each_account_and_keep_its_invoices(billed, tmp_path):
    """account-pages = "all" (NeTAMS): a list of the accounts and a page per
    account with what the console's account page shows (its balance, units
    linked to their pages, ledger, plan, invoices), each invoice's text
    beside it; .htaccess lets a holder read only their own directory."""
    d = billed
    res = write(d.call, HtmlSettings(account_pages="all", display_health=False, htaccess=True),
                str(tmp_path), staff=["ops"])
    (bill,) = d.call("billing-invoices", account="acme")["invoices"]
    month = bill["month"]
    assert {"accounts/index.html", "accounts/acme/index.html", "accounts/beta/index.html",
            f"accounts/acme/invoice-{month}.txt", "accounts/.htaccess",
            "accounts/acme/.htaccess"} <= set(res["written"])
    assert (tmp_path / f"accounts/acme/invoice-{month}.txt").read_text() == \
        d.call("billing-invoice", account="acme", month=month)["text"]
    assert '<a href="accounts/index.html">billing accounts</a>' in \
        (tmp_path / "index.html").read_text()
    listing = (tmp_path / "accounts/index.html").read_text()
    assert '<a href="../accounts/acme/index.html">acme</a>' in listing
    assert [a["name"] for a in page_data(tmp_path / "accounts/index.html")["accounts"]] == \
        ["acme", "beta"]
    acme = page_data(tmp_path / "accounts/acme/index.html")
    one = d.call("billing-account", account="acme", full=True)["account"]
    assert {"what": "balance", "value": one["balance"]} in acme["account"]
    assert acme["account_units"] == [{"unit": "alice"}]
    assert [r["amount"] for r in acme["ledger"]] == \
        [r["amount"] for r in d.call("billing-ledger", account="acme")["rows"]]
    assert [r["number"] for r in acme["invoices"]] == [bill["number"]]
    html = (tmp_path / "accounts/acme/index.html").read_text()
    assert '<a href="../../units/alice/index.html">alice</a>' in html
    assert f'<a href="invoice-{month}.txt">{bill["number"]}</a>' in html
    assert page_data(tmp_path / "accounts/beta/index.html")["invoices"] == []
    assert (tmp_path / "accounts/.htaccess").read_text().endswith("Require user ops\n")
    assert (tmp_path / "accounts/acme/.htaccess").read_text().endswith("Require user acme ops\n")
