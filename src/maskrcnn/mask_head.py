"""Mask head: ROI features -> one 28x28 mask logit map per class; mask targets; mask loss.

Shape letters:
    D: ROIs (detections at inference, positive ROIs in training)
    F: channels of the pooled features; S: mask pool size (14); M: mask size (28)
    C: classes including background
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from .layers import head_norm_layer


class MaskHead(nn.Module):
    """Four 3x3 convs (with batch norm when norm == "batch"), a 2x2 stride-2 deconv, a 1x1 conv per class."""

    def __init__(self, *, in_channels: int, channels: int, num_classes: int, norm: str, bn_statistics: str, eps: float,
                 num_convs: int = 4):
        """norm "batch": each conv followed by batch norm (`head_norm_layer(bn_statistics, eps)`), "none": not."""
        super().__init__()
        layers = []
        for i in range(num_convs):
            conv_in = in_channels if i == 0 else channels
            if norm == "batch":
                layers += [nn.Conv2d(conv_in, channels, 3, padding=1, bias=False), head_norm_layer(bn_statistics, eps)(channels)]
            else:
                layers.append(nn.Conv2d(conv_in, channels, 3, padding=1))
            layers.append(nn.ReLU(inplace=True))
        self.convs = nn.Sequential(*layers)
        self.upsample = nn.ConvTranspose2d(channels, channels, 2, stride=2)
        self.mask_logits = nn.Conv2d(channels, num_classes, 1)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, pooled: Tensor) -> Tensor:
        if pooled.device.type == "cpu":  # 14x14 maps: channels-last convs 2x faster, backward too
            pooled = pooled.contiguous(memory_format=torch.channels_last)
        x = self.convs(pooled)  # (D, F, S, S) -> (D, channels, S, S)
        x = F.relu(self.upsample(x))  # -> (D, channels, M, M)
        return self.mask_logits(x)  # -> (D, C, M, M)


def sample_mask_rois(num_positive: int, limit: int, device=None) -> Tensor:
    """(P,) indices of the positive ROIs that train the mask head: all of them when limit is 0 or not
    exceeded, else `limit` at random (torch's global generator, so a resumed run draws alike), in order."""
    if limit == 0 or num_positive <= limit:
        return torch.arange(num_positive, device=device)
    return torch.randperm(num_positive, device=device)[:limit].sort().values


def select_class(mask_logits: Tensor, labels: Tensor) -> Tensor:
    """(D, C, M, M) logits and (D,) labels -> (D, M, M) logits of each ROI's class."""
    # labels.shape[0], not len(labels): a traced graph (ONNX export) keeps the count dynamic
    return mask_logits[torch.arange(labels.shape[0], device=labels.device), labels]


@torch.no_grad()
def mask_targets(gt_masks: Tensor, rois: Tensor, matched_gt: Tensor, mask_size: int) -> Tensor:
    """(P, M, M) float targets in [0, 1]: each positive ROI's ground-truth mask cut out at the ROI and resized,
    as torchvision's `project_masks_on_boxes` (roi_align, aligned=False, adaptive sampling; not thresholded).

    gt_masks: (G, h, w) masks of the resized image; rois: (P, 4) x1 y1 x2 y2 in that image's pixels;
    matched_gt: (P,) index of each ROI's ground truth.
    """
    if len(rois) == 0:
        return rois.new_zeros((0, mask_size, mask_size))
    masks = gt_masks[:, None].to(rois.dtype)  # (G, 1, h, w): each ROI samples its own truth by index below
    # roi_align's batch index picks each ROI's ground truth, so the G masks are not copied once per ROI
    # (P copies of a full-image float mask: ~0.4 GB per 800x1066 image at 128 positives).
    index = matched_gt.to(rois.dtype)[:, None]  # (P, 1)
    return roi_align(masks, torch.cat((index, rois), dim=1), mask_size, spatial_scale=1.0)[:, 0]  # (P, M, M)


def mrcnn_mask_loss(mask_logits: Tensor, labels: Tensor, targets: Tensor) -> Tensor:
    """Binary cross entropy of each positive ROI's true-class mask; exactly 0 without positives.

    mask_logits: (P, C, M, M) for the positive ROIs; labels: (P,); targets: (P, M, M).
    """
    if len(labels) == 0:
        return mask_logits.sum() * 0.0
    logits = select_class(mask_logits, labels)
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))


# Keras' epsilon: `K.binary_crossentropy` clips probabilities to [1e-7, 1 - 1e-7]
PROBABILITY_CLIP = 1e-7


def mrcnn_mask_loss_clipped(mask_logits: Tensor, labels: Tensor, targets: Tensor) -> Tensor:
    """matterport's `mrcnn_mask_loss_graph`: binary cross entropy of the sigmoid of each positive ROI's
    true-class mask with the probability clipped to [1e-7, 1 - 1e-7] (`K.binary_crossentropy`), averaged over
    positives x M x M; exactly 0 without positives. Arguments as `mrcnn_mask_loss`."""
    if len(labels) == 0:
        return mask_logits.sum() * 0.0
    probability = torch.sigmoid(select_class(mask_logits, labels)).clamp(PROBABILITY_CLIP, 1 - PROBABILITY_CLIP)
    target = targets.to(probability.dtype)
    return -(target * torch.log(probability) + (1 - target) * torch.log(1 - probability)).mean()
