"""The kernel side seen from user space: the ABI copy, bpf(2) calls, building, pinning, attaching, draining and writing the enforcement maps."""
