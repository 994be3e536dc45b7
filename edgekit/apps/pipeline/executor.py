"""Running a placed pipeline: one worker thread per unit, bounded queues, a flow limiter, faults.

Frames move from unit to unit as their stages complete, so frame t+1's segmentation runs while frame
t is composited. At most ``max_in_flight`` frames are inside the pipeline; a frame submitted when it
is full is dropped and counted. Results come out in frame order. When a stage fails on a unit
(delegate error, missing runtime, a raising kernel), the unit's stages move to the next unit in their
chains, the frame is retried there, and the report records the move and why. Nothing falls back
silently, and if a chain runs out the error reaches the caller.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from edgekit.apps.pipeline.definition import PipelineSpec, Stage
from edgekit.apps.pipeline.placement import Plan
from edgekit.apps.pipeline.units import Unit, unit_execution
from edgekit.errors import DeviceError, EdgekitError, InputError

_STOP = object()


@dataclass
class Move:
    frame: int
    stage: str
    from_choice: str
    to_choice: str
    reason: str


@dataclass
class RunStats:
    spans: list[tuple[int, str, str, float, float]] = field(default_factory=list)  # frame, stage, unit, t0, t1
    latencies_ms: list[float] = field(default_factory=list)
    submitted: int = 0
    dropped: int = 0
    completed: int = 0
    max_in_flight_seen: int = 0
    moves: list[Move] = field(default_factory=list)
    wall_s: float = 0.0


class StageCalls:
    """Runs a stage on a choice; model sessions are opened lazily, once per (stage, choice)."""

    def __init__(self, units: dict[str, Unit], threads: int = 1):
        self.units, self.threads = units, threads
        self._sessions: dict[tuple[str, str], object] = {}
        self._lock = threading.Lock()
        self.injected: dict[str, int] = {}      # unit -> frame index from which it fails (tests, drills)
        self._shapes: dict[str, tuple] = {}      # stage -> its model output's shape (for reused masks)

    def __call__(self, stage: Stage, choice: str, values: dict, frame: int) -> dict:
        """The stage's outputs on ``choice``.

        Raises:
            InputError: a stage with reuse whose model does not give a one-channel probability mask at the
                luma's size (the pipeline file's fault, the same on every unit).
            EdgekitError: the stage failed. An exception of any other type a kernel or runtime raises
                becomes a :class:`~edgekit.errors.DeviceError` naming the stage, the choice and the
                original exception (chained), so every caller treats it as that unit's failure.
        """
        unit = stage.unit_of(choice)
        if unit in self.injected and frame >= self.injected[unit]:
            raise DeviceError(f"unit {unit} failed (injected fault at frame {self.injected[unit]})")
        try:
            args = [values[i] for i in stage.inputs]
            if stage.is_model and stage.reuse is not None:
                result = [self._reused(stage, choice, args, frame)]
            elif stage.is_model:
                session = self._session(stage, choice)
                out = session.run({session.io.inputs[0].name: args[0]})
                result = [out[t.name] for t in session.io.outputs]
            else:
                r = stage.kernel(*args, **stage.params)
                result = list(r) if isinstance(r, tuple) else [r]
        except EdgekitError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure of a stage is that unit's failure, said as such
            raise DeviceError(f"stage '{stage.name}' failed on {choice}: {_describe(e)}") from e
        if len(result) < len(stage.outputs):
            raise DeviceError(f"stage '{stage.name}' on {choice} gave {len(result)} value(s) for outputs "
                              f"{stage.outputs}")
        return dict(zip(stage.outputs, result))

    def _reused(self, stage: Stage, choice: str, args: list, frame: int) -> np.ndarray:
        """The mask of a stage with reuse: the model's (run when the reuse policy says so) or the previous one
        carried by motion, in the model output's shape."""
        session = self._session(stage, choice)

        def infer() -> np.ndarray:
            out = session.run({session.io.inputs[0].name: args[0]})[session.io.outputs[0].name]
            mask = reuse_mask(stage.name, out, np.shape(args[1])[:2])
            self._shapes[stage.name] = np.shape(out)
            return mask

        mask = stage.reuse(frame, args[1], infer)
        return mask.reshape(self._shapes.get(stage.name, mask.shape))

    def _session(self, stage: Stage, choice: str):
        key = (stage.name, choice)
        with self._lock:
            if key not in self._sessions:
                from edgekit.api import load

                fmt = stage.format_of(choice)
                unit = self.units[stage.unit_of(choice)]
                self._sessions[key] = load(stage.model[fmt], threads=self.threads, delegate=unit.delegate_for(fmt))
            return self._sessions[key]


