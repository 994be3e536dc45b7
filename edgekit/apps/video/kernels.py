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


# -- the fused uint8 path (``build_pipeline``'s default): alpha as uint8 0-255, blends in uint8 with cv2.multiply


def composite_u8(fg: np.ndarray, bg: np.ndarray, alpha8: np.ndarray) -> np.ndarray:
    """``alpha * fg + (1 - alpha) * bg`` with a uint8 alpha (0-255, one channel): two ``cv2.multiply`` (each
    rounded, so within one grey level of :func:`composite`) and a ``cv2.add``, all uint8."""
    a3 = cv2.cvtColor(alpha8, cv2.COLOR_GRAY2BGR)
    inv3 = cv2.cvtColor(cv2.bitwise_not(alpha8), cv2.COLOR_GRAY2BGR)
    front = cv2.multiply(fg, a3, dst=a3, scale=1 / 255.0)
    back = cv2.multiply(bg, inv3, dst=inv3, scale=1 / 255.0)
    return cv2.add(front, back, dst=front)


def eighth(frame_bgr: np.ndarray) -> np.ndarray:
    """The frame at 1/8 size (area average)."""
    H, W = frame_bgr.shape[:2]
    return cv2.resize(frame_bgr, (max(1, W // 8), max(1, H // 8)), interpolation=cv2.INTER_AREA)


def blurred_background_eighth(small_bgr: np.ndarray, mask: np.ndarray, frame_hw: tuple[int, int] | np.ndarray,
                              strength: float = 1.0) -> np.ndarray:
    """:func:`blurred_background_small` with the normalized blur at 1/8 of the frame (the same blur radius in
    frame pixels, a quarter of the work), from ``small_bgr`` at 1/4 or 1/8 size; one upsampling to the frame."""
    H, W = frame_hw.shape[:2] if isinstance(frame_hw, np.ndarray) else frame_hw
    w8, h8 = max(1, W // 8), max(1, H // 8)
    small = small_bgr if small_bgr.shape[:2] == (h8, w8) else cv2.resize(small_bgr, (w8, h8),
                                                                         interpolation=cv2.INTER_AREA)
    a_small = cv2.resize(np.asarray(mask, np.float32).reshape(np.shape(mask)[-2:]), (w8, h8),
                         interpolation=cv2.INTER_AREA)
    bg_w = cv2.max(cv2.min(cv2.subtract(1.0, a_small), 1.0), 0.0)
    k = max(3, int(round(strength * min(H, W) / 8 / 12)) | 1)
    num = cv2.GaussianBlur(cv2.multiply(small, cv2.merge([bg_w, bg_w, bg_w]), dtype=cv2.CV_32F), (k, k), 0)
    den = cv2.GaussianBlur(bg_w, (k, k), 0)
    blurred = cv2.divide(num, cv2.merge([cv2.max(den, 1e-3)] * 3), dtype=cv2.CV_8U)
    return cv2.resize(blurred, (W, H), interpolation=cv2.INTER_LINEAR)


def _box_coefficients(mask: np.ndarray, guide_small: np.ndarray, radius: int, eps: float):
    """The guided filter's smoothed coefficients at the mask's resolution, for ``alpha * 255 = A * I + B`` with
    ``I`` the frame's 0-255 luma: (A, B) as float32 maps."""
    mh, mw = guide_small.shape[:2]
    guide = guide_small.astype(np.float32) * (1 / 255.0)
    p = np.asarray(mask, np.float32).reshape(mh, mw)
    k = (2 * radius + 1, 2 * radius + 1)
    mean_i, mean_p = cv2.boxFilter(guide, -1, k), cv2.boxFilter(p, -1, k)
    cov_ip = cv2.boxFilter(guide * p, -1, k) - mean_i * mean_p
    var_i = cv2.boxFilter(guide * guide, -1, k) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return cv2.boxFilter(a, -1, k), cv2.boxFilter(b, -1, k) * 255.0


#: above this share of uncertain mask cells, :func:`refine_band` upsamples the coefficients whole (one resize each)
#: instead of per rectangle
FULL_BAND = 0.5


def refine_band(mask: np.ndarray, frame_bgr: np.ndarray, quarter_bgr: np.ndarray | None = None, radius: int = 4,
                eps: float = 1e-3, strip: int = 8, gap: int = 4) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """:func:`refine_mask` (work_scale 1) as a uint8 alpha, computed per pixel only where the alpha can be
    fractional: (uint8 alpha, the band).

    The guided filter's full-resolution output ``A * I + B`` interpolates the coefficients bilinearly, so in a
    mask cell whose 3x3 neighbourhood bounds it at or above 254.5 (or below 0.5) for every luma 0-255 the
    alpha is exactly 255 (0) whatever the frame holds there: those cells are filled by one nearest-neighbour
    upsampling of a 0/255 map, and the per-pixel ``A * I + B`` runs only in the rectangles (``band``: y0, y1, x0,
    x1, in frame pixels; strips of ``strip`` mask rows, runs of uncertain cells closer than ``gap`` merged) that
    cover the uncertain cells. The result equals the full computation's wherever it is certain and is computed the
    same way elsewhere (the coefficients interpolated by ``cv2.warpAffine`` instead of ``cv2.resize``).

    The coefficients are fitted against a guide at the mask's resolution. Without ``quarter_bgr`` it is the frame's
    luma area-resized, as :func:`refine_mask` takes it, and the alpha is within one grey level of
    :func:`refine_mask` (x 255). With ``quarter_bgr`` (the 1/4 frame, what ``edgekit process`` passes: 1.1 ms per
    frame less at 720p, 2.3 ms at 1080p) it is the 1/4 frame's luma area-resized: the alpha is within one grey
    level of the same guided filter with that guide, but NOT of :func:`refine_mask`. At edges where the two guides
    differ the coefficients differ: on synthetic 720p video with a 256x144 mask up to 28 grey levels apart, 3.2%
    of pixels more than 2 apart, mean 0.23 (1080p: up to 8, 0.5%, 0.10), and no farther from the true matte
    (mean |alpha - truth| 0.0138 vs 0.0144 at 720p; bench_video's quality table scores it against ground truth;
    tests/test_video_fused.py asserts these bounds). A 1/4 frame smaller than the mask is not used (the frame's
    luma is)."""
    H, W = frame_bgr.shape[:2]
    mh, mw = mask.shape[-2:]
    frame_guide = quarter_bgr is None or quarter_bgr.shape[0] < mh or quarter_bgr.shape[1] < mw
    src = frame_bgr if frame_guide else quarter_bgr
    guide_small = cv2.resize(cv2.cvtColor(src, cv2.COLOR_BGR2GRAY), (mw, mh), interpolation=cv2.INTER_AREA)
    A, B = _box_coefficients(mask, guide_small, radius, eps)
    span = A * 255.0
    lo, hi = cv2.erode(B + cv2.min(span, 0.0), None), cv2.dilate(B + cv2.max(span, 0.0), None)  # 3x3 bounds
    one, zero = lo > 254.51, hi < 0.49
    alpha = cv2.resize(one.view(np.uint8) * np.uint8(255), (W, H), interpolation=cv2.INTER_NEAREST)
    unsure = ~(one | zero)
    sx, sy = W / mw, H / mh
    full = unsure.mean() > FULL_BAND
    if full:
        A_full = cv2.resize(A, (W, H), interpolation=cv2.INTER_LINEAR)
        B_full = cv2.resize(B, (W, H), interpolation=cv2.INTER_LINEAR)
    band = []
    for r0 in range(0, mh, strip):
        cols = np.flatnonzero(unsure[r0:r0 + strip].any(axis=0))
        if not cols.size:
            continue
        y0, y1 = max(0, int(r0 * sy) - 1), min(H, int(np.ceil(min(r0 + strip, mh) * sy)) + 1)
        cuts = np.flatnonzero(np.diff(cols) > gap)
        for c0, c1 in zip(cols[np.r_[0, cuts + 1]], cols[np.r_[cuts, cols.size - 1]]):
            x0, x1 = max(0, int(c0 * sx) - 1), min(W, int(np.ceil((c1 + 1) * sx)) + 1)
            band.append((y0, y1, x0, x1))
            if full:
                a_roi, b_roi = A_full[y0:y1, x0:x1], B_full[y0:y1, x0:x1]
            else:  # frame pixel (x, y) samples the coefficients at ((x + 0.5) / sx - 0.5, ...), as cv2.resize does
                m = np.float32([[1 / sx, 0, (x0 + 0.5) / sx - 0.5], [0, 1 / sy, (y0 + 0.5) / sy - 0.5]])
                size = (x1 - x0, y1 - y0)
                a_roi = cv2.warpAffine(A, m, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                       borderMode=cv2.BORDER_REPLICATE)
                b_roi = cv2.warpAffine(B, m, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                       borderMode=cv2.BORDER_REPLICATE)
            luma = cv2.cvtColor(frame_bgr[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)
            alpha[y0:y1, x0:x1] = cv2.add(cv2.multiply(a_roi, luma, dtype=cv2.CV_32F), b_roi, dtype=cv2.CV_8U)
    return alpha, band


def composite_band(fg: np.ndarray, bg: np.ndarray, alpha8: np.ndarray,
                   band: list[tuple[int, int, int, int]] | None, overwrite_bg: bool = False) -> np.ndarray:
    """:func:`composite_u8` where the alpha can be fractional (``band``, from :func:`refine_band`); elsewhere
    the alpha is 0 or 255, so the output is the background with the foreground copied over it where alpha > 0
    (one masked copy). ``band`` None composites the whole frame. ``overwrite_bg`` writes the output into ``bg``
    (a background made for this frame only, as process's background stage makes it) instead of a copy."""
    if band is None:
        return composite_u8(fg, bg, alpha8)
    blends = [composite_u8(fg[y0:y1, x0:x1], bg[y0:y1, x0:x1], alpha8[y0:y1, x0:x1]) for y0, y1, x0, x1 in band]
    out = bg if overwrite_bg else bg.copy()
    cv2.copyTo(fg, alpha8, out)
    for (y0, y1, x0, x1), b in zip(band, blends):
        out[y0:y1, x0:x1] = b
    return out
