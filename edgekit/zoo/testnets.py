"""Architectures beyond the bundled student that every converter must handle (random weights).

* :class:`TinyUNet`: encoder-decoder with ``ConvTranspose2d`` upsampling and a ``PixelShuffle`` head.
* :class:`TinyViTSeg`: patch embedding, ``LayerNorm``, multi-head self-attention and an exact-GELU
  MLP, reshaped back to a dense map.
* ``lraspp``: torchvision's ``lraspp_mobilenet_v3_large`` (random weights, no download).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class TinyUNet(nn.Module):
    example_input_shape = (1, 3, 64, 64)

    def __init__(self):
        super().__init__()
        self.e1 = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.e2 = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
        self.e3 = nn.Sequential(nn.Conv2d(32, 48, 3, stride=2, padding=1), nn.ReLU())
        self.up2 = nn.ConvTranspose2d(48, 32, 2, stride=2)
        self.d2 = nn.Sequential(nn.Conv2d(64, 32, 3, padding=1), nn.ReLU())
        self.up1 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.d1 = nn.Sequential(nn.Conv2d(32, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(16, 3 * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)  # 2x super-resolution output, as enhancement models do

    def forward(self, x):
        f1 = self.e1(x)
        f2 = self.e2(f1)
        f3 = self.e3(f2)
        y = self.d2(torch.cat([self.up2(f3), f2], 1))
        y = self.d1(torch.cat([self.up1(y), f1], 1))
        return self.shuffle(self.head(y))


class TinyViTSeg(nn.Module):
    example_input_shape = (1, 3, 64, 64)

    def __init__(self, dim: int = 32, heads: int = 4, patch: int = 8):
        super().__init__()
        self.patch = patch
        self.embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        # hidden width 3*dim: a hidden size equal to the token count (64) hits an onnx2tf layout bug on
        # square (1, 64, 64) tensors, which the parity gate catches (see README, known limits)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 3), nn.GELU(), nn.Linear(dim * 3, dim))
        self.head = nn.Conv2d(dim, 2, 1)

    def forward(self, x):
        f = self.embed(x)
        b, c, h, w = f.shape
        t = f.flatten(2).transpose(1, 2)
        t = t + self.attention(self.norm1(t))
        t = t + self.mlp(self.norm2(t))
        f = t.transpose(1, 2).reshape(b, c, h, w)
        return F.interpolate(self.head(f), scale_factor=float(self.patch), mode="bilinear", align_corners=False)

    def attention(self, t):
        """Multi-head self-attention written out (softmax(QK^T / sqrt(d)) V), as exporters see it."""
        b, n, c = t.shape
        d = c // self.heads

        def split(x):  # (b, n, c) -> (b, heads, n, d)
            return x.reshape(b, n, self.heads, d).transpose(1, 2)

        q, k, v = split(self.q(t)), split(self.k(t)), split(self.v(t))
        weights = torch.softmax(q @ k.transpose(-2, -1) / d**0.5, dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, n, c))


def lraspp(input_hw: tuple[int, int] = (128, 128)) -> nn.Module:
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    torch.manual_seed(0)
    model = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=2).eval()

    class OutOnly(nn.Module):
        example_input_shape = (1, 3, *input_hw)

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x)["out"]

    return OutOnly().eval()


def build(name: str) -> nn.Module:
    """A seeded, eval-mode instance by name: ``unet``, ``vit`` or ``lraspp``."""
    torch.manual_seed(0)
    models = {"unet": TinyUNet, "vit": TinyViTSeg, "lraspp": lraspp}
    return models[name]().eval()
