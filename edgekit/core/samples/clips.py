"""Generated video clips for temporal checks: a person that moves and scales over a moving background, with
camera jitter and sensor noise, at any size (the model's resolution for the gate)."""

from __future__ import annotations

import numpy as np

from edgekit.core.samples import synthetic


def moving_clip(n: int, hw: tuple[int, int], seed: int = 0, noise: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` RGB frames in [0, 1] (n x H x W x 3, float32) and their exact masks (n x H x W): the person drifts,
    sways and scales by up to 15%, the background pans, the camera jitters by a pixel or two, and every frame
    gets Gaussian sensor noise of sigma ``noise`` (0-255 units)."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = hw
    big_h, big_w = int(h * 1.25), int(w * 1.25)  # room for the background to pan
    bg = cv2.resize(synthetic.background(rng, big_h // 2, big_w // 2), (big_w, big_h), interpolation=cv2.INTER_CUBIC)
    fg, mask = synthetic.person(rng, h, w)
    frames = np.empty((n, h, w, 3), np.float32)
    masks = np.empty((n, h, w), np.float32)
    jitter = rng.normal(0, 1.0, (n, 2))
    for t in range(n):
        scale = 1.0 + 0.15 * np.sin(t / 23.0)
        dx = w * 0.12 * np.sin(t / 17.0) + jitter[t, 0]
        dy = h * 0.04 * np.sin(t / 9.0) + jitter[t, 1]
        m = cv2.getRotationMatrix2D((w / 2, h), 2.0 * np.sin(t / 13.0), scale)
        m[:, 2] += (dx, dy)
        f = cv2.warpAffine(fg, m, (w, h), borderMode=cv2.BORDER_REFLECT)
        a = cv2.warpAffine(mask, m, (w, h), borderMode=cv2.BORDER_CONSTANT)
        ox = int((big_w - w) / 2 + (big_w - w) / 2 * np.sin(t / 31.0) + jitter[t, 0])
        oy = int((big_h - h) / 2 + jitter[t, 1])
        ox, oy = min(max(ox, 0), big_w - w), min(max(oy, 0), big_h - h)
        b = bg[oy:oy + h, ox:ox + w]
        img = f * a[..., None] + b * (1 - a[..., None])
        if noise:
            img = img + rng.normal(0, noise / 255.0, img.shape)
        frames[t] = np.clip(img, 0, 1)
        masks[t] = a
    return frames, masks
