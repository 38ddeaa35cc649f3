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
