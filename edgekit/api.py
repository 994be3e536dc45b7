"""The public Python API: :func:`convert`, :func:`load`, :func:`validate`, :func:`inspect`, :func:`benchmark`.

The CLI parses its flags, calls these and prints what they return; applications (profiling, pipelines, video,
training) live in :mod:`edgekit.apps`, the conversion core in :mod:`edgekit.core`, each format in
:mod:`edgekit.backends`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgekit.backends import registry
from edgekit.backends.onnx.session import OrtSession
from edgekit.backends.registry import open_session
from edgekit.backends.session import Session
from edgekit.core import calibration
from edgekit.core.artifact import Artifact
from edgekit.core.conversion import convert
from edgekit.core.ingest import load_source
from edgekit.core.parity import ParityReport, check
from edgekit.errors import InputError, OutputError

__all__ = ["convert", "load", "validate", "inspect", "benchmark", "audit", "read_input", "reference_session"]


def load(artifact: str | Path | Artifact, threads: int = 1, delegate: str = "cpu", spin: bool | None = None) -> Session:
    """Open a session on an artifact directory. ``session.run({name: array})`` runs it.

    ``spin``: whether the runtime's worker threads busy-wait between runs (None: the runtime's default, off;
    ``session.run_options()`` says what was applied).

    Raises:
        InputError: not an artifact, or one whose ``artifact.json``, paths or file hashes do not check out.
        DeviceError: the delegate cannot run here.
        MissingDependencyError: the runtime's package is not installed (the message names the extra).
    """
    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    return open_session(art, threads=threads, delegate=delegate, spin=spin)


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
             samples: int = 16, seed: int = 4242, raise_on_fail: bool = True, temporal: bool = False) -> ParityReport:
    """Re-run the parity gate of an artifact against its stored reference (or ``reference``) on fresh inputs
    (``samples`` of them; at least as many as a classifier output needs, see
    :func:`~edgekit.core.parity.samples_needed`); with ``temporal``, also a generated clip checked for flicker
    (:mod:`edgekit.core.temporal`).

    Raises:
        ParityError: the artifact fails the gate (unless ``raise_on_fail`` is False).
        InputError: the artifact, its reference or the data cannot be used.
    """
    from edgekit.core.parity import samples_needed

    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    ref, io = reference_session(art, reference)
    samples = max(samples, samples_needed(io, art.target.tolerance_class))  # a classifier: one yes/no per sample
    inputs = calibration.samples(io, data, n=samples, seed=seed)
    cand = registry.get(art.target.format).verifier(art)
    report = check(ref, cand, inputs, art.target.tolerance_class)
    if temporal:
        from edgekit.core.temporal import applies, check_temporal

        if not applies(io):
            raise InputError(f"{art.path}: --temporal needs a video-like model (one image input, a mask or image "
                             "output)")
        report.temporal = check_temporal(ref, cand, io, art.target.tolerance_class, seed=seed)
    if raise_on_fail:
        report.raise_if_failed(f"{art.path}")
    return report


def inspect(model, input_shapes: list[str] | None = None):
    """Describe a model: IO, parameters, MACs per op type, op histogram and per-target op support.

    Raises:
        InputError: the model cannot be read.
    """
    from edgekit.core.inspection import inspect_model

    return inspect_model(model, input_shapes)


def audit(artifact: str | Path | Artifact, threads: int = 1, delegate: str = "cpu"):
    """What each op of an artifact really runs as on ``delegate`` here, against what its target intends
    (:class:`~edgekit.core.audit.Audit`; ``.require(("fast",))`` turns deviations into an error).

    Raises:
        AuditError: the runtime cannot report what it runs.
        InputError, DeviceError: as :func:`load`.
    """
    from edgekit.core.audit import audit_artifact

    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    sess = load(art, threads=threads, delegate=delegate)
    try:
        return audit_artifact(art, sess)
    finally:
        sess.close()


def read_input(path: Path | None, io) -> dict:
    """One input for a model with spec ``io``: a ``.npy`` of exactly the input's shape (batch dimension optional),
    an image file (pre-processed as the spec says), or, with ``path`` None, a generated sample.

    Raises:
        InputError: several inputs, a missing or unreadable file, or a shape that does not fit.
    """
    if path is None:
        return calibration.samples(io, None, n=1, seed=7)[0]
    path = Path(path)
    if len(io.inputs) != 1:
        raise InputError("--input feeds single-input models; this one has several")
    spec = io.inputs[0]
    if not path.exists():
        raise InputError(f"input file not found: {path}")
    if not path.is_file():
        raise InputError(f"input {path} is not a file (give a .npy or an image)")
    if path.suffix.lower() == ".npy":
        return {spec.name: calibration.load_npy(path, spec, what="input", exact=True)}
    if path.suffix.lower() not in calibration.IMAGE_SUFFIXES:
        raise InputError(f"input {path.name}: expected a .npy or an image "
                         f"({', '.join(sorted(calibration.IMAGE_SUFFIXES))})")
    return {spec.name: calibration.load_image_files([path], spec, what="input")}


def _npz_target(save: Path) -> Path:
    if save.suffix != ".npz":
        save = save.with_name(save.name + ".npz")  # what numpy would have written
    if not save.parent.is_dir():
        raise OutputError(f"cannot save outputs to {save}: folder {save.parent} does not exist")
    if save.is_dir():
        raise OutputError(f"cannot save outputs to {save}: it is a folder")
    return save


def benchmark(artifact: str | Path | Artifact, input: Path | None = None, threads: int = 1, delegate: str = "cpu",
              runs: int = 50, placement: bool = False, save: Path | None = None, spin: bool | None = None,
              under_load: bool = False, frame: tuple[int, int] | None = None, audit: bool = False,
              sustained: float | None = None) -> dict:
    """Run an artifact on one input (:func:`read_input`) and time it: ``{"artifact", "threads", "delegate",
    "latency" (p50/p90/...), "outputs" (shape/min/max/mean per output), "placement" (when asked)}``; with
    ``save``, the outputs are written to that ``.npz`` (atomically; its folder must exist); with ``audit``, the
    execution audit of the session (``"audit"``). ``spin`` is passed to :func:`load`; the thread settings applied
    are in ``"run_options"``. With ``under_load`` the runs are also timed under the profiler's default background
    load, interleaved with the quiet ones (``"latency_under_load"``, ``"load"``). With ``frame`` (height, width) a
    camera frame of that size is also timed end to end, per stage (``"frame"``: resize, colour, normalize, model,
    upsample; see :func:`edgekit.apps.profiling.latency.measure_frame`), and with ``under_load`` the whole frame
    quiet and loaded, interleaved (``"frame"["under_load"]``). With ``sustained`` (seconds) the model
    (or, with ``frame``, the whole frame) also runs back to back that long, p50/p90 per 5 s window and their
    drift (``"sustained"``).

    Raises:
        InputError: bad threads/runs, the artifact or the input cannot be used.
        OutputError: ``save`` cannot be written.
        DeviceError: the delegate cannot run here.
    """
    import io as iolib

    import numpy as np

    from edgekit.apps.profiling.latency import measure
    from edgekit.backends.session import check_threads
    from edgekit.core.files import write_atomic

    check_threads(threads)
    if runs < 1:
        raise InputError(f"--runs must be at least 1, got {runs}")
    save = _npz_target(Path(save)) if save is not None else None
    sess = load(artifact, threads=threads, delegate=delegate, spin=spin)
    inputs = read_input(input, sess.io)
    outputs = sess.run(inputs)
    loaded = level = None
    camera = frame_note = None
    if frame is not None:  # a model without an image in and a mask out has no camera frame to time: said so
        from edgekit.apps.profiling.latency import CameraFrame

        try:
            camera = CameraFrame(sess, tuple(frame))
        except InputError as e:
            frame_note = str(e)
    if under_load:  # quiet and under the profiler's default load, interleaved (edgekit.apps.profiling.load)
        from edgekit.apps.profiling.latency import measure_contended
        from edgekit.apps.profiling.load import BackgroundLoad, default_level, usable_cpus

        level = default_level(usable_cpus(), threads)
        with BackgroundLoad(level) as background:
            lat, loaded = measure_contended(sess, inputs, background, runs=runs)
            if frame is not None and frame_note is None:  # the whole frame too, quiet and loaded interleaved
                from edgekit.apps.profiling.latency import measure_step_contended

                whole_quiet, whole_loaded = measure_step_contended(camera.run, background, runs=runs)
    else:
        lat = measure(sess, inputs, runs=runs)
    if save:
        buf = iolib.BytesIO()
        np.savez(buf, **outputs)
        try:
            write_atomic(save, buf.getvalue())
        except OSError as e:
            raise OutputError(f"cannot save outputs to {save}: {e.strerror or e}") from e
    result = {"artifact": str(getattr(artifact, "path", artifact)), "threads": threads, "delegate": delegate,
              "latency": lat.to_dict(), "run_options": sess.run_options(),
              **({"latency_under_load": loaded.to_dict(), "load": level.to_dict()} if loaded else {}),
              "outputs": {k: {"shape": list(v.shape), "min": float(v.min()), "max": float(v.max()),
                              "mean": float(v.mean())} for k, v in outputs.items()}}
    if frame is not None and frame_note is not None:
        result["frame"], result["frame_note"] = None, frame_note
    elif frame is not None:
        from edgekit.apps.profiling.latency import measure_frame

        result["frame"] = measure_frame(sess, tuple(frame), runs=runs).to_dict()
        if loaded:
            result["frame"]["under_load"] = {"quiet": whole_quiet.to_dict(), "loaded": whole_loaded.to_dict()}
    if sustained is not None:
        from edgekit.apps.profiling.latency import measure_sustained

        step = camera.run if camera is not None else (lambda: sess.run(inputs))
        result["sustained"] = {"what": "frame" if camera is not None else "model",
                               **measure_sustained(step, float(sustained), min(5.0, float(sustained))).to_dict()}
    if placement:
        result["placement"] = sess.placement().to_dict()
    if audit:
        from edgekit.core.audit import audit_artifact

        art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
        result["audit"] = audit_artifact(art, sess).to_dict()
    return result
