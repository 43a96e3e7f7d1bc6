"""Benchmarks of the reminder service: `python -m benchmarks` (see docs/performance.md)."""
