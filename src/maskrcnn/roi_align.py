"""Pyramid ROIAlign: each box pooled from the FPN level that fits its size (FPN paper, Eq. 1).

Shape letters:
    R: boxes over all images of the batch
    F: channels of the pyramid features
    S: output size (7 for the box head, 14 for the mask head)
The bilinear kernel is torchvision.ops.roi_align; the level assignment is ours.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import roi_align

# Added before flooring so that boxes exactly on a level boundary (112, 224, 448 px) land on the upper
# level despite log2 rounding (as torchvision's LevelMapper).
LEVEL_EPS = 1e-6


def assign_levels(boxes: Tensor, *, canonical_size: int = 224, canonical_level: int = 4, min_level: int = 2, max_level: int = 5) -> Tensor:
    """(R,) int64 pyramid level of each (R, 4) box: k = floor(k0 + log2(sqrt(wh) / 224)), clamped."""
    side = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    levels = torch.floor(canonical_level + torch.log2(side / canonical_size) + LEVEL_EPS)
    return levels.clamp(min=min_level, max=max_level).to(torch.int64)


def boxes_with_batch_index(boxes: list[Tensor]) -> Tensor:
    """Per-image (Ri, 4) boxes -> (R, 5) rows (image index, x1, y1, x2, y2), as roi_align takes them."""
    rows = [torch.cat((torch.full_like(b[:, :1], i), b), dim=1) for i, b in enumerate(boxes)]
    return torch.cat(rows, dim=0)


class PyramidROIAlign:
    """Pools boxes from P2..P5 with one roi_align call per level, over all images at once."""

    def __init__(self, *, output_size: int, strides, sampling_ratio: int, canonical_size: int, canonical_level: int, aligned: bool = False,
                 method: str = "roi_align"):
        self.output_size = output_size
        self.method = method
        self.strides = tuple(strides)
        self.scales = [1.0 / s for s in strides]  # P2..P5
        self.sampling_ratio = sampling_ratio
        self.canonical_size = canonical_size
        self.canonical_level = canonical_level
        self.aligned = aligned

    def __call__(self, features: list[Tensor], boxes: list[Tensor]) -> Tensor:
        """features: [P2..P5] each (N, F, Hl, Wl); boxes: per image (Ri, 4) -> (R, F, S, S) in box order."""
        if self.method == "crop_and_resize":  # matterport's PyramidROIAlign: TensorFlow's crop_and_resize
            from .crop_and_resize import pyramid_crop_and_resize

            image_size = (features[0].shape[-2] * self.strides[0], features[0].shape[-1] * self.strides[0])
            return pyramid_crop_and_resize(features, boxes, image_size, self.output_size)
        rois = boxes_with_batch_index(boxes)  # (R, 5)
        min_level = 2
        levels = assign_levels(
            rois[:, 1:],
            canonical_size=self.canonical_size,
            canonical_level=self.canonical_level,
            min_level=min_level,
            max_level=min_level + len(features) - 1,
        )
        first = features[0]
        # Not zeroed: the levels are clamped to the pyramid's, so every row is written below.
        pooled = first.new_empty((rois.shape[0], first.shape[1], self.output_size, self.output_size))
        for offset, (feature, scale) in enumerate(zip(features, self.scales)):
            index = torch.where(levels == min_level + offset)[0]
            if not torch.jit.is_tracing() and len(index) == 0:  # an exported graph keeps every level: counts vary
                continue
            level_pooled = roi_align(
                feature, rois[index], self.output_size, spatial_scale=scale,
                sampling_ratio=self.sampling_ratio, aligned=self.aligned,
            ).to(pooled.dtype)  # (Rl, F, S, S)
            if torch.jit.is_tracing():  # ONNX export writes index_put with the example's Rl frozen in; scatter keeps it dynamic
                pooled = pooled.scatter(0, index.view(-1, 1, 1, 1).expand_as(level_pooled), level_pooled)
            else:
                pooled[index] = level_pooled
        return pooled
