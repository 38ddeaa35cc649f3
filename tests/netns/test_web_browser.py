"""The console as a person uses it: a real headless Chromium (Selenium and
Debian's chromedriver) against acctd-web, running as the unprivileged
`nobody` ([[user]] viewer), against a real acctd counting real traffic on
the testbed's gateway. Log in, open the overview and a unit, change the
period, download a CSV and check its numbers against `acctctl --json`, and
get refused at another subscriber's page; and the hotspot page behind a
TLS proxy opening a blocked unit's traffic in the kernel.

One topology, one daemon, one console and one browser serve the module.
Screenshots (1280x800 and 390 px wide) are kept in the directory printed
at the start (ACCTD_ARTIFACTS, else a tmp dir)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import pytest
from argon2 import PasswordHasher

from .gateway import STORED
from .topology import LINKS, Topology, remove_stale
from tests.ports import free_port
from tests.peer import missing_peer

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.slow]

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ACCTCTL = [sys.executable, "-m", "acctctl.main"]
SUB1, SUB2, SRV = LINKS["sub1"], LINKS["sub2"], LINKS["srv"]
WAIT = 15.0   # seconds for a page or a download, at most

CONFIG = STORED + """
[[user]]
name = "ops"
level = "operator"
password = "{ops}"
[[user]]
name = "console"
level = "viewer"
uid = 65534
[[policy]]
name = "ip"
target = "proto ip"
[[policy]]
name = "icmp"
target = "proto icmp"
[[unit]]
type = "host"
name = "alice"
ip = "{alice}"
acct-policy = ["ip", "icmp"]
[[unit]]
type = "host"
name = "bob"
ip = "{bob}"
[billing]
currency = "EUR"
[billing.subplan.1]
policy = "ip"
fee = "0.00"
included = "unlimited"
[billing.plan.1]
name = "home"
subplans = [1]
"""


@pytest.fixture(scope="module")
def artifacts():
    where = os.environ.get("ACCTD_ARTIFACTS") or tempfile.mkdtemp(prefix="acctd-web-artifacts-")
    os.makedirs(where, exist_ok=True)
    print(f"\nweb browser tier: screenshots and downloads in {where}")
    return where


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """The testbed, acctd on its gateway with a month of real traffic
    (alice pings srv, bob less), and the login records for alice and bob."""
    if os.geteuid() != 0:
        pytest.skip("needs root: namespaces and BPF")
    pytest.importorskip("bcc", reason="bcc (python3-bpfcc) builds the programs")
    remove_stale()
    # a directory nobody (the console) can enter, for the control socket
    run = tempfile.mkdtemp(prefix="acctd-web-run-")
    os.chmod(run, 0o755)
    tmp = tmp_path_factory.mktemp("web")
    sock = os.path.join(run, "acctd.sock")
    with Topology() as topo:
        cfg = tmp / "acctd.toml"
        cfg.write_text(CONFIG.format(db=tmp / "acctd.duckdb", alice=SUB1.v4(), bob=SUB2.v4(),
                                     ops=PasswordHasher().hash("ops-secret")))
        pin_root = f"/sys/fs/bpf/acctd-web-{os.getpid()}"
        d = subprocess.Popen([sys.executable, "-m", "acctd.daemon.main", "--config", str(cfg),
                              "--netns", topo.ns["gw"], "--pin-root", pin_root, "--socket",
                              sock, "--flows", "4096", "--addrs", "256"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = d.stdout.readline()
            assert line and json.loads(line)["event"] == "started", d.stderr.read()
            os.chmod(sock, 0o666)  # nobody may connect; who it is comes from SO_PEERCRED
            topo.ping("sub1", SRV.v4(), count=20, size=1000)
            topo.ping("sub2", SRV.v4(), count=5, size=200)
            ctl(sock, "flush")
            ctl(sock, "quota", "set", "alice", "month", "100K", "in")
            ctl(sock, "login", "set", "alice", "password", "alice-pass")
            ctl(sock, "login", "set", "bob", "password", "bob-pass1")
            ctl(sock, "unit", "bob", "sys-allow")  # bob's traffic passes (the rates on screen)
            ctl(sock, "billing", "account", "create", "home", "plan", "1", "unit", "name", "bob",
                "add", "balance", "add", "10", "password", "home-pass")
            yield sock, topo
        finally:
            d.terminate()
            try:
                d.wait(30)
            except subprocess.TimeoutExpired:
                d.kill()
            subprocess.run([*ACCTCTL, "--pin-root", pin_root, "--netns", topo.ns["gw"],
                            "detach", "--force"], capture_output=True)
            shutil.rmtree(pin_root, ignore_errors=True)
            shutil.rmtree(run, ignore_errors=True)


def ctl(sock: str, *args: str):
    r = subprocess.run([*ACCTCTL, "--socket", sock, *args], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout) if "--json" in args else r.stdout


def start_console(sock: str, *extra: str) -> tuple[str, subprocess.Popen]:
    """acctd-web as nobody, on a free loopback port: its URL and process."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.Popen([sys.executable, "-m", "acctd.web.main", "--socket", sock,
                          "--listen", f"127.0.0.1:{port}", *extra], user=65534, group=65534,
                         extra_groups=[], env=env, cwd="/", stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    give_up = time.monotonic() + WAIT
    while True:
        try:
            urllib.request.urlopen(url + "/login", timeout=1)
            return url, p
        except OSError:
            if p.poll() is not None or time.monotonic() > give_up:
                p.kill()
                raise AssertionError(f"acctd-web did not start: {p.stderr.read()}") from None
            time.sleep(0.1)


