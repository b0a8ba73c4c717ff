"""Bilinear resizing exactly as matterport calls scikit-image: `skimage.transform.resize(order=1,
mode="constant", cval=0, clip=True, anti_aliasing=False)`, without depending on scikit-image.

matterport resizes its uint8 images with it (`MatterportPreprocessor`) and truncates the result back to
uint8, and resizes each 28x28 mask to its box with it before the 0.5 threshold. Truncation makes the last bit matter (a value
of 99.99999999999999 becomes 99, not 100), so this follows SciPy's `ndimage.zoom(grid_mode=True,
mode="grid-constant")`, which scikit-image calls, operation for operation, in float64:
- output pixel k samples the input at c = (k + 0.5) * zoom - 0.5, zoom = in / out (half-pixel centres);
- weights w0 = 1 - (c - floor(c)), w1 = 1 - w0; a neighbour outside the input counts as 0 (the cval),
  so the border fades towards 0 instead of repeating the edge;
- the value is ((a00 * wy0) * wx0 + (a01 * wy0) * wx1) + (a10 * wy1) * wx0 + (a11 * wy1) * wx1;
- scikit-image then clips to the input's [min, max] (widened to include 0 when the output reaches 0
  and the input's range does not).

Shape letters:
    H, W: input size; h, w: output size; B: leading dimensions (channels), resized independently
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..preprocess import ImageBatch, Preprocessor


def _axis_samples(in_size: int, out_size: int, device) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """For one axis: (low index, w_low, w_high, low inside, high inside), each (out_size,)."""
    zoom = in_size / out_size  # float64, as numpy.divide(input.shape, output_shape)
    coord = (torch.arange(out_size, dtype=torch.float64, device=device) + 0.5) * zoom - 0.5
    low = torch.floor(coord)
    w_low = 1.0 - (coord - low)
    w_high = 1.0 - w_low  # SciPy makes the weights sum to exactly 1 this way, not as c - floor(c)
    low = low.to(torch.int64)
    high = low + 1
    return low, w_low, w_high, (low >= 0) & (low < in_size), (high >= 0) & (high < in_size)


def output_size(in_size: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """The size SciPy actually produces for a requested size (it rounds in * (1 / (in / out)))."""
    return tuple(int(round(i * (1.0 / (i / o)))) for i, o in zip(in_size, size))


def resize_bilinear(image: Tensor, size: tuple[int, int]) -> Tensor:
    """(B..., H, W) -> (B..., h, w) float64, skimage's order-1 constant-mode resize without the clip."""
    image = image.to(torch.float64)
    height, width = image.shape[-2:]
    out_h, out_w = output_size((height, width), size)
    if (out_h, out_w) == (height, width):
        return image.clone()  # SciPy returns the input unchanged for a zoom of 1
    y0, wy0, wy1, y0_in, y1_in = _axis_samples(height, out_h, image.device)
    x0, wx0, wx1, x0_in, x1_in = _axis_samples(width, out_w, image.device)
    rows = {0: (y0.clamp(0, height - 1), wy0, y0_in), 1: ((y0 + 1).clamp(0, height - 1), wy1, y1_in)}
    cols = {0: (x0.clamp(0, width - 1), wx0, x0_in), 1: ((x0 + 1).clamp(0, width - 1), wx1, x1_in)}
    total = None
    for dy in (0, 1):  # SciPy's filter order: the last axis varies fastest
        y_index, wy, y_inside = rows[dy]
        picked_rows = image[..., y_index, :]  # (B..., h, W)
        for dx in (0, 1):
            x_index, wx, x_inside = cols[dx]
            values = picked_rows[..., x_index]  # (B..., h, w)
            term = (values * wy[:, None]) * wx[None, :]
            inside = y_inside[:, None] & x_inside[None, :]  # outside neighbours are the cval 0
            term = torch.where(inside, term, torch.zeros_like(term))
            total = term if total is None else total + term
    return total


def clip_like_skimage(output: Tensor, source: Tensor) -> Tensor:
    """skimage's `clip=True`: clip to the source's value range, widened to 0 when the output reaches 0."""
    low, high = source.min().to(output.dtype), source.max().to(output.dtype)
    zero = torch.zeros((), dtype=output.dtype, device=output.device)
    if not (low <= 0 <= high) and output.min() <= 0 <= output.max():
        low, high = torch.minimum(low, zero), torch.maximum(high, zero)
    return output.clamp(min=low, max=high)


def resize_like_skimage(image: Tensor, size: tuple[int, int]) -> Tensor:
    """(B..., H, W) -> (B..., h, w) float64: `skimage.transform.resize(image, size, order=1, mode="constant",
    preserve_range=True, anti_aliasing=False)` (with channels last in skimage, first here)."""
    return clip_like_skimage(resize_bilinear(image, size), image)


class MatterportPreprocessor(Preprocessor):
    """matterport's `mold_inputs`: resize the uint8 image with skimage's resize and truncate it back to uint8,
    pad it with black, and only then subtract the mean pixel (so the padding is -mean, not 0)."""

    def __call__(self, images: list[Tensor]) -> ImageBatch:
        """images: (3, H, W) in [0, 1] -> ImageBatch as `Preprocessor` makes it."""
        resized, scales, sizes = [], [], []
        for image in images:
            height, width = image.shape[-2:]
            pixels = torch.round(image.to(torch.float64) * 255.0)  # (3, H, W) the uint8 values
            scale = self.resize_scale(height, width)
            if scale != 1.0:  # matterport skips the resize at scale 1
                size = (round(height * scale), round(width * scale))
                pixels = resize_like_skimage(pixels, size).floor()  # .astype(np.uint8) truncates
            h, w = pixels.shape[-2:]
            resized.append(pixels)
            scales.append((h / height, w / width))
            sizes.append((int(height), int(width)))
        batch, windows = self.pad(resized)  # (N, 3, Hp, Wp), black padding
        mean = torch.tensor(self.pixel_mean, dtype=torch.float64, device=batch.device)[:, None, None] * 255.0
        std = torch.tensor(self.pixel_std, dtype=torch.float64, device=batch.device)[:, None, None] * 255.0
        return ImageBatch(((batch - mean) / std).to(images[0].dtype), windows, scales, sizes)
