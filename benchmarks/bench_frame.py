"""End to end vs model only: what a camera frame costs around the model, and whether the stages add up.

For the bundled student (onnx-fp32 and ncnn-fp16 at 256x256, converted once into out/frame/) and the shipped
``local-cpu`` app config's model, at 1 and 2 threads, a 720p and a 1080p camera frame are timed the way
``edgekit run --frame`` and the profiler do (``edgekit.apps.profiling.latency.measure_frame``): runs alternate
between one timed stage by stage (resize, colour, normalize, model, upsample) and one timed as a whole, so the
whole is measured on its own and the stages' sum can be checked against it (goal: within 10%). Each
configuration runs in a fresh process, quiet and under the profiler's default background load (the whole frame
interleaved with the load paused and running, as the sweep does).

    .venv/bin/python benchmarks/bench_frame.py [--runs 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FRAMES = {"720p": (720, 1280), "1080p": (1080, 1920)}


def point(artifact: str, threads: int, frame: tuple[int, int], runs: int) -> dict:
    """One configuration in this (fresh) process."""
    from edgekit.api import load
    from edgekit.apps.profiling.latency import CameraFrame, measure_frame, measure_step_contended
    from edgekit.apps.profiling.load import BackgroundLoad, default_level, usable_cpus

    session = load(artifact, threads=threads)
    timing = measure_frame(session, frame, runs=runs, warmup=5)
    level = default_level(usable_cpus(), threads)
    with BackgroundLoad(level) as background:
        quiet, loaded = measure_step_contended(CameraFrame(session, frame).run, background, runs=runs, warmup=5)
    return {**timing.to_dict(), "quiet_whole": quiet.to_dict(), "loaded_whole": loaded.to_dict(),
            "load": level.to_dict()}


def artifacts() -> dict[str, str]:
    from edgekit.apps.profiling.sweep import cached_artifact

    student = ROOT / "models" / "portrait-seg" / "student.onnx"
    out = {f"student {t} 256x256": str(cached_artifact(student, t, (256, 256), ROOT / "out" / "frame").path)
           for t in ("onnx-fp32", "ncnn-fp16")}
    shipped = json.loads((ROOT / "profiles" / "configs" / "local-cpu.json").read_text())
    rt = shipped["runtime"]
    out[f"shipped {shipped['model']['name']} {rt['target']} {rt['resolution'][0]}x{rt['resolution'][1]}"] = str(
        ROOT / "profiles" / "configs" / rt["artifact"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--point", nargs=4, metavar=("ARTIFACT", "THREADS", "FRAME", "RUNS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.point:
        a, t, f, r = args.point
        print(json.dumps(point(a, int(t), FRAMES[f], int(r))))
        return
    t0 = time.perf_counter()
    rows = []
    for label, path in artifacts().items():
        for threads in (1, 2):
            for frame in FRAMES:
                res = subprocess.run([sys.executable, __file__, "--point", path, str(threads), frame, str(args.runs)],
                                     capture_output=True, text=True, check=True)
                d = json.loads(res.stdout.strip().splitlines()[-1])
                rows.append((label, threads, frame, d))
                print(f"{label} {threads}T {frame}: done", file=sys.stderr, flush=True)
    wall = time.perf_counter() - t0
    lines = [f"### End to end vs model only: camera frame -> mask at the frame's size, p50/p90 ms "
             f"({args.runs} runs each; {platform.machine()}, {os.cpu_count()} cores, {wall:.0f} s)", "",
             "| model | threads | frame | resize | colour | normalize | model | upsample | stage sum | whole p50 "
             "| sum / whole | model share | whole p90 quiet | whole p90 under load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, threads, frame, d in rows:
        s = d["stages_p50_ms"]
        whole = d["end_to_end"]["p50_ms"]
        lines.append(f"| {label} | {threads} | {frame} | " + " | ".join(f"{s[k]:.2f}" for k in
                     ("resize", "colour", "normalize", "model", "upsample"))
                     + f" | {d['stage_sum_ms']:.2f} | {whole:.2f} | {100 * d['stage_sum_ms'] / whole:.0f}% | "
                     f"{100 * d['model_share']:.0f}% | {d['quiet_whole']['p90_ms']:.2f} | "
                     f"{d['loaded_whole']['p90_ms']:.2f} |")
    lines += ["", "Stages are the medians of the stage-by-stage runs; whole p50 is the median of the runs timed as a "
              "whole (alternating with them); load: busy processes = cores - threads + 1, one streaming memory."]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "frame.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
