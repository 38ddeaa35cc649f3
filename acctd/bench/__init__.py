"""Benchmarks (make bench): JSON lines of named figures."""
