"""Box head: ROI features -> class logits and per-class box deltas; detection targets; box losses.

Shape letters:
    R: ROIs over all images of the batch
    F: channels of the pooled features; S: pool size (7)
    C: classes including background
    G: ground-truth boxes of one image
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou

from .boxes import encode_deltas
from .layers import head_norm_layer
from .matching import label_anchors, sample_labels
from .structures import NEGATIVE, POSITIVE


class BoxHead(nn.Module):
    """Shared layers, then class logits (R, C) and deltas (R, C, 4).

    form "fc": two fully connected layers of `hidden` (torchvision's TwoMLPHead);
    form "conv": a SxS valid conv of `hidden` (a fully connected layer over the crop) and a 1x1 conv, each
    with batch norm (the seed's `fpn_classifier_graph`);
    form "conv4fc": four 3x3 convs of F with batch norm and one fully connected layer (torchvision v2).
    """

    def __init__(self, *, in_channels: int, pool_size: int, hidden: int, num_classes: int, form: str, bn_statistics: str, eps: float):
        """bn_statistics: "batch" or "running", for the batch norms of "conv" and "conv4fc" (`head_norm_layer`)."""
        super().__init__()
        self.form = form
        if form == "fc":
            self.shared = nn.Sequential(
                nn.Flatten(),
                nn.Linear(in_channels * pool_size * pool_size, hidden), nn.ReLU(inplace=True),
                nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            )
        elif form == "conv":
            norm = head_norm_layer(bn_statistics, eps)
            self.shared = nn.Sequential(
                nn.Conv2d(in_channels, hidden, pool_size), norm(hidden), nn.ReLU(inplace=True),
                nn.Conv2d(hidden, hidden, 1), norm(hidden), nn.ReLU(inplace=True),
                nn.Flatten(),
            )
        else:  # "conv4fc"
            norm = head_norm_layer(bn_statistics, 1e-5)  # torchvision v2's heads keep BatchNorm2d's default eps
            layers = []
            for _ in range(4):
                layers += [nn.Conv2d(in_channels, in_channels, 3, padding=1, bias=False), norm(in_channels), nn.ReLU(inplace=True)]
            layers += [nn.Flatten(), nn.Linear(in_channels * pool_size * pool_size, hidden), nn.ReLU(inplace=True)]
            self.shared = nn.Sequential(*layers)
        self.class_logits = nn.Linear(hidden, num_classes)
        self.deltas = nn.Linear(hidden, num_classes * 4)

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        x = self.shared(pooled)  # (R, F, S, S) -> (R, hidden)
        logits = self.class_logits(x)  # (R, C)
        deltas = self.deltas(x).unflatten(1, (-1, 4))  # (R, C*4) -> (R, C, 4), also for R = 0
        return logits, deltas


# ---------------------------------------------------------------------------------------------- targets
@dataclass
class DetectionTargets:
    """The sampled ROIs of each image and what the heads should predict for them."""

    rois: list[Tensor]  # per image (Ri, 4) x1 y1 x2 y2, positives first
    labels: Tensor  # (R,) int64 class of each ROI, 0 for negatives
    deltas: Tensor  # (R, 4) box targets for the ROI's class (zeros for negatives)
    matched_gt: list[Tensor]  # per image (Pi,) index of the ground truth of each positive ROI
    num_positive: list[int]  # per image, the first num_positive[i] rows of rois[i] are positive


@torch.no_grad()
def detection_targets(
    proposals: list[Tensor],
    gt_boxes: list[Tensor],
    gt_labels: list[Tensor],
    *,
    rois_per_image: int,
    positive_ratio: float,
    positive_iou: float,
    negative_iou: float,
    std_dev,
    generator: torch.Generator | None = None,
) -> DetectionTargets:
    """Sample ROIs for the heads (seed section 2.1, matterport's `detection_targets_graph`).

    The ground-truth boxes are added to the proposals (so every object has a perfect ROI early in
    training); ROIs at IoU >= positive_iou are positives (at most positive_ratio of rois_per_image),
    below negative_iou negatives fill up the rest.
    """
    samples = []
    for props, boxes, classes in zip(proposals, gt_boxes, gt_labels):
        candidates = torch.cat((props, boxes), dim=0)  # (M + G, 4)
        iou = box_iou(boxes, candidates) if len(boxes) else candidates.new_zeros((0, len(candidates)))
        roi_labels, matched = label_anchors(iou, positive_iou, negative_iou, allow_low_quality=False)
        roi_labels = sample_labels(roi_labels, rois_per_image, positive_ratio, generator)
        positive = torch.where(roi_labels == POSITIVE)[0]
        negative = torch.where(roi_labels == NEGATIVE)[0]
        samples.append(image_sample(candidates[torch.cat((positive, negative))], boxes, classes, matched[positive], std_dev))
    return collect_samples(samples)


def image_sample(rois: Tensor, gt_boxes: Tensor, gt_classes: Tensor, gt_index: Tensor, std_dev) -> tuple:
    """One image's sample: rois (R, 4) whose first P = len(gt_index) rows are positives matched to
    gt_boxes[gt_index] -> (rois, labels (R,) (0 past the positives), deltas (R, 4) (0 past them), gt_index)."""
    positives = len(gt_index)
    labels = torch.zeros(len(rois), dtype=torch.int64, device=rois.device)
    deltas = torch.zeros((len(rois), 4), dtype=rois.dtype, device=rois.device)
    if positives:
        labels[:positives] = gt_classes[gt_index]
        deltas[:positives] = encode_deltas(rois[:positives], gt_boxes[gt_index], std_dev)
    return rois, labels, deltas, gt_index


def collect_samples(samples: list[tuple]) -> DetectionTargets:
    """The per-image samples of `image_sample` as one DetectionTargets."""
    rois, labels, deltas, matched_gt = (list(column) for column in zip(*samples))
    return DetectionTargets(rois, torch.cat(labels), torch.cat(deltas), matched_gt, [len(m) for m in matched_gt])


def padded_sample_sizes(num_positive: int, num_negative: int, rois_per_image: int, positive_ratio: float) -> tuple[int, int]:
    """(positives, negatives) kept by matterport's `detection_targets_graph`: at most
    int(rois_per_image * positive_ratio) positives, then int(float32(1 / positive_ratio) * positives) -
    positives negatives (TensorFlow multiplies in float32); without positives, no negative at all."""
    positives = min(num_positive, int(rois_per_image * positive_ratio))
    wanted = int(torch.tensor(1.0 / positive_ratio, dtype=torch.float32) * torch.tensor(float(positives), dtype=torch.float32))
    return positives, min(num_negative, max(wanted - positives, 0))


@torch.no_grad()
def detection_targets_zero_padded(
    proposals: list[Tensor],
    gt_boxes: list[Tensor],
    gt_labels: list[Tensor],
    crowd_boxes: list[Tensor] | None = None,
    *,
    rois_per_image: int,
    positive_ratio: float,
    positive_iou: float,
    negative_iou: float,
    std_dev,
    crowd_iou: float = 0.001,
    generator: torch.Generator | None = None,
) -> DetectionTargets:
    """Sample ROIs as matterport's `detection_targets_graph`: proposals only (no ground-truth box added);
    positives at IoU >= positive_iou, negatives below negative_iou that overlap no crowd box at IoU >=
    crowd_iou, in the counts of `padded_sample_sizes` (random subsets), and zero ROIs (0, 0, 0, 0) with
    class 0 padding each image to rois_per_image rows. The padding goes through the box head and counts in
    `mrcnn_class_loss` as the background class, as matterport's does.

    proposals, gt_boxes, crowd_boxes: per image (M, 4), (G, 4), (K, 4) in one frame; gt_labels: per image (G,).
    """
    samples = []
    crowds = crowd_boxes if crowd_boxes is not None else [None] * len(proposals)
    for props, boxes, classes, crowd in zip(proposals, gt_boxes, gt_labels, crowds):
        iou = box_iou(boxes, props) if len(boxes) else props.new_zeros((0, len(props)))  # (G, M)
        best_iou, matched = iou.max(dim=0) if len(boxes) else (props.new_full((len(props),), -1.0), props.new_zeros(len(props), dtype=torch.int64))
        negative_ok = best_iou < negative_iou
        if crowd is not None and len(crowd):
            negative_ok &= box_iou(crowd, props).max(dim=0).values < crowd_iou
        positive = torch.where(best_iou >= positive_iou)[0]
        negative = torch.where(negative_ok)[0]
        keep_positive, keep_negative = padded_sample_sizes(len(positive), len(negative), rois_per_image, positive_ratio)
        positive = positive[torch.randperm(len(positive), generator=generator).to(positive.device)[:keep_positive]]
        negative = negative[torch.randperm(len(negative), generator=generator).to(negative.device)[:keep_negative]]
        padding = max(rois_per_image - len(positive) - len(negative), 0)
        image_rois = torch.cat((props[positive], props[negative], props.new_zeros((padding, 4))))  # (rois_per_image, 4)
        samples.append(image_sample(image_rois, boxes, classes, matched[positive], std_dev))
    return collect_samples(samples)


# ---------------------------------------------------------------------------------------------- losses
def mrcnn_class_loss(class_logits: Tensor, labels: Tensor, active_classes: Tensor | None = None) -> Tensor:
    """Cross entropy over all sampled ROIs (zero-padding rows included). class_logits: (R, C); labels: (R,).

    active_classes: None, or (C,) bool, the classes the images' data sets have: matterport's
    `mrcnn_class_loss_graph` drops the rows whose predicted class (argmax) is not active and averages over
    the rest (a plain mean when every class is active).
    """
    if len(labels) == 0:
        return class_logits.sum() * 0.0
    if active_classes is None:
        return F.cross_entropy(class_logits, labels)
    weight = active_classes.to(class_logits.dtype)[class_logits.argmax(dim=1)]  # (R,) 1 where the prediction is active
    loss = F.cross_entropy(class_logits, labels, reduction="none") * weight
    return loss.sum() / weight.sum()


def mrcnn_bbox_loss(deltas: Tensor, labels: Tensor, target_deltas: Tensor) -> Tensor:
    """Smooth L1 (beta 1/9) on the positives' deltas of their true class, divided by the ROI count.

    deltas: (R, C, 4); labels: (R,); target_deltas: (R, 4). Exactly 0 when there is no positive.
    """
    positive = torch.where(labels > 0)[0]
    if len(positive) == 0:
        return deltas.sum() * 0.0
    predicted = deltas[positive, labels[positive]]  # (P, 4)
    loss = F.smooth_l1_loss(predicted, target_deltas[positive], beta=1.0 / 9, reduction="sum")
    return loss / labels.numel()


def mrcnn_bbox_loss_per_positive(deltas: Tensor, labels: Tensor, target_deltas: Tensor) -> Tensor:
    """matterport's `mrcnn_bbox_loss_graph`: smooth L1 with beta 1 on the positives' deltas of their true
    class, averaged over 4 x the positives. Arguments as `mrcnn_bbox_loss`; exactly 0 without positives."""
    positive = torch.where(labels > 0)[0]
    if len(positive) == 0:
        return deltas.sum() * 0.0
    predicted = deltas[positive, labels[positive]]  # (P, 4)
    return F.smooth_l1_loss(predicted, target_deltas[positive], beta=1.0, reduction="mean")
