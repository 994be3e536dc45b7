"""Frame kernels (NumPy + OpenCV) for virtual background: model input, mask refinement to full frame
(fast guided filter), temporal smoothing, and mask-weighted background blur / replacement."""

from __future__ import annotations

import cv2
import numpy as np


def model_input(frame_bgr: np.ndarray, hw: tuple[int, int], mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> np.ndarray:
    """A uint8 BGR frame -> the model's 1x3xHxW normalized RGB input (pipeline kernel over
    :func:`edgekit.core.preprocess.frame_to_input`)."""
    from edgekit.core.preprocess import frame_to_input

    return frame_to_input(frame_bgr, hw, "RGB", (0.0, 1.0), mean, std)


def refine_mask(mask: np.ndarray, frame_bgr: np.ndarray, radius: int = 4, eps: float = 1e-3,
                work_scale: int = 1, before: bool = False) -> np.ndarray:
    """Upsample a low-resolution probability mask to the frame with a fast guided filter (He & Sun):
    the linear coefficients are fitted at ``mask resolution x work_scale`` against the frame's luma, then
    upsampled, so the edges follow the frame's own edges (hair, shoulders) instead of blocky pixels."""
    H, W = frame_bgr.shape[:2]
    mh, mw = mask.shape[-2:]
    gh, gw = mh * work_scale, mw * work_scale
    full_guide = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
    guide = cv2.resize(full_guide, (gw, gh), interpolation=cv2.INTER_AREA).astype(np.float32) * (1 / 255.0)
    p = cv2.resize(mask.reshape(mh, mw).astype(np.float32), (gw, gh), interpolation=cv2.INTER_LINEAR)
    k = (2 * radius + 1, 2 * radius + 1)
    mean_i, mean_p = cv2.boxFilter(guide, -1, k), cv2.boxFilter(p, -1, k)
    cov_ip = cv2.boxFilter(guide * p, -1, k) - mean_i * mean_p
    var_i = cv2.boxFilter(guide * guide, -1, k) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    if before:  # the earlier full-resolution arithmetic (side-by-side benchmarks); the same output
        mean_a = cv2.resize(cv2.boxFilter(a, -1, k), (W, H), interpolation=cv2.INTER_LINEAR)
        mean_b = cv2.resize(cv2.boxFilter(b, -1, k), (W, H), interpolation=cv2.INTER_LINEAR)
        q = cv2.scaleAdd(cv2.multiply(mean_a, full_guide, dtype=cv2.CV_32F), 1 / 255.0, mean_b)
        return cv2.min(cv2.max(q, 0.0), 1.0)
    # the 1/255 folded into the small map; full-resolution work in OpenCV, in place (no GIL, no temporaries)
    mean_a = cv2.resize(cv2.boxFilter(a, -1, k) * (1 / 255.0), (W, H), interpolation=cv2.INTER_LINEAR)
    mean_b = cv2.resize(cv2.boxFilter(b, -1, k), (W, H), interpolation=cv2.INTER_LINEAR)
    q = cv2.multiply(mean_a, full_guide, dtype=cv2.CV_32F)
    cv2.add(q, mean_b, dst=q)
    cv2.max(q, 0.0, dst=q)
    cv2.min(q, 1.0, dst=q)
    return q


class TemporalSmoother:
    """Blend each mask with the previous one where the new one is uncertain (close to 0.5):
    ``alpha = w * new + (1 - w) * previous`` with ``w = min_weight + (1 - min_weight) * |2 new - 1|``."""

    def __init__(self, min_weight: float = 0.35):
        self.min_weight = min_weight
        self.previous: np.ndarray | None = None

    def __call__(self, mask: np.ndarray) -> np.ndarray:
        if self.previous is None or self.previous.shape != mask.shape:
            self.previous = mask
            return mask
        # w = min + (1 - min) |2 mask - 1|, alpha = previous + w (mask - previous), in OpenCV (no GIL held)
        w = cv2.absdiff(mask, 0.5)
        w = cv2.addWeighted(w, 2 * (1 - self.min_weight), w, 0, self.min_weight)
        self.previous = cv2.add(self.previous, cv2.multiply(w, cv2.subtract(mask, self.previous)))
        return self.previous


def blur_background(frame_bgr: np.ndarray, alpha: np.ndarray, strength: float = 1.0, scale: int = 4) -> np.ndarray:
    """Blur the background only: :func:`blurred_background` composited under the person."""
    return composite(frame_bgr, blurred_background(frame_bgr, alpha, strength, scale), alpha)


def blurred_background(frame_bgr: np.ndarray, alpha: np.ndarray, strength: float = 1.0,
                       scale: int = 4) -> np.ndarray:
    """The blurred background at frame size (uint8): a normalized convolution of the background pixels
    (person pixels get no weight, so no halo of the person bleeds into the blur), computed at
    1/``scale`` size. A pipeline stage of its own, so it can run beside the compositing of another frame."""
    H, W = frame_bgr.shape[:2]
    small = cv2.resize(frame_bgr, (W // scale, H // scale), interpolation=cv2.INTER_AREA).astype(np.float32)
    a_small = cv2.resize(alpha, (W // scale, H // scale), interpolation=cv2.INTER_AREA)
    bg_w = 1.0 - a_small
    k = max(3, int(round(strength * min(H, W) / scale / 12)) | 1)
    num = cv2.GaussianBlur(small * bg_w[..., None], (k, k), 0)
    den = cv2.GaussianBlur(bg_w, (k, k), 0)
    blurred = (num / np.maximum(den, 1e-3)[..., None]).astype(np.uint8)
    return cv2.resize(blurred, (W, H), interpolation=cv2.INTER_LINEAR)


def replace_background(frame_bgr: np.ndarray, alpha: np.ndarray, background_bgr: np.ndarray,
                       light_wrap: float = 0.3) -> np.ndarray:
    """Put the person over another background, with light wrapping: the new background's colour spills
    onto the person's edge, as real light would (blurred background blended in where alpha ~ 0.5)."""
    H, W = frame_bgr.shape[:2]
    bg = background_bgr if background_bgr.shape[:2] == (H, W) else cv2.resize(background_bgr, (W, H),
                                                                              interpolation=cv2.INTER_AREA)
    small = cv2.resize(bg, (W // 8, H // 8), interpolation=cv2.INTER_AREA)
    wrap = cv2.resize(cv2.GaussianBlur(small, (0, 0), sigmaX=2.0), (W, H), interpolation=cv2.INTER_LINEAR)
    edge = np.clip(alpha * (1 - alpha) * (4.0 * light_wrap), 0, 1).astype(np.float32)
    fg = cv2.blendLinear(frame_bgr, wrap, 1.0 - edge, edge)
    return composite(fg, bg, alpha)


def composite(fg: np.ndarray, bg: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``alpha * fg + (1 - alpha) * bg`` as uint8 (OpenCV's blendLinear: one pass, no float copies)."""
    a = alpha.astype(np.float32, copy=False)
    fg8 = fg if fg.dtype == np.uint8 else np.clip(fg + 0.5, 0, 255).astype(np.uint8)
    bg8 = bg if bg.dtype == np.uint8 else np.clip(bg + 0.5, 0, 255).astype(np.uint8)
    return cv2.blendLinear(fg8, bg8, a, cv2.subtract(1.0, a))  # OpenCV's subtract: no GIL held, unlike NumPy


# -- the blur path of `edgekit process`: per-pixel work at low resolution, each full frame read once per stage


def quarter(frame_bgr: np.ndarray) -> np.ndarray:
    """The frame at 1/4 size (area average): what the model input and the background blur are made from, so the
    full frame is read once for both."""
    H, W = frame_bgr.shape[:2]
    return cv2.resize(frame_bgr, (max(1, W // 4), max(1, H // 4)), interpolation=cv2.INTER_AREA)


class MaskSmoother(TemporalSmoother):
    """:class:`TemporalSmoother` on the model's mask (1x1xhxw or hxw), before refinement: the same blend of
    uncertain pixels with the previous mask, at the model's resolution instead of the frame's."""

    def __call__(self, mask: np.ndarray) -> np.ndarray:
        m = np.asarray(mask, np.float32)
        return super().__call__(m.reshape(m.shape[-2:]))


def blurred_background_small(small_bgr: np.ndarray, mask: np.ndarray, frame_hw: tuple[int, int] | np.ndarray,
                             strength: float = 1.0) -> np.ndarray:
    """:func:`blurred_background` from the 1/4-size frame (:func:`quarter`) and the model-resolution mask: the
    normalized blur at 1/4 size, one upsampling to the frame's size (``frame_hw``, or a frame to take it from)."""
    H, W = frame_hw.shape[:2] if isinstance(frame_hw, np.ndarray) else frame_hw
    h, w = small_bgr.shape[:2]
    a_small = cv2.resize(np.asarray(mask, np.float32).reshape(np.shape(mask)[-2:]), (w, h),
                         interpolation=cv2.INTER_LINEAR)
    bg_w = cv2.max(cv2.min(cv2.subtract(1.0, a_small), 1.0), 0.0)
    k = max(3, int(round(strength * min(H, W) / 4 / 12)) | 1)
    num = cv2.GaussianBlur(small_bgr.astype(np.float32) * bg_w[..., None], (k, k), 0)
    den = cv2.GaussianBlur(bg_w, (k, k), 0)
    blurred = (num / np.maximum(den, 1e-3)[..., None]).astype(np.uint8)
    return cv2.resize(blurred, (W, H), interpolation=cv2.INTER_LINEAR)
