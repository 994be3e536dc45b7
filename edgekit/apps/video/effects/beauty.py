"""Beauty effects driven by 468 face landmarks: skin smoothing (edge-preserving, limited to skin),
face slimming and eye enlarging (landmark-driven local warps), lipstick (blend over the lip polygon).
Each effect has a strength in [0, 1]; 0 turns it off."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edgekit.apps.video.effects.face import FaceDetector, FaceLandmarker, OneEuroFilter

# MediaPipe face mesh topology (canonical landmark indices)
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176,
             149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
LIPS_OUTER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185]
LIPS_INNER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191]
LEFT_EYE = [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]
RIGHT_EYE = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246]
LEFT_BROW = [276, 283, 282, 295, 285, 300, 293, 334, 296, 336]
RIGHT_BROW = [46, 53, 52, 65, 55, 70, 63, 105, 66, 107]
CHEEKS = [(234, 93, 132, 58, 172), (454, 323, 361, 288, 397)]  # jaw-side contour points, per side
NOSE_TIP = 1


@dataclass
class BeautySettings:
    smooth: float = 0.6
    slim: float = 0.3
    eyes: float = 0.3
    lipstick: float = 0.4
    lip_color_bgr: tuple[int, int, int] = (60, 40, 180)


class FaceTracker:
    """Landmarks per frame: detect, then track from the previous landmarks (re-detect when lost),
    smoothed with a One Euro filter."""

    def __init__(self, threads: int = 1, fps: float = 30.0, smooth: bool = True):
        self.detector, self.landmarker = FaceDetector(threads), FaceLandmarker(threads)
        self.filter = OneEuroFilter(min_cutoff=1.0, beta=0.02, fps=fps) if smooth else None
        self.box: np.ndarray | None = None

    def __call__(self, frame_bgr: np.ndarray) -> np.ndarray | None:
        if self.box is None:
            faces = self.detector(frame_bgr)
            if not faces:
                if self.filter:
                    self.filter.reset()
                return None
            self.box = faces[0].box
        pts, presence = self.landmarker(frame_bgr, self.box)
        if presence < 0.5:
            self.box = None
            return self(frame_bgr) if self.detector(frame_bgr) else None
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0)
        self.box = np.array([x0, y0, x1, y1])
        return self.filter(pts) if self.filter else pts


def _poly_mask(shape, pts: np.ndarray, feather: float) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 255)
    k = max(3, int(feather) | 1)
    return cv2.GaussianBlur(m, (k, k), 0).astype(np.float32) / 255.0


def apply_beauty(frame_bgr: np.ndarray, pts: np.ndarray | None, s: BeautySettings,
                 in_place: bool = False) -> np.ndarray:
    """All enabled beauty effects on one frame, within the face's bounding region; ``in_place`` draws them on
    ``frame_bgr`` itself (a frame nothing else reads) instead of on a copy."""
    if pts is None:
        return frame_bgr
    H, W = frame_bgr.shape[:2]
    x0, y0 = np.maximum(pts.min(axis=0) - 0.15 * np.ptp(pts, axis=0), 0).astype(int)
    x1, y1 = np.minimum(pts.max(axis=0) + 0.15 * np.ptp(pts, axis=0), [W, H]).astype(int)
    if x1 - x0 < 16 or y1 - y0 < 16:
        return frame_bgr
    out = frame_bgr if in_place else frame_bgr.copy()
    roi = out[y0:y1, x0:x1]
    p = pts - np.array([x0, y0], np.float32)
    face_w = float(np.ptp(p[:, 0]))
    if s.smooth > 0:
        roi = smooth_skin(roi, p, s.smooth, face_w)
    if s.slim > 0 or s.eyes > 0:
        roi = warp_face(roi, p, s.slim, s.eyes, face_w)
    if s.lipstick > 0:
        roi = lipstick(roi, p, s.lipstick, s.lip_color_bgr, face_w)
    out[y0:y1, x0:x1] = roi
    return out


def smooth_skin(roi: np.ndarray, p: np.ndarray, strength: float, face_w: float) -> np.ndarray:
    """Edge-preserving (bilateral) smoothing, on skin only: the face oval minus eyes, brows and lips."""
    h, w = roi.shape[:2]
    scale = min(1.0, 160.0 / max(h, w))  # filter a small copy: skin detail is low-frequency
    small = cv2.resize(roi, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    # the skin mask (feathered polygons) at the small copy's size too, then interpolated to the ROI
    sh, sw = small.shape[:2]
    ps = p * np.float32([sw / w, sh / h])
    skin = _poly_mask((sh, sw), ps[FACE_OVAL], face_w * scale * 0.04)
    for part in (LEFT_EYE, RIGHT_EYE, LEFT_BROW, RIGHT_BROW, LIPS_OUTER):
        skin *= 1.0 - _poly_mask((sh, sw), ps[part], face_w * scale * 0.03)
    skin = cv2.resize(skin, (w, h), interpolation=cv2.INTER_LINEAR)
    smooth = cv2.bilateralFilter(small, 7, 30, 5)
    smooth = cv2.resize(smooth, (w, h), interpolation=cv2.INTER_LINEAR)
    a = (skin * strength).astype(np.float32)
    return cv2.blendLinear(smooth, roi, a, 1.0 - a)


def warp_face(roi: np.ndarray, p: np.ndarray, slim: float, eyes: float, face_w: float, step: int = 4) -> np.ndarray:
    """Local warps: cheeks pulled toward the nose (slimming), eye regions magnified (enlarging). The
    displacement is smooth, so it is computed on a grid ``step`` pixels apart and interpolated (bilinear) to
    every pixel; ``step=1`` computes it at every pixel (the earlier way)."""
    h, w = roi.shape[:2]
    if step > 1 and h > 4 * step and w > 4 * step:
        hs, ws = -(-h // step), -(-w // step)
        # the small grid's pixel centres in the ROI's coordinates, as cv2.resize maps them
        sx = (np.arange(ws, dtype=np.float32) + 0.5) * (w / ws) - 0.5
        sy = (np.arange(hs, dtype=np.float32) + 0.5) * (h / hs) - 0.5
        gxs, gys = np.meshgrid(sx, sy)
        mxs, mys = _face_maps(gxs, gys, p, slim, eyes, face_w)
        dx = cv2.resize(mxs - gxs, (w, h), interpolation=cv2.INTER_LINEAR)
        dy = cv2.resize(mys - gys, (w, h), interpolation=cv2.INTER_LINEAR)
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        return cv2.remap(roi, cv2.add(gx, dx), cv2.add(gy, dy), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x, map_y = _face_maps(gx, gy, p, slim, eyes, face_w)
    return cv2.remap(roi, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _face_maps(gx: np.ndarray, gy: np.ndarray, p: np.ndarray, slim: float, eyes: float,
               face_w: float) -> tuple[np.ndarray, np.ndarray]:
    """Where each pixel (``gx``, ``gy``) samples from after slimming and eye enlarging."""
    map_x, map_y = gx.copy(), gy.copy()
    center = p[NOSE_TIP]
    radius = face_w * 0.22
    for side in CHEEKS:
        for idx in side:
            px, py = p[idx]
            d2 = (gx - px) ** 2 + (gy - py) ** 2
            weight = np.clip(1 - d2 / radius**2, 0, 1) ** 2 * (0.12 * slim)
            map_x += weight * (px - center[0])  # sample from farther out: the contour moves inward
            map_y += weight * (py - center[1]) * 0.3
    for eye in (LEFT_EYE, RIGHT_EYE):
        ex, ey = p[eye].mean(axis=0)
        r = float(np.ptp(p[eye][:, 0])) * 1.1
        d = np.sqrt((gx - ex) ** 2 + (gy - ey) ** 2)
        k = np.where(d < r, 1 - (0.35 * eyes) * (1 - (d / r) ** 2), 1.0)  # < 1: sample nearer the centre
        map_x = np.where(d < r, ex + (map_x - ex) * k, map_x)
        map_y = np.where(d < r, ey + (map_y - ey) * k, map_y)
    return map_x.astype(np.float32), map_y.astype(np.float32)


def lipstick(roi: np.ndarray, p: np.ndarray, strength: float, color_bgr, face_w: float) -> np.ndarray:
    """Colour blended over the lips (outer polygon minus the mouth opening), keeping the lips' shading; computed
    in the lips' bounding box (with the feather's margin) only, the rest of ``roi`` left as it is."""
    h, w = roi.shape[:2]
    lip_pts = p[LIPS_OUTER]
    margin = int(face_w * 0.01) + 4
    x0, y0 = np.maximum(np.floor(lip_pts.min(axis=0)).astype(int) - margin, 0)
    x1, y1 = np.minimum(np.ceil(lip_pts.max(axis=0)).astype(int) + margin + 1, [w, h])
    if x1 - x0 < 4 or y1 - y0 < 4 or (x1 - x0) * (y1 - y0) > 0.5 * h * w:
        return _lipstick(roi, p, strength, color_bgr, face_w)
    out = roi.copy()
    out[y0:y1, x0:x1] = _lipstick(roi[y0:y1, x0:x1], p - np.float32([x0, y0]), strength, color_bgr, face_w)
    return out


def _lipstick(roi: np.ndarray, p: np.ndarray, strength: float, color_bgr, face_w: float) -> np.ndarray:
    h, w = roi.shape[:2]
    lips = _poly_mask((h, w), p[LIPS_OUTER], face_w * 0.01) * (1 - _poly_mask((h, w), p[LIPS_INNER], face_w * 0.01))
    gray = cv2.cvtColor(roi, cv2.COLOR_BGR2GRAY).astype(np.float32)[..., None] / 255.0
    tinted = np.clip(np.asarray(color_bgr, np.float32) * (0.5 + gray), 0, 255).astype(np.uint8)
    a = (lips * strength * 0.8).astype(np.float32)
    return cv2.blendLinear(tinted, roi, a, 1.0 - a)
