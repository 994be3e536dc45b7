"""Independent checks for tests: run an artifact in its own runtime and the source model in ONNX Runtime, here.

``convert()`` already refuses an artifact that fails its parity gate, so asserting ``art.parity["passed"]`` (or
the numbers the artifact recorded about itself) after a conversion cannot fail. These helpers compute the
agreement again in the test, on inputs the gate never saw, with ONNX Runtime on the source file as the
reference. Core ML artifacts cannot run off macOS; there they run in edgekit's MIL evaluator, opened here.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Agreement:
    """Over all samples, as the gate measures: the cosine of all outputs stacked, the largest |a - b|
    (``scaled_abs``: divided by max(1, the reference's largest |value|), as the gate scales it) and the mean
    per-sample mask IoU (at 0.5)."""

    cosine: float
    max_abs: float
    scaled_abs: float
    iou: float
    samples: int


def open_artifact(art, **load_kw):
    """The artifact's own runtime (the MIL evaluator for Core ML off macOS)."""
    import edgekit

    if art.target.format == "coreml" and platform.system() != "Darwin":
        from edgekit.backends.coreml.mil_reference import MILReferenceSession

        return MILReferenceSession.open(art)
    return edgekit.load(art.path, **load_kw)


def source_outputs(source: Path, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The source ONNX model's outputs in ONNX Runtime (its own session: nothing of edgekit in between)."""
    import onnxruntime as ort

    sess = _ORT.get(str(source))
    if sess is None:
        sess = _ORT[str(source)] = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, x)))


_ORT: dict = {}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def agreement(art, source: Path, inputs: list[dict[str, np.ndarray]], **load_kw) -> Agreement:
    """Run ``art`` and ``source`` (ONNX) on each input (source layout and names) and compare every output."""
    sess = open_artifact(art, **load_kw)
    refs: dict[str, list] = {}
    gots: dict[str, list] = {}
    for x in inputs:
        ref = source_outputs(source, x)
        got = sess.run(x)
        assert set(got) == set(ref), (sorted(got), sorted(ref))
        for name, r in ref.items():
            refs.setdefault(name, []).append(r.astype(np.float64))
            gots.setdefault(name, []).append(np.asarray(got[name], np.float64).reshape(r.shape))
    if hasattr(sess, "close"):
        sess.close()
    cos, err, scaled, ious = [], [], [], []
    for name in refs:
        r, g = np.stack(refs[name]), np.stack(gots[name])
        assert np.isfinite(g).all(), f"{name}: non-finite values from {art.target}"
        cos.append(float((g.ravel() @ r.ravel()) / (np.linalg.norm(g) * np.linalg.norm(r) + 1e-30)))
        err.append(float(np.abs(g - r).max()))
        scaled.append(err[-1] / max(1.0, float(np.abs(r).max())))
        ious += [_iou(gi > 0.5, ri > 0.5) for gi, ri in zip(g, r)]
    return Agreement(min(cos), max(err), max(scaled), float(np.mean(ious)), len(inputs))


def portrait_inputs(portraits, n: int = 4, name: str = "image") -> list[dict[str, np.ndarray]]:
    """The first ``n`` held-out portraits as the student's normalized NCHW input (never seen by the gate)."""
    imgs = portraits[0][:n]
    x = ((imgs - 0.5) / 0.5).transpose(0, 3, 1, 2).astype(np.float32)
    return [{name: x[i:i + 1]} for i in range(len(x))]


def random_inputs(io, n: int = 3, seed: int = 7) -> list[dict[str, np.ndarray]]:
    """Inputs for any model: edgekit's generated samples for its spec, with a seed the gate does not use."""
    from edgekit.core import calibration

    return calibration.samples(io, None, n=n, seed=seed)


def assert_agrees(art, source: Path, inputs: list[dict[str, np.ndarray]], min_iou: float | None = None,
                  **load_kw) -> Agreement:
    """:func:`agreement`, held to the gate's own tolerance for the artifact's precision (cosine, max |a - b|)
    and to ``min_iou`` when given (mask outputs)."""
    from edgekit.core.parity import TOLERANCES

    tol = TOLERANCES[art.target.tolerance_class]
    got = agreement(art, source, inputs, **load_kw)
    assert got.cosine >= tol.min_cosine, (str(art.target), got)
    if tol.max_abs is not None:
        assert got.scaled_abs <= tol.max_abs, (str(art.target), got)
    if min_iou is not None:
        assert got.iou >= min_iou, (str(art.target), got)
    return got
