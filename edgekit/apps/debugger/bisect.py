"""``edgekit bisect``: the first layer where an artifact diverges from its reference, and, for quantized
targets, whether keeping that layer in float restores parity (a re-conversion with ``keep_float``).

The first diverging layer is the earliest aligned layer (in the reference's graph order) whose cumulative SQNR
falls below the threshold (by default the SQNR the target's tolerance class allows, see
:func:`~edgekit.apps.debugger.diff.threshold_for`) and either is wrong on its own (its isolated SQNR, fed the
reference's inputs, is below the threshold too) or stays low in the layers computed from it. Every runtime tensor
comes from one tapped run per sample, so no probing is needed.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgekit.apps.debugger.diff import DiffReport, LayerDiff, Progress, RefGraph, diff, read_graph, reference_model
from edgekit.apps.debugger.stages import StageReport


@dataclass
class BisectReport:
    diff: DiffReport
    first: LayerDiff | None
    #: the weighted node to keep in float for the remedy (the diverging node or the one computing its input)
    keep_float_node: str | None = None
    remedy: str = ""
    #: the keep-float re-conversion: ``{node, kept, passed_before, passed_after, before, after}`` or None
    confirmation: dict | None = None
    notes: list[str] = field(default_factory=list)
    #: stage attribution (None: not asked for)
    stages: StageReport | None = None
    #: runtime runs this bisect made: tapped and untapped runs, cut-out layers, and each stage product's runs (its
    #: outputs, its gate, its own tapped, untapped and cut-out runs)
    runs: int = 0

    @property
    def stage(self) -> str | None:
        """The first conversion step whose product fails the target's tolerance (None: none, or not evaluated)."""
        return self.stages.first_failing if self.stages else None

    def to_dict(self) -> dict:
        return {"artifact": self.diff.artifact, "target": self.diff.target,
                "first_diverging_node": self.first.node if self.first else None,
                "first_diverging_fused": self.first.fused if self.first else [],
                "first_diverging": asdict(self.first) if self.first else None,
                "stage": self.stage, "stages": [r.to_dict() for r in self.stages.stages] if self.stages else None,
                "runs": self.runs, "threshold_db": self.diff.threshold_db, "keep_float_node": self.keep_float_node,
                "remedy": self.remedy, "confirmation": self.confirmation, "notes": self.notes,
                "unmatched": len(self.diff.unmatched), "matched": len(self.diff.layers),
                "observer": self.diff.observer}


def bisect(artifact, reference: str | Path | None = None, data: str | Path | None = None, samples: int = 4,
           threshold_db: float | None = None, threads: int = 1, confirm: bool = True,
           progress: Progress | None = None, stages: bool = True, rebuild: bool = True) -> BisectReport:
    """Find the first diverging layer of ``artifact`` and, for quantized targets, re-convert it with that
    layer kept in float to confirm the culprit. With ``stages``, also name the first conversion step whose
    product fails the target's tolerance (:mod:`edgekit.apps.debugger.stages`: the products kept by
    ``convert --keep-stages``, else rebuilt from the reference unless ``rebuild`` is off).

    Raises:
        InputError: the artifact, its reference or the data cannot be used.
        TapsUnavailableError: the artifact's runtime cannot expose intermediate tensors.
        MissingDependencyError: the converter needed for the confirmation is not installed.
    """
    from edgekit.core.artifact import Artifact

    say = progress or (lambda _m: None)
    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    report = diff(art, reference, data, samples=samples, threads=threads, threshold_db=threshold_db, progress=say)
    first = report.first_diverging
    out = BisectReport(report, first, notes=list(report.notes), runs=report.runs)
    if stages:
        from edgekit.apps.debugger.stages import attribute

        with reference_model(art, reference) as (ref_path, io):
            out.stages = attribute(art, ref_path, io, data, samples, 4242, report.threshold_db, rebuild, say,
                                   final_diff=report)
        out.notes += out.stages.notes
        out.runs += sum(r.runs for r in out.stages.stages)
    if first is None:
        out.remedy = (f"no aligned layer falls below {report.threshold_db:.1f} dB and stays there or fails alone; "
                      f"{len(report.unmatched)} reference node(s) could not be aligned (see edgekit diff)")
        return out
    with reference_model(art, reference) as (ref_path, io):
        graph = read_graph(ref_path)
        out.keep_float_node = weighted_source(graph, first.tensor)
        if not art.target.is_quantized:
            out.remedy = (f"{first.node} ({first.op}) diverges in a {art.target.precision} artifact: not a "
                          "quantization error; check the converter's handling of this op (edgekit diff shows "
                          "its isolated error)")
            return out
        if out.keep_float_node is None:
            out.remedy = f"{first.node} ({first.op}) diverges and no weighted layer computes it to keep in float"
            return out
        out.remedy = f"keep {out.keep_float_node} in float"
        if confirm:
            say(f"re-converting {art.target} with {out.keep_float_node} kept in float")
            out.confirmation = confirm_keep_float(art, ref_path, io, out.keep_float_node, data)
    return out


