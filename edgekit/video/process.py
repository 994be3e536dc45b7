"""``edgekit process``: run the effects an app config describes on a video, a folder or a camera,
on the heterogeneous runtime (stages placed on this machine's units), and write the result plus a
before/after sheet."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError, InputError
from edgekit.pipeline.costs import measure_costs
from edgekit.pipeline.executor import PipelineRunner, StageCalls, run_sequential
from edgekit.pipeline.placement import plan
from edgekit.pipeline.spec import PipelineSpec, Stage, reset_stages
from edgekit.pipeline.units import local_units
from edgekit.profiling.appconfig import load_config
from edgekit.video import kernels
from edgekit.video.io import FrameWriter, before_after_sheet, open_input

EFFECTS = ("blur", "replace", "beauty", "denoise", "lowlight")


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

    def to_dict(self) -> dict:
        return self.__dict__


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


def segmentation_units(config: dict) -> tuple[dict[str, str], list[str]]:
    """Model artifacts per format and the unit chain of the config's runtime, then its fallback."""
    models, chain = {}, []
    base = Path(config["model"]["artifact_dir"]).parent
    for entry in (config["runtime"], config.get("fallback")):
        if not entry:
            continue
        fmt = entry["runtime"]
        models.setdefault(fmt, str(base / Path(entry["artifact"]).name))
        units = ["gpu"] if entry["delegate"].startswith("gpu") else ["cpu1", "cpu0"]
        chain += [f"{u}:{fmt}" for u in units if f"{u}:{fmt}" not in chain]
    return models, chain


def build_pipeline(config: dict, effects: list[str], strengths: dict[str, float],
                   background: str | Path | None = None, threads: int = 1) -> PipelineSpec:
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
        from edgekit.video.effects.denoise import TemporalDenoiser

        add("denoise", TemporalDenoiser(strengths.get("denoise", 1.0)), [image], ["denoised"])
        image = "denoised"
    if "lowlight" in effects:
        from edgekit.video.effects.lowlight import open_lowlight

        lowlight = open_lowlight(strengths.get("lowlight", 1.0), threads)
        add("lowlight", lowlight.estimate, [image], ["curves"], ["cpu1", "cpu0"])
        add("brighten", lowlight.apply, [image, "curves"], ["bright"])
        image = "bright"
    if "beauty" in effects:
        from edgekit.video.effects.beauty import BeautySettings, FaceTracker, apply_beauty

        add("face", FaceTracker(threads), [image], ["landmarks"], ["cpu1", "cpu0"])
        b = strengths.get("beauty", 1.0)
        settings = BeautySettings(smooth=0.6 * b, slim=0.3 * b, eyes=0.3 * b, lipstick=0.4 * b)
        add("beauty", functools.partial(apply_beauty, s=settings), [image, "landmarks"], ["beautified"])
        image = "beautified"
    if "blur" in effects or "replace" in effects:
        inp = config["input"]
        pre = config["preprocessing"]
        hw = (inp["height"], inp["width"])
        add("prepare", functools.partial(kernels.model_input, hw=hw, mean=pre["mean"], std=pre["std"]),
            ["frame"], ["seg_in"])
        models, chain = segmentation_units(config)
        stages.append(Stage("segment", ["seg_in"], ["mask"], chain, model=models))
        add("refine", kernels.refine_mask, ["mask", "frame"], ["alpha_raw"])
        add("smooth", kernels.TemporalSmoother(), ["alpha_raw"], ["alpha"])
        if "replace" in effects:
            add("composite", BackgroundReplacer(background), [image, "alpha"], ["output"])
        else:
            add("background", functools.partial(kernels.blurred_background, strength=strengths.get("blur", 1.0)),
                [image, "alpha"], ["blurred"])
            add("composite", kernels.composite, [image, "blurred", "alpha"], ["output"])
    else:
        add("output", lambda x: x, [image], ["output"])
    spec = PipelineSpec("process:" + "+".join(effects), stages)
    spec.check()
    return spec


def process(input: str | Path, output: str | Path, config: str | Path, effects: list[str],
            strengths: dict[str, float] | None = None, background: str | Path | None = None,
            max_frames: int | None = None, sequential: bool = False, samples: int = 4,
            progress: Callable[[int, int | None], None] | None = None) -> ProcessReport:
    cfg = load_config(config)  # refuses a config whose model files do not match their sha256
    src = open_input(input, max_frames)
    first = next(src.frames, None)
    if first is None:
        raise InputError(f"no frame could be read from {input}" + (f" ({src.stopped})" if src.stopped else ""))
    spec = build_pipeline(cfg, effects, strengths or {}, background)
    units = {u: v for u, v in local_units().items() if any(c.split(":")[0] == u for s in spec.stages
                                                            for c in s.units)}
    calls = StageCalls(units)
    costs, _ = measure_costs(spec, units, first, repeats=3, calls=calls)
    reset_stages(spec)  # measuring ran the stateful kernels: start the video from a clean state
    p = plan(spec, costs)
    writer = FrameWriter(output, src.fps)
    every = max(1, (src.expected or 60) // samples)
    pairs, done = [], 0
    t0 = time.perf_counter()

    def frames():
        yield first
        yield from src.frames

    originals: dict[int, np.ndarray] = {}

    def keep(frame_iter):
        for i, f in enumerate(frame_iter):
            if i % every == 0 and len(originals) < samples:
                originals[i] = f
            yield f

    try:
        if sequential:
            results = run_sequential(spec, p, units, keep(frames()), output="output", calls=calls)
        else:
            results = PipelineRunner(spec, p, units, max_in_flight=4, calls=calls).run(keep(frames()),
                                                                                      output="output")
        for i, out in results:
            writer.write(out)
            done += 1
            if i in originals:
                pairs.append((originals.pop(i), out))
            if progress:
                progress(done, src.expected)
    except (EdgekitError, KeyboardInterrupt):
        writer.close(keep=False)
        raise
    writer.close()
    wall = time.perf_counter() - t0
    out_path = Path(output)
    sheet = out_path.with_name(out_path.stem + "_before_after.png")
    if pairs:
        before_after_sheet(pairs, sheet)
    notes = [src.stopped] if src.stopped else []
    return ProcessReport(src.read, done, src.stopped, wall, done / wall if wall else 0.0, str(out_path), str(sheet),
                         p.to_dict(), {f"{k[0]}@{k[1]}": v for k, v in costs.items()}, notes)
