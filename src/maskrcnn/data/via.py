"""VGG Image Annotator (VIA) region files, as in the seed repository's balloon example.

Accepted layouts:
- VIA 1 / VIA 2 "export as JSON": {key: {"filename", "size", "regions", "file_attributes"}, ...}, where
  `regions` is a list (VIA 2) or a dict {"0": region, ...} (VIA 1);
- a VIA 2 project file, with the same entries under "_via_img_metadata".
Each region has `shape_attributes` (polygon with all_points_x / all_points_y, rect, circle, ellipse) and
`region_attributes`. With `class_attribute`, region_attributes[class_attribute] names the class (a string, or
VIA's checkbox form {"name": true}); without it every region is one class, "object" or class_names[0].

VIA stores no image size, so masks are drawn at the size read from the image header (after EXIF orientation)
when they are loaded.

Shape letters: N: regions of one image; H, W: the image's height and width.
"""
from __future__ import annotations

import math
import os
import warnings

import numpy as np
from pycocotools import mask as mask_utils

from .jsonfile import is_number, read_json_file
from ..errors import DataError, DataWarning
from .dataset import Dataset
from .images import image_size
from .paths import join_inside
from .problems import SkipLog

_SHAPES = ("polygon", "polyline", "rect", "circle", "ellipse")


class ViaDataset(Dataset):
    """Images and polygon regions of one VIA JSON file (source "via", class ids 1..K)."""

    def __init__(self, json_file, image_dir=None, *, class_attribute: str | None = None,
                 class_names=None, max_skip_fraction: float = 0.05, allow_empty: bool = False):
        super().__init__()
        self.json_file = os.fspath(json_file)
        self.image_dir = os.fspath(image_dir) if image_dir is not None else os.path.dirname(self.json_file)
        entries = _read_entries(self.json_file)
        log = SkipLog(self.json_file)
        parsed = [self._parse_entry(key, entry, class_attribute, log) for key, entry in entries.items()]
        names = self._class_names(parsed, class_attribute, class_names)
        if class_attribute is None and len(names) != 1:
            raise DataError(f"{self.json_file}: class_names {names} name several classes; say which region "
                            f"attribute holds the class with class_attribute=...")
        for class_id, name in enumerate(names, start=1):
            self.add_class("via", class_id, name)
        total = 0
        for image_id, path, regions in parsed:
            records = []
            for region_id, shape, class_name in regions:
                total += 1
                if class_attribute is None:
                    class_name = names[0]  # one class: every region is it
                if class_name not in names:
                    raise DataError(f"{self.json_file}: image {image_id!r}, region {region_id}: class "
                                    f"{class_name!r} is not in class_names {list(names)}")
                records.append({"id": region_id, "shape": shape, "class_id": names.index(class_name) + 1})
            self.add_image("via", image_id, path, regions=records)
        log.finish(total + log.num_skipped, max_skip_fraction)
        self.load_problems = list(log.problems)
        self.prepare()
        if not allow_empty and total == 0:
            raise DataError(f"{self.json_file}: no usable region in the whole file; training needs instances. "
                            f"Pass allow_empty=True to build it anyway.")

    def _parse_entry(self, key: str, entry, class_attribute, log: SkipLog):
        """(image id, path, [(region id, shape dict, class name)]) of one VIA entry."""
        where = f"{self.json_file}: entry {key!r}"
        if not isinstance(entry, dict) or "filename" not in entry:
            raise DataError(f"{where}: missing 'filename' (is this a VIA region file?)")
        image_id = entry["filename"]
        path = join_inside(self.image_dir, entry["filename"], where=where)
        regions = entry.get("regions", [])
        if isinstance(regions, dict):  # VIA 1 keeps regions as {"0": region, "1": ...}
            regions = list(regions.values())
        if not isinstance(regions, list):
            raise DataError(f"{where}: 'regions' must be a list or an object, got {type(regions).__name__}")
        parsed = []
        for region_id, region in enumerate(regions):
            ids = {"image_id": image_id, "annotation_id": f"region {region_id}"}
            shape = _check_shape(region, log, ids)
            if shape is None:
                continue
            class_name = _class_of(region, class_attribute, where, region_id)
            if class_name is None:
                log.skip("regions without a class", f"region has no {class_attribute!r} attribute; skipped", **ids)
                continue
            parsed.append((region_id, shape, class_name))
        return image_id, path, parsed

    def _class_names(self, parsed: list, class_attribute, class_names) -> list:
        if class_names is not None:
            return [str(name) for name in class_names]
        if class_attribute is None:
            return ["object"]
        return sorted({name for _, _, regions in parsed for _, _, name in regions})

    # ------------------------------------------------------------------ loading
    def num_instances(self, image_index: int) -> int:
        return len(self.image_info[image_index]["regions"])

    def load_mask(self, image_index: int) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W) bool masks drawn from the regions, (N,) int64 class ids."""
        info = self.image_info[image_index]
        try:
            height, width = image_size(info["path"])
        except DataError as error:
            raise DataError(f"image {info['id']!r}: {error}") from error
        masks, class_ids = [], []
        for record in info["regions"]:
            mask = _draw_region(record["shape"], height, width)
            if not mask.any():  # drawn outside the image, or smaller than a pixel
                warnings.warn(f"{self.json_file}: image {info['id']!r}, annotation 'region {record['id']}': its mask "
                              f"has no pixel inside the {width}x{height} image; left out", DataWarning, stacklevel=2)
                continue
            masks.append(mask)
            class_ids.append(record["class_id"])
        class_ids = np.array(class_ids, dtype=np.int64)
        if not masks:
            return np.zeros((0, height, width), dtype=bool), class_ids
        return np.stack(masks), class_ids


# ---------------------------------------------------------------------------------------------- helpers
def _read_entries(path: str) -> dict:
    data = read_json_file(path, "VIA file")
    if isinstance(data, dict) and "_via_img_metadata" in data:  # VIA 2 project file
        data = data["_via_img_metadata"]
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a VIA JSON object of image entries, got a {type(data).__name__}")
    return data


def _check_shape(region, log: SkipLog, ids: dict):
    """The region's shape_attributes with numbers checked, or None (skipped with a warning)."""
    shape = region.get("shape_attributes") if isinstance(region, dict) else None
    name = shape.get("name") if isinstance(shape, dict) else None
    if name not in _SHAPES:
        log.skip("regions of unsupported shape", f"shape {name!r} is not one of {_SHAPES}; skipped", **ids)
        return None
    if name in ("polygon", "polyline"):
        xs, ys = shape.get("all_points_x"), shape.get("all_points_y")
        if (not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys) or len(xs) < 3
                or not all(is_number(v) for v in xs + ys)):
            log.skip("bad polygons", "polygon needs all_points_x and all_points_y of the same length >= 3; "
                     "skipped", **ids)
            return None
        return shape
    needed = {"rect": ("x", "y", "width", "height"), "circle": ("cx", "cy", "r"), "ellipse": ("cx", "cy", "rx", "ry")}
    if not all(is_number(shape.get(key)) for key in needed[name]):
        log.skip("bad shapes", f"{name} needs numbers {needed[name]}; skipped", **ids)
        return None
    sizes = [shape[key] for key in needed[name][2:]]
    if any(size <= 0 for size in sizes):
        log.skip("bad shapes", f"{name} has a zero or negative size; skipped", **ids)
        return None
    return shape


