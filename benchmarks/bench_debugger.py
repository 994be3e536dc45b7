"""Fault-injection benchmark of the numeric debugger (``edgekit bisect``: first diverging layer and stage).

Three architectures (the bundled student at 128x128; a U-Net with transposed convolutions, random weights, 64x64;
torchvision's ResNet-18, random weights with BatchNorm statistics from natural-like images, 128x128) are each
converted once per format with ``--keep-stages`` (onnx-int8, tflite-fp32, openvino-fp32, ncnn-fp32), and
single-fault mutants are made from those artifacts, each fault put in by this script where the expected layer and
conversion step are known without the debugger:

* ``weights``: one convolution's weights broken *in the converted artifact* (the first half of its output channels
  negated: the int8 initializer of an ONNX QDQ model, or the float32 bytes of the weights found in the .tflite /
  OpenVINO .bin / ncnn .bin file in any of the layouts a runtime stores them); expected step: the last one.
* ``scale``: one convolution's per-channel weight scales x8 (first half of the channels) in the onnx-int8
  artifact; expected step: quantization.
* ``resize``: one Resize switched from linear to nearest in the artifact (ONNX attribute, OpenVINO Interpolate
  mode, ncnn Interp type; the student has four); expected step: the last one.
* ``fp16``: an fp16 overflow forced: a convolution followed by a ReLU and another convolution has its weights and
  bias scaled by ``a = 2e5 / max|w|`` and the next convolution's weights by ``1/a`` (the same function in fp32,
  ReLU being positively homogeneous; weights beyond fp16's 65504), converted to openvino-fp16, ncnn-fp16 and
  tflite-fp16 and compared with the stored reference; expected layer: the scaled convolution, expected step: fp16.
  A mutant whose artifact still agrees with its reference (a converter that kept those weights in fp32) is
  reported as not reproduced, not scored.

Every ``bisect`` runs with 2 samples, no keep-float confirmation (a remedy check, not localization) and stage
attribution from the kept stages. top-1: the first diverging layer is the faulty one, or its runtime tensor holds
the faulty one (a convolution the runtime computes together with its activation, which no tensor tells apart; the
count of those is printed); top-3: the same among the first three layers below the threshold; stage: the first
failing step is the expected one; false alarms: a first diverging layer (or a failing step) on a clean artifact;
runs: runtime runs per bisect (tapped and untapped runs, cut-out layers, each stage product's runs); wall: seconds
per bisect on this machine.

    .venv/bin/python benchmarks/bench_debugger.py [--archs student,unet,resnet18] [--formats onnx-int8,...]
        [--per-kind 2] [--no-fp16] [--quick]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STUDENT = ROOT / "models" / "portrait-seg" / "student.onnx"
RESULTS = ROOT / "benchmarks" / "results"
FORMATS = ["onnx-int8", "tflite-fp32", "openvino-fp32", "ncnn-fp32"]
FP16 = ["openvino-fp16", "ncnn-fp16", "tflite-fp16"]
ARCHS = ["student", "unet", "resnet18"]
FP16_MAX = 65504.0


# ------------------------------------------------------------------------------------------------- models


def prepare(arch: str, work: Path) -> tuple[Path, list[str], str | None, Path | None]:
    """(model path, --input-shape values, --preprocess, --calib) of one architecture."""
    if arch == "student":
        return STUDENT, ["image:1x3x128x128"], None, None
    folder = work / arch
    folder.mkdir(parents=True, exist_ok=True)
    if arch == "unet":
        from edgekit.core.ingest import export_torch
        from edgekit.zoo.testnets import build

        path = folder / "unet.onnx"
        export_torch(build("unet"), path, (1, 3, 64, 64), input_name="image", output_names=["out"])
        return path, [], "unit", None
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_int8_inputs import calib_folder, export

    path, _ = export("resnet18", folder)
    # random weights: int8 on generated data fails the classifier gate's top-1 agreement; natural-like images pass
    return path, [], "imagenet", calib_folder(work / "resnet18-calib", 128)


def convert(model: Path, target: str, out: Path, shapes, preprocess, calib=None):
    from edgekit.core.conversion import convert as do_convert

    return do_convert(model, target, out, input_shapes=shapes, preprocess=preprocess, keep_stages=True,
                      calib_samples=16, calib=calib if target.endswith("int8") else None)


def convert_ungated(model: Path, target: str, out: Path, shapes, preprocess, calib=None):
    """What ``convert --keep-stages`` writes, without the parity gate (which refuses an artifact whose fp16
    weights overflowed, so that there would be nothing to bisect): the converter's files, the stored reference and
    every stage, with a note saying so."""
    from edgekit.backends import registry
    from edgekit.backends.converter import ConversionJob
    from edgekit.core import calibration
    from edgekit.core import preprocess as preprocessing
    from edgekit.core.artifact import Artifact
    from edgekit.core.conversion import REFERENCE_FILE, SOURCE_STAGES, STAGES_DIR, _stage_list
    from edgekit.core.ingest import load_source, parse_input_shapes
    from edgekit.core.target import Target

    tgt = Target.parse(target)
    converter = registry.get(tgt.format)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-src-") as work:
        src = load_source(model, Path(work), parse_input_shapes(shapes))
        src.io = preprocessing.resolve(src.io, src.card, preprocessing.parse(preprocess))
        gate = calibration.gate_data(src.io, calib, 16, 8)
        job = ConversionJob(src, tgt, gate.calibration, {}, stages_dir=out / STAGES_DIR,
                            stage_base=len(SOURCE_STAGES))
        done = converter.convert(job, out)
        art = Artifact(path=out, target=tgt, files=done.files, io=done.io, source_io=src.io, source=src.describe(),
                       route=done.route, tools=done.tools, options=done.options,
                       notes=["written without the parity gate (bench_debugger.py)"])
        shutil.copyfile(src.onnx_path, out / REFERENCE_FILE)
        art.reference = REFERENCE_FILE
        art.stages = _stage_list(src, Path(work), out, converter, job, art)
        art.save()
    return art


# -------------------------------------------------------------------------------------------------- faults


def graph_convs(ref: Path) -> list:
    """The reference's Conv nodes on feature maps (H x W > 1) with at least 8 output channels, in graph order."""
    import onnx
    from onnx import numpy_helper

    model = onnx.shape_inference.infer_shapes(onnx.load(str(ref)))
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in [*model.graph.value_info, *model.graph.input]}
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = []
    for n in model.graph.node:
        s = shapes.get(n.input[0], [])
        if (n.op_type == "Conv" and n.input[1] in inits and len(s) == 4 and s[2] * s[3] > 1
                and inits[n.input[1]].shape[0] >= 8):
            out.append((n, inits[n.input[1]].astype(np.float32)))
    return out


