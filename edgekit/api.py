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


def validate(artifact: str | Path | Artifact, reference: str | Path | None = None, data: str | Path | None = None,
             samples: int = 16, seed: int = 4242, raise_on_fail: bool = True) -> ParityReport:
    """Re-run the parity gate of an artifact against its source (or ``reference``) on fresh inputs.

    The source recorded in ``artifact.json`` must still have the recorded sha256; pass
    ``reference`` to compare against another model. Raises :class:`~edgekit.errors.ParityError`
    on failure unless ``raise_on_fail`` is False.
    """
    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    ref_path = Path(reference) if reference else Path(art.source["path"])
    shapes = {k: tuple(v) for k, v in art.source.get("input_shapes", {}).items()}
    with tempfile.TemporaryDirectory(prefix="edgekit-validate-") as work:
        src = load_source(str(ref_path), Path(work), shapes)
        if reference is None and src.sha256 != art.source["sha256"]:
            raise InputError(f"source {ref_path} changed since conversion (sha256 differs); "
                             "pass --reference to compare against it anyway")
        inputs = calibration.samples(src.io, data, n=samples, seed=seed)
        ref = OrtSession.reference(src)
        cand = registry.get(art.target.format).verifier(art)
        report = check(ref, cand, inputs, art.target.tolerance_class)
    if raise_on_fail:
        report.raise_if_failed(f"{art.path}")
    return report


def inspect(model, input_shapes: list[str] | None = None):
    """Describe a model: IO, parameters, MACs per op type, op histogram and per-target op support."""
    from edgekit.inspection import inspect_model

    return inspect_model(model, input_shapes)
