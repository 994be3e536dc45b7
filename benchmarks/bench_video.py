"""Video effects: quality on synthetic video with exact ground truth and on real frames, and speed
per stage and end to end at 1280x720 and 1920x1080 on this machine (pipelined and sequential)."""

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
from edgekit.apps.video import kernels, quality
from edgekit.apps.video.effects.beauty import FaceTracker
from edgekit.apps.video.effects.denoise import TemporalDenoiser
from edgekit.apps.video.effects.lowlight import clahe, open_lowlight, two_curves
from edgekit.apps.video.process import build_pipeline
from edgekit.apps.video.synthetic_video import synthetic_clip

CONFIG = Path("profiles/configs/local-cpu.json")


def segmentation_quality(cfg) -> list[str]:
    """The config's model as process runs it; the alpha refined and smoothed the earlier way (smoothing the
    full-resolution alpha) and today's (smoothing the model's mask, then refining)."""
    from edgekit.api import load
    from edgekit.apps.video.process import model_entries

    frames, truths = synthetic_clip(90, (720, 1280), seed=11)
    entry = model_entries(cfg)[0]
    sess = load(entry.artifact_dir, threads=2)
    spec = sess.io.inputs[0]

    def mask_of(f):
        x = entry.prepare(f)
        if spec.layout == "NHWC":
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        return np.asarray(next(iter(sess.run({spec.name: x}).values())), np.float32).reshape(entry.hw)

    masks = [mask_of(f) for f in frames]
    full, small = kernels.TemporalSmoother(), kernels.MaskSmoother()
    ways = {"refined, no temporal smoothing": [kernels.refine_mask(m, f) for m, f in zip(masks, frames)]}
    ways["refined + temporal smoothing at full resolution (before)"] = [full(a) for a in ways[
        "refined, no temporal smoothing"]]
    ways["temporal smoothing of the model's mask + refined (previous)"] = [kernels.refine_mask(small(m), f)
                                                                          for m, f in zip(masks, frames)]
    fused = kernels.MaskSmoother()
    ways["the same, refined in the band to a uint8 alpha, guide from the 1/4 frame (today, fused)"] = [
        kernels.refine_band(fused(m), f, kernels.quarter(f))[0].astype(np.float32) / 255 for m, f in zip(masks, frames)]
    rows = []
    for label, alphas in ways.items():
        s = quality.mask_scores(alphas, truths)
        rows.append(f"| {label} | {s['iou']:.4f} | {s['boundary_f']:.4f} | {s['dtssd']:.2f} |")
    return rows


def landmark_rows() -> list[str]:
    from edgekit.core.samples.photos import evaluation_photos

    name, img = evaluation_photos()[0]
    base = cv2.resize((img[..., ::-1] * 255).astype(np.uint8), None, fx=720 / img.shape[0], fy=720 / img.shape[0])
    rng = np.random.default_rng(0)
    clip = [np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8) for _ in range(60)]
    rows = []
    for label, smooth in (("raw landmarks", False), ("One Euro filtered", True)):
        tracker = FaceTracker(smooth=smooth)
        tracks = [tracker(f) for f in clip]
        rows.append(f"| {label} ({name}, static, camera noise sigma 4) | {quality.landmark_jitter(tracks[5:]):.3f} |")
    return rows


def denoise_rows() -> list[str]:
    clean, _ = synthetic_clip(60, (720, 1280), seed=3, motion=0.5)
    rng = np.random.default_rng(1)
    noisy = [np.clip(f + rng.normal(0, 15, f.shape), 0, 255).astype(np.uint8) for f in clean]
    before = np.mean([quality.psnr(n, c) for n, c in zip(noisy[10:], clean[10:])])
    spatial = np.mean([quality.psnr(cv2.GaussianBlur(n, (5, 5), 0), c) for n, c in zip(noisy[10:], clean[10:])])
    rows = [f"| noisy input (sigma 15) | {before:.2f} | - |", f"| 5x5 Gaussian (spatial only) | {spatial:.2f} | "
            f"{spatial - before:+.2f} |"]
    for label, kernel in (("previous: float weights, cv2.blendLinear", "lut"),
                          ("today (fused): uint8 strips", "u8")):
        den = TemporalDenoiser(kernel=kernel)
        outs = [den(f) for f in noisy]
        after = np.mean([quality.psnr(o, c) for o, c in zip(outs[10:], clean[10:])])
        rows.append(f"| edgekit temporal denoiser, {label} | {after:.2f} | {after - before:+.2f} |")
    return rows


BEFORE = "edgekit curve net before (net at 144x256, 65 levels applied at full resolution)"
PREVIOUS = "edgekit curve net previous (255-level (level, pixel) lookup)"
TODAY = "edgekit curve net today (two shared curves + weight map)"


