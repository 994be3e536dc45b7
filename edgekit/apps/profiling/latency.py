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
    return measure_step_contended(lambda: session.run(inputs), load, runs, warmup, block)


def measure_step_contended(step, load, runs: int = 50, warmup: int = 10, block: int = 5) -> tuple[Latency, Latency]:
    """:func:`measure_contended` for any ``step()`` (a model run, or a whole camera frame)."""
    load.resume()
    for _ in range(warmup):
        step()
    load.pause()
    for _ in range(warmup):
        step()
    times: dict[bool, list[float]] = {False: [], True: []}
    loaded = False
    while min(len(t) for t in times.values()) < runs:
        if len(times[loaded]) < runs:
            (load.resume if loaded else load.pause)()
            step()
            for _ in range(min(block, runs - len(times[loaded]))):
                t = time.perf_counter()
                step()
                times[loaded].append(time.perf_counter() - t)
        loaded = not loaded
    load.pause()
    return _latency(times[False]), _latency(times[True])


def _latency(seconds: list[float]) -> Latency:
    ms = np.asarray(seconds) * 1e3
    return Latency(float(np.median(ms)), float(np.percentile(ms, 90)), float(ms.mean()), float(ms.min()), len(ms),
                   quantile_ci(ms, 0.5), quantile_ci(ms, 0.9))


#: the end-to-end fields a measurement (a profile point) may carry: the whole frame (:class:`CameraFrame`) and the
#: task quality of its masks (:mod:`edgekit.apps.profiling.taskeval`)
FRAME_FIELDS = ("frame", "e2e_p50_ms", "e2e_p90_ms", "load_e2e_p50_ms", "load_e2e_p90_ms", "e2e_p90_ci",
                "load_e2e_p90_ci", "stages_ms", "task_iou", "task_boundary_f", "task_on")

#: camera frame sizes by name (height, width)
FRAMES = {"480p": (480, 640), "720p": (720, 1280), "1080p": (1080, 1920)}


def parse_frame(value: str) -> tuple[int, int]:
    """``720p``, ``1080p``, ``480p`` or ``HxW`` -> (height, width).

    Raises:
        InputError: anything else, or a side outside 16..8192.
    """
    from edgekit.errors import InputError

    text = str(value).strip().lower()
    if text in FRAMES:
        return FRAMES[text]
    h, sep, w = text.partition("x")
    if not sep or not h.isdigit() or not w.isdigit() or not (16 <= int(h) <= 8192 and 16 <= int(w) <= 8192):
        raise InputError(f"frame '{value}': use 480p, 720p, 1080p or HEIGHTxWIDTH (16..8192 each)")
    return int(h), int(w)


@dataclass
class FrameTiming:
    """End-to-end time of a camera frame and of each stage (p50 ms), measured in the same runs."""

    frame: tuple[int, int]
    stages: dict[str, float]  # stage -> p50 ms
    end_to_end: Latency
    model: Latency

    @property
    def stage_sum_ms(self) -> float:
        return float(sum(self.stages.values()))

    def to_dict(self) -> dict:
        return {"frame": list(self.frame), "stages_p50_ms": self.stages, "stage_sum_ms": self.stage_sum_ms,
                "end_to_end": self.end_to_end.to_dict(), "model": self.model.to_dict(),
                "model_share": self.model.p50_ms / self.end_to_end.p50_ms if self.end_to_end.p50_ms else None}


class CameraFrame:
    """What an app does per camera frame, as one step: a uint8 BGR frame of ``frame_hw`` is resized (area) to the
    model's input, converted to the model's colour order, normalized as its input spec says and laid out as the
    model wants (NCHW or NHWC), run, and its first output's first channel upsampled (bilinear) back to the frame.

    Raises:
        InputError: the model's first input is not a static image tensor (NCHW or NHWC), or its first output is
            not a mask or an image (a class vector has nothing to upsample to the frame).
    """

    STAGES = ("resize", "colour", "normalize", "model", "upsample")

    def __init__(self, session, frame_hw: tuple[int, int], seed: int = 0):
        from edgekit.errors import InputError

        spec = session.io.inputs[0]
        if len(session.io.inputs) != 1 or not spec.is_image or not spec.is_static:
            raise InputError("end-to-end frame timing needs one static image input (NCHW or NHWC); this model has "
                             f"{[(s.name, s.shape, s.layout) for s in session.io.inputs]}")
        self.session, self.spec, self.frame_hw = session, spec, tuple(frame_hw)
        self.out = session.io.outputs[0]
        dims = [d for d in self.out.shape if isinstance(d, int)]
        spatial = self.out.layout in ("NCHW", "NHWC") or (len(dims) >= 2 and sorted(dims)[-2] > 1)
        if not spatial or self.out.kind in ("labels", "logits") and len(self.out.shape) < 3:
            raise InputError(f"end-to-end frame timing needs a mask or image output; {self.out.name} is "
                             f"{list(self.out.shape)} ({self.out.kind})")
        fh, fw = frame_hw
        self.frame = np.random.default_rng(seed).integers(0, 256, (fh, fw, 3), dtype=np.uint8)

    def _plane(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, np.float32)
        if self.out.layout == "NHWC" and y.ndim == 4:
            return y[0, :, :, 0]
        return y.reshape(-1, *y.shape[-2:])[0]

    def _input(self, rgb: np.ndarray) -> np.ndarray:
        from edgekit.core.preprocess import normalize_pixels

        s = self.spec
        x = normalize_pixels(rgb, "RGB", s.value_range, s.mean, s.std, peak=255.0)
        x = x[None] if s.layout == "NHWC" else x.transpose(2, 0, 1)[None]
        return np.ascontiguousarray(x, dtype=np.float32)

    def run(self) -> np.ndarray:
        """One frame, no timers inside: the mask at the frame's size."""
        return self.mask_of(self.frame)

    def mask_of(self, frame: np.ndarray) -> np.ndarray:
        """The model's first output channel for a uint8 BGR ``frame``, at the frame's size."""
        import cv2

        h, w = self.spec.hw
        fh, fw = frame.shape[:2]
        small = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
        rgb = small if self.spec.color == "BGR" else cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
        y = self.session.run({self.spec.name: self._input(rgb)})[self.out.name]
        return cv2.resize(self._plane(y), (fw, fh), interpolation=cv2.INTER_LINEAR)

    def run_staged(self) -> list[float]:
        """One frame with a timer between stages: seconds per stage, in :attr:`STAGES` order."""
        import cv2

        h, w = self.spec.hw
        fh, fw = self.frame_hw
        t = [time.perf_counter()]
        small = cv2.resize(self.frame, (w, h), interpolation=cv2.INTER_AREA)
        t.append(time.perf_counter())
        rgb = small if self.spec.color == "BGR" else cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
        t.append(time.perf_counter())
        x = self._input(rgb)
        t.append(time.perf_counter())
        y = self.session.run({self.spec.name: x})[self.out.name]
        t.append(time.perf_counter())
        cv2.resize(self._plane(y), (fw, fh), interpolation=cv2.INTER_LINEAR)
        t.append(time.perf_counter())
        return [b - a for a, b in zip(t, t[1:])]


