"""Reports against a real acctd counting real traffic on the testbed's
gateway (the browser tier's testbed and daemon, test_web_browser.py):
Prometheus /metrics from acctd-web (as nobody, the console's viewer
[[user]]), scraped by a real Prometheus (Debian `prometheus`) on loopback
and checked by `promtool check metrics`; and the static HTML pages of
`acctctl html`, by hand and from a schedule. Their numbers are those of
`acctctl --json`."""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from . import test_web_browser as browser_tier
from tests.ports import free_port
from tests.peer import missing_peer

gateway = browser_tier.gateway  # the module's testbed and daemon, a fixture
ctl, start_console = browser_tier.ctl, browser_tier.start_console

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.slow]

PROMETHEUS, PROMTOOL = "/usr/bin/prometheus", "/usr/bin/promtool"
WAIT = 20.0  # seconds for Prometheus to start and scrape, at most


@pytest.fixture(scope="module")
def metrics_console(gateway):
    url, p = start_console(gateway[0], "--metrics-top-units", "5")
    yield url
    p.terminate()
    p.wait(10)


OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


def scrape(url: str, accept: str = OPENMETRICS) -> tuple[str, str]:
    """As Prometheus asks (OpenMetrics first), or as another client does."""
    req = urllib.request.Request(url + "/metrics", headers={"Accept": accept})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers["Content-Type"], r.read().decode()


