"""Train the low-light curve network on synthetically darkened images and export ``curve.onnx``.

    .venv/bin/python models/lowlight/train.py [--steps 1500]

Pairs: bright synthetic scenes (edgekit.core.samples.synthetic) and the same scenes darkened the way a
camera sees a dim room (gamma, exposure drop, colour cast, sensor noise). Loss: L1 to the bright
image plus an illumination-smoothness term on the curve maps (as Zero-DCE). No photos are used.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

from edgekit.core.ingest import export_torch
from edgekit.core.samples.synthetic import dataset
from edgekit.zoo.curve_net import CurveNet, apply_curve

HERE = Path(__file__).parent


def darken(rng: np.random.Generator, bright: np.ndarray) -> np.ndarray:
    """N x H x W x 3 in [0, 1] -> a dim-room version of it."""
    n = len(bright)
    gamma = rng.uniform(1.6, 3.0, (n, 1, 1, 1))
    exposure = rng.uniform(0.25, 0.6, (n, 1, 1, 1))
    cast = rng.uniform(0.85, 1.1, (n, 1, 1, 3))
    dark = exposure * np.power(bright, gamma) * cast
    dark = dark + rng.normal(0, rng.uniform(0.002, 0.015), dark.shape)
    return np.clip(dark, 0, 1).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    bright, _ = dataset(600, 72, 128, seed=4242)  # the net is fully convolutional: train small, run at 144x256
    net = CurveNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    with Progress() as bar:
        task = bar.add_task("training", total=args.steps)
        for step in range(args.steps):
            idx = rng.integers(0, len(bright), args.batch)
            target = torch.from_numpy(bright[idx].transpose(0, 3, 1, 2).copy())
            dark = torch.from_numpy(darken(rng, bright[idx]).transpose(0, 3, 1, 2).copy())
            a = net(dark)
            out = apply_curve(dark, a)
            smooth = (a[:, :, 1:] - a[:, :, :-1]).abs().mean() + (a[:, :, :, 1:] - a[:, :, :, :-1]).abs().mean()
            loss = (out - target).abs().mean() + 0.1 * smooth
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update(task, completed=step + 1, description=f"training loss={float(loss.detach()):.4f}")
    net.eval()
    export_torch(net, args.out / "curve.onnx", (1, 3, 144, 256), input_name="image", output_names=["curves"])
    (args.out / "metrics.json").write_text(json.dumps({"steps": args.steps, "batch": args.batch,
                                                       "final_loss": float(loss)}, indent=2) + "\n")
    print(f"wrote {args.out / 'curve.onnx'}")


if __name__ == "__main__":
    main()
