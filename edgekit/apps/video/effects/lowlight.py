"""Low-light enhancement: curve maps from the repo's Zero-DCE++-style network (run through an edgekit
Session at 72x128, 144x256 before), smoothed over time, applied at full resolution as two shared curves
and a weight map (a (curve, pixel) lookup table before); and CLAHE, the classic baseline it must beat."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgekit.zoo.curve_net_numpy import ITERATIONS

MODEL = Path(__file__).resolve().parents[4] / "models" / "lowlight" / "curve.onnx"  # the repo root
LEVELS = 64  # curve parameter quantization for the lookup table (the earlier full-resolution apply)
STRIP = 32  # rows per strip of :meth:`LowLight.apply_two`
FINE_LEVELS = 254  # :meth:`LowLight.apply`: levels 0-254 in uint8, table index level * 256 + pixel in uint16


def curve_lut(levels: int = LEVELS, iterations: int = ITERATIONS) -> np.ndarray:
    """uint8 table [level, pixel] of the iterated curve for A in [-1, 1]."""
    a = np.linspace(-1, 1, levels + 1, dtype=np.float64)[:, None]
    x = np.arange(256, dtype=np.float64)[None] / 255.0
    for _ in range(iterations):
        x = x + a * x * (1 - x)
    return np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)


class LowLight:
    """Stateful (the curves are smoothed over frames): call it on each BGR uint8 frame in order.

    Two steps a pipeline can place on different units: :meth:`estimate` (the network at low resolution,
    smoothed over time) and :meth:`apply` (the lookup at full resolution)."""

    def __init__(self, session, strength: float = 1.0, smoothing: float = 0.7, every: int = 1):
        self.session, self.strength, self.smoothing = session, strength, smoothing
        #: :meth:`estimate_two` runs the network on every ``every``-th frame and carries the smoothed curves
        #: between (the smoothing's time constant kept: ``smoothing ** every`` on the frames it runs)
        self.every, self._since = max(1, int(every)), 0
        self.lut = curve_lut().ravel()
        self.fine_lut = curve_lut(FINE_LEVELS).ravel()  # 255 x 256 entries (64 KiB): finer than the earlier 65
        self.curves: np.ndarray | None = None  # the smoothed curve maps of the previous frame
        self.hw = tuple(session.io.inputs[0].shape[-2:])

    def __call__(self, frame_bgr: np.ndarray) -> np.ndarray:
        return self.apply_two(frame_bgr, self.estimate_two(frame_bgr))

    def estimate(self, frame_bgr: np.ndarray) -> np.ndarray:
        """Curve maps (3 x h x w, RGB, in [-1, 1] times strength) of this frame, smoothed over time."""
        return self._estimate(self._small(frame_bgr))

    def _small(self, frame_bgr: np.ndarray) -> np.ndarray:
        h, w = self.hw
        return cv2.resize(frame_bgr, (w, h), interpolation=cv2.INTER_AREA)

    def _estimate(self, small_bgr: np.ndarray, smoothing: float | None = None) -> np.ndarray:
        smoothing = self.smoothing if smoothing is None else smoothing
        small = small_bgr[..., ::-1].astype(np.float32) / 255.0
        a = self.session.run({self.session.io.inputs[0].name: small.transpose(2, 0, 1)[None].copy()})
        a = next(iter(a.values()))[0] * self.strength
        if self.curves is not None and self.curves.shape == a.shape:
            a = smoothing * self.curves + (1 - smoothing) * a
        self.curves = a
        return a

    def estimate_two(self, frame_bgr: np.ndarray) -> TwoCurves:
        """:meth:`estimate`, then everything :meth:`apply_two` needs worked out at the curves' resolution
        (:func:`two_curves`): the full-resolution step is left two ``cv2.LUT`` and one multiply-add in uint8."""
        small = self._small(frame_bgr)
        if self.curves is None or self._since + 1 >= self.every:
            self._since = 0
            curves = self._estimate(small, self.smoothing ** self.every)
        else:  # carried: the weight map is still fitted to this frame
            self._since += 1
            curves = self.curves
        return two_curves(curves, small)

    def apply_two(self, frame_bgr: np.ndarray, two: TwoCurves) -> np.ndarray:
        """The curves at full resolution as ``low(x) + w * (high(x) - low(x))``: two per-channel ``cv2.LUT``
        (256 entries each), the weight map upsampled in uint8 and one ``cv2.multiply`` + ``cv2.add`` (OpenCV,
        uint8, no GIL held): about a quarter of the (level, pixel) gather's time (README, Speed)."""
        H, W = frame_bgr.shape[:2]
        weight = cv2.resize(two.weight, (W, H), interpolation=cv2.INTER_LINEAR)
        out = np.empty_like(frame_bgr)
        for y0 in range(0, H, STRIP):  # strips of rows, so the intermediates stay in the core's cache
            rows = frame_bgr[y0:y0 + STRIP].reshape(-1, W * 3)  # one channel: the two curves serve all three
            span = cv2.multiply(cv2.LUT(rows, two.span), weight[y0:y0 + STRIP].reshape(-1, W * 3), scale=1 / 255.0)
            cv2.add(cv2.LUT(rows, two.low), span, dst=out[y0:y0 + STRIP].reshape(-1, W * 3))
        return out

    def apply(self, frame_bgr: np.ndarray, curves: np.ndarray) -> np.ndarray:
        """The curves applied at full resolution through the (curve level, pixel) lookup table. The curve
        levels are quantized at the curves' own resolution (uint8) and upsampled as uint8, so the only
        full-resolution work is that upsampling, the index and the lookup."""
        H, W = frame_bgr.shape[:2]
        small = np.ascontiguousarray(curves[::-1].transpose(1, 2, 0), dtype=np.float32)
        level = cv2.convertScaleAbs(np.clip(small, -1, 1), alpha=FINE_LEVELS / 2, beta=FINE_LEVELS / 2)  # rounded
        index = cv2.resize(level, (W, H), interpolation=cv2.INTER_LINEAR).astype(np.uint16)
        index <<= 8  # the table index level * 256 + pixel, in place
        index |= frame_bgr
        return np.take(self.fine_lut, index)

    def apply_full(self, frame_bgr: np.ndarray, curves: np.ndarray) -> np.ndarray:
        """The earlier :meth:`apply`: curves upsampled as float to full resolution, quantized there (kept for
        side-by-side benchmarks)."""
        H, W = frame_bgr.shape[:2]
        a_bgr = cv2.resize(np.ascontiguousarray(curves[::-1].transpose(1, 2, 0)), (W, H),
                           interpolation=cv2.INTER_LINEAR)
        level = ((np.clip(a_bgr, -1, 1) + 1) * (LEVELS / 2) + 0.5).astype(np.uint16)
        level *= 256  # in place: the table index level * 256 + pixel without more 720p temporaries
        level += frame_bgr
        return np.take(self.lut, level)


