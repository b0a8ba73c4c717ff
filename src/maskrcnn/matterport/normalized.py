"""matterport's normalised boxes: (y1, x1, y2, x2) / (H - 1, W - 1, H - 1, W - 1) (its `norm_boxes`), the
coordinates its graph and TensorFlow's `crop_and_resize` take."""
from __future__ import annotations

import torch
from torch import Tensor


def to_normalized(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """(..., 4) x1 y1 x2 y2 in this convention -> (..., 4) matterport's normalised y1 x1 y2 x2."""
    height, width = image_size
    return torch.stack(
        (boxes[..., 1] / (height - 1), boxes[..., 0] / (width - 1), boxes[..., 3] / (height - 1), boxes[..., 2] / (width - 1)),
        dim=-1,
    )
