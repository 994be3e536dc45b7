"""Calibration and validation inputs: from a folder of images, from ``.npy``, or generated.

Samples are ``{input name: float32 array}`` in the source model's IO spec (layout, shape,
normalization), so every converter and the parity gate see the same data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.core.iospec import IOSpec, TensorSpec, to_layout
from edgekit.errors import InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def normalize(rgb01: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """N x H x W x C images in [0, 1] (RGB) -> a batch in the spec's layout and normalization."""
    from edgekit.core.preprocess import normalize_pixels

    x = normalize_pixels(rgb01, spec.color, spec.value_range, spec.mean, spec.std)
    return to_layout(x, "NHWC", spec.layout if spec.layout != "ANY" else "NCHW")


def image_files(folder: Path, what: str = "calibration") -> list[Path]:
    """The images in ``folder`` (sorted by name).

    Raises:
        InputError: the folder holds no image.
    """
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"{what} folder {folder} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def load_image_files(files: list[Path], spec: TensorSpec, what: str = "calibration") -> np.ndarray:
    """Read, resize and normalize image files for ``spec``; errors name the file as ``what`` data.

    Raises:
        InputError: a file cannot be read as an image or has the wrong number of channels.
    """
    import cv2

    if not spec.is_image:
        raise InputError(f"input '{spec.name}' is not an image (shape {tuple(spec.shape)}); give {what} data "
                         "as a .npy")
    h, w = spec.hw
    out = []
    for p in files:
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise InputError(f"cannot read {what} image {p}")
        channels = 1 if img.ndim == 2 else img.shape[2]
        if channels == 4 and spec.channels == 3:
            img, channels = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR), 3
        if channels != spec.channels:
            raise InputError(f"{what} image {p.name} has {channels} channel(s); "
                             f"input '{spec.name}' expects {spec.channels}")
        if channels == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA).reshape(h, w, channels)
        scale = 65535.0 if img.dtype == np.uint16 else 255.0
        out.append(img.astype(np.float32) / scale)
    return normalize(np.stack(out), spec)


def load_images(folder: Path, spec: TensorSpec, limit: int | None = None, what: str = "calibration") -> np.ndarray:
    """Read, resize and normalize every image in ``folder`` for ``spec`` (sorted by name).

    Raises:
        InputError: no images, or one cannot be read.
    """
    return load_image_files(image_files(folder, what)[:limit], spec, what)


def load_npy(path: Path, spec: TensorSpec, what: str = "calibration", exact: bool = False) -> np.ndarray:
    """A ``.npy`` batch already in the input's layout and normalization.

    With ``exact`` the array must be exactly one input (the spec's shape, or that shape without its
    batch dimension); otherwise any number of samples is accepted.

    Raises:
        InputError: unreadable, not numeric, not finite, or of the wrong shape.
    """
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"cannot read {what} file {path.name}: {str(e).splitlines()[0] if str(e) else e}") from e
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "fiub":
        kind = getattr(x, "dtype", type(x).__name__)
        raise InputError(f"{what} file {path.name} holds {kind} values; it must hold numbers")
    if x.ndim == len(spec.shape) - 1:
        x = x[None]
    want = tuple(int(d) if isinstance(d, int) else d for d in spec.shape)
    if x.ndim != len(spec.shape) or tuple(x.shape[1:]) != tuple(want[1:]):
        raise InputError(f"{what} array {path.name} has shape {tuple(x.shape)}; input '{spec.name}' expects "
                         f"{want} (samples of {tuple(want[1:])})")
    if exact and isinstance(want[0], int) and x.shape[0] != want[0]:
        raise InputError(f"{what} array {path.name} holds a batch of {x.shape[0]}; input '{spec.name}' takes a "
                         f"batch of {want[0]} (shape {want})")
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow to Inf is refused just below, in one line
        x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise InputError(f"{what} array {path.name} holds NaN or infinite values")
    return x


def generated(spec: TensorSpec, n: int, seed: int) -> np.ndarray:
    """Generated inputs: synthetic portraits for 3-channel images, Gaussian noise otherwise."""
    if spec.is_image and spec.channels == 3:
        from edgekit.core.samples.synthetic import dataset

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


