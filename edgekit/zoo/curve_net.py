"""A Zero-DCE++-style low-light network: a tiny CNN estimates per-pixel curve parameters A (3 maps in
[-1, 1]) on a downscaled frame; the frame is brightened by iterating ``x <- x + A x (1 - x)`` 8 times.
About 10K parameters; input 1x3x144x256 RGB in [0, 1]; output the A maps."""

from __future__ import annotations

import torch
from torch import nn

from edgekit.zoo.curve_net_numpy import ITERATIONS  # noqa: E402,F401


def dsconv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin), nn.Conv2d(cin, cout, 1), nn.ReLU())


class CurveNet(nn.Module):
    example_input_shape = (1, 3, 144, 256)

    def __init__(self, width: int = 24):
        super().__init__()
        self.e1 = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU())
        self.e2 = dsconv(width, width)
        self.e3 = dsconv(width, width)
        self.e4 = dsconv(width * 2, width)
        self.out = nn.Conv2d(width * 2, 3, 3, padding=1)

    def forward(self, x):
        f1 = self.e1(x)
        f2 = self.e2(f1)
        f3 = self.e3(f2)
        f4 = self.e4(torch.cat([f3, f2], 1))
        return torch.tanh(self.out(torch.cat([f4, f1], 1)))


def apply_curve(x: torch.Tensor, a: torch.Tensor, iterations: int = ITERATIONS) -> torch.Tensor:
    for _ in range(iterations):
        x = x + a * x * (1 - x)
    return x
