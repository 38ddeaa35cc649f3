# `make install`: the systemd unit, the example config, the sysusers entry
# for the control socket's group, and acctd/acctctl linked to the venv.
# Included from the Makefile (which sets VENV). With DESTDIR (staging for a
# package) nothing touches the running system: no groupadd, no systemctl.
# The acctd group: the unit has SupplementaryGroups=acctd (the control
# socket's group), and a unit whose group is missing does not start.
# Include this after the Makefile's first target, so `make` alone stays `setup`.

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
# A local install goes where the admin's units live; a package ships in /lib.
UNITDIR ?= $(if $(DESTDIR),/lib/systemd/system,/etc/systemd/system)
SYSUSERSDIR ?= /usr/lib/sysusers.d
VENV ?= .venv
ACCTD_VENV := $(abspath $(VENV))

.PHONY: install uninstall

install:
	@test -x $(ACCTD_VENV)/bin/acctd || { echo "no $(ACCTD_VENV)/bin/acctd: run make setup first" >&2; exit 1; }
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/acctd $(DESTDIR)$(BINDIR) $(DESTDIR)$(SYSUSERSDIR)
	sed 's#/usr/local/bin/acctd#$(BINDIR)/acctd#; s#/etc/acctd/#$(SYSCONFDIR)/acctd/#g' \
		packaging/systemd/acctd.service > $(DESTDIR)$(UNITDIR)/acctd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/acctd.service
	sed 's#/usr/local/bin/acctd-web#$(BINDIR)/acctd-web#' \
		packaging/systemd/acctd-web.service > $(DESTDIR)$(UNITDIR)/acctd-web.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/acctd-web.service
	install -m 0644 acctd.example.toml $(DESTDIR)$(SYSCONFDIR)/acctd/acctd.toml.example
	printf 'g acctd -\nu acctd-web - "acctd web console" - -\nm acctd-web acctd\n' > $(DESTDIR)$(SYSUSERSDIR)/acctd.conf
	chmod 0644 $(DESTDIR)$(SYSUSERSDIR)/acctd.conf
	ln -sfn $(ACCTD_VENV)/bin/acctd $(DESTDIR)$(BINDIR)/acctd
	ln -sfn $(ACCTD_VENV)/bin/acctctl $(DESTDIR)$(BINDIR)/acctctl
	ln -sfn $(ACCTD_VENV)/bin/acctd-web $(DESTDIR)$(BINDIR)/acctd-web
ifeq ($(DESTDIR),)
	getent group acctd >/dev/null || groupadd --system acctd
	getent passwd acctd-web >/dev/null || useradd --system --no-create-home --shell /usr/sbin/nologin -G acctd acctd-web
	if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@test -e $(SYSCONFDIR)/acctd/acctd.toml || echo "next: cp $(SYSCONFDIR)/acctd/acctd.toml.example $(SYSCONFDIR)/acctd/acctd.toml, edit it, systemctl enable --now acctd"
endif

# Leaves the config, the database and the acctd group; `acctctl detach` unhooks.
uninstall:
	rm -f $(DESTDIR)$(UNITDIR)/acctd.service $(DESTDIR)$(UNITDIR)/acctd-web.service $(DESTDIR)$(SYSCONFDIR)/acctd/acctd.toml.example \
		$(DESTDIR)$(SYSUSERSDIR)/acctd.conf $(DESTDIR)$(BINDIR)/acctd $(DESTDIR)$(BINDIR)/acctctl $(DESTDIR)$(BINDIR)/acctd-web
ifeq ($(DESTDIR),)
	if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
endif