def lowlight_rows() -> list[str]:
    from edgekit.core.samples.photos import evaluation_photos
    from edgekit.core.samples.synthetic import dataset

    ll, before = open_lowlight(), open_lowlight(hw=(144, 256))
    rng = np.random.default_rng(9)
    imgs, _ = dataset(40, 288, 512, seed=77777)
    sets = {"synthetic scenes (n=40)": [(im[..., ::-1] * 255).astype(np.uint8) for im in imgs],
            "real photos (n=6)": [cv2.resize((im[..., ::-1] * 255).astype(np.uint8), (512, 288))
                                  for _, im in evaluation_photos()]}
    rows = []
    for label, brights in sets.items():
        res = {"dark input": [], "CLAHE": [], BEFORE: [], PREVIOUS: [], TODAY: []}
        for b in brights:
            gamma, exposure = rng.uniform(1.8, 2.6), rng.uniform(0.3, 0.5)
            dark = np.clip(exposure * (b / 255.0) ** gamma * 255 + rng.normal(0, 2, b.shape), 0, 255).astype(np.uint8)
            ll.curves = before.curves = None
            curves = before.estimate(dark)
            small = ll._small(dark)
            now = ll._estimate(small)
            for name, out in (("dark input", dark), ("CLAHE", clahe(dark)),
                              (BEFORE, before.apply_full(dark, curves)), (PREVIOUS, ll.apply(dark, now)),
                              (TODAY, ll.apply_two(dark, two_curves(now, small)))):
                res[name].append((quality.psnr(out, b), quality.ssim(out, b)))
        for name, v in res.items():
            v = np.asarray(v)
            rows.append(f"| {label} | {name} | {v[:, 0].mean():.2f} | {v[:, 1].mean():.4f} |")
    return rows


def lowlight_video_rows() -> list[str]:
    """The curve network on every frame against every 2nd and 3rd frame (curves carried between, the weight map
    fitted to each frame), on a synthetic 512x288 clip darkened with a changing exposure (a ramp, then a step)."""
    frames, _ = synthetic_clip(60, (288, 512), seed=12, motion=0.5)
    rng = np.random.default_rng(3)
    exposure = np.concatenate([np.linspace(0.3, 0.5, 30), np.full(30, 0.25)])
    dark = [np.clip(e * (f / 255.0) ** 2.2 * 255 + rng.normal(0, 2, f.shape), 0, 255).astype(np.uint8)
            for e, f in zip(exposure, frames)]
    outs, rows = {}, []
    for every in (1, 2, 3):
        ll = open_lowlight(every=every)
        outs[every] = [ll.apply_two(d, ll.estimate_two(d)) for d in dark]
        vs = [quality.psnr(o, f) for o, f in zip(outs[every], frames)]
        agree = [min(quality.psnr(a, b), 99.0) for a, b in zip(outs[every], outs[1])]
        rows.append(f"| every {'frame' if every == 1 else f'{every}nd frame' if every == 2 else f'{every}rd frame'} | "
                    f"{np.mean(vs):.2f} | {np.mean(vs[30:36]):.2f} | "
                    f"{'-' if every == 1 else f'{np.median(agree):.1f} / {min(agree):.1f}'} |")
    return rows


ALL4 = ["blur", "beauty", "denoise", "lowlight"]
CASES = ((["blur"], (720, 1280)), (["blur"], (1080, 1920)), (ALL4, (720, 1280)), (ALL4, (1080, 1920)))


def bandwidth_gbs() -> float:
    """This machine's memory bandwidth as one core sees it: bytes read + written per second copying 256 MiB
    (median of 5)."""
    a = np.ones(32 * 2**20, np.float64)
    b = np.empty_like(a)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(b, a)
        times.append(time.perf_counter() - t0)
    return 2 * a.nbytes / float(np.median(times)) / 1e9


def _stage_bytes(spec, calls, p, frame) -> dict[str, int]:
    """Bytes each stage reads and writes on one frame (its inputs and outputs, as the arrays are)."""
    values, out = {"frame": frame}, {}
    for s in spec.stages:
        values.update(calls(s, p.assignment[s.name], values, 0))
        out[s.name] = sum(getattr(values[v], "nbytes", 0) for v in [*s.inputs, *s.outputs])
    return out


PATHS = ("previous", "fused")  # build_pipeline's kernels compared: the ones before the fused uint8 path, and today's
LABEL = {"before": "earliest", "previous": "previous", "fused": "today (fused)"}


