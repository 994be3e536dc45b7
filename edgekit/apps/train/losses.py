"""Distillation losses (PyTorch). Feature losses work across different channel counts, so a wide
teacher can teach a narrow student stage by stage."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def ground_truth(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice against the exact mask."""
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * mask).sum((2, 3)) + 1) / (p.sum((2, 3)) + mask.sum((2, 3)) + 1)
    return F.binary_cross_entropy_with_logits(logits, mask) + dice.mean()


def _class_log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-pixel class log-probabilities; a 1-channel logit map is the binary (background, person) pair."""
    z = logits / temperature
    if z.shape[1] == 1:
        z = torch.cat([torch.zeros_like(z), z], dim=1)
    return F.log_softmax(z, dim=1)


def pixelwise_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """KL(teacher || student) of per-pixel class probabilities at a temperature, times T^2 (Hinton)."""
    if student_logits.shape[-2:] != teacher_logits.shape[-2:]:
        teacher_logits = F.interpolate(teacher_logits, size=student_logits.shape[-2:], mode="bilinear",
                                       align_corners=False)
    log_s = _class_log_probs(student_logits, temperature)
    log_t = _class_log_probs(teacher_logits, temperature)
    kl = (log_t.exp() * (log_t - log_s)).sum(dim=1)
    return kl.mean() * temperature**2


def pairwise_affinity(student_feat: torch.Tensor, teacher_feat: torch.Tensor, pool: int = 16) -> torch.Tensor:
    """Mean squared difference of the pairwise (cosine) similarity matrices of spatial positions,
    on features average-pooled to ``pool x pool`` so memory stays O(pool^4) whatever the resolution."""

    def affinity(f: torch.Tensor) -> torch.Tensor:
        f = F.adaptive_avg_pool2d(f, pool).flatten(2)          # B x C x N
        f = F.normalize(f, dim=1)
        return f.transpose(1, 2) @ f                            # B x N x N

    return F.mse_loss(affinity(student_feat), affinity(teacher_feat))


def attention_map(feat: torch.Tensor, p: int = 2) -> torch.Tensor:
    """Channel-collapsed attention map (mean of |f|^p over channels), L2-normalized over positions."""
    return F.normalize(feat.abs().pow(p).mean(dim=1).flatten(1), dim=1)


def attention_transfer(student_feat: torch.Tensor, teacher_feat: torch.Tensor, p: int = 2) -> torch.Tensor:
    """Zagoruyko & Komodakis attention transfer; the student's map is resized when resolutions differ."""
    if student_feat.shape[-2:] != teacher_feat.shape[-2:]:
        student_feat = F.interpolate(student_feat, size=teacher_feat.shape[-2:], mode="bilinear",
                                     align_corners=False)
    return (attention_map(student_feat, p) - attention_map(teacher_feat, p)).pow(2).sum(dim=1).mean()
