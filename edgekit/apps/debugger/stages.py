"""Stage attribution for ``edgekit bisect``: which conversion step introduced the error.

A conversion is a chain of steps (the source as ONNX, its simplification, then the steps its converter declares
through :meth:`~edgekit.backends.converter.Converter.stages`: export or layout change, fp16, int8 calibration and
quantization, ...), the last of which writes the artifact. ``edgekit convert --keep-stages`` keeps every step's
product in the artifact (``stages/``, each file's sha256 in ``artifact.json``); for an artifact without them the
intermediate products are rebuilt from the reference by the same converter, and each row says which.

Every product runs in its own format's runtime (the converter's verifier: Core ML off macOS uses edgekit's MIL
evaluator) on the same inputs as the reference, and fails when the parity gate of the *target's* tolerance class
fails, its outputs' SQNR falls below the debugger's threshold, or ``edgekit diff``'s per-layer comparison finds a
first diverging layer in it (an error a model damps before its outputs is still an error of that step). The first
failing step is the one named.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgekit.apps.debugger.diff import ErrorStats, Progress


@dataclass
class StageResult:
    """One conversion step's product compared with the reference."""

    index: int
    name: str
    #: the format and precision the product runs as (``onnx-fp32``, ``tflite-fp32``, ...)
    runs_as: str
    #: ``kept`` (stored by ``convert --keep-stages``), ``rebuilt`` (made again from the reference now),
    #: ``reference`` (the reference itself) or ``artifact`` (the artifact's own files)
    origin: str
    passed: bool | None
    sqnr_db: float | None
    summary: str
    note: str = ""
    #: the first diverging layer of this product (``edgekit diff`` on it), or None
    first_diverging_node: str | None = None
    #: how many reference nodes were aligned with this product's tensors (None: its runtime has no taps)
    aligned: int | None = None
    #: runtime runs made to evaluate this product here (its outputs, its gate, its per-layer diff)
    runs: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class StageReport:
    stages: list[StageResult]
    #: the name of the first step whose product fails (None: none fails)
    first_failing: str | None
    notes: list[str]

    def to_dict(self) -> dict:
        return {"stage": self.first_failing, "stages": [s.to_dict() for s in self.stages], "notes": self.notes}


def attribute(art, ref_path: Path, io, data, samples: int, seed: int, threshold_db: float, rebuild: bool = True,
              progress: Progress | None = None, final_diff=None) -> StageReport:
    """Evaluate each step's product of ``art`` against the reference at ``ref_path`` (see the module docstring).
    ``final_diff``: the :class:`~edgekit.apps.debugger.diff.DiffReport` of ``art`` itself, when already made.

    Raises:
        InputError: a kept stage's file is missing, leaves the folder or was changed since it was recorded; the
            data cannot be used.
    """
    from edgekit.backends.onnx.session import OrtSession
    from edgekit.core import calibration

    say = progress or (lambda _m: None)
    inputs = calibration.samples(io, data, n=samples, seed=seed)
    ref = OrtSession(ref_path, io, io)
    try:
        refs = [ref.run(x) for x in inputs]
    finally:
        ref.close()
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgekit-stages-") as tmp:
        products = _products(art, ref_path, io, data, Path(tmp), rebuild, notes, say)
        results = []
        for k, (name, stage_art, origin, note) in enumerate(products):
            say(f"stage {k} {name}: {stage_art.target} against the reference")
            layers = final_diff if origin == "artifact" and final_diff is not None else None
            runs = 0
            if layers is None and origin != "reference":
                layers = _layer_diff(stage_art, ref_path, io, data, samples, seed, threshold_db, say)
                runs = layers.runs if layers is not None else 0
            results.append(_evaluate(k, name, stage_art, origin, note, inputs, refs, art.target.tolerance_class,
                                     threshold_db, layers))
            results[-1].runs = runs + (2 * len(inputs) if results[-1].passed is not None else 0)
    first = next((r.name for r in results if r.passed is False), None)
    return StageReport(results, first, notes)


