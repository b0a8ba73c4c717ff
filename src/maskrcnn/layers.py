"""Layers shared by the backbone and the heads."""
from __future__ import annotations

import functools

from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d


def norm_layer(train_bn: bool, eps: float):
    """Batch norm that learns (train_bn) or frozen (statistics and affine fixed, as for batches of 1-2 images)."""
    return functools.partial(nn.BatchNorm2d if train_bn else FrozenBatchNorm2d, eps=eps)
