"""Temporal parity: a video is a sequence, and an artifact whose per-frame IoU passes can still flicker more
than its source (int8 rounding near the 0.5 threshold moves from frame to frame).

The gate runs a generated clip (:func:`edgekit.core.samples.clips.moving_clip`) through the reference and the
artifact and compares, for each mask or image output:

* **dtSSD** (Robust Video Matting's temporal measure, x100): RMS of the difference between the artifact's
  frame-to-frame change and the reference's. A steady artifact changes when its reference changes.
* **Flow-warped flicker**: each output frame is compared with the previous one warped to it by OpenCV's DIS
  optical flow (computed on the input frames): mean ``|y_t - warp(y_{t-1})|`` is what motion does not
  explain. The artifact's excess over the reference's (``excess flicker``) is what conversion added.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

#: precision class -> (max dtSSD x100, max excess flow-warped flicker), enforced at conversion for every class.
#: Measured on the bundled student's artifacts (100 frames): fp16 dtSSD <= 0.006 and excess <= 0.0000 on every
#: runtime; int8 at 256x256 dtSSD 1.14-1.62 and excess 0.0004-0.0007 (onnx, openvino, ncnn, tflite), at 144x256
#: 1.58-2.22 and -0.0000-0.0018; the outlier test model's int8 with its sensitive layer float 1.77-2.03 / 0.0008
#: (README, "Temporal parity")
TEMPORAL_TOLERANCES = {"fp32": (0.05, 0.0002), "fp16": (0.2, 0.0005), "int8": (3.0, 0.003)}
#: frames of the generated clip (the issue's floor is 100)
CLIP_FRAMES = 100


def dtssd(outputs: list[np.ndarray], truths: list[np.ndarray]) -> float:
    """RMS of the difference between the outputs' and the truths' frame-to-frame changes, x100 (mean over
    frame pairs). Lower is steadier; flicker that the truth lacks raises it."""
    errs = [np.sqrt(np.mean(((outputs[t] - outputs[t - 1]) - (truths[t] - truths[t - 1])) ** 2))
            for t in range(1, len(outputs))]
    return float(np.mean(errs) * 100) if errs else 0.0


def flows(frames_rgb01: np.ndarray) -> list[np.ndarray]:
    """DIS optical flow from each frame to the previous one (``flows[t-1]`` maps frame t's pixels into t-1)."""
    import cv2

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    gray = [cv2.cvtColor((f * 255).round().astype(np.uint8), cv2.COLOR_RGB2GRAY) for f in frames_rgb01]
    return [dis.calc(gray[t], gray[t - 1], None) for t in range(1, len(gray))]


def warped_flicker(outputs: list[np.ndarray], flow: list[np.ndarray]) -> float:
    """Mean ``|y_t - warp(y_{t-1})|`` over the clip: the change between frames that motion does not explain."""
    import cv2

    h, w = outputs[0].shape[-2:]
    grid = np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)), axis=-1)
    errs = []
    for t in range(1, len(outputs)):
        prev = outputs[t - 1].reshape(-1, h, w)
        cur = outputs[t].reshape(-1, h, w)
        m = grid + flow[t - 1]
        warped = np.stack([cv2.remap(c.astype(np.float32), m[..., 0], m[..., 1], cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REPLICATE) for c in prev])
        errs.append(float(np.mean(np.abs(cur - warped))))
    return float(np.mean(errs)) if errs else 0.0


@dataclass
class TemporalOutput:
    name: str
    dtssd: float
    flicker_reference: float
    flicker_artifact: float
    failures: list[str] = field(default_factory=list)

    @property
    def excess_flicker(self) -> float:
        return self.flicker_artifact - self.flicker_reference


@dataclass
class TemporalReport:
    precision_class: str
    frames: int
    outputs: list[TemporalOutput]
    #: whether a failure fails the gate (conversion and ``edgekit validate --temporal`` enforce every precision
    #: class; False only for a report kept for information)
    enforced: bool = True

    @property
    def passed(self) -> bool:
        return not any(o.failures for o in self.outputs)

    def to_dict(self) -> dict:
        return {"precision_class": self.precision_class, "frames": self.frames, "passed": self.passed,
                "enforced": self.enforced,
                "tolerance": dict(zip(("max_dtssd", "max_excess_flicker"),
                                      TEMPORAL_TOLERANCES[self.precision_class])),
                "outputs": [{**asdict(o), "excess_flicker": o.excess_flicker} for o in self.outputs]}


