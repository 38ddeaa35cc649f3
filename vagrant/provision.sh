#!/usr/bin/env bash
# provision.sh - make this machine able to build, run and test acctd.
# Idempotent: every step checks before it acts. Used by `make setup`
# (and so by `make demo` / `make test`) and by the Vagrantfile.
set -euo pipefail

VENV=${VENV:-.venv}
say() { printf 'acctd setup: %s\n' "$*"; }

[ "$(id -u)" = 0 ] || { echo "acctd setup: needs root (try: sudo make ...)" >&2; exit 1; }

# System packages. bcc comes from Debian: the PyPI package named "bcc" is
# an unrelated library and must never be installed.
PKGS=(python3-bpfcc python3-venv python3-dev linux-headers-amd64 iproute2 iperf3
      ethtool iputils-ping tcpdump tcpreplay make gcc)
if [ "${ACCTD_VM_TIER:-1}" = 1 ]; then
    PKGS+=(qemu-system-x86 linux-image-amd64 busybox-static)
fi
# The real peers the tests talk to: FreeRADIUS (accounting, CoA, radacct in
# SQLite and PostgreSQL; PostgreSQL also for [central]: tests/central,
# acctd/bench/central.py), OpenVPN, a throwaway CA made with openssl, and the
# flow collectors export is checked against (nfcapd/nfdump, pmacct's nfacctd),
# the flow exporters softflowd and pmacctd (the collector), and for the
# acl-server GoBGP (acctd's speaker), BIRD 2 (the router) and nftables, and
# headless Chromium with its driver (the captive portal's and the web
# console's browser tiers), and Prometheus (scrapes the console's /metrics).
if [ "${ACCTD_PEER_TIER:-1}" = 1 ]; then
    PKGS+=(freeradius freeradius-utils openvpn openssl postgresql python3-psycopg2 nfdump pmacct
           softflowd)
    PKGS+=(gobgpd bird2 nftables python3-nftables)
    PKGS+=(chromium chromium-driver)
    PKGS+=(prometheus)
fi
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # the peers' packages must not start system services: tests start their own
    rc_policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [ ! -e "$rc_policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$rc_policy" && chmod 755 "$rc_policy" && own_policy=1
    fi
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    if [ "$own_policy" = 1 ]; then rm -f "$rc_policy"; fi
fi

# bcc compiles against the running kernel's headers. This kernel ships none,
# so point /lib/modules/$(uname -r)/{build,source} at Debian's header dirs.
KREL=$(uname -r)
if [ ! -e "/lib/modules/$KREL/build/Makefile" ]; then
    arch_dir=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1)
    common_dir=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n1)
    if [ -z "$arch_dir" ] || [ -z "$common_dir" ]; then
        echo "acctd setup: no Debian kernel headers under /usr/src (is linux-headers-amd64 installed?)" >&2
        exit 1
    fi
    say "kernel $KREL has no headers: linking build -> $arch_dir, source -> $common_dir"
    mkdir -p "/lib/modules/$KREL"
    ln -sfn "$arch_dir" "/lib/modules/$KREL/build"
    ln -sfn "$common_dir" "/lib/modules/$KREL/source"
fi

# Pinned maps live on bpffs.
if ! mountpoint -q /sys/fs/bpf; then
    say "mounting bpffs on /sys/fs/bpf"
    mount -t bpf bpf /sys/fs/bpf
fi

# The venv sees Debian's bcc through --system-site-packages.
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV from /usr/bin/python3 (with system site packages, for bcc)"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
stamp="$VENV/.installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "installing acctd and its Python dependencies into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[test]"
    touch "$stamp"
fi
"$VENV/bin/python" -c "import bcc" 2>/dev/null || {
    echo "acctd setup: bcc does not import in $VENV (python3-bpfcc missing?)" >&2; exit 1; }
say "ready"