#: how far outside [0, 1] a reused mask's values may lie (float rounding of a sigmoid or a dequantized output)
PROBABILITY_SLACK = 1e-3


def reuse_mask(stage: str, out, hw: tuple[int, int]) -> np.ndarray:
    """A reuse stage's model output as an (h, w) float32 probability mask, checked on every inference: one channel
    (every other dimension 1) at the luma's size ``hw``, values finite and in [0, 1] (within
    :data:`PROBABILITY_SLACK`), as the reuse policy's IoU thresholds its masks at 0.5.

    Raises:
        InputError: another size, more than one channel, or values that are not probabilities (logits).
    """
    arr = np.asarray(out)
    dims = [d for d in arr.shape if d != 1]
    h, w = (int(v) for v in hw)
    if dims != [h, w]:
        if arr.size > h * w and arr.size % (h * w) == 0:
            why = f"{arr.size // (h * w)} channels"
        else:
            why = "another size"
        raise InputError(f"stage '{stage}': reuse carries a one-channel mask at the luma's size {h}x{w}; the "
                         f"model's output is {'x'.join(map(str, arr.shape))} ({why})")
    mask = arr.astype(np.float32, copy=False).reshape(h, w)
    lo, hi = float(mask.min()), float(mask.max())
    if not (np.isfinite(lo) and np.isfinite(hi) and lo >= -PROBABILITY_SLACK and hi <= 1 + PROBABILITY_SLACK):
        raise InputError(f"stage '{stage}': reuse needs a probability mask in [0, 1] (its IoU thresholds at 0.5); "
                         f"the model gave values from {lo:.4g} to {hi:.4g} (logits? end the model with a sigmoid)")
    return mask


