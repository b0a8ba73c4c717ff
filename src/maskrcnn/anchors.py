"""Anchors: one scale per pyramid level, several ratios at every anchor position (seed section 1.2.1).

Shape letters:
    A: anchors per position (one per ratio)
    Hl, Wl: height and width of pyramid level l
Anchors of level l come in the order (y, x, ratio), levels P2..P6 one after the other, matching the
order in which the RPN head flattens its outputs.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .frame import PixelFrame


def cell_anchors(scale: float, ratios, round_to_pixels: bool) -> Tensor:
    """(A, 4) x1 y1 x2 y2 anchors centred on (0, 0), one per width/height ratio.

    Width = scale * sqrt(ratio), height = scale / sqrt(ratio), so every anchor of a level has area scale^2.
    """
    ratios = torch.tensor(ratios, dtype=torch.float64)
    widths = scale * torch.sqrt(ratios)
    heights = scale / torch.sqrt(ratios)
    anchors = torch.stack((-widths, -heights, widths, heights), dim=1) / 2
    return anchors.round() if round_to_pixels else anchors


def grid_anchors(cell: Tensor, feature_size: tuple[int, int], stride: tuple[float, float], anchor_stride: int) -> Tensor:
    """(Hl*Wl*A, 4) anchors of one level: `cell` (A, 4) shifted to every anchor position.

    Centres sit at (x * stride, y * stride) with no half-stride offset, as in both matterport and torchvision.
    """
    height, width = feature_size
    stride_y, stride_x = stride
    shifts_x = torch.arange(0, width, anchor_stride, dtype=cell.dtype) * stride_x
    shifts_y = torch.arange(0, height, anchor_stride, dtype=cell.dtype) * stride_y
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=-1).reshape(-1, 1, 4)  # (Hl*Wl, 1, 4)
    return (shifts + cell.reshape(1, -1, 4)).reshape(-1, 4)  # (Hl*Wl, A, 4) -> (Hl*Wl*A, 4)


class AnchorGenerator:
    """Anchors for a padded batch, cached per (feature sizes, image size, dtype, device).

    Not an nn.Module: it has no parameters, and the cache must not end up in state dicts.
    """

    def __init__(self, *, scales, ratios, strides, anchor_stride: int, round_to_pixels: bool, stride_from_feature_size: bool,
                 frame: PixelFrame | None = None):
        """frame: the box frame the anchors are made in (`frame.PixelFrame` when None)."""
        self.scales = tuple(scales)
        self.frame = frame if frame is not None else PixelFrame()
        self.ratios = tuple(ratios)
        self.strides = tuple(strides)
        self.anchor_stride = anchor_stride
        self.round_to_pixels = round_to_pixels
        self.stride_from_feature_size = stride_from_feature_size
        self._cache: dict = {}

    @property
    def anchors_per_location(self) -> int:
        return len(self.ratios)

    def level_strides(self, feature_sizes, image_size) -> list[tuple[float, float]]:
        if self.stride_from_feature_size:
            return [(image_size[0] // h, image_size[1] // w) for h, w in feature_sizes]
        return [(s, s) for s in self.strides]

    def __call__(self, feature_sizes: list[tuple[int, int]], image_size: tuple[int, int], dtype, device) -> list[Tensor]:
        """One (Hl*Wl*A, 4) tensor per level for feature maps of the given sizes over a padded image."""
        key = (tuple(feature_sizes), tuple(image_size), dtype, str(device))
        if key not in self._cache:
            if len(self._cache) > 32:  # many image sizes (e.g. scale jitter): do not grow without bound
                self._cache.clear()
            levels = []
            for scale, size, stride in zip(self.scales, feature_sizes, self.level_strides(feature_sizes, image_size)):
                cell = cell_anchors(scale, self.ratios, self.round_to_pixels).to(dtype)
                level = grid_anchors(cell, size, stride, self.anchor_stride)
                levels.append(self.frame.from_pixels(level).to(device))
            self._cache[key] = levels
        return self._cache[key]