def spread(items: list, k: int, offset: int = 0) -> list:
    """``k`` items spread over ``items`` (shifted by ``offset`` so that formats break different layers)."""
    if not items or k <= 0:
        return []
    idx = sorted({(int(i) + offset) % len(items) for i in np.linspace(0, len(items) - 1, k + 2)[1:-1]})
    return [items[i] for i in idx]


def _flip(a: np.ndarray, axis: int) -> np.ndarray:
    a = a.copy()
    sl = [slice(None)] * a.ndim
    sl[axis] = slice(0, max(1, a.shape[axis] // 2))
    a[tuple(sl)] *= -1
    return a


def patch_float_weights(file: Path, w: np.ndarray) -> bool:
    """Negate the first half of ``w``'s output channels where its float32 bytes are found (once) in ``file``:
    as is (OIHW), OHWI, HWIO or IHWO."""
    data = bytearray(file.read_bytes())
    for arr, axis in ((w, 0), (w.transpose(0, 2, 3, 1), 0), (w.transpose(2, 3, 1, 0), 3),
                      (w.transpose(1, 2, 3, 0), 3)):
        b = np.ascontiguousarray(arr, np.float32).tobytes()
        i = data.find(b)
        if i >= 0 and data.find(b, i + 1) < 0:
            data[i:i + len(b)] = np.ascontiguousarray(_flip(arr, axis), np.float32).tobytes()
            file.write_bytes(bytes(data))
            return True
    return False


def weights_fault(folder: Path, node, w: np.ndarray) -> bool:
    import onnx
    from onnx import numpy_helper

    d = json.loads((folder / "artifact.json").read_text())
    files = [folder / v["path"] for v in d["files"].values()]
    if d["format"] == "onnx" and d["precision"] == "int8":
        model = onnx.load(str(files[0]))
        for init in model.graph.initializer:
            if init.name == f"{node.input[1]}_quantized":
                q = numpy_helper.to_array(init)
                init.CopyFrom(numpy_helper.from_array(np.clip(_flip(q.astype(np.int16), 0), -127, 127).astype(q.dtype),
                                                      init.name))
                onnx.save(model, str(files[0]))
                return True
        return False
    return any(patch_float_weights(f, w) for f in files if f.suffix in (".tflite", ".bin", ".onnx"))


def scale_fault(folder: Path, node) -> bool:
    import onnx
    from onnx import numpy_helper

    path = folder / "model.onnx"
    model = onnx.load(str(path))
    for init in model.graph.initializer:
        if init.name == f"{node.input[1]}_scale":
            s = numpy_helper.to_array(init).copy()
            s[: max(1, s.size // 2)] *= 8
            init.CopyFrom(numpy_helper.from_array(s, init.name))
            onnx.save(model, str(path))
            return True
    return False


def resize_fault(folder: Path, node, k: int) -> bool:
    """Switch Resize ``node`` (the ``k``-th Resize of the reference) to nearest in the artifact."""
    d = json.loads((folder / "artifact.json").read_text())
    files = {r: folder / v["path"] for r, v in d["files"].items()}
    if d["format"] == "onnx":
        import onnx

        model = onnx.load(str(files["model"]))
        for n in model.graph.node:
            if n.name == node.name and n.op_type == "Resize":
                for a in n.attribute:
                    if a.name == "mode":
                        a.s = b"nearest"
                onnx.save(model, str(files["model"]))
                return True
        return False
    if d["format"] == "openvino":
        xml = files["model"].read_text()
        pat = re.compile(r'(<layer [^>]*name="' + re.escape(node.name) + r'"[^>]*type="Interpolate"[^>]*>\s*'
                         r'<data[^>]*?\smode=")([a-z_]+)(")')
        new, n = pat.subn(r"\g<1>nearest\g<3>", xml, count=1)
        if n:
            files["model"].write_text(new)
        return bool(n)
    if d["format"] == "ncnn":
        lines = files["model"].read_text().splitlines()
        interps = [i for i, ln in enumerate(lines) if ln.split()[:1] == ["Interp"]]
        if k >= len(interps) or " 0=2" not in lines[interps[k]]:
            return False
        lines[interps[k]] = lines[interps[k]].replace(" 0=2", " 0=1", 1)
        files["model"].write_text("\n".join(lines) + "\n")
        return True
    return False


def fp16_mutant(ref: Path, card: Path | None, dest: Path) -> tuple[Path, str] | None:
    """A copy of the prepared model with one Conv -> Relu -> Conv|ConvTranspose pair rescaled (see the module
    docstring); returns (model path, scaled node name)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(ref))
    inits = {i.name: i for i in model.graph.initializer}
    cons: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            cons.setdefault(i, []).append(n)
    pairs = []
    for n in model.graph.node:
        if n.op_type != "Conv" or len(n.input) < 3 or n.input[1] not in inits or n.input[2] not in inits:
            continue
        c = cons.get(n.output[0], [])
        if len(c) != 1 or c[0].op_type != "Relu":
            continue
        c2 = cons.get(c[0].output[0], [])
        if len(c2) == 1 and c2[0].op_type in ("Conv", "ConvTranspose") and c2[0].input[1] in inits:
            pairs.append((n, c2[0]))
    if not pairs:
        return None
    c1, c2 = pairs[len(pairs) // 2]
    w1 = numpy_helper.to_array(inits[c1.input[1]]).astype(np.float32)
    a = np.float32(2e5 / float(np.abs(w1).max()))
    for name, f in ((c1.input[1], a), (c1.input[2], a), (c2.input[1], 1 / a)):
        arr = numpy_helper.to_array(inits[name]).astype(np.float32) * f
        inits[name].CopyFrom(numpy_helper.from_array(arr.astype(np.float32), name))
    dest.mkdir(parents=True, exist_ok=True)
    if card is not None and card.is_file():
        shutil.copy(card, dest / "model.yaml")
    onnx.save(model, str(dest / "model.onnx"))
    return dest / "model.onnx", c1.name


def place(kind: str, folder: Path, node, extra) -> bool:
    """Put one fault of ``kind`` into the artifact copy at ``folder``; False when it cannot be placed."""
    if kind == "weights":
        return weights_fault(folder, node, extra)
    if kind == "scale":
        return scale_fault(folder, node)
    return resize_fault(folder, node, extra)


def rehash(folder: Path) -> None:
    from edgekit.core.files import sha256_file

    manifest = folder / "artifact.json"
    d = json.loads(manifest.read_text())
    for entry in [*d["files"].values(), *(f for st in d.get("stages") or [] for f in st["files"].values())]:
        entry["sha256"] = sha256_file(folder / entry["path"])
    manifest.write_text(json.dumps(d))


def reproduced(folder: Path, samples: int = 2) -> bool:
    """Whether an fp16 mutant's artifact disagrees with its stored reference at the outputs (run directly)."""
    import onnxruntime as ort

    import edgekit
    from edgekit.core import calibration
    from edgekit.core.artifact import Artifact

    io = Artifact.load(folder).source_io
    sess = edgekit.load(folder)
    ref = ort.InferenceSession(str(folder / "reference.onnx"), providers=["CPUExecutionProvider"])
    try:
        for x in calibration.samples(io, None, n=samples, seed=4242):
            y = sess.run(x)
            for out in ref.get_outputs():
                r = ref.run([out.name], x)[0]
                c = np.asarray(y[out.name], np.float64)
                if not np.all(np.isfinite(c)):
                    return True
                if np.sum((r - c) ** 2) > 1e-3 * max(float(np.sum(r.astype(np.float64) ** 2)), 1e-12):
                    return True
    finally:
        sess.close()
    return False


# ----------------------------------------------------------------------------------------------- running


def run_bisect(folder: Path, arch: str, target: str, kind: str, victim: str | None, stage: str | None) -> dict:
    from edgekit.apps.debugger import bisect

    t0 = time.perf_counter()
    b = bisect(folder, samples=2, confirm=False)
    wall = time.perf_counter() - t0
    rep = b.diff
    below = [ly.node for ly in rep.layers if ly.sqnr_db < rep.threshold_db]
    groups = [[ly.node, *ly.fused] for ly in rep.layers if ly.sqnr_db < rep.threshold_db]
    row = {"arch": arch, "target": target, "kind": kind, "victim": victim, "expected_stage": stage,
           "first": b.first.node if b.first else None, "stage": b.stage, "below": below[:5],
           "aligned": len(rep.layers), "nodes": rep.reference_nodes, "observer_ok": rep.observer["ok"],
           "runs": b.runs, "wall_s": wall, "stages": [(s.name, s.origin, s.passed) for s in b.stages.stages]}
    if victim is None:
        row["layer_alarm"] = b.first is not None
        row["stage_alarm"] = b.stage is not None
    else:
        row["top1"] = b.first is not None and victim in (b.first.node, *b.first.fused)
        row["top3"] = any(victim in g for g in groups[:3])
        row["fused"] = bool(b.first is not None and victim in b.first.fused)
        row["stage_ok"] = b.stage == stage
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--per-kind", type=int, default=2, help="weight / scale mutants per architecture and format")
    ap.add_argument("--no-fp16", action="store_true", help="skip the fp16-overflow mutants (each a conversion)")
    ap.add_argument("--fp16-targets", default=",".join(FP16))
    ap.add_argument("--quick", action="store_true", help="one mutant of each kind, student only, no TFLite")
    ap.add_argument("--out", default=str(RESULTS / "debugger.json"))
    args = ap.parse_args()
    from edgekit.errors import EdgekitError, ParityError

    archs = ["student"] if args.quick else args.archs.split(",")
    formats = [f for f in args.formats.split(",") if not (args.quick and f.startswith("tflite"))]
    per_kind = 1 if args.quick else args.per_kind
    rows, failed = [], []
    t_start = time.perf_counter()

    def record(row):
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k not in ("stages", "below")}), flush=True)

    with tempfile.TemporaryDirectory(prefix="edgekit-bench-debugger-") as tmp:
        work = Path(tmp)
        for arch in archs:
            model, shapes, pre, calib = prepare(arch, work)
            for j, target in enumerate(formats):
                gated = True
                try:
                    art = convert(model, target, work / f"{arch}-{target}", shapes, pre, calib)
                except ParityError as e:  # e.g. a random-weight classifier's int8 top-1 agreement: keep the
                    # converter's output anyway (faults are still put in it and found against its own clean run)
                    failed.append({"arch": arch, "target": target, "kind": "clean",
                                   "error": f"the gate refused it; benchmarked without the gate: {str(e)[:160]}"})
                    print(json.dumps(failed[-1]), flush=True)
                    art = convert_ungated(model, target, work / f"{arch}-{target}", shapes, pre, calib)
                    gated = False
                except EdgekitError as e:
                    failed.append({"arch": arch, "target": target, "error": str(e)[:300]})
                    print(json.dumps(failed[-1]), flush=True)
                    continue
                clean = art.path
                final_stage = art.stages[-1]["name"]
                record({**run_bisect(clean, arch, target, "clean", None, None), "gated": gated})
                convs = graph_convs(art.reference_file())
                muts = [("weights", n, w) for n, w in spread(convs, per_kind, offset=j)]
                if target == "onnx-int8":
                    muts += [("scale", n, w) for n, w in spread(convs, per_kind, offset=j + 1)]
                import onnx

                resizes = [n for n in onnx.load(str(art.reference_file())).graph.node if n.op_type == "Resize"]
                if not target.startswith("tflite"):
                    muts += [("resize", n, k) for k, n in enumerate(resizes)][: 1 if args.quick else None]
                for m, (kind, node, extra) in enumerate(muts):
                    folder = shutil.copytree(clean, work / f"{arch}-{target}-m{m}")
                    ok = place(kind, folder, node, extra)
                    if not ok:
                        failed.append({"arch": arch, "target": target, "kind": kind, "victim": node.name,
                                       "error": "the fault could not be placed in the artifact"})
                        print(json.dumps(failed[-1]), flush=True)
                        continue
                    rehash(folder)
                    stage = "quantize" if kind == "scale" else final_stage
                    record(run_bisect(folder, arch, target, kind, node.name, stage))
                    shutil.rmtree(folder)
            if args.no_fp16:
                continue
            ref_art = next((work / f"{arch}-{t}" for t in formats if (work / f"{arch}-{t}").is_dir()), None)
            if ref_art is None:
                continue
            card = Path(model).parent / "model.yaml"
            made = fp16_mutant(ref_art / "reference.onnx", card, work / f"{arch}-fp16-src")
            if made is None:
                failed.append({"arch": arch, "kind": "fp16", "error": "no Conv -> Relu -> Conv pair"})
                continue
            src, victim = made
            for target in args.fp16_targets.split(","):
                if args.quick and target.startswith("tflite"):
                    continue
                try:
                    art = convert_ungated(src, target, work / f"{arch}-fp16-{target}", shapes, pre)
                except EdgekitError as e:
                    failed.append({"arch": arch, "target": target, "kind": "fp16", "victim": victim,
                                   "error": f"conversion failed: {str(e)[:200]}"})
                    print(json.dumps(failed[-1]), flush=True)
                    continue
                if not reproduced(art.path):
                    failed.append({"arch": arch, "target": target, "kind": "fp16", "victim": victim,
                                   "error": "not reproduced: the artifact agrees with its reference"})
                    print(json.dumps(failed[-1]), flush=True)
                    continue
                record(run_bisect(art.path, arch, target, "fp16", victim, "fp16"))
    total = time.perf_counter() - t_start
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "not_scored": failed, "total_s": total}, indent=1))
    print_tables(rows, failed, total)