def _describe(e: BaseException) -> str:
    """``TypeName: message`` on one line (a kernel's exception, shown to the user)."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}" if text else type(e).__name__


@dataclass
class _Item:
    index: int
    values: dict
    stage: int = 0
    t_submit: float = 0.0
    t_done: float = 0.0


class PipelineRunner:
    """Executes ``spec`` with ``plan``'s assignment on ``units``."""

    def __init__(self, spec: PipelineSpec, plan: Plan, units: dict[str, Unit], max_in_flight: int = 4,
                 calls: StageCalls | None = None):
        self.spec, self.units = spec, units
        self.assignment = dict(plan.assignment)
        self.max_in_flight = max_in_flight
        self.calls = calls or StageCalls(units)
        self.failed: set[tuple[str, str]] = set()
        self.stats = RunStats()
        # oldest frame first: a unit busy with several frames finishes the one that entered earliest,
        # which keeps latency near the work's length without costing throughput
        self._queues = {u: queue.PriorityQueue() for u in units}
        self._tickets = itertools.count()
        self._done: queue.Queue = queue.Queue()
        self._in_flight = 0  # only the driving thread (submit/_drain) changes it
        self._lock = threading.Lock()
        self._t0 = 0.0

    # -- workers
    def _worker(self, unit: Unit) -> None:
        unit.enter()
        q = self._queues[unit.name]
        while True:
            _, _, item = q.get()
            if item is _STOP:
                return
            stage = self.spec.stages[item.stage]
            choice = self.assignment[stage.name]
            t0 = time.perf_counter()
            try:
                item.values.update(self.calls(stage, choice, item.values, item.index))
            except InputError as e:  # the pipeline file's fault: every unit would refuse it, so no move
                self._done.put(e)
                continue
            except Exception as e:  # noqa: BLE001 - a unit's failure is recorded and moved, or re-raised
                self._fail_over(item, stage, choice, e)
                continue
            t1 = time.perf_counter()
            with self._lock:
                self.stats.spans.append((item.index, stage.name, unit.name, t0 - self._t0, t1 - self._t0))
            item.stage += 1
            if item.stage == len(self.spec.stages):
                item.t_done = t1  # latency ends here, not when the caller next collects
                self._done.put(item)
            else:
                self._route(item)

    def _route(self, item: _Item) -> None:
        stage = self.spec.stages[item.stage]
        self._queues[stage.unit_of(self.assignment[stage.name])].put((item.index, next(self._tickets), item))

    def _fail_over(self, item: _Item, stage: Stage, choice: str, error: Exception) -> None:
        reason = str(error) if isinstance(error, EdgekitError) else _describe(error)
        failed_unit = stage.unit_of(choice)
        with self._lock:
            for s in self.spec.stages:  # every stage on the failed unit moves
                current = self.assignment[s.name]
                if s.unit_of(current) != failed_unit:
                    continue
                self.failed.add((s.name, current))
                nxt = next((c for c in s.units if (s.name, c) not in self.failed and s.unit_of(c) != failed_unit),
                           None)
                if nxt is None:
                    self._done.put(DeviceError(f"stage '{s.name}' has no unit left after {current} failed: {reason}"))
                    return
                self.assignment[s.name] = nxt
                self.stats.moves.append(Move(item.index, s.name, current, nxt, reason))
        self._route(item)  # retry the frame in flight on the new unit

    # -- driving
    def submit(self, index: int, frame: np.ndarray) -> bool:
        """Put a frame in; False (and counted as dropped) when ``max_in_flight`` frames are inside."""
        self.stats.submitted += 1
        if self._in_flight >= self.max_in_flight:
            self.stats.dropped += 1
            return False
        self._in_flight += 1
        self.stats.max_in_flight_seen = max(self.stats.max_in_flight_seen, self._in_flight)
        self._route(_Item(index, {"frame": frame}, 0, time.perf_counter()))
        return True

    def run(self, frames: Iterable[np.ndarray], fps: float | None = None, output: str | None = None) -> Iterator:
        """Feed ``frames`` (at ``fps`` like a camera, or as fast as the pipeline takes them) and yield
        ``(index, values)`` (or ``values[output]``) in frame order."""
        with unit_execution():
            yield from self._run(frames, fps, output)

    def _run(self, frames: Iterable[np.ndarray], fps: float | None, output: str | None) -> Iterator:
        threads = [threading.Thread(target=self._worker, args=(u,), daemon=True) for u in self.units.values()]
        for t in threads:
            t.start()
        self._t0 = time.perf_counter()
        pending: dict[int, dict] = {}
        accepted: list[int] = []  # accepted frames not yet yielded, in order
        taken = 0
        try:
            for i, frame in enumerate(frames):
                if fps:
                    delay = self._t0 + i / fps - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    if self.submit(i, frame):
                        accepted.append(i)
                        taken += 1
                else:  # no input rate: back-pressure instead of drops
                    while self._in_flight >= self.max_in_flight:
                        yield from self._drain(pending, accepted, block=True, output=output)
                    self.submit(i, frame)
                    accepted.append(i)
                    taken += 1
                yield from self._drain(pending, accepted, block=False, output=output)
            while self.stats.completed < taken:
                yield from self._drain(pending, accepted, block=True, output=output)
        finally:
            self.stats.wall_s = time.perf_counter() - self._t0
            for q in self._queues.values():
                q.put((float("inf"), next(self._tickets), _STOP))
            for t in threads:
                t.join(timeout=5)

    def _drain(self, pending: dict, accepted: list[int], block: bool, output: str | None):
        while True:
            try:
                item = self._done.get(block=block, timeout=30 if block else None)
            except queue.Empty:
                if block:
                    raise DeviceError("pipeline stalled: no frame finished in 30 s") from None
                return
            if isinstance(item, Exception):
                raise item
            self.stats.latencies_ms.append((item.t_done - item.t_submit) * 1000)
            self.stats.completed += 1
            self._in_flight -= 1
            pending[item.index] = item.values
            while accepted and accepted[0] in pending:  # in frame order
                idx = accepted.pop(0)
                values = pending.pop(idx)
                yield idx, (values[output] if output else values)
            if block:
                return


def run_sequential(spec: PipelineSpec, plan: Plan, units: dict[str, Unit], frames: Iterable[np.ndarray],
                   output: str | None = None, calls: StageCalls | None = None, library_threads: bool = False):
    """The same stage calls, one frame at a time in this thread (the baseline), threaded as the units
    run them (:func:`unit_execution`), or with OpenCV's own thread pool when ``library_threads``."""
    calls = calls or StageCalls(units)
    with contextlib.nullcontext() if library_threads else unit_execution():
        for i, frame in enumerate(frames):
            values = {"frame": frame}
            for s in spec.stages:
                values.update(calls(s, plan.assignment[s.name], values, i))
            yield i, (values[output] if output else values)
