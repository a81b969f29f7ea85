"""Benchmarks behind `fastmbrl bench`; the pytest-benchmark suites in bench/ reuse them."""
