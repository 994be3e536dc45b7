"""int8 must know its inputs (issue 22 "Measure"): torchvision models that expect ImageNet-normalized input,
converted to every int8 target the way users do, then checked *independently* of edgekit's gate.

Models: ResNet-18, LR-ASPP MobileNetV3-Large (2 classes), DeepLabV3 MobileNetV3-Large (2 classes). Weights
are random (no downloads here) but BatchNorm statistics are made realistic by forward passes in train mode on
ImageNet-normalized natural-image-like inputs (1/f colour fields and textures), so activations have the
ranges a trained model's would. Each is exported to ONNX with a model card that names its output kind only
(nothing states the input pre-processing), then converted with the CLI in four modes:

* ``none``: nothing stated (must be refused: int8 never calibrates on a guessed pre-processing);
* ``preset``: ``--preprocess imagenet`` (generated calibration images);
* ``calib``: ``--calib`` a folder of natural-image-like PNGs + ``--preprocess imagenet``;
* ``calib-only``: ``--calib`` the same folder and nothing else (the exporter folded the batch norms, so the
  first-layer check cannot confirm [0, 1]: must be refused).

Every published artifact and the fp32 model then run on fresh natural-image-like inputs that the gate never
saw (149 for the classifier, whose check is one yes/no per input; 16 for the segmenters), ImageNet-normalized:
top-1 agreement (classifier) or mean class IoU of the argmax masks (segmenters). The table goes to stdout and
benchmarks/results/int8_inputs.md.

    nice .venv/bin/python benchmarks/bench_int8_inputs.py [--targets onnx-int8,openvino-int8,ncnn-int8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "int8_inputs.md"
#: model -> input size (small, so that the whole table runs in minutes on a laptop CPU)
MODELS = {"resnet18": 128, "lraspp_mobilenet_v3_large": 128, "deeplabv3_mobilenet_v3_large": 128}
CALIB_SAMPLES = 16
MODES = ("none", "preset", "calib", "calib-only")
FRESH = 16
#: a classifier's check is one yes/no per input: as many fresh inputs as the gate needs (parity.samples_needed)
FRESH_CLASSIFIER = 149


def build(name: str):
    """Random-init torchvision model with BatchNorm statistics from ImageNet-normalized natural-like images."""
    import torch
    import torchvision

    from edgekit.core.calibration import normalize
    from edgekit.core.iospec import TensorSpec
    from edgekit.core.samples.natural import dataset

    torch.manual_seed(0)
    if name == "resnet18":
        model = torchvision.models.resnet18(weights=None)
    else:
        seg = getattr(torchvision.models.segmentation, name)(num_classes=2, weights=None, weights_backbone=None)

        class Out(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, x):
                return self.m(x)["out"]

        model = Out(seg)
    size = MODELS[name]
    spec = TensorSpec("image", (1, 3, size, size), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the passes below
    model.train()
    with torch.no_grad():
        for k in range(4):
            model(torch.from_numpy(normalize(dataset(8, size, size, seed=100 + k), spec)))
    return model.eval(), spec


def export(name: str, folder: Path):
    from edgekit.core.ingest import export_torch

    model, spec = build(name)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.onnx"
    export_torch(model, path, spec.shape, input_name="image", output_names=["out"])
    (folder / "model.yaml").write_text(f"name: {name}\noutputs:\n  - name: out\n    kind: logits\n")
    return path, spec


def calib_folder(folder: Path, size: int) -> Path:
    import cv2

    from edgekit.core.samples.natural import dataset

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(dataset(40, size, size, seed=777)):
        cv2.imwrite(str(folder / f"{i:03d}.png"), (img[..., ::-1] * 255).round().astype(np.uint8))
    return folder


def independent(name: str, onnx_path: Path, artifact: Path, spec) -> float:
    """Top-1 agreement (classifier) or mean class IoU of argmax masks vs fp32, on inputs the gate never saw."""
    import onnxruntime as ort

    import edgekit
    from edgekit.core.calibration import normalize
    from edgekit.core.parity import class_agreement
    from edgekit.core.samples.natural import dataset

    n = FRESH_CLASSIFIER if name == "resnet18" else FRESH
    x = normalize(dataset(n, *spec.hw, seed=4242), spec)
    ref = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    sess = edgekit.load(artifact)
    scores = []
    try:
        for i in range(n):
            r = ref.run(None, {"image": x[i : i + 1]})[0].argmax(axis=1)
            c = sess.run({"image": x[i : i + 1]})["out"].argmax(axis=1)
            scores.append(float(np.all(r == c)) if name == "resnet18" else class_agreement(r, c)[1])
    finally:
        sess.close()
    return float(np.mean(scores))


def convert(onnx_path: Path, target: str, mode: str, out: Path, photos: Path) -> tuple[int, str, dict | None]:
    args = [sys.executable, "-m", "edgekit.cli", "convert", str(onnx_path), "-t", target, "-o", str(out),
            "--calib-samples", str(CALIB_SAMPLES)]
    if mode in ("preset", "calib"):
        args += ["--preprocess", "imagenet"]
    if mode in ("calib", "calib-only"):
        args += ["--calib", str(photos)]
    try:
        res = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        return 124, "conversion did not finish in 30 min on this machine (not measured)", None
    if res.returncode != 0:
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        return res.returncode, (lines[-1] if lines else "?").removeprefix("edgekit: error: "), None
    return 0, "", json.loads((out / "artifact.json").read_text())  # stdout may carry a converter's log lines


def short(why: str) -> str:
    """The reason of a refusal, shortened for the table (a failed gate: the metrics that failed)."""
    if "parity gate failed" in why and "): " in why:
        return "gate failed: " + why.rsplit("): ", 1)[1]
    return why if len(why) <= 160 else why[:157] + "..."


def float_kept(art: dict) -> str:
    """What of the artifact is not int8: layers kept in float, or a retry with another quantization mode."""
    parts = []
    if art["parity"].get("kept_float"):
        parts.append(f"{len(art['parity']['kept_float'])} layer(s) kept in float")
    parts += [n.split("; ")[-1] for n in art.get("notes", []) if "retried with" in n]
    return ", ".join(parts) or "all int8"


def gate_metric(parity: dict) -> str:
    o = parity["outputs"][0]
    if o.get("agreement") is not None:
        return f"agreement {o['agreement']:.3f}, IoU {o['iou']:.3f}, cos {o['cosine']:.3f}"
    if o.get("iou") is not None:
        return f"IoU {o['iou']:.3f}, cos {o['cosine']:.3f}"
    return f"cos {o['cosine']:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default="onnx-int8,openvino-int8,ncnn-int8")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--modes", default=",".join(MODES))
    a = ap.parse_args()
    rows = []
    work = Path(tempfile.mkdtemp(prefix="bench-int8-inputs-"))
    try:
        for name in a.models.split(","):
            t0 = time.time()
            onnx_path, spec = export(name, work / name)
            photos = calib_folder(work / f"photos-{spec.hw[0]}", spec.hw[0])
            print(f"{name}: exported in {time.time() - t0:.0f}s", flush=True)
            tol = "top-1 agreement" if name == "resnet18" else "mean class IoU"
            for target in a.targets.split(","):
                for mode in a.modes.split(","):
                    t0 = time.time()
                    out = work / "out" / f"{name}-{target}-{mode}"
                    code, why, art = convert(onnx_path, target, mode, out, photos)
                    if art is None:
                        row = (name, target, mode, f"refused (exit {code}): {short(why)}", "-", "-")
                    else:
                        try:
                            score = f"{tol} {independent(name, onnx_path, out, spec):.3f}"
                        except Exception as e:  # noqa: BLE001 - a benchmark row records what broke and goes on
                            score = f"could not run: {type(e).__name__}: {str(e)[:100]}"
                        row = (name, target, mode, f"published ({float_kept(art)})", gate_metric(art["parity"]), score)
                    rows.append(row)
                    print(" | ".join(row) + f"  ({time.time() - t0:.0f}s)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    header = ["model", "target", "mode", "result", "gate (held-back + calibration)",
              f"independent ({FRESH_CLASSIFIER} fresh natural-like inputs for ResNet-18, {FRESH} for segmenters)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
    table = "\n".join(lines)
    print(table)
    full = (a.targets, a.models, a.modes) == (ap.get_default("targets"), ap.get_default("models"),
                                              ap.get_default("modes"))
    results = RESULTS if full else RESULTS.with_name("int8_inputs-partial.md")  # a partial run never replaces all
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text("# int8 conversions of ImageNet-normalized torchvision models\n\n"
                       "`benchmarks/bench_int8_inputs.py`: random weights with realistic BatchNorm statistics, "
                       f"inputs {', '.join(f'{k} {v}x{v}' for k, v in MODELS.items())}, {CALIB_SAMPLES} calibration "
                       "samples + 8 held back (a classifier: up to 149 gate samples); int8 gate: class IoU >= 0.97, "
                       "pixel/top-1 agreement >= 0.98, map cosine >= 0.98.\n\n" + table + "\n")


if __name__ == "__main__":
    main()