@dataclass(frozen=True)
class TwoCurves:
    """A frame's curves as two per-channel curves and a weight map (:func:`two_curves`). Not a tuple: a pipeline
    stage's tuple result is read as several outputs."""

    low: np.ndarray     # 256 uint8: the curve at the smallest A the map holds (any channel)
    span: np.ndarray    # 256 uint8: the curve at the largest A, less ``low``
    weight: np.ndarray  # h x w x 3 uint8: 255 x the weight of ``span`` at the curves' resolution


def _curve(x: np.ndarray, a: np.ndarray, iterations: int = ITERATIONS) -> np.ndarray:
    for _ in range(iterations):
        x = x + a * x * (1 - x)
    return x


@functools.lru_cache(maxsize=1)
def _fine_table() -> np.ndarray:
    """float64 [level, pixel] of the iterated curve (0-1) for A in [-1, 1] in ``FINE_LEVELS + 1`` levels."""
    a = np.linspace(-1, 1, FINE_LEVELS + 1, dtype=np.float64)[:, None]
    return _curve(np.arange(256, dtype=np.float64)[None] / 255.0, a)


def two_curves(curves: np.ndarray, small_bgr: np.ndarray) -> TwoCurves:
    """The curve maps (3 x h x w, RGB) as two curves shared by the channels, at the map's smallest and largest A
    (so the full-resolution lookups are one-channel), and a weight per curve pixel and channel such that
    ``low(x) + w * span(x)`` equals the pixel's own curve at the mean value of the frame there (``small_bgr``,
    the frame at the curves' resolution). The curve is increasing in A, so ``span >= 0``; the weight is exact
    where the frame is flat around a curve pixel, an interpolation between the two curves where it is
    textured."""
    a = np.clip(np.ascontiguousarray(curves[::-1].transpose(1, 2, 0), dtype=np.float32), -1, 1)  # h x w x 3, BGR
    lo, hi = np.float32(a.min()), np.float32(a.max())  # one pair for all channels: one-channel lookups
    levels = np.arange(256, dtype=np.float64) / 255.0
    c_lo, c_hi = _curve(levels, float(lo)), _curve(levels, float(hi))
    low = np.clip(c_lo * 255 + 0.5, 0, 255).astype(np.uint8)
    high = np.clip(c_hi * 255 + 0.5, 0, 255).astype(np.uint8)
    # at the frame's mean value around each curve pixel (the small frame is uint8): all three curves by table
    f_lo, f_hi = c_lo[small_bgr], c_hi[small_bgr]
    f = _fine_table()[np.rint((a + 1) * (FINE_LEVELS / 2)).astype(np.intp), small_bgr]  # A in 255 levels
    d = f_hi - f_lo
    safe = d > 1e-6
    by_a = (a - lo) / np.maximum(hi - lo, 1e-9)  # where the curves meet (x near 0 or 1): the weight of A itself
    w = np.where(safe, (f - f_lo) / np.where(safe, d, 1.0), by_a)
    weight = np.clip(w * 255 + 0.5, 0, 255).astype(np.uint8)
    return TwoCurves(low, high - low, weight)


def clahe(frame_bgr: np.ndarray, clip: float = 3.0) -> np.ndarray:
    """CLAHE on the L channel of Lab (the baseline)."""
    lab = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=clip, tileGridSize=(8, 8)).apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


#: the curve network's input size: curves are smooth, so (as Zero-DCE++ does) they are estimated on a small copy of
#: the frame; at 72x128 the network costs a quarter of 144x256 and scores alike (README, Low-light). 36x64 costs a
#: quarter again and scores alike on the stills, but on bench_video's bright portrait the face detector then lost the
#: face in the brightened frames (it finds it at 72x128), so it is not the default
CURVE_HW = (72, 128)
PREVIOUS_CURVE_HW = (72, 128)  # what process ran before the two-curve apply (bench_video's side-by-side)


def open_lowlight(strength: float = 1.0, threads: int = 1, cache: Path = Path("out/pipeline-artifacts"),
                  hw: tuple[int, int] = CURVE_HW, every: int = 1) -> LowLight:
    """The bundled curve network as an onnx-fp32 artifact at ``hw`` (converted once, parity-checked) in a
    LowLight."""
    from edgekit.api import load
    from edgekit.apps.profiling.sweep import cached_artifact

    art = cached_artifact(MODEL, "onnx-fp32", tuple(hw), cache)
    return LowLight(load(art.path, threads=threads), strength, every=every)
