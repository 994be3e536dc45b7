"""The public Python API besides :func:`edgekit.convert`: load, validate, inspect."""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgekit import calibration
from edgekit.artifact import Artifact
from edgekit.converters import registry
from edgekit.errors import InputError
from edgekit.ingest import load_source
from edgekit.parity import ParityReport, check
from edgekit.runtimes.base import Session
from edgekit.runtimes.onnxruntime import OrtSession
from edgekit.runtimes.registry import open_session


def load(artifact: str | Path | Artifact, threads: int = 1, delegate: str = "cpu") -> Session:
    """Open a session on an artifact directory. ``session.run({name: array})`` runs it."""
    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    return open_session(art, threads=threads, delegate=delegate)


def reference_session(artifact: Artifact, reference: str | Path | None = None, work: Path | None = None):
    """ONNX Runtime fp32 session on an artifact's source (or ``reference``), at the recorded input shapes.

    Returns ``(session, source)``; the prepared model is loaded into memory, so ``work`` may go away after.
    """
    ref_path = Path(reference) if reference else Path(artifact.source["path"])
    shapes = {k: tuple(v) for k, v in artifact.source.get("input_shapes", {}).items()}
    with tempfile.TemporaryDirectory(prefix="edgekit-ref-") as tmp:
        src = load_source(str(ref_path), Path(work or tmp), shapes)
        return OrtSession.reference(src), src


def validate(artifact: str | Path | Artifact, reference: str | Path | None = None, data: str | Path | None = None,
             samples: int = 16, seed: int = 4242, raise_on_fail: bool = True) -> ParityReport:
    """Re-run the parity gate of an artifact against its source (or ``reference``) on fresh inputs.

    The source recorded in ``artifact.json`` must still have the recorded sha256; pass
    ``reference`` to compare against another model. Raises :class:`~edgekit.errors.ParityError`
    on failure unless ``raise_on_fail`` is False.
    """
    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    ref, src = reference_session(art, reference)
    if reference is None and src.sha256 != art.source["sha256"]:
        raise InputError(f"source {src.path} changed since conversion (sha256 differs); "
                         "pass --reference to compare against it anyway")
    inputs = calibration.samples(src.io, data, n=samples, seed=seed)
    cand = registry.get(art.target.format).verifier(art)
    report = check(ref, cand, inputs, art.target.tolerance_class)
    if raise_on_fail:
        report.raise_if_failed(f"{art.path}")
    return report


def inspect(model, input_shapes: list[str] | None = None):
    """Describe a model: IO, parameters, MACs per op type, op histogram and per-target op support."""
    from edgekit.inspection import inspect_model

    return inspect_model(model, input_shapes)
