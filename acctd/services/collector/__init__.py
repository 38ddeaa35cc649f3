"""The collector: NetFlow v5/v9, IPFIX and sFlow v5 as data sources
(service.py), one decoder per format, the listener, and the step that
turns records into the kernel's flow arrays (flows.py)."""
