"""``edgekit.convert``: ingest -> convert -> parity gate (with mixed-precision fallback) -> publish.

This module orchestrates; it never looks at which format it is converting to. Everything
format-specific lives behind the :class:`~edgekit.converters.base.Converter` protocol.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit import calibration
from edgekit.artifact import Artifact, staging
from edgekit.converters import registry
from edgekit.converters.base import ConversionJob
from edgekit.errors import ParityError
from edgekit.ingest import load_source, parse_input_shapes
from edgekit.parity import ParityReport, check
from edgekit.runtimes.onnxruntime import OrtSession
from edgekit.target import Target

Progress = Callable[[str], None]
#: the prepared fp32 ONNX source, stored in every artifact as the reference ``validate`` compares against
REFERENCE_FILE = "reference.onnx"


def default_output(model: Any, target: Target) -> Path:
    stem = Path(str(model)).stem if isinstance(model, (str, Path)) else type(model).__name__.lower()
    return Path("out") / f"{stem.split(':')[-1]}-{target}"


def convert(model: Any, target: str, output: str | Path | None = None, *, calib: str | Path | None = None,
            input_shapes: list[str] | dict | None = None, calib_samples: int = 32, held_back: int = 8,
            options: dict | None = None, progress: Progress | None = None) -> Artifact:
    """Convert ``model`` (ONNX path, PyTorch module or reference) to ``target`` and prove parity.

    Returns the published :class:`~edgekit.artifact.Artifact`. Raises
    :class:`~edgekit.errors.ParityError` (and writes nothing) when the artifact does not compute
    the same thing as the reference within the target's tolerances, after trying to keep the
    most quantization-sensitive layers in float for quantized targets.
    """
    say = progress or (lambda _msg: None)
    tgt = Target.parse(target)
    converter = registry.get(tgt.format)
    converter.check_available()
    shapes = input_shapes if isinstance(input_shapes, dict) else parse_input_shapes(input_shapes)
    out = Path(output) if output else default_output(model, tgt)
    with tempfile.TemporaryDirectory(prefix="edgekit-work-") as work:
        say("loading and simplifying the model")
        src = load_source(model, Path(work), shapes)
        say("preparing calibration and validation inputs")
        data = calibration.samples(src.io, calib, n=calib_samples + held_back)
        cal, held = calibration.split(data, held_back)
        job = ConversionJob(src, tgt, cal, dict(options or {}))
        reference = OrtSession.reference(src)
        ref_out = [reference.run(s) for s in data]
        with staging(out, protect=[model, calib]) as stage:
            artifact, report = _convert_and_check(converter, job, stage, data, ref_out, say)
            artifact.parity = report.to_dict()
            shutil.copyfile(src.onnx_path, stage / REFERENCE_FILE)
            artifact.reference = REFERENCE_FILE
            artifact.save()
    artifact.path = out.absolute()
    say(f"wrote {out}")
    return artifact


def _convert_and_check(converter, job: ConversionJob, stage: Path, data, ref_out, say: Progress):
    artifact, report = _attempt(converter, job, stage, data, ref_out, say)
    for override in [] if report.passed else converter.alternatives(job):
        failed = report.summary()
        say(f"parity failed ({failed}); retrying with {override}")
        _clear(stage)
        job.options.update(override)
        artifact, report = _attempt(converter, job, stage, data, ref_out, say)
        artifact.notes.append(f"first attempt failed the parity gate ({failed}); retried with {override}")
        if report.passed:
            break
    if report.passed or not (job.target.is_quantized and converter.supports_keep_float):
        report.raise_if_failed(str(job.target))
        return artifact, report
    say(f"parity failed ({report.summary()}); ranking layers by quantization sensitivity")
    from edgekit.sensitivity import rank_layers

    ranking = [r.node for r in rank_layers(job.source.onnx_path, job.calibration)]
    k = 1
    while k <= len(ranking):
        job.keep_float = tuple(ranking[:k])
        say(f"retrying with {k} most sensitive layer(s) in float")
        _clear(stage)
        artifact, report = _attempt(converter, job, stage, data, ref_out, say)
        if report.passed:
            report.kept_float = list(job.keep_float)
            artifact.notes.append(f"kept {k} layer(s) in float to pass the parity gate: {', '.join(job.keep_float)}")
            return artifact, report
        k *= 2
    raise ParityError(f"parity gate failed for {job.target} even with {len(ranking)} layers kept in float: "
                      + "; ".join(report.failures), report=report)


def _attempt(converter, job: ConversionJob, stage: Path, data, ref_out, say: Progress) -> tuple[Artifact, ParityReport]:
    say(f"converting to {job.target}")
    converted = converter.convert(job, stage)
    artifact = Artifact(path=stage, target=job.target, files=converted.files, io=converted.io,
                        source_io=job.source.io, source=job.source.describe(), route=converted.route,
                        tools=converted.tools, options={**job.options, **converted.options},
                        notes=list(converted.notes))
    say("checking parity against the ONNX Runtime reference")
    session = converter.verifier(artifact)
    try:
        report = check(None, session, data, job.target.tolerance_class, ref_outputs=ref_out)
    finally:
        session.close()
    return artifact, report


def _clear(folder: Path) -> None:
    for p in folder.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()
