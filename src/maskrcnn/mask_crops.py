"""Instance masks kept only over their boxes: the compact form of `Detections.masks` for large images.

A full-image mask per instance costs N x H x W bytes: 900 objects on a 3072x3072 image would be 8.5 GB of bools.
`MaskCrops` holds each mask as the bool crop of its box plus the crop's place in the image, so memory grows with
the objects' area. It converts to full masks on request (`full`) and to COCO RLE without ever building a
full-image array per instance (`to_rle`).

Shape letters:
    N: instances; H, W: the image's height and width; h_i, w_i: the height and width of instance i's crop
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import Tensor


class MaskCrops:
    """N instance masks of an (H, W) image, each stored as a bool crop.

    crops:   list of N bool tensors (h_i, w_i); crop i covers rows y0..y0+h_i and columns x0..x0+w_i of the image
    offsets: (N, 2) int64, (x0, y0) of each crop in image pixels
    image_size: (H, W)

    Quacks like the (N, H, W) bool tensor it stands for where `Detections` needs it: `shape`, `len`,
    indexing by index tensor, slice or boolean mask, `to(device)`.
    """

    def __init__(self, crops: list[Tensor], offsets: Tensor, image_size: tuple[int, int]):
        height, width = int(image_size[0]), int(image_size[1])
        offsets = torch.as_tensor(offsets, dtype=torch.int64).reshape(-1, 2)
        if len(crops) != offsets.shape[0]:
            raise ValueError(f"MaskCrops: {len(crops)} crops but {offsets.shape[0]} offsets")
        for i, (crop, (x0, y0)) in enumerate(zip(crops, offsets.tolist())):
            if crop.dim() != 2:
                raise ValueError(f"MaskCrops: crop {i} must be 2-D (h, w), got shape {tuple(crop.shape)}")
            h, w = crop.shape
            if x0 < 0 or y0 < 0 or x0 + w > width or y0 + h > height:
                raise ValueError(f"MaskCrops: crop {i} ({h}x{w} at x={x0}, y={y0}) leaves the {height}x{width} image")
        self.crops = [crop.bool() for crop in crops]
        self.offsets = offsets
        self.image_size = (height, width)

    # ------------------------------------------------------------------------------------ construction
    @classmethod
    def empty(cls, height: int, width: int) -> "MaskCrops":
        return cls([], torch.zeros((0, 2), dtype=torch.int64), (height, width))

    @classmethod
    def from_full(cls, masks: Tensor) -> "MaskCrops":
        """(N, H, W) bool masks -> crops to each mask's tight box (an empty mask keeps a 0x0 crop at 0, 0)."""
        masks = torch.as_tensor(masks).bool()
        height, width = masks.shape[-2:]
        crops, offsets = [], []
        rows_any, cols_any = masks.any(dim=2), masks.any(dim=1)  # (N, H), (N, W)
        for mask, rows, cols in zip(masks, rows_any, cols_any):
            ys, xs = torch.where(rows)[0], torch.where(cols)[0]
            if len(ys) == 0:
                crops.append(mask.new_zeros((0, 0)))
                offsets.append((0, 0))
                continue
            y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
            crops.append(mask[y0:y1, x0:x1].clone())
            offsets.append((x0, y0))
        return cls(crops, torch.tensor(offsets, dtype=torch.int64).reshape(-1, 2), (height, width))

    # ------------------------------------------------------------------------------------ tensor-like
    def __len__(self) -> int:
        return len(self.crops)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(N, H, W): the shape of the full masks these stand for."""
        return (len(self.crops), *self.image_size)

    @property
    def device(self) -> torch.device:
        return self.offsets.device

    def to(self, device) -> "MaskCrops":
        return MaskCrops([crop.to(device) for crop in self.crops], self.offsets, self.image_size)

    def __getitem__(self, index) -> "MaskCrops":
        """Select instances by index tensor or list, slice or boolean mask (an int selects one, kept as N=1)."""
        if isinstance(index, int):
            picks = [range(len(self.crops))[index]]
        elif isinstance(index, slice):
            picks = list(range(len(self.crops)))[index]
        else:
            index = torch.as_tensor(index)
            picks = torch.where(index)[0].tolist() if index.dtype == torch.bool else index.reshape(-1).tolist()
        return MaskCrops([self.crops[i] for i in picks], self.offsets[picks].reshape(-1, 2), self.image_size)

    def __iter__(self) -> Iterator[tuple[Tensor, int, int]]:
        """(crop (h_i, w_i) bool, x0, y0) per instance."""
        for crop, (x0, y0) in zip(self.crops, self.offsets.tolist()):
            yield crop, x0, y0

    # ------------------------------------------------------------------------------------ conversions
    def full(self) -> Tensor:
        """(N, H, W) bool full-image masks (N x H x W bytes: for a few instances or a small image)."""
        masks = torch.zeros((len(self.crops), *self.image_size), dtype=torch.bool)
        for i, (crop, x0, y0) in enumerate(self):
            masks[i, y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop.cpu()
        return masks

    def areas(self) -> Tensor:
        """(N,) int64 mask pixels."""
        return torch.tensor([int(crop.sum()) for crop in self.crops], dtype=torch.int64)

    def mask_boxes(self) -> Tensor:
        """(N, 4) float32 x1 y1 x2 y2 tight boxes of the masks (far corner one past the last pixel); an empty
        mask gives a zero box at its offset."""
        boxes = torch.zeros((len(self.crops), 4), dtype=torch.float32)
        for i, (crop, x0, y0) in enumerate(self):
            ys, xs = torch.where(crop.any(dim=1))[0], torch.where(crop.any(dim=0))[0]
            if len(ys) == 0:
                boxes[i] = torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
            else:
                boxes[i] = torch.tensor([x0 + int(xs[0]), y0 + int(ys[0]), x0 + int(xs[-1]) + 1, y0 + int(ys[-1]) + 1],
                                        dtype=torch.float32)
        return boxes

    def to_rle(self) -> list[dict]:
        """N compressed COCO RLEs (`counts` as str) of the full-image masks, as `evaluation._encode_masks` gives
        for the (N, H, W) masks, computed from the crops: only the crop's columns are ever laid out."""
        height, width = self.image_size
        rles = []
        for crop, x0, y0 in self:
            counts = _column_major_runs(crop.cpu().numpy(), x0, y0, height, width)
            rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
            rle["counts"] = rle["counts"].decode("ascii")
            rles.append(rle)
        return rles

    def __repr__(self) -> str:
        return f"MaskCrops(N={len(self.crops)}, image_size={self.image_size})"


def _column_major_runs(crop: np.ndarray, x0: int, y0: int, height: int, width: int) -> list[int]:
    """COCO's uncompressed RLE counts of one (H, W) mask that is zero outside the crop: alternating run lengths
    of 0s and 1s over the pixels in column-major (Fortran) order, starting with a run of 0s (maybe empty)."""
    h, w = crop.shape
    if crop.size == 0 or not crop.any():
        return [height * width]
    band = np.zeros((height, w), dtype=bool)  # (H, w): the crop's columns, whole
    band[y0:y0 + h] = crop
    flat = band.ravel(order="F")
    starts = np.flatnonzero(flat[1:] != flat[:-1]) + 1  # where a new run begins
    lengths = np.diff(np.concatenate(([0], starts, [flat.size])))
    if flat[0]:
        lengths = np.concatenate(([0], lengths))  # the counts start with a (here empty) run of 0s
    runs = lengths.tolist()
    runs[0] += x0 * height  # the columns left of the crop
    after = (width - x0 - w) * height  # the columns right of it
    if not flat[-1]:
        runs[-1] += after
    elif after:  # pycocotools writes no final run of 0s when the mask ends on a 1
        runs.append(after)
    return runs
