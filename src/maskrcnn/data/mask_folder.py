"""Images paired with instance-id mask images, one class (the PennFudan layout).

image_dir/FudanPed00001.png  +  mask_dir/FudanPed00001_mask.png
In a mask, 0 is background and every other value is one instance. Colour (RGB) masks work too: each colour
but black is one instance. Pairing is by file stem: the mask is `stem + mask_suffix` with any image
extension; without `mask_suffix`, `stem` and then `stem + "_mask"` are tried.

Shape letters: N: instances of one image; H, W: the image's height and width.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image

from ..errors import DataError, DataWarning
from .dataset import Dataset
from .images import image_size
from .problems import Problem

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_DEFAULT_SUFFIXES = ("", "_mask")


class MaskFolderDataset(Dataset):
    """One class (`class_name`, source "masks", id 1); image ids are the image file stems."""

    def __init__(self, image_dir, mask_dir, *, class_name: str = "object", mask_suffix: str | None = None):
        super().__init__()
        self.image_dir, self.mask_dir = os.fspath(image_dir), os.fspath(mask_dir)
        for folder, what in ((self.image_dir, "image"), (self.mask_dir, "mask")):
            if not os.path.isdir(folder):
                raise DataError(f"{folder}: {what} folder not found")
        self.add_class("masks", 1, class_name)
        masks_by_stem = _files_by_stem(self.mask_dir)
        suffixes = (mask_suffix,) if mask_suffix is not None else _DEFAULT_SUFFIXES
        pairs, unpaired = [], []
        for stem, image_path in sorted(_files_by_stem(self.image_dir).items()):
            candidates = [masks_by_stem.get(stem + suffix) for suffix in suffixes]
            # An image is never its own mask (masks kept next to the images, suffix "").
            candidates = [c for c in candidates if c and os.path.abspath(c) != os.path.abspath(image_path)]
            if candidates:
                pairs.append((stem, image_path, candidates[0]))
            else:
                unpaired.append(image_path)
        # With masks next to the images, a mask file is listed as an image too: it is not one.
        mask_files = {os.path.abspath(m) for _, _, m in pairs}
        unpaired = [p for p in unpaired if os.path.abspath(p) not in mask_files]
        pairs = [pair for pair in pairs if os.path.abspath(pair[1]) not in mask_files]
        if not pairs:
            raise DataError(f"{self.image_dir}: no image has a mask in {self.mask_dir} (looked for the image's "
                            f"stem followed by {list(suffixes)} and an image extension)")
        for stem, image_path, mask_path in pairs:
            self.add_image("masks", stem, image_path, mask_path=mask_path)
        self.load_problems = [Problem(path, f"no mask in {self.mask_dir}; image left out") for path in unpaired]
        if unpaired:
            shown = ", ".join(os.path.basename(p) for p in unpaired[:5]) + (", ..." if len(unpaired) > 5 else "")
            warnings.warn(f"{self.image_dir}: {len(unpaired)} images have no mask in {self.mask_dir} and are "
                          f"left out: {shown}", DataWarning, stacklevel=2)
        self.prepare()

    def load_mask(self, image_index: int) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W) bool, one mask per distinct non-zero value, in increasing value order; (N,) ones."""
        info = self.image_info[image_index]
        labels = _read_label_image(info["mask_path"])  # (H, W) integer ids
        expected = image_size(info["path"])
        if labels.shape != expected:
            raise DataError(f"{info['mask_path']}: the mask is {labels.shape[0]}x{labels.shape[1]} but its image "
                            f"{info['path']} is {expected[0]}x{expected[1]} (height x width)")
        ids = np.unique(labels)
        ids = ids[ids != 0]
        masks = labels[None, :, :] == ids[:, None, None]  # (N, H, W)
        return masks, np.ones(len(ids), dtype=np.int64)

    def image_reference(self, image_index: int) -> str:
        info = self.image_info[image_index]
        return f"{info['path']} (mask {info['mask_path']})"


def _files_by_stem(folder: str) -> dict:
    files = {}
    for name in sorted(os.listdir(folder)):
        stem, extension = os.path.splitext(name)
        if extension.lower() in IMAGE_EXTENSIONS and os.path.isfile(os.path.join(folder, name)):
            files.setdefault(stem, os.path.join(folder, name))
    return files


def _read_label_image(path: str) -> np.ndarray:
    """(H, W) int64 instance ids; palette indices are ids (not colours), RGB colours are packed into one id."""
    try:
        with Image.open(path) as image:
            image.load()
            array = np.asarray(image)
    except (OSError, Image.DecompressionBombError) as error:
        raise DataError(f"{path}: cannot read the mask ({error})") from error
    if array.ndim == 3:
        # (H, W, C) colour mask: pack the first three channels into one integer per pixel; black stays 0.
        rgb = array[:, :, :3].astype(np.int64)
        return (rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2]
    return array.astype(np.int64)