def _per_sample(batches: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    count = min(len(b) for b in batches.values())
    return [{k: v[i : i + 1] for k, v in batches.items()} for i in range(count)]


def natural(spec: TensorSpec, n: int, seed: int) -> np.ndarray:
    """Natural-image-like inputs (1/f colour fields and textures) for 3-channel images, pre-processed as
    ``spec`` states; Laplace-distributed noise (another family than :func:`generated`'s) otherwise."""
    if spec.is_image and spec.channels == 3:
        from edgekit.core.samples.natural import dataset

        h, w = spec.hw
        return normalize(dataset(n, h, w, seed=seed), spec)
    rng = np.random.default_rng(seed)
    return rng.laplace(0, 1 / np.sqrt(2), (n, *[int(d) for d in spec.shape[1:]])).astype(np.float32)


@dataclass
class GateData:
    """Calibration and held-back samples, and a description of where each set came from."""

    calibration: list[dict[str, np.ndarray]]
    held_back: list[dict[str, np.ndarray]]
    describe: dict[str, str]
    #: the calibration data is a .npy already in model space (its pre-processing is the user's)
    in_model_space: bool = False

    @property
    def all(self) -> list[dict[str, np.ndarray]]:
        return self.calibration + self.held_back


def gate_data(io: IOSpec, source: str | Path | None, n_cal: int, n_held: int, seed: int = 0) -> GateData:
    """Calibration samples and held-back samples from *other* families than the calibration ones.

    Without ``source``: generated portraits (Gaussian noise for non-images) calibrate, natural-image-like
    1/f colour fields and textures (Laplace noise) are held back. With a folder of images or a ``.npy``:
    they calibrate, some are held back (a quarter, at most half the held-back set) and the rest of the
    held-back set is natural-image-like, pre-processed as the IO spec states.

    Raises:
        InputError: the calibration source is missing, unreadable or of the wrong shape.
    """
    if n_cal < 1:
        raise InputError(f"calibration needs at least 1 sample, got {n_cal}")
    if source is None:
        cal = {t.name: generated(t, n_cal, seed) for t in io.inputs}
        held = {t.name: natural(t, n_held, seed + 1000) for t in io.inputs} if n_held else {}
        images = all(t.is_image and t.channels == 3 for t in io.inputs)
        what = "generated portraits" if images else "generated inputs (portraits for images, Gaussian noise otherwise)"
        nat = "1/f colour fields + textures" if images else "natural-image-like fields / Laplace noise"
        return GateData(_per_sample(cal), _per_sample(held) if n_held else [],
                        {"calibration": f"{what} ({n_cal})", "held_back": f"{nat} ({n_held})"})
    p = Path(source)
    npy = p.suffix == ".npy" and p.is_file()
    if npy:
        batches = {t.name: load_npy(p, t)[: n_cal + n_held] for t in io.inputs}
        label = f"your .npy {p.name}"
    elif p.is_dir():
        batches = {}
        for t in io.inputs:
            files = image_files(p)
            batches[t.name] = load_image_files(files[: n_cal + n_held], t)
        label = f"your images from {p.name}/"
    elif not p.exists():
        raise InputError(f"calibration path not found: {p}")
    else:
        raise InputError(f"calibration data must be a folder of images or a .npy file, got {p}")
    samples = _per_sample(batches)
    images = all(t.is_image and t.channels == 3 for t in io.inputs)
    # generated inputs need a distribution (a pre-processing) somebody stated; without one, hold back the user's only
    generate = images and not (npy and any(t.preprocessing == "assumed" for t in io.inputs))
    own = min(len(samples) // 4, (n_held + 1) // 2 if generate else n_held) if n_held else 0
    if len(samples) - own < 1:
        own = 0
    cal, mine = samples[: len(samples) - own], samples[len(samples) - own :]
    cal = cal[:n_cal]
    extra = n_held - own if generate else 0
    nat = _per_sample({t.name: natural(t, extra, seed + 1000) for t in io.inputs}) if extra else []
    held_desc = " + ".join(x for x in (f"{label} ({own})" if own else "",
                                       f"1/f colour fields + textures ({extra})" if extra else "") if x)
    return GateData(cal, mine + nat, {"calibration": f"{label} ({len(cal)})", "held_back": held_desc or "none"},
                    in_model_space=npy)


def split(data: list, held_back: int) -> tuple[list, list]:
    """Split samples into (calibration, held back); at least one of each when possible."""
    k = min(held_back, max(len(data) - 1, 0))
    return data[: len(data) - k], data[len(data) - k :]
