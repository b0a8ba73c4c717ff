"""The common part of the annotation-tool readers (LabelMe, CVAT, Label Studio, YOLO): instances held as
COCO polygons or COCO RLE at the image's size, empty ones dropped before training, masks decoded on demand.

A reader parses its format into `ImageRecord`s (image id, path, height, width, instances) and hands them with
its class names to `AnnotatedDataset._finish`, which registers classes (source ids 1..K unless the reader
gives its own), drops every instance whose mask has no pixel inside the image with a warning naming the file
and the annotation, and refuses a data set with fatal problems, naming all of them.

Shape letters: N: instances of one image; H, W: the image's height and width.
"""
from __future__ import annotations

import base64
import io
import math
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from ..errors import DataError
from .dataset import Dataset
from .images import to_rgb_array
from .problems import SkipLog


@dataclass
class Instance:
    """One object: its id in the source file, internal class id and either polygons or an RLE."""

    id: object  # how the source names it ("shape 3", a CVAT shape index, a Label Studio result id)
    class_name: str
    polygons: list | None = None  # [[x1, y1, x2, y2, ...], ...] float pixels, COCO's pixel-edge convention
    rle: dict | None = None  # compressed COCO RLE of the image's size
    attributes: dict = field(default_factory=dict)
    class_id: int = 0  # internal id, set by AnnotatedDataset._finish

    def to_rle(self, height: int, width: int) -> dict:
        if self.rle is not None:
            return self.rle
        return mask_utils.merge(mask_utils.frPyObjects(self.polygons, height, width))

    def segmentation(self, height: int, width: int):
        """COCO segmentation: the polygons where the source had polygons, else the RLE (counts as text)."""
        if self.polygons is not None:
            return [list(map(float, polygon)) for polygon in self.polygons]
        rle = self.to_rle(height, width)
        counts = rle["counts"]
        return {"size": list(rle["size"]), "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


@dataclass
class ImageRecord:
    id: object
    path: str
    height: int
    width: int
    instances: list
    image_data: str | None = None  # base64 image embedded in the annotation (LabelMe's imageData)


class AnnotatedDataset(Dataset):
    """A Dataset of `ImageRecord`s; subclasses parse a file format and call `_finish`."""

    source = "annotated"

    def _finish(self, records: list, class_names: list, log: SkipLog, *, max_skip_fraction: float,
                allow_empty: bool, what: str, source_ids: list | None = None) -> None:
        """Register classes and images, drop empty instances, raise the fatal problems, `prepare()`."""
        source_ids = source_ids or list(range(1, len(class_names) + 1))
        for source_id, name in zip(source_ids, class_names):
            self.add_class(self.source, source_id, name)
        internal = {name: number for number, name in enumerate(class_names, start=1)}
        total = log.num_skipped
        for record in records:
            kept = []
            for instance in record.instances:
                total += 1
                rle = instance.to_rle(record.height, record.width)
                if mask_utils.area(rle) == 0:
                    log.skip("empty masks", f"its mask has no pixel inside the {record.width}x{record.height} "
                             f"image; skipped", image_id=record.id, annotation_id=instance.id)
                    continue
                instance.class_id = internal[instance.class_name]
                kept.append(instance)
            self.add_image(self.source, record.id, record.path, height=record.height, width=record.width,
                           instances=kept, image_data=record.image_data)
        log.finish(total, max_skip_fraction)
        self.load_problems = list(log.problems)
        self.prepare()
        if not allow_empty and not log.collect_errors and not any(self.num_instances(i) for i in range(len(self))):
            raise DataError(f"{what}: no usable instance in the whole data set; training needs instances. "
                            f"Pass allow_empty=True to build it anyway.")

    # ------------------------------------------------------------------ loading
    def num_instances(self, image_index: int) -> int:
        return len(self.image_info[image_index]["instances"])

    def load_image(self, image_index: int) -> np.ndarray:
        info = self.image_info[image_index]
        if info.get("image_data") and not os.path.isfile(info["path"]):
            return decode_embedded_image(info["image_data"], f"image {info['id']!r}")
        return super().load_image(image_index)

    def load_mask(self, image_index: int) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W) bool masks and (N,) int64 internal class ids."""
        info = self.image_info[image_index]
        height, width = info["height"], info["width"]
        instances = info["instances"]
        if not instances:
            return np.zeros((0, height, width), dtype=bool), np.zeros((0,), dtype=np.int64)
        masks = np.stack([mask_utils.decode(instance.to_rle(height, width)).astype(bool) for instance in instances])
        return masks, np.array([instance.class_id for instance in instances], dtype=np.int64)


# ---------------------------------------------------------------------------------------------- helpers
def mask_to_rle(mask: np.ndarray) -> dict:
    """(H, W) bool -> compressed COCO RLE."""
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def paste_mask(part: np.ndarray, left: int, top: int, height: int, width: int) -> np.ndarray:
    """(h, w) bool `part` placed with its top-left pixel at (left, top) in an (H, W) image, cut at the edges."""
    mask = np.zeros((height, width), dtype=bool)
    y1, x1 = max(top, 0), max(left, 0)
    y2, x2 = min(top + part.shape[0], height), min(left + part.shape[1], width)
    if y2 > y1 and x2 > x1:
        mask[y1:y2, x1:x2] = part[y1 - top:y2 - top, x1 - left:x2 - left]
    return mask


def ellipse_mask(cx: float, cy: float, rx: float, ry: float, height: int, width: int) -> np.ndarray:
    """(H, W) bool: the pixels whose centres lie inside the axis-aligned ellipse (as via.py draws circles)."""
    ys, xs = np.mgrid[0:height, 0:width] + 0.5  # (2, H, W) pixel centres
    if rx <= 0 or ry <= 0:
        return np.zeros((height, width), dtype=bool)
    return ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1.0


def rectangle_polygon(x1: float, y1: float, x2: float, y2: float) -> list:
    """The four corners of a box as one COCO polygon (corners in any order)."""
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def decode_embedded_image(text: str, where: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a base64-encoded image file."""
    try:
        with Image.open(io.BytesIO(base64.b64decode(text))) as image:
            return to_rgb_array(np.asarray(image.convert("RGB")))
    except (ValueError, OSError) as error:
        raise DataError(f"{where}: the embedded image data cannot be decoded ({error})") from error


def finite_points(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