def _frac(rs, key) -> str:
    return f"{sum(bool(r[key]) for r in rs)}/{len(rs)}" if rs else "-"


def print_tables(rows: list[dict], failed: list[dict], total: float) -> None:
    muts = [r for r in rows if r["victim"]]
    clean = [r for r in rows if not r["victim"]]

    def table(title: str, key: str) -> None:
        print(f"\n{title}\n")
        print(f"| {key} | mutants | top-1 | top-3 | stage | false alarms: layer / stage (clean) | runs per bisect "
              "(median) | bisect s (median / max) |")
        print("|---|---|---|---|---|---|---|---|")
        for value in dict.fromkeys(r[key] for r in rows):
            ms = [r for r in muts if r[key] == value]
            cs = [r for r in clean if r[key] == value]
            alarms = (f"{sum(r['layer_alarm'] for r in cs)}/{len(cs)} / {sum(r['stage_alarm'] for r in cs)}/{len(cs)}"
                      if cs else "-")
            rs = ms + cs
            print(f"| {value} | {len(ms)} | {_frac(ms, 'top1')} | {_frac(ms, 'top3')} | {_frac(ms, 'stage_ok')} | "
                  f"{alarms} | {statistics.median(r['runs'] for r in rs):.0f} | "
                  f"{statistics.median(r['wall_s'] for r in rs):.1f} / {max(r['wall_s'] for r in rs):.1f} |")
        cs = clean
        print(f"| **all** | {len(muts)} | {_frac(muts, 'top1')} | {_frac(muts, 'top3')} | {_frac(muts, 'stage_ok')} | "
              f"{sum(r['layer_alarm'] for r in cs)}/{len(cs)} / {sum(r['stage_alarm'] for r in cs)}/{len(cs)} | "
              f"{statistics.median(r['runs'] for r in rows):.0f} | "
              f"{statistics.median(r['wall_s'] for r in rows):.1f} / {max(r['wall_s'] for r in rows):.1f} |")

    if not rows:
        print("no rows")
        return
    table("By target", "target")
    table("By fault", "kind")
    table("By architecture", "arch")
    if failed:
        print(f"\nnot scored ({len(failed)}):")
        for f in failed:
            print(f"  {f.get('arch')} {f.get('target', '')} {f.get('kind', '')} {f.get('victim', '')}: {f['error']}")
    fused = sum(bool(r.get("fused")) for r in muts)
    print(f"\ntop-1 hits where the faulty layer is fused with the activation the runtime names: {fused}")
    misses = [r for r in muts if not (r["top1"] and r["stage_ok"])]
    if misses:
        print("\nmisses:")
        for r in misses:
            print(f"  {r['arch']} {r['target']} {r['kind']} {r['victim']}: first {r['first']}, stage {r['stage']} "
                  f"(expected {r['expected_stage']}), below {r['below'][:3]}")
    print(f"\ntotal {total / 60:.1f} min")


if __name__ == "__main__":
    main()