def speed_rows(cfg, rounds: int = 3, n: int = 90, paths=PATHS) -> tuple[list[str], list[str], list[str]]:
    """Each case on each of ``paths`` (``build_pipeline(path=...)``), interleaved ``rounds`` times, medians; the
    last path's per-stage costs next to their memory-traffic floor; and how far the last path's output frames are
    from the first path's (mean absolute difference, share of channel values more than 8 apart, PSNR)."""
    from edgekit.apps.video.process import ConfiguredCalls, model_entries

    units = {u: v for u, v in local_units().items() if u.startswith("cpu")}
    bw = bandwidth_gbs()
    rows, stage_rows, agree = [], [], []
    for effects, hw in CASES:
        frames = _with_face(hw, n)
        if "lowlight" in effects:  # a dim scene, what low-light is for (brightening a lit one washes the face out)
            frames = [np.clip(0.45 * (f / 255.0) ** 1.8 * 255, 0, 255).astype(np.uint8) for f in frames]
        runs = {}
        for fast in paths:
            spec = build_pipeline(cfg, effects, {}, path=fast)
            calls = ConfiguredCalls(units, model_entries(cfg))
            costs, _ = measure_costs(spec, units, frames[0], repeats=5, calls=calls)
            costs = {k: v for k, v in costs.items() if "fallback" not in k[1] and "tflite" not in k[1]}
            runs[fast] = {"spec": spec, "calls": calls, "costs": costs, "plan": plan(spec, costs), "seq": [],
                          "pipe": [], "p50": [], "p95": [], "cpu": [],
                          "stage_cpu": []}
        for _ in range(rounds):
            for fast in paths:
                r = runs[fast]
                reset_stages(r["spec"])
                t0, c0 = time.perf_counter(), time.thread_time()
                timed = _Timed(r["calls"])
                r["outs"] = {i: o for i, o in run_sequential(r["spec"], r["plan"], units, frames, output="output",
                                                               calls=timed) if i % 5 == 0}  # kept: every 5th
                r["stage_cpu"].append({k: v * 1000 / len(frames) for k, v in timed.cpu.items()})
                r["seq"].append(len(frames) / (time.perf_counter() - t0))
                r["cpu"].append((time.thread_time() - c0) * 1000 / len(frames))
                reset_stages(r["spec"])
                runner = PipelineRunner(r["spec"], r["plan"], units, max_in_flight=4, calls=r["calls"])
                for _ in runner.run(frames, output="output"):
                    pass
                r["pipe"].append(runner.stats.completed / runner.stats.wall_s)
                lat = np.percentile(runner.stats.latencies_ms, [50, 95])
                r["p50"].append(lat[0])
                r["p95"].append(lat[1])
        for fast in paths:
            r = runs[fast]
            per_stage = ", ".join(f"{s.name} {_stage_ms(r, s.name):.1f}"
                                  for s in r["spec"].stages)
            rows.append(f"| {'+'.join(effects)} | {hw[1]}x{hw[0]} | {LABEL[fast]} | "
                        f"{np.median(r['cpu']):.1f} | {2000 / np.median(r['cpu']):.0f} | {np.median(r['seq']):.1f} | "
                        f"**{np.median(r['pipe']):.1f}** | "
                        f"{np.median(r['p50']):.1f} / "
                        f"{np.median(r['p95']):.1f} | {per_stage} |")
        if len(paths) > 1:  # today's outputs against the first path's, frame by frame (every 5th frame)
            a, b = runs[paths[0]]["outs"], runs[paths[-1]]["outs"]
            d = [np.abs(a[i].astype(np.int16) - b[i]) for i in sorted(a) if i in b]
            agree.append(f"| {'+'.join(effects)} | {hw[1]}x{hw[0]} | {np.mean([x.mean() for x in d]):.2f} | "
                         f"{np.mean([(x > 8).mean() for x in d]) * 100:.2f}% | "
                         f"{np.mean([quality.psnr(b[i], a[i]) for i in sorted(a) if i in b]):.1f} |")
        if effects == ALL4:
            r = runs[paths[-1]]
            reset_stages(r["spec"])
            moved = _stage_bytes(r["spec"], r["calls"], r["plan"], frames[0])
            total = sum(_stage_ms(r, s.name) for s in r["spec"].stages)
            for s in r["spec"].stages:
                ms = _stage_ms(r, s.name)
                floor = moved[s.name] / (bw * 1e9) * 1000
                stage_rows.append(f"| {hw[1]}x{hw[0]} | {s.name} | {ms:.2f} | {100 * ms / total:.0f}% | "
                                  f"{moved[s.name] / 1e6:.1f} | {floor:.2f} | {ms / floor:.0f}x |")
    stage_rows.append(f"\nmemory bandwidth (one core copying 256 MiB, read + write): {bw:.1f} GB/s")
    return rows, stage_rows, agree


class _Timed:
    """Stage calls that add up each stage's thread CPU time (what other work on the machine inflates least)."""

    def __init__(self, calls):
        self.calls, self.cpu = calls, {}

    def __call__(self, stage, choice, values, frame):
        t0 = time.thread_time()
        try:
            return self.calls(stage, choice, values, frame)
        finally:
            self.cpu[stage.name] = self.cpu.get(stage.name, 0.0) + time.thread_time() - t0


