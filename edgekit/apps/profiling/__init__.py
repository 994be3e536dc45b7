"""Profiling: latency/memory measurement, sweeps and configuration choice."""
