"""MediaPipe's models through edgekit, and the flagship blur on real people.

    .venv/bin/python benchmarks/bench_mediapipe.py                      # both tables
    .venv/bin/python benchmarks/bench_mediapipe.py --only process       # the real-photo table only (fast)
    .venv/bin/python benchmarks/bench_mediapipe.py --only convert --models selfie_segmentation_landscape

1. **process on real photos**: each reserved portrait placed in a 1280x720 frame over a textured background,
   as ``edgekit process -e blur`` sees it. For every segmentation model (the shipped ``local-cpu`` config's,
   the bundled student that config shipped before, and MediaPipe's originals in LiteRT): the full-frame alpha
   ``process`` computes (model at the config's resolution, guided-filter refinement), its mask IoU against
   MediaPipe's *general* model run on the photo itself (the reference; outside the photo there is no person),
   and what the blur does to the face (mean |output - input| in the central part of the face box MediaPipe's
   face detector finds in the photo: 0 = untouched) and to the background beside the photo.
2. **convert**: per MediaPipe model and target, conversion from the ``.tflite`` (tf2onnx, custom ops
   rewritten), the parity gate against the original in LiteRT (max |diff|, mask IoU or cosine), and latency
   (median of ``--runs`` runs, 1 thread) beside the original ``.tflite`` in LiteRT.

Tables go to stdout and ``benchmarks/results/mediapipe.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from edgekit.core.samples.photos import in_frame

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIG = ROOT / "profiles" / "configs" / "local-cpu.json"
STUDENT = ROOT / "models" / "portrait-seg" / "student.onnx"
TARGETS = ["onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-fp16", "openvino-int8", "ncnn-fp32", "ncnn-fp16",
           "ncnn-int8", "tflite-fp32", "tflite-int8"]


# ---------------------------------------------------------------- 1. process on real photos


def reference_mask(general, frame: np.ndarray, box) -> np.ndarray:
    """MediaPipe general on the photo region (resized to 256x256, as MediaPipe does), pasted into the frame."""
    x0, y0, w, h = box
    x = cv2.resize(frame[y0:y0 + h, x0:x0 + w], (256, 256), interpolation=cv2.INTER_AREA)[..., ::-1]
    m = general.run({"image": (x.astype(np.float32) / 255).transpose(2, 0, 1)[None].copy()})["mask"][0, 0]
    full = np.zeros(frame.shape[:2], bool)
    full[y0:y0 + h, x0:x0 + w] = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) > 0.5
    return full


def config_predictor(config: Path):
    """The model exactly as ``process`` runs it from an app config: a BGR frame -> the low-resolution mask."""
    import edgekit
    from edgekit.apps.profiling.appconfig import load_config
    from edgekit.apps.video.process import model_entries
    from edgekit.core.iospec import to_layout

    entry = model_entries(load_config(config))[0]
    sess = edgekit.load(entry.artifact_dir, threads=entry.threads, delegate=entry.delegate)
    spec, out = sess.io.inputs[0], sess.io.outputs[0]

    def predict(frame):
        x = entry.prepare(frame)
        x = to_layout(x, "NCHW", spec.layout)
        return to_layout(sess.run({spec.name: x})[out.name], out.layout, "NCHW")[0, 0]

    return predict, f"{entry.target} at {entry.hw[0]}x{entry.hw[1]}"


def process_table() -> str:
    import edgekit
    from edgekit.apps.video import kernels
    from edgekit.apps.video.effects.face import FaceDetector
    from edgekit.apps.video.process import model_input
    from edgekit.core.samples import photos
    from edgekit.zoo import mediapipe

    mediapipe.fetch()
    photos.fetch()
    general = mediapipe.selfie_segmenter(landscape=False)
    landscape = mediapipe.selfie_segmenter(landscape=True)
    config = json.loads(CONFIG.read_text())
    shipped, shipped_how = config_predictor(CONFIG)
    with tempfile.TemporaryDirectory() as work:
        student = edgekit.load(edgekit.convert(STUDENT, "onnx-fp32", Path(work) / "student",
                                               input_shapes=["image:1x3x144x256"]).path)
    models = {
        f"shipped local-cpu config: {config['model']['name']} ({shipped_how})": shipped,
        "bundled student (local-cpu before), onnx-fp32 at 144x256": lambda f: student.run(
            {"image": model_input(f, (144, 256), "RGB", (0, 1), (0.5,) * 3, (0.5,) * 3)})["mask"][0, 0],
        "MediaPipe landscape, original .tflite in LiteRT, 144x256": lambda f: landscape.run(
            {"image": model_input(f, (144, 256))})["mask"][0, 0],
        "MediaPipe general, original .tflite in LiteRT, whole frame squashed to 256x256": lambda f: general.run(
            {"image": model_input(f, (256, 256))})["mask"][0, 0],
    }
    detector = FaceDetector()
    frames = []
    for i, name in enumerate(photos.PORTRAITS):
        photo = cv2.imread(str(photos.cache_dir() / name), cv2.IMREAD_COLOR)
        frame, box = in_frame(photo, i)
        x0, y0, w, h = box
        face = detector(frame[y0:y0 + h, x0:x0 + w])[0].box
        cx, cy = (face[0] + face[2]) / 2, (face[1] + face[3]) / 2
        hw, hh = (face[2] - face[0]) * 0.3, (face[3] - face[1]) * 0.3
        fbox = (int(x0 + cx - hw), int(y0 + cy - hh), int(x0 + cx + hw), int(y0 + cy + hh))
        frames.append((name, frame, box, fbox, reference_mask(general, frame, box)))
    lines = ["| model (as process runs it) | mean mask IoU vs MediaPipe general | per photo | face change "
             "(grey levels, 0 = sharp) | background change | ms per frame (model) |", "|---|---|---|---|---|---|"]
    for label, predict in models.items():
        ious, faces, bgs, times = [], [], [], []
        for _name, frame, (x0, _, w, _), (fx0, fy0, fx1, fy1), ref in frames:
            t = time.perf_counter()
            mask = predict(frame)
            times.append((time.perf_counter() - t) * 1e3)
            alpha = kernels.refine_mask(np.asarray(mask, np.float32)[None, None], frame)
            out = kernels.blur_background(frame, alpha)
            a = alpha > 0.5
            ious.append(float((a & ref).sum() / max(1, (a | ref).sum())))
            faces.append(float(np.abs(out[fy0:fy1, fx0:fx1].astype(np.int16) - frame[fy0:fy1, fx0:fx1]).mean()))
            side = np.r_[0:max(0, x0 - 16), min(1280, x0 + w + 16):1280]
            bgs.append(float(np.abs(out[:, side].astype(np.int16) - frame[:, side]).mean()))
        per = ", ".join(f"{n.split('.')[0]} {v:.2f}" for (n, *_), v in zip(frames, ious))
        lines.append(f"| {label} | {np.mean(ious):.3f} | {per} | {np.mean(faces):.1f} (max {max(faces):.1f}) | "
                     f"{np.mean(bgs):.1f} | {np.median(times):.1f} |")
    head = (f"### process -e blur on real portraits in 1280x720 frames ({len(frames)} photos; reference: MediaPipe "
            f"general on the photo; {platform.machine()}, {os.cpu_count()} cores)\n\n")
    return head + "\n".join(lines)


# ---------------------------------------------------------------- 2. conversions


def convert_table(models: list[str], targets: list[str], runs: int, out_dir: Path) -> str:
    import edgekit
    from edgekit.apps.profiling.latency import measure
    from edgekit.core import calibration
    from edgekit.zoo import mediapipe

    paths = mediapipe.fetch()
    lines = ["| model | target | converts | parity vs original (LiteRT) | max abs diff | mask IoU / cosine | "
             "size KiB | convert s | p50 ms 1T |", "|---|---|---|---|---|---|---|---|---|"]
    for name in models:
        path = paths[name]
        from edgekit.backends.tflite.source import card_for, io_spec, read, reference_session

        io = io_spec(read(path), card_for(path))
        feeds = calibration.samples(io, None, n=1, seed=7)[0]
        ref = reference_session(path, io)
        lat = measure(ref, feeds, runs=runs)
        lines.append(f"| {name} | original .tflite (LiteRT, XNNPACK) | - | - | - | - | "
                     f"{path.stat().st_size / 1024:.0f} | - | {lat.p50_ms:.2f} |")
        for target in targets:
            t0 = time.perf_counter()
            try:
                art = edgekit.convert(path, target, out_dir / f"{name}-{target}")
            except Exception as e:  # noqa: BLE001 - a benchmark row records any failure and goes on
                msg = str(e).splitlines()[0][:90] if str(e) else type(e).__name__
                lines.append(f"| {name} | {target} | no: {msg} | - | - | - | - | {time.perf_counter() - t0:.0f} | - |")
                continue
            secs = time.perf_counter() - t0
            outs = art.parity.get("outputs", [])
            worst = max((o["max_abs"] for o in outs), default=0.0)
            agree = ", ".join(f"IoU {o['iou']:.4f}" if o.get("iou") is not None else f"cos {o['cosine']:.5f}"
                              for o in outs)
            size = sum((art.path / f).stat().st_size for f in art.files.values()) / 1024
            try:
                p50 = f"{measure(edgekit.load(art.path), feeds, runs=runs).p50_ms:.2f}"
            except Exception as e:  # noqa: BLE001 - e.g. Core ML, which has no runtime here
                p50 = f"n/a ({str(e).splitlines()[0][:40]})"
            lines.append(f"| {name} | {target} | yes | {'pass' if art.parity.get('passed') else 'FAIL'} | "
                         f"{worst:.2g} | {agree} | {size:.0f} | {secs:.0f} | {p50} |")
    head = (f"### MediaPipe models from .tflite: conversion, parity vs the original in LiteRT, latency (median of "
            f"{runs} runs, 1 thread; {platform.machine()}, {os.cpu_count()} cores)\n\n")
    return head + "\n".join(lines)


def main() -> None:
    from edgekit.zoo import mediapipe

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["process", "convert"])
    ap.add_argument("--models", default=",".join(mediapipe.MODELS))
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "mediapipe")
    args = ap.parse_args()
    parts = []
    if args.only in (None, "process"):
        parts.append(process_table())
        print(parts[-1] + "\n", flush=True)
    if args.only in (None, "convert"):
        parts.append(convert_table(args.models.split(","), args.targets.split(","), args.runs, args.out))
        print(parts[-1] + "\n", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"mediapipe{'-' + args.only if args.only else ''}.md").write_text("\n\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
