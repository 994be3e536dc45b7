"""Latency of a session: warm-up, then percentiles over timed runs, with 95% confidence intervals.

The intervals are distribution-free (order statistics): the ranks around ``n*q`` that a binomial(n, q) count of
runs below the true quantile reaches 95% of the time, so they hold for any latency distribution (long tails,
two modes) and widen honestly when there are few runs.
"""

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
    p50_ci: tuple[float, float] | None = None  # 95% confidence interval of the true median, ms
    p90_ci: tuple[float, float] | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("p50_ci", "p90_ci"):
            d[k] = list(d[k]) if d[k] is not None else None
        return d


def quantile_ci(ms: np.ndarray, q: float, z: float = 1.96) -> tuple[float, float]:
    """Distribution-free confidence interval of the ``q`` quantile of the samples ``ms`` (normal approximation to
    the binomial rank distribution; the sample's extremes where ``n`` is too small for the level)."""
    x = np.sort(np.asarray(ms, dtype=float))
    n = len(x)
    half = z * np.sqrt(n * q * (1 - q))
    lo = int(np.floor(n * q - half))
    hi = int(np.ceil(n * q + half))
    return float(x[max(lo, 0)]), float(x[min(hi, n - 1)])


def measure(session, inputs: dict[str, np.ndarray], runs: int = 50, warmup: int = 10) -> Latency:
    """Median/p90 wall time of ``session.run(inputs)`` over ``runs`` runs after ``warmup``."""
    for _ in range(warmup):
        session.run(inputs)
    times = np.empty(runs)
    for i in range(runs):
        t = time.perf_counter()
        session.run(inputs)
        times[i] = time.perf_counter() - t
    return _latency(times)


def measure_contended(session, inputs: dict[str, np.ndarray], load, runs: int = 50, warmup: int = 10,
                      block: int = 5) -> tuple[Latency, Latency]:
    """Latency quiet and under ``load`` (a started :class:`~edgekit.apps.profiling.load.BackgroundLoad`),
    interleaved: blocks of ``block`` runs alternate quiet (load paused) and loaded (load running), so the
    machine's own noise hits both alike. Each side gets ``warmup`` untimed runs first and ``runs`` timed runs;
    the first run after each switch is untimed (thread pools and caches settle). Returns (quiet, loaded); the
    load is left paused.
    """
    load.resume()
    for _ in range(warmup):
        session.run(inputs)
    load.pause()
    for _ in range(warmup):
        session.run(inputs)
    times: dict[bool, list[float]] = {False: [], True: []}
    loaded = False
    while min(len(t) for t in times.values()) < runs:
        if len(times[loaded]) < runs:
            (load.resume if loaded else load.pause)()
            session.run(inputs)
            for _ in range(min(block, runs - len(times[loaded]))):
                t = time.perf_counter()
                session.run(inputs)
                times[loaded].append(time.perf_counter() - t)
        loaded = not loaded
    load.pause()
    return _latency(times[False]), _latency(times[True])


def _latency(seconds: list[float]) -> Latency:
    ms = np.asarray(seconds) * 1e3
    return Latency(float(np.median(ms)), float(np.percentile(ms, 90)), float(ms.mean()), float(ms.min()), len(ms),
                   quantile_ci(ms, 0.5), quantile_ci(ms, 0.9))