def temporal_outputs(io) -> list:
    """Outputs a temporal check applies to: one-channel masks (probability/logits) and images, image-shaped."""
    def applies(spec) -> bool:
        if spec.kind == "image":
            return len(spec.shape) == 4
        channels_axis = 3 if spec.layout == "NHWC" else 1
        return spec.kind in ("probability", "logits") and len(spec.shape) == 4 and spec.shape[channels_axis] == 1

    return [s for s in io.outputs if applies(s)]


def applies(io) -> bool:
    """Whether the model has a video-like input (one 3-channel image) and an output a temporal check applies to."""
    images = [t for t in io.inputs if t.is_image and t.channels == 3]
    return len(io.inputs) == 1 and len(images) == 1 and bool(temporal_outputs(io))


def clip_samples(io, frames: int = CLIP_FRAMES, seed: int = 2024) -> tuple[list[dict], np.ndarray]:
    """The generated clip as model inputs (pre-processed as the IO spec states) and as RGB frames in [0, 1]."""
    from edgekit.core.calibration import normalize
    from edgekit.core.samples.clips import moving_clip

    spec = io.inputs[0]
    rgb, _ = moving_clip(frames, spec.hw, seed=seed)
    batch = normalize(rgb, spec)
    return [{spec.name: batch[i:i + 1]} for i in range(frames)], rgb


def _as_map(y: np.ndarray, spec) -> np.ndarray:
    """One sample's output as C x H x W, a mask's logits as probabilities (so that thresholds compare)."""
    y = np.asarray(y, np.float64)[0]
    if spec.layout == "NHWC":
        y = np.moveaxis(y, -1, 0)
    return 1 / (1 + np.exp(-y)) if spec.kind == "logits" else y


def compare_temporal(ref_outs: list[dict], cand_outs: list[dict], io, frames_rgb01: np.ndarray,
                     precision_class: str) -> TemporalReport:
    """dtSSD and excess flow-warped flicker of the artifact's outputs against the reference's on one clip."""
    max_dtssd, max_excess = TEMPORAL_TOLERANCES[precision_class]
    flow = flows(frames_rgb01)
    outputs = []
    for spec in temporal_outputs(io):
        r = [_as_map(o[spec.name], spec) for o in ref_outs]
        c = [_as_map(o[spec.name], spec) for o in cand_outs]
        if spec.kind == "image":  # images: in units of the reference's range, so the tolerance means the same
            span = max(float(np.ptp(np.stack(r))), 1e-6)
            r, c = [x / span for x in r], [x / span for x in c]
        o = TemporalOutput(spec.name, dtssd(c, r), warped_flicker(r, flow), warped_flicker(c, flow))
        if o.dtssd > max_dtssd:
            o.failures.append(f"temporal: dtSSD {o.dtssd:.2f} > {max_dtssd}")
        if o.excess_flicker > max_excess:
            o.failures.append(f"temporal: flicker beyond the reference's {o.excess_flicker:.4f} > {max_excess} "
                              f"(artifact {o.flicker_artifact:.4f}, reference {o.flicker_reference:.4f})")
        outputs.append(o)
    return TemporalReport(precision_class, len(ref_outs), outputs)


def check_temporal(reference, candidate, io, precision_class: str, frames: int = CLIP_FRAMES,
                   seed: int = 2024) -> TemporalReport | None:
    """Run the generated clip through both sessions and compare (None when the model is not video-like)."""
    if not applies(io):
        return None
    samples, rgb = clip_samples(io, frames, seed)
    ref_outs = [reference.run(s) for s in samples]
    cand_outs = [candidate.run(s) for s in samples]
    return compare_temporal(ref_outs, cand_outs, io, rgb, precision_class)