def _stage_ms(r: dict, name: str) -> float:
    """A stage's CPU ms per frame in the sequential runs (median over the rounds)."""
    return float(np.median([c.get(name, 0.0) for c in r["stage_cpu"]]))


def _with_face(hw, n):
    """A real portrait (obama.jpg) moving slowly over the frame, so face effects have work to do."""
    from edgekit.core.samples.photos import evaluation_photos

    _, img = evaluation_photos()[0]
    H, W = hw
    photo = cv2.resize((img[..., ::-1] * 255).astype(np.uint8), (int(img.shape[1] * H / img.shape[0]), H))
    canvas = np.full((H, W, 3), 90, np.uint8)
    frames = []
    for t in range(n):
        x = int((W - photo.shape[1]) / 2 + 20 * np.sin(t / 10))
        f = canvas.copy()
        f[:, max(x, 0):max(x, 0) + photo.shape[1]] = photo[:, : W - max(x, 0)]
        frames.append(f)
    return frames


ROUNDS = 3

SPEED_HEAD = ["| effects | frame | code | CPU ms per frame | bound on 2 idle cores fps | sequential fps | "
              "pipelined fps | p50 / p95 latency ms | stage ms |", "|---|---|---|---|---|---|---|---|---|"]
AGREE_HEAD = ["| effects | frame | mean abs diff | values > 8 apart | PSNR dB |", "|---|---|---|---|---|"]


def speed_text(speed, load_start) -> list[str]:
    return [
        f"### Speed on this machine (2 cores; previous = the kernels before the fused uint8 path, today = as process "
        f"runs now; median of {ROUNDS} interleaved runs of 60 frames; stage ms: each stage's CPU ms per frame)", "",
        *SPEED_HEAD,
        *speed[0], "",
        "CPU ms per frame: every stage run one after another in one thread, in thread CPU time (less inflated by other "
        "work than wall clock, not immune: the cores' caches and memory are shared); bound on 2 idle cores: 2000 / CPU "
        "ms, the most two cores could give with the stages perfectly balanced; fps and latency: wall clock, load "
        f"average {load_start:.1f} at the start and {os.getloadavg()[0]:.1f} at the end of the speed runs.", "",
        "### Today's output frames against the previous kernels' (same frames, every 5th)", "", *AGREE_HEAD,
        *speed[2], "",
        "### Where the time goes (all four effects, today's code): each stage's CPU ms per frame (thread time), its "
        "share of the frame's, and the floor its memory traffic sets (bytes its inputs and outputs hold / the "
        "bandwidth measured in the same run)", "",
        "| frame | stage | ms | share | MB moved | floor ms | x floor |", "|---|---|---|---|---|---|---|", *speed[1]]


if __name__ == "__main__":
    import sys

    cfg = load_config(CONFIG)
    if "--speed-only" in sys.argv:
        load0 = os.getloadavg()[0]
        print("\n".join(speed_text(speed_rows(cfg, ROUNDS, 60), load0)))
        raise SystemExit(0)
    if "--quality-only" in sys.argv:
        print("\n".join([*segmentation_quality(cfg), "", *landmark_rows(), "", *denoise_rows(), "", *lowlight_rows(),
                         "", *lowlight_video_rows()]))
        raise SystemExit(0)
    load0 = os.getloadavg()[0]
    speed = speed_rows(cfg, ROUNDS, 60)
    text = "\n".join([
        "### Virtual background quality (synthetic 720p video with exact masks, 90 frames; "
        f"model {cfg['runtime']['target']} at {cfg['input']['width']}x{cfg['input']['height']})", "",
        "| alpha | mask IoU | boundary F | dtSSD (lower = steadier) |", "|---|---|---|---|",
        *segmentation_quality(cfg), "",
        "### Landmark jitter (px RMS around the mean position, static clip)", "", "| landmarks | jitter px |",
        "|---|---|", *landmark_rows(), "",
        "### Denoise (synthetic 720p video, Gaussian noise sigma 15)", "", "| | PSNR dB | gain dB |", "|---|---|---|",
        *denoise_rows(), "",
        "### Low-light (synthetically darkened, 512x288)", "", "| set | method | PSNR dB | SSIM |", "|---|---|---|---|",
        *lowlight_rows(), "",
        "### Low-light on video: the curve network on every frame or every k-th (512x288, 60 frames, exposure "
        "ramping then stepping down at frame 30)", "",
        "| network runs | PSNR dB vs the bright frames | the 6 frames after the step | PSNR dB vs every frame (median "
        "/ min) |", "|---|---|---|---|", *lowlight_video_rows(), "", *speed_text(speed, load0)])
    print(text)
    Path("benchmarks/results").mkdir(exist_ok=True)
    Path("benchmarks/results/video.md").write_text(text + "\n")