@pytest.fixture(scope="module")
def console(gateway):
    url, p = start_console(gateway[0])
    yield url
    p.terminate()
    p.wait(10)


@pytest.fixture(scope="module")
def browser(artifacts):
    try:
        from selenium import webdriver
    except ImportError:
        missing_peer("selenium is not installed (pip install -e '.[test]')")
    if not (os.access(CHROMIUM, os.X_OK) and os.access(DRIVER, os.X_OK)):
        missing_peer("Debian's chromium and chromium-driver are not installed")
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,800", "--hide-scrollbars"):
        opts.add_argument(a)
    opts.add_experimental_option("prefs", {"download.default_directory": artifacts,
                                           "download.prompt_for_download": False})
    b = webdriver.Chrome(service=Service(DRIVER), options=opts)
    b.set_page_load_timeout(WAIT)
    yield b
    b.quit()


def shot(b, artifacts: str, name: str, width: int = 1280, height: int = 800) -> str:
    """A screenshot at this window size; the whole page's height on a phone."""
    b.set_window_size(width, height)
    if width < 600:
        full = b.execute_script("return document.documentElement.scrollHeight")
        b.set_window_size(width, min(max(height, full), 2400))
    time.sleep(0.3)  # the chart redraws on resize
    path = os.path.join(artifacts, f"{name}-{width}.png")
    b.save_screenshot(path)
    b.set_window_size(1280, 800)
    return path


def log_in(b, url: str, name: str, password: str, unit: bool = False,
           account: bool = False) -> None:
    from selenium.webdriver.common.by import By
    b.delete_all_cookies()
    b.get(url + "/login")
    b.find_element(By.ID, "name").send_keys(name)
    b.find_element(By.ID, "password").send_keys(password)
    if unit:
        b.find_element(By.ID, "kind-unit").click()
    if account:
        b.find_element(By.ID, "kind-account").click()
    b.find_element(By.ID, "login").click()


def wait_for(fn, what: str):
    give_up = time.monotonic() + WAIT
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > give_up:
            raise AssertionError(f"waited {WAIT:g} s for {what}")
        time.sleep(0.1)


def cell_texts(b, table: str) -> list[list[str]]:
    from selenium.webdriver.common.by import By
    return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in b.find_elements(By.CSS_SELECTOR, f"#t-{table} tbody tr")]


