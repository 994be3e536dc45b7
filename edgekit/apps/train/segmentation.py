"""Supervised training and evaluation of segmentation students on synthetic composites."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from edgekit.core.deps import require
from edgekit.core.parity import mask_iou

MEAN, STD = 0.5, 0.5


@dataclass
class TrainConfig:
    steps: int = 1500
    batch: int = 16
    size: int = 128        # smallest training crop; crops up to 1.5x this are drawn too
    pool: int = 3000       # pre-generated composites (random crops, rescales and flips make more)
    lr: float = 4e-3
    seed: int = 0


def to_tensor(imgs: np.ndarray):
    """N x H x W x 3 images in [0, 1] -> normalized N x 3 x H x W tensor."""
    torch = require("torch")
    return torch.from_numpy(((imgs - MEAN) / STD).transpose(0, 3, 1, 2).copy())


def train(model, cfg: TrainConfig, progress: Callable[[int, float], None] | None = None):
    """Train ``model`` (outputs probabilities via ``forward_logits``) with BCE + soft dice."""
    torch = require("torch")
    from torch.nn import functional as F

    from edgekit.core.samples.synthetic import dataset

    torch.manual_seed(cfg.seed)
    full = int(cfg.size * 1.875)  # people at the pixel scale of 256x256 frames when size=128
    imgs, masks = dataset(cfg.pool, full, full, seed=cfg.seed + 1000)
    rng = np.random.default_rng(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    model.train()
    for step in range(cfg.steps):
        idx = rng.integers(0, cfg.pool, cfg.batch)
        s = int(rng.choice([cfg.size, cfg.size * 5 // 4, cfg.size * 3 // 2]))
        if rng.random() < 0.5:  # a crop: people at full pixel scale
            y0, x0 = rng.integers(0, full - s + 1, 2)
            xb, mb = imgs[idx, y0 : y0 + s, x0 : x0 + s], masks[idx, y0 : y0 + s, x0 : x0 + s]
        else:  # the whole frame, downscaled: people smaller in pixels
            xb = np.stack([cv2.resize(imgs[i], (s, s), interpolation=cv2.INTER_AREA) for i in idx])
            mb = np.stack([cv2.resize(masks[i], (s, s), interpolation=cv2.INTER_AREA) for i in idx])
        if rng.random() < 0.5:
            xb, mb = xb[:, :, ::-1], mb[:, :, ::-1]
        x = to_tensor(xb)
        m = torch.from_numpy(mb.copy())[:, None]
        logits = model.forward_logits(x)
        p = torch.sigmoid(logits)
        dice = 1 - (2 * (p * m).sum((2, 3)) + 1) / (p.sum((2, 3)) + m.sum((2, 3)) + 1)
        loss = F.binary_cross_entropy_with_logits(logits, m) + dice.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if progress:
            progress(step, float(loss.detach()))
    model.eval()
    return model


def evaluate(predict: Callable[[np.ndarray], np.ndarray], imgs: np.ndarray, masks: np.ndarray) -> dict:
    """Mean mask IoU and boundary F-score of ``predict`` (N x H x W x 3 -> N x H x W probabilities)."""
    probs = predict(imgs)
    ious = [mask_iou(p > 0.5, m > 0.5) for p, m in zip(probs, masks)]
    bf = [boundary_f(p > 0.5, m > 0.5) for p, m in zip(probs, masks)]
    return {"iou": float(np.mean(ious)), "boundary_f": float(np.mean(bf)), "n": len(imgs)}


def boundary_f(pred: np.ndarray, gt: np.ndarray, tol: int = 2) -> float:
    """F-score of boundary pixels matched within ``tol`` pixels."""
    import cv2

    def edge(m):
        m = m.astype(np.uint8)
        return (m - cv2.erode(m, np.ones((3, 3), np.uint8))) > 0

    pe, ge = edge(pred), edge(gt)
    if pe.sum() == 0 and ge.sum() == 0:
        return 1.0
    k = np.ones((2 * tol + 1, 2 * tol + 1), np.uint8)
    gd = cv2.dilate(ge.astype(np.uint8), k) > 0
    pd = cv2.dilate(pe.astype(np.uint8), k) > 0
    precision = (pe & gd).sum() / max(pe.sum(), 1)
    recall = (ge & pd).sum() / max(ge.sum(), 1)
    return float(0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))


def torch_predictor(model, batch: int = 16):
    torch = require("torch")

    def predict(imgs: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, len(imgs), batch):
                out.append(model(to_tensor(imgs[i : i + batch]))[:, 0].numpy())
        return np.concatenate(out)

    return predict
