"""Is int8 the fast path? (issue 16 "Goal"): the bundled student, fp32 against int8 on each runtime, timed side by
side in one process (fp32, int8, fp32, int8, ... so that a busy machine slows both alike), at 256x256 and
144x256, 1 and 2 threads. Each row: p50/p90, the int8 speed-up over fp32, mask IoU of int8 against fp32 on
portraits the gate never saw, the ops on the runtime's fast path (from the execution audit), conversion time.

    .venv/bin/python benchmarks/bench_int8_fast.py [--runtimes onnx,tflite,openvino,ncnn] [--runs 60] \\
        [--variant tflite:hard_activations=decompose]

Artifacts are converted once into out/bench/int8_fast/ (delete it to convert again). The table goes to stdout
and benchmarks/results/int8_fast.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STUDENT = ROOT / "models" / "portrait-seg" / "student.onnx"
OUT = ROOT / "out" / "bench" / "int8_fast"
RESULTS = ROOT / "benchmarks" / "results" / "int8_fast.md"
RESOLUTIONS = ((256, 256), (144, 256))


def artifact(target: str, hw: tuple[int, int], options: dict | None = None) -> tuple[Path, float]:
    """The artifact folder (converted now unless already there) and its conversion time in seconds (the whole
    ``edgekit.convert``: quantization, the gate, any retry)."""
    import edgekit

    suffix = "".join(f"-{k}={v}" for k, v in sorted((options or {}).items()))
    folder = OUT / f"{target}-{hw[0]}x{hw[1]}{suffix}"
    timing = folder.parent / (folder.name + ".seconds")
    if not (folder / "artifact.json").exists():
        t0 = time.perf_counter()
        edgekit.convert(str(STUDENT), target, folder, input_shapes={"image": (1, 3, *hw)}, options=options or {})
        timing.write_text(f"{time.perf_counter() - t0:.1f}")
    return folder, float(timing.read_text()) if timing.exists() else float("nan")


def macs(hw: tuple[int, int]) -> int:
    """Multiply-accumulates of one inference of the student at ``hw`` (edgekit inspect)."""
    from edgekit.core.inspection import inspect_model

    return inspect_model(str(STUDENT), {"image": (1, 3, *hw)}).macs


def core_peaks() -> tuple[float, float, float]:
    """(clock GHz, fp32 and int8 peak GMAC/s of one core): AVX-512 with two FMA ports, 32 fp32 MACs a cycle; VNNI
    (VPDPBUSD) 128 u8*s8 MACs a cycle. Nominal: what the vector units could do, not what a runtime reaches."""
    ghz = 0.0
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu MHz"):
            ghz = max(ghz, float(line.split(":")[1]) / 1e3)
    return ghz, 32 * ghz, 128 * ghz


def portraits(hw: tuple[int, int], n: int = 8) -> list[np.ndarray]:
    """Synthetic portraits the gate did not calibrate on (another seed), in the student's input space."""
    from edgekit.core.calibration import generated
    from edgekit.core.iospec import TensorSpec

    spec = TensorSpec("image", (1, 3, *hw), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    batch = generated(spec, n, seed=31337)
    return [batch[i:i + 1] for i in range(n)]


def interleaved(a, b, x: dict, runs: int) -> tuple[np.ndarray, np.ndarray]:
    """Wall times (ms) of ``a.run(x)`` and ``b.run(x)``, alternated run by run after a warm-up."""
    for _ in range(10):
        a.run(x)
        b.run(x)
    ta, tb = np.empty(runs), np.empty(runs)
    for i in range(runs):
        t = time.perf_counter()
        a.run(x)
        ta[i] = time.perf_counter() - t
        t = time.perf_counter()
        b.run(x)
        tb[i] = time.perf_counter() - t
    return ta * 1e3, tb * 1e3


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a > 0.5, b > 0.5).sum()
    return 1.0 if union == 0 else float(np.logical_and(a > 0.5, b > 0.5).sum() / union)