def weighted_source(graph: RefGraph, tensor: str) -> str | None:
    """The weighted node (conv, matmul) computing ``tensor``: its own node, else the nearest one upstream
    through single-input nodes."""
    node = graph.by_output.get(tensor)
    while node is not None:
        if node.weight is not None:
            return node.name
        live = list(graph.live_inputs(node))
        if len(live) != 1:
            return None
        node = graph.by_output.get(live[0])
    return None


def confirm_keep_float(art, ref_path: Path, io, node: str, data) -> dict:
    """Re-convert the reference to ``art``'s target with ``node`` kept in float and run the parity gate on the
    same inputs for the artifact and the re-conversion.

    Raises:
        InputError: the reference or the data cannot be used.
        MissingDependencyError: the target's converter is not installed.
    """
    from edgekit.backends import registry
    from edgekit.backends.converter import ConversionJob
    from edgekit.backends.onnx.session import OrtSession
    from edgekit.core import calibration
    from edgekit.core.artifact import Artifact
    from edgekit.core.ingest import load_source
    from edgekit.core.parity import check

    converter = registry.get(art.target.format)
    converter.check_available()
    declared = {o.name for o in art.target.backend.options}
    options = {k: v for k, v in art.options.items() if k in declared}
    shapes = {k: tuple(v) for k, v in art.source.get("input_shapes", {}).items()}
    with tempfile.TemporaryDirectory(prefix="edgekit-bisect-") as tmp:
        src = load_source(str(ref_path), Path(tmp), shapes, simplify=False)
        src.io = io
        gate = calibration.gate_data(io, data, 32, 8)
        job = ConversionJob(src, art.target, gate.calibration, options, keep_float=(node,))
        reason = converter.keep_float_unsupported(job)
        if reason is not None:
            return {"node": node, "kept": False, "passed_before": None, "passed_after": None,
                    "note": f"cannot re-convert with {node} in float: {reason}"}
        stage = Path(tmp) / "artifact"
        stage.mkdir()
        converted = converter.convert(job, stage)
        again = Artifact(path=stage, target=art.target, files=converted.files, io=converted.io, source_io=io,
                         source=src.describe(), route=converted.route, tools=converted.tools,
                         options={**options, **converted.options})
        ref = OrtSession(ref_path, io, io)
        refs = [ref.run(s) for s in gate.all]
        ref.close()
        cls = art.target.tolerance_class
        sessions = {"before": converter.verifier(art), "after": converter.verifier(again)}
        reports = {}
        try:
            for key, sess in sessions.items():
                reports[key] = check(None, sess, gate.all, cls, ref_outputs=refs)
        finally:
            for sess in sessions.values():
                sess.close()
    kept = node in set(converted.kept_float)
    note = "" if kept else f"the {art.target.format} converter could not keep {node} in float"
    return {"node": node, "kept": kept, "passed_before": reports["before"].passed,
            "passed_after": reports["after"].passed, "before": reports["before"].summary(),
            "after": reports["after"].summary(), "samples": len(gate.all), "note": note,
            "calibration": gate.describe}
