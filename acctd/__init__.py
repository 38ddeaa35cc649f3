"""acctd: a Linux traffic accountant (eBPF datapath, Python control plane)."""

__version__ = "0.1.0"
