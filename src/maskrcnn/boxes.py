"""Box geometry as pure functions: delta coding, clipping, sizes.

Boxes are (x1, y1, x2, y2) float pixels everywhere inside the library; other layouts (matterport's
normalised (y1, x1, y2, x2), COCO's (x, y, w, h)) are converted where they come in or go out.
Deltas are (dx, dy, dw, dh) as in R-CNN (Girshick et al., Eq. 1-4): the centre shift in units of the
reference box's size and the log of the size ratio, each divided by a standard deviation.

Shape letters:
    R: number of boxes
    K: any number of leading dimensions that broadcast against R
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

# exp(dw) is clamped so that a box grows at most 1000/16 times per decode (as Detectron does): keeps a
# random or diverging head from producing inf boxes.
DELTA_CLAMP = math.log(1000.0 / 16)


def encode_deltas(reference: Tensor, target: Tensor, std_dev) -> Tensor:
    """Deltas that move `reference` boxes onto `target` boxes.

    reference, target: (..., 4) x1 y1 x2 y2; std_dev: 4 numbers. Returns (..., 4) dx dy dw dh.
    """
    std = torch.as_tensor(std_dev, dtype=reference.dtype, device=reference.device)
    ref_w = reference[..., 2] - reference[..., 0]
    ref_h = reference[..., 3] - reference[..., 1]
    ref_cx = reference[..., 0] + 0.5 * ref_w
    ref_cy = reference[..., 1] + 0.5 * ref_h
    tgt_w = target[..., 2] - target[..., 0]
    tgt_h = target[..., 3] - target[..., 1]
    tgt_cx = target[..., 0] + 0.5 * tgt_w
    tgt_cy = target[..., 1] + 0.5 * tgt_h
    deltas = torch.stack(
        (
            (tgt_cx - ref_cx) / ref_w,
            (tgt_cy - ref_cy) / ref_h,
            torch.log(tgt_w / ref_w),
            torch.log(tgt_h / ref_h),
        ),
        dim=-1,
    )
    return deltas / std


def decode_deltas(deltas: Tensor, reference: Tensor, std_dev) -> Tensor:
    """Apply deltas to reference boxes; the inverse of `encode_deltas`.

    deltas: (..., 4) dx dy dw dh; reference: (..., 4) x1 y1 x2 y2 broadcastable to deltas.
    Returns (..., 4) x1 y1 x2 y2.
    """
    # Dividing by 1/std (torchvision's "weights") rather than multiplying by std keeps float64 results
    # identical to torchvision's to the last bit for the usual std devs (0.1 = 1/10 is not exact in binary).
    weights = [1.0 / s for s in std_dev]
    ref_w = reference[..., 2] - reference[..., 0]
    ref_h = reference[..., 3] - reference[..., 1]
    ref_cx = reference[..., 0] + 0.5 * ref_w
    ref_cy = reference[..., 1] + 0.5 * ref_h
    dx = deltas[..., 0] / weights[0]
    dy = deltas[..., 1] / weights[1]
    dw = (deltas[..., 2] / weights[2]).clamp(max=DELTA_CLAMP)
    dh = (deltas[..., 3] / weights[3]).clamp(max=DELTA_CLAMP)
    cx = dx * ref_w + ref_cx
    cy = dy * ref_h + ref_cy
    half_w = 0.5 * (torch.exp(dw) * ref_w)
    half_h = 0.5 * (torch.exp(dh) * ref_h)
    return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1)


def clip_boxes(boxes: Tensor, height: int | float, width: int | float) -> Tensor:
    """Clip (..., 4) x1 y1 x2 y2 boxes to the image [0, width] x [0, height]."""
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def box_sizes(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """(widths, heights) of (..., 4) x1 y1 x2 y2 boxes."""
    return boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]


def keep_min_size(boxes: Tensor, min_size: float) -> Tensor:
    """Indices of the (R, 4) boxes whose width and height are both >= min_size."""
    widths, heights = box_sizes(boxes)
    return torch.where((widths >= min_size) & (heights >= min_size))[0]


def clip_to_window(boxes: Tensor, window: tuple[float, float, float, float]) -> Tensor:
    """Clip (..., 4) boxes to window (y1, x1, y2, x2): the real image inside the padded batch."""
    y1, x1, y2, x2 = window
    if y1 == 0 and x1 == 0:
        return clip_boxes(boxes, y2, x2)
    x = boxes[..., 0::2].clamp(min=x1, max=x2)
    y = boxes[..., 1::2].clamp(min=y1, max=y2)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)
