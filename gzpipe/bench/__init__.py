"""Benchmarks behind `gzpipe bench ...`: each returns JSON-ready rows with medians and the machine."""
