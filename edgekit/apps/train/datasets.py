"""Training data: real portrait datasets on disk, the synthetic compositor, and a weighted mixture.

Folder layouts read by :class:`PortraitFolder` (the ones common portrait datasets use):

* ``images/NAME.jpg`` + ``masks/NAME.png`` (binary masks), or ``image/`` + ``matte/`` / ``alpha/``
  (alpha mattes, 0-255);
* flat pairs ``NAME.jpg`` + ``NAME_mask.png`` / ``NAME_matte.png``.

Real foregrounds can also be re-composited over synthetic backgrounds (``recompose``), so users
mix real and synthetic data. Every batch gets scale/crop/flip and camera-like photometric
augmentation (colour, lighting, noise, blur, JPEG).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgekit.core.samples import synthetic
from edgekit.errors import InputError

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
PAIRS = (("images", "masks"), ("image", "matte"), ("image", "alpha"), ("images", "mattes"), ("img", "mask"))


def find_pairs(root: Path) -> list[tuple[Path, Path]]:
    """(image, mask) pairs under ``root`` in any of the supported layouts."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder not found: {root}")
    for img_dir, mask_dir in PAIRS:
        if (root / img_dir).is_dir() and (root / mask_dir).is_dir():
            masks = {p.stem: p for p in (root / mask_dir).iterdir() if p.suffix.lower() in IMAGE_EXT}
            pairs = [(p, masks[p.stem]) for p in sorted((root / img_dir).iterdir()) if p.stem in masks]
            if pairs:
                return pairs
    files = {p.stem: p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXT}
    pairs = []
    for stem, p in sorted(files.items()):
        for suffix in ("_mask", "_matte", "_alpha"):
            if stem + suffix in files:
                pairs.append((p, files[stem + suffix]))
    if not pairs:
        raise InputError(f"no image/mask pairs in {root} (expected images/ + masks/, image/ + matte/, "
                         "or NAME.jpg + NAME_mask.png)")
    return pairs


