"""Which class a detection was against which class its ground truth was: the confusion matrix over the
classes plus background at one IoU and score threshold, and the per-class precision, recall and F1 it gives.

Matching, per image, detections in descending score order (ties keep their order):
1. a detection takes the unmatched ground truth of its own class with the highest IoU >= the threshold
   (as COCOeval's matching: these are the true positives);
2. a detection left over takes the unmatched ground truth of another class with the highest IoU >= the
   threshold: a confusion between the two classes;
3. a detection still left over that covers a crowd region (intersection over the detection's area >= the
   threshold, COCOeval's rule for crowds) is ignored; any other is spurious (ground truth "background");
4. a ground truth left unmatched is missed (detected as "background").
A second detection of an already matched object is spurious, as in COCOeval.

Shape letters:
    C: classes including background (0)     D: detections of one image     N: ground truths of one image
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .structures import Detections

BACKGROUND = 0  # row and column of the matrix for "no ground truth" (spurious) and "not detected" (missed)


def _intersections_and_areas(detections: Detections, ground_truth: Detections, use_masks: bool):
    """(D, N) intersections, (D,) detection areas, (N,) ground-truth areas, in pixels, of masks or boxes."""
    if use_masks:
        # (D, H, W) -> (D, H*W): every pair's intersection is one matrix product.
        det = detections.full_masks().cpu().numpy().astype(bool)
        gt = ground_truth.full_masks().cpu().numpy().astype(bool)
        if det.shape[1:] != gt.shape[1:]:
            raise ValueError(f"detections are {det.shape[1:]} masks but the ground truth is {gt.shape[1:]}")
        flat_det = det.reshape(len(det), -1).astype(np.float32)
        flat_gt = gt.reshape(len(gt), -1).astype(np.float32)
        return (flat_det @ flat_gt.T).astype(np.float64), flat_det.sum(1).astype(np.float64), flat_gt.sum(1).astype(np.float64)
    det = detections.boxes.cpu().double().numpy()  # (D, 4) x1 y1 x2 y2
    gt = ground_truth.boxes.cpu().double().numpy()  # (N, 4)
    widths = np.clip(np.minimum(det[:, None, 2], gt[None, :, 2]) - np.maximum(det[:, None, 0], gt[None, :, 0]), 0, None)
    heights = np.clip(np.minimum(det[:, None, 3], gt[None, :, 3]) - np.maximum(det[:, None, 1], gt[None, :, 1]), 0, None)

    def area(b):
        return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])

    return widths * heights, area(det), area(gt)


def image_confusion(ground_truth: Detections, detections: Detections, num_classes: int, *,
                    iou_threshold: float = 0.5, score_threshold: float = 0.0, use_masks: bool = True) -> np.ndarray:
    """The (C, C) int64 confusion matrix of one image: rows the ground truth's class, columns the detection's.

    ground_truth: its labels are 1..C-1, negative for crowd regions (`evaluation.ground_truth_detections(...,
    include_crowd=True)`). detections: those scoring >= score_threshold are counted. Row 0 holds spurious
    detections, column 0 missed ground truths; [0, 0] is always 0.
    """
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    detections = detections[detections.scores >= score_threshold]
    order = torch.argsort(detections.scores, descending=True, stable=True)
    detections = detections[order]
    det_labels = detections.labels.cpu().numpy()
    gt_labels = ground_truth.labels.cpu().numpy()
    crowd = gt_labels < 0
    if len(detections) == 0 or len(ground_truth) == 0:
        inter = np.zeros((len(detections), len(ground_truth)))
        det_area, gt_area = np.ones(len(detections)), np.ones(len(ground_truth))
    else:
        inter, det_area, gt_area = _intersections_and_areas(detections, ground_truth, use_masks)
    union = det_area[:, None] + gt_area[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)  # (D, N)
    covered = np.divide(inter, det_area[:, None], out=np.zeros_like(inter), where=det_area[:, None] > 0)  # (D, N)

    gt_match = np.full(len(gt_labels), -1, dtype=np.int64)  # the detection each ground truth went to
    det_match = np.full(len(det_labels), -1, dtype=np.int64)
    for same_class in (True, False):
        for d in range(len(det_labels)):
            if det_match[d] >= 0:
                continue
            allowed = (gt_match < 0) & ~crowd & (iou[d] >= iou_threshold)
            if same_class:
                allowed &= gt_labels == det_labels[d]
            if allowed.any():
                g = int(np.argmax(np.where(allowed, iou[d], -1.0)))
                gt_match[g], det_match[d] = d, g
                matrix[gt_labels[g], det_labels[d]] += 1
    for d in np.flatnonzero(det_match < 0):
        if not (crowd & (covered[d] >= iou_threshold)).any():
            matrix[BACKGROUND, det_labels[d]] += 1
    for g in np.flatnonzero((gt_match < 0) & ~crowd):
        matrix[gt_labels[g], BACKGROUND] += 1
    return matrix


def confusion_matrix(ground_truths: Sequence[Detections], detections: Sequence[Detections], num_classes: int, *,
                     iou_threshold: float = 0.5, score_threshold: float = 0.0, use_masks: bool = True) -> np.ndarray:
    """The (C, C) int64 sum of `image_confusion` over images (one ground truth and one Detections each)."""
    if len(ground_truths) != len(detections):
        raise ValueError(f"confusion_matrix: {len(ground_truths)} ground truths but {len(detections)} detection lists")
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for ground_truth, found in zip(ground_truths, detections):
        matrix += image_confusion(ground_truth, found, num_classes, iou_threshold=iou_threshold,
                                  score_threshold=score_threshold, use_masks=use_masks)
    return matrix


def errors(matrix: np.ndarray) -> int:
    """Everything but the correct detections: missed, spurious and confused instances."""
    return int(matrix.sum() - np.trace(matrix))


def precision_recall_f1(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Per class 1..C-1 from a confusion matrix: {"tp", "fp", "fn", "precision", "recall", "f1"}, each (C-1,).

    tp = the diagonal; fp = detections of the class that were another class or nothing; fn = ground truths of
    the class detected as another class or missed. precision is NaN without detections, recall NaN without
    ground truth, F1 = 2PR / (P + R) (0 when both are 0, NaN when either is NaN).
    """
    tp = np.diag(matrix)[1:].astype(np.float64)
    fp = matrix[:, 1:].sum(0) - tp
    fn = matrix[1:, :].sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    f1 = np.where(np.isnan(precision) | np.isnan(recall), np.nan, f1)
    return {"tp": tp.astype(np.int64), "fp": fp.astype(np.int64), "fn": fn.astype(np.int64), "precision": precision,
            "recall": recall, "f1": f1}