def _products(art, ref_path: Path, io, data, tmp: Path, rebuild: bool, notes: list[str], say: Progress) -> list:
    """``[(name, Artifact to open, origin, note)]`` in chain order, the artifact itself last."""
    from edgekit.core.artifact import Artifact
    from edgekit.core.iospec import IOSpec
    from edgekit.core.target import Target

    def as_artifact(folder: Path, fmt: str, precision: str, files: dict[str, str], stage_io) -> Artifact:
        return Artifact(path=folder, target=Target.parse(f"{fmt}-{precision}"), files=files, io=stage_io,
                        source_io=art.source_io, source=art.source, options=dict(art.options))

    if art.stages:
        out = []
        for k, st in enumerate(art.stages[:-1]):
            art.stage_files(k)  # sha256 of every file, before a runtime opens it
            out.append((st["name"], as_artifact(art.path, st["format"], st["precision"], st["files"],
                                                IOSpec.from_dict(st["io"])), "kept", st.get("note", "")))
        return [*out, (art.stages[-1]["name"], art, "artifact", "")]
    from edgekit.backends import registry

    converter = registry.get(art.target.format)
    reference = as_artifact(ref_path.parent, "onnx", "fp32", {"model": ref_path.name}, io)
    out = [("reference", reference, "reference", "the fp32 reference itself")]
    final = "convert"
    if not rebuild:
        notes.append("the artifact keeps no stages (convert --keep-stages) and rebuilding them was turned off: "
                     "only the artifact itself is evaluated")
        return [*out, (final, art, "artifact", "")]
    from edgekit.backends.converter import ConversionJob
    from edgekit.core import calibration
    from edgekit.core.ingest import load_source
    from edgekit.errors import EdgekitError

    try:
        converter.check_available()
        shapes = {k: tuple(v) for k, v in art.source.get("input_shapes", {}).items()}
        (tmp / "source").mkdir()
        src = load_source(str(ref_path), tmp / "source", shapes, simplify=False)
        src.io = io
        declared = {o.name for o in art.target.backend.options}
        options = {k: v for k, v in art.options.items() if k in declared}
        gate = calibration.gate_data(io, data, 32, 8)
        job = ConversionJob(src, art.target, gate.calibration, options)
        names = converter.stages(job)
        final = names[-1] if names else final
        build = tmp / "build"
        build.mkdir()
        job.stages_dir, job.stage_base = build / "stages", 1
        say(f"rebuilding the intermediate stages of {art.target} from the reference ({', '.join(names[:-1])})")
        converter.convert(job, build)
    except EdgekitError as e:
        notes.append(f"the intermediate stages could not be rebuilt ({e}); only the artifact itself is evaluated")
        return [*out, (final, art, "artifact", "")]
    notes.append("the artifact keeps no stages (convert --keep-stages): its intermediate stages were rebuilt from "
                 "the reference by this edgekit (quantized steps calibrated on "
                 f"{'--data' if data else 'generated data'}), so they may differ from the ones that made it")
    out += [(p.name, as_artifact(build, p.format, p.precision, p.files, p.io), "rebuilt", p.note) for p in job.stages]
    return [*out, (final, art, "artifact", "")]


def _layer_diff(stage_art, ref_path: Path, io, data, samples: int, seed: int, threshold_db: float, say: Progress):
    """``edgekit diff`` of one product (None when its runtime exposes no intermediate tensors)."""
    from edgekit.apps.debugger.diff import _diff
    from edgekit.backends.session import TapsUnavailableError

    try:
        return _diff(stage_art, ref_path, io, data, samples, seed, 1, "low", 1, threshold_db, say)
    except TapsUnavailableError:
        return None


def _evaluate(k: int, name: str, stage_art, origin: str, note: str, inputs, refs, tol_class: str,
              threshold_db: float, layers=None) -> StageResult:
    from edgekit.backends import registry
    from edgekit.core.parity import check
    from edgekit.errors import EdgekitError

    runs_as = str(stage_art.target)
    try:
        sess = registry.get(stage_art.target.format).verifier(stage_art)
    except EdgekitError as e:
        return StageResult(k, name, runs_as, origin, None, None, f"not evaluated: {e}", note)
    try:
        stats = ErrorStats()
        for x, r in zip(inputs, refs):
            y = sess.run(x)
            for out, value in r.items():
                stats.add(value, y[out])
        report = check(None, sess, inputs, tol_class, ref_outputs=refs)
    except EdgekitError as e:
        return StageResult(k, name, runs_as, origin, None, None, f"not evaluated: {e}", note)
    finally:
        sess.close()
    sqnr = stats.sqnr_db if np.isfinite(stats.sqnr_db) else -200.0
    first = layers.first_diverging if layers is not None else None
    passed = report.passed and sqnr >= threshold_db and first is None
    summary = report.summary() + ("" if sqnr >= threshold_db or not report.passed else
                                  f"; outputs' SQNR {sqnr:.1f} dB below {threshold_db:.1f}")
    if first is not None:
        summary += f"; layer {first.node} diverges ({first.sqnr_db:.1f} dB)"
    elif layers is None and origin != "reference":
        note = "; ".join(filter(None, [note, "outputs only: this runtime exposes no intermediate tensors"]))
    return StageResult(k, name, runs_as, origin, passed, sqnr, summary, note, first.node if first else None,
                       len(layers.layers) if layers is not None else None)
