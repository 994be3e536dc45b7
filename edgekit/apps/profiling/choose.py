"""From measured points to a decision: the Pareto front (latency vs quality) and the chosen config."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edgekit.apps.profiling.sweep import Point


@dataclass
class Choice:
    chosen: Point | None
    fallback: Point | None
    front: list[Point]
    budget_ms: float
    why: str
    #: what to step down to, in order, when the chosen point misses its budget at run time: (point, reason)
    ladder: list[tuple[Point, str]] = field(default_factory=list)
    #: the runner-up, when it ranks below the choice only by a latency difference within the noise
    contested: Point | None = None
    #: what an interleaved run-off between the two decided (see :mod:`~edgekit.apps.profiling.runoff`)
    runoff: dict | None = None
    #: the run-off's median points (what the choice stands on), to show in place of the sweep's
    remeasured: list[Point] = field(default_factory=list)


def same_point(a: Point | None, b: Point | None) -> bool:
    """Whether two points are the same measurement: model and (resolution, target, delegate, threads)."""
    return a is not None and b is not None and (a.model_sha256, a.key) == (b.model_sha256, b.key)


def pareto_front(points: list[Point]) -> list[Point]:
    """Points no other point beats on both p50 latency (lower) and quality (higher)."""
    ok = sorted((p for p in points if p.ok), key=lambda p: (p.p50_ms, -(p.rank_quality or 0)))
    front, best = [], -1.0
    for p in ok:
        q = p.rank_quality or 0.0
        if q > best:
            front.append(p)
            best = q
    return front


def _rank(p: Point, camera: tuple[int, int]) -> tuple:
    h, w = p.resolution
    aspect_error = abs(math.log((w / h) / (camera[1] / camera[0])))  # squashing a frame distorts people
    return (round(p.rank_quality or 0.0, 3), -round(aspect_error, 2), h * w, -p.budget_tail_ms)


#: the most a chosen point's latency may grow under the background load, loaded over quiet (a device profile's
#: ``load.max_degradation`` overrides it): a config that slows down more on a busy device is not one to ship
#: when an equally good point holds up
MAX_DEGRADATION = 2.0


def choose(points: list[Point], budget_ms: float, camera: tuple[int, int] = (720, 1280),
           max_degradation: float = MAX_DEGRADATION, prefer: tuple[str, ...] = ()) -> Choice:
    """Highest quality point whose p90 *of the whole camera frame under background load* fits the budget, and
    whose quiet p90 fits it too (what was measured where less was: see :attr:`Point.budget_basis`). Ties: the
    camera's aspect ratio, then larger input, then the points that slow down at most ``max_degradation`` times
    under load (:attr:`Point.degradation`; a choice beyond it, when no equal point holds up, is said in ``why``),
    then faster where the noise can tell (among points within the noise of the fastest: the fewest threads,
    then the least memory, then the order of ``prefer``, the device profile's targets; see
    :func:`_within_noise`). The fallback is the best fitting point on another
    runtime, so an app has somewhere to go if the first fails."""
    front = pareto_front(points)
    # a config must hold its budget whether the device is busy or not: the quiet tail has to fit as well
    fitting = sorted((p for p in points if p.ok and p.budget_tail_ms <= budget_ms and _quiet_tail(p) <= budget_ms),
                     key=lambda p: _rank(p, camera), reverse=True)
    if not fitting:
        fastest = min((p for p in points if p.ok), key=lambda p: p.budget_tail_ms, default=None)
        why = (f"nothing fits the {budget_ms:.1f} ms budget; the fastest point is {fastest.label()} at "
               f"{_tail(fastest)}") if fastest else "no point was measured successfully"
        return Choice(None, None, front, budget_ms, why)
    top = [p for p in fitting if _rank(p, camera)[:3] == _rank(fitting[0], camera)[:3]]
    shaky = [p for p in top if (p.degradation or 0.0) > max_degradation]
    tied = _within_noise([p for p in top if p not in shaky] or top, prefer)
    chosen = tied[0]
    fitting.remove(chosen)
    fitting.insert(0, chosen)
    same = [p for p in fitting[1:] if p.model_sha256 == chosen.model_sha256]  # a config ships one model
    others = [p for p in same if p.format != chosen.format] or same
    fallback = others[0] if others else None
    why = (f"{chosen.label()}: {_tail(chosen)} fits {budget_ms:.1f} ms with "
           f"{chosen.rank_metric} {_q(chosen.rank_quality)}, the best of {len(fitting)} fitting points"
           + (f"; fallback {fallback.label()} ({_tail(fallback)})" if fallback else "; no fallback fits"))
    contested = tied[1] if len(tied) > 1 else None
    if contested is not None:
        fastest = min(tied, key=lambda p: p.budget_center_ms or p.budget_tail_ms)
        why += (f"; {len(tied)} equally good points are within the noise of the fastest ({fastest.label()}: their "
                f"medians within {TIE_SHARE:.0%} of its, or their tails' 95% intervals overlapping): the one with "
                f"the fewest threads, then the least memory, then the profile's target order, was chosen (runner-up "
                f"{contested.label()})")
    if chosen in shaky:
        why += (f"; every equally good point slows down more than {max_degradation:g}x under load (this one "
                f"{chosen.degradation:.2f}x): it may not hold its budget on a busier device")
    elif shaky:
        worst = max(shaky, key=lambda p: p.degradation)
        why += (f"; {len(shaky)} equally good point(s) slow down more than {max_degradation:g}x under load and "
                f"were not chosen (e.g. {worst.label()}: {worst.degradation:.2f}x)")
    quiet_only = [p for p in points if p.ok and _quiet_tail(p) <= budget_ms and not p.budget_tail_ms <= budget_ms]
    if quiet_only:
        why += (f"; {len(quiet_only)} point(s) fit only on a quiet device and were not chosen (e.g. "
                f"{quiet_only[0].label()}: {_tail(quiet_only[0])})")
    busy_only = [p for p in points if p.ok and p.budget_tail_ms <= budget_ms and not _quiet_tail(p) <= budget_ms]
    if busy_only:
        why += (f"; {len(busy_only)} point(s) fit under load but not quiet and were not chosen (e.g. "
                f"{busy_only[0].label()}: {_tail(busy_only[0])})")
    ladder = build_ladder(chosen, points)
    if ladder:
        why += "; ladder: " + " -> ".join(f"{p.label()} ({p.budget_tail_ms:.2f} ms)" for p, _ in ladder)
    return Choice(chosen, fallback, front, budget_ms, why, ladder, contested)


#: a rung must be at least this much faster (its budget tail latency) than the rung above it
LADDER_STEP = 0.8
#: and keep this share of the chosen point's quality (a mask that is much worse is no rescue)
LADDER_QUALITY = 0.95


def build_ladder(chosen: Point, points: list[Point], rungs: int = 3) -> list[tuple[Point, str]]:
    """The fallback ladder below ``chosen``: each rung at least ``1 / LADDER_STEP`` times faster than the one above
    (by the latency the budget is checked against), of quality at least ``LADDER_QUALITY`` of the chosen point's;
    among those, the best quality, then the smallest change (threads only, then resolution, then another
    runtime), then the smallest step down. Each rung says what changed."""
    floor = (chosen.rank_quality or 0.0) * LADDER_QUALITY if (chosen.rank_quality or 0.0) > 0 else -math.inf
    pool = [p for p in points if p.ok and p.key != chosen.key and (p.rank_quality or 0.0) >= floor
            and p.model_sha256 == chosen.model_sha256
            and p.budget_basis[0] == chosen.budget_basis[0]]  # latencies compared only when measured alike
    ladder, last = [], chosen
    while len(ladder) < rungs:
        faster = [p for p in pool if p.budget_tail_ms <= LADDER_STEP * last.budget_tail_ms]
        if not faster:
            break

        def rank(p: Point, last: Point = last) -> tuple:
            change = 0 if (p.target, p.resolution) == (last.target, last.resolution) else (
                1 if p.target == last.target else 2)
            return (-round(p.rank_quality or 0.0, 3), change, -p.budget_tail_ms)

        nxt = min(faster, key=rank)
        ladder.append((nxt, _change(last, nxt)))
        pool.remove(nxt)
        last = nxt
    return ladder


def _change(a: Point, b: Point) -> str:
    """What differs from rung ``a`` to rung ``b``, in words, with the latency each was checked at."""
    parts = []
    if a.target != b.target:
        parts.append(f"{a.target} -> {b.target}")
    if a.delegate != b.delegate:
        parts.append(f"delegate {a.delegate} -> {b.delegate}")
    if tuple(a.resolution) != tuple(b.resolution):
        parts.append(f"{a.resolution[0]}x{a.resolution[1]} -> {b.resolution[0]}x{b.resolution[1]}")
    if a.threads != b.threads:
        parts.append(f"{a.threads} -> {b.threads} thread(s)")
    return (", ".join(parts) + f": {b.budget_basis[0]} {a.budget_tail_ms:.2f} -> {b.budget_tail_ms:.2f} ms, "
            f"{b.rank_metric} {_q(a.rank_quality)} -> {_q(b.rank_quality)}")


def _q(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _quiet_tail(p: Point) -> float:
    """The quiet counterpart of :attr:`Point.budget_tail_ms`: the frame's quiet p90 where frames were timed."""
    return p.e2e_p90_ms if p.e2e_p90_ms is not None else p.tail_ms


