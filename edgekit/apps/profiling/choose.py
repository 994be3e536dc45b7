"""From measured points to a decision: the Pareto front (latency vs quality) and the chosen config."""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgekit.apps.profiling.sweep import Point


@dataclass
class Choice:
    chosen: Point | None
    fallback: Point | None
    front: list[Point]
    budget_ms: float
    why: str


def pareto_front(points: list[Point]) -> list[Point]:
    """Points no other point beats on both p50 latency (lower) and quality (higher)."""
    ok = sorted((p for p in points if p.ok), key=lambda p: (p.p50_ms, -(p.quality or 0)))
    front, best = [], -1.0
    for p in ok:
        q = p.quality or 0.0
        if q > best:
            front.append(p)
            best = q
    return front


def _rank(p: Point, camera: tuple[int, int]) -> tuple:
    h, w = p.resolution
    aspect_error = abs(math.log((w / h) / (camera[1] / camera[0])))  # squashing a frame distorts people
    return (round(p.quality or 0.0, 3), -round(aspect_error, 2), h * w, -p.budget_tail_ms)


def choose(points: list[Point], budget_ms: float, camera: tuple[int, int] = (720, 1280)) -> Choice:
    """Highest quality point whose p90 *under background load* (quiet p90 where the point was not measured under
    load, p95 where only that was measured) fits the budget (ties: the camera's aspect ratio, then larger input,
    then faster); the fallback is the best fitting point on another runtime, so an app has somewhere to go if
    the first fails."""
    front = pareto_front(points)
    fitting = sorted((p for p in points if p.ok and p.budget_tail_ms <= budget_ms), key=lambda p: _rank(p, camera),
                     reverse=True)
    if not fitting:
        fastest = min((p for p in points if p.ok), key=lambda p: p.budget_tail_ms, default=None)
        why = (f"nothing fits the {budget_ms:.1f} ms budget; the fastest point is {fastest.label()} at "
               f"{_tail(fastest)}") if fastest else "no point was measured successfully"
        return Choice(None, None, front, budget_ms, why)
    chosen = fitting[0]
    others = [p for p in fitting[1:] if p.format != chosen.format] or fitting[1:]
    fallback = others[0] if others else None
    why = (f"{chosen.label()}: {_tail(chosen)} fits {budget_ms:.1f} ms with "
           f"{chosen.quality_metric} {chosen.quality:.4f}, the best of {len(fitting)} fitting points"
           + (f"; fallback {fallback.label()} ({_tail(fallback)})" if fallback else "; no fallback fits"))
    if len(fitting) > 1:
        why += _separable(chosen, fitting[1], camera)
    quiet_only = [p for p in points if p.ok and p.tail_ms <= budget_ms and not p.budget_tail_ms <= budget_ms]
    if quiet_only:
        why += (f"; {len(quiet_only)} point(s) fit only on a quiet device and were not chosen (e.g. "
                f"{quiet_only[0].label()}: {_tail(quiet_only[0])})")
    return Choice(chosen, fallback, front, budget_ms, why)


def _tail(p: Point) -> str:
    """The tail latency the budget was checked against, named: ``p90 4.20 ms under load (quiet 3.10)``."""
    if p.loaded:
        return f"p90 {p.load_p90_ms:.2f} ms under load (quiet {p.tail_ms:.2f})"
    return f"{p.tail_name} {p.tail_ms:.2f} ms (quiet; not measured under load)"


def _separable(chosen: Point, runner_up: Point, camera: tuple[int, int]) -> str:
    """A note when the runner-up ranks below the choice only by latency and their tail latencies' 95% confidence
    intervals overlap: within the noise of this sweep either could be the faster one."""
    if _rank(chosen, camera)[:3] != _rank(runner_up, camera)[:3]:
        return ""  # decided by quality, aspect ratio or input size, not by a latency difference
    a, b = chosen.budget_tail_ci, runner_up.budget_tail_ci
    if not a or not b or a[1] < b[0] or b[1] < a[0]:
        return ""
    return (f"; not separable from the runner-up {runner_up.label()} within the noise (95% intervals of the tail: "
            f"{a[0]:.2f}-{a[1]:.2f} vs {b[0]:.2f}-{b[1]:.2f} ms)")
