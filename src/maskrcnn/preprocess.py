"""Preprocessing: check and convert input images, normalise, resize, pad into one batch.

Shape letters:
    N: images in the batch
    H, W: an original image's size; h, w: its size after resizing; Hp, Wp: the padded batch size
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class ImageBatch:
    tensor: Tensor  # (N, 3, Hp, Wp) normalised, zero-padded at the bottom and right (or around, "square")
    windows: list[tuple[int, int, int, int]]  # per image (y1, x1, y2, x2): where the resized image lies
    scales: list[tuple[float, float]]  # per image (h / H, w / W)
    original_sizes: list[tuple[int, int]]  # per image (H, W)

    @property
    def padded_size(self) -> tuple[int, int]:
        return int(self.tensor.shape[-2]), int(self.tensor.shape[-1])


def window_size(window: tuple[int, int, int, int]) -> tuple[int, int]:
    """(h, w) of the resized image from its window (y1, x1, y2, x2) in the padded batch."""
    return window[2] - window[0], window[3] - window[1]


def to_image_tensor(image, index: int) -> Tensor:
    """One input image -> (3, H, W) float tensor in [0, 1].

    Accepts (H, W, 3) uint8 numpy arrays (also (H, W) gray, (H, W, 1), (H, W, 4) RGBA: alpha dropped)
    and (3, H, W) float tensors in [0, 1] (also (1, H, W) and (4, H, W)). Anything else is a ValueError
    naming the image index and what is wrong.
    """
    where = f"image {index}"
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"{where}: numpy images must be uint8 (H, W, 3) RGB, got dtype {image.dtype}")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3:
            raise ValueError(f"{where}: expected an (H, W, 3) array, got shape {image.shape}")
        if image.shape[2] not in (1, 3, 4):
            raise ValueError(f"{where}: expected 1, 3 or 4 channels (gray, RGB, RGBA) in the last axis, got shape {image.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    elif isinstance(image, Tensor):
        if not image.is_floating_point():
            raise ValueError(f"{where}: tensor images must be float (3, H, W) in [0, 1], got dtype {image.dtype}")
        if image.dim() == 2:
            image = image[None]
        if image.dim() != 3:
            raise ValueError(f"{where}: expected a (3, H, W) tensor, got shape {tuple(image.shape)}")
        if image.shape[0] not in (1, 3, 4):
            raise ValueError(f"{where}: expected 1, 3 or 4 channels in the first axis, got shape {tuple(image.shape)}")
        tensor = image
    else:
        raise ValueError(f"{where}: expected a numpy uint8 array or a float tensor, got {type(image).__name__}")
    if tensor.shape[1] == 0 or tensor.shape[2] == 0:
        raise ValueError(f"{where}: image is empty (size {tuple(tensor.shape[1:])})")
    if tensor.shape[0] == 1:
        tensor = tensor.expand(3, -1, -1)
    elif tensor.shape[0] == 4:
        tensor = tensor[:3]
    return tensor


def to_image_tensors(images) -> list[Tensor]:
    """The inputs of `predict` (one image, a list of them, or an (N, 3, H, W) tensor) -> a list of (3, H, W)
    float tensors in [0, 1] (`to_image_tensor`)."""
    if isinstance(images, Tensor) and images.dim() == 4:
        images = list(images)
    elif not isinstance(images, (list, tuple)):
        images = [images]
    if len(images) == 0:
        raise ValueError("no images given")
    return [to_image_tensor(image, index) for index, image in enumerate(images)]


class Preprocessor:
    """Normalise, resize and pad images into an ImageBatch (matterport `mold_image`, torchvision's transform)."""

    def __init__(self, *, resize_mode: str, min_dim: int, max_dim: int, size_divisor: int, pixel_mean, pixel_std,
                 min_dim_choices: tuple = ()):
        """min_dim_choices: sizes `training_batch` draws each training image's min_dim from (empty: always
        min_dim); inference (`__call__`) always resizes to min_dim."""
        self.resize_mode = resize_mode
        self.min_dim = min_dim
        self.min_dim_choices = tuple(int(d) for d in min_dim_choices)
        self.max_dim = max_dim
        self.size_divisor = size_divisor
        self.pixel_mean = tuple(pixel_mean)
        self.pixel_std = tuple(pixel_std)

    def resize_scale(self, height: int, width: int, min_dim: int | None = None) -> float:
        """The factor an (H, W) image is resized by, to `min_dim` (None: the configured one)."""
        min_dim = self.min_dim if min_dim is None else min_dim
        if self.resize_mode == "none":
            return 1.0
        if self.resize_mode == "square":
            # matterport: only enlarge to min_dim, unless the long side would pass max_dim
            scale = max(1.0, min_dim / min(height, width))
            if round(max(height, width) * scale) > self.max_dim:
                scale = self.max_dim / max(height, width)
            return scale
        return min(min_dim / min(height, width), self.max_dim / max(height, width))

    def choose_min_dims(self, count: int, generator: torch.Generator | None = None) -> list[int] | None:
        """One min_dim per training image, drawn uniformly from min_dim_choices (None when there are none):
        torchvision's GeneralizedRCNNTransform(min_size=(...)) `torch_choice`, detectron2's
        ResizeShortestEdge(sample_style="choice"). torch's global generator unless one is given, so the
        trainer's seed and checkpointed RNG state fix the draws."""
        if not self.min_dim_choices:
            return None
        picks = torch.randint(len(self.min_dim_choices), (count,), generator=generator)  # (N,)
        return [self.min_dim_choices[i] for i in picks.tolist()]

    def training_batch(self, images: list[Tensor], generator: torch.Generator | None = None) -> ImageBatch:
        """`__call__` with each image's min_dim drawn from min_dim_choices (scale augmentation); the target
        masks and boxes follow from the batch's windows and scales, so they are resized with the image."""
        min_dims = self.choose_min_dims(len(images), generator)
        return self(images) if min_dims is None else self(images, min_dims=min_dims)

    def __call__(self, images: list[Tensor], min_dims: list[int] | None = None) -> ImageBatch:
        """images: (3, H, W) float tensors in [0, 1], already on the model's device and dtype; min_dims: one
        min_dim per image (None: the configured min_dim for all)."""
        resized, scales, sizes = [], [], []
        for index, image in enumerate(images):
            height, width = image.shape[-2:]
            mean = torch.tensor(self.pixel_mean, dtype=image.dtype, device=image.device)[:, None, None]
            std = torch.tensor(self.pixel_std, dtype=image.dtype, device=image.device)[:, None, None]
            normalised = (image - mean) / std
            scale = self.resize_scale(height, width, None if min_dims is None else min_dims[index])
            if scale != 1.0:
                if self.resize_mode == "square":
                    size = (round(height * scale), round(width * scale))
                    normalised = F.interpolate(normalised[None], size=size, mode="bilinear", align_corners=False)[0]
                else:
                    # torchvision's resize: output side floor(side * scale), sampled at the recomputed scale
                    normalised = F.interpolate(
                        normalised[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
                    )[0]
            h, w = normalised.shape[-2:]
            resized.append(normalised)
            scales.append((h / height, w / width))
            sizes.append((int(height), int(width)))
        tensor, windows = self.pad(resized)
        return ImageBatch(tensor, windows, scales, sizes)

    def resize_masks(self, masks: Tensor, size: tuple[int, int]) -> Tensor:
        """(G, H, W) bool instance masks -> (G, h, w) bool, resized with the image to its resized size (h, w)
        by nearest neighbour, as torchvision's transform resizes target masks. uint8, not float: the same
        pixels are picked, without a float copy of every full-size mask."""
        if tuple(masks.shape[-2:]) == tuple(size) or masks.shape[0] == 0:
            return masks.new_zeros((masks.shape[0], *size)) if masks.shape[0] == 0 else masks
        return F.interpolate(masks[:, None].to(torch.uint8), size=tuple(size), mode="nearest")[:, 0].bool()

    def pad(self, images: list[Tensor]) -> tuple[Tensor, list[tuple[int, int, int, int]]]:
        """Zero-pad to one (N, 3, Hp, Wp) tensor: Hp, Wp multiples of size_divisor (square: max_dim)."""
        if self.resize_mode == "square":
            padded_h = padded_w = self.max_dim
        else:
            divisor = self.size_divisor
            padded_h = -(-max(img.shape[-2] for img in images) // divisor) * divisor
            padded_w = -(-max(img.shape[-1] for img in images) // divisor) * divisor
        batch = images[0].new_zeros((len(images), 3, padded_h, padded_w))
        windows = []
        for i, image in enumerate(images):
            h, w = image.shape[-2:]
            top, left = ((padded_h - h) // 2, (padded_w - w) // 2) if self.resize_mode == "square" else (0, 0)
            batch[i, :, top:top + h, left:left + w] = image
            windows.append((top, left, top + h, left + w))
        return batch, windows
