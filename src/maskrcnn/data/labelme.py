"""LabelMe annotations: one JSON file per image, in a folder (searched recursively).

Each file has `shapes` (label, points, shape_type, group_id, and for masks a base64 PNG `mask`), `imagePath`
(relative to the JSON file; the image may instead be embedded as base64 `imageData`), `imageHeight` and
`imageWidth`. Shapes become instances:
- polygon: the points; rectangle: two opposite corners; circle: the centre and a point on the circle;
- mask: a PNG the size of the box between its two points, placed at the first point;
- shapes with the same label and the same non-null `group_id` are one instance (their union);
- point, line, linestrip (and unknown types) are skipped with a warning.
Classes are the labels, sorted, with source ids 1..K (source "labelme").

Shape letters: H, W: the image's height and width; h, w: a mask shape's own size.
"""
from __future__ import annotations

import base64
import io
import json
import math
import os

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from ..errors import DataError
from .images import IMAGE_SUFFIXES, image_size
from .instances import (AnnotatedDataset, ImageRecord, Instance, decode_embedded_image, ellipse_mask, finite_points,
                        mask_to_rle, paste_mask, rectangle_polygon)
from .paths import join_inside
from .problems import SkipLog

_SKIPPED_TYPES = ("point", "line", "linestrip", "points")


