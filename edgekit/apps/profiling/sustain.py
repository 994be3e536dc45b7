"""Sustained runs of the profiler's choice (``edgekit profile --thorough``).

A point timed for a few hundred runs says little about minute two: phones throttle when warm, and a shared
machine has noisy neighbours. In thorough mode the chosen point and every rung of its ladder run the whole camera
frame back to back for a sustained period (default 30 s) under the profile's background load, each in a fresh
process; p50/p90 per window and their drift (last window over first) go to the point, the report and the app
config, and a choice whose worst window misses the budget says so.

    python -m edgekit.apps.profiling.sustain ARTIFACT DELEGATE THREADS SECONDS LOAD_CPU LOAD_MEMORY FRAME
"""

from __future__ import annotations

import json
import sys

from edgekit.errors import DeviceError, EdgekitError

#: seconds of a sustained run in the profiler's thorough mode
DEFAULT_SECONDS = 30.0
#: the windows it is cut into
WINDOW_S = 5.0


def sustain_point(artifact: str, delegate: str, threads: int, seconds: float, load_level,
                  frame: tuple[int, int]) -> dict:
    """The whole camera frame (the model alone where it takes no image) run back to back for ``seconds`` under
    ``load_level`` (kept running throughout).

    Raises:
        EdgekitError: the artifact cannot be loaded or run, or the load cannot start.
    """
    import contextlib

    from edgekit.api import load
    from edgekit.apps.profiling.latency import CameraFrame, measure_sustained
    from edgekit.apps.profiling.load import BackgroundLoad
    from edgekit.core import calibration
    from edgekit.errors import InputError

    session = load(artifact, threads=threads, delegate=delegate)
    try:
        step, what = CameraFrame(session, frame).run, "frame"
    except InputError:
        sample = calibration.samples(session.io, None, n=1, seed=0)[0]
        step, what = (lambda: session.run(sample)), "model"
    with BackgroundLoad(load_level) if load_level.busy else contextlib.nullcontext() as background:
        if background is not None:
            background.resume()
        result = measure_sustained(step, seconds, min(WINDOW_S, seconds))
    return {"what": what, "load": load_level.to_dict() if load_level.busy else None, **result.to_dict()}


def sustain_choice(choice, profile, seconds: float = DEFAULT_SECONDS, progress=None) -> list[str]:
    """Run the chosen point and each ladder rung sustained (see the module); sets each point's ``sustained`` and
    returns notes for the report (a worst window over the budget, drift beyond 1.2x, a device this cannot reach).

    Raises:
        DeviceError: a sustained run crashed.
    """
    from edgekit.apps.profiling.load import level_for
    from edgekit.apps.profiling.reach import reach_for
    from edgekit.core import subprocesses

    if choice.chosen is None:
        return []
    if reach_for(profile).name != "local":
        return [f"{profile.id} is not this machine: sustained runs are not made there yet (--thorough measured "
                "nothing more)"]
    notes = []
    points = [choice.chosen] + [p for p, _ in choice.ladder]
    for i, p in enumerate(points):
        if progress:
            progress(f"sustained {seconds:.0f} s: {p.label()}", i, len(points))
        level = level_for(profile.load, p.threads)
        cmd = [sys.executable, "-m", "edgekit.apps.profiling.sustain", str(p.artifact), p.delegate, str(p.threads),
               str(seconds), str(level.cpu), str(level.memory), "x".join(str(int(v)) for v in profile.camera)]
        res = subprocesses.run(cmd, "sustained run", timeout=seconds * 3 + 120, error=DeviceError)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        out = json.loads(lines[-1]) if lines else {"error": (res.stderr.strip().splitlines() or ["no output"])[-1]}
        if res.returncode != 0 or "error" in out:
            raise DeviceError(f"sustained run of {p.label()} failed: {out.get('error')}")
        p.sustained = out
        role = "the choice" if i == 0 else f"ladder rung {i}"
        if out["worst_window_p90_ms"] > choice.budget_ms:
            notes.append(f"sustained {out['seconds']:.0f} s under load, {role} {p.label()} had a {out['window_s']:g} s "
                         f"window with {out['what']} p90 {out['worst_window_p90_ms']:.2f} ms, over the "
                         f"{choice.budget_ms:.1f} ms budget" + ("; the ladder is there for that" if i == 0 else ""))
        drift = out.get("drift_p90")
        if drift is not None and drift > 1.2:
            notes.append(f"sustained: {role} {p.label()} drifted: p90 of the last window {drift:.2f}x the first's")
    if progress:
        progress("done", len(points), len(points))
    return notes


def main(argv: list[str]) -> int:
    from edgekit.apps.profiling.load import LoadLevel

    artifact, delegate, threads, seconds, cpu, memory, frame = argv
    try:
        result = sustain_point(artifact, delegate, int(threads), float(seconds), LoadLevel(int(cpu), int(memory)),
                               tuple(int(v) for v in frame.split("x")))
    except EdgekitError as e:
        result = {"error": str(e)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
