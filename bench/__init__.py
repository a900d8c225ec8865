"""Benchmarks for spoolq (never part of the test suite).

``python -m bench`` runs the performance suite (latency, burst, backlog, idle, big_output,
long_queue; see docs/performance.md); ``python -m bench.chaos`` is the crash harness.
"""
