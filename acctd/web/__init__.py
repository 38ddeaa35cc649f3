"""The web console (acctd-web): a separate, unprivileged process that shows
the daemon's reports to people through the control socket, on their behalf
(acctd/control/delegation.py); it never opens the database or the pins."""
