"""Task quality in a sweep: how good the mask is at the camera frame, not only how faithful a conversion is.

A point's fidelity (IoU against its own model's fp32 output) says nothing when the sweep compares models: every
model agrees with itself. Task quality runs what the app runs (:class:`~edgekit.apps.profiling.latency.CameraFrame`:
the frame resized and normalized for the model, the mask upsampled to the frame) on an evaluation set and scores
the masks with IoU and boundary F (2 px at 180x320):

* ``--eval-data DIR``: a labelled folder (``images/`` + ``masks/``, ``image/`` + ``matte/``, or ``NAME.jpg`` +
  ``NAME_mask.png``);
* ``--eval-reference MODEL``: a reference model's masks on unlabeled images (``--eval-data`` without masks, or
  by default the reserved real portraits of ``edgekit models fetch photos`` placed in camera frames);
* by default: edgekit's synthetic composites, labelled as such in every report (they are not real people).

The set is written once per sweep as ``eval.npz`` (frames uint8 BGR, masks bool, what it is).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import InputError

#: frames of the evaluation set (height, width): camera-shaped, small enough to score a point in seconds
EVAL_HW = (360, 640)
#: images of a generated set
EVAL_COUNT = 16
#: largest image side read from a user's folder (bigger ones are refused, not decoded)
MAX_SIDE = 8192
#: most images an evaluation set takes from a folder (the rest are left out, with the count in its label)
MAX_IMAGES = 500


@dataclass
class EvalSet:
    frames: np.ndarray  # N x H x W x 3 uint8 BGR
    masks: np.ndarray  # N x H x W bool
    label: str

    def save(self, path: Path) -> Path:
        from edgekit.core.files import atomic_path

        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, frames=self.frames, masks=self.masks, label=np.array(self.label))
        return path

    @classmethod
    def load(cls, path: Path) -> EvalSet:
        with np.load(path, allow_pickle=False) as d:
            return cls(d["frames"], d["masks"].astype(bool), str(d["label"]))


def synthetic_set(n: int = EVAL_COUNT, hw: tuple[int, int] = EVAL_HW, seed: int = 77) -> EvalSet:
    """Generated composites with exact masks (edgekit's synthetic person over a textured background)."""
    from edgekit.core.samples import synthetic

    rng = np.random.default_rng(seed)
    frames, masks = [], []
    for _ in range(n):
        img, mask = synthetic.composite(rng, *hw)
        frames.append(np.ascontiguousarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8)[..., ::-1]))
        masks.append(mask > 0.5)
    return EvalSet(np.stack(frames), np.stack(masks), f"synthetic composites ({n} generated frames; not real people)")


#: largest evaluation file read (bytes)
MAX_BYTES = 64 * 2**20


