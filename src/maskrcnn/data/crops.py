"""Random crops for training on images larger than the model's input (`maskrcnn train --crop SIZE`).

Large images (aerial, microscopy, scans) are predicted in tiles (`tiling.py`); training on crops of the same
size shows the model what a tile looks like, at a fraction of the memory of the whole image.

A crop is placed around a randomly chosen instance, so that crops hold objects; a share of crops
(`negative_fraction`) is taken where there is no instance at all, as negatives. An instance cut by the crop's
edge is kept when at least `min_visible` of its pixels are inside (what is left is still recognisably the
object, as a tile edge would show it); its box is recomputed from the cut mask. An instance kept less than
that is dropped.

A transform as in `data.transforms`: `(image, target, rng) -> (image, target)` with
    image:  (3, H, W) float tensor in [0, 1]
    target: {"boxes": (N, 4) float x1 y1 x2 y2 pixels, "labels": (N,) int64, "masks": (N, H, W) bool,
             optionally "crowd_boxes": (K, 4) x1 y1 x2 y2 pixels}

Shape letters: N: instances; K: crowd regions; H, W: the image's size; h, w: the crop's size.
"""
from __future__ import annotations

import torch
from torch import Tensor

NEGATIVE_TRIES = 10  # random windows tried for one with no instance before taking any window


class RandomCrop:
    """Crop `size` x `size` (or the whole side where the image is smaller) around a random instance."""

    def __init__(self, size: int, *, negative_fraction: float = 0.1, min_visible: float = 0.5):
        if size < 16:
            raise ValueError(f"RandomCrop: size must be at least 16 px, got {size}")
        if not 0.0 <= negative_fraction <= 1.0 or not 0.0 < min_visible <= 1.0:
            raise ValueError(f"RandomCrop: need 0 <= negative_fraction <= 1 and 0 < min_visible <= 1, "
                             f"got {negative_fraction}, {min_visible}")
        self.size, self.negative_fraction, self.min_visible = size, negative_fraction, min_visible

    def __call__(self, image: Tensor, target: dict, rng):
        height, width = image.shape[-2:]
        crop_h, crop_w = min(self.size, height), min(self.size, width)
        if (crop_h, crop_w) == (height, width):
            return image, target
        masks = target["masks"].bool()
        boxes = mask_boxes(masks)  # (N, 4) of the uncut masks
        present = torch.where(boxes[:, 2] > boxes[:, 0])[0] if len(boxes) else torch.zeros(0, dtype=torch.int64)
        if len(present) == 0 or rng.random() < self.negative_fraction:
            y0, x0 = _empty_window(masks, crop_h, crop_w, rng)
        else:
            chosen = boxes[int(present[int(rng.integers(len(present)))])].tolist()
            x0 = _start_around(chosen[0], chosen[2], crop_w, width, rng)
            y0 = _start_around(chosen[1], chosen[3], crop_h, height, rng)
        return crop(image, target, y0, x0, crop_h, crop_w, min_visible=self.min_visible)

    def __repr__(self) -> str:
        return f"RandomCrop({self.size}, negative_fraction={self.negative_fraction}, min_visible={self.min_visible})"


def crop(image: Tensor, target: dict, y0: int, x0: int, h: int, w: int, *, min_visible: float) -> tuple[Tensor, dict]:
    """The (h, w) window at (y0, x0) of the image and its target: instances with at least `min_visible` of their
    pixels inside kept, with masks cut and boxes recomputed from the cut masks; crowd boxes shifted and clipped."""
    masks = target["masks"].bool()
    cut = masks[:, y0:y0 + h, x0:x0 + w]  # (N, h, w)
    full_area = masks.flatten(1).sum(1)  # (N,)
    inside = cut.flatten(1).sum(1)
    keep = (inside > 0) & (inside >= min_visible * full_area)
    cropped = dict(target, boxes=mask_boxes(cut[keep]).to(target["boxes"].dtype), labels=target["labels"][keep],
                   masks=cut[keep].contiguous())
    if "crowd_boxes" in target:
        shift = torch.tensor([x0, y0, x0, y0], dtype=target["crowd_boxes"].dtype)
        crowd = target["crowd_boxes"] - shift
        crowd[:, 0::2] = crowd[:, 0::2].clamp(0, w)
        crowd[:, 1::2] = crowd[:, 1::2].clamp(0, h)
        cropped["crowd_boxes"] = crowd[(crowd[:, 2] > crowd[:, 0]) & (crowd[:, 3] > crowd[:, 1])]
    return image[:, y0:y0 + h, x0:x0 + w], cropped


def mask_boxes(masks: Tensor) -> Tensor:
    """(N, H, W) bool -> (N, 4) float32 x1 y1 x2 y2 tight boxes, far corner one past (zeros for an empty mask)."""
    boxes = torch.zeros((masks.shape[0], 4), dtype=torch.float32)
    for i, mask in enumerate(masks):
        ys, xs = torch.where(mask.any(dim=1))[0], torch.where(mask.any(dim=0))[0]
        if len(ys):
            boxes[i] = torch.tensor([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=torch.float32)
    return boxes


def _start_around(low: float, high: float, length: int, size: int, rng) -> int:
    """A window start in [0, size - length] with the window holding [low, high) whole where it fits, or
    overlapping it where the object is longer than the window."""
    low, high = int(low), int(high)
    first, last = high - length, low  # the window [start, start + length) holds [low, high)
    if first > last:  # longer than the window: any start that overlaps it
        first, last = low - length + 1, high - 1
    first, last = max(0, first), min(size - length, last)
    return int(rng.integers(first, last + 1)) if last >= first else max(0, min(size - length, low))


def _empty_window(masks: Tensor, h: int, w: int, rng) -> tuple[int, int]:
    """(y0, x0) of a random (h, w) window with no instance pixel, if one of NEGATIVE_TRIES draws has none."""
    height, width = masks.shape[-2:]
    occupied = masks.any(dim=0) if masks.shape[0] else None  # (H, W)
    for _ in range(NEGATIVE_TRIES):
        y0, x0 = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        if occupied is None or not bool(occupied[y0:y0 + h, x0:x0 + w].any()):
            break
    return y0, x0