def _class_of(region: dict, class_attribute, where: str, region_id: int):
    if class_attribute is None:
        return "object"
    value = (region.get("region_attributes") or {}).get(class_attribute)
    if isinstance(value, dict):  # a VIA checkbox attribute: {"balloon": true, ...}
        chosen = [name for name, on in value.items() if on]
        if len(chosen) > 1:
            raise DataError(f"{where}, region {region_id}: {class_attribute!r} ticks several classes {chosen}")
        value = chosen[0] if chosen else None
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return str(value).strip()


def _draw_region(shape: dict, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of one region; parts outside the image are cut off.

    Coordinates are on pixel edges (pixel (x, y) covers [x, x + 1) x [y, y + 1)), as in COCO: polygons are
    rasterised by pycocotools, so a VIA polygon and the same COCO polygon give the same mask; circles and
    ellipses hold the pixels whose centres lie inside.
    """
    name = shape["name"]
    if name in ("polygon", "polyline"):
        flat = [float(v) for xy in zip(shape["all_points_x"], shape["all_points_y"]) for v in xy]
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([flat], height, width))).astype(bool)
    mask = np.zeros((height, width), dtype=bool)
    if name == "rect":
        x1, y1 = max(0, round(shape["x"])), max(0, round(shape["y"]))
        mask[y1:max(y1, round(shape["y"] + shape["height"])), x1:max(x1, round(shape["x"] + shape["width"]))] = True
        return mask
    if name == "circle":
        rx = ry = shape["r"]
        theta = 0.0
    else:  # ellipse; VIA 2 stores its rotation theta in radians
        rx, ry = shape["rx"], shape["ry"]
        theta = float(shape.get("theta", 0.0) or 0.0)
    ys, xs = np.mgrid[0:height, 0:width] + 0.5  # (2, H, W) pixel centres
    dx, dy = xs - shape["cx"], ys - shape["cy"]
    # Rotate the offsets by -theta into the ellipse's own axes.
    u = dx * math.cos(theta) + dy * math.sin(theta)
    v = -dx * math.sin(theta) + dy * math.cos(theta)
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