class LabelMeDataset(AnnotatedDataset):
    """Every LabelMe JSON file under `folder`; image ids are the JSON paths relative to the folder."""

    source = "labelme"

    def __init__(self, folder, *, max_skip_fraction: float = 0.05, allow_empty: bool = False,
                 collect_errors: bool = False):
        super().__init__()
        self.folder = self.image_dir = os.fspath(folder)
        if not os.path.isdir(self.folder):
            raise DataError(f"{self.folder}: LabelMe folder not found")
        files = sorted(os.path.relpath(os.path.join(root, name), self.folder)
                       for root, _, names in os.walk(self.folder) for name in names if name.lower().endswith(".json"))
        if not files:
            raise DataError(f"{self.folder}: no LabelMe .json file in this folder or below it")
        log = SkipLog(self.folder, collect_errors=collect_errors)
        records = [record for name in files if (record := self._read_file(name, log)) is not None]
        names = sorted({instance.class_name for record in records for instance in record.instances})
        self._finish(records, names, log, max_skip_fraction=max_skip_fraction, allow_empty=allow_empty,
                     what=self.folder)

    def _read_file(self, name: str, log: SkipLog):
        """The ImageRecord of one JSON file, or None (a fatal problem recorded)."""
        path = os.path.join(self.folder, name)
        try:
            with open(path, encoding="utf-8") as file:
                data = json.load(file)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            log.fatal(f"not a valid JSON file ({error})", path=path)
            return None
        if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
            log.fatal("not a LabelMe file (no 'shapes' list)", path=path)
            return None
        try:
            image_path, image_data = self._image_of(name, data)
            height, width = self._size_of(data, image_path, image_data, path)
        except DataError as error:
            log.fatal(str(error).removeprefix(f"{path}: "), path=path)
            return None
        groups: dict = {}  # (label, group_id) -> Instance
        instances = []
        for number, shape in enumerate(data["shapes"]):
            ids = {"image_id": name, "annotation_id": f"shape {number}"}
            instance = self._shape(shape, number, height, width, log, ids)
            if instance is None:
                continue
            group_id = shape.get("group_id")
            key = (instance.class_name, group_id)
            if group_id is None or key not in groups:
                instances.append(instance)
                if group_id is not None:
                    groups[key] = instance
                    instance.attributes["group_id"] = group_id
                continue
            merged = groups[key]  # same label and group: one instance, the union of the shapes
            merged.id = f"{merged.id}+{number}"
            if merged.polygons is not None and instance.polygons is not None:
                merged.polygons = merged.polygons + instance.polygons
            else:
                merged.rle = mask_utils.merge([merged.to_rle(height, width), instance.to_rle(height, width)])
                merged.polygons = None
        return ImageRecord(name, image_path, height, width, instances, image_data=image_data)

    def _image_of(self, name: str, data: dict) -> tuple[str, str | None]:
        """(image path, embedded base64 data or None); a DataError when neither exists."""
        json_dir = os.path.dirname(name)
        where = os.path.join(self.folder, name)
        image_data = data.get("imageData") if isinstance(data.get("imageData"), str) else None
        image_path = data.get("imagePath")
        if isinstance(image_path, str) and image_path.strip():
            # LabelMe on Windows writes "..\\images\\a.jpg"; the name must stay inside the folder given.
            relative = os.path.normpath(os.path.join(json_dir, image_path.replace("\\", "/")))
            path = join_inside(self.folder, relative, where=where)
            if os.path.isfile(path) or image_data:
                return path, image_data
        stem = os.path.join(self.folder, os.path.splitext(name)[0])
        for extension in IMAGE_SUFFIXES + tuple(e.upper() for e in IMAGE_SUFFIXES):
            if os.path.isfile(stem + extension):
                return stem + extension, image_data
        if image_data:
            return stem + ".png", image_data
        raise DataError(f"{where}: image {image_path!r} not found, no image beside the file and no imageData")

    @staticmethod
    def _size_of(data: dict, image_path: str, image_data, where: str) -> tuple[int, int]:
        height, width = data.get("imageHeight"), data.get("imageWidth")
        if isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0:
            return height, width
        if os.path.isfile(image_path):
            return image_size(image_path)
        return decode_embedded_image(image_data, where).shape[:2]

    @staticmethod
    def _shape(shape, number: int, height: int, width: int, log: SkipLog, ids: dict):
        """An Instance of one shape, or None (skipped with a warning)."""
        if not isinstance(shape, dict):
            log.skip("bad shapes", "shape is not a JSON object; skipped", **ids)
            return None
        kind = shape.get("shape_type") or "polygon"
        label = shape.get("label")
        if kind in _SKIPPED_TYPES:
            log.ignore("shapes without area ignored", f"shape_type {kind!r} has no area; skipped", **ids)
            return None
        if not isinstance(label, str) or not label.strip():
            log.skip("shapes without a label", "shape has no label; skipped", **ids)
            return None
        points = shape.get("points")
        if (not isinstance(points, list) or not all(isinstance(p, list) and len(p) == 2 and finite_points(p)
                                                    for p in points)):
            log.skip("bad shapes", "points must be a list of [x, y] number pairs; skipped", **ids)
            return None
        flat = [float(v) for point in points for v in point]
        attributes = {"flags": shape["flags"]} if shape.get("flags") else {}
        label = label.strip()
        if kind == "polygon":
            if len(points) < 3:
                log.skip("bad polygons", f"polygon has {len(points)} points, needs at least 3; skipped", **ids)
                return None
            return Instance(ids["annotation_id"], label, polygons=[flat], attributes=attributes)
        if kind in ("rectangle", "circle", "mask") and len(points) != 2:
            log.skip("bad shapes", f"{kind} needs 2 points, has {len(points)}; skipped", **ids)
            return None
        if kind == "rectangle":
            return Instance(ids["annotation_id"], label, polygons=[rectangle_polygon(*flat)], attributes=attributes)
        if kind == "circle":
            (cx, cy), (px, py) = points
            radius = math.hypot(px - cx, py - cy)
            mask = ellipse_mask(cx, cy, radius, radius, height, width)
            return Instance(ids["annotation_id"], label, rle=mask_to_rle(mask), attributes=attributes)
        if kind == "mask":
            part = _decode_png_mask(shape.get("mask"))
            if part is None:
                log.skip("bad shapes", "mask shape has no readable base64 PNG 'mask'; skipped", **ids)
                return None
            left, top = (math.floor(v) for v in points[0])
            mask = paste_mask(part, left, top, height, width)
            return Instance(ids["annotation_id"], label, rle=mask_to_rle(mask), attributes=attributes)
        log.skip("shapes of unknown type", f"shape_type {kind!r} is not understood; skipped", **ids)
        return None


def _decode_png_mask(text) -> np.ndarray | None:
    """(h, w) bool of a base64 PNG (non-zero pixels are the mask), or None."""
    if not isinstance(text, str):
        return None
    try:
        with Image.open(io.BytesIO(base64.b64decode(text))) as image:
            array = np.asarray(image.convert("L"))
    except (ValueError, OSError):
        return None
    return array > 0
