"""Train the bundled portrait-segmentation student and regenerate ``student.onnx``.

    .venv/bin/python models/portrait-seg/train.py [--steps 2000]

Trains on the repo's own synthetic composites (edgekit.core.samples.synthetic; no photos), evaluates mask
IoU and boundary F-score on a held-out synthetic set at 256x256 and 144x256, exports the model with
dynamic H/W (the model card gives the default 1x3x256x256), and writes ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

from edgekit.apps.train.segmentation import TrainConfig, evaluate, torch_predictor, train
from edgekit.core.ingest import export_torch
from edgekit.core.samples.synthetic import dataset
from edgekit.zoo.portrait_seg import build, n_params

HERE = Path(__file__).parent
HELD_OUT_SEED = 987654  # never used for training


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", type=Path, help="Start from these weights (a student.pt) instead of scratch.")
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = build()
    if args.init:
        model.load_state_dict(torch.load(args.init, weights_only=True))
    cfg = TrainConfig(steps=args.steps, batch=args.batch, seed=args.seed, lr=args.lr)
    with Progress() as bar:
        task = bar.add_task("training", total=cfg.steps)
        train(model, cfg, progress=lambda s, loss: bar.update(task, completed=s + 1,
                                                               description=f"training loss={loss:.3f}"))
    metrics = {"params": n_params(model), "train": {**vars(cfg), "init": str(args.init) if args.init else None},
               "held_out": {}}
    predict = torch_predictor(model)
    for h, w in ((256, 256), (144, 256)):
        imgs, masks = dataset(200, h, w, seed=HELD_OUT_SEED)
        metrics["held_out"][f"{h}x{w}"] = evaluate(predict, imgs, masks)
    print(json.dumps(metrics["held_out"], indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out / "student.pt")
    export_torch(model, args.out / "student.onnx", (1, 3, 256, 256), input_name="image",
                 output_names=["mask"], dynamic_hw=True)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"wrote {args.out / 'student.onnx'} ({np.round((args.out / 'student.onnx').stat().st_size / 1024)} KiB)")


if __name__ == "__main__":
    main()
