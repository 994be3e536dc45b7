"""``edgekit.convert``: ingest -> convert -> parity gate (with mixed-precision fallback) -> publish.

This module orchestrates; it never looks at which format it is converting to. Everything
format-specific lives behind the :class:`~edgekit.backends.converter.Converter` protocol.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgekit.backends import registry
from edgekit.backends.converter import ConversionJob
from edgekit.backends.onnx.session import OrtSession
from edgekit.core import calibration
from edgekit.core import preprocess as preprocessing
from edgekit.core.artifact import Artifact, staging
from edgekit.core.ingest import load_source, parse_input_shapes
from edgekit.core.parity import (
    TOLERANCES,
    ParityReport,
    check,
    require_finite_inputs,
    require_finite_reference,
    samples_needed,
)
from edgekit.core.target import Target
from edgekit.errors import InputError, ParityError

Progress = Callable[[str], None]
#: the prepared fp32 ONNX source, stored in every artifact as the reference ``validate`` compares against
REFERENCE_FILE = "reference.onnx"


def default_output(model: Any, target: Target) -> Path:
    stem = Path(str(model)).stem if isinstance(model, (str, Path)) else type(model).__name__.lower()
    return Path("out") / f"{stem.split(':')[-1]}-{target}"


def convert(model: Any, target: str, output: str | Path | None = None, *, calib: str | Path | None = None,
            input_shapes: list[str] | dict | None = None, calib_samples: int = 32, held_back: int = 8,
            options: dict | None = None, progress: Progress | None = None,
            preprocess: str | dict | None = None, confirm_preprocess: bool = False,
            keep_stages: bool = False) -> Artifact:
    """Convert ``model`` (ONNX path, PyTorch module or reference) to ``target`` and prove parity.

    ``options`` are the target backend's declared converter options (``edgekit convert --help-target T`` lists
    them). ``preprocess`` states how images become the model's input: a preset (``imagenet``, ``unit``,
    ``signed``, ``raw255``) or a dict with ``preset``, ``mean``, ``std``, ``value_range``, ``color``; it
    overrides the model card. Quantized targets refuse to guess it (see :mod:`edgekit.core.preprocess`); float
    targets record and report what they assumed. The gate runs on the calibration samples and on held-back
    samples from other families (natural-image-like fields and textures, part of the user's data).
    ``keep_stages`` keeps each conversion step's product under ``stages/`` in the artifact, listed with its sha256
    in ``artifact.json`` (``edgekit bisect`` names the step that introduced an error from them).

    Returns the published :class:`~edgekit.core.artifact.Artifact`.

    Raises:
        InputError: an unknown option or option value for the target, a quantized target without any stated
            pre-processing or calibration data, or whose first layer contradicts the stated pre-processing
            (unless ``confirm_preprocess``).
        ParityError: (writing nothing) the artifact does not compute the same thing as the reference within
            the target's tolerances, after trying to keep the most quantization-sensitive layers in float.
    """
    say = progress or (lambda _msg: None)
    stated = preprocessing.parse(preprocess)
    tgt = Target.parse(target)
    options = tgt.backend.parse_options(dict(options or {}), tgt.precision)
    converter = registry.get(tgt.format)
    converter.check_available()
    shapes = input_shapes if isinstance(input_shapes, dict) else parse_input_shapes(input_shapes)
    out = Path(output) if output else default_output(model, tgt)
    with tempfile.TemporaryDirectory(prefix="edgekit-work-") as work:
        say("loading and simplifying the model")
        src = load_source(model, Path(work), shapes)
        src.io = preprocessing.resolve(src.io, src.card, stated)
        _refuse_unknown_inputs(tgt, src.io, calib)
        say("preparing calibration and validation inputs")
        # a classifier's top-1 agreement is one yes/no per sample: hold back enough samples to mean something
        needed = samples_needed(src.io, tgt.tolerance_class)
        held_back = max(held_back, needed - calib_samples)
        gate = calibration.gate_data(src.io, calib, calib_samples, held_back)
        checks = _check_inputs(src, gate, tgt, confirm_preprocess, say)
        data, cal = gate.all, gate.calibration
        job = ConversionJob(src, tgt, cal, options)
        if keep_stages:
            job.stage_base = len(SOURCE_STAGES)
        reference = src.reference() if src.reference is not None else OrtSession.reference(src)
        ref_out = [reference.run(s) for s in data]
        clip = _TemporalClip(reference, src.io)
        with staging(out, protect=[model, calib]) as stage:
            if keep_stages:
                job.stages_dir = stage / STAGES_DIR
            artifact, report = _convert_and_check(converter, job, stage, data, ref_out, say, clip)
            artifact.parity = report.to_dict()
            if clip.skipped:
                artifact.notes.append(clip.skipped)
            artifact.parity["data"] = gate.describe
            artifact.parity["reference"] = src.reference_label
            artifact.parity["input_check"] = [c.to_dict() for c in checks]
            artifact.notes.extend([*src.notes, *_input_notes(src.io, tgt, calib, gate, checks)])
            if needed:
                floor = TOLERANCES[tgt.tolerance_class].min_agreement
                artifact.notes.append(f"classifier output: the gate compared {len(data)} samples, enough for "
                                      f"top-1 agreement on all of them to show >= {floor} at 95% confidence")
            shutil.copyfile(src.onnx_path, stage / REFERENCE_FILE)
            artifact.reference = REFERENCE_FILE
            if keep_stages:
                artifact.stages = _stage_list(src, Path(work), stage, converter, job, artifact)
            artifact.audit = _audit_at_conversion(artifact, say)
            artifact.save()
    artifact.path = out.absolute()
    say(f"wrote {out}")
    return artifact


class _TemporalClip:
    """The temporal half of the gate (:mod:`edgekit.core.temporal`) for one conversion: the generated clip and the
    reference's outputs on it, made once when the first attempt passes frame by frame."""

    def __init__(self, reference, io):
        from edgekit.core.temporal import applies

        self.reference, self.io = reference, io
        self.applies = applies(io)
        self._clip = None
        self.skipped = ""

    def check(self, candidate, precision_class: str, say: Progress):
        """The :class:`~edgekit.core.temporal.TemporalReport` of ``candidate``, or None (not video-like, or the
        candidate is a reference evaluator, about a second a frame: said in :attr:`skipped`)."""
        from edgekit.core.temporal import clip_samples, compare_temporal

        if not self.applies:
            return None
        if candidate.verified_by != "runtime":
            self.skipped = (f"no temporal check: the artifact's outputs come from {candidate.verified_by}, not its "
                            "runtime; run edgekit validate --temporal where the runtime exists")
            return None
        say("temporal check on a generated clip")
        if self._clip is None:
            samples, rgb = clip_samples(self.io)
            self._clip = samples, rgb, [self.reference.run(s) for s in samples]
        samples, rgb, ref_outs = self._clip
        return compare_temporal(ref_outs, [candidate.run(s) for s in samples], self.io, rgb, precision_class)


#: where ``convert --keep-stages`` puts intermediate products, inside the artifact
STAGES_DIR = "stages"
#: edgekit's own steps before any converter: the source as ONNX (a PyTorch export, or the ONNX file given) and
#: the prepared model (static shapes, simplified: the artifact's ``reference.onnx``)
SOURCE_STAGES = ("source", "simplify")


def _stage_list(src, work: Path, stage: Path, converter, job: ConversionJob, artifact: Artifact) -> list[dict]:
    """Every step's product, in order: the source as ONNX, the prepared reference, the converter's kept
    intermediate products (:meth:`ConversionJob.keep_stage`) and the artifact itself (the converter's last step)."""
    import onnx

    io = src.io.to_dict()
    out = []
    given = work / "exported.onnx" if src.kind == "torch" else Path(src.path) if src.kind == "onnx" else None
    note = "the PyTorch export before simplification" if src.kind == "torch" else "the ONNX model as given"
    if given is not None and given.is_file():
        try:
            external = any(t.data_location == onnx.TensorProto.EXTERNAL
                           for t in onnx.load(str(given), load_external_data=False).graph.initializer)
        except (OSError, ValueError) as e:
            external, note = True, f"not kept: {e}"
        if not external:
            folder = stage / STAGES_DIR / f"0-{SOURCE_STAGES[0]}"
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(given, folder / "model.onnx")
            out.append({"name": SOURCE_STAGES[0], "format": "onnx", "precision": "fp32", "io": io, "note": note,
                        "files": {"model": f"{STAGES_DIR}/0-{SOURCE_STAGES[0]}/model.onnx"}})
    out.append({"name": SOURCE_STAGES[1], "format": "onnx", "precision": "fp32", "io": io,
                "files": {"model": REFERENCE_FILE}, "note": "static shapes, simplified: the stored reference"})
    out += [{"name": p.name, "format": p.format, "precision": p.precision, "files": dict(p.files),
             "io": p.io.to_dict(), "note": p.note} for p in job.stages]
    names = converter.stages(job)
    out.append({"name": names[-1] if names else "convert", "format": artifact.target.format,
                "precision": artifact.target.precision, "files": dict(artifact.files), "io": artifact.io.to_dict(),
                "note": "the artifact itself"})
    return out


def _audit_at_conversion(artifact: Artifact, say: Progress) -> dict | None:
    """The artifact's execution audit on this machine's CPU, recorded in ``artifact.json`` (None, with a note,
    where the runtime cannot run or report here: Core ML off macOS)."""
    from edgekit.backends.registry import open_session
    from edgekit.core.audit import audit_artifact
    from edgekit.errors import EdgekitError

    say("auditing what each op runs as")
    try:
        session = open_session(artifact)
        try:
            audit = audit_artifact(artifact, session)
        finally:
            session.close()
    except EdgekitError as e:  # the audit reports; it never decides whether the artifact is published
        artifact.notes.append(f"no execution audit here: {e}")
        return None
    off = audit.summary()["off_fast_path"]
    if off:
        artifact.notes.append(f"audit: {sum(off.values())} of {len(audit.ops)} ops run off the fast path "
                              f"({', '.join(f'{n} {op}' for op, n in off.items())}); see edgekit audit")
    return audit.to_dict()


def _refuse_unknown_inputs(tgt: Target, io, calib) -> None:
    """A quantized target never calibrates on a guessed pre-processing or on noise for non-image inputs
    (``--calib`` images with an assumed pre-processing are judged by :func:`_check_inputs`)."""
    if not tgt.is_quantized or calib is not None:
        return
    if preprocessing.assumed_inputs(io):
        raise InputError(preprocessing.refusal(str(tgt), io))
    other = [t.name for t in io.inputs if not t.is_image]
    if other:
        raise InputError(f"{tgt} calibrates on inputs, and input(s) {', '.join(other)} are not images edgekit can "
                         "generate: pass --calib with a .npy of real inputs")


def _check_inputs(src, gate, tgt: Target, confirmed: bool, say: Progress) -> list:
    """Run the first-layer check on every image input; a mismatch refuses a quantized target unless confirmed."""
    import numpy as np

    say("checking the stated pre-processing against the model's first layer")
    model = None
    if src.kind == "onnx":
        import onnx

        try:
            model = onnx.load(str(src.path))
        except (OSError, ValueError, RuntimeError) as e:
            raise InputError(f"cannot re-read {src.path}: {e}") from e
    checks = []
    for t in src.io.inputs:
        if not t.is_image:
            continue
        x = np.concatenate([s[t.name] for s in gate.calibration])
        if model is None and src.torch_module is not None:
            checks.append(preprocessing.check_first_layer_torch(src.torch_module, t, x, gate.in_model_space))
        elif model is None:
            checks.append(preprocessing.LayerCheck(t.name, "not checked", "the source model cannot be re-read"))
        else:
            checks.append(preprocessing.check_first_layer(model, t, x, in_model_space=gate.in_model_space))
    bad = [c for c in checks if c.status == "mismatch"]
    if bad and tgt.is_quantized and not confirmed:
        c = bad[0]
        hint = f"--preprocess {c.best}" if c.best else "--mean/--std/--value-range"
        raise InputError(f"{c.line()}: state the pre-processing the model was trained on (e.g. {hint}), or pass "
                         "--confirm-preprocess to calibrate with it anyway")
    if tgt.is_quantized and not confirmed and not gate.in_model_space:
        # --calib images with nothing stating how they become tensors: go on only when the model confirms it
        for c in checks:
            if c.status != "consistent" and src.io.input(c.input).preprocessing == preprocessing.ASSUMED:
                raise InputError(f"the --calib images for input '{c.input}' would be pre-processed as assumed "
                                 f"({preprocessing.describe(src.io.input(c.input))}) and the model cannot confirm it "
                                 f"({c.status}: {c.reason}): pass {preprocessing.FLAGS}, or --confirm-preprocess")
    return checks


def _input_notes(io, tgt: Target, calib, gate, checks) -> list[str]:
    """What the artifact and the CLI say about the inputs it was calibrated and validated on."""
    notes = []
    for t in io.inputs:
        if t.preprocessing == preprocessing.ASSUMED:
            notes.append(f"assumed pre-processing for input '{t.name}': {preprocessing.describe(t)}; no model card "
                         f"or flag states it: pass {preprocessing.FLAGS} if the model expects another")
    if tgt.is_quantized and calib is None:
        notes.append(f"calibrated and validated on generated images only ({gate.describe['calibration']}; held back "
                     f"{gate.describe['held_back']}), not on real ones: pass --calib with your images for a "
                     "stronger check")
    for c in checks:
        if c.status == "mismatch":
            notes.append(f"warning: {c.line()}" + (" (confirmed by the user)" if tgt.is_quantized else ""))
    return notes


def _convert_and_check(converter, job: ConversionJob, stage: Path, data, ref_out, say: Progress,
                       clip: _TemporalClip | None = None):
    """Convert, gate (frame by frame, then over a clip for video-like models), retry with the converter's
    alternatives, then keep the most sensitive layers in float.

    Raises:
        InputError: the inputs or the source model's own outputs hold NaN/Inf (nothing is converted).
        ParityError: no attempt passed; the message says exactly what was tried and why it stopped.
    """
    require_finite_inputs(data, "the calibration/validation data (--calib, or generated)")
    require_finite_reference(ref_out)
    first_options = dict(job.options)
    artifact, report = _attempt(converter, job, stage, data, ref_out, say, clip)
    # the options of an attempt that passed every frame and failed only the temporal check: keeping layers in
    # float starts from those (another alternative, e.g. a wrong layout repair, would fail every frame)
    best = dict(job.options) if _frames_passed(report) else None
    for override in [] if report.passed else converter.alternatives(job):
        failed = report.summary()
        say(f"parity failed ({failed}); retrying with {override}")
        _clear(stage)
        job.options = {**first_options, **override}  # each alternative on its own, not on top of the last
        artifact, report = _attempt(converter, job, stage, data, ref_out, say, clip)
        artifact.notes.append(f"first attempt failed the parity gate ({failed}); retried with {override}")
        if report.passed:
            break
        if best is None and _frames_passed(report):
            best = dict(job.options)
    if report.passed or not job.target.is_quantized:
        report.raise_if_failed(str(job.target))
        return artifact, report
    if best is not None and job.options != best:
        say(f"keeping layers in float with the options that passed every frame ({best or 'default options'})")
        job.options = best
    reason = converter.keep_float_unsupported(job)
    if reason is not None and job.options != first_options:
        first = replace(job, options=dict(first_options))
        if converter.keep_float_unsupported(first) is None:  # the alternatives' route cannot; the first one can
            say(f"{reason}; keeping layers in float on the first route ({first_options or 'default options'})")
            job.options = dict(first_options)
            reason = None
    if reason is not None:
        raise ParityError(f"parity gate failed for {job.target}: " + "; ".join(report.failures)
                          + f" (no mixed-precision retry: {reason})", report=report)
    say(f"parity failed ({report.summary()}); ranking layers by quantization sensitivity")
    from edgekit.core.sensitivity import rank_layers

    ranking = [r.node for r in rank_layers(job.source.onnx_path, job.calibration)]
    if not ranking:
        raise ParityError(f"parity gate failed for {job.target}: " + "; ".join(report.failures)
                          + " (no mixed-precision retry: the model has no named weighted layer to keep in float)",
                          report=report)
    tried: list[str] = []
    for k in keep_float_steps(len(ranking)):
        job.keep_float = tuple(ranking[:k])
        say(f"retrying with the {k} most sensitive layer(s) of {len(ranking)} in float")
        _clear(stage)
        artifact, report = _attempt(converter, job, stage, data, ref_out, say, clip)
        kept = report.kept_float
        missed = [n for n in job.keep_float if n not in kept]
        tried.append(f"{k} asked, {len(kept)} kept")
        if report.passed and k == len(ranking):  # every weighted layer asked in float: no int8 layer is left
            raise ParityError(f"parity gate failed for {job.target}: it passed only with every one of the "
                              f"{len(ranking)} weighted layers asked in float, so no layer would run as "
                              f"{job.target.precision} ({', '.join(tried)}); choose a float target instead",
                              report=report)
        if report.passed:
            note = f"kept {len(kept)} layer(s) in float to pass the parity gate: {_names(kept)}"
            if missed:
                note += f" ({len(missed)} more asked that {converter.format} could not keep: {_names(missed)})"
            artifact.notes.append(note)
            return artifact, report
    missed = [n for n in job.keep_float if n not in report.kept_float]
    could_not = f"; {converter.format} could not keep {len(missed)} of them: {_names(missed)}" if missed else ""
    raise ParityError(f"parity gate failed for {job.target} with every mixed-precision retry, up to all "
                      f"{len(ranking)} ranked layers asked in float (tried: {', '.join(tried)}{could_not}): "
                      + "; ".join(report.failures), report=report)


def _frames_passed(report: ParityReport) -> bool:
    """Every output passed frame by frame (a temporal failure may remain)."""
    return not any(o.failures for o in report.outputs)


def keep_float_steps(n: int) -> list[int]:
    """How many of ``n`` ranked layers each mixed-precision retry keeps in float: 1, 2, 4, ... and finally n."""
    steps, k = [], 1
    while k < n:
        steps.append(k)
        k *= 2
    return [*steps, n] if n else []


def _names(names, limit: int = 6) -> str:
    names = list(names)
    if not names:
        return "none"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _attempt(converter, job: ConversionJob, stage: Path, data, ref_out, say: Progress,
             clip: _TemporalClip | None = None) -> tuple[Artifact, ParityReport]:
    say(f"converting to {job.target}")
    job.stages = []  # this attempt's intermediate products (convert --keep-stages)
    converted = converter.convert(job, stage)
    artifact = Artifact(path=stage, target=job.target, files=converted.files, io=converted.io,
                        source_io=job.source.io, source=job.source.describe(), route=converted.route,
                        tools=converted.tools, options={**job.options, **converted.options},
                        notes=list(converted.notes))
    say("checking parity against the reference")
    session = converter.verifier(artifact)
    try:
        report = check(None, session, data, job.target.tolerance_class, ref_outputs=ref_out)
        if report.passed and clip is not None:  # every frame passed: is it as steady as its reference?
            report.temporal = clip.check(session, job.target.tolerance_class, say)
    finally:
        session.close()
    # what the converter read back from its own output, never what was asked
    report.kept_float = [n for n in job.keep_float if n in set(converted.kept_float)]
    return artifact, report


def _clear(folder: Path) -> None:
    for p in folder.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()
