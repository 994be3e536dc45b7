"""Distillation ablation on the held-out set: the student trained alone vs with each loss vs all three,
with the teacher's numbers beside them; synthetic (mask IoU, boundary F) and real photos (IoU vs
MediaPipe). Then the bundled student's retraining recipe (models/portrait-seg/distill.yaml).

    .venv/bin/python benchmarks/bench_distill.py [--teacher-steps 1200] [--steps 500]
        [--teacher-checkpoint out/distill/teacher-w2.pt] [--bundled-steps 0]

``--teacher-checkpoint`` reuses a trained teacher (e.g. the recipe's; say its steps with
``--teacher-steps``); ``--bundled-steps 0`` reports the shipped student's recorded retraining
(models/portrait-seg/metrics.json) instead of retraining it.
"""

import argparse
import json
import time
from pathlib import Path

from edgekit.apps.train.distill import distill, evaluate_model
from edgekit.apps.train.recipe import load_recipe

VARIANTS = {
    "student alone (ground truth)": {},
    "+ pixelwise KL": {"kl": 1.0},
    "+ pairwise affinity": {"affinity": 10.0},
    "+ attention transfer": {"attention": 1.0},
    "+ all three": {"kl": 1.0, "affinity": 10.0, "attention": 1.0},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher-steps", type=int, default=1200)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--bundled-steps", type=int, default=800)
    ap.add_argument("--teacher-checkpoint", type=Path, default=Path("out/bench/distill/teacher-w2.pt"))
    args = ap.parse_args()
    out = Path("out/bench/distill")
    teacher_ckpt = args.teacher_checkpoint
    rows = []
    teacher = None
    for label, extra in VARIANTS.items():
        recipe = load_recipe({
            "name": label, "seed": 0, "steps": args.steps, "batch": 12, "lr": 0.004, "checkpoint_every": 10_000,
            "output": str(out / label.replace(" ", "_").replace("+", "plus").replace("(", "").replace(")", "")),
            "data": {"size": 128, "pool": 1500},
            "teacher": {"width": 2.0, "checkpoint": str(teacher_ckpt), "train_steps": args.teacher_steps},
            "losses": {"gt": 1.0, **extra}, "eval": {"samples": 200, "size": [256, 256]}})
        t0 = time.perf_counter()
        result = distill(recipe)
        rows.append((label, result["student"], time.perf_counter() - t0))
        teacher = result["teacher"]
        print(label, json.dumps(result["student"]), flush=True)

    bundled = load_recipe("models/portrait-seg/distill.yaml")
    if args.bundled_steps:
        bundled.steps = args.bundled_steps
        bundled.teacher.checkpoint = str(teacher_ckpt)
        t0 = time.perf_counter()
        before = evaluate_model(_load_student(bundled.student.init), bundled)
        after = distill(bundled)["student"]
        bundled_note = f"bundled retraining took {time.perf_counter() - t0:.0f} s; output in {bundled.output}"
    else:  # as recorded when the shipped student was made
        rec = json.loads(Path("models/portrait-seg/metrics.json").read_text())
        size = "x".join(map(str, bundled.eval.size))

        def recorded(m):
            return {**m["held_out"][size], "real": m["real_photos_vs_mediapipe"][size]}

        before, after = recorded(rec["before_distillation"]), recorded(rec)
        args.bundled_steps = rec["train"]["steps"]
        bundled_note = "as recorded in models/portrait-seg/metrics.json when the shipped student was made"

    def real(r):
        return "-" if r.get("real", {}).get("iou") is None else f"{r['real']['iou']:.3f}"

    lines = [f"### Distillation ablation: {args.steps} steps each, batch 12, 128 px crops; teacher = student "
             f"architecture at width 2.0, {args.teacher_steps} steps", "",
             "| model | synthetic mask IoU (256x256, n=200) | boundary F | real photos: IoU vs MediaPipe (n=6) | "
             "train s |", "|---|---|---|---|---|",
             f"| teacher (width 2.0) | {teacher['iou']:.4f} | {teacher['boundary_f']:.4f} | {real(teacher)} | - |"]
    for label, r, secs in rows:
        lines.append(f"| {label} | {r['iou']:.4f} | {r['boundary_f']:.4f} | {real(r)} | {secs:.0f} |")
    lines += ["", f"### Bundled student retrained with models/portrait-seg/distill.yaml ({args.bundled_steps} "
              "steps from the supervised weights)", "",
              "| student | synthetic mask IoU | boundary F | real photos IoU vs MediaPipe |", "|---|---|---|---|",
              f"| before distillation | {before['iou']:.4f} | {before['boundary_f']:.4f} | {real(before)} |",
              f"| after distillation (shipped) | {after['iou']:.4f} | {after['boundary_f']:.4f} | {real(after)} |",
              "", bundled_note]
    text = "\n".join(lines)
    print(text)
    Path("benchmarks/results").mkdir(exist_ok=True)
    Path("benchmarks/results/distill.md").write_text(text + "\n")


def _load_student(path):
    import torch

    from edgekit.zoo.portrait_seg import build

    model = build()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model


if __name__ == "__main__":
    main()
