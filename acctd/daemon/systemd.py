"""sd_notify without libsystemd: tell the service manager that acctd is ready,
alive, reloading or stopping. Outside systemd (no NOTIFY_SOCKET) every call
does nothing, so the daemon calls it unconditionally.

How the daemon uses it (packaging/systemd/acctd.service is Type=notify,
NotifyAccess=main, WatchdogSec=):

    sd = Notifier()
    wd = sd.watchdog_interval()          # seconds, or None outside systemd
    ... attach the interfaces, open storage, bind the control socket ...
    sd.ready()                           # only now: `systemctl start` returns
    loop: wake at least every wd / 2 and call sd.watchdog(); a loop that
          hangs (stuck drain, deadlocked lock) stops pinging and systemd
          restarts the daemon (Restart=on-failure); counters stay pinned.
    SIGHUP:  sd.reloading(); reload units, policies and users; sd.ready()
    SIGTERM: sd.stopping() first, then leave the loop; never detach: the
             programs keep counting and the next start resumes from the pins.

`status(text)` sets the one-line status `systemctl status acctd` shows (for
example the last drain). Sending never raises: a notification that cannot be
delivered is lost, as with sd_notify(3), and the call returns False.
"""

from __future__ import annotations

import os
import socket
import time

__all__ = ["Notifier"]


class Notifier:
    """One service's notify socket, from NOTIFY_SOCKET (a path, or "@name"
    for an abstract socket)."""

    def __init__(self, environ: dict | None = None):
        env = os.environ if environ is None else environ
        self._env = env
        path = env.get("NOTIFY_SOCKET", "")
        if path.startswith("@"):
            self.address: str | bytes | None = "\0" + path[1:]  # abstract namespace
        elif path.startswith("/"):
            self.address = path
        else:
            self.address = None  # unset, empty, or a transport we do not speak (vsock:)
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, state: str) -> bool:
        """Send one datagram of newline-separated VAR=value assignments."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(state.encode(), self.address)
            return True
        except OSError:
            return False

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={_line(status)}" if status else ""))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_line(text)}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def reloading(self) -> bool:
        # systemd (253+, Type=notify-reload) matches the reload by this
        # CLOCK_MONOTONIC timestamp; older versions ignore the extra line.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def watchdog_interval(self) -> float | None:
        """WatchdogSec= in seconds when it applies to this process, else None.
        Ping at half of it."""
        try:
            usec = int(self._env.get("WATCHDOG_USEC", ""))
        except ValueError:
            return None
        if usec <= 0:
            return None
        pid = self._env.get("WATCHDOG_PID")
        if pid is not None:
            try:
                if int(pid) != os.getpid():
                    return None  # meant for our parent; we inherited its environment
            except ValueError:
                return None
        return usec / 1_000_000

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _line(text: str) -> str:
    # A newline would start a new assignment in the datagram.
    return " ".join(str(text).splitlines())