def _read(path: Path, flags: int) -> np.ndarray:
    """One image of a user's folder, read as hostile data: a regular file of at most :data:`MAX_BYTES`, its
    header's size checked against :data:`MAX_SIDE` before anything is decoded.

    Raises:
        InputError: not a regular file, too large, unreadable or not an image.
    """
    import cv2
    from PIL import Image, UnidentifiedImageError

    try:
        if not path.is_file() or path.stat().st_size > MAX_BYTES:
            raise InputError(f"evaluation image {path.name} is not a regular file of at most {MAX_BYTES >> 20} MiB")
        with Image.open(path) as header:  # reads the header only
            w, h = header.size
        if max(w, h) > MAX_SIDE:
            raise InputError(f"evaluation image {path.name} is {w}x{h}; at most {MAX_SIDE} a side")
        data = np.fromfile(path, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise InputError(f"evaluation image {path.name} cannot be read: {e}") from e
    img = cv2.imdecode(data, flags) if data.size else None
    if img is None:
        raise InputError(f"evaluation image {path.name} cannot be decoded")
    return img


def _fit(img: np.ndarray, hw: tuple[int, int], interpolation) -> np.ndarray:
    import cv2

    return cv2.resize(img, (hw[1], hw[0]), interpolation=interpolation)


def folder_set(root: Path, hw: tuple[int, int] = EVAL_HW) -> EvalSet:
    """A labelled folder, every pair resized to ``hw`` (masks: > 50%).

    Raises:
        InputError: no pairs, an image that cannot be decoded, or one that is too large.
    """
    import cv2

    from edgekit.apps.train.datasets import find_pairs
    from edgekit.core.files import inside

    root = Path(root)
    found = find_pairs(root)
    pairs = found[:MAX_IMAGES]
    frames, masks = [], []
    for img_path, mask_path in pairs:
        for p in (img_path, mask_path):
            inside(root, p.relative_to(root).as_posix(), f"--eval-data {root}")  # no symlink out of the folder
        frames.append(_fit(_read(img_path, cv2.IMREAD_COLOR), hw, cv2.INTER_AREA))
        m = _read(mask_path, cv2.IMREAD_GRAYSCALE)
        masks.append(_fit(m, hw, cv2.INTER_NEAREST) > 127)
    kept = f"{len(pairs)} images" + (f" of {len(found)}" if len(found) > len(pairs) else "")
    return EvalSet(np.stack(frames), np.stack(masks), f"labelled folder {root.name} ({kept})")


def _unlabeled(root: Path | None, hw: tuple[int, int]) -> tuple[list[np.ndarray], str]:
    import cv2

    from edgekit.apps.train.datasets import IMAGE_EXT
    from edgekit.core.files import inside

    if root is None:
        from edgekit.core.samples.photos import evaluation_photos, in_frame

        photos = evaluation_photos()
        if not photos:
            raise InputError("--eval-reference without --eval-data uses the reserved portraits, which are not here; "
                             "run: edgekit models fetch photos")
        frames = [_fit(in_frame(img, seed=i, hw=(720, 1280))[0], hw, cv2.INTER_AREA)
                  for i, (_, img) in enumerate(photos)]
        return frames, f"{len(frames)} reserved real portraits in camera frames"
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"--eval-data {root} is not a folder")
    paths = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXT)
    if not paths:
        raise InputError(f"--eval-data {root} holds no images ({', '.join(IMAGE_EXT)})")
    frames = []
    for p in paths[:MAX_IMAGES]:
        inside(root, p.name, f"--eval-data {root}")
        frames.append(_fit(_read(p, cv2.IMREAD_COLOR), hw, cv2.INTER_AREA))
    return frames, f"{len(frames)} images of {root.name}"


def reference_set(reference: Path, root: Path | None = None, hw: tuple[int, int] = EVAL_HW) -> EvalSet:
    """Unlabeled frames labelled by a reference model run in its own framework (ONNX Runtime, or LiteRT for a
    ``.tflite``), through the same camera-frame pipeline as the points.

    Raises:
        InputError: the reference or the images cannot be used.
    """
    from edgekit.apps.profiling.latency import CameraFrame
    from edgekit.core.ingest import original_session

    frames, what = _unlabeled(root, hw)
    cam = CameraFrame(original_session(Path(reference)), hw)
    masks = [cam.mask_of(f) > threshold(cam) for f in frames]
    return EvalSet(np.stack(frames), np.stack(masks), f"agreement with {Path(reference).name} on {what}")


def build(eval_data: Path | None = None, eval_reference: Path | None = None) -> EvalSet:
    """The evaluation set a sweep scores task quality on (see the module).

    Raises:
        InputError: a folder, image or reference that cannot be used.
    """
    if eval_reference is not None:
        return reference_set(Path(eval_reference), Path(eval_data) if eval_data else None)
    if eval_data is not None:
        return folder_set(Path(eval_data))
    return synthetic_set()


def threshold(cam) -> float:
    """Where a mask output flips: 0.5 for probabilities, 0 for logits."""
    return 0.0 if cam.out.kind == "logits" else 0.5


def task_scores(session, path: Path) -> dict:
    """Mask IoU and boundary F of ``session`` on the evaluation set at ``path``, through the camera-frame
    pipeline (the model's own input size, layout and normalization)."""
    import cv2

    from edgekit.apps.profiling.latency import CameraFrame
    from edgekit.apps.train.segmentation import boundary_f
    from edgekit.core.parity import mask_iou

    ev = EvalSet.load(path)
    cam = CameraFrame(session, ev.frames.shape[1:3])
    ious, bfs = [], []
    for frame, truth in zip(ev.frames, ev.masks):
        pred = cam.mask_of(frame) > threshold(cam)
        ious.append(mask_iou(pred, truth))
        small = [cv2.resize(m.astype(np.uint8), (320, 180), interpolation=cv2.INTER_NEAREST) > 0 for m in (pred, truth)]
        bfs.append(boundary_f(*small))
    return {"task_iou": float(np.mean(ious)), "task_boundary_f": float(np.mean(bfs)), "task_on": ev.label}
