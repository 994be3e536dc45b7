"""Segmentation reuse between frames, side by side in one run: the model on every frame (today's default), a fixed
k of 2, 3 and 4 (carried by the affine estimate), and the adaptive policy (IoU budget 0.95, max_k 4 and 8).

Clip: a generated person swaying and leaning over a textured background, slowly, then three times faster, with
a sudden sideways jump (:func:`clip`); the model and its pre-processing are the shipped app config's, as
``edgekit process`` runs them. Quality is at the model's resolution against every-frame inference: mask IoU
(mean, min) and flow-warped flicker (mean |m_t - warp(m_t-1)| by DIS flow on the frames: the change motion does
not explain; every-frame's own is the first row). Speed: the blur pipeline placed on this machine's cores and
run pipelined; each policy runs ``--rounds`` times interleaved with the others and the median is reported. CPU
saved = (carried frames x the model's mean ms, less the motion estimation and carrying) per frame, as the
controller measured it.

    .venv/bin/python benchmarks/bench_reuse.py [--frames 150] [--rounds 3]
"""

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np

from edgekit.apps.pipeline.costs import measure_costs
from edgekit.apps.pipeline.definition import reset_stages
from edgekit.apps.pipeline.executor import PipelineRunner, run_sequential
from edgekit.apps.pipeline.placement import plan
from edgekit.apps.pipeline.units import local_units
from edgekit.apps.profiling.appconfig import load_config
from edgekit.apps.video.process import ConfiguredCalls, build_pipeline, model_entries
from edgekit.apps.video.reuse import MaskReuse, ReuseBudget, iou
from edgekit.core.temporal import warped_flicker

CONFIG = Path("profiles/configs/local-cpu.json")
POLICIES = [("every frame (no reuse)", None), ("fixed k=2", (2, True)), ("fixed k=3", (3, True)),
            ("fixed k=4", (4, True)), ("adaptive, max_k 4, IoU >= 0.95", (4, False)),
            ("adaptive, max_k 8, IoU >= 0.95", (8, False))]


