"""The Dataset base class, in the style of the seed repository's `utils.Dataset`.

A user's own data set is a small subclass: register classes with `add_class`, images with `add_image`,
override `load_mask` (and `load_image` when images are not files), then call `prepare()`.

Shape letters:
    N: number of instances in one image
    H, W: the image's height and width
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from ..errors import DataError, DataWarning
from .images import read_image


class Dataset:
    """Images, their instances and the class list.

    Class id 0 is background ("BG"). Each source (e.g. "coco", "via") keeps its own class ids; `prepare()`
    maps every (source, source id) pair to a contiguous internal id 1..num_classes-1 and back.
    """

    def __init__(self):
        self.image_info: list[dict] = []
        self.class_info: list[dict] = [{"source": "", "id": 0, "name": "BG"}]
        self._prepared = False
        # Problems worked around while reading the annotations (skipped instances, ...), for `validate_dataset`.
        self.load_problems: list = []

    # ------------------------------------------------------------------ registration
    def add_class(self, source: str, class_id: int, class_name: str) -> None:
        """Register a class of `source`; a repeated (source, class_id) is ignored."""
        for info in self.class_info:
            if info["source"] == source and info["id"] == class_id:
                return
        self.class_info.append({"source": source, "id": class_id, "name": class_name})

    def add_image(self, source: str, image_id, path: str | None, **kwargs) -> None:
        """Register an image; extra keyword arguments are kept in `image_info[i]` for `load_mask`."""
        info = {"id": image_id, "source": source, "path": path}
        info.update(kwargs)
        self.image_info.append(info)

    def prepare(self) -> None:
        """Build the contiguous class ids and the maps from source ids; call once after adding."""
        self.num_classes = len(self.class_info)
        self.class_ids = np.arange(self.num_classes)
        self.class_names = [info["name"] for info in self.class_info]
        self.num_images = len(self.image_info)
        self.image_ids = np.arange(self.num_images)
        self.class_from_source_map = {
            f"{info['source']}.{info['id']}": internal_id for internal_id, info in enumerate(self.class_info)
        }
        self.sources = sorted({info["source"] for info in self.class_info if info["source"]})
        self._prepared = True

    def map_source_class_id(self, source_class_id: str) -> int:
        """'coco.12' -> internal class id. Raises DataError for an unknown class."""
        try:
            return self.class_from_source_map[source_class_id]
        except KeyError:
            raise DataError(f"class {source_class_id!r} is not among the registered classes") from None

    def get_source_class_id(self, class_id: int, source: str):
        """Internal class id -> the source's own class id (e.g. a COCO category id)."""
        info = self.class_info[class_id]
        if info["source"] != source:
            raise DataError(f"class {class_id} ({info['name']}) does not come from source {source!r}")
        return info["id"]

    # ------------------------------------------------------------------ loading
    def __len__(self) -> int:
        return len(self.image_info)

    def image_reference(self, image_index: int) -> str:
        """A string a person can use to find the image (its path, or source and id)."""
        info = self.image_info[image_index]
        return str(info.get("path") or f"{info['source']}:{info['id']}")

    def load_image(self, image_index: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB, read from `image_info[i]['path']` by `read_image` (EXIF, 16-bit, ... handled).

        When the image was registered with `height` and `width`, a file of another size is a DataError.
        """
        info = self.image_info[image_index]
        expected = None
        if isinstance(info.get("height"), int) and isinstance(info.get("width"), int):
            expected = (info["height"], info["width"])
        try:
            return read_image(info["path"], expected_size=expected)
        except DataError as error:
            raise DataError(f"image {info['id']!r}: {error}") from error

    def load_mask(self, image_index: int) -> tuple[np.ndarray, np.ndarray]:
        """Instance masks (N, H, W) bool and class ids (N,) int64 (internal ids).

        A negative class id marks a crowd region (-class_id is its class): it is left out of training
        targets and counted as crowd by evaluation, as in the seed repository's CocoDataset.
        The base class has no instances; subclasses override this.
        """
        image = self.load_image(image_index)
        return np.zeros((0,) + image.shape[:2], dtype=bool), np.zeros((0,), dtype=np.int64)

    def num_instances(self, image_index: int) -> int:
        """Number of non-crowd instances of one image (subclasses answer without decoding masks)."""
        return int((self.load_mask(image_index)[1] > 0).sum())

    def load_target(self, image_index: int) -> dict:
        """Training target of one image: crowd regions dropped, boxes from the masks.

        Returns {"boxes": (N, 4) float32 x1 y1 x2 y2 pixels, "labels": (N,) int64, "masks": (N, H, W) bool}.
        """
        masks, class_ids = self.load_mask(image_index)
        masks, class_ids = np.asarray(masks), np.asarray(class_ids)
        empty = ~masks.reshape(len(masks), -1).any(axis=1) if len(masks) else np.zeros(0, dtype=bool)
        for number in np.flatnonzero(empty & (class_ids > 0)):
            # An instance without pixels has no box; the model refuses it, so one bad mask would stop training.
            warnings.warn(f"{self.image_reference(image_index)}: instance {number} of load_mask has an empty mask; "
                          f"left out", DataWarning, stacklevel=2)
        keep = (class_ids > 0) & ~empty
        masks, class_ids = masks[keep], class_ids[keep]
        return {
            "boxes": torch.from_numpy(masks_to_boxes(masks)),
            "labels": torch.from_numpy(class_ids.astype(np.int64)),
            "masks": torch.from_numpy(masks.astype(bool)),
        }

    def __getitem__(self, image_index: int) -> tuple[torch.Tensor, dict]:
        """(image (3, H, W) float32 in [0, 1], target dict of `load_target`) for training loaders."""
        image = self.load_image(image_index)
        image_tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
        return image_tensor, self.load_target(image_index)


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool masks -> (N, 4) float32 boxes x1 y1 x2 y2 enclosing each mask's pixels.

    A pixel (x, y) covers [x, x + 1), so a mask covering columns 2..4 gives x1 = 2, x2 = 5.
    An empty mask gives an all-zero box.
    """
    boxes = np.zeros((masks.shape[0], 4), dtype=np.float32)
    for i, mask in enumerate(masks):
        ys = np.flatnonzero(mask.any(axis=1))
        xs = np.flatnonzero(mask.any(axis=0))
        if len(xs) and len(ys):
            boxes[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return boxes
