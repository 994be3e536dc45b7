"""The fused uint8 kernels `edgekit process` runs against the float kernels they replace, computed here independently
(the guided filter's full-resolution arithmetic, the (level, pixel) curve lookup, the float blend)."""

import cv2
import numpy as np
import pytest

from edgekit.apps.video import kernels
from edgekit.apps.video.synthetic_video import synthetic_clip


def _scene(n: int, hw: tuple[int, int], seed: int):
    """A synthetic clip, its true mattes, and model-like masks (the mattes at 256x144, softened)."""
    frames, truths = synthetic_clip(n, hw, seed=seed)
    masks = [cv2.GaussianBlur(cv2.resize(t, (256, 144), interpolation=cv2.INTER_AREA), (5, 5), 0) for t in truths]
    return frames, truths, masks


@pytest.fixture(scope="module")
def scene():
    return _scene(6, (360, 640), 8)


def test_refine_band_equals_the_whole_guided_filter(scene):
    """Inside the band: the same numbers as the float guided filter on every pixel (within the rounding to uint8);
    outside it the alpha is exactly 0 or 255 and so is the full computation's."""
    frames, _, masks = scene
    for frame, mask in zip(frames[:3], masks[:3]):
        whole = np.clip(kernels.refine_mask(mask, frame) * 255, 0, 255)  # float, every pixel
        alpha, band = kernels.refine_band(mask, frame)  # guide from the frame, as refine_mask takes it
        assert alpha.dtype == np.uint8 and alpha.shape == frame.shape[:2]
        assert np.abs(alpha - whole).max() <= 1.0
        inside = np.zeros(alpha.shape, bool)
        for y0, y1, x0, x1 in band:
            inside[y0:y1, x0:x1] = True
        assert 0.01 < inside.mean() < 0.6  # a band, not the frame
        assert np.isin(alpha[~inside], (0, 255)).all()
        assert np.isin(np.round(whole[~inside]), (0, 255)).all()


