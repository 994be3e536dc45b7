"""One measurement point in a fresh process: latency, peak memory and quality of an artifact.

    python -m edgekit.apps.profiling.worker ARTIFACT DELEGATE THREADS RUNS WARMUP DATA.npz \
        [LOAD_CPU LOAD_MEMORY [FRAME [EVAL.npz]]]

With ``LOAD_CPU``/``LOAD_MEMORY`` (hog processes, see :mod:`edgekit.apps.profiling.load`) the point is timed
quiet and under that load, interleaved in blocks (``load_p50_ms``/``load_p90_ms``); the hogs are the
worker's children and die with it. With ``FRAME`` (``HEIGHTxWIDTH``, the device's camera) the whole camera
frame is timed too (:class:`~edgekit.apps.profiling.latency.CameraFrame`: resize, colour, normalize, model,
mask upsample), quiet and under the same load (``e2e_*``), with each stage's p50 (``stages_ms``). With
``EVAL.npz`` (:mod:`edgekit.apps.profiling.taskeval`) the masks are scored on it (``task_iou``,
``task_boundary_f``, ``task_on``).

``DATA.npz`` holds the inputs (``in:NAME``, stacked samples) and the fp32 reference outputs
(``ref:NAME``) at the artifact's resolution. The worker prints one JSON line. A separate process
keeps one point's memory from inflating the next and keeps a crashing native library from taking
the sweep down.
"""

from __future__ import annotations

import json
import resource
import sys

import numpy as np


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_rss_mb() -> float:
    """This process's RSS high-water mark (VmHWM; unlike ru_maxrss it does not carry the parent's over exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _frame_fields(session, frame: tuple[int, int], runs: int, warmup: int, background) -> dict:
    """The whole camera frame's latency (quiet, and under ``background`` when given, interleaved) and the p50 of
    each of its stages; empty where the model does not take an image (the budget is then checked against the
    model's own latency, and the point says so: :attr:`~edgekit.apps.profiling.sweep.Point.budget_basis`)."""
    from edgekit.apps.profiling.latency import CameraFrame, measure_frame, measure_step_contended
    from edgekit.errors import InputError

    try:
        cam = CameraFrame(session, frame)
    except InputError:
        return {}
    staged = measure_frame(session, frame, runs=max(runs // 2, 5), warmup=min(warmup, 3))
    out = {"frame": list(frame), "stages_ms": {k: round(v, 3) for k, v in staged.stages.items()}}
    if background is not None:
        quiet, loaded = measure_step_contended(cam.run, background, runs=runs, warmup=warmup)
        out.update(load_e2e_p50_ms=loaded.p50_ms, load_e2e_p90_ms=loaded.p90_ms,
                   load_e2e_p90_ci=list(loaded.p90_ci) if loaded.p90_ci else None)
    else:
        quiet = staged.end_to_end
    out.update(e2e_p50_ms=quiet.p50_ms, e2e_p90_ms=quiet.p90_ms,
               e2e_p90_ci=list(quiet.p90_ci) if quiet.p90_ci else None)
    return out


def measure_point(artifact_path: str, delegate: str, threads: int, runs: int, warmup: int, data_path: str,
                  load_level=None, frame: tuple[int, int] | None = None, evaluation: str | None = None) -> dict:
    """Latency (quiet, and under ``load_level`` when given and busy), peak memory, quality and placement; with
    ``frame``, the whole camera frame's latency too.

    Raises:
        EdgekitError: the artifact cannot be opened or run, or a load process cannot start.
    """
    from edgekit.api import load
    from edgekit.apps.profiling.latency import measure, measure_contended
    from edgekit.core.parity import compare_outputs

    data = np.load(data_path)
    baseline = _rss_mb()
    session = load(artifact_path, threads=threads, delegate=delegate)
    names = [t.name for t in session.io.inputs]
    count = len(data[f"in:{names[0]}"])
    samples = [{n: data[f"in:{n}"][i : i + 1] for n in names} for i in range(count)]
    outputs = [session.run(s) for s in samples]
    refs = [{t.name: data[f"ref:{t.name}"][i : i + 1] for t in session.io.outputs} for i in range(count)]
    report = compare_outputs(refs, outputs, session.io, "int8")
    loaded, frame_fields = None, {}
    if load_level is not None and load_level.busy:
        from edgekit.apps.profiling.load import BackgroundLoad

        with BackgroundLoad(load_level) as background:
            lat, loaded = measure_contended(session, samples[0], background, runs=runs, warmup=warmup)
            if frame is not None:
                frame_fields = _frame_fields(session, frame, runs, warmup, background)
    else:
        lat = measure(session, samples[0], runs=runs, warmup=warmup)
        if frame is not None:
            frame_fields = _frame_fields(session, frame, runs, warmup, None)
    task = {}
    if evaluation:
        from edgekit.apps.profiling.taskeval import task_scores

        task = task_scores(session, evaluation)
    peak = _peak_rss_mb()
    o = report.outputs[0]
    quality = o.iou if o.iou is not None else (o.psnr if o.psnr is not None else o.cosine)
    metric = "mask IoU" if o.iou is not None else ("PSNR dB" if o.psnr is not None else "cosine")
    return {"p50_ms": lat.p50_ms, "p90_ms": lat.p90_ms, "mean_ms": lat.mean_ms, "peak_memory_mb": peak,
            "session_memory_mb": max(_rss_mb() - baseline, 0.0), "quality": quality, "quality_metric": metric,
            "placement": session.placement().to_dict(), "run_options": session.run_options(),
            "load_p50_ms": loaded.p50_ms if loaded else None, "load_p90_ms": loaded.p90_ms if loaded else None,
            "p90_ci": list(lat.p90_ci) if lat.p90_ci else None,
            "load_p90_ci": list(loaded.p90_ci) if loaded and loaded.p90_ci else None,
            "load": load_level.to_dict() if loaded else None, **frame_fields, **task}


def main(argv: list[str]) -> int:
    from edgekit.apps.profiling.load import LoadLevel
    from edgekit.errors import EdgekitError

    artifact, delegate, threads, runs, warmup, data, *rest = argv
    level = LoadLevel(cpu=int(rest[0]), memory=int(rest[1])) if len(rest) >= 2 else None
    frame = tuple(int(v) for v in rest[2].split("x")) if len(rest) >= 3 else None
    evaluation = rest[3] if len(rest) >= 4 else None
    try:
        result = measure_point(artifact, delegate, int(threads), int(runs), int(warmup), data, level, frame,
                               evaluation)
    except EdgekitError as e:
        result = {"error": str(e)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
