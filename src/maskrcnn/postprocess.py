"""The detection layer, mask pasting, and the way back to the original image's pixels (`frame.PixelFrame`
puts the last two together per image).

Shape letters:
    R: ROIs of one image; C: classes including background
    D: detections of one image (at most detection_max_instances)
    M: head mask size (28); H, W: the original image's size
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from .boxes import clip_to_window, keep_min_size
from .nms import first_kept_nms, top_k_stable  # torchvision's result, without a full pass per class

if TYPE_CHECKING:  # for the annotation only: frame.PixelFrame finishes with this module's paste_masks
    from .frame import PixelFrame


@dataclass
class BoxDetections:
    """Detections of one image before masks: boxes in padded-batch pixels."""

    boxes: Tensor  # (D, 4) x1 y1 x2 y2
    scores: Tensor  # (D,) descending
    labels: Tensor  # (D,) int64, 1..C-1


def detect(
    class_logits: Tensor,
    deltas: Tensor,
    rois: Tensor,
    window: tuple[float, float, float, float],
    *,
    std_dev,
    min_confidence: float,
    nms_threshold: float,
    max_instances: int,
    min_size: float,
    class_mode: str,
    frame: PixelFrame,
) -> BoxDetections:
    """Decode, threshold, per-class NMS, keep the best (seed section 1.3.1; matterport `refine_detections`).

    class_logits: (R, C); deltas: (R, C, 4); rois: (R, 4). class_mode "all" makes every (ROI, class) pair
    above min_confidence a candidate (torchvision); "argmax" only each ROI's best class (matterport).
    frame: the box arithmetic (`frame.PixelFrame`, or the matterport layout's `MatterportFrame`).
    """
    window = frame.detection_window(window)
    probabilities = torch.softmax(class_logits, dim=-1)  # (R, C)
    num_classes = probabilities.shape[1]
    if class_mode == "argmax":
        scores, labels = probabilities.max(dim=1)  # (R,)
        class_deltas = deltas[torch.arange(labels.shape[0], device=labels.device), labels]  # (R, 4); shape[0] stays dynamic when traced
        boxes = clip_to_window(frame.decode(class_deltas, rois, std_dev), window)  # (R, 4)
        candidate = torch.where((labels > 0) & (scores >= min_confidence))[0]
    else:
        boxes = clip_to_window(frame.decode(deltas, rois[:, None, :], std_dev), window)  # (R, C, 4)
        labels = torch.arange(num_classes, device=class_logits.device).expand_as(probabilities)
        # Drop the background column, then treat every (ROI, class) pair as a candidate, ROI-major.
        boxes, scores, labels = boxes[:, 1:].reshape(-1, 4), probabilities[:, 1:].reshape(-1), labels[:, 1:].reshape(-1)
        candidate = torch.where(scores > min_confidence)[0]
    boxes, scores, labels = boxes[candidate], scores[candidate], labels[candidate]
    if min_size > 0:
        keep = keep_min_size(boxes, min_size)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    # Candidates by decreasing score, equal scores in candidate order; NMS then ranks by position, not by score,
    # so that equal scores (saturated at 1.0 by a confident head) are broken alike in PyTorch and in an exported
    # graph, whose NMS sorts ties its own way. Without ties this is exactly batched_nms on the scores.
    order = top_k_stable(scores, scores.shape[0])  # (K,)
    boxes, scores, labels = boxes[order], scores[order], labels[order]
    rank = torch.arange(scores.shape[0], 0, -1, dtype=boxes.dtype, device=boxes.device)  # (K,) distinct, decreasing
    keep = first_kept_nms(boxes, rank, labels, nms_threshold, max_instances)  # (D,) by decreasing score
    return BoxDetections(boxes[keep], scores[keep], labels[keep])


def paste_masks(masks: Tensor, boxes: Tensor, height: int, width: int, threshold: float) -> Tensor:
    """Paste (D, M, M) mask probabilities into the image at (D, 4) boxes -> (D, H, W) bool.

    Each mask is padded by one cell of zeros and its box grown to match (so the mask fades to 0 at the
    box edge rather than being cut off), the box corners truncated to whole pixels, the mask resized
    bilinearly (half-pixel centres) to the box and thresholded. Only the box's pixels are computed, and
    written straight into a bool image: no full-image float mask per detection.
    """
    num = masks.shape[0]
    pasted = torch.zeros((num, height, width), dtype=torch.bool, device=masks.device)
    if num == 0:
        return pasted
    size = masks.shape[-1]
    padded = F.pad(masks, (1, 1, 1, 1))  # (D, M+2, M+2)
    grown = expand_boxes(boxes, (size + 2) / size).to(torch.int64).tolist()  # truncation toward zero
    for i, (x0, y0, x1, y1) in enumerate(grown):
        box_w, box_h = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
        # The exact resize of torchvision's paste (F.interpolate, bilinear, align_corners=False), so that
        # values sitting exactly on the threshold round the same way.
        resized = F.interpolate(padded[i][None, None], size=(box_h, box_w), mode="bilinear", align_corners=False)[0, 0]
        left, top = max(x0, 0), max(y0, 0)
        right, bottom = min(x1 + 1, width), min(y1 + 1, height)
        if right > left and bottom > top:
            pasted[i, top:bottom, left:right] = resized[top - y0:bottom - y0, left - x0:right - x0] > threshold
    return pasted


def expand_boxes(boxes: Tensor, scale: float) -> Tensor:
    """(D, 4) boxes grown about their centres by `scale` in width and height."""
    half_w = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    half_h = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    center_x = (boxes[:, 2] + boxes[:, 0]) * 0.5
    center_y = (boxes[:, 3] + boxes[:, 1]) * 0.5
    return torch.stack((center_x - half_w, center_y - half_h, center_x + half_w, center_y + half_h), dim=1)


def to_original(boxes: Tensor, window: tuple[int, int, int, int], original_size: tuple[int, int]) -> Tensor:
    """(D, 4) boxes in padded-batch pixels -> the original image's pixels (undo the padding offset and resize).

    window: (y1, x1, y2, x2) of the resized image inside the padded batch; original_size: (H, W).
    The ratios H / h and W / w are computed in float32, as torchvision's `resize_boxes` does, so that boxes
    near a pixel boundary truncate to the same whole pixel when masks are pasted (otherwise a change of
    about 1e-7 relative, far below a pixel).
    """
    y1, x1, y2, x2 = window
    ratio_y = (torch.tensor(original_size[0], dtype=torch.float32) / torch.tensor(y2 - y1, dtype=torch.float32)).item()
    ratio_x = (torch.tensor(original_size[1], dtype=torch.float32) / torch.tensor(x2 - x1, dtype=torch.float32)).item()
    shift = torch.tensor([x1, y1, x1, y1], dtype=boxes.dtype, device=boxes.device)
    factor = torch.tensor([ratio_x, ratio_y, ratio_x, ratio_y], dtype=boxes.dtype, device=boxes.device)
    return (boxes - shift) * factor
