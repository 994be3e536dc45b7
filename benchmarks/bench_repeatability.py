"""Repeatability of the profiler's choice: the same sweep N times, the same choice how often?

Each round sweeps a small CPU profile for the bundled student from scratch (a fresh points file; artifacts are
converted once and shared), every point timed quiet and under the default background load with the whole 720p
frame, and chooses twice: from the sweep alone, and after the run-off edgekit does when the choice is within the
noise of its runner-up (both measured again in alternation). Goal: the same choice in at least 9 of 10 sweeps.

    .venv/bin/python benchmarks/bench_repeatability.py [--sweeps 10] [--runs 30]
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PROFILE = """
id: repeat-cpu
hardware: cpu
reach: local
targets: [onnx-fp32, tflite-fp32, openvino-fp32, ncnn-fp16]
threads: [1, 2]
resolutions: [[144, 256]]
budget: {{fps: 30, model_share: 1.0}}
runs: {runs}
warmup: 5
"""


def main() -> None:
    from edgekit.apps.profiling.choose import choose
    from edgekit.apps.profiling.device import load_profile
    from edgekit.apps.profiling.runoff import runoff
    from edgekit.apps.profiling.sweep import sweep

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweeps", type=int, default=10)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    work = ROOT / "out" / "repeatability"
    work.mkdir(parents=True, exist_ok=True)
    (work / "repeat-cpu.yaml").write_text(PROFILE.format(runs=args.runs))
    profile = load_profile(work / "repeat-cpu.yaml")
    model = ROOT / "models" / "portrait-seg" / "student.onnx"
    rows, t0 = [], time.perf_counter()
    for i in range(args.sweeps):
        out = work / f"sweep-{i}"
        shutil.rmtree(out, ignore_errors=True)
        points = sweep(model, profile, out, cache=work / "artifacts")
        first = choose(points, profile.budget_ms, profile.camera, profile.max_degradation,
                       profile.targets)
        final = runoff(first, points, profile, model, out) if first.contested is not None else first
        rows.append((first, final))
        print(f"sweep {i + 1}: {first.chosen.label() if first.chosen else '-'} -> "
              f"{final.chosen.label() if final.chosen else '-'}", file=sys.stderr, flush=True)
    wall = time.perf_counter() - t0

    def label(c):
        return c.chosen.label() if c.chosen else "nothing fits"

    lines = [f"### Repeatability: {args.sweeps} sweeps of the student (4 CPU runtimes x 1-2 threads at 144x256, "
             f"budget {profile.budget_ms:.1f} ms for the 720p frame under load; {platform.machine()}, "
             f"{os.cpu_count()} cores, {wall:.0f} s)", "",
             "| sweep | choice from the sweep | its frame p90 under load | contested by | choice after run-off |",
             "|---|---|---|---|---|"]
    for i, (first, final) in enumerate(rows):
        tail = f"{first.chosen.budget_tail_ms:.2f}" if first.chosen else "-"
        lines.append(f"| {i + 1} | {label(first)} | {tail} | "
                     f"{first.contested.label() if first.contested else '-'} | {label(final)} |")
    for name, pick in (("from the sweep alone", 0), ("after the run-off", 1)):
        counts = collections.Counter(label(r[pick]) for r in rows)
        top, n = counts.most_common(1)[0]
        lines.append(f"\nSame choice {name}: {n} of {len(rows)} ({top}); all: "
                     + ", ".join(f"{k} x{v}" for k, v in counts.most_common()))
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "repeatability.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
