"""Training augmentation applied identically to an image, its boxes and its masks; mini-masks.

A transform is any callable `(image, target, rng) -> (image, target)`:
    image:  (3, H, W) float tensor in [0, 1]
    target: {"boxes": (N, 4) float x1 y1 x2 y2 pixels, "labels": (N,) int64, "masks": (N, H, W) bool}
    rng:    numpy Generator; every random choice comes from it, so a loader seed fixes the augmentation.
Users hook in their own augmentation by passing such a callable (alone or inside `Compose`).

Scale augmentation is not a transform here: the model's pre-processing resizes every image to its configured
size, which would undo it. It is Config.image_min_dim_choices, drawn per image where the resize happens.

Mini-masks (the seed's USE_MINI_MASK): each instance mask cropped to its box and resized to a small fixed
shape, which saves memory for large images; `expand_masks` pastes them back.

Shape letters: N: instances; H, W: image height and width; h, w: mini-mask height and width.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


class Compose:
    """Apply transforms in order, all drawing from the same rng."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, image, target, rng):
        for transform in self.transforms:
            image, target = transform(image, target, rng)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class HorizontalFlip:
    """Mirror left-right with probability p: x -> W - x for boxes, columns reversed for image and masks."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"HorizontalFlip: p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, image, target, rng):
        if rng.random() >= self.p:
            return image, target
        width = image.shape[-1]
        boxes = target["boxes"].clone()
        # A box covering [x1, x2) covers [W - x2, W - x1) after the flip.
        boxes[:, 0], boxes[:, 2] = width - target["boxes"][:, 2], width - target["boxes"][:, 0]
        flipped = dict(target, boxes=boxes, masks=target["masks"].flip(-1))
        return image.flip(-1), flipped

    def __repr__(self) -> str:
        return f"HorizontalFlip(p={self.p})"


def default_min_dim_choices(min_dim: int) -> tuple[int, ...]:
    """Six shorter-side sizes from 0.8 x min_dim to min_dim in equal steps: for 800 detectron2's multi-scale
    training sizes (640, 672, 704, 736, 768, 800). Used by `maskrcnn train` as Config.image_min_dim_choices;
    the model draws one per training image (preprocess.Preprocessor.training_batch), so the image is resized
    once, to the drawn size, and its masks and boxes with it."""
    return tuple(sorted({round(min_dim * (0.8 + 0.04 * k)) for k in range(6)}))


def minimize_masks(boxes, masks, mini_shape: tuple[int, int]):
    """Crop each (N, H, W) mask to its (N, 4) x1 y1 x2 y2 box and resize to (N, h, w) bool.

    Box edges are rounded outwards to whole pixels. Numpy in, numpy out; tensors in, tensors out.
    """
    as_numpy = isinstance(masks, np.ndarray)
    boxes_t, masks_t = torch.as_tensor(np.asarray(boxes) if as_numpy else boxes), torch.as_tensor(masks)
    height, width = masks_t.shape[-2:]
    mini = torch.zeros((masks_t.shape[0],) + tuple(mini_shape), dtype=torch.bool)
    for i, (mask, box) in enumerate(zip(masks_t, boxes_t)):
        x1, y1, x2, y2 = _pixel_box(box, height, width)
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"minimize_masks: box {i} {box.tolist()} covers no pixel of the {height}x{width} mask")
        crop = mask[y1:y2, x1:x2].float()[None, None]  # (1, 1, y2-y1, x2-x1)
        mini[i] = F.interpolate(crop, size=tuple(mini_shape), mode="bilinear", align_corners=False)[0, 0] >= 0.5
    return mini.numpy() if as_numpy else mini


def expand_masks(boxes, mini_masks, image_shape: tuple[int, int]):
    """Inverse of `minimize_masks`: (N, h, w) mini-masks pasted at their (N, 4) boxes -> (N, H, W) bool."""
    as_numpy = isinstance(mini_masks, np.ndarray)
    boxes_t = torch.as_tensor(np.asarray(boxes) if as_numpy else boxes)
    mini_t = torch.as_tensor(mini_masks)
    height, width = image_shape[:2]
    full = torch.zeros((mini_t.shape[0], height, width), dtype=torch.bool)
    for i, (mini, box) in enumerate(zip(mini_t, boxes_t)):
        x1, y1, x2, y2 = _pixel_box(box, height, width)
        if x2 <= x1 or y2 <= y1:
            continue
        resized = F.interpolate(mini.float()[None, None], size=(y2 - y1, x2 - x1), mode="bilinear",
                                align_corners=False)[0, 0]
        full[i, y1:y2, x1:x2] = resized >= 0.5
    return full.numpy() if as_numpy else full


def _pixel_box(box, height: int, width: int) -> tuple[int, int, int, int]:
    """Float x1 y1 x2 y2 -> whole pixels covering it, clipped to the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return (max(0, math.floor(x1)), max(0, math.floor(y1)), min(width, math.ceil(x2)), min(height, math.ceil(y2)))
