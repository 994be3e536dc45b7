"""Latency quiet and under background load, before (worker threads spin) and after (edgekit's thread settings).

For every CPU runtime (ONNX Runtime, LiteRT, OpenVINO, ncnn; fp32 artifacts of the bundled student at 256x256,
converted once into out/contention/) at 1 and 2 threads, each configuration runs in a fresh process (ncnn's
OpenMP wait policy is fixed per process) that times one session quiet and under the profiler's default load
(busy processes = cores - threads + 1, one of them streaming memory), interleaved in blocks of 5 runs (the load
is paused with SIGSTOP for the quiet blocks), so both columns see the same moment of the machine. Every
configuration is measured ``--rounds`` times, round-robin, and each cell is the median over the rounds (the
range in brackets for p50).

"before" is ``spin=True``: ONNX Runtime intra- and inter-op spinning on, ncnn's libgomp ACTIVE, OpenVINO's
CPU pinning on (its default). "after" is edgekit's default (``spin=False``). LiteRT has no setting, so its two
columns run the same configuration: they show this machine's noise.

    .venv/bin/python benchmarks/bench_contention.py [--rounds 3] [--runs 40]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TARGETS = ["onnx-fp32", "tflite-fp32", "openvino-fp32", "ncnn-fp32"]
THREADS = (1, 2)


def point(artifact: str, threads: int, spin: bool, runs: int) -> dict:
    """One configuration in this (fresh) process: quiet and loaded latency, interleaved."""
    import numpy as np

    from edgekit.api import load
    from edgekit.apps.profiling.latency import measure_contended
    from edgekit.apps.profiling.load import BackgroundLoad, default_level, usable_cpus

    session = load(artifact, threads=threads, spin=spin)
    rng = np.random.default_rng(0)
    x = {t.name: rng.random(t.shape, dtype=np.float32) for t in session.io.inputs}
    level = default_level(usable_cpus(), threads)
    with BackgroundLoad(level) as background:
        quiet, loaded = measure_contended(session, x, background, runs=runs, warmup=5, block=5)
    return {"quiet": [quiet.p50_ms, quiet.p90_ms], "load": [loaded.p50_ms, loaded.p90_ms],
            "level": level.label(), "run_options": session.run_options()}


def artifacts() -> dict[str, str]:
    from edgekit.apps.profiling.matrix import BUNDLED_MODEL
    from edgekit.apps.profiling.sweep import cached_artifact

    return {t: str(cached_artifact(BUNDLED_MODEL, t, (256, 256), ROOT / "out" / "contention").path) for t in TARGETS}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--point", nargs=3, metavar=("ARTIFACT", "THREADS", "SPIN"))
    args = ap.parse_args()
    if args.point:
        art, threads, spin = args.point
        print(json.dumps(point(art, int(threads), spin == "1", args.runs)))
        return
    arts = artifacts()
    configs = [(t, n, spin) for t in TARGETS for n in THREADS for spin in (True, False)]
    results: dict[tuple, list[dict]] = {c: [] for c in configs}
    t0 = time.perf_counter()
    for r in range(args.rounds):
        for c in configs:
            target, n, spin = c
            res = subprocess.run([sys.executable, __file__, "--point", arts[target], str(n), "1" if spin else "0",
                                  "--runs", str(args.runs)], capture_output=True, text=True, timeout=900)
            lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
            if res.returncode or not lines:
                print(f"{target} {n}T spin={spin}: failed: {res.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                continue
            results[c].append(json.loads(lines[-1]))
            print(f"round {r + 1}/{args.rounds} {target} {n}T spin={spin}: {lines[-1]}", file=sys.stderr)
    wall = time.perf_counter() - t0
    text = table(results, args, wall)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "contention.md").write_text(text + "\n")
    (RESULTS / "contention.json").write_text(json.dumps(
        [{"target": t, "threads": n, "spin": s, "rounds": v} for (t, n, s), v in results.items()], indent=1))


def _cell(rounds: list[dict], side: str) -> tuple[float, float, float, float]:
    p50s = [r[side][0] for r in rounds]
    p90s = [r[side][1] for r in rounds]
    return statistics.median(p50s), min(p50s), max(p50s), statistics.median(p90s)


def table(results: dict, args, wall: float) -> str:
    lines = [f"### Quiet vs under load, spin on (before) vs edgekit's settings (after): student fp32 256x256, "
             f"median of {args.rounds} rounds x {args.runs} runs a side ({platform.machine()}, {os.cpu_count()} cores, "
             f"{wall:.0f} s)", "",
             "| runtime | threads | load | before: quiet p50 / p90 | before: loaded p50 / p90 | before x | "
             "after: quiet p50 / p90 | after: loaded p50 / p90 | after x |",
             "|---|---|---|---|---|---|---|---|---|"]
    for target in TARGETS:
        for n in THREADS:
            row = [target, str(n)]
            level = next((r["level"] for s in (True, False) for r in results[(target, n, s)]), "-")
            row.append(level)
            for spin in (True, False):
                rounds = results[(target, n, spin)]
                if not rounds:
                    row += ["failed", "failed", "-"]
                    continue
                q50, qlo, qhi, q90 = _cell(rounds, "quiet")
                l50, llo, lhi, l90 = _cell(rounds, "load")
                row += [f"{q50:.1f} [{qlo:.1f}-{qhi:.1f}] / {q90:.1f}", f"{l50:.1f} [{llo:.1f}-{lhi:.1f}] / {l90:.1f}",
                        f"{l50 / q50:.1f}x"]
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "x: p50 under load / quiet p50. Times in ms; [min-max] of p50 over the rounds."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
