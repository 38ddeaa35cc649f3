"""The daemon: its core (lifecycle, the drain loop, the model snapshot), main, systemd and logging."""