def _tail(p: Point) -> str:
    """The tail latency the budget was checked against, named, with its quiet counterpart and the model's share:
    ``frame p90 9.10 ms under load (quiet 7.20; model alone p90 4.20 under load)``."""
    if p.load_e2e_p90_ms is not None:
        return (f"frame p90 {p.load_e2e_p90_ms:.2f} ms under load (quiet {p.e2e_p90_ms:.2f}; model alone p90 "
                f"{p.load_p90_ms:.2f} under load)")
    if p.e2e_p90_ms is not None:
        return f"frame p90 {p.e2e_p90_ms:.2f} ms (quiet, not measured under load; model alone {p.tail_ms:.2f})"
    if p.loaded:
        return f"model p90 {p.load_p90_ms:.2f} ms under load (quiet {p.tail_ms:.2f}; the whole frame was not timed)"
    if p.load_p95_ms is not None:
        return (f"model p95 {p.load_p95_ms:.2f} ms under load (quiet {p.tail_ms:.2f}, timed before it, not "
                "interleaved; the whole frame was not timed)")
    return f"model {p.tail_name} {p.tail_ms:.2f} ms (quiet; not measured under load, the whole frame not timed)"


#: latencies closer than this share of the fastest count as the same, whatever their intervals say (a 10%
#: difference inside the budget is not worth a choice that changes from sweep to sweep)
TIE_SHARE = 0.10


