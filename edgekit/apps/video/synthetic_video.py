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


def paced_clip(speeds: list[float], hw: tuple[int, int] = (144, 256), seed: int = 0,
               jumps: dict[int, float] | None = None, noise: float = 2.0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """BGR uint8 frames and exact masks of a person who sways left and right at ``speeds[t]`` pixels per frame
    (and turns, scales and leans with the pace: the head sways half as far again as the hips) over a fixed
    textured background: ``len(speeds)`` frames. ``jumps`` maps a frame index to a sudden sideways jump in pixels
    at that frame (a cut, a fast lunge). ``noise`` is camera noise sigma in 0-255 units."""
    rng = np.random.default_rng(seed)
    H, W = hw
    bg = synthetic.background(rng, H, W)
    fg, mask = synthetic.person(rng, H, W)
    frames, masks = [], []
    x, direction, travel = 0.0, 1.0, W * 0.18
    jumps = jumps or {}
    for t, v in enumerate(speeds):
        x += direction * v
        if abs(x) > travel:  # turn at the ends of the path
            direction = -direction
            x = float(np.clip(x, -travel, travel))
        x += jumps.get(t, 0.0)
        angle = 3.0 * np.sin(x / travel * np.pi)
        scale = 1.0 + 0.06 * np.sin(x / travel * np.pi / 2)
        M = cv2.getRotationMatrix2D((W / 2, H), angle, scale)
        M[0, 2] += x
        lean = 0.5 * x  # the head sways further than the hips (a shear: not a rotation, scale and shift)
        M = (np.float64([[1, -lean / H, lean], [0, 1, 0], [0, 0, 1]]) @ np.vstack([M, [0, 0, 1]]))[:2]
        f = cv2.warpAffine(fg, M, (W, H), borderMode=cv2.BORDER_REFLECT)
        m = cv2.warpAffine(mask, M, (W, H), borderMode=cv2.BORDER_CONSTANT)
        img = f * m[..., None] + bg * (1 - m[..., None])
        img = img[..., ::-1] * 255
        if noise:
            img = img + rng.normal(0, noise, img.shape)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
        masks.append(m.astype(np.float32))
    return frames, masks
