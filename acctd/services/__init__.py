"""NeTAMS-style services of the daemon: each one module (or package) with its settings, hooks and commands."""
