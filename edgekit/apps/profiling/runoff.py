"""An interleaved run-off between the choice and a runner-up it cannot be told apart from.

A sweep measures each point once, one after another, so a burst of noise during one point can decide the choice.
When the choice beats its runner-up only by a latency difference inside the two confidence intervals, the two
are measured again in alternation (A B B A A B ...: each in a fresh worker, as in the sweep), so the machine's
noise hits both alike, and the choice is made again with each one's median measurement (the sweep's and the
rounds'; the upper median of an even count). If neither fits the budget on that evidence, another point (or none)
is chosen: a choice that held only on a lucky measurement is not shipped. What the run-off
measured and decided goes into the choice's ``why`` and the report.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from edgekit.apps.profiling.choose import Choice, choose
from edgekit.apps.profiling.device import DeviceProfile
from edgekit.apps.profiling.latency import FRAME_FIELDS
from edgekit.apps.profiling.reach import reach_for
from edgekit.apps.profiling.sweep import Point, _data
from edgekit.core.artifact import Artifact

#: rounds of a run-off (each round measures both points once)
ROUNDS = 3


#: what a re-measurement replaces: latencies and the whole frame's timing, never task quality (a property of the
#: artifact's outputs, which the run-off does not score again)
TIMING = ("load_p50_ms", "load_p90_ms", "load_p95_ms", "p90_ci", "load_p90_ci",
          *(f for f in FRAME_FIELDS if not f.startswith("task_")))


def _remeasure(p: Point, reach, profile: DeviceProfile, data: Path) -> Point:
    m = reach.measure(Artifact.load(p.artifact), p.delegate, p.threads, profile, data)
    q = replace(p, p50_ms=m.p50_ms, p90_ms=m.p90_ms, p95_ms=getattr(m, "p95_ms", None))
    for name in TIMING:
        setattr(q, name, m.detail.get(name))
    return q


def _ident(p: Point) -> tuple:
    return (p.model_sha256, p.key)


def runoff(choice: Choice, points: list[Point], profile: DeviceProfile, model: Path, out_dir: Path,
           rounds: int = ROUNDS, camera: tuple[int, int] | None = None) -> Choice:
    """Measure ``choice.chosen`` and ``choice.contested`` (points of ``model``) in alternation for ``rounds``
    rounds and choose again among ``points`` (the same model's) with each one's median measurement, the sweep's
    included (by the latency the budget is checked against). Returns the new choice, with ``runoff`` saying what
    was measured and ``remeasured`` the two median points; the choice unchanged when there is nothing contested
    or the device is not this machine.

    Raises:
        DeviceError: a measurement failed.
    """
    a, b = choice.chosen, choice.contested
    reach = reach_for(profile)
    if a is None or b is None or reach.name != "local":
        return choice
    rounds_of: dict[tuple, list[Point]] = {_ident(a): [a], _ident(b): [b]}  # the sweep's own measurement counts
    for r in range(rounds):
        for p in ((a, b) if r % 2 == 0 else (b, a)):  # A B, B A, A B: neither always goes first
            data = _data(model, p.model_sha256, tuple(p.resolution), out_dir)
            rounds_of[_ident(p)].append(_remeasure(p, reach, profile, data))
    medians = {}
    for key, runs in rounds_of.items():
        ordered = sorted(runs, key=lambda q: q.budget_tail_ms)
        medians[key] = ordered[len(ordered) // 2]
    new_points = [medians.get(_ident(p), p) for p in points]
    again = choose(new_points, choice.budget_ms, camera or profile.camera, profile.max_degradation,
                   profile.targets)
    tails = {key: [round(q.budget_tail_ms, 3) for q in runs] for key, runs in rounds_of.items()}
    winner = again.chosen
    listed = {key: ", ".join(f"{t:.2f}" for t in ts) for key, ts in tails.items()}
    ia, ib = _ident(a), _ident(b)
    summary = (f"run-off over {rounds} interleaved rounds: {a.label()} {medians[ia].budget_tail_ms:.2f} ms "
               f"(sweep, rounds: {listed[ia]}) vs {b.label()} {medians[ib].budget_tail_ms:.2f} ms "
               f"(sweep, rounds: {listed[ib]}), "
               f"{a.budget_basis[0]}: {winner.label() if winner else 'nothing'} chosen")
    again.why += "; " + summary
    again.runoff = {"rounds": rounds, "candidates": [a.label(), b.label()],
                    "tails_ms": {a.label(): tails[ia], b.label(): tails[ib]},
                    "chosen": winner.label() if winner else None, "summary": summary}
    again.remeasured = list(medians.values())
    return again