#: peak memories closer than this share count as the same (a few hundred KB of allocator noise must not decide
#: between runtimes from sweep to sweep): sorted, a memory within this share of the next lighter one is in its band
MEMORY_SHARE = 0.10


def _within_noise(top: list[Point], prefer: tuple[str, ...] = ()) -> list[Point]:
    """The points of ``top`` (equal in quality, aspect and input size) that the noise cannot tell from the fastest
    one, ordered by fewest threads (the most CPU left to the app), then least memory (in bands: a memory within
    :data:`MEMORY_SHARE` of the next lighter one counts as the same), then the order of the targets in ``prefer``
    (the device profile's list: the user's preference decides what the measurements cannot), then latency.
    Faster is judged by the median measured with the budget's tail (:attr:`Point.budget_center_ms`): tied when
    within :data:`TIE_SHARE` of the fastest median, or when the tails' 95% intervals overlap. A choice made by
    that order repeats from sweep to sweep; one made by a latency difference inside the noise does not."""
    def center(p: Point) -> float:
        return p.budget_center_ms if p.budget_center_ms is not None else p.budget_tail_ms

    fastest = min(top, key=center)
    a = fastest.budget_tail_ci

    def tied(p: Point) -> bool:
        b = p.budget_tail_ci
        if p is fastest:
            return True
        if p.budget_basis[0] != fastest.budget_basis[0]:  # measured differently: not comparable as a tie
            return False
        if center(p) <= center(fastest) * (1 + TIE_SHARE):
            return True
        return bool(a and b) and not (a[1] < b[0] or b[1] < a[0])

    ties = [p for p in top if tied(p)]
    bands, band, last = {}, 0, None
    for mb in sorted({p.peak_memory_mb for p in ties if p.peak_memory_mb}):
        if last is not None and mb > last * (1 + MEMORY_SHARE):  # a gap wider than the noise starts a new band
            band += 1
        bands[mb], last = band, mb

    def memory_band(p: Point) -> int:
        return bands.get(p.peak_memory_mb, band + 1)  # not measured: after every measured one

    def preference(p: Point) -> int:
        return prefer.index(p.target) if p.target in prefer else len(prefer)

    return sorted(ties, key=lambda p: (p.threads, memory_band(p), preference(p), center(p)))
