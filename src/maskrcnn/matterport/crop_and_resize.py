"""Pyramid ROIAlign as matterport computes it (`CropAndResizePooler`, the matterport layout's
`roi_align.PyramidROIAlign`): TensorFlow's `crop_and_resize` on the level matterport's `PyramidROIAlign` picks.

`crop_and_resize` is not torchvision's `roi_align`: it takes one bilinear sample per output cell, at
n evenly spaced points that include both box edges, in normalised coordinates with the (H - 1) convention,
and a sample outside [0, H - 1] (beyond rounding error) is 0 (torchvision clamps samples in (-1, 0) and (H - 1, H) to the edge and
enlarges boxes smaller than one cell). Following TensorFlow's CPU kernel operation for operation:
    scale = (y2 - y1) * (Hf - 1) / (n - 1)
    y_i   = y1 * (Hf - 1) + i * scale            i = 0..n-1 (n = 1: the box centre)
    top   = tl + (tr - tl) * x_lerp; bottom = bl + (br - bl) * x_lerp; out = top + (bottom - top) * y_lerp
The level of a box is min(5, max(2, 4 + round(log2(sqrt(h * w) / (224 / sqrt(H * W)))))) with h, w
normalised and H, W the padded image's size; round is half to even, as tf.round.

Shape letters:
    R: boxes over all images; F: feature channels; Hf, Wf: one level's size; S: output size
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .normalized import to_normalized

def crop_and_resize(features: Tensor, boxes: Tensor, box_index: Tensor, size: int) -> Tensor:
    """TensorFlow's `crop_and_resize(method="bilinear", extrapolation_value=0)`, channels first.

    features: (N, F, Hf, Wf); boxes: (R, 4) y1 x1 y2 x2 normalised to the feature map ((H - 1) convention);
    box_index: (R,) image of each box. Returns (R, F, S, S).
    """
    height, width = features.shape[-2:]
    ys, y_inside = _sample_points(boxes[:, 0], boxes[:, 2], height, size)  # (R, S)
    xs, x_inside = _sample_points(boxes[:, 1], boxes[:, 3], width, size)
    top, bottom = ys.floor(), ys.ceil()
    left, right = xs.floor(), xs.ceil()
    y_lerp = (ys - top)[:, None, :, None]  # (R, 1, S, 1)
    x_lerp = (xs - left)[:, None, None, :]  # (R, 1, 1, S)

    channels = features.shape[1]
    table = features.permute(0, 2, 3, 1).reshape(-1, channels)  # (N*Hf*Wf, F)
    base = (box_index * (height * width))[:, None, None]  # (R, 1, 1)

    def gather(rows: Tensor, cols: Tensor) -> Tensor:
        """(R, F, S, S) feature values at rows (R, S) x cols (R, S), indices clamped into the map."""
        r = rows.clamp(0, height - 1).to(torch.int64)
        c = cols.clamp(0, width - 1).to(torch.int64)
        flat = base + r[:, :, None] * width + c[:, None, :]  # (R, S, S)
        # shape[0], not len(): tracing keeps it a graph value; F spelled out, as -1 is ambiguous when R is 0
        return table[flat.reshape(-1)].view(boxes.shape[0], size, size, channels).permute(0, 3, 1, 2)  # -> (R, F, S, S)

    top_left, top_right = gather(top, left), gather(top, right)
    bottom_left, bottom_right = gather(bottom, left), gather(bottom, right)
    upper = top_left + (top_right - top_left) * x_lerp
    lower = bottom_left + (bottom_right - bottom_left) * x_lerp
    crops = upper + (lower - upper) * y_lerp  # (R, F, S, S)
    inside = (y_inside[:, :, None] & x_inside[:, None, :])[:, None]  # (R, 1, S, S)
    return torch.where(inside, crops, torch.zeros_like(crops))


def _sample_points(start: Tensor, end: Tensor, length: int, size: int) -> tuple[Tensor, Tensor]:
    """(R, S) sample coordinates along one axis of a map `length` long, and whether each lies in [0, length - 1]."""
    steps = torch.arange(size, dtype=start.dtype, device=start.device)
    if size > 1:
        scale = (end - start) * (length - 1) / (size - 1)  # (R,)
        points = (start * (length - 1))[:, None] + steps[None, :] * scale[:, None]
    else:
        points = (0.5 * (start + end) * (length - 1))[:, None]
    # A box clipped to the border ends exactly on it, but the sum above may land a few ulps past the edge
    # (our boxes are matterport's normalised ones times (H - 1), so their last bits differ from its): such a
    # sample counts as on the edge, as in matterport's own float64 training graph (train_case_r50_512).
    slack = 16 * torch.finfo(points.dtype).eps * (length - 1)
    return points, (points >= -slack) & (points <= length - 1 + slack)


def assign_levels(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """(R,) int64 level 2..5 of (R, 4) normalised y1 x1 y2 x2 boxes (matterport's `PyramidROIAlign`)."""
    h = boxes[:, 2] - boxes[:, 0]
    w = boxes[:, 3] - boxes[:, 1]
    if torch.jit.is_tracing():  # the image's size is a graph value; math.sqrt would freeze the example's
        area = (image_size[0] * image_size[1]).to(torch.float64)
        ratio = torch.sqrt(h * w) / (224.0 / torch.sqrt(area)).to(h.dtype)
    else:
        ratio = torch.sqrt(h * w) / (224.0 / math.sqrt(image_size[0] * image_size[1]))
    level = 4 + torch.round(torch.log(ratio) / math.log(2.0))  # torch.round is half to even, as tf.round
    return level.nan_to_num(nan=2.0).clamp(2, 5).to(torch.int64)  # empty boxes: log(0) = -inf -> level 2


def pyramid_crop_and_resize(features: list[Tensor], boxes: list[Tensor], image_size: tuple[int, int], size: int) -> Tensor:
    """features: [P2..P5] each (N, F, Hl, Wl); boxes: per image (Ri, 4) x1 y1 x2 y2 in the padded image's
    pixels under the (H - 1) convention (`MatterportFrame`). Returns (R, F, S, S) in box order."""
    rois = torch.cat(boxes)  # (R, 4)
    index = torch.cat([torch.full_like(b[:, 0], i, dtype=torch.int64) for i, b in enumerate(boxes)])  # (R,); traced counts stay dynamic
    normalized = to_normalized(rois, image_size)  # (R, 4) y1 x1 y2 x2
    levels = assign_levels(normalized, image_size)
    first = features[0]
    pooled = first.new_zeros((rois.shape[0], first.shape[1], size, size))
    tracing = torch.jit.is_tracing()
    for level, feature in enumerate(features, start=2):
        chosen = torch.where(levels == level)[0]
        if not tracing and len(chosen) == 0:  # an exported graph keeps every level: the counts vary by image
            continue
        level_pooled = crop_and_resize(feature, normalized[chosen], index[chosen], size)  # (Rl, F, S, S)
        if tracing:  # ONNX export writes index_put with the example's Rl frozen in; scatter keeps it dynamic
            pooled = pooled.scatter(0, chosen.view(-1, 1, 1, 1).expand_as(level_pooled), level_pooled)
        else:
            pooled[chosen] = level_pooled
    return pooled


class CropAndResizePooler:
    """matterport's `PyramidROIAlign` with the interface of `roi_align.PyramidROIAlign`: pools boxes of the
    matterport frame from P2..P5. Its level rule is matterport's (224 / sqrt(image area), half-to-even
    rounding) and it takes one sample per output cell, so the FPN level settings and sampling_ratio of
    `PyramidROIAlign` do not apply."""

    def __init__(self, *, output_size: int, strides, **unused_roi_align_settings):
        self.output_size = output_size
        self.first_stride = strides[0]

    def uses_cpu_kernel(self, feature: Tensor) -> bool:
        """Never roi_align_cpu: the levels stay in the layout the backbone made."""
        return False

    def __call__(self, features: list[Tensor], boxes: list[Tensor]) -> Tensor:
        """features: [P2..P5] each (N, F, Hl, Wl); boxes: per image (Ri, 4) -> (R, F, S, S) in box order."""
        image_size = (features[0].shape[-2] * self.first_stride, features[0].shape[-1] * self.first_stride)
        return pyramid_crop_and_resize(features, boxes, image_size, self.output_size)
