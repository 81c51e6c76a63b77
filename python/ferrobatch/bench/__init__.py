"""Benchmarks: db-benchmark data generators and the throughput runner."""
