"""Region Proposal Network: head, anchor targets and losses (seed section 1.2; Ren et al., 2015).

Shape letters:
    N: images in the batch
    A: anchors per location
    L: anchors over all levels and locations (sum of Hl*Wl*A)
    G: ground-truth boxes of one image
Per anchor the head gives an objectness (one logit for "sigmoid", two for "softmax": background, object)
and four deltas (dx, dy, dw, dh). Outputs are flattened in the anchors' order: level, y, x, anchor.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou

from .boxes import encode_deltas
from .matching import label_anchors, sample_labels
from .structures import IGNORE, NEGATIVE, POSITIVE


@dataclass
class RPNOutput:
    objectness: Tensor  # (N, L) logits for "sigmoid", (N, L, 2) logits for "softmax"
    deltas: Tensor  # (N, L, 4) dx dy dw dh, divided by rpn_bbox_std_dev
    level_sizes: list[int]  # anchors per level, summing to L

    @property
    def is_softmax(self) -> bool:
        return self.objectness.dim() == 3

    def ranking_scores(self) -> Tensor:
        """(N, L) scores that order anchors: logits for sigmoid (as torchvision ranks), object probability for softmax."""
        if self.is_softmax:
            return torch.softmax(self.objectness, dim=-1)[..., 1]
        return self.objectness

    def to_probability(self, ranking_scores: Tensor) -> Tensor:
        """Object probability from `ranking_scores` values."""
        return ranking_scores if self.is_softmax else torch.sigmoid(ranking_scores)


class RPNHead(nn.Module):
    """Shared 3x3 conv(s) with ReLU, then 1x1 convs for objectness and deltas, applied to every level."""

    def __init__(self, *, in_channels: int, conv_channels: int, conv_depth: int, anchors_per_location: int, objectness: str):
        super().__init__()
        layers = []
        for i in range(conv_depth):
            layers += [nn.Conv2d(in_channels if i == 0 else conv_channels, conv_channels, 3, padding=1), nn.ReLU(inplace=True)]
        self.conv = nn.Sequential(*layers)
        self.logits_per_anchor = 2 if objectness == "softmax" else 1
        self.objectness = nn.Conv2d(conv_channels, anchors_per_location * self.logits_per_anchor, 1)
        self.deltas = nn.Conv2d(conv_channels, anchors_per_location * 4, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)

    def forward(self, pyramid: list[Tensor]) -> RPNOutput:
        objectness, deltas, level_sizes = [], [], []
        for feature in pyramid:
            n, _, h, w = feature.shape
            shared = self.conv(feature)
            k = self.logits_per_anchor
            logits = self.objectness(shared)  # (N, A*k, Hl, Wl)
            logits = logits.view(n, -1, k, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, k)  # -> (N, Hl*Wl*A, k)
            boxes = self.deltas(shared)  # (N, A*4, Hl, Wl)
            boxes = boxes.view(n, -1, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)  # -> (N, Hl*Wl*A, 4)
            objectness.append(logits)
            deltas.append(boxes)
            level_sizes.append(logits.shape[1])
        objectness = torch.cat(objectness, dim=1)  # (N, L, k)
        if k == 1:
            objectness = objectness.squeeze(-1)  # (N, L)
        return RPNOutput(objectness, torch.cat(deltas, dim=1), level_sizes)


# ---------------------------------------------------------------------------------------------- targets
@dataclass
class RPNTargets:
    labels: Tensor  # (N, L) POSITIVE, NEGATIVE or IGNORE (after sampling)
    deltas: Tensor  # (N, L, 4) regression targets, meaningful where labels == POSITIVE


@torch.no_grad()
def rpn_targets(
    anchors: Tensor,
    gt_boxes: list[Tensor],
    windows: list[tuple[float, float, float, float]],
    *,
    positive_iou: float,
    negative_iou: float,
    anchors_per_image: int,
    positive_fraction: float,
    std_dev,
    ignore_crossing: bool,
    crowd_boxes: list[Tensor] | None = None,
    crowd_iou: float = 0.001,
    generator: torch.Generator | None = None,
) -> RPNTargets:
    """Label and sample anchors for each image (seed section 2.1; Faster R-CNN section 3.1.2).

    anchors: (L, 4) in padded-batch pixels; gt_boxes: per image (G, 4) in the same frame;
    windows: per image (y1, x1, y2, x2) of the real image inside the padded batch.
    An anchor is positive at IoU >= positive_iou, negative below negative_iou, and each ground truth's
    best anchor(s) positive even when that IoU is lower (matterport's `build_rpn_targets` sets the negatives
    first and the positives over them: the same labels). Each positive regresses onto its own best-IoU
    ground truth. crowd_boxes: per image (K, 4), or None; an anchor at IoU >= crowd_iou with a crowd box is
    never negative (`build_rpn_targets`). Then at most anchors_per_image are kept, at most
    positive_fraction of them positive; the rest become IGNORE.
    """
    labels, deltas = [], []
    crowds = crowd_boxes if crowd_boxes is not None else [None] * len(gt_boxes)
    for boxes, window, crowd in zip(gt_boxes, windows, crowds):
        if ignore_crossing:
            y1, x1, y2, x2 = window
            inside = (anchors[:, 0] >= x1) & (anchors[:, 1] >= y1) & (anchors[:, 2] <= x2) & (anchors[:, 3] <= y2)
        else:
            inside = None
        iou = box_iou(boxes, anchors) if len(boxes) else anchors.new_zeros((0, len(anchors)))  # (G, L)
        image_labels, matched = label_anchors(iou, positive_iou, negative_iou, allow_low_quality=True)
        if inside is not None:
            image_labels[~inside] = IGNORE
        if crowd is not None and len(crowd):
            near_crowd = box_iou(crowd, anchors).max(dim=0).values >= crowd_iou  # (L,)
            image_labels[(image_labels == NEGATIVE) & near_crowd] = IGNORE
        image_labels = sample_labels(image_labels, anchors_per_image, positive_fraction, generator)
        target = torch.zeros_like(anchors)
        positive = image_labels == POSITIVE
        if positive.any():
            target[positive] = encode_deltas(anchors[positive], boxes[matched[positive]], std_dev)
        labels.append(image_labels)
        deltas.append(target)
    return RPNTargets(torch.stack(labels), torch.stack(deltas))


# ---------------------------------------------------------------------------------------------- losses
def rpn_class_loss(objectness: Tensor, labels: Tensor) -> Tensor:
    """Cross entropy over the sampled anchors (labels != IGNORE), averaged over them.

    objectness: (N, L) or (N, L, 2) logits; labels: (N, L).
    """
    sampled = labels != IGNORE
    if not sampled.any():
        return objectness.sum() * 0.0
    target = labels[sampled]
    if objectness.dim() == 3:
        return F.cross_entropy(objectness[sampled], target)
    return F.binary_cross_entropy_with_logits(objectness[sampled], target.to(objectness.dtype))


def rpn_bbox_loss(deltas: Tensor, targets: RPNTargets) -> Tensor:
    """Smooth L1 (beta 1/9, as Detectron) over positive anchors, divided by the number of sampled anchors.

    Dividing by the sampled count rather than the positives keeps torchvision's balance between the two
    RPN losses. Exactly 0 when no anchor is positive.
    """
    positive = targets.labels == POSITIVE
    sampled = (targets.labels != IGNORE).sum().clamp(min=1)
    if not positive.any():
        return deltas.sum() * 0.0
    loss = F.smooth_l1_loss(deltas[positive], targets.deltas[positive], beta=1.0 / 9, reduction="sum")
    return loss / sampled


def rpn_bbox_loss_per_positive(deltas: Tensor, targets: RPNTargets) -> Tensor:
    """matterport's `rpn_bbox_loss_graph`: smooth L1 with beta 1 (`smooth_l1_loss`: 0.5 d^2 below 1, else
    |d| - 0.5) over the positive anchors' four deltas, averaged over 4 x the positives. Exactly 0 without
    positives. deltas: (N, L, 4); targets as for `rpn_bbox_loss`."""
    positive = targets.labels == POSITIVE
    if not positive.any():
        return deltas.sum() * 0.0
    return F.smooth_l1_loss(deltas[positive], targets.deltas[positive], beta=1.0, reduction="mean")
