"""IoU matching and balanced sampling, shared by the RPN targets and the detection targets.

Shape letters:
    G: ground-truth boxes
    M: boxes being labelled (anchors or proposals)
"""
from __future__ import annotations

import torch
from torch import Tensor

from .structures import IGNORE, NEGATIVE, POSITIVE


def label_anchors(iou: Tensor, positive_iou: float, negative_iou: float, allow_low_quality: bool) -> tuple[Tensor, Tensor]:
    """Label each of M boxes from a (G, M) IoU matrix.

    Returns labels (M,) int64 POSITIVE / NEGATIVE / IGNORE and matched (M,) int64, the index of the best
    ground truth of each box (0 where G == 0). IoU >= positive_iou: POSITIVE; < negative_iou: NEGATIVE;
    between: IGNORE. With allow_low_quality, every ground truth's best box(es) are POSITIVE too (Faster
    R-CNN: "the anchor with the highest IoU with a ground-truth box"), so no object goes without an anchor.
    Such a box stays matched to its own best ground truth, which may be another one (torchvision's
    `Matcher.set_low_quality_matches_`, matterport's `build_rpn_targets`: `anchor_iou_argmax`).
    """
    num_boxes = iou.shape[1]
    if iou.shape[0] == 0:
        return (
            torch.full((num_boxes,), NEGATIVE, dtype=torch.int64, device=iou.device),
            torch.zeros((num_boxes,), dtype=torch.int64, device=iou.device),
        )
    best_iou, matched = iou.max(dim=0)  # (M,)
    labels = torch.full((num_boxes,), IGNORE, dtype=torch.int64, device=iou.device)
    labels[best_iou < negative_iou] = NEGATIVE
    labels[best_iou >= positive_iou] = POSITIVE
    if allow_low_quality:
        best_per_gt = iou.max(dim=1, keepdim=True).values  # (G, 1)
        # Ties count: every box sharing a ground truth's best IoU becomes positive.
        _, box_index = torch.where((iou == best_per_gt) & (best_per_gt > 0))
        labels[box_index] = POSITIVE
    return labels, matched


def sample_labels(labels: Tensor, sample_size: int, positive_fraction: float, generator: torch.Generator | None = None) -> Tensor:
    """Keep at most sample_size labels, at most positive_fraction of them POSITIVE; the rest become IGNORE.

    Positives are drawn at random when there are too many; negatives fill up the remainder.
    """
    labels = labels.clone()
    positive = torch.where(labels == POSITIVE)[0]
    negative = torch.where(labels == NEGATIVE)[0]
    max_positive = int(sample_size * positive_fraction)
    if len(positive) > max_positive:
        drop = positive[torch.randperm(len(positive), generator=generator, device="cpu")[max_positive:].to(labels.device)]
        labels[drop] = IGNORE
        num_positive = max_positive
    else:
        num_positive = len(positive)
    max_negative = sample_size - num_positive
    if len(negative) > max_negative:
        drop = negative[torch.randperm(len(negative), generator=generator, device="cpu")[max_negative:].to(labels.device)]
        labels[drop] = IGNORE
    return labels
