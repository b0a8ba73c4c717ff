"""Layers shared by the backbone and the heads."""
from __future__ import annotations

import functools

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d


def norm_layer(train_bn: bool, eps: float):
    """Batch norm that learns (train_bn) or frozen (statistics and affine fixed, as for batches of 1-2 images)."""
    return functools.partial(nn.BatchNorm2d if train_bn else FrozenBatchNorm2d, eps=eps)


class RunningStatsBatchNorm2d(nn.BatchNorm2d):
    """Batch norm that always normalises with its running statistics while gamma and beta learn: Keras'
    `BatchNorm(training=False)`, which matterport's heads use when TRAIN_BN is False."""

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def head_norm_layer(statistics: str, eps: float):
    """The heads' batch norm, always with trainable gamma and beta (torchvision v2's heads, matterport's):
    statistics "batch" normalises by the batch in training (nn.BatchNorm2d), "running" by the running ones."""
    return functools.partial(nn.BatchNorm2d if statistics == "batch" else RunningStatsBatchNorm2d, eps=eps)
