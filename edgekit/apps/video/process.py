"""``edgekit process``: run the effects an app config describes on a video, a folder or a camera,
on the heterogeneous runtime (stages placed on this machine's units), and write the result plus a
before/after sheet.

What runs is what the profiler chose: the config's artifact, runtime, exact delegate, threads, resolution,
colour order and value range/mean/std. The fallback runs only when the choice cannot, and every deviation
(fallback, fail-over, an unavailable unit, a config field that disagrees with its artifact) is reported;
``strict`` turns any of them into an error before anything is written."""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.apps.pipeline.costs import measure_costs
from edgekit.apps.pipeline.definition import PipelineSpec, Stage, reset_stages
from edgekit.apps.pipeline.executor import PipelineRunner, StageCalls, run_sequential
from edgekit.apps.pipeline.placement import plan
from edgekit.apps.pipeline.units import Unit, local_units
from edgekit.apps.profiling.appconfig import load_config
from edgekit.apps.video import kernels
from edgekit.apps.video.io import FrameWriter, open_input
from edgekit.core.artifact import Artifact
from edgekit.core.iospec import to_layout
from edgekit.errors import DeviceError, EdgekitError, InputError, RuntimeUnavailableError

EFFECTS = ("blur", "replace", "beauty", "denoise", "lowlight")
#: the kernels :func:`build_pipeline` can run (``path``): today's, the ones before them, the earliest
KERNEL_PATHS = ("fused", "previous", "before")
DENOISE_KERNEL = {"fused": "u8", "previous": "lut", "before": "float"}


