"""Calibration and validation inputs: from a folder of images, from ``.npy``, or generated.

Samples are ``{input name: float32 array}`` in the source model's IO spec (layout, shape,
normalization), so every converter and the parity gate see the same data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import InputError
from edgekit.spec import IOSpec, TensorSpec, to_layout

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def normalize(rgb01: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """N x H x W x C images in [0, 1] (RGB) -> a batch in the spec's layout and normalization."""
    x = rgb01
    if spec.color == "BGR":
        x = x[..., ::-1]
    lo, hi = spec.value_range
    x = x * (hi - lo) + lo
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return to_layout(x.astype(np.float32), "NHWC", spec.layout if spec.layout != "ANY" else "NCHW")


def load_images(folder: Path, spec: TensorSpec, limit: int | None = None) -> np.ndarray:
    """Read, resize and normalize every image in ``folder`` for ``spec`` (sorted by name)."""
    import cv2

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"calibration folder {folder} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    h, w = spec.hw
    out = []
    for p in files[:limit]:
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise InputError(f"cannot read calibration image {p}")
        channels = 1 if img.ndim == 2 else img.shape[2]
        if channels != spec.channels:
            raise InputError(f"calibration image {p.name} has {channels} channel(s); "
                             f"input '{spec.name}' expects {spec.channels}")
        if channels == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA).reshape(h, w, channels)
        scale = 65535.0 if img.dtype == np.uint16 else 255.0
        out.append(img.astype(np.float32) / scale)
    return normalize(np.stack(out), spec)


def load_npy(path: Path, spec: TensorSpec) -> np.ndarray:
    """A ``.npy`` batch already in the input's layout and normalization."""
    try:
        x = np.load(path)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read calibration file {path}: {e}") from e
    if x.ndim == len(spec.shape) - 1:
        x = x[None]
    if tuple(x.shape[1:]) != tuple(spec.shape[1:]):
        raise InputError(f"calibration array {path.name} has samples of shape {x.shape[1:]}; "
                         f"input '{spec.name}' expects {tuple(spec.shape[1:])}")
    return x.astype(np.float32)


def generated(spec: TensorSpec, n: int, seed: int) -> np.ndarray:
    """Generated inputs: synthetic portraits for 3-channel images, Gaussian noise otherwise."""
    if spec.is_image and spec.channels == 3:
        from edgekit.data.synthetic import dataset

        h, w = spec.hw
        imgs, _ = dataset(n, h, w, seed=seed)
        return normalize(imgs, spec)
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *[int(d) for d in spec.shape[1:]])).astype(np.float32)


def samples(io: IOSpec, source: str | Path | None = None, n: int = 32, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``n`` samples for every input of ``io`` (batch dimension 1 each)."""
    batches = {}
    for spec in io.inputs:
        if source is None:
            x = generated(spec, n, seed)
        else:
            p = Path(source)
            if p.is_dir():
                x = load_images(p, spec, n)
            elif p.suffix == ".npy" and p.is_file():
                x = load_npy(p, spec)[:n]
            elif not p.exists():
                raise InputError(f"calibration path not found: {p}")
            else:
                raise InputError(f"calibration data must be a folder of images or a .npy file, got {p}")
        batches[spec.name] = x
    count = min(len(b) for b in batches.values())
    return [{k: v[i : i + 1] for k, v in batches.items()} for i in range(count)]


def split(data: list, held_back: int) -> tuple[list, list]:
    """Split samples into (calibration, held back); at least one of each when possible."""
    k = min(held_back, max(len(data) - 1, 0))
    return data[: len(data) - k], data[len(data) - k :]
