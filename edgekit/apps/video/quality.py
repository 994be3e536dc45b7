"""Quality measures of the video effects, on synthetic video with exact ground truth and real frames."""

from __future__ import annotations

import cv2
import numpy as np

from edgekit.apps.train.segmentation import boundary_f
from edgekit.core.parity import mask_iou
from edgekit.core.parity import psnr as parity_psnr
from edgekit.core.temporal import dtssd


def mask_scores(alphas: list[np.ndarray], truths: list[np.ndarray]) -> dict:
    ious = [mask_iou(a > 0.5, m > 0.5) for a, m in zip(alphas, truths)]
    small = [(cv2.resize(a, (320, 180)), cv2.resize(m, (320, 180))) for a, m in zip(alphas, truths)]
    bfs = [boundary_f(a > 0.5, m > 0.5) for a, m in small]
    return {"iou": float(np.mean(ious)), "boundary_f": float(np.mean(bfs)), "dtssd": dtssd(alphas, truths)}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two uint8 frames (peak 255), by the gate's own :func:`edgekit.core.parity.psnr`."""
    return parity_psnr(a.astype(np.float64), b.astype(np.float64), peak=255.0)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM over the luma (Gaussian window 11, sigma 1.5)."""
    x = cv2.cvtColor(a, cv2.COLOR_BGR2GRAY).astype(np.float64)
    y = cv2.cvtColor(b, cv2.COLOR_BGR2GRAY).astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(z):
        return cv2.GaussianBlur(z, (11, 11), 1.5)

    mx, my = blur(x), blur(y)
    sx, sy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sx + sy + c2))
    return float(s.mean())


def landmark_jitter(tracks: list[np.ndarray]) -> float:
    """Pixel RMS of each landmark around its mean position over a static clip."""
    pts = np.stack(tracks)  # T x 468 x 2
    return float(np.sqrt(np.mean(np.sum((pts - pts.mean(axis=0)) ** 2, axis=-1))))