@dataclass
class ProcessReport:
    frames_in: int
    frames_out: int
    stopped: str
    wall_s: float
    fps: float
    output: str
    sheet: str
    plan: dict
    stage_ms: dict
    notes: list[str] = field(default_factory=list)
    #: how the segmentation model ran at the start: the config entry (runtime/fallback), target, delegate,
    #: threads, resolution, and the unit choice
    model: dict = field(default_factory=dict)
    #: "stage@choice" -> why that unit could not run it here
    unavailable: dict[str, str] = field(default_factory=dict)
    #: fail-over moves during the run (frame, stage, from, to, reason)
    moves: list[dict] = field(default_factory=list)
    #: every way the run departed from the app config ({kind, message}); an error with ``strict``
    deviations: list[dict] = field(default_factory=list)
    #: segmentation reuse between frames: k over time, frames inferred, checks against the IoU budget, CPU
    #: saved, and what capped it; ``{"enabled": False, "why": ...}`` when it did not run
    reuse: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class BackgroundReplacer:
    """Replacement background from an image or a (looping) video."""

    def __init__(self, source: str | Path):
        import cv2

        self.cap = None
        img = cv2.imread(str(source), cv2.IMREAD_COLOR)
        if img is None:
            self.cap = cv2.VideoCapture(str(source))
            ok, img = self.cap.read()
            if not ok:
                raise InputError(f"background {source} is neither an image nor a readable video")
        self.image = img

    def __call__(self, frame: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        if self.cap is not None:
            ok, img = self.cap.read()
            if not ok:  # loop
                self.cap.set(1, 0)
                ok, img = self.cap.read()
            self.image = img if ok else self.image
        return kernels.replace_background(frame, alpha, self.image)


@dataclass(frozen=True)
class ModelEntry:
    """One way to run the segmentation model, exactly as the app config says (its runtime or fallback)."""

    role: str                   # "runtime" (the profiler's choice) or "fallback"
    key: str                    # the format slot of the segment stage's choices (UNIT:KEY)
    target: str
    runtime: str
    delegate: str
    threads: int
    hw: tuple[int, int]
    artifact_dir: str
    color: str
    value_range: tuple[float, float]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def units(self) -> list[str]:
        """The units this entry may run on: the one its delegate's kind names (from the backend's declaration),
        or the CPU cores."""
        from edgekit.backends import registry

        kind = registry.backend(self.runtime).unit_kind(self.delegate)
        return [kind] if kind in ("gpu", "npu") else ["cpu1", "cpu0"]

    def describe(self) -> dict:
        return {"role": self.role, "target": self.target, "runtime": self.runtime, "delegate": self.delegate,
                "threads": self.threads, "resolution": list(self.hw), "artifact": self.artifact_dir}

    def label(self) -> str:
        return f"{self.target} on {self.delegate} with {self.threads} thread(s) at {self.hw[0]}x{self.hw[1]}"

    def prepare(self, frame_bgr: np.ndarray) -> np.ndarray:
        """A uint8 BGR frame -> this entry's 1x3xHxW input: area resize, the config's colour order, value
        range, mean and std."""
        return model_input(frame_bgr, self.hw, self.color, self.value_range, self.mean, self.std)

    def prepare_with_luma(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`prepare` and the frame's luma at the model's resolution (for segmentation reuse), from one
        area resize of the frame: the model input is the same as :meth:`prepare`'s."""
        import cv2

        from edgekit.apps.video.reuse import luma

        small = cv2.resize(frame_bgr, (self.hw[1], self.hw[0]), interpolation=cv2.INTER_AREA)
        return self.prepare(small), luma(small)


def model_input(frame_bgr: np.ndarray, hw: tuple[int, int], color: str = "RGB",
                value_range: tuple[float, float] = (0.0, 1.0), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)) -> np.ndarray:
    """A uint8 BGR frame -> a 1x3xHxW float32 input: resized (area) to ``hw``, in ``color`` order, pixels
    mapped to ``value_range``, then ``(x - mean) / std`` (as edgekit's calibration prepares images)."""
    from edgekit.core.preprocess import frame_to_input

    return frame_to_input(frame_bgr, hw, color, value_range, mean, std)


def model_entries(config: dict) -> list[ModelEntry]:
    """The config's runtime and fallback as :class:`ModelEntry` (the config must come from
    :func:`~edgekit.apps.profiling.appconfig.load_config`, which verified every file).

    Raises:
        InputError: the config contradicts itself or its artifacts (a resolution the artifact cannot take,
            an input process cannot feed).
    """
    inp = config["input"]
    if [inp["height"], inp["width"]] != list(config["runtime"]["resolution"]):
        raise InputError(f"app config: input is {inp['height']}x{inp['width']} but runtime.resolution is "
                         f"{config['runtime']['resolution']}")
    entries: list[ModelEntry] = []
    for role in ("runtime", "fallback"):
        e = config.get(role)
        if not e:
            continue
        key = e["target"] if all(x.key != e["target"] for x in entries) else f"{e['target']}-{role}"
        entries.append(config_entry(config, role, key, e))
    return entries


def config_entry(config: dict, role: str, key: str, e: dict) -> ModelEntry:
    """One runtime entry of the config (its runtime, fallback or a ladder rung) as a :class:`ModelEntry`,
    checked against its artifact.

    Raises:
        InputError: the entry contradicts its artifact or the config's input.
    """
    pre, inp = config["preprocessing"], config["input"]
    entry = ModelEntry(role, key, e["target"], e["runtime"], e["delegate"], e["threads"],
                       (int(e["resolution"][0]), int(e["resolution"][1])), e["artifact_dir"], pre["color"],
                       tuple(pre["value_range"]), tuple(pre["mean"]), tuple(pre["std"]))
    art = Artifact.load(entry.artifact_dir)
    src = art.source_io.inputs[0] if art.source_io.inputs else None
    if src is None or not src.is_image or src.channels != 3 or len(art.source_io.inputs) != 1:
        raise InputError(f"app config: the {role} artifact does not take one 3-channel image, which is what "
                         "process feeds it")
    native = art.io.inputs[0]
    if role == "runtime" and (inp["name"], [int(d) for d in inp["shape"]], inp["layout"], inp["dtype"]) != (
            native.name, [int(d) if isinstance(d, int) else d for d in native.shape], native.layout, native.dtype):
        raise InputError(f"app config: input {inp['name']} {inp['shape']} {inp['layout']} {inp['dtype']} is not "
                         f"the runtime artifact's input ({native.name} {list(native.shape)} {native.layout} "
                         f"{native.dtype})")
    if src.is_static and src.hw != entry.hw:
        raise InputError(f"app config: {role}.resolution is {entry.hw[0]}x{entry.hw[1]} but its artifact takes "
                         f"{src.hw[0]}x{src.hw[1]}")
    return entry


def _same(a, b) -> bool:
    a, b = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
    return a.shape == b.shape and bool(np.allclose(a, b, atol=1e-6))


def preprocessing_deviations(entries: list[ModelEntry]) -> list[str]:
    """Where the config's pre-processing differs from what an artifact was validated with (process uses the
    config's, and says so)."""
    out = []
    for e in entries:
        src = Artifact.load(e.artifact_dir).source_io.inputs[0]
        diffs = [] if e.color == src.color else [f"colour order {e.color} (artifact: {src.color})"]
        for name, given, recorded in (("value range", e.value_range, src.value_range), ("mean", e.mean, src.mean),
                                      ("std", e.std, src.std)):
            if not _same(given, recorded):
                diffs.append(f"{name} {list(given)} (artifact: {list(recorded)})")
        if diffs:
            out.append(f"the config's pre-processing differs from what the {e.role} artifact was validated with: "
                       f"{'; '.join(diffs)}; process feeds the config's")
    return out


class ConfiguredCalls(StageCalls):
    """Stage calls that run the segmentation model exactly as the app config says: its artifact, runtime,
    delegate (passed as written), threads, resolution and pre-processing; kernel stages as usual. A model
    with more than one thread runs with the process's cores (its unit's pinning would put all its threads
    on one core)."""

    def __init__(self, units: dict[str, Unit], entries: list[ModelEntry]):
        super().__init__(units)
        self.entries = {e.key: e for e in entries}
        self.primary_hw = entries[0].hw if entries else None
        self.cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        #: segmentation reuse (set once costs are measured): the segment stage runs the model or carries the mask
        self.reuse = None
        #: frames whose model ran at another resolution than the reuse works at (a fallback), so reuse restarted
        self.reuse_bypassed: list[int] = []
        #: the config's fallback ladder (:class:`~edgekit.apps.video.ladder.LadderFollower`), when it has one
        self.ladder = None

    def __call__(self, stage: Stage, choice: str, values: dict, frame: int) -> dict:
        entry = self.entries.get(stage.format_of(choice)) if stage.is_model else None
        if entry is None:
            return super().__call__(stage, choice, values, frame)
        if self.ladder is not None and entry.role == "runtime":  # the rung the ladder is on now
            entry = self.ladder.current
        if self.reuse is not None and stage.name == "segment" and "seg_gray" in values:
            if entry.hw != self.primary_hw:  # the carried masks are at the primary's resolution: start again
                self.reuse_bypassed.append(frame)
                self.reuse.reset()
            else:
                def infer():
                    return self._run_model(stage, choice, entry, values, frame)["mask"][0, 0]

                mask = self.reuse(frame, values["seg_gray"], infer)
                return {"mask": mask[None, None]}
        return self._run_model(stage, choice, entry, values, frame)

    def _run_model(self, stage: Stage, choice: str, entry: ModelEntry, values: dict, frame: int) -> dict:
        unit = stage.unit_of(choice)
        if unit in self.injected and frame >= self.injected[unit]:
            raise DeviceError(f"unit {unit} failed (injected fault at frame {self.injected[unit]})")
        x = values[stage.inputs[0]] if entry.hw == self.primary_hw else entry.prepare(values["frame"])
        rung = entry.role.startswith("ladder")
        with self._cores(entry.threads):
            session = self.ladder.session(entry) if rung else self._session(stage, choice)
            spec = session.io.inputs[0]
            if spec.layout == "NHWC":
                x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
            t0 = time.perf_counter()
            out = session.run({spec.name: x.astype(spec.dtype, copy=False)})
            if self.ladder is not None and (rung or entry.role == "runtime"):
                self.ladder.observe(frame, (time.perf_counter() - t0) * 1e3)
        # the kernels take masks as 1x1xHxW: a model whose outputs are NHWC (a TFLite source's) gives 1xHxWx1
        return dict(zip(stage.outputs, [to_layout(out[t.name], t.layout, "NCHW") for t in session.io.outputs]))

    @contextlib.contextmanager
    def _cores(self, threads: int):
        if threads <= 1 or self.cores is None:
            yield
            return
        pinned = os.sched_getaffinity(0)
        os.sched_setaffinity(0, self.cores)
        try:
            yield
        finally:
            os.sched_setaffinity(0, pinned)

    def _session(self, stage: Stage, choice: str):
        key = (stage.name, choice)
        with self._lock:
            if key not in self._sessions:
                from edgekit.api import load

                entry = self.entries[stage.format_of(choice)]
                self._sessions[key] = load(entry.artifact_dir, threads=entry.threads, delegate=entry.delegate)
            return self._sessions[key]


def build_pipeline(config: dict, effects: list[str], strengths: dict[str, float],
                   background: str | Path | None = None, threads: int = 1, reuse: bool = False,
                   fast: bool = True, path: str | None = None) -> PipelineSpec:
    """The stages for ``effects``; the segmentation stage's choices run the config's runtime (first) and its
    fallback (after), ``UNIT:TARGET``, on the units their delegates name (see :class:`ConfiguredCalls`).
    With ``reuse``, ``prepare`` also gives the frame's luma at the model's resolution (``seg_gray``), which the
    segment stage needs to carry masks (:class:`~edgekit.apps.video.reuse.MaskReuse`). ``fast`` (the default)
    reads each full frame once per stage: ``prepare`` makes the 1/4-size frame the model input and the background
    blur are made from, the temporal smoothing runs on the model's mask before refinement, and the background's
    weights come from that mask; ``fast=False`` is the earlier path (full-resolution smoothing, the frame
    downscaled again for the background), kept for side-by-side benchmarks.

    ``path`` names the kernels (``fast`` is read only when it is None): ``"fused"`` (the default) blends in uint8
    wherever the frame is full size: the low-light curves as two per-channel ``cv2.LUT`` and a weight map worked
    out at the curves' resolution, the denoiser's blend, a uint8 alpha and its compositing, the background's blur
    at 1/8 size; ``"previous"`` the kernels before that (float alpha and weights, ``cv2.blendLinear``, the
    (level, pixel) gather, the blur at 1/4 size); ``"before"`` (``fast=False``) the earliest.

    Raises:
        InputError: an unknown effect, a missing background, or a config process cannot follow.
        ValueError: an unknown ``path``.
    """
    path = path or ("fused" if fast else "before")
    if path not in KERNEL_PATHS:
        raise ValueError(f"path {path!r}: choose from {', '.join(KERNEL_PATHS)}")
    fast, fused = path != "before", path == "fused"
    unknown = set(effects) - set(EFFECTS)
    if unknown or not effects:
        raise InputError(f"unknown effect(s) {sorted(unknown)}; choose from {', '.join(EFFECTS)}")
    if "replace" in effects and not background:
        raise InputError("the replace effect needs --background IMAGE|VIDEO")
    stages, image = [], "frame"
    cpu = ["cpu0", "cpu1"]

    def add(name, fn, inputs, outputs, units=cpu):
        stages.append(Stage(name, inputs, outputs, list(units), kernel=fn))

    if "denoise" in effects:
        from edgekit.apps.video.effects.denoise import TemporalDenoiser

        add("denoise", TemporalDenoiser(strengths.get("denoise", 1.0), kernel=DENOISE_KERNEL[path]), [image],
            ["denoised"])
        image = "denoised"
    if "lowlight" in effects:
        from edgekit.apps.video.effects.lowlight import PREVIOUS_CURVE_HW, open_lowlight

        # today's runs the curve network on every 2nd frame (the curves are smoothed over frames anyway; README)
        hw = {"fused": {"every": 2}, "previous": {"hw": PREVIOUS_CURVE_HW}, "before": {"hw": (144, 256)}}[path]
        lowlight = open_lowlight(strengths.get("lowlight", 1.0), threads, **hw)
        if fused:
            add("lowlight", lowlight.estimate_two, [image], ["curves"], ["cpu1", "cpu0"])
            add("brighten", lowlight.apply_two, [image, "curves"], ["bright"])
        else:
            add("lowlight", lowlight.estimate, [image], ["curves"], ["cpu1", "cpu0"])
            add("brighten", lowlight.apply if fast else lowlight.apply_full, [image, "curves"], ["bright"])
        image = "bright"
    if "beauty" in effects:
        from edgekit.apps.video.effects.beauty import BeautySettings, FaceTracker, apply_beauty

        add("face", FaceTracker(threads), [image], ["landmarks"], ["cpu1", "cpu0"])
        b = strengths.get("beauty", 1.0)
        settings = BeautySettings(smooth=0.6 * b, slim=0.3 * b, eyes=0.3 * b, lipstick=0.4 * b)
        # the low-light output is made for this frame only: beauty may draw on it instead of on a copy
        add("beauty", functools.partial(apply_beauty, s=settings, in_place=fused and image == "bright"),
            [image, "landmarks"], ["beautified"])
        image = "beautified"
    if "blur" in effects or "replace" in effects:
        entries = model_entries(config)
        if fast:
            add("prepare", functools.partial(_prepare_quarter, entries[0], reuse, fused), ["frame"],
                ["seg_in", "quarter", "seg_gray"] if reuse else ["seg_in", "quarter"])
        elif reuse:
            add("prepare", entries[0].prepare_with_luma, ["frame"], ["seg_in", "seg_gray"])
        else:
            add("prepare", entries[0].prepare, ["frame"], ["seg_in"])
        chain = [f"{u}:{e.key}" for e in entries for u in e.units()]
        stages.append(Stage("segment", ["seg_in", "frame", "seg_gray"] if reuse else ["seg_in", "frame"], ["mask"],
                            chain,
                            model={e.key: e.artifact_dir for e in entries}))
        if fast:  # smoothing and the background's weights at the model's resolution, the 1/4 frame made once
            add("smooth", kernels.MaskSmoother(), ["mask"], ["mask_s"])
            if fused and "replace" not in effects:  # uint8 alpha, per-pixel work only where it can be fractional
                add("refine", kernels.refine_band, ["mask_s", "frame", "quarter"], ["alpha", "band"])
            else:
                add("refine", kernels.refine_mask, ["mask_s", "frame"], ["alpha"])
        else:
            add("refine", functools.partial(kernels.refine_mask, before=True), ["mask", "frame"], ["alpha_raw"])
            add("smooth", kernels.TemporalSmoother(), ["alpha_raw"], ["alpha"])
        if "replace" in effects:
            add("composite", BackgroundReplacer(background), [image, "alpha"], ["output"])
        else:
            strength = strengths.get("blur", 1.0)
            if fused:  # the blur at 1/8 size, from the 1/4 frame prepare made (or the effects' output)
                if image == "frame":
                    add("background", functools.partial(kernels.blurred_background_eighth, strength=strength),
                        ["quarter", "mask_s", "frame"], ["blurred"])
                else:
                    add("background", functools.partial(_background_eighth_of, strength=strength),
                        [image, "mask_s"], ["blurred"])
            elif fast and image == "frame":
                add("background", functools.partial(kernels.blurred_background_small, strength=strength),
                    ["quarter", "mask_s", "frame"], ["blurred"])
            elif fast:
                add("background", functools.partial(_background_of, strength=strength), [image, "mask_s"],
                    ["blurred"])
            else:
                add("background", functools.partial(kernels.blurred_background, strength=strength),
                    [image, "alpha"], ["blurred"])
            if fused:
                add("composite", functools.partial(kernels.composite_band, overwrite_bg=True),
                    [image, "blurred", "alpha", "band"], ["output"])
            else:
                add("composite", kernels.composite, [image, "blurred", "alpha"], ["output"])
    else:
        add("output", lambda x: x, [image], ["output"])
    spec = PipelineSpec("process:" + "+".join(effects), stages)
    spec.check()
    return spec


def _prepare_quarter(entry: ModelEntry, with_luma: bool, fused: bool, frame_bgr: np.ndarray):
    """(model input, the 1/4-size frame[, luma at the model's resolution]) from one read of the frame; ``fused``
    makes the model input by one table lookup (:func:`_input_lut`, the same numbers)."""
    import cv2

    from edgekit.apps.video.reuse import luma

    q = kernels.quarter(frame_bgr)
    small = cv2.resize(q, (entry.hw[1], entry.hw[0]), interpolation=cv2.INTER_AREA)
    x = _input_lut(entry.color, entry.value_range, entry.mean, entry.std)(small) if fused else entry.prepare(small)
    return (x, q, luma(small)) if with_luma else (x, q)


@functools.lru_cache(maxsize=8)
def _input_lut(color: str, value_range: tuple, mean: tuple, std: tuple):
    """:meth:`ModelEntry.prepare` of a frame already at the model's size as one per-channel ``cv2.LUT`` to
    float32 (each uint8 value's normalized number, computed by :func:`~edgekit.core.preprocess.normalize_pixels`
    itself) and one transpose, instead of five float passes."""
    import cv2

    from edgekit.core.preprocess import normalize_pixels

    levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], 3, axis=2)  # every channel = the value
    table = normalize_pixels(levels, color, value_range, mean, std, peak=255.0)  # [value, 0, model channel]
    # cv2.LUT maps the frame's channel k (B, G, R) through table channel k: the model channel it feeds
    rgb = color != "BGR"
    lut = np.ascontiguousarray(table[..., ::-1] if rgb else table, np.float32)

    def prepare(small_bgr: np.ndarray) -> np.ndarray:
        vals = cv2.LUT(small_bgr, lut).transpose(2, 0, 1)  # 3 x h x w, the frame's channel order
        return np.ascontiguousarray((vals[::-1] if rgb else vals)[None])

    return prepare


