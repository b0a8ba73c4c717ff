"""The detection layer, mask pasting, and the way back to the original image's pixels.

Shape letters:
    R: ROIs of one image; C: classes including background
    D: detections of one image (at most detection_max_instances)
    M: head mask size (28); H, W: the original image's size
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from .boxes import decode_deltas, keep_min_size
from .proposals import clip_to_window


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
) -> BoxDetections:
    """Decode, threshold, per-class NMS, keep the best (seed section 1.3.1; matterport `refine_detections`).

    class_logits: (R, C); deltas: (R, C, 4); rois: (R, 4). class_mode "all" makes every (ROI, class) pair
    above min_confidence a candidate (torchvision); "argmax" only each ROI's best class (matterport).
    """
    probabilities = torch.softmax(class_logits, dim=-1)  # (R, C)
    num_classes = probabilities.shape[1]
    if class_mode == "argmax":
        scores, labels = probabilities.max(dim=1)  # (R,)
        class_deltas = deltas[torch.arange(len(labels), device=labels.device), labels]  # (R, 4)
        boxes = clip_to_window(decode_deltas(class_deltas, rois, std_dev), window)  # (R, 4)
        candidate = torch.where((labels > 0) & (scores >= min_confidence))[0]
    else:
        boxes = clip_to_window(decode_deltas(deltas, rois[:, None, :], std_dev), window)  # (R, C, 4)
        labels = torch.arange(num_classes, device=class_logits.device).expand_as(probabilities)
        # Drop the background column, then treat every (ROI, class) pair as a candidate, ROI-major.
        boxes, scores, labels = boxes[:, 1:].reshape(-1, 4), probabilities[:, 1:].reshape(-1), labels[:, 1:].reshape(-1)
        candidate = torch.where(scores > min_confidence)[0]
    boxes, scores, labels = boxes[candidate], scores[candidate], labels[candidate]
    if min_size > 0:
        keep = keep_min_size(boxes, min_size)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes, scores, labels, nms_threshold)[:max_instances]  # sorted by decreasing score
    return BoxDetections(boxes[keep], scores[keep], labels[keep])


def paste_masks(masks: Tensor, boxes: Tensor, height: int, width: int, threshold: float) -> Tensor:
    """Paste (D, M, M) mask probabilities into the image at (D, 4) boxes -> (D, H, W) bool.

    Each mask is padded by one cell of zeros and its box grown to match (so the mask fades to 0 at the
    box edge rather than being cut), the box corners truncated to whole pixels, and the mask resized
    bilinearly (half-pixel centres) to the box: the same result as resizing each mask with
    `F.interpolate(..., mode="bilinear", align_corners=False)` and copying it in, as torchvision does,
    but done for all masks at once as two batched matrix products (bilinear resizing is separable).
    """
    num = masks.shape[0]
    if num == 0:
        return torch.zeros((0, height, width), dtype=torch.bool, device=masks.device)
    size = masks.shape[-1]
    padded = torch.nn.functional.pad(masks, (1, 1, 1, 1))  # (D, M+2, M+2)
    scale = (size + 2) / size
    half_w = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    half_h = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    center_x = (boxes[:, 2] + boxes[:, 0]) * 0.5
    center_y = (boxes[:, 3] + boxes[:, 1]) * 0.5
    x0 = (center_x - half_w).to(torch.int64)  # truncation toward zero, as torchvision's .to(int64)
    x1 = (center_x + half_w).to(torch.int64)
    y0 = (center_y - half_h).to(torch.int64)
    y1 = (center_y + half_h).to(torch.int64)
    rows = _resize_weights(y0, y1, height, size + 2, padded.dtype)  # (D, H, M+2)
    cols = _resize_weights(x0, x1, width, size + 2, padded.dtype)  # (D, W, M+2)
    pasted = rows @ padded @ cols.transpose(1, 2)  # (D, H, M+2) @ (D, M+2, M+2) @ (D, M+2, W) -> (D, H, W)
    return pasted >= threshold


def _resize_weights(start: Tensor, end: Tensor, length: int, source: int, dtype) -> Tensor:
    """(D, length, source) bilinear weights that resize a source-long line to the box [start, end]
    (end inclusive, so end - start + 1 output pixels), placed at `start` in a line of `length` pixels;
    rows outside the box are zero.
    """
    out_size = (end - start + 1).clamp(min=1).to(dtype)  # (D,)
    pixel = torch.arange(length, device=start.device)
    local = (pixel[None, :] - start[:, None]).to(dtype)  # (D, length) position inside the box
    inside = (local >= 0) & (local < out_size[:, None])
    # Half-pixel centres, as F.interpolate(align_corners=False): src = (dst + 0.5) * in/out - 0.5, >= 0.
    src = ((local + 0.5) * (source / out_size[:, None]) - 0.5).clamp(min=0)
    low = src.floor().clamp(max=source - 1)
    frac = src - low
    low = low.to(torch.int64)
    high = (low + 1).clamp(max=source - 1)
    weights = torch.zeros((start.shape[0], length, source), dtype=dtype, device=start.device)
    weights.scatter_add_(2, low[..., None], (1 - frac)[..., None])
    weights.scatter_add_(2, high[..., None], frac[..., None])
    return weights * inside[..., None]


def to_original(boxes: Tensor, window: tuple[float, float, float, float], scale: tuple[float, float], original_size: tuple[int, int]) -> Tensor:
    """(D, 4) boxes in padded-batch pixels -> the original image's pixels (undo padding offset and resize)."""
    y1, x1, _, _ = window
    scale_y, scale_x = scale
    shift = torch.tensor([x1, y1, x1, y1], dtype=boxes.dtype, device=boxes.device)
    factor = torch.tensor([scale_x, scale_y, scale_x, scale_y], dtype=boxes.dtype, device=boxes.device)
    return (boxes - shift) / factor
