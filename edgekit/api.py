"""The public Python API besides :func:`edgekit.convert`: load, validate, inspect."""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgekit.backends import registry
from edgekit.backends.onnx.session import OrtSession
from edgekit.backends.registry import open_session
from edgekit.backends.session import Session
from edgekit.core import calibration
from edgekit.core.artifact import Artifact
from edgekit.core.ingest import load_source
from edgekit.core.parity import ParityReport, check
from edgekit.errors import InputError


def load(artifact: str | Path | Artifact, threads: int = 1, delegate: str = "cpu") -> Session:
    """Open a session on an artifact directory. ``session.run({name: array})`` runs it."""
    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    return open_session(art, threads=threads, delegate=delegate)


def reference_session(artifact: Artifact, reference: str | Path | None = None, work: Path | None = None):
    """ONNX Runtime fp32 session on an artifact's stored reference (or on ``reference``, given by the user).

    The stored reference is the prepared ONNX the artifact was proved against; it is opened as data after its
    sha256 is checked, so nothing recorded in ``artifact.json`` is ever imported or executed. Returns
    ``(session, io)``: the session and the IO spec its inputs follow.

    Raises:
        InputError: the artifact stores no reference and none was given, or the reference was tampered with.
    """
    if reference is not None:
        shapes = {k: tuple(v) for k, v in artifact.source.get("input_shapes", {}).items()}
        with tempfile.TemporaryDirectory(prefix="edgekit-ref-") as tmp:
            src = load_source(str(reference), Path(work or tmp), shapes)
            return OrtSession.reference(src), src.io
    if artifact.reference is None:
        raise InputError(f"artifact {artifact.path} stores no reference model (made by an older edgekit); "
                         "pass --reference MODEL to compare against one")
    ref_file = artifact.reference_file()
    return OrtSession(ref_file, artifact.source_io, artifact.source_io), artifact.source_io


def validate(artifact: str | Path | Artifact, reference: str | Path | None = None, data: str | Path | None = None,
             samples: int = 16, seed: int = 4242, raise_on_fail: bool = True) -> ParityReport:
    """Re-run the parity gate of an artifact against its stored reference (or ``reference``) on fresh inputs.

    Raises:
        ParityError: the artifact fails the gate (unless ``raise_on_fail`` is False).
        InputError: the artifact, its reference or the data cannot be used.
    """
    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    ref, io = reference_session(art, reference)
    inputs = calibration.samples(io, data, n=samples, seed=seed)
    cand = registry.get(art.target.format).verifier(art)
    report = check(ref, cand, inputs, art.target.tolerance_class)
    if raise_on_fail:
        report.raise_if_failed(f"{art.path}")
    return report


def inspect(model, input_shapes: list[str] | None = None):
    """Describe a model: IO, parameters, MACs per op type, op histogram and per-target op support."""
    from edgekit.core.inspection import inspect_model

    return inspect_model(model, input_shapes)
