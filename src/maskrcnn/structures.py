"""Typed containers passed between the steps, and the label constants.

Shape letters used here:
    N: number of instances (detections or ground-truth objects) in one image
    H, W: height and width of the image the instances belong to
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .mask_crops import MaskCrops

# Class id 0 is background in every data set and every head (matterport's and torchvision's convention).
BACKGROUND = 0

# Matcher labels, shared by the RPN targets and the detection targets.
IGNORE = -1
NEGATIVE = 0
POSITIVE = 1


@dataclass
class Detections:
    """What the model found in one image, in that image's pixels.

    boxes:  (N, 4) float32, x1 y1 x2 y2, absolute pixels of the input image
    labels: (N,) int64, 1..num_classes-1
    scores: (N,) float32, descending
    masks:  (N, H, W) bool, the input image's size; or, from `MaskRCNN.predict_tiled`, a `MaskCrops` (each
            mask kept only over its box, memory growing with the objects' area): `full_masks()` gives
            (N, H, W) bool either way
    """

    boxes: Tensor
    labels: Tensor
    scores: Tensor
    masks: Tensor | MaskCrops

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def is_compact(self) -> bool:
        """True when the masks are a MaskCrops rather than an (N, H, W) tensor."""
        return isinstance(self.masks, MaskCrops)

    def full_masks(self) -> Tensor:
        """(N, H, W) bool masks, converted from the crops when compact (N x H x W bytes)."""
        return self.masks.full() if self.is_compact else self.masks

    def compact(self) -> "Detections":
        """The same detections with each mask cropped to its tight box (MaskCrops)."""
        if self.is_compact:
            return self
        return Detections(self.boxes, self.labels, self.scores, MaskCrops.from_full(self.masks.cpu()))

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the image the masks cover."""
        return int(self.masks.shape[-2]), int(self.masks.shape[-1])

    @classmethod
    def empty(cls, height: int, width: int, device: torch.device | str = "cpu") -> "Detections":
        """No instances: boxes (0, 4), labels (0,), scores (0,), masks (0, H, W)."""
        return cls(
            boxes=torch.zeros((0, 4), dtype=torch.float32, device=device),
            labels=torch.zeros((0,), dtype=torch.int64, device=device),
            scores=torch.zeros((0,), dtype=torch.float32, device=device),
            masks=torch.zeros((0, height, width), dtype=torch.bool, device=device),
        )

    def to(self, device: torch.device | str) -> "Detections":
        return Detections(self.boxes.to(device), self.labels.to(device), self.scores.to(device), self.masks.to(device))

    def __getitem__(self, index) -> "Detections":
        """Select instances by index, slice or boolean mask."""
        return Detections(self.boxes[index], self.labels[index], self.scores[index], self.masks[index])