def test_an_operator_reads_the_overview_and_a_unit_and_downloads_its_csv(
        gateway, console, browser, artifacts):
    from selenium.webdriver.common.by import By
    b = browser
    sock, topo = gateway
    log_in(b, console, "ops", "ops-secret")
    wait_for(lambda: b.current_url == console + "/", "the overview after login")
    pinging = topo.popen("sub2", ["ping", "-q", "-i", "0.01", "-s", "1400", SRV.v4()])
    time.sleep(1.5)
    b.refresh()  # the rates of bob's pings, since the first load
    top = ctl(sock, "top-units", "--period", "month", "--json")
    assert [u["unit"] for u in top["units"]] == ["alice", "bob"]
    rows = cell_texts(b, "top_units")
    assert [r[0] for r in rows] == ["alice", "bob"]
    from acctd.common.display import format_bytes
    assert rows[0][1:] == [format_bytes(top["units"][0][k]) for k in ("bytes_in", "bytes_out",
                                                                      "bytes")]
    health = dict(r for r in cell_texts(b, "health"))
    assert health["failed drains in a row"] == "0"
    shot(b, artifacts, "overview")
    shot(b, artifacts, "overview", 390)
    # the top addresses of the month, as `acctctl top-by`, each with its rate now
    addrs = ctl(sock, "top-by", "addr", "--period", "month", "--json")["rows"]
    got = cell_texts(b, "top_addrs")
    assert [r[:4] for r in got] == [[x["key"], x["unit"] or "-",
                                     *(format_bytes(x[k]) for k in ("bytes_in", "bytes_out"))]
                                    for x in addrs]
    assert [r[:2] for r in got[:2]] == [[SUB1.v4(), "alice"], [SUB2.v4(), "bob"]]
    assert next(r for r in got if r[0] == SUB2.v4())[4] != "0 bit/s"  # bob is pinging
    pinging.kill()

    # the period is in the URL: a link anyone can be sent
    b.find_element(By.LINK_TEXT, "day").click()
    wait_for(lambda: "period=day" in b.current_url, "period=day in the URL")
    assert "Top 10 units, day from" in b.find_element(By.CSS_SELECTOR, "#t-top_units h2").text

    b.find_element(By.CSS_SELECTOR, "#t-top_units a[href='/unit/alice']").click()
    wait_for(lambda: b.find_elements(By.CSS_SELECTOR, "#chart[data-ready='1'] canvas"),
             "the unit's chart")
    legend = [e.text for e in b.find_elements(By.CSS_SELECTOR, "#chart .u-legend th")]
    assert {"(all) in", "(all) out", "icmp in", "ip in"} <= {t.strip() for t in legend}
    # alice's month: 20 echo replies of 1028 IP bytes in, against 100 KiB
    assert [e.text for e in b.find_elements(By.CSS_SELECTOR, ".bar span")] == \
        ["month in", f"{100 * 20 * 1028 / 102400:.1f}%"]
    shot(b, artifacts, "unit")
    shot(b, artifacts, "unit", 390)

    b.find_element(By.LINK_TEXT, "hour").click()
    wait_for(lambda: "view=hour" in b.current_url, "view=hour in the URL")
    wait_for(lambda: b.find_elements(By.CSS_SELECTOR, "#chart[data-ready='1'] canvas"),
             "the hourly chart")
    target = os.path.join(artifacts, "unit-alice-series.csv")
    if os.path.exists(target):
        os.unlink(target)
    b.find_element(By.CSS_SELECTOR, "#t-series a.dl").click()
    wait_for(lambda: os.path.exists(target) and os.path.getsize(target), "the CSV download")
    with open(target) as f:
        got = [(r["start"], r["policy"], r["dir"], int(r["packets"]), int(r["bytes"]))
               for r in csv.DictReader(f)]
    want = ctl(sock, "series", "alice", "--view", "hour", "--json")
    assert got == [(r["start"], r["policy"], r["dir"], r["packets"], r["bytes"])
                   for r in want["rows"]]
    # alice's 20 echo requests of 1000 payload bytes went out: 20 x 1028 IP bytes
    assert ("(all)", "out", 20, 20 * 1028) in [g[1:] for g in got]

    b.find_element(By.LINK_TEXT, "Sessions").click()
    wait_for(lambda: b.find_elements(By.ID, "t-logins"), "the sessions page")
    logins = ctl(sock, "login", "show", "--json")
    assert [r[0] for r in cell_texts(b, "logins")] == [r["oid"] for r in logins["rows"]]
    b.find_element(By.LINK_TEXT, "Accounts").click()
    wait_for(lambda: b.find_elements(By.TAG_NAME, "h1"), "the accounts page")
    assert '<a href="/account?name=home">home</a>' in b.page_source


