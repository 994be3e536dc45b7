"""Natural-image-like inputs from families other than the portrait generator, for held-back checks.

Two families, deterministic for a seed and fast (NumPy FFTs, no files):

* **1/f colour fields**: noise whose amplitude spectrum falls as ``1/f^a`` (``a`` near 1, as in photos),
  with channels correlated through a random colour mixing, then a random gamma and contrast.
* **textures**: "dead leaves" (overlapping discs and rectangles of random colours at scales drawn from a
  power law, which gives natural images' edge and size statistics) with oriented gratings and
  1/f shading on top.

Pixel statistics are close to those of photos (mean about 0.45, standard deviation about 0.2 to 0.3 per
channel), so a model's activations on them resemble its activations on real images far more than on
uniform noise. They are not photos: the gate uses them to catch fragility off the calibration
distribution, not to measure accuracy.
"""

from __future__ import annotations

import cv2
import numpy as np

FAMILIES = ("1/f colour field", "texture")


def pink_field(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """One 1/f colour field, float32 H x W x 3 in [0, 1]."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    amp = f ** -rng.uniform(0.9, 1.4)
    amp[0, 0] = 0.0
    chans = []
    for _ in range(3):
        phase = rng.uniform(0, 2 * np.pi, amp.shape)
        chans.append(np.fft.irfft2(amp * np.exp(1j * phase), s=(h, w)))
    x = np.stack(chans, -1)
    x = (x - x.mean(axis=(0, 1))) / (x.std(axis=(0, 1)) + 1e-8)
    mix = np.eye(3) * rng.uniform(0.2, 0.6) + rng.uniform(0.3, 0.8)  # mostly luminance, some colour
    x = x @ (mix / np.abs(mix).sum(axis=0, keepdims=True)).T
    x = x / (x.std() + 1e-8) * rng.uniform(0.16, 0.28) + rng.uniform(0.35, 0.55) + rng.normal(0, 0.05, 3)
    x = np.clip(x, 0, 1) ** rng.uniform(0.8, 1.25)
    return x.astype(np.float32)


def texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """One dead-leaves texture with gratings and shading, float32 H x W x 3 in [0, 1]."""
    img = np.empty((h, w, 3), np.float32)
    img[:] = rng.uniform(0.2, 0.7, 3)
    base = min(h, w)
    for _ in range(int(rng.integers(40, 90))):
        r = max(1, int(base * 0.5 * rng.uniform(0.02, 1.0) ** 2.0))  # many small, few large
        colour = (rng.uniform(0.05, 0.95) * (0.6 + 0.4 * rng.random(3))).tolist()
        cx, cy = int(rng.integers(-r, w + r)), int(rng.integers(-r, h + r))
        if rng.random() < 0.6:
            cv2.circle(img, (cx, cy), r, colour, -1)
        else:
            cv2.rectangle(img, (cx - r, cy - r // 2), (cx + r, cy + r // 2), colour, -1)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(int(rng.integers(0, 3))):
        theta, period = rng.uniform(0, np.pi), rng.uniform(3, base / 3)
        grating = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period)
        img = img * (1 + rng.uniform(0.05, 0.25) * grating[..., None])
    shade = pink_field(rng, h, w).mean(axis=2, keepdims=True)
    img = img * (0.6 + 0.8 * shade)
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (3, 3), 0)
    img = img + rng.normal(0, rng.uniform(0.0, 0.03), img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def dataset(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """``n`` images N x H x W x 3 (RGB, [0, 1]), alternating 1/f colour fields and textures."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, h, w, 3), np.float32)
    for i in range(n):
        out[i] = pink_field(rng, h, w) if i % 2 == 0 else texture(rng, h, w)
    return out


def describe(n: int) -> str:
    """How the artifact names this data."""
    return f"1/f colour fields + textures ({n})"
