"""``edgekit schedule``: measure, place, and optionally run a pipeline pipelined vs sequentially."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.apps.pipeline.costs import measure_costs
from edgekit.apps.pipeline.definition import PipelineSpec, load_pipeline, reset_stages
from edgekit.apps.pipeline.executor import PipelineRunner, StageCalls, run_sequential
from edgekit.apps.pipeline.placement import Plan, plan
from edgekit.apps.pipeline.report import summarize, timeline_png
from edgekit.apps.pipeline.units import local_units
from edgekit.errors import DeviceError, InputError

WARM_UP = 8  # frames each way runs before its clock starts (sessions opened, first buffers made)
BUNDLED = Path(__file__).resolve().parents[3] / "profiles" / "pipelines"


@dataclass
class Scheduled:
    spec: PipelineSpec
    units: dict
    costs: dict
    unavailable: dict
    plan: Plan


def cost_table(s: Scheduled) -> tuple[list[str], list[tuple[str, list[str], str]]]:
    """The measured costs as a table: the unit names (columns), then per stage ``(stage, cells, placed on)``
    where each cell lists that unit's measured choices (``"onnx 3.21, ncnn 2.80"``) or ``-``."""
    units = sorted({c.split(":")[0] for st in s.spec.stages for c in st.units})
    rows = []
    for st in s.spec.stages:
        cells = []
        for u in units:
            opts = [f"{c.split(':')[1] + ' ' if ':' in c else ''}{s.costs[(st.name, c)]:.2f}" for c in st.units
                    if c.split(":")[0] == u and (st.name, c) in s.costs]
            cells.append(", ".join(opts) or "-")
        rows.append((st.name, cells, s.plan.assignment[st.name]))
    return units, rows


def schedule(pipeline: str | Path, device: str = "local", latency_bound_ms: float = 100.0,
             frame: np.ndarray | None = None, repeats: int = 10) -> Scheduled:
    """Measure every (stage, unit) cost on ``device`` and choose the placement.

    Raises:
        InputError: an unknown device or pipeline, or a pipeline file that is refused (see
            :func:`~edgekit.apps.pipeline.definition.load_pipeline`; a reuse stage's model output that is not a
            one-channel probability mask at the luma's size is refused when the stage first runs).
        DeviceError: a stage cannot run on any of its units here (each unit's reason is given).
    """
    if device != "local":
        raise InputError(f"pipelines are measured on this machine ('local'); '{device}' is not reachable here")
    path = Path(pipeline)
    if not path.suffix:
        path = BUNDLED / f"{pipeline}.yaml"
    if not path.is_file():
        raise InputError(f"pipeline not found: {pipeline} (bundled: "
                         f"{', '.join(p.stem for p in BUNDLED.glob('*.yaml'))})")
    spec = load_pipeline(path)
    units = local_units()
    frame = frame if frame is not None else synthetic_frames(1)[0]
    costs, unavailable = measure_costs(spec, units, frame, repeats=repeats)
    for st in spec.stages:
        if not any((st.name, c) in costs for c in st.units):
            reasons = "; ".join(f"{c}: {unavailable.get((st.name, c), 'not measured')}" for c in st.units)
            raise DeviceError(f"stage '{st.name}' cannot run on any of its units here ({reasons})")
    return Scheduled(spec, units, costs, unavailable, plan(spec, costs, latency_bound_ms))


def synthetic_frames(n: int, hw: tuple[int, int] = (720, 1280), seed: int = 5) -> list[np.ndarray]:
    """Camera-like BGR uint8 frames (moving composited people)."""
    from edgekit.apps.video.synthetic_video import synthetic_clip

    frames, _ = synthetic_clip(n, hw, seed=seed)
    return frames


def compare(s: Scheduled, frames: list[np.ndarray], max_in_flight: int = 4, output: str = "output",
            timeline: Path | None = None, inject: dict[str, int] | None = None) -> dict:
    """Run the frames sequentially and pipelined; check the outputs are equal frame by frame."""
    used = {s.spec.stages[0].unit_of(c) for c in s.plan.assignment.values()}
    used |= {st.unit_of(c) for st in s.spec.stages for c in st.units if st.unit_of(c) in s.units}
    units = {u: s.units[u] for u in used}

    def warmed(calls: StageCalls, **kw) -> StageCalls:
        for _, out in run_sequential(reset_stages(s.spec), s.plan, units, frames[:WARM_UP], output=output, calls=calls,
                                     **kw):
            shape[:] = [out.shape, out.dtype]
        reset_stages(s.spec)
        return calls

    def timed(results) -> tuple[np.ndarray, list[int], float]:
        """Outputs copied into memory faulted in before the clock starts, so no run pays for the
        others' allocations and every run's consumer does the same work."""
        store = np.ones((len(frames), *shape[0]), shape[1])
        order: list[int] = []
        t0 = time.perf_counter()
        for i, out in results:
            store[i] = out
            order.append(i)
        return store, order, time.perf_counter() - t0

    shape: list = []
    calls = warmed(StageCalls(units))  # also records the output's shape
    sequential, _, seq_s = timed(run_sequential(s.spec, s.plan, units, frames, output=output, calls=calls))
    # a second baseline: still one frame at a time, but every library spreads its own work on all cores
    cores = sum(u.kind == "cpu" for u in s.units.values())
    lib_calls = warmed(StageCalls(units, threads=cores), library_threads=True)
    _, _, lib_s = timed(run_sequential(s.spec, s.plan, units, frames, output=output, calls=lib_calls,
                                       library_threads=True))
    calls = warm_pipelined(s, units, StageCalls(units), frames, max_in_flight, output)
    calls.injected = dict(inject or {})
    runner = PipelineRunner(s.spec, s.plan, units, max_in_flight=max_in_flight, calls=calls)
    pipelined, order, _ = timed(runner.run(frames, output=output))
    if order != list(range(len(frames))):
        raise DeviceError("pipelined run lost or reordered frames")
    equal = all(np.array_equal(a, b) for a, b in zip(sequential, pipelined))
    summary = summarize(runner.stats, units)
    summary.update({"sequential_fps": len(frames) / seq_s, "speedup": summary["throughput_fps"] * seq_s / len(frames),
                    "sequential_library_threads_fps": len(frames) / lib_s, "library_threads": cores,
                    "speedup_vs_library_threads": summary["throughput_fps"] * lib_s / len(frames),
                    "outputs_equal": equal, "plan": s.plan.to_dict()})
    if timeline:
        timeline_png(runner.stats, timeline, title=f"{s.spec.name}: pipelined on {', '.join(sorted(units))}")
        summary["timeline"] = str(timeline)
    return summary


def warm_pipelined(s: Scheduled, units: dict, calls: StageCalls, frames: list[np.ndarray], max_in_flight: int = 4,
                   output: str = "output") -> StageCalls:
    """Run ``WARM_UP`` frames pipelined (sessions opened, workers' first buffers made) and reset the
    stateful kernels, so a timed run that follows with ``calls`` measures the steady state."""
    for _ in PipelineRunner(reset_stages(s.spec), s.plan, units, max_in_flight, calls).run(frames[:WARM_UP],
                                                                                          output=output):
        pass
    reset_stages(s.spec)
    return calls
