"""The captive portal in a real headless browser (Debian's chromium and
chromedriver, driven by selenium) inside a subscriber's namespace: a host
with a login record is blocked; its browser asking the server for a page
gets the login page (the kernel lets its port 80 through, nftables DNATs
it to acctd's page); logging in there lifts the block, the same URL then
shows the server's own page, and the host's traffic passes and is counted."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time

import pytest

from .gateway import STORED, all_traffic
from .topology import LINKS
from acctd.aaa.captive import in_netns

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.peers]

SUB2, SRV = LINKS["sub2"], LINKS["srv"]
PORTAL_PORT = 8080

CONFIG = STORED + """
[captive]
listen = "{portal}:{port}"
interface = "{iface}"
[[policy]]
name = "ip"
target = "proto ip"
[[unit]]
type = "host"
name = "bob"
ip = "{bob}"
"""


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-proxy-server",
              "--disable-background-networking", "--disable-component-update"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    drv.set_page_load_timeout(20)
    return drv


def shows(drv, element: str, text: str, timeout: float = 10.0) -> None:
    """Wait for the page a click loads (the old one is there until it does)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def seen(d):
        try:
            return d.find_element(By.ID, element).text == text
        except StaleElementReferenceException:
            return False
    WebDriverWait(drv, timeout).until(seen, f"no {element} {text!r}: {drv.page_source}")


def test_blocked_host_logs_in_at_the_page_and_its_traffic_passes(topo, tmp_path):
    pytest.importorskip("selenium")
    for tool in ("/usr/bin/chromium", "/usr/bin/chromedriver", "nft"):
        if not shutil.which(tool):
            from tests.peer import missing_peer
            missing_peer(f"{tool} not installed (apt-get install chromium chromium-driver "
                         f"nftables)")
    from acctd import config
    from acctd.daemon.core import Daemon
    from acctd.kernel.build import Sizes
    cfg_path = tmp_path / "acctd.toml"
    cfg_path.write_text(CONFIG.format(db=tmp_path / "acctd.duckdb", bob=SUB2.v4(),
                                      portal=SUB2.v4(gw=True), port=PORTAL_PORT,
                                      iface=SUB2.gw_if))
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("<html><body><h1 id='title'>the server's own page</h1>"
                                    "</body></html>")
    web = subprocess.Popen(["ip", "netns", "exec", topo.ns["srv"], "python3", "-m",
                            "http.server", "80", "--bind", SRV.v4(), "--directory", str(www)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    d = Daemon(config.load(str(cfg_path)),
               Sizes(pin_root=f"/sys/fs/bpf/acctd-cp-{os.getpid()}-{random.randrange(1 << 30)}",
                     flows=4096, addrs=256), netns=topo.ns["gw"])
    drv = None
    try:
        d.start()
        d.call("login-set", unit="bob", words=["password", "s3cret"])
        assert topo.ping("sub2", SRV.v4(), count=2).received == 0      # blocked: login
        assert d.blocked()[SUB2.v4()] == ["sys-deny-login"]
        with in_netns(topo.ns["sub2"]):
            from selenium.webdriver.common.by import By
            drv = browser()
            drv.get(f"http://{SRV.v4()}/")
            assert drv.find_element(By.ID, "title").text == "Log in to use the network"
            drv.find_element(By.ID, "user").send_keys("bob")
            drv.find_element(By.ID, "password").send_keys("wrong")
            drv.find_element(By.ID, "login").click()
            shows(drv, "message", "wrong user name or password")
            drv.find_element(By.ID, "user").send_keys("bob")
            drv.find_element(By.ID, "password").send_keys("s3cret")
            drv.find_element(By.ID, "login").click()
            shows(drv, "title", "Logged in")
            assert SUB2.v4() not in d.blocked()
            for _ in range(50):   # the DNAT's set follows the block
                drv.get(f"http://{SRV.v4()}/")
                if drv.find_element(By.ID, "title").text == "the server's own page":
                    break
                time.sleep(0.1)
            assert drv.find_element(By.ID, "title").text == "the server's own page"
            drv.quit()
            drv = None
        d.drain()
        before = all_traffic(d, "bob")
        p = topo.ping("sub2", SRV.v4(), count=4, size=200)
        assert p.received == 4
        d.drain()
        after = all_traffic(d, "bob")
        assert (after["out"][0] - before["out"][0], after["out"][1] - before["out"][1]) == (
            p.request.packets, p.request.ip_bytes)
        assert (after["in"][0] - before["in"][0], after["in"][1] - before["in"][1]) == (
            p.reply.packets, p.reply.ip_bytes)
    finally:
        if drv is not None:
            drv.quit()
        web.terminate()
        web.wait(5)
        d.close()
        d.dp.detach()
    gone = subprocess.run(["ip", "netns", "exec", topo.ns["gw"], "nft", "list", "tables"],
                          capture_output=True, text=True).stdout
    assert "acctd_captive" not in gone                       # closed: the table is removed
