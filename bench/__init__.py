"""Benchmarks: figures beside their references, measured in the same run (never pass/fail)."""
