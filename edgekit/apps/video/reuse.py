"""Segmentation reuse between frames: run the model every k-th frame and carry its mask in between by motion
compensation, with k adapted at run time so the carried masks stay within an IoU budget against every-frame
inference.

Everything happens at the model's resolution (the mask's, not the frame's): the frame is area-resized to the
model's input size once (the ``prepare`` stage does that anyway) and its luma is what the motion is estimated on.

Carrying (``method``):

* ``flow`` (the default): OpenCV's DIS optical flow (ultrafast preset) from the frame to the previous one, the
  previous mask remapped through it. Follows non-rigid motion (a lean, an arm, a turning head).
* ``affine``: corners inside the mask's band tracked by pyramidal Lucas-Kanade, a partial affine (rotation,
  scale, shift) fitted by RANSAC, the mask warped by it. Rigid motion only.

Measured (``benchmarks/bench_reuse.py``, a person swaying and leaning, 150 frames at 720p, the shipped config's
model): both cost about 1 ms per carried frame at 256x144; at fixed k = 4 the carried masks keep IoU 0.987 (min
0.966) against every-frame inference with ``flow`` and 0.982 (min 0.946) with ``affine``, and the adaptive
policy runs the model on 33% of the frames with ``flow`` and 43% with ``affine`` for the same budget. On a
purely rigid clip (:func:`~edgekit.core.samples.clips.moving_clip`) ``affine`` is the closer one.

Adapting k (:class:`MaskReuse`): every time the model runs after carried frames, the carried mask of that frame
is compared with the fresh inference: ``1 - IoU`` is the carry's error after ``n`` carried frames and the motion
they held (``acc``, the mean motion in the mask's band in pixels, summed). The error per pixel of motion is
learnt from those checks (the largest of the recent ones: a cautious estimate), and between checks the model
runs again as soon as the error predicted for the motion seen so far would pass ``safety x (1 - min_iou)``,
after ``max_k - 1`` carried frames at most, or at once when the motion estimate stops explaining the frame (the
photometric residual after compensation jumps: a cut, a sudden jump, an occlusion). So k falls when motion rises
and rises when the scene is calm, one step per check.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from edgekit.errors import InputError

METHODS = ("flow", "affine")
#: hard cap of max_k in the schema (beyond it the carried mask is more guess than measurement)
MAX_K = 16


@dataclass(frozen=True)
class ReuseBudget:
    """What the config (or ``--reuse``) asks: run the model at least every ``max_k`` frames, keep each carried
    mask's IoU against every-frame inference at ``min_iou`` or better, carry by ``method``."""

    max_k: int = 4
    min_iou: float = 0.95
    method: str = "flow"
    #: predicted error allowed, as a share of the budget (1 - min_iou): headroom for the estimate's own error
    safety: float = 0.6

    def to_dict(self) -> dict:
        return {"max_k": self.max_k, "min_iou": self.min_iou, "method": self.method, "safety": self.safety}


def budget_from(value: object, what: str = "reuse") -> ReuseBudget:
    """A :class:`ReuseBudget` from a config's ``reuse`` object, checked against the app config schema's
    ``$defs/reuse`` (the same check the config gets).

    Raises:
        InputError: one line naming the field and what is wrong with it.
    """
    import jsonschema

    from edgekit.core.datafiles import schema

    sub = schema("app-config")["$defs"]["reuse"]
    try:
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(sub).iter_errors(value))
    except RecursionError as e:
        raise InputError(f"{what} is nested too deeply") from e
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)
        raise InputError(f"{what} is invalid{' at ' + where if where else ''}: {' '.join(error.message.split())[:200]}")
    for key in ("min_iou", "safety"):  # JSON's NaN passes every bound of a schema
        if key in value and not math.isfinite(value[key]):
            raise InputError(f"{what} is invalid at {key}: {value[key]} is not a finite number")
    return ReuseBudget(**{k: value[k] for k in ("max_k", "min_iou", "method", "safety") if k in value})


