"""Real photos with people, taken from packages, **reserved for evaluation** (never for training).

* the ``face_recognition==1.3.0`` source distribution on PyPI (its test images: obama*.jpg, biden.jpg),
* scikit-image's ``astronaut`` (when scikit-image is installed),
* Debian's ``opencv-doc`` (``messi5.jpg``; installed by ``make setup`` as root).

``edgekit models fetch photos`` caches the first set. The training code never imports this module.
"""

from __future__ import annotations

import sys
import tarfile
import tempfile
from pathlib import Path

import cv2
import numpy as np

from edgekit.errors import EdgekitError
from edgekit.zoo.mediapipe import cache_dir as _mp_cache

FACE_RECOGNITION = "face_recognition==1.3.0"
OPENCV_DOC = Path("/usr/share/doc/opencv-doc/examples/data")
PORTRAITS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")


def cache_dir() -> Path:
    return _mp_cache().parent.parent / "photos"


def fetch() -> list[Path]:
    """Download the face_recognition sdist (pip, PyPI) and keep its portrait test images.

    Like :func:`edgekit.zoo.mediapipe.fetch`: extracted into a staging folder that replaces the cache folder
    in one rename, so an error, Ctrl-C or SIGTERM leaves nothing partial; pip runs with a timeout.

    Raises:
        EdgekitError: pip could not download the sdist, or it does not hold the photos.
        OutputError: the cache folder cannot be written.
    """
    from edgekit.core import subprocesses
    from edgekit.core.artifact import cache_staging

    dest = cache_dir()
    if all((dest / n).is_file() for n in PORTRAITS):
        return [dest / n for n in PORTRAITS]
    with tempfile.TemporaryDirectory(prefix="edgekit-photos-") as tmp, cache_staging(dest) as stage:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", FACE_RECOGNITION,
               "-d", tmp, "-q"]
        res = subprocesses.run(cmd, "pip download", error=EdgekitError)
        archives = list(Path(tmp).glob("face_recognition-*.tar.gz"))
        if res.returncode != 0 or not archives:
            lines = [ln.strip() for ln in (res.stderr or "").splitlines() if ln.strip()]
            why = lines[-1][-300:] if lines else "no output"
            raise EdgekitError(f"pip could not download {FACE_RECOGNITION}: {why}")
        try:
            with tarfile.open(archives[0]) as tar:
                for member in tar.getmembers():
                    name = Path(member.name).name
                    if name in PORTRAITS and "/tests/test_images/" in member.name and member.isfile():
                        (stage / name).write_bytes(tar.extractfile(member).read())
        except (tarfile.TarError, OSError) as e:
            raise EdgekitError(f"the {FACE_RECOGNITION} sdist could not be read: {e}") from e
        missing = [n for n in PORTRAITS if not (stage / n).is_file()]
        if missing:
            raise EdgekitError(f"the {FACE_RECOGNITION} sdist does not hold {', '.join(missing)}")
    return [dest / n for n in PORTRAITS]


def evaluation_photos() -> list[tuple[str, np.ndarray]]:
    """(name, RGB float32 HxWx3 in [0, 1]) of every real photo available here."""
    photos = []
    for p in [cache_dir() / n for n in PORTRAITS] + [OPENCV_DOC / "messi5.jpg"]:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR) if p.is_file() else None
        if img is not None:
            photos.append((p.name, img[..., ::-1].astype(np.float32) / 255.0))
    try:
        from skimage import data

        photos.append(("astronaut", data.astronaut().astype(np.float32) / 255.0))
    except ImportError:
        pass
    return photos


def in_frame(photo_bgr: np.ndarray, seed: int, hw: tuple[int, int] = (720, 1280)) -> tuple[np.ndarray, tuple]:
    """A camera-sized frame (uint8 BGR) holding the photo scaled to fit and centred over a generated dead-leaves
    texture (detail a blur visibly removes); returns the frame and the photo's box ``(x0, y0, w, h)``."""
    from edgekit.core.samples.natural import texture

    H, W = hw
    frame = (texture(np.random.default_rng(seed), H, W)[..., ::-1] * 255 + 0.5).astype(np.uint8)
    h, w = photo_bgr.shape[:2]
    s = min(H / h, W / w)
    nw, nh = round(w * s), round(h * s)
    x0, y0 = (W - nw) // 2, (H - nh) // 2
    frame[y0:y0 + nh, x0:x0 + nw] = cv2.resize(photo_bgr, (nw, nh), interpolation=cv2.INTER_AREA)
    return frame, (x0, y0, nw, nh)