def row(runtime: str, hw, threads: int, runs: int, options: dict | None = None) -> dict:
    import edgekit
    from edgekit.api import audit as audit_of
    from edgekit.core.artifact import Artifact

    fp32_dir, fp32_s = artifact(f"{runtime}-fp32", hw)
    int8_dir, int8_s = artifact(f"{runtime}-int8", hw, options)
    manifest = Artifact.load(int8_dir)
    temporal = (manifest.parity or {}).get("temporal") or {}
    fp32, int8 = edgekit.load(fp32_dir, threads=threads), edgekit.load(int8_dir, threads=threads)
    try:
        xs = portraits(hw)
        t32, t8 = interleaved(fp32, int8, {"image": xs[0]}, runs)
        iou = float(np.mean([mask_iou(fp32.run({"image": x})["mask"], int8.run({"image": x})["mask"]) for x in xs]))
        audit = audit_of(Artifact.load(int8_dir), threads=threads).summary()
    finally:
        fp32.close()
        int8.close()
    return {"runtime": runtime + "".join(f" {k}={v}" for k, v in (options or {}).items()),
            "input": f"{hw[0]}x{hw[1]}", "threads": threads,
            "kept_float": len((manifest.parity or {}).get("kept_float") or []),
            "dtssd": (temporal.get("outputs") or [{}])[0].get("dtssd"),
            "gate_iou": manifest.parity["outputs"][0]["iou"],
            "fp32_p50": float(np.median(t32)), "fp32_p90": float(np.percentile(t32, 90)),
            "int8_p50": float(np.median(t8)), "int8_p90": float(np.percentile(t8, 90)),
            "speedup": float(np.median(t32) / np.median(t8)), "iou": iou,
            "fast_ops": f"{audit['fast']}/{audit['ops']}", "off_fast_path": audit["off_fast_path"],
            "int8_ops": audit["by_precision"].get("int8", 0), "convert_s": {"fp32": fp32_s, "int8": int8_s}}


