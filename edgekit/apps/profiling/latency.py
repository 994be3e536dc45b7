"""Latency of a session: warm-up, then percentiles over timed runs."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Latency:
    p50_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    runs: int

    def to_dict(self) -> dict:
        return asdict(self)


def measure(session, inputs: dict[str, np.ndarray], runs: int = 50, warmup: int = 10) -> Latency:
    """Median/p90 wall time of ``session.run(inputs)`` over ``runs`` runs after ``warmup``."""
    for _ in range(warmup):
        session.run(inputs)
    times = np.empty(runs)
    for i in range(runs):
        t = time.perf_counter()
        session.run(inputs)
        times[i] = time.perf_counter() - t
    ms = times * 1e3
    return Latency(float(np.median(ms)), float(np.percentile(ms, 90)), float(ms.mean()), float(ms.min()), runs)
