"""The bundled portrait-segmentation student: MobileNetV3-style encoder, light U-shaped decoder.

1x3xHxW RGB (normalized with mean 0.5 / std 0.5) in, 1x1xHxW person probability out; H and W
must be multiples of 16 (256x256 and 144x256 are the shipped resolutions). About 100K parameters.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.Hardswish())
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(8, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, expand: int, cout: int, k: int, stride: int, se: bool):
        super().__init__()
        layers = [conv_bn(cin, expand, 1)] if expand != cin else []
        layers.append(conv_bn(expand, expand, k, stride, groups=expand))
        if se:
            layers.append(SqueezeExcite(expand))
        layers.append(conv_bn(expand, cout, 1, act=False))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class PortraitSegStudent(nn.Module):
    """Encoder at strides 2/4/8/16, decoder with skip connections back to stride 2, then x2."""

    def __init__(self, width: float = 1.0):
        super().__init__()

        def c(n: int) -> int:
            return max(8, int(n * width))

        self.stem = conv_bn(3, c(16), 3, 2)                                    # /2
        self.stage1 = InvertedResidual(c(16), c(16), c(16), 3, 1, False)       # /2
        self.stage2 = nn.Sequential(InvertedResidual(c(16), c(64), c(24), 3, 2, False),
                                    InvertedResidual(c(24), c(72), c(24), 3, 1, False))  # /4
        self.stage3 = nn.Sequential(InvertedResidual(c(24), c(72), c(40), 5, 2, True),
                                    InvertedResidual(c(40), c(96), c(40), 5, 1, True))   # /8
        self.stage4 = nn.Sequential(InvertedResidual(c(40), c(120), c(48), 5, 2, True),
                                    InvertedResidual(c(48), c(144), c(48), 5, 1, True))  # /16
        self.head = conv_bn(c(48), c(32), 1)
        self.up3 = conv_bn(c(32) + c(40), c(24), 1)
        self.refine3 = conv_bn(c(24), c(24), 3, groups=c(24))
        self.up2 = conv_bn(c(24) + c(24), c(16), 1)
        self.refine2 = conv_bn(c(16), c(16), 3, groups=c(16))
        self.up1 = conv_bn(c(16) + c(16), c(16), 1)
        self.classifier = nn.Conv2d(c(16), 1, 3, padding=1)

    def features(self, x):
        """Encoder features at strides 2, 4, 8, 16 (used by distillation)."""
        f1 = self.stage1(self.stem(x))
        f2 = self.stage2(f1)
        f3 = self.stage3(f2)
        f4 = self.stage4(f3)
        return f1, f2, f3, f4

    def forward_logits(self, x):
        return self.logits_from_features(self.features(x))

    def logits_from_features(self, feats):
        """Decoder: logits at the input resolution from the encoder features."""
        f1, f2, f3, f4 = feats
        y = self.head(f4)
        y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
        y = self.refine3(self.up3(torch.cat([y, f3], 1)))
        y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
        y = self.refine2(self.up2(torch.cat([y, f2], 1)))
        y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
        y = self.classifier(self.up1(torch.cat([y, f1], 1)))
        return F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)

    def forward(self, x):
        return torch.sigmoid(self.forward_logits(x))


class WithFeatures(nn.Module):
    """``forward`` returns (logits, encoder features): the form distillation (and DDP) needs.

    A model without ``features``/``logits_from_features`` is taken to return logits; its features
    are None, so only output losses (ground truth, KL) can use it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        if not hasattr(self.model, "features"):
            return self.model(x), None
        feats = self.model.features(x)
        return self.model.logits_from_features(feats), feats


def build(width: float = 1.0) -> PortraitSegStudent:
    return PortraitSegStudent(width)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
