"""Face detection and 468-point landmarks with MediaPipe's models, run through edgekit sessions,
plus the One Euro filter that keeps landmarks steady over time."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edgekit.zoo.mediapipe import model_path, tflite_session


def ssd_anchors(size: int = 128, strides=(8, 16, 16, 16)) -> np.ndarray:
    """Anchor centres of MediaPipe's short-range face detector (896 anchors, fixed size)."""
    anchors = []
    i = 0
    while i < len(strides):
        same = [s for s in strides[i:] if s == strides[i]]
        grid = size // strides[i]
        per_cell = 2 * len(same)
        for y in range(grid):
            for x in range(grid):
                anchors += [((x + 0.5) / grid, (y + 0.5) / grid)] * per_cell
        i += len(same)
    return np.asarray(anchors, np.float32)


@dataclass
class Face:
    box: np.ndarray        # x0, y0, x1, y1 in frame pixels
    score: float
    keypoints: np.ndarray  # 6 x 2 (eyes, nose, mouth, ears) in frame pixels


class FaceDetector:
    """MediaPipe face_detection_short_range (128x128, faces within ~2 m)."""

    def __init__(self, threads: int = 1, threshold: float = 0.5):
        self.session = tflite_session(model_path("face_detection_short_range"), (-1.0, 1.0), threads)
        self.anchors = ssd_anchors()
        self.threshold = threshold

    def __call__(self, frame_bgr: np.ndarray) -> list[Face]:
        H, W = frame_bgr.shape[:2]
        side = max(H, W)  # letterbox to a square so the model sees undistorted faces
        square = cv2.copyMakeBorder(frame_bgr, 0, side - H, 0, side - W, cv2.BORDER_CONSTANT)
        x = cv2.resize(square, (128, 128), interpolation=cv2.INTER_AREA)[..., ::-1].astype(np.float32)
        x = x / 127.5 - 1.0
        out = self.session.run({"image": x.transpose(2, 0, 1)[None].copy()})
        reg, cls = out["regressors"][0], out["classificators"][0, :, 0]
        scores = 1 / (1 + np.exp(-np.clip(cls.astype(np.float64), -100, 100)))
        keep = np.where(scores >= self.threshold)[0]
        faces = []
        for i in keep[np.argsort(-scores[keep])]:
            cx, cy = reg[i, 0] / 128 + self.anchors[i, 0], reg[i, 1] / 128 + self.anchors[i, 1]
            w, h = reg[i, 2] / 128, reg[i, 3] / 128
            box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) * side
            if any(_iou(box, f.box) > 0.3 for f in faces):
                continue
            kp = (reg[i, 4:16].reshape(6, 2) / 128 + self.anchors[i]) * side
            faces.append(Face(box, float(scores[i]), kp))
        return faces


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class FaceLandmarker:
    """MediaPipe face_landmark (192x192 crop, 468 points) on a square crop around a face."""

    def __init__(self, threads: int = 1):
        self.session = tflite_session(model_path("face_landmark"), (0.0, 1.0), threads)

    def __call__(self, frame_bgr: np.ndarray, box: np.ndarray, scale: float = 1.5) -> tuple[np.ndarray, float]:
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = max(box[2] - box[0], box[3] - box[1]) * scale
        x0, y0 = cx - side / 2, cy - side / 2
        M = np.float32([[192 / side, 0, -x0 * 192 / side], [0, 192 / side, -y0 * 192 / side]])
        crop = cv2.warpAffine(frame_bgr, M, (192, 192), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        x = crop[..., ::-1].astype(np.float32) / 255.0
        out = self.session.run({"image": x.transpose(2, 0, 1)[None].copy()})
        pts = out["conv2d_21"].reshape(468, 3)[:, :2]
        presence = float(1 / (1 + np.exp(-out["conv2d_31"].ravel()[0])))
        return pts * (side / 192) + np.array([x0, y0], np.float32), presence


class OneEuroFilter:
    """Casiez et al.'s One Euro filter on arrays: little smoothing when points move fast (no lag),
    much when they hold still (no jitter)."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0, fps: float = 30.0):
        self.min_cutoff, self.beta, self.d_cutoff, self.dt = min_cutoff, beta, d_cutoff, 1.0 / fps
        self.x = self.dx = None

    @staticmethod
    def _alpha(cutoff, dt):
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.x is None or self.x.shape != x.shape:
            self.x, self.dx = x.astype(np.float64), np.zeros_like(x, np.float64)
            return x
        dx = (x - self.x) / self.dt
        a_d = self._alpha(self.d_cutoff, self.dt)
        self.dx = a_d * dx + (1 - a_d) * self.dx
        cutoff = self.min_cutoff + self.beta * np.abs(self.dx)
        a = self._alpha(cutoff, self.dt)
        self.x = a * x + (1 - a) * self.x
        return self.x.astype(np.float32)

    def reset(self) -> None:
        self.x = self.dx = None
