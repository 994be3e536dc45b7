"""Motion-adaptive temporal recursive denoising with a spatial fallback where things move.

``out_t = k * spatial(frame_t) + (1 - k) * out_{t-1}`` per pixel, where ``k`` grows with the local
difference between the new frame and the running estimate: static regions average many frames
(noise falls by ~sqrt(1/k)), moving regions follow the new frame (no ghosting) and get a light
spatial filter instead.
"""

from __future__ import annotations

import cv2
import numpy as np

#: rows per strip of the u8 kernel: 32 rows of a 1080p frame are 184 KiB per 3-channel buffer (in L2)
STRIP = 32


class TemporalDenoiser:
    """Call it on each BGR uint8 frame in order. ``kernel`` says how the blend runs (each u8 step is within one grey
    level of the float64 blend from the same previous output; over a clip the u8 and lut kernels' outputs stay within
    2 grey levels, as each kernel's rounding is carried by the recursion): ``"u8"`` (the default) in uint8, in strips
    of rows that stay in cache (the weight as 0-255 from one table lookup of the blurred difference, the blend as
    saturating uint8 arithmetic with one rounding);
    ``"lut"`` the previous float weights through two lookups and ``cv2.blendLinear``; ``"float"`` the earliest
    float arithmetic (``fast=False``). The last two are kept for side-by-side benchmarks.

    Raises:
        ValueError: an unknown ``kernel``.
    """

    def __init__(self, strength: float = 1.0, sigma: float = 15.0, fast: bool = True, kernel: str | None = None):
        self.base = float(np.clip(0.25 / max(strength, 1e-3), 0.08, 1.0))  # weight of the new frame when static
        self.threshold = 3.0 * sigma  # differences above this are motion, not noise
        self.previous: np.ndarray | None = None
        self.kernel = kernel or ("u8" if fast else "float")
        if self.kernel not in ("u8", "lut", "float"):
            raise ValueError(f"kernel {self.kernel!r}: choose u8, lut or float")
        self.fast = self.kernel != "float"
        # the weight k of each blurred difference d (0-255): one table lookup instead of four float passes
        d = np.arange(256, dtype=np.float64) / self.threshold
        self.k_lut = np.clip(self.base + (1 - self.base) * d * d, self.base, 1.0).astype(np.float32)
        self.keep_lut = (1.0 - self.k_lut).astype(np.float32)
        self.k_lut8 = np.clip(self.k_lut * 255 + 0.5, 0, 255).astype(np.uint8)

    def _blend_u8(self, frame: np.ndarray, previous: np.ndarray) -> np.ndarray:
        """The u8 blend in strips of :data:`STRIP` rows (each with the 3 rows either side its two blurs read), so
        every intermediate stays in the core's cache: the same output as the whole frame at once."""
        H = frame.shape[0]
        out = np.empty_like(frame)
        for y0 in range(0, H, STRIP):
            y1 = min(H, y0 + STRIP)
            a0, a1 = max(0, y0 - 3), min(H, y1 + 3)
            spatial = cv2.GaussianBlur(frame[a0:a1], (3, 3), 0)
            prev = previous[a0:a1]
            diff = cv2.absdiff(cv2.cvtColor(spatial, cv2.COLOR_BGR2GRAY), cv2.cvtColor(prev, cv2.COLOR_BGR2GRAY))
            k = cv2.cvtColor(cv2.LUT(cv2.GaussianBlur(diff, (5, 5), 0)[y0 - a0:y1 - a0], self.k_lut8),
                             cv2.COLOR_GRAY2BGR)
            # previous + k (spatial - previous) with one rounding: the difference split by sign (saturating
            # subtractions, one of the two is 0), each part scaled by k and rounded, added and taken off
            s, p = spatial[y0 - a0:y1 - a0], prev[y0 - a0:y1 - a0]
            up = cv2.multiply(cv2.subtract(s, p), k, scale=1 / 255.0)
            down = cv2.multiply(cv2.subtract(p, s), k, dst=k, scale=1 / 255.0)
            cv2.subtract(cv2.add(p, up, dst=up), down, dst=out[y0:y1])
        return out

    def __call__(self, frame_bgr: np.ndarray) -> np.ndarray:
        if self.kernel == "u8" and self.previous is not None and self.previous.shape == frame_bgr.shape:
            self.previous = self._blend_u8(frame_bgr, self.previous)
            return self.previous
        spatial = cv2.GaussianBlur(frame_bgr, (3, 3), 0)
        if self.previous is None or self.previous.shape != frame_bgr.shape:
            self.previous = spatial
            return spatial
        if self.fast:
            diff = cv2.absdiff(cv2.cvtColor(spatial, cv2.COLOR_BGR2GRAY),
                               cv2.cvtColor(self.previous, cv2.COLOR_BGR2GRAY))
            blurred = cv2.GaussianBlur(diff, (5, 5), 0)
            self.previous = cv2.blendLinear(spatial, self.previous, cv2.LUT(blurred, self.k_lut),
                                            cv2.LUT(blurred, self.keep_lut))
            return self.previous
        diff = cv2.absdiff(cv2.cvtColor(spatial, cv2.COLOR_BGR2GRAY), cv2.cvtColor(self.previous, cv2.COLOR_BGR2GRAY))
        diff = cv2.GaussianBlur(diff, (5, 5), 0).astype(np.float32) * (1.0 / self.threshold)
        k = np.clip(self.base + (1 - self.base) * diff * diff, self.base, 1.0)
        self.previous = cv2.blendLinear(spatial, self.previous, k, 1.0 - k)
        return self.previous