def samples(text: str) -> dict[tuple, float]:
    """(sample name, sorted labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_metrics_equal_the_daemons_status(gateway, metrics_console):
    sock, _ = gateway
    ctl(sock, "flush")
    kind, text = scrape(metrics_console)
    status = ctl(sock, "status", "--json")
    top = ctl(sock, "top-units", "--period", "month", "--limit", "5", "--json")
    assert kind.startswith("application/openmetrics-text")
    assert text.endswith("# EOF\n")
    got = samples(text)
    dp = status["datapath"]
    for cause, v in dp["dropped"].items():
        assert got[("acctd_dropped_packets_total", (("cause", cause),))] == v["packets"]
        assert got[("acctd_dropped_bytes_total", (("cause", cause),))] == v["bytes"]
    for name, f in dp["fill"].items():
        assert got[("acctd_map_max_entries", (("map", name),))] == f["max"]
    assert got[("acctd_drains_total", ())] >= status["drains"] > 0
    # each hook's packets and bytes, exactly what the kernel counted (no traffic meanwhile)
    assert {v["role"] for v in dp["interfaces"].values()} == {"lan", "wan"}
    for name, v in dp["interfaces"].items():
        for k in ("packets", "bytes"):
            for d in ("in", "out"):
                key = (f"acctd_interface_{k}_total",
                       (("direction", d), ("interface", name), ("role", v["role"])))
                assert got[key] == v[f"{k}_{d}"], key
    assert got[("acctd_interface_bytes_total",
                (("direction", "in"), ("interface", "lan1"), ("role", "lan")))] > 20 * 1000
    # opt-in: this month's bytes of the top units, exactly `acctctl top-units`
    alice = next(r for r in top["units"] if r["unit"] == "alice")
    assert alice["bytes_in"] > 20 * 1000
    assert got[("acctd_unit_month_bytes", (("direction", "in"), ("unit", "alice")))] == \
        alice["bytes_in"]
    assert got[("acctd_unit_month_bytes", (("direction", "out"), ("unit", "alice")))] == \
        alice["bytes_out"]
    # never a series per address
    assert not any("addr" in k for _, labels in got for k, _ in labels)
    # blocked units per reason, as `acctctl units --sys-policy` lists them
    blocked = ctl(sock, "units", "--sys-policy", "--json")
    want = collections.Counter(w for u in blocked for w in u["sys_policy"])
    assert want, blocked
    assert {dict(labels)["reason"]: v for (n, labels), v in got.items()
            if n == "acctd_blocked_units"} == want


def test_promtool_accepts_the_names(metrics_console):
    if not os.access(PROMTOOL, os.X_OK):
        missing_peer("Debian's prometheus (promtool) is not installed")
    # promtool (2.42) reads the classic text format: the same families
    kind, text = scrape(metrics_console, accept="*/*")
    assert kind.startswith("text/plain; version=0.0.4")
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout + r.stderr == ""


def test_a_real_prometheus_scrapes_the_month_bytes(gateway, metrics_console):
    if not os.access(PROMETHEUS, os.X_OK):
        missing_peer("Debian's prometheus is not installed")
    sock, _ = gateway
    target = urllib.parse.urlsplit(metrics_console).netloc
    tmp = tempfile.mkdtemp(prefix="acctd-prom-")
    cfg = os.path.join(tmp, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                f"scrape_configs:\n  - job_name: acctd\n    static_configs:\n"
                f"      - targets: ['{target}']\n")
    port = free_port()
    p = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={tmp}/db",
                          f"--web.listen-address=127.0.0.1:{port}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        want = next(r for r in ctl(sock, "top-units", "--period", "month", "--limit", "5",
                                   "--json")["units"] if r["unit"] == "alice")["bytes_in"]
        q = urllib.parse.quote('acctd_unit_month_bytes{unit="alice",direction="in"}')
        give_up = time.monotonic() + WAIT
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?query={q}",
                                            timeout=2) as r:
                    result = json.load(r)["data"]["result"]
                if result:
                    break
            except (OSError, urllib.error.URLError):
                pass
            if p.poll() is not None or time.monotonic() > give_up:
                p.kill()
                raise AssertionError(f"prometheus scraped nothing: {p.stderr.read()[-2000:]}")
            time.sleep(0.3)
        assert result[0]["metric"]["job"] == "acctd"
        assert int(result[0]["value"][1]) == want
    finally:
        p.terminate()
        p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


# -- static HTML reports (acctctl html) ---------------------------------------------------

def page_data(path: str) -> dict:
    """The exact numbers a page carries (its tables as JSON)."""
    with open(path) as f:
        text = f.read()
    return json.loads(text.split('<script type="application/json" id="page-data">', 1)[1]
                      .split("</script>", 1)[0])


def test_html_writes_pages_with_the_numbers_of_acctctl(gateway, tmp_path):
    sock, _ = gateway
    ctl(sock, "flush")
    out = tmp_path / "www"
    assert ctl(sock, "html", "--path", str(out), "--htaccess") == \
        f"6 files written under {out}\n"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        ".htaccess", "index.html", "units", "units/alice", "units/alice/.htaccess",
        "units/alice/index.html", "units/bob", "units/bob/.htaccess", "units/bob/index.html"]
    index = page_data(out / "index.html")
    for period in ("day", "month", "year"):
        top = ctl(sock, "top-units", "--period", period, "--limit", "10", "--json")
        assert index[f"top_units_{period}"] == [
            {k: r[k] for k in ("unit", "bytes_in", "bytes_out", "bytes")} for r in top["units"]]
    assert index["top_units_month"][0]["unit"] == "alice"
    assert index["top_units_month"][0]["bytes_in"] > 20 * 1000
    health = {r["what"]: r["value"] for r in index["health"]}
    assert health["dropped bytes"] == ctl(sock, "status", "--json")["datapath"]["dropped_bytes"]
    series = ctl(sock, "series", "alice", "--view", "day", "--json")
    alice = page_data(out / "units/alice/index.html")
    assert alice["series"] == [{k: r[k] for k in ("start", "policy", "dir", "packets", "bytes")}
                               for r in series["rows"]]
    assert sum(r["bytes"] for r in alice["series"] if r["policy"] == "(all)"
               and r["dir"] == "in") == series["total"]["in"] > 20 * 1000
    page = (out / "units/alice/index.html").read_text()
    assert "uPlot" in page and 'id="chart-data"' in page          # the chart, inlined
    assert "<script src=" not in page and "<link" not in page     # nothing to fetch
    assert 'href="../../index.html"' in page
    assert '<a href="units/alice/index.html">' in (out / "index.html").read_text()
    users = out / ".htpasswd"
    assert (out / ".htaccess").read_text() == (
        f'AuthType Basic\nAuthName "acctd traffic"\nAuthUserFile {users}\n'
        "Require user ops console\n")
    assert (out / "units/alice/.htaccess").read_text() == (
        f'AuthType Basic\nAuthName "acctd traffic"\nAuthUserFile {users}\n'
        "Require user alice ops console\n")


def test_a_schedule_writes_the_pages(gateway, tmp_path):
    sock, _ = gateway
    out = tmp_path / "scheduled"
    added = ctl(sock, "schedule", "add", "time", "1sec", "action", f"html path {out}")
    oid = added.split()[2]
    try:
        give_up = time.monotonic() + WAIT
        while not (out / "units/bob/index.html").exists():
            assert time.monotonic() < give_up, "the scheduled html wrote nothing"
            time.sleep(0.2)
    finally:
        ctl(sock, "schedule", "del", oid)
    top = ctl(sock, "top-units", "--period", "month", "--limit", "10", "--json")
    assert page_data(out / "index.html")["top_units_month"][1] == {
        k: top["units"][1][k] for k in ("unit", "bytes_in", "bytes_out", "bytes")}
    assert not (out / ".htaccess").exists()    # not asked for
