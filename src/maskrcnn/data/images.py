"""Reading image files and arrays into (H, W, 3) uint8 RGB, the one image layout the library takes in.

Every data set reads its images through `read_image`, so each odd file is handled in one place:
- EXIF orientation is applied (`PIL.ImageOps.exif_transpose`): phones store portrait photos sideways with
  an orientation tag, and annotation tools (browsers) draw them upright, so the annotations are upright too.
- Grayscale, 1-bit and palette images are expanded to three equal (or looked-up) channels.
- Alpha is dropped, not composited: the colour under a transparent pixel is kept, as the seed repository's
  `load_image` does (`image[..., :3]`). Compositing on black would darken half-transparent edges.
- CMYK (and YCbCr, LAB, ...) go through Pillow's own conversion to RGB.
- 16-bit images (modes I;16*, and mode I holding 0..65535) are scaled to 8 bit by dividing by 257 and
  rounding: 65535 = 257 * 255, so the 16-bit range maps exactly onto the 8-bit one (257 * v -> v), where a
  plain cast to uint8 would keep the low byte (noise) and clipping would saturate nearly every pixel.
- Pillow's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`) is never switched off here; an image
  over it, or over our own `max_pixels`, is a DataError naming the file and saying what to do.

Shape letters: H, W: image height and width.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")  # what is read as an image, lower case
TIFF_SUFFIXES = (".tif", ".tiff")


def image_files_in(folder) -> list[Path]:
    """The image files (by IMAGE_SUFFIXES, any case) under `folder`, searched recursively, sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())

# EXIF tag 0x0112; values 5..8 are the transposes and the 90 / 270 degree rotations, which swap H and W.
_EXIF_ORIENTATION = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


def read_image(path, *, expected_size: tuple[int, int] | None = None, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB, upright according to its EXIF orientation.

    expected_size: (height, width) the caller's annotations were made for (after EXIF orientation);
        a different size is a DataError naming the file, since every mask would then be misplaced.
    max_pixels: refuse images with more pixels than this (a DataError), on top of Pillow's own limit.
    """
    path = os.fspath(path)
    _check_file(path)
    try:
        with Image.open(path) as image:
            _check_pixels(path, image.size, max_pixels)
            image.load()  # decode now, so truncated data fails here with the path named
            image = _upright(image, path)
            array = _to_rgb(image)
    except Image.DecompressionBombError as error:
        raise DataError(
            f"{path}: the image is larger than Pillow's decompression-bomb limit "
            f"(PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}): {error}. If you trust this file, "
            f"resize it, or raise PIL.Image.MAX_IMAGE_PIXELS in your own script for this run."
        ) from error
    except DataError:
        raise
    # UnidentifiedImageError and truncated data are OSErrors; Pillow's decoders raise SyntaxError or
    # ValueError for some broken chunks ("broken PNG file").
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{path}: cannot read the image ({error}); is the file complete and an image?") from error
    if expected_size is not None and tuple(array.shape[:2]) != tuple(expected_size):
        raise DataError(
            f"{path}: the image is {array.shape[0]}x{array.shape[1]} (height x width) but the annotations "
            f"say {expected_size[0]}x{expected_size[1]}; the annotations belong to another version of this image"
        )
    return array


def image_size(path) -> tuple[int, int]:
    """(height, width) of an image file after EXIF orientation, reading only its header."""
    path = os.fspath(path)
    _check_file(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = _orientation(image)
    except Image.DecompressionBombError as error:
        raise DataError(f"{path}: the image is larger than Pillow's decompression-bomb limit: {error}") from error
    except OSError as error:
        raise DataError(f"{path}: cannot read the image header ({error})") from error
    return (width, height) if orientation in _SWAPS_AXES else (height, width)


def to_rgb_array(array: np.ndarray) -> np.ndarray:
    """Convert a numpy image to (H, W, 3) uint8 RGB.

    Accepts (H, W) or (H, W, 1) gray, (H, W, 3) RGB, (H, W, 4) RGBA (alpha dropped, as in `read_image`);
    dtypes uint8, bool (True -> 255), uint16 (divided by 257) and float in [0, 1] (times 255).
    Anything else is a ValueError.
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    array = array[:, :, :3]
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return _scale_16bit(array)
    if np.issubdtype(array.dtype, np.floating):
        return np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"expected a uint8, bool, uint16 or float image, got dtype {array.dtype}")


# ---------------------------------------------------------------------------------------------- helpers
def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise DataError(f"{path}: image file not found")
    if not os.path.isfile(path):
        raise DataError(f"{path}: not a file")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: the image file is empty (0 bytes)")


def _check_pixels(path: str, size: tuple[int, int], max_pixels: int | None) -> None:
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise DataError(
            f"{path}: the image has {width}x{height} = {width * height} pixels, more than max_pixels={max_pixels}; "
            f"resize it or pass a larger max_pixels if you trust the file"
        )


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except (OSError, ValueError, TypeError, SyntaxError):
        return 1  # unreadable EXIF: treat as upright rather than losing the image


def _upright(image: Image.Image, path: str) -> Image.Image:
    if _orientation(image) == 1:
        return image
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, ValueError, TypeError, KeyError, SyntaxError) as error:
        raise DataError(f"{path}: cannot apply the EXIF orientation ({error})") from error


def _to_rgb(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 from any Pillow mode (see the module docstring for each mode's rule)."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        gray = _scale_16bit(np.asarray(image))  # (H, W)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        # Float images have no fixed range; values are read as 0..255 intensities and clipped.
        gray = np.rint(np.clip(np.asarray(image, dtype=np.float32), 0, 255)).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "P" and "transparency" in image.info:
        # Going through RGBA reads the palette's transparency properly (Pillow warns otherwise); then drop it.
        image = image.convert("RGBA")
    if mode in _ALPHA_MODES or image.mode == "RGBA":
        return np.ascontiguousarray(np.asarray(image.convert("RGBA"))[:, :, :3])
    return np.array(image.convert("RGB"))  # a writable copy, so torch.from_numpy is safe


def _scale_16bit(values: np.ndarray) -> np.ndarray:
    """16-bit values 0..65535 -> uint8 by v / 257 rounded (65535 -> 255, 25700 -> 100)."""
    values = np.clip(values.astype(np.float64), 0, 65535)
    return np.rint(values / 257.0).astype(np.uint8)