def mobilenet_conversions(targets: list[str], out: Path) -> list[dict]:
    """Conversion time of a torchvision MobileNetV2 (random init, BatchNorm statistics from natural-like images,
    224x224, ImageNet pre-processing) to each int8 target: until the artifact is written or the conversion says
    why not (issue 16: within 2 minutes on 2 cores). The ONNX export is not counted."""
    import shutil

    import torch
    import torchvision

    from edgekit.core.ingest import export_torch

    torch.manual_seed(0)
    folder = out / "mobilenet_v2"
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / "mobilenet_v2.onnx"
    if not onnx_path.exists():
        model = torchvision.models.mobilenet_v2(weights=None)
        for m in model.modules():  # BatchNorm statistics from ImageNet-normalized natural-like images
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None
        from edgekit.core.calibration import normalize
        from edgekit.core.iospec import TensorSpec
        from edgekit.core.samples.natural import dataset

        ts = TensorSpec("image", (1, 3, 224, 224), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
        model.train()
        with torch.no_grad():
            for k in range(4):
                model(torch.from_numpy(normalize(dataset(8, 224, 224, seed=100 + k), ts)))
        export_torch(model.eval(), onnx_path, (1, 3, 224, 224), input_name="image", output_names=["out"])
        (folder / "model.yaml").write_text("name: mobilenet_v2\noutputs:\n  - name: out\n    kind: logits\n")
    import edgekit
    from edgekit.errors import EdgekitError

    rows = []
    for target in targets:
        dest = folder / target
        shutil.rmtree(dest, ignore_errors=True)
        t0 = time.perf_counter()
        try:
            art = edgekit.convert(str(onnx_path), target, dest, preprocess="imagenet")
            kept = len((art.parity or {}).get("kept_float") or [])
            outcome = "published" + (f" ({kept} layer(s) kept in float)" if kept else "")
        except EdgekitError as e:
            first = str(e).splitlines()[0]
            outcome = f"refused ({type(e).__name__}): " + (first if len(first) <= 300 else
                                                             f"{first[:140]} ... {first[-150:]}")
        rows.append({"target": target, "seconds": time.perf_counter() - t0, "outcome": outcome,
                     "load": os.getloadavg()[0]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runtimes", default="onnx,tflite,openvino,ncnn")
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--variant", action="append", default=[], metavar="RUNTIME:KEY=VALUE[,KEY=VALUE]",
                    help="also measure an int8 artifact converted with these -O options (repeatable), "
                         "e.g. tflite:hard_activations=decompose")
    ap.add_argument("--mobilenet", default="", metavar="TARGETS",
                    help="only time converting a torchvision MobileNetV2 to these targets (comma-separated)")
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if a.mobilenet:
        rows = mobilenet_conversions(a.mobilenet.split(","), OUT)
        lines = ["| target | conversion s | outcome | load |", "|---|---|---|---|"]
        lines += [f"| {r['target']} | {r['seconds']:.0f} | {r['outcome']} | {r['load']:.1f} |" for r in rows]
        print("\n".join(lines))
        return
    load_start = os.getloadavg()
    plan = [(r, None) for r in a.runtimes.split(",")]
    for v in a.variant:
        runtime, _, opts = v.partition(":")
        plan.append((runtime, dict(kv.split("=", 1) for kv in opts.split(","))))
    from edgekit.errors import EdgekitError

    refused = {}
    for runtime, options in plan:  # convert first (timed on its own), then measure
        for hw in RESOLUTIONS:
            artifact(f"{runtime}-fp32", hw)
            try:
                artifact(f"{runtime}-int8", hw, options)
            except EdgekitError as e:  # a variant the gate refuses is a row saying so, not a crash
                refused[(runtime, repr(options), hw)] = str(e).splitlines()[0][:200]
    mac = {hw: macs(hw) for hw in RESOLUTIONS}
    ghz, peak32, peak8 = core_peaks()
    rows = []
    for runtime, options in plan:
        for hw in RESOLUTIONS:
            if (runtime, repr(options), hw) in refused:
                print(f"{runtime} {options} {hw}: refused: {refused[(runtime, repr(options), hw)]}", flush=True)
                continue
            for threads in map(int, a.threads.split(",")):
                r = row(runtime, hw, threads, a.runs, options)
                r["gmacs"] = mac[hw] / 1e9
                r["fp32_gmac_s"] = mac[hw] / 1e6 / r["fp32_p50"]
                r["int8_gmac_s"] = mac[hw] / 1e6 / r["int8_p50"]
                r["load"] = os.getloadavg()[0]
                rows.append(r)
                print(json.dumps(r), flush=True)
    head = ("| runtime | input | threads | fp32 p50/p90 ms | int8 p50/p90 ms | int8 speed-up | mask IoU vs fp32 | "
            "int8 ops on the fast path | off the fast path | layers kept float | gate IoU / dtSSD | "
            "GMAC/s fp32 / int8 | convert s fp32/int8 | load |")
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        off = ", ".join(f"{n} {op}" for op, n in r["off_fast_path"].items()) or "-"
        dt = f"{r['dtssd']:.2f}" if r["dtssd"] is not None else "-"
        lines.append(f"| {r['runtime']} | {r['input']} | {r['threads']} | {r['fp32_p50']:.2f} / {r['fp32_p90']:.2f} | "
                     f"{r['int8_p50']:.2f} / {r['int8_p90']:.2f} | {r['speedup']:.2f}x | {r['iou']:.4f} | "
                     f"{r['fast_ops']} | {off} | {r['kept_float']} | {r['gate_iou']:.4f} / {dt} | "
                     f"{r['fp32_gmac_s']:.0f} / {r['int8_gmac_s']:.0f} | {r['convert_s']['fp32']:.0f} / "
                     f"{r['convert_s']['int8']:.0f} | {r['load']:.1f} |")
    for (runtime, options, (h, w)), why in refused.items():
        lines.append(f"| {runtime} {options} | {h}x{w} | - | refused by the gate: {why} |" + " |" * 10)
    table = "\n".join(lines)
    header = (f"# int8 against fp32, side by side ({platform.machine()}, {os.cpu_count()} cores, load average "
              f"{load_start[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end)\n\n"
              "`benchmarks/bench_int8_fast.py`: the bundled student; fp32 and int8 runs alternated in one process, "
              f"{a.runs} runs each after 10 warm-up runs; IoU on 8 synthetic portraits the gate did not see. "
              f"MACs: {', '.join(f'{h}x{w} {m / 1e9:.3f} G' for (h, w), m in mac.items())}; one core's nominal peak "
              f"at {ghz:.2f} GHz: fp32 {peak32:.0f} GMAC/s (AVX-512 FMA), int8 {peak8:.0f} GMAC/s (VNNI). "
              "Conversion time: the whole `edgekit.convert` (quantization, parity gate, temporal check, retries).\n\n")
    print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(header + table + "\n")


if __name__ == "__main__":
    main()