def parse_reuse_option(text: str) -> dict:
    """``max_k=4,min_iou=0.95,method=flow`` (the ``--reuse`` option) -> a dict for :func:`budget_from`.

    Raises:
        InputError: an item that is not KEY=VALUE, or a number that does not parse.
    """
    out: dict = {}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--reuse {text!r}: expected KEY=VALUE items (max_k=4,min_iou=0.95,method=flow)")
        key, value = key.strip(), value.strip()
        if key == "method":
            out[key] = value
            continue
        try:
            out[key] = int(value) if key == "max_k" else float(value)
        except ValueError as e:
            raise InputError(f"--reuse {key}={value}: expected a number") from e
    return out


def luma_at(frame_bgr: np.ndarray, hw: tuple[int, int] | list[int]) -> np.ndarray:
    """The frame's luma at ``hw`` (the model's resolution, area resize): what a pipeline stage with ``reuse``
    takes as its second input (the ``reuse_luma`` kernel)."""
    import cv2

    return luma(cv2.resize(frame_bgr, (int(hw[1]), int(hw[0])), interpolation=cv2.INTER_AREA))


def luma(small_bgr: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(small_bgr, cv2.COLOR_BGR2GRAY)


def _band(mask: np.ndarray, width: int = 5) -> np.ndarray:
    """Where a mask's edge is (a dilated band around the 0.5 contour): where carrying can go wrong."""
    import cv2

    m = (mask > 0.5).astype(np.uint8)
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    return cv2.dilate(m, kernel) > cv2.erode(m, kernel)


class FlowCarry:
    """DIS optical flow (ultrafast) at the model's resolution."""

    name = "flow"

    def __init__(self):
        import cv2

        self.dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self.grid: np.ndarray | None = None

    def __call__(self, prev_gray: np.ndarray, gray: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float, float]:
        """(the mask carried to ``gray``, motion in the mask's band in px, photometric residual in that band)."""
        import cv2

        h, w = gray.shape
        if self.grid is None or self.grid.shape[:2] != (h, w):
            self.grid = np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)), -1)
        flow = self.dis.calc(gray, prev_gray, None)  # frame t's pixels -> where they were at t-1
        m = self.grid + flow
        carried = cv2.remap(mask, m[..., 0], m[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        warped = cv2.remap(prev_gray, m[..., 0], m[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return carried, *_motion_residual(flow, warped, gray, mask)


class AffineCarry:
    """Corners in the mask's band tracked by pyramidal Lucas-Kanade, a partial affine fitted by RANSAC. The
    corners found at one frame are tracked on (found again only when too few survive), and the residual is
    measured on every other pixel of the band: about half the cost of finding and checking everything anew."""

    name = "affine"

    def __init__(self):
        self.pts: np.ndarray | None = None

    def __call__(self, prev_gray: np.ndarray, gray: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float, float]:
        import cv2

        h, w = gray.shape
        pts = self.pts
        if pts is None or len(pts) < 20:
            region = cv2.dilate((mask > 0.5).astype(np.uint8), np.ones((9, 9), np.uint8))
            pts = cv2.goodFeaturesToTrack(prev_gray, 60, 0.01, 4, mask=region)
        M, self.pts = None, None
        if pts is not None and len(pts) >= 6:
            nxt, status, _ = cv2.calcOpticalFlowPyrLK(prev_gray, gray, pts, None, winSize=(15, 15), maxLevel=3)
            ok = status.ravel() == 1
            if ok.sum() >= 6:
                M, inliers = cv2.estimateAffinePartial2D(pts[ok], nxt[ok], method=cv2.RANSAC, ransacReprojThreshold=2.0)
                if M is not None:
                    keep = nxt[ok][inliers.ravel() == 1]
                    inside = (keep[:, 0, 0] >= 0) & (keep[:, 0, 0] < w) & (keep[:, 0, 1] >= 0) & (keep[:, 0, 1] < h)
                    self.pts = keep[inside]
        if M is None:  # nothing to track: carry as it is and let the residual tell
            M = np.float32([[1, 0, 0], [0, 1, 0]])
        carried = cv2.warpAffine(mask, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        # motion: the mean displacement of the frame's corners and centre under M
        xs = np.float32([0, w, 0, w, w / 2])
        ys = np.float32([0, 0, h, h, h / 2])
        dx = M[0, 0] * xs + M[0, 1] * ys + M[0, 2] - xs
        dy = M[1, 0] * xs + M[1, 1] * ys + M[1, 2] - ys
        motion = float(np.mean(np.hypot(dx, dy)))
        band = _band(carried[::2, ::2], 3)
        if not band.any():
            return carried, motion, 0.0
        M2 = np.float32(M).copy()
        M2[:, 2] *= 0.5  # the same motion on the half-size grid
        warped = cv2.warpAffine(prev_gray[::2, ::2], M2, (band.shape[1], band.shape[0]), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
        return carried, motion, float(np.mean(cv2.absdiff(warped, gray[::2, ::2])[band]))

    def reset(self) -> None:
        self.pts = None


def _motion_residual(flow, warped, gray, mask) -> tuple[float, float]:
    import cv2

    band = _band(mask)
    if not band.any():
        return float(np.mean(np.hypot(flow[..., 0], flow[..., 1]))), 0.0
    f = flow[band]
    return float(np.mean(np.hypot(f[:, 0], f[:, 1]))), float(np.mean(cv2.absdiff(warped, gray)[band]))


def make_carry(method: str):
    """The carrying method named ``method``.

    Raises:
        InputError: an unknown method.
    """
    if method == "flow":
        return FlowCarry()
    if method == "affine":
        return AffineCarry()
    raise InputError(f"reuse method {method!r}: choose from {', '.join(METHODS)}")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    from edgekit.core.parity import mask_iou

    return mask_iou(a > 0.5, b > 0.5)


@dataclass
class FrameRecord:
    frame: int
    inferred: bool
    #: frames since the last inference when this one ran the model (the k that was in force); 0 for a carry
    k: int
    why: str                     # "first", "k", "motion", "max_k", "reset", "backoff" for an inference; "" carried
    iou: float | None            # carried vs inferred, where both exist
    motion: float
    residual: float
    #: CPU time of the calling thread (a busy machine's waiting is not counted; a runtime's own worker threads,
    #: with threads > 1, are not either)
    infer_ms: float
    carry_ms: float


@dataclass
class MaskReuse:
    """Runs the model (``infer``) or carries the previous mask, frame by frame, within ``budget``.

    Call it with the frame index, the luma at the model's resolution and a function that runs the model;
    it returns the mask (model resolution, float32 HxW) for that frame. Frames must come in order (a
    pipeline stage on one unit sees them so); a frame seen again (a fail-over's retry) is run again.
    """

    budget: ReuseBudget
    records: list[FrameRecord] = field(default_factory=list)
    #: a fixed k (= ``budget.max_k``), no adaptation, no checks: the baseline the adaptive policy is measured against
    fixed: bool = False

    def __post_init__(self):
        self.carry = make_carry(self.budget.method)
        self.reset()

    def reset(self) -> None:
        """Forget the previous frame (the next one runs the model) and the error estimate."""
        if hasattr(self.carry, "reset"):
            self.carry.reset()
        self.prev_gray: np.ndarray | None = None
        self.mask: np.ndarray | None = None
        self.since = 0          # carried frames since the last inference
        self.acc = 0.0          # motion (px) summed over them
        self.err_per_px: deque[float] = deque(maxlen=4)   # learnt carry error per pixel of motion
        self.residuals: deque[float] = deque(maxlen=15)   # residuals of frames the carry explained
        self.last_frame = -1
        self.records = []
        self.backoff, self.backoff_until = 0, -1   # while the 1-step carry fails: infer without measuring

    # -- the decision
    def _err_rate(self) -> float | None:
        return max(self.err_per_px) if self.err_per_px else None

    def _residual_spike(self, residual: float) -> bool:
        if len(self.residuals) < 3:
            return False
        return residual > max(3.0, 2.0 * float(np.median(self.residuals)))

    def __call__(self, frame: int, gray: np.ndarray, infer) -> np.ndarray:
        if frame <= self.last_frame and self.records and self.records[-1].frame == frame:
            self.records.pop()  # a retry of the same frame (fail-over): decide again
        t0 = time.thread_time()
        carried, motion, residual = None, 0.0, 0.0
        why = ""
        if self.mask is None or self.prev_gray is None:
            why = "first" if not self.records else "reset"
        elif self.prev_gray.shape != gray.shape:
            why = "reset"
        elif frame < self.backoff_until:
            why = "backoff"  # carrying one frame failed the budget just now: do not pay for measuring it again yet
        else:
            carried, motion, residual = self.carry(self.prev_gray, gray, self.mask)
            acc = self.acc + motion
            rate = self._err_rate()
            budget = self.budget.safety * (1.0 - self.budget.min_iou)
            if self.since + 1 >= self.budget.max_k:
                why = "max_k"
            elif self.fixed:
                why = ""
            elif rate is None:
                why = "k"  # no measurement of the carry's error yet: measure it on the next frame
            elif self._residual_spike(residual) or rate * motion > budget:
                why = "motion"  # not explained by the motion estimate, or more motion in one frame than the budget
            elif rate * acc > budget:
                why = "k"
        t1 = time.thread_time()
        if why:
            mask = np.asarray(infer(), np.float32)
            t2 = time.thread_time()
            check = None
            if carried is not None and carried.shape == mask.shape:
                check = iou(carried, mask)
                # the error after self.since + 1 carried steps and acc px of motion
                self.err_per_px.append((1.0 - check) / max(self.acc + motion, 0.25))
                if self.since == 0 and check < self.budget.min_iou:  # even one carried frame fails: back off
                    self.backoff = min(2 * self.backoff or 2, 16)
                    self.backoff_until = frame + self.backoff
                elif check >= self.budget.min_iou:
                    self.backoff = 0
            rec = FrameRecord(frame, True, self.since + 1 if carried is not None else 1, why, check, motion,
                              residual, (t2 - t1) * 1000, (t1 - t0) * 1000)
            self.since, self.acc = 0, 0.0
        else:
            mask = carried
            self.since += 1
            self.acc += motion
            self.residuals.append(residual)
            rec = FrameRecord(frame, False, 0, "", None, motion, residual, 0.0, (time.thread_time() - t0) * 1000)
        if rec.inferred and rec.iou is not None and rec.iou >= self.budget.min_iou:
            self.residuals.append(residual)  # the carry explained this frame well enough: a normal residual
        if rec.inferred and hasattr(self.carry, "reset"):
            self.carry.reset()  # tracked corners belong to the carried mask: find them again in the model's
        self.prev_gray, self.mask, self.last_frame = gray, mask, frame
        self.records.append(rec)
        return mask

    # -- the report
    def summary(self) -> dict:
        """k over time, frames inferred, the keyframe checks against the budget, and the CPU saved: carried
        frames x the model's mean CPU time, less the CPU time spent estimating motion and carrying (thread CPU
        time, so other work on a busy machine does not count)."""
        recs = self.records
        inferred = [r for r in recs if r.inferred]
        checks = [r.iou for r in inferred if r.iou is not None]
        infer_ms = float(np.mean([r.infer_ms for r in inferred])) if inferred else 0.0
        carry_ms = float(sum(r.carry_ms for r in recs))
        carried = len(recs) - len(inferred)
        saved = carried * infer_ms - carry_ms
        gaps = [r.k for r in inferred[1:]]
        timeline: list[list[int]] = []  # [frame, k] where the interval changed
        for r in inferred[1:]:
            if not timeline or timeline[-1][1] != r.k:
                timeline.append([r.frame, r.k])
        below = [r.frame for r in inferred if r.iou is not None and r.iou < self.budget.min_iou]
        why = {w: sum(r.why == w for r in inferred) for w in ("first", "reset", "k", "max_k", "motion", "backoff")}
        capped = []
        if gaps and max(gaps) < self.budget.max_k and not self.fixed:
            capped.append(f"k stayed at or below {max(gaps)} of max_k {self.budget.max_k}: the carry's measured "
                          f"error for the motion seen would pass the IoU budget {self.budget.min_iou}")
        if why["motion"]:
            capped.append(f"{why['motion']} inference(s) forced early: the motion estimate stopped explaining the "
                          "frame (a jump, a cut, an occlusion)")
        if why["backoff"]:
            capped.append(f"{why['backoff']} frame(s) ran the model without trying to carry: carrying even one frame "
                          "had just failed the IoU budget (tried again after 2, 4, ... 16 frames)")
        if below:
            capped.append(f"{len(below)} check(s) below the IoU budget (frames {', '.join(map(str, below[:8]))}"
                          f"{', ...' if len(below) > 8 else ''}); k was lowered after each")
        return {"enabled": True, **self.budget.to_dict(), "frames": len(recs), "inferred": len(inferred),
                "carried": carried, "k_mean": len(recs) / len(inferred) if inferred else 0.0,
                "k_max": max(gaps, default=1), "k_timeline": timeline, "k_series": "".join(
                    _k_char(r.k) if r.inferred else "." for r in recs),
                "checks": len(checks), "check_iou_min": min(checks, default=None),
                "check_iou_mean": float(np.mean(checks)) if checks else None, "checks_below_budget": below,
                "why": why, "infer_ms_mean": infer_ms, "carry_ms_mean": carry_ms / len(recs) if recs else 0.0,
                "cpu_saved_ms": saved, "cpu_saved_ms_per_frame": saved / len(recs) if recs else 0.0,
                "cpu_saved_share": saved / (len(recs) * infer_ms) if recs and infer_ms else 0.0, "capped": capped}


def _k_char(k: int) -> str:
    return str(k) if k < 10 else "+"


def off_summary(why: str) -> dict:
    """The report's ``reuse`` entry when reuse did not run, and why."""
    return {"enabled": False, "why": why}


def describe(summary: dict) -> list[str]:
    """Terminal lines for a run's reuse summary."""
    if not summary.get("enabled"):
        return [f"reuse: off, {summary.get('why', 'not requested')}"]
    s = summary
    lines = [f"reuse ({s['method']}, max_k {s['max_k']}, min IoU {s['min_iou']}): model ran on {s['inferred']} of "
             f"{s['frames']} frames (mean k {s['k_mean']:.2f}, max {s['k_max']}); CPU saved "
             f"{s['cpu_saved_ms_per_frame']:.2f} ms/frame ({100 * s['cpu_saved_share']:.0f}% of the model's "
             f"{s['infer_ms_mean']:.2f} ms, carrying costs {s['carry_ms_mean']:.2f} ms/frame)"]
    if s["checks"]:
        lines.append(f"reuse checks (carried vs inferred at {s['checks']} model frames): IoU min "
                     f"{s['check_iou_min']:.3f}, mean {s['check_iou_mean']:.3f}")
    series = s["k_series"]
    lines.append("k over time (digit = a model frame and its k, . = carried): " + (
        series if len(series) <= 120 else series[:117] + "..."))
    lines += [f"reuse capped: {c}" for c in s["capped"]]
    return lines
