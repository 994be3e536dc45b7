"""Synthetic video with exact ground truth: composited people moving over a background, at any size."""

from __future__ import annotations

import cv2
import numpy as np

from edgekit.core.samples import synthetic


def synthetic_clip(n: int, hw: tuple[int, int] = (720, 1280), seed: int = 0, motion: float = 1.0,
                   noise: float = 0.0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` BGR uint8 frames and their exact masks: one person (drawn at 1/4 size and scaled up) that
    sways and drifts over a fixed background; ``noise`` is camera noise sigma in 0-255 units."""
    rng = np.random.default_rng(seed)
    H, W = hw
    h, w = H // 4, W // 4
    bg = synthetic.background(rng, h, w)
    fg, mask = synthetic.person(rng, h, w)
    bg_full = cv2.resize(bg, (W, H), interpolation=cv2.INTER_CUBIC)
    fg_full = cv2.resize(fg, (W, H), interpolation=cv2.INTER_CUBIC)
    m_full = cv2.resize(mask, (W, H), interpolation=cv2.INTER_LINEAR)
    frames, masks = [], []
    for t in range(n):
        dx = motion * (W * 0.08 * np.sin(t / 15.0) + t * W * 0.001)
        dy = motion * H * 0.02 * np.sin(t / 7.0)
        M = np.float32([[1, 0, dx], [0, 1, dy]])
        f = cv2.warpAffine(fg_full, M, (W, H), borderMode=cv2.BORDER_REFLECT)
        m = cv2.warpAffine(m_full, M, (W, H), borderMode=cv2.BORDER_CONSTANT)
        img = f * m[..., None] + bg_full * (1 - m[..., None])
        img8 = np.clip(img[..., ::-1] * 255 + rng.normal(0, noise, img.shape) if noise else img[..., ::-1] * 255,
                       0, 255).astype(np.uint8)
        frames.append(img8)
        masks.append(m)
    return frames, masks