class PortraitFolder:
    """A real dataset: images with masks or alpha mattes."""

    def __init__(self, root: str | Path, recompose: float = 0.0):
        self.pairs = find_pairs(Path(root))
        self.recompose = recompose

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        img_path, mask_path = self.pairs[i]
        img = cv2.imread(str(not_reserved(img_path, "data.folders")), cv2.IMREAD_COLOR)
        mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        if img is None or mask is None:
            raise InputError(f"cannot read {img_path} / {mask_path}")
        if mask.shape != img.shape[:2]:
            mask = cv2.resize(mask, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
        return img[..., ::-1].astype(np.float32) / 255.0, mask.astype(np.float32) / 255.0

    def sample(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        img, alpha = self.load(int(rng.integers(len(self))))
        img, alpha = random_crop(rng, img, alpha, size)
        if rng.random() < self.recompose:  # the real person over a synthetic room
            bg = synthetic.background(rng, size, size)
            img = img * alpha[..., None] + bg * (1 - alpha[..., None])
        return img, alpha


class SyntheticSource:
    """The compositor, pre-generated into a pool at 1.875x the crop size (crops and rescales make more)."""

    def __init__(self, size: int, pool: int, seed: int):
        self.full = int(size * 1.875)
        self.imgs, self.masks = synthetic.dataset(pool, self.full, self.full, seed=seed, augment=False)

    def sample(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        i = int(rng.integers(len(self.imgs)))
        return random_crop(rng, self.imgs[i], self.masks[i], size)


def random_crop(rng, img: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Random scale (people at different pixel sizes), a size x size crop, and a horizontal flip."""
    h, w = mask.shape
    scale = size / min(h, w) * rng.uniform(1.0, 1.8)
    nh, nw = max(size, int(round(h * scale))), max(size, int(round(w * scale)))
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask, (nw, nh), interpolation=cv2.INTER_AREA)
    y, x = int(rng.integers(0, nh - size + 1)), int(rng.integers(0, nw - size + 1))
    img, mask = img[y : y + size, x : x + size], mask[y : y + size, x : x + size]
    if rng.random() < 0.5:
        img, mask = img[:, ::-1], mask[:, ::-1]
    return np.ascontiguousarray(img), np.ascontiguousarray(mask)


@dataclass
class Mixture:
    """Weighted sources; :meth:`batch` draws a photometrically augmented batch."""

    sources: list
    weights: list[float]

    def batch(self, rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        p = np.asarray(self.weights, np.float64) / sum(self.weights)
        imgs, masks = np.empty((n, size, size, 3), np.float32), np.empty((n, size, size), np.float32)
        for k in range(n):
            src = self.sources[int(rng.choice(len(self.sources), p=p))]
            img, mask = src.sample(rng, size)
            imgs[k], masks[k] = synthetic.augment_photometric(rng, img), mask
        return imgs, masks


#: a source keeps at most this many frames (images of a folder, every n-th frame of a video), each scaled to at
#: most this long side
MAX_FRAMES, MAX_SIDE = 2000, 512


def not_reserved(path: Path, what: str) -> Path:
    """``path`` resolved, refused when it is (or links to) one of the photos reserved for evaluation.

    Raises:
        InputError: it is.
    """
    from edgekit.core.samples.photos import cache_dir

    real, reserved = Path(path).resolve(), cache_dir().resolve()
    if real == reserved or reserved in real.parents:
        raise InputError(f"{what}: {path} is one of the photos reserved for evaluation; they are never training data")
    return real


def unlabeled_frames(path: str | Path, every: int = 5) -> list[np.ndarray]:
    """RGB float32 [0, 1] frames of a folder of images or of a video (every ``every``-th frame), long side at most
    :data:`MAX_SIDE`.

    Raises:
        InputError: nothing readable there.
    """
    path = Path(path)

    def small(bgr: np.ndarray) -> np.ndarray:
        scale = MAX_SIDE / max(bgr.shape[:2])
        if scale < 1:
            bgr = cv2.resize(bgr, (round(bgr.shape[1] * scale), round(bgr.shape[0] * scale)),
                             interpolation=cv2.INTER_AREA)
        return bgr[..., ::-1].astype(np.float32) / 255.0

    frames = []
    if path.is_dir():
        for p in sorted(path.iterdir()):
            if p.suffix.lower() in IMAGE_EXT and p.is_file() and len(frames) < MAX_FRAMES:
                img = cv2.imread(str(not_reserved(p, "data.unlabeled")), cv2.IMREAD_COLOR)
                if img is None:
                    raise InputError(f"data.unlabeled: cannot read {p}")
                frames.append(small(img))
    elif path.is_file():
        cap = cv2.VideoCapture(str(not_reserved(path, "data.unlabeled")))
        i = 0
        while len(frames) < MAX_FRAMES:
            ok, img = cap.read()
            if not ok:
                break
            if i % every == 0:
                frames.append(small(img))
            i += 1
        cap.release()
    if not frames:
        raise InputError(f"data.unlabeled: no images or video frames in {path}")
    return frames


class UnlabeledSource:
    """The user's own footage without masks: each crop is labelled by ``labeler`` (N x H x W x 3 RGB [0, 1] ->
    N x H x W probabilities: the teacher's soft masks) after scale/crop/flip and before photometric augmentation,
    so the student learns the teacher's answer on the clean crop from an augmented one."""

    def __init__(self, path: str | Path, labeler, every: int = 5):
        self.frames = unlabeled_frames(path, every)
        self.labeler = labeler

    def __len__(self) -> int:
        return len(self.frames)

    def sample(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        img = self.frames[int(rng.integers(len(self.frames)))]
        img, _ = random_crop(rng, img, np.zeros(img.shape[:2], np.float32), size)
        return img, self.labeler(img[None])[0].astype(np.float32)