def measure_frame(session, frame_hw: tuple[int, int], runs: int = 50, warmup: int = 10, seed: int = 0) -> FrameTiming:
    """Time a :class:`CameraFrame`. Runs alternate: one timed stage by stage, one timed as a whole only (no timers
    between stages), so the end-to-end p50 is measured on its own and the stages' p50s can be checked against it
    (their sum reconciles with the whole when nothing is missing).

    Raises:
        InputError: the model's first input is not a static image tensor.
    """
    cam = CameraFrame(session, frame_hw, seed)

    def whole() -> float:
        t = time.perf_counter()
        cam.run()
        return time.perf_counter() - t

    for _ in range(warmup):
        cam.run_staged()
        whole()
    per, wholes = [], []
    for _ in range(runs):
        per.append(cam.run_staged())
        wholes.append(whole())
    per = np.array(per)  # runs x stages, seconds
    stages = {n: float(np.median(per[:, i]) * 1e3) for i, n in enumerate(CameraFrame.STAGES)}
    return FrameTiming(cam.frame_hw, stages, _latency(wholes), _latency(list(per[:, 3])))


@dataclass
class Sustained:
    """A step run back to back for a sustained period, cut into windows: p50/p90 per window and their drift
    (last window over first; thermal throttling on phones, a noisy neighbour here)."""

    seconds: float
    window_s: float
    windows: list[Latency]

    @property
    def drift_p50(self) -> float | None:
        return self.windows[-1].p50_ms / self.windows[0].p50_ms if len(self.windows) > 1 else None

    @property
    def drift_p90(self) -> float | None:
        return self.windows[-1].p90_ms / self.windows[0].p90_ms if len(self.windows) > 1 else None

    @property
    def worst_p90_ms(self) -> float:
        return max(w.p90_ms for w in self.windows)

    def to_dict(self) -> dict:
        return {"seconds": round(self.seconds, 2), "window_s": round(self.window_s, 3),
                "runs": sum(w.runs for w in self.windows),
                "windows": [{"p50_ms": round(w.p50_ms, 3), "p90_ms": round(w.p90_ms, 3), "runs": w.runs}
                            for w in self.windows],
                "drift_p50": None if self.drift_p50 is None else round(self.drift_p50, 3),
                "drift_p90": None if self.drift_p90 is None else round(self.drift_p90, 3),
                "worst_window_p90_ms": round(self.worst_p90_ms, 3)}


def measure_sustained(step, seconds: float = 30.0, window_s: float = 5.0, warmup: int = 5) -> Sustained:
    """Run ``step()`` back to back for ``seconds`` after ``warmup`` untimed runs, in equal windows of about
    ``window_s``.

    Raises:
        InputError: ``seconds`` or ``window_s`` not positive, or a window longer than the run.
    """
    from edgekit.errors import InputError

    if not (seconds > 0 and window_s > 0) or window_s > seconds:
        raise InputError(f"a sustained run needs 0 < window ({window_s:g} s) <= duration ({seconds:g} s)")
    window_s = seconds / max(1, round(seconds / window_s))  # equal windows that end with the run
    for _ in range(warmup):
        step()
    windows: list[Latency] = []
    start = time.perf_counter()
    current: list[float] = []
    edge = start + window_s
    while True:
        t = time.perf_counter()
        step()
        end = time.perf_counter()
        current.append(end - t)
        if end >= edge:  # a window closes with the run that crosses its edge (a run longer than a window: one)
            windows.append(_latency(current))
            current = []
            while edge <= end:
                edge += window_s
            if end - start >= seconds:
                break
    return Sustained(time.perf_counter() - start, window_s, windows)