def _background_eighth_of(image: np.ndarray, mask: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """The blurred background of an effect's output, blurred at 1/8 size (one area resize of the output)."""
    return kernels.blurred_background_eighth(kernels.eighth(image), mask, image, strength)


def _background_of(image: np.ndarray, mask: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """The blurred background of an effect's output (not the camera frame the model saw)."""
    return kernels.blurred_background_small(kernels.quarter(image), mask, image, strength)


def _deviation(kind: str, message: str) -> dict:
    return {"kind": kind, "message": message}


def _strict_error(dev: dict) -> EdgekitError:
    cls = InputError if dev["kind"] == "config" else RuntimeUnavailableError
    return cls(f"--strict: {dev['message']}; nothing was written")


def process(input: str | Path, output: str | Path, config: str | Path, effects: list[str],
            strengths: dict[str, float] | None = None, background: str | Path | None = None,
            max_frames: int | None = None, sequential: bool = False, samples: int = 4,
            progress: Callable[[int, int | None], None] | None = None, strict: bool = False,
            reuse: dict | bool | None = None) -> ProcessReport:
    """Run ``effects`` on ``input`` as the app config says and write ``output`` (video or folder) with a
    before/after sheet, whole or not at all.

    The segmentation model runs the config's runtime, exact delegate, threads, resolution and pre-processing;
    its fallback is used only when the runtime cannot run here, or by fail-over during the run. Every such
    deviation, and why each unit was unavailable, is in the report (``deviations``, ``unavailable``,
    ``moves``); with ``strict`` any deviation is an error and nothing is written. Frames whose size differs
    from the first are resized to it (with a note), so the output holds exactly ``frames_out`` frames.

    ``reuse`` (segmentation reuse between frames, :mod:`edgekit.apps.video.reuse`): None follows the config's
    ``reuse`` block (on when it has one, unless ``enabled: false``); False turns it off; a dict (``max_k``,
    ``min_iou``, ``method``, ``safety``) turns it on with the config's block updated by it. The report's
    ``reuse`` says what ran, k over time and the CPU saved, or why it was off.

    Raises:
        InputError: a bad input, effect or config (sha256, paths, a field process cannot follow).
        OutputError: the output exists and is not edgekit's previous output, or cannot be written.
        RuntimeUnavailableError: neither the runtime nor the fallback can run here; with ``strict``, any
            fallback, fail-over or unavailable unit of the config's choice.
        KeyboardInterrupt: Ctrl-C or SIGTERM; nothing is written.
    """
    cfg = load_config(config)  # every file of the runtime and fallback checked against its sha256
    budget, reuse_off = _reuse_budget(cfg, reuse, effects)
    spec = build_pipeline(cfg, effects, strengths or {}, background, reuse=budget is not None)
    entries = model_entries(cfg) if any(s.name == "segment" for s in spec.stages) else []
    src = open_input(input, max_frames)
    out_path = Path(output)
    sheet = out_path.with_name(out_path.stem + "_before_after.png")
    writer = FrameWriter(out_path, src.fps, sheet)  # refuses an existing output that is not edgekit's
    try:
        return _run(src, writer, cfg, spec, entries, input, sequential, samples, progress, strict, budget, reuse_off)
    except BaseException:
        writer.close(keep=False)
        raise


def _reuse_budget(cfg: dict, reuse: dict | bool | None, effects: list[str]):
    """(the reuse budget, or None and why reuse is off).

    Raises:
        InputError: a ``--reuse`` value the schema refuses.
    """
    from edgekit.apps.video.reuse import budget_from

    block = cfg.get("reuse")
    if reuse is False:
        return None, "turned off (--no-reuse)"
    if reuse is None:
        if block is None:
            return None, "not requested (no reuse block in the app config, no --reuse)"
        if not block.get("enabled", True):
            return None, "turned off by the app config (reuse.enabled: false)"
        wanted, what = dict(block), "app config reuse"
    else:
        wanted, what = {**(block or {}), **reuse, "enabled": True}, "--reuse"
    budget = budget_from(wanted, what)
    if not {"blur", "replace"} & set(effects):
        return None, "no segmentation in this run (reuse applies to blur and replace)"
    return budget, ""


def _run(src, writer: FrameWriter, cfg: dict, spec: PipelineSpec, entries: list[ModelEntry], input, sequential: bool,
         samples: int, progress, strict: bool, budget=None, reuse_off: str = "") -> ProcessReport:
    import cv2

    first = next(src.frames, None)
    if first is None:
        raise InputError(f"no frame could be read from {input}" + (f" ({src.stopped})" if src.stopped else ""))
    notes: list[str] = []
    deviations = [_deviation("config", d) for d in preprocessing_deviations(entries)]
    found = local_units()
    units = {u: v for u, v in found.items() if any(c.split(":")[0] == u for s in spec.stages for c in s.units)}
    calls = ConfiguredCalls(units, entries)
    costs, unavailable = measure_costs(spec, units, first, repeats=3, calls=calls)
    reset_stages(spec)  # measuring ran the stateful kernels: start the video from a clean state
    if budget is not None:
        from edgekit.apps.video.reuse import MaskReuse

        calls.reuse = MaskReuse(budget)
    plan_costs = dict(costs)
    model_info: dict = {}
    if entries:
        by_role = {e.role: [f"{u}:{e.key}" for u in e.units()] for e in entries}
        primary_ok = [c for c in by_role["runtime"] if ("segment", c) in costs]
        reasons = "; ".join(f"{c}: {unavailable.get(('segment', c), 'not measured')}" for c in by_role["runtime"])
        if not primary_ok:
            if not any(("segment", c) in costs for c in by_role.get("fallback", [])):
                raise RuntimeUnavailableError(f"neither the app config's runtime ({entries[0].label()}) nor its "
                                              f"fallback can run here: {reasons}" + "".join(
                                                  f"; {c}: {unavailable.get(('segment', c), 'not measured')}"
                                                  for c in by_role.get("fallback", [])))
            deviations.append(_deviation("fallback", f"the profiler's choice {entries[0].label()} cannot run here "
                                                     f"({reasons}); running the fallback {entries[1].label()}"))
        else:
            for c in by_role.get("fallback", []):  # the fallback is for fail-over only
                plan_costs.pop(("segment", c), None)
            missing = [c for c in by_role["runtime"] if ("segment", c) not in costs]
            if missing:
                why = "; ".join(f"{c}: {unavailable.get(('segment', c), 'not measured')}" for c in missing)
                deviations.append(_deviation("unavailable", f"unit(s) of the profiler's choice unavailable: {why}"))
        if len(entries) > 1 and primary_ok and not any(("segment", c) in costs for c in by_role["fallback"]):
            notes.append(f"the fallback {entries[1].label()} cannot run here, so there is nothing to fail over to")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        for e in entries:
            if e.threads > cores:
                notes.append(f"the {e.role} runs {e.threads} threads as configured; this machine gives edgekit "
                             f"{cores} core(s)")
    if strict and deviations:
        raise _strict_error(deviations[0])
    p = plan(spec, plan_costs)
    if entries:
        chosen = p.assignment["segment"]
        model_info = {"choice": chosen, **calls.entries[spec_stage(spec, "segment").format_of(chosen)].describe()}
        _follow_ladder(cfg, calls, entries, model_info["role"] == "runtime", notes, deviations)
        if strict and deviations:
            raise _strict_error(deviations[0])
    every = max(1, (src.expected or 60) // samples)
    pairs, done = [], 0
    size = first.shape
    resized: list[int] = []
    t0 = time.perf_counter()

    def frames():
        yield first
        for f in src.frames:
            if f.shape != size:  # a video holds one frame size: resize, and say so
                resized.append(src.read - 1)
                f = cv2.resize(f if f.ndim == 3 else cv2.cvtColor(f, cv2.COLOR_GRAY2BGR), (size[1], size[0]),
                               interpolation=cv2.INTER_AREA)
            yield f

    originals: dict[int, np.ndarray] = {}

    def keep(frame_iter):
        for i, f in enumerate(frame_iter):
            if i % every == 0 and len(originals) < samples:
                originals[i] = f
            yield f

    runner = None
    if sequential:
        results = run_sequential(spec, p, units, keep(frames()), output="output", calls=calls)
    else:
        runner = PipelineRunner(spec, p, units, max_in_flight=4, calls=calls)
        results = runner.run(keep(frames()), output="output")
    seen_moves = 0
    for i, out in results:
        if runner is not None and len(runner.stats.moves) > seen_moves:
            seen_moves = len(runner.stats.moves)
            if strict:
                m = runner.stats.moves[0]
                raise _strict_error(_deviation("fail-over", f"frame {m.frame}: stage {m.stage} failed on "
                                                            f"{m.from_choice} and moved to {m.to_choice}: {m.reason}"))
        if strict and calls.ladder is not None and calls.ladder.switches:
            raise _strict_error(_deviation("ladder", calls.ladder.switches[0].message()))
        writer.write(out)
        done += 1
        if i in originals:
            pairs.append((originals.pop(i), out))
        if progress:
            progress(done, src.expected)
    moves = [{"frame": m.frame, "stage": m.stage, "from": m.from_choice, "to": m.to_choice, "reason": m.reason}
             for m in (runner.stats.moves if runner is not None else [])]
    if moves and strict:
        m = moves[0]
        raise _strict_error(_deviation("fail-over", f"frame {m['frame']}: stage {m['stage']} failed on {m['from']} "
                                                    f"and moved to {m['to']}: {m['reason']}"))
    deviations += [_deviation("fail-over", f"frame {m['frame']}: stage {m['stage']} failed on {m['from']} and "
                                           f"moved to {m['to']}: {m['reason']}") for m in moves]
    if calls.ladder is not None:
        model_info["ladder"] = calls.ladder.to_dict()
        steps = [_deviation("ladder", sw.message()) for sw in calls.ladder.switches]
        if steps and strict:
            raise _strict_error(steps[0])
        deviations += steps
        if calls.ladder.exhausted_at is not None:
            missed = _deviation("ladder", f"frame {calls.ladder.exhausted_at}: the last rung of the ladder "
                                          f"({calls.ladder.current.label()}) missed its budget too; there is nothing "
                                          "faster to step to")
            if strict:
                raise _strict_error(missed)
            deviations.append(missed)
    wall = time.perf_counter() - t0
    if src.stopped:
        notes.insert(0, src.stopped)
    if resized:
        notes.append(f"{len(resized)} frame(s) had another size than the first ({size[1]}x{size[0]}), from frame "
                     f"{resized[0]} on; they were resized to it")
    writer.write_sheet(pairs)
    reuse_info = _reuse_report(calls, reuse_off)
    report = ProcessReport(src.read, writer.count, src.stopped, wall, done / wall if wall else 0.0, str(writer.output),
                           str(writer.sheet) if pairs else "", p.to_dict(),
                           {f"{k[0]}@{k[1]}": v for k, v in costs.items()}, notes, model_info,
                           {f"{k[0]}@{k[1]}": v for k, v in unavailable.items()}, moves, deviations, reuse_info)
    writer.close(info={"config": str(cfg.get("device", "")), "model": model_info, "deviations": deviations,
                       "notes": notes, "reuse": {k: v for k, v in reuse_info.items() if k != "k_series"}})
    return report


def _follow_ladder(cfg: dict, calls: ConfiguredCalls, entries: list[ModelEntry], primary_runs: bool,
                   notes: list[str], deviations: list[dict]) -> None:
    """Attach the config's fallback ladder to the segmentation calls (it starts from the config's runtime, so
    it is followed only when that runs). Every rung is opened before the first frame: one that cannot run here
    is dropped, as a deviation, instead of failing in the middle of the video."""
    from edgekit.apps.video.ladder import follower_for

    follower = follower_for(cfg, entries[0], lambda role, key, rung: config_entry(cfg, role, key, rung))
    if follower is None:
        return
    if not primary_runs:
        notes.append("the app config's ladder starts from its runtime, which does not run here; it is not followed")
        return
    for i in range(len(follower.rungs) - 1, 0, -1):
        try:
            follower.session(follower.rungs[i])
        except EdgekitError as e:
            deviations.append(_deviation("unavailable", f"ladder rung {i} ({follower.rungs[i].label()}) cannot run "
                                                        f"here and is left out: {e}"))
            del follower.rungs[i], follower.budgets[i]
    if len(follower.rungs) > 1:
        calls.ladder = follower


def spec_stage(spec: PipelineSpec, name: str) -> Stage:
    return next(s for s in spec.stages if s.name == name)


def _reuse_report(calls: ConfiguredCalls, off: str) -> dict:
    from edgekit.apps.video.reuse import off_summary

    if calls.reuse is None:
        return off_summary(off or "not requested")
    info = calls.reuse.summary()
    if calls.reuse_bypassed:
        b = calls.reuse_bypassed
        info["capped"].append(f"{len(b)} frame(s) from frame {b[0]} ran a fallback at another resolution than the "
                              "runtime's, without reuse (it restarted after each)")
        info["bypassed_frames"] = len(b)
    return info