def test_a_subscriber_sees_their_unit_and_is_refused_at_another(gateway, console, browser,
                                                                artifacts):
    from selenium.webdriver.common.by import By
    b = browser
    log_in(b, console, "bob", "bob-pass1", unit=True)
    wait_for(lambda: b.current_url == console + "/unit/bob", "bob's own page")
    wait_for(lambda: b.find_elements(By.CSS_SELECTOR, "#chart[data-ready='1'] canvas"),
             "bob's chart")
    assert "Overview" not in b.find_element(By.TAG_NAME, "nav").text
    b.get(console + "/unit/alice")
    assert b.find_element(By.ID, "error").text == "permission denied: bob may see only their own unit"
    b.get(console + "/unit/alice?format=csv&table=series")
    assert "bob may see only their own unit" in b.page_source
    shot(b, artifacts, "refused")


def test_an_account_holder_blocks_their_own_account_and_the_kernel_drops_its_units(
        gateway, console, browser, artifacts):
    """NeTAMS beblock from the account page: bob's account `home`, logged
    in with billing's password; Block drops bob's traffic in the kernel
    (sys-deny-money), Unblock lets it pass again."""
    from selenium.webdriver.common.by import By
    b = browser
    sock, topo = gateway
    log_in(b, console, "home", "home-pass", account=True)
    wait_for(lambda: b.current_url == console + "/account", "the holder's account page")
    assert b.find_element(By.CSS_SELECTOR, "#t-account_units a[href='/unit/bob']").text == "bob"
    shot(b, artifacts, "account")
    shot(b, artifacts, "account", 390)
    b.find_element(By.ID, "beblock-button").click()
    wait_for(lambda: b.find_elements(By.ID, "unblock-button"), "the account blocked")
    assert "BLOCKED (beblock)" in b.find_element(By.CSS_SELECTOR, "pre.statement").text
    assert ctl(sock, "blocked", "--json")[SUB2.v4()] == ["sys-deny-money"]
    assert topo.ping("sub2", SRV.v4(), count=3, interval=0.05).received == 0
    b.find_element(By.ID, "unblock-button").click()
    wait_for(lambda: b.find_elements(By.ID, "beblock-button"), "the account unblocked")
    assert SUB2.v4() not in ctl(sock, "blocked", "--json")
    assert topo.ping("sub2", SRV.v4(), count=3, interval=0.05).received == 3
    b.get(console + "/unit/alice")
    assert b.find_element(By.ID, "error").text == \
        "permission denied: home may see only their own account's units (bob)"


def test_the_hotspot_page_opens_a_blocked_unit_from_its_address(gateway):
    """Behind a TLS proxy (its X-Forwarded-* headers, as nginx sends them):
    alice, blocked by her login record, logs in at /hotspot from her own
    address, and her traffic passes in the kernel."""
    sock, topo = gateway
    assert topo.ping("sub1", SRV.v4(), count=3, interval=0.05).received == 0  # blocked
    url, p = start_console(sock, "--behind-tls")
    proxy = {"X-Forwarded-For": SUB1.v4(), "X-Forwarded-Proto": "https"}
    try:
        with urllib.request.urlopen(urllib.request.Request(url + "/hotspot", headers=proxy)) as r:
            page = r.read().decode()
            pre = next(c for c in r.headers.get_all("Set-Cookie") if c.startswith("acctd_login"))
        assert f"From {SUB1.v4()}" in page and "Secure" in pre
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        form = urllib.parse.urlencode({"user": "alice", "password": "alice-pass",
                                       "action": "login", "csrf": csrf}).encode()
        req = urllib.request.Request(url + "/hotspot", data=form, headers={
            **proxy, "Cookie": pre.split(";", 1)[0]})
        with urllib.request.urlopen(req) as r:
            assert f"OK: login success from ip:{SUB1.v4()}" in r.read().decode()
    finally:
        p.terminate()
        p.wait(10)
    assert topo.ping("sub1", SRV.v4(), count=3, interval=0.05).received == 3
