"""The seed's ResNet trunk (matterport's Keras `resnet_graph`), so that its .h5 weights compute the same thing.

It differs from torchvision's ResNet in four ways, each of which changes the numbers:
- conv1 is a 7x7 stride-2 conv after a zero pad of 3; the 3x3 stride-2 max pool uses TensorFlow's "same"
  padding (for an even input only one row/column at the bottom/right, none at the top/left);
- the stride 2 of a stage sits on the block's first 1x1 conv (and its shortcut), not on the 3x3 conv;
- every conv has a bias (Keras' default), even those followed by batch norm;
- batch norm uses the config's epsilon (matterport: 1e-3, Keras' default).

Shape letters:
    N: images; H, W: padded image size
Module names (stage2..stage5, conv_a/bn_a, ...) are ours; `interop.matterport` maps Keras' layer names
(`res4b_branch2a`, `bn4b_branch2a`, ...) onto them one by one.
"""
from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..layers import norm_layer

# Blocks per stage (conv_block "a" then identity blocks "b", "c", ...) and each block's three widths.
STAGE_BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
STAGE_FILTERS = ((64, 64, 256), (128, 128, 512), (256, 256, 1024), (512, 512, 2048))


def max_pool_same(x: Tensor, kernel: int = 3, stride: int = 2) -> Tensor:
    """Max pool with TensorFlow's "same" padding: output ceil(n / stride), the odd pad cell at the end."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), kernel, stride)


class Bottleneck(nn.Module):
    """matterport's `conv_block` (with a 1x1 conv shortcut) or `identity_block` (identity shortcut)."""

    def __init__(self, in_channels: int, filters: tuple[int, int, int], *, stride: int, shortcut: bool, norm):
        super().__init__()
        a, b, c = filters
        self.conv_a = nn.Conv2d(in_channels, a, 1, stride=stride)  # the stage's stride is here (Keras layout)
        self.bn_a = norm(a)
        self.conv_b = nn.Conv2d(a, b, 3, padding=1)
        self.bn_b = norm(b)
        self.conv_c = nn.Conv2d(b, c, 1)
        self.bn_c = norm(c)
        if shortcut:
            self.shortcut_conv = nn.Conv2d(in_channels, c, 1, stride=stride)
            self.shortcut_bn = norm(c)
        else:
            self.shortcut_conv = self.shortcut_bn = None

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn_a(self.conv_a(x)))  # (N, a, h/s, w/s)
        y = F.relu(self.bn_b(self.conv_b(y)))
        y = self.bn_c(self.conv_c(y))  # (N, c, h/s, w/s)
        skip = x if self.shortcut_conv is None else self.shortcut_bn(self.shortcut_conv(x))
        return F.relu(y + skip)


class MatterportResNet(nn.Module):
    """ResNet-50/101 as the seed builds it: images (N, 3, H, W) -> [C2, C3, C4, C5]."""

    def __init__(self, name: str, *, train_bn: bool, eps: float):
        super().__init__()
        if name not in STAGE_BLOCKS:
            raise ConfigError(f"config field 'backbone' = {name!r}: the matterport layout has only {', '.join(STAGE_BLOCKS)}")
        norm = norm_layer(train_bn, eps)
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)  # ZeroPadding2D(3) + valid 7x7 stride 2
        self.bn1 = norm(64)
        in_channels = 64
        stages = []
        for index, (blocks, filters) in enumerate(zip(STAGE_BLOCKS[name], STAGE_FILTERS)):
            stride = 1 if index == 0 else 2  # stage 2 keeps the max pool's stride 4
            layers = [Bottleneck(in_channels, filters, stride=stride, shortcut=True, norm=norm)]
            layers += [Bottleneck(filters[2], filters, stride=1, shortcut=False, norm=norm) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            in_channels = filters[2]
        self.stage2, self.stage3, self.stage4, self.stage5 = stages
        self.out_channels = tuple(f[2] for f in STAGE_FILTERS)

    def forward(self, images: Tensor) -> list[Tensor]:
        x = F.relu(self.bn1(self.conv1(images)))  # (N, 64, H/2, W/2)
        x = max_pool_same(x)  # (N, 64, H/4, W/4)
        c2 = self.stage2(x)  # (N, 256, H/4, W/4)
        c3 = self.stage3(c2)  # (N, 512, H/8, W/8)
        c4 = self.stage4(c3)  # (N, 1024, H/16, W/16)
        c5 = self.stage5(c4)  # (N, 2048, H/32, W/32)
        return [c2, c3, c4, c5]