def clip(n: int, hw: tuple[int, int]) -> list[np.ndarray]:
    """The synthetic person of :func:`~edgekit.apps.video.synthetic_video.paced_clip` (leaning as it sways, so no
    similarity explains the motion exactly), slow for the first third (2 px per frame at 1280 wide), three times
    faster after, with a sudden jump of 5% of the width at 80% of the clip."""
    from edgekit.apps.video.synthetic_video import paced_clip

    scale = hw[1] / 1280
    speeds = [2.0 * scale] * (n // 3) + [6.0 * scale] * (n - n // 3)
    return paced_clip(speeds, hw, seed=5, jumps={int(n * 0.8): 0.05 * hw[1]})[0]


def controller(policy):
    if policy is None:
        return None
    k, fixed = policy
    return MaskReuse(ReuseBudget(max_k=k, min_iou=0.95), fixed=fixed)


def methods(frames, entry, session) -> list[str]:
    """Affine vs DIS flow carrying, fixed k = 2 and 4 and adaptive: IoU vs every-frame and ms per carried frame."""
    every = _every(frames, entry, session)
    gray = [cv2.cvtColor(cv2.resize(f, (entry.hw[1], entry.hw[0]), interpolation=cv2.INTER_AREA),
                         cv2.COLOR_BGR2GRAY) for f in frames]
    rows = []
    for method in ("affine", "flow"):
        cells = []
        for k, fixed in ((2, True), (4, True), (4, False)):
            ctl = MaskReuse(ReuseBudget(max_k=k, min_iou=0.95, method=method), fixed=fixed)
            masks = [ctl(t, gray[t], lambda t=t: every[t]) for t in range(len(frames))]
            ious = [iou(m, e) for m, e in zip(masks, every)]
            carry = [r.carry_ms for r in ctl.records if not r.inferred]
            cells.append(f"{np.mean(ious):.4f} ({np.min(ious):.3f})")
            if fixed and k == 4:
                ms = float(np.median(carry))
            if not fixed:
                share = ctl.summary()["inferred"] / len(frames)
        rows.append(f"| {method} | {' | '.join(cells)} | {100 * share:.0f}% | {ms:.2f} |")
    return rows


def _every(frames, entry, session) -> list[np.ndarray]:
    spec = session.io.inputs[0]

    def infer(f):
        x = entry.prepare(f)
        if spec.layout == "NHWC":
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        return np.asarray(next(iter(session.run({spec.name: x}).values())), np.float32).reshape(entry.hw)

    return [infer(f) for f in frames]


def quality(frames, entry, session) -> list[dict]:
    from edgekit.core.temporal import flows

    every = _every(frames, entry, session)
    small = [cv2.resize(f, (entry.hw[1], entry.hw[0]), interpolation=cv2.INTER_AREA) for f in frames]
    flow = flows(np.stack([s[..., ::-1] for s in small]).astype(np.float32) / 255.0)
    gray = [cv2.cvtColor(s, cv2.COLOR_BGR2GRAY) for s in small]
    rows = []
    for label, policy in POLICIES:
        ctl = controller(policy)
        masks = every if ctl is None else [ctl(t, gray[t], lambda t=t: every[t]) for t in range(len(frames))]
        ious = [iou(m, e) for m, e in zip(masks, every)]
        ran = len(frames) if ctl is None else ctl.summary()["inferred"]
        rows.append({"label": label, "iou_mean": float(np.mean(ious)), "iou_min": float(np.min(ious)),
                     "flicker": warped_flicker(masks, flow), "model_share": ran / len(frames),
                     "series": "" if ctl is None else ctl.summary()["k_series"]})
    return rows


def speed(frames, cfg, rounds: int) -> dict[str, dict]:
    units = {u: v for u, v in local_units().items() if u.startswith("cpu")}
    entries = model_entries(cfg)
    specs = {True: build_pipeline(cfg, ["blur"], {}, reuse=True), False: build_pipeline(cfg, ["blur"], {})}
    calls = ConfiguredCalls(units, entries)
    costs, _ = measure_costs(specs[True], units, frames[0], repeats=5, calls=calls)
    costs = {k: v for k, v in costs.items() if k[0] != "segment" or k[1].endswith(entries[0].key)}
    p = plan(specs[True], costs)  # one placement for every policy
    fps: dict[str, list] = {label: [] for label, _ in POLICIES}
    saved: dict[str, list] = {label: [] for label, _ in POLICIES}
    p95: dict[str, list] = {label: [] for label, _ in POLICIES}
    cpu: dict[str, list] = {label: [] for label, _ in POLICIES}
    for _ in range(rounds):
        for label, policy in POLICIES:
            spec = specs[policy is not None]
            reset_stages(spec)
            calls.reuse = controller(policy)
            t0 = time.thread_time()  # every stage in this thread: CPU time, which other load does not inflate
            for _ in run_sequential(spec, p, units, frames, output="output", calls=calls):
                pass
            cpu[label].append((time.thread_time() - t0) * 1000 / len(frames))
            reset_stages(spec)
            calls.reuse = controller(policy)
            runner = PipelineRunner(spec, p, units, max_in_flight=4, calls=calls)
            for _ in runner.run(frames, output="output"):
                pass
            fps[label].append(runner.stats.completed / runner.stats.wall_s)
            p95[label].append(float(np.percentile(runner.stats.latencies_ms, 95)))
            saved[label].append(0.0 if calls.reuse is None else calls.reuse.summary()["cpu_saved_ms_per_frame"])
    calls.reuse = None
    return {label: {"fps": float(np.median(fps[label])), "p95": float(np.median(p95[label])),
                    "saved": float(np.median(saved[label])), "cpu": float(np.median(cpu[label]))}
            for label, _ in POLICIES}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from edgekit.api import load

    cfg = load_config(CONFIG)
    entry = model_entries(cfg)[0]
    session = load(entry.artifact_dir, threads=1)
    t0 = time.perf_counter()
    clip720 = clip(args.frames, (720, 1280))
    q = quality(clip720, entry, session)
    m = methods(clip720, entry, session)
    s720 = speed(clip(args.frames, (720, 1280)), cfg, args.rounds)
    s1080 = speed(clip(args.frames, (1080, 1920)), cfg, args.rounds)
    lines = [f"### Segmentation reuse: blur, {args.frames} frames (a person swaying, then 3x faster, one jump); model "
             f"{entry.target} at {entry.hw[1]}x{entry.hw[0]} as the shipped config runs it; median of {args.rounds} "
             "interleaved runs", "",
             "| k policy | model runs (share of frames) | IoU vs every-frame mean (min) | flow-warped flicker "
             "| segmentation CPU saved ms/frame 720p / 1080p | whole frame CPU ms 720p / 1080p "
             "| fps 1280x720 (p95 ms) | fps 1920x1080 (p95 ms) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in q:
        a, b = s720[r["label"]], s1080[r["label"]]
        lines.append(f"| {r['label']} | {100 * r['model_share']:.0f}% | {r['iou_mean']:.4f} ({r['iou_min']:.3f}) | "
                     f"{r['flicker']:.4f} | {a['saved']:.2f} / {b['saved']:.2f} | {a['cpu']:.1f} / {b['cpu']:.1f} | "
                     f"{a['fps']:.1f} ({a['p95']:.0f}) | "
                     f"{b['fps']:.1f} ({b['p95']:.0f}) |")
    adaptive = next(r for r in q if r["label"].startswith("adaptive, max_k 4"))
    lines += ["", "Whole frame CPU ms: every stage of a frame run one after another in one thread, in thread CPU time "
              "(what other work on the machine inflates least); fps: pipelined on both cores, wall clock, load "
              f"average {os.getloadavg()[0]:.1f} when the run ended.", "",
              "k over time, adaptive max_k 4 (digit = a model frame and the k it closed, . = carried): "
              f"`{adaptive['series']}`", "",
              "Carrying method (same clip and model; IoU vs every-frame inference, mean (min)):", "",
              "| method | fixed k=2 | fixed k=4 | adaptive max_k 4 | adaptive: model runs | ms per carried frame |",
              "|---|---|---|---|---|---|", *m, "", f"({time.perf_counter() - t0:.0f} s)"]
    text = "\n".join(lines)
    print(text)
    Path("benchmarks/results").mkdir(exist_ok=True)
    Path("benchmarks/results/reuse.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