def _box64(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window, borders mirrored without repeating the edge (OpenCV's default), in float64."""
    p = np.pad(x, r, mode="reflect")
    c = np.pad(p.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    n = 2 * r + 1
    return (c[n:, n:] - c[:-n, n:] - c[n:, :-n] + c[:-n, :-n]) / (n * n)


def _bilinear64(x: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Upsample with pixel centres aligned (x_src = (x + 0.5) * w / W - 0.5, clamped), in float64."""
    (h, w), (H, W) = x.shape, hw
    ys = np.clip((np.arange(H) + 0.5) * h / H - 0.5, 0, h - 1)
    xs = np.clip((np.arange(W) + 0.5) * w / W - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = x[y0][:, x0] * (1 - fx) + x[y0][:, x1] * fx
    bottom = x[y1][:, x0] * (1 - fx) + x[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


def _guided64(mask: np.ndarray, guide_small: np.ndarray, frame: np.ndarray, r: int = 4, eps: float = 1e-3):
    """The fast guided filter in float64 (coefficients fitted against ``guide_small`` at the mask's resolution,
    applied to the frame's luma), x 255 and clipped."""
    g, p = guide_small / 255.0, mask.astype(np.float64)
    mean_i, mean_p = _box64(g, r), _box64(p, r)
    a = (_box64(g * p, r) - mean_i * mean_p) / (_box64(g * g, r) - mean_i * mean_i + eps)
    b = mean_p - a * mean_i
    luma = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) / 255.0
    q = _bilinear64(_box64(a, r), luma.shape) * luma + _bilinear64(_box64(b, r), luma.shape)
    return np.clip(q, 0, 1) * 255


@pytest.fixture(scope="module")
def scene_720p():
    return _scene(12, (720, 1280), 11)


def test_refine_band_as_process_runs_it(scene_720p):
    """The path ``edgekit process`` runs (guide from the 1/4 frame, 256x144 mask, 720p): within one grey level of a
    float64 guided filter with that guide (computed here without OpenCV's filters); against the guided filter with
    the full frame's guide (:func:`refine_mask`) the bounds the docstring states (up to 28 grey levels at edges,
    3.2% of pixels more than 2 apart, mean 0.23), and no farther from the true matte on average."""
    frames, truths, masks = scene_720p
    errors = []
    for i, (frame, truth, mask) in enumerate(zip(frames, truths, masks)):
        q = kernels.quarter(frame)
        alpha, _ = kernels.refine_band(mask, frame, q)
        if i < 3:
            guide = cv2.resize(cv2.cvtColor(q, cv2.COLOR_BGR2GRAY), (256, 144), interpolation=cv2.INTER_AREA)
            assert np.abs(alpha - _guided64(mask, guide, frame)).max() <= 1.0
        whole = np.clip(kernels.refine_mask(mask, frame) * 255, 0, 255)
        d = np.abs(alpha - whole)
        assert d.max() <= 28 and (d > 2).mean() <= 0.032 and d.mean() <= 0.23
        errors.append((np.abs(alpha / 255.0 - truth).mean(), np.abs(whole / 255.0 - truth).mean()))
    band_err, whole_err = np.mean(errors, axis=0)
    assert band_err <= whole_err


def test_refine_band_without_the_quarter_is_the_float64_filter(scene):
    """Guide from the frame (and from the frame when the 1/4 frame is smaller than the mask, as at 640x360 with a
    256x144 mask): within one grey level of the float64 guided filter with the frame's luma area-resized."""
    frames, _, masks = scene
    frame, mask = frames[0], masks[0]
    guide = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (256, 144), interpolation=cv2.INTER_AREA)
    expected = _guided64(mask, guide, frame)
    for q in (None, kernels.quarter(frame)):  # the quarter is 160x90 here
        assert np.abs(kernels.refine_band(mask, frame, q)[0] - expected).max() <= 1.0


def test_composites_in_uint8_match_the_float_blend(scene):
    frames, _, masks = scene
    frame, mask = frames[0], masks[0]
    alpha, band = kernels.refine_band(mask, frame, kernels.quarter(frame))
    bg = cv2.GaussianBlur(frame, (31, 31), 0)
    a = alpha.astype(np.float64)[..., None] / 255
    expected = np.round(a * frame + (1 - a) * bg)
    assert np.abs(kernels.composite_u8(frame, bg, alpha) - expected).max() <= 1
    assert np.abs(kernels.composite_band(frame, bg, alpha, band) - expected).max() <= 1
    assert np.array_equal(kernels.composite_band(frame, bg, alpha, None), kernels.composite_u8(frame, bg, alpha))
    kept = bg.copy()
    into = kernels.composite_band(frame, bg, alpha, band, overwrite_bg=True)  # as process runs it: no copy
    assert into is bg and np.array_equal(into, kernels.composite_band(frame, kept, alpha, band))


def test_background_blur_at_an_eighth_is_the_quarter_blur(scene):
    frames, truths, masks = scene
    for frame, truth, mask in zip(frames[:2], truths[:2], masks[:2]):
        q = kernels.quarter(frame)
        old = kernels.blurred_background_small(q, mask, frame).astype(int)
        new = kernels.blurred_background_eighth(q, mask, frame)
        bg = truth < 0.01
        assert np.abs(new - old)[bg].mean() < 2.0
        lap = lambda im: np.abs(cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_BGR2GRAY), cv2.CV_32F))  # noqa: E731
        assert lap(new)[bg].mean() < 0.7 * lap(frame)[bg].mean()


def _exact_curves(frame_bgr: np.ndarray, curves_rgb: np.ndarray, iterations: int = 8) -> np.ndarray:
    """The curve iterated per pixel in float64 with the curves upsampled bilinearly (no table)."""
    H, W = frame_bgr.shape[:2]
    a = cv2.resize(np.ascontiguousarray(curves_rgb[::-1].transpose(1, 2, 0), dtype=np.float32), (W, H),
                   interpolation=cv2.INTER_LINEAR).astype(np.float64)
    x = frame_bgr / 255.0
    for _ in range(iterations):
        x = x + a * x * (1 - x)
    return np.clip(x * 255 + 0.5, 0, 255)


def test_two_curve_lowlight_apply_follows_spatially_varying_curves():
    """Curves from 0 on the left to 0.9 on the right (the darkest corner gets much more light than the rest),
    on a textured dark frame: the two-curve apply follows the per-pixel curve within a few grey levels on
    average, and on a flat frame it is the per-pixel curve."""
    from edgekit.apps.video.effects.lowlight import LowLight, two_curves

    h, w = 72, 128
    ramp = np.linspace(0, 0.9, w, dtype=np.float32)[None, :].repeat(h, 0)
    curves = np.stack([ramp, 0.8 * ramp, 0.6 * ramp])  # RGB
    rng = np.random.default_rng(0)
    H, W = 360, 640
    textured = np.clip(cv2.GaussianBlur(rng.normal(40, 18, (H, W, 3)), (0, 0), 1.5), 0, 255).astype(np.uint8)
    flat = np.full((H, W, 3), 50, np.uint8)
    ll = LowLight.__new__(LowLight)  # apply_two needs no session
    for frame, mean_tol in ((textured, 2.0), (flat, 0.75)):
        small = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
        got = ll.apply_two(frame, two_curves(curves, small)).astype(np.float64)
        exact = _exact_curves(frame, curves)
        assert np.abs(got - exact).mean() < mean_tol
        assert np.abs(got - frame).mean() > 20  # it did brighten


def test_uint8_denoiser_is_the_float_blend():
    """Each step of the u8 denoiser is within one grey level of the blend computed here in float64 from the same
    previous output (``previous + k (spatial - previous)``, k from the unquantized weight formula); over the clip
    its outputs and the "lut" kernel's stay within 2 grey levels of each other (each kernel's own rounding
    carried forward by the recursion)."""
    from edgekit.apps.video.effects.denoise import TemporalDenoiser

    clean, _ = synthetic_clip(8, (200, 320), seed=3, motion=0.5)
    rng = np.random.default_rng(2)
    noisy = [np.clip(f + rng.normal(0, 15, f.shape), 0, 255).astype(np.uint8) for f in clean]
    fused, lut = TemporalDenoiser(kernel="u8"), TemporalDenoiser(kernel="lut")
    moving = []
    for f in noisy:
        previous = None if fused.previous is None else fused.previous.copy()
        a, b = fused(f).astype(int), lut(f).astype(int)
        assert np.abs(a - b).max() <= 2 and np.abs(a - b).mean() < 0.05
        spatial = cv2.GaussianBlur(f, (3, 3), 0)
        if previous is None:
            assert np.array_equal(a, spatial)
            continue
        gray = lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2GRAY)  # noqa: E731
        d = cv2.GaussianBlur(cv2.absdiff(gray(spatial), gray(previous)), (5, 5), 0) / fused.threshold
        k = np.clip(fused.base + (1 - fused.base) * d * d, fused.base, 1.0)[..., None]
        expected = previous + k * (spatial.astype(np.float64) - previous)
        assert np.abs(a - expected).max() <= 1.0
        moving.append((k > fused.base + 0.1).mean())
    assert max(moving) > 0.01  # the weight varied: the check covered more than the static blend
    with pytest.raises(ValueError, match="kernel"):
        TemporalDenoiser(kernel="fast")


