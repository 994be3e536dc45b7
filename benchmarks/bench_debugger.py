"""Fault-injection benchmark of the numeric debugger (``edgekit diff`` / ``edgekit bisect``).

Each mutant is the bundled student with one convolution's weights broken (the first half of its output
channels negated), converted to a target; ``diff`` then compares the artifact against the *original* student
(``--reference``), so the faulty layer is known independently of the debugger's alignment. Mutated
convolutions are spread evenly over the convolutions that work on feature maps (squeeze-excitation convolutions
on 1x1 pooled maps are left out: their error is damped by the gate, and may rightly not diverge). Clean artifacts
(no fault) measure false alarms.

Reported per target: top-1 (the first diverging layer is the mutated one), top-3 (the mutated one is among
the first three layers below the threshold), false alarms on the clean artifact, alignment coverage, and the
wall time of one ``diff`` (2 samples; isolated errors of the layers near or below the threshold) on this machine.

    .venv/bin/python benchmarks/bench_debugger.py [--mutants 8] [--targets onnx-fp32,openvino-fp32,...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STUDENT = ROOT / "models" / "portrait-seg" / "student.onnx"
RESULTS = ROOT / "benchmarks" / "results"
TARGETS = ["onnx-fp32", "onnx-int8", "openvino-fp32", "ncnn-fp32", "tflite-fp32"]
SHAPE = "image:1x3x128x128"


def feature_map_convs(model_path: Path) -> list[str]:
    """Names of the Conv nodes whose input is a feature map (H x W > 1), in graph order."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(model_path)))
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in [*model.graph.value_info, *model.graph.input]}
    inits = {i.name for i in model.graph.initializer}
    out = []
    for n in model.graph.node:
        s = shapes.get(n.input[0], [])
        if n.op_type == "Conv" and n.input[1] in inits and len(s) == 4 and s[2] * s[3] > 1:
            out.append(n.name)
    return out


def mutant(prepared: Path, node_name: str, dest: Path) -> Path:
    """A copy of the prepared student with ``node_name``'s weights broken."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(prepared))
    node = next(n for n in model.graph.node if n.name == node_name)
    for init in model.graph.initializer:
        if init.name == node.input[1]:
            w = numpy_helper.to_array(init).copy()
            w[: max(1, w.shape[0] // 2)] *= -1
            init.CopyFrom(numpy_helper.from_array(w, init.name))
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "model.yaml").write_text((STUDENT.parent / "model.yaml").read_text())
    onnx.save(model, str(dest / "student.onnx"))
    return dest / "student.onnx"


def run_one(model: Path, target: str, out: Path, reference: Path, victim: str | None) -> dict:
    from edgekit.apps.debugger import diff
    from edgekit.core.conversion import convert
    from edgekit.errors import EdgekitError

    try:
        art = convert(model, target, out, input_shapes=[SHAPE])
    except EdgekitError as e:  # a quantized conversion of a broken model may fail its own gate: not a debugger case
        return {"target": target, "victim": victim, "error": str(e)[:200]}
    t0 = time.perf_counter()
    report = diff(art.path, reference=reference, samples=2)
    wall = time.perf_counter() - t0
    first = report.first_diverging
    below = [ly.node for ly in report.layers if ly.sqnr_db < report.threshold_db]
    return {"target": target, "victim": victim, "first": first.node if first else None,
            "top1": (first is not None and first.node == victim) if victim else first is None,
            "top3": victim in below[:3] if victim else None, "aligned": len(report.layers),
            "nodes": report.reference_nodes, "observer_ok": report.observer["ok"], "diff_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mutants", type=int, default=8, help="mutated convolutions per target")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--tflite-mutants", type=int, default=3, help="fewer for TFLite (onnx2tf takes ~80 s each)")
    ap.add_argument("--int8-mutants", type=int, default=0, help="mutants for int8 targets (a broken model's int8 "
                    "conversion often fails its own gate after every mixed-precision retry, minutes each)")
    args = ap.parse_args()
    from edgekit.core.ingest import load_source, parse_input_shapes

    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-debugger-") as tmp:
        work = Path(tmp)
        (work / "prepared").mkdir()
        src = load_source(str(STUDENT), work / "prepared", parse_input_shapes([SHAPE]))
        convs = feature_map_convs(src.onnx_path)
        for target in args.targets.split(","):
            k = (args.tflite_mutants if target.startswith("tflite") else
                 args.int8_mutants if target.endswith("int8") else args.mutants)
            picks = [convs[int(i)] for i in np.linspace(0, len(convs) - 1, k)] if k else []
            rows.append(run_one(STUDENT, target, work / f"{target}-clean", STUDENT, None))
            print(json.dumps(rows[-1]), flush=True)
            for j, victim in enumerate(picks):
                model = mutant(src.onnx_path, victim, work / f"m{j}")
                rows.append(run_one(model, target, work / f"{target}-m{j}", STUDENT, victim))
                print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "debugger.json").write_text(json.dumps(rows, indent=1))
    print("\n| target | mutants | top-1 | top-3 | false alarms (clean) | aligned nodes | diff s (median) |")
    print("|---|---|---|---|---|---|---|")
    for target in dict.fromkeys(r["target"] for r in rows):
        failed = sum("error" in r for r in rows if r["target"] == target)
        rs = [r for r in rows if r["target"] == target and "error" not in r]
        muts = [r for r in rs if r["victim"]]
        clean = [r for r in rs if not r["victim"]]
        top1 = sum(r["top1"] for r in muts)
        top3 = sum(bool(r["top3"]) for r in muts)
        alarms = sum(not r["top1"] for r in clean)
        skipped = f" ({failed} not converted)" if failed else ""
        aligned = f"{clean[0]['aligned']}/{clean[0]['nodes']}" if clean else "-"
        print(f"| {target} | {len(muts)}{skipped} | {top1}/{len(muts)} | {top3}/{len(muts)} | {alarms}/{len(clean)} | "
              f"{aligned} | {statistics.median(r['diff_s'] for r in rs):.1f} |")


if __name__ == "__main__":
    main()
