"""packaging/systemd/acctd.service passes `systemd-analyze verify` cleanly.

verify exits 0 on unknown keys and unparsable values (it only warns), so a
clean unit is exit 0 AND no output; the broken copies below prove that this
check catches each kind of mistake. ExecStart is pointed at /bin/true so the
test does not depend on acctd being installed.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "packaging" / "systemd" / "acctd.service"
WEB_UNIT = UNIT.with_name("acctd-web.service")

pytestmark = pytest.mark.skipif(not shutil.which("systemd-analyze"),
                                reason="systemd-analyze not installed")


def verify(tmp_path, edit=lambda text: text, of=UNIT):
    text = re.sub(r"(?m)^ExecStart=\S+", "ExecStart=/bin/true", of.read_text())
    unit = tmp_path / of.name  # verify wants the real unit name
    unit.write_text(edit(text))
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                         capture_output=True, text=True, timeout=60)
    # other packages' units on the machine get their own warnings (e.g.
    # freeradius.service's MemoryLimit=): only ours count here
    lines = [ln for ln in (res.stdout + res.stderr).splitlines()
             if ln.strip() and not re.match(r"/(lib|usr/lib|etc)/systemd/", ln)]
    return res.returncode, "\n".join(lines).strip()


def settings(of=UNIT) -> dict[str, str]:
    out = {}
    for line in of.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k] = v
    return out


def test_unit_verifies_without_a_single_warning(tmp_path):
    assert verify(tmp_path) == (0, "")


@pytest.mark.parametrize("broken", [
    ("Type=notify", "Type=notifyy"),                 # bad value: warned, ignored
    ("KillMode=mixed", "KillMod=mixed"),             # unknown key: warned, ignored
    ("[Service]", "[Servce]"),                       # unknown section: refused
    ("WatchdogSec=60s", "WatchdogSec=sixty"),
    ("ReadWritePaths=/sys/fs/bpf", "ReadWritePaths=sys/fs/bpf"),
])
def test_a_broken_copy_fails(tmp_path, broken):
    old, new = broken
    line = re.compile("(?m)^" + re.escape(old) + "$")  # the setting, not a comment
    assert line.search(UNIT.read_text())
    rc, out = verify(tmp_path, lambda t: line.sub(new, t, 1))
    assert rc != 0 or out, f"{new!r} was accepted silently"


def test_the_service_decisions_are_in_the_file():
    s = settings()
    assert s["Type"] == "notify" and s["NotifyAccess"] == "main"
    assert s["KillMode"] in ("mixed", "process")  # SIGTERM to acctd only: programs stay
    assert "ExecStop" not in s  # stopping never detaches
    assert s["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert s["ExecStart"] == "/usr/local/bin/acctd --config /etc/acctd/acctd.toml"
    assert int(s["WatchdogSec"].rstrip("s")) >= 10
    assert s["Restart"] == "on-failure"
    assert s["StateDirectory"] == "acctd" and s["RuntimeDirectory"] == "acctd"
    assert "/sys/fs/bpf" in s["ReadWritePaths"].split()
    for k, v in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                 "PrivateTmp": "yes"}.items():
        assert s[k] == v, k
    assert "AF_NETLINK" in s["RestrictAddressFamilies"].split()
    assert "ProtectKernelModules" not in s  # would hide the kernel headers bcc compiles with
    # the set tests/netns/test_capabilities.py proves sufficient and minimal
    assert sorted(s["CapabilityBoundingSet"].split()) == ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"]
    assert s["AmbientCapabilities"] == ""


def test_the_web_console_unit_verifies_and_runs_unprivileged(tmp_path):
    assert verify(tmp_path, of=WEB_UNIT) == (0, "")
    s = settings(WEB_UNIT)
    assert (s["User"], s["Group"]) == ("acctd-web", "acctd")
    assert s["CapabilityBoundingSet"] == "" and s["NoNewPrivileges"] == "yes"
    assert s["ExecStart"].startswith("/usr/local/bin/acctd-web --socket /run/acctd/acctd.sock")
    assert "--behind-tls" in s["ExecStart"].split()


def test_make_install_stages_everything(tmp_path):
    """`make install DESTDIR=...` (package staging: touches nothing live)."""
    import os
    import shutil
    import subprocess
    import sys
    if not shutil.which("make"):
        pytest.skip("needs make")
    repo = Path(__file__).resolve().parents[2]
    venv = Path(sys.executable).parent.parent
    res = subprocess.run(["make", "-s", "-C", str(repo), "install", f"DESTDIR={tmp_path}",
                          f"VENV={venv}"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    unit = tmp_path / "lib/systemd/system/acctd.service"
    assert "ExecStart=/usr/local/bin/acctd --config /etc/acctd/acctd.toml" in unit.read_text()
    assert (tmp_path / "etc/acctd/acctd.toml.example").read_text() == \
        (repo / "acctd.example.toml").read_text()
    assert "User=acctd-web" in (tmp_path / "lib/systemd/system/acctd-web.service").read_text()
    assert (tmp_path / "usr/lib/sysusers.d/acctd.conf").read_text() == \
        'g acctd -\nu acctd-web - "acctd web console" - -\nm acctd-web acctd\n'
    for cmd in ("acctd", "acctctl", "acctd-web"):
        assert os.readlink(tmp_path / "usr/local/bin" / cmd) == str(venv / "bin" / cmd)