def test_lowlight_every_second_frame_runs_the_network_half_the_time():
    """``every=2``: the network on frames 0, 2, 4, ...; the curves carried between (the weight map still fitted to
    each frame); a reset (curves forgotten) runs it at once."""
    from types import SimpleNamespace

    from edgekit.apps.pipeline.definition import reset_state
    from edgekit.apps.video.effects.lowlight import LowLight

    calls = []

    class Fake:
        io = SimpleNamespace(inputs=[SimpleNamespace(name="image", shape=(1, 3, 18, 32))])

        def run(self, feeds):
            calls.append(feeds["image"].shape)
            return {"a": np.full((1, 3, 18, 32), 0.5, np.float32)}

    ll = LowLight(Fake(), every=2)
    rng = np.random.default_rng(0)
    frames = [(rng.random((72, 128, 3)) * 60).astype(np.uint8) for _ in range(5)]
    outs = [ll(f) for f in frames]
    assert len(calls) == 3  # frames 0, 2, 4
    assert all(o.mean() > f.mean() + 10 for o, f in zip(outs, frames))  # every frame brightened
    reset_state(ll.estimate_two)
    ll(frames[0])
    assert len(calls) == 4


@pytest.mark.parametrize("color,value_range,mean,std", [
    ("RGB", (0.0, 1.0), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    ("BGR", (0.0, 1.0), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ("RGB", (-1.0, 1.0), (0.1, 0.2, 0.3), (0.5, 0.6, 0.7))])
def test_model_input_by_table_is_the_normalized_input(color, value_range, mean, std):
    from edgekit.apps.video.process import _input_lut
    from edgekit.core.preprocess import frame_to_input

    small = (np.random.default_rng(0).random((36, 64, 3)) * 255).astype(np.uint8)
    expected = frame_to_input(small, (36, 64), color, value_range, mean, std)
    got = _input_lut(color, value_range, mean, std)(small)
    assert got.shape == expected.shape == (1, 3, 36, 64) and got.dtype == np.float32
    assert np.allclose(got, expected, atol=1e-6)
