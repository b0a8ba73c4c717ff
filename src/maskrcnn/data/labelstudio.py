"""Label Studio JSON exports ("JSON" in Label Studio's export dialog): a list of tasks with their annotations.

    [{"id": 1, "data": {"image": "/data/upload/1/3f2a1b9c-photo.png"},
      "annotations": [{"id": 7, "result": [
          {"id": "a1", "type": "polygonlabels", "original_width": 640, "original_height": 480,
           "value": {"points": [[10.0, 20.0], ...], "polygonlabels": ["cat"]}},
          {"id": "a2", "type": "rectanglelabels", ..., "value": {"x": 5, "y": 5, "width": 20, "height": 10,
           "rotation": 0, "rectanglelabels": ["dog"]}},
          {"id": "a3", "type": "brushlabels", ..., "value": {"format": "rle", "rle": [0, 0, ...],
           "brushlabels": ["cat"]}}]}]}]

Points and rectangles are in percent of original_width / original_height; a rectangle rotates (degrees,
clockwise on screen) about its top-left corner. Brush masks use Label Studio's RLE (`decode_brush_rle`).
The first annotation of a task that was not cancelled is used. Images are found in IMAGE_DIR by file name:
"/data/upload/1/3f2a1b9c-photo.png" is IMAGE_DIR/3f2a1b9c-photo.png or IMAGE_DIR/photo.png (Label Studio
prefixes uploads with 8 hex digits); "/data/local-files/?d=dir/photo.png" is IMAGE_DIR/dir/photo.png or
IMAGE_DIR/photo.png. Classes are the labels, sorted, with source ids 1..K (source "labelstudio").

Shape letters: H, W: the image's height and width.
"""
from __future__ import annotations

import math
import os
import re
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

from ..errors import DataError
from .images import IMAGE_SUFFIXES
from .instances import AnnotatedDataset, ImageRecord, Instance, finite_points, mask_to_rle
from .jsonfile import is_number, read_json_file
from .paths import join_inside
from .problems import SkipLog

_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")
_TYPES = {"polygonlabels": "polygon", "rectanglelabels": "rectangle", "brushlabels": "brush"}


class LabelStudioDataset(AnnotatedDataset):
    """Tasks of one Label Studio JSON export; image ids are the task ids."""

    source = "labelstudio"

    def __init__(self, json_file, image_dir=None, *, max_skip_fraction: float = 0.05, allow_empty: bool = False,
                 collect_errors: bool = False):
        super().__init__()
        self.annotation_file = os.fspath(json_file)
        self.image_dir = os.fspath(image_dir) if image_dir is not None else os.path.dirname(self.annotation_file)
        tasks = read_json_file(self.annotation_file, "Label Studio export")
        if isinstance(tasks, dict):  # a single task
            tasks = [tasks]
        if not isinstance(tasks, list):
            raise DataError(f"{self.annotation_file}: expected a list of Label Studio tasks, got a "
                            f"{type(tasks).__name__}")
        log = SkipLog(self.annotation_file, collect_errors=collect_errors)
        records = [record for number, task in enumerate(tasks) if (record := self._task(task, number, log))]
        names = sorted({instance.class_name for record in records for instance in record.instances})
        self._finish(records, names, log, max_skip_fraction=max_skip_fraction, allow_empty=allow_empty,
                     what=self.annotation_file)

    def _task(self, task, number: int, log: SkipLog):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            log.fatal(f"task {number} is not an object with 'data' (is this a Label Studio JSON export?)",
                      image_id=f"#{number}")
            return None
        task_id = task.get("id", f"#{number}")
        reference = _image_reference(task["data"])
        path = self._find_image(reference) if reference else None
        if path is None:
            log.fatal(f"image {reference!r} not found in {self.image_dir} (looked for its file name with and "
                      f"without Label Studio's upload prefix)", image_id=task_id)
            return None
        annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
        results = annotations[0].get("result") or [] if annotations else []
        instances, size = [], None
        for index, result in enumerate(results):
            ids = {"image_id": task_id, "annotation_id": result.get("id", index) if isinstance(result, dict) else index}
            if not isinstance(result, dict) or result.get("type") not in _TYPES:
                kind = result.get("type") if isinstance(result, dict) else None
                log.ignore("results of other types ignored", f"result type {kind!r} is not polygonlabels, rectanglelabels "
                         f"or brushlabels; skipped", **ids)
                continue
            width, height = result.get("original_width"), result.get("original_height")
            if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
                log.fatal("result needs positive whole-number original_width and original_height", **ids)
                continue
            if size is not None and size != (height, width):
                log.fatal(f"original size {width}x{height} differs from another result's {size[1]}x{size[0]}",
                          **ids)
                continue
            size = (height, width)
            instance = _result(result, height, width, log, ids)
            if instance is not None:
                instances.append(instance)
        if size is None:
            from .images import image_size
            try:
                size = image_size(path)
            except DataError as error:
                log.fatal(str(error), image_id=task_id)
                return None
        return ImageRecord(task_id, path, size[0], size[1], instances)

    def _find_image(self, reference: str):
        """The file in image_dir that a task's image URL names, or None."""
        parsed = urlparse(reference)
        query = parse_qs(parsed.query).get("d")
        relative = unquote(query[0] if query else parsed.path)
        name = os.path.basename(relative)
        candidates = [name, _UPLOAD_PREFIX.sub("", name)]
        if query:
            candidates.insert(0, relative.lstrip("/"))
        for candidate in candidates:
            try:
                path = join_inside(self.image_dir, candidate, where=self.annotation_file)
            except DataError:
                continue
            if os.path.isfile(path):
                return path
        return None


def _image_reference(data: dict):
    if isinstance(data.get("image"), str):
        return data["image"]
    for value in data.values():
        if isinstance(value, str) and os.path.splitext(urlparse(value).path)[1].lower() in IMAGE_SUFFIXES:
            return value
    return None


def _result(result: dict, height: int, width: int, log: SkipLog, ids: dict):
    kind = result["type"]
    value = result.get("value") if isinstance(result.get("value"), dict) else {}
    labels = value.get(kind)
    if not isinstance(labels, list) or not labels or not isinstance(labels[0], str):
        log.skip("results without a label", f"value has no {kind!r} label; skipped", **ids)
        return None
    label = labels[0]
    if _TYPES[kind] == "polygon":
        points = value.get("points")
        if not isinstance(points, list) or len(points) < 3 or not all(
                isinstance(p, list) and len(p) == 2 and finite_points(p) for p in points):
            log.skip("bad polygons", "polygon needs at least 3 [x, y] points (percent); skipped", **ids)
            return None
        flat = [v * scale / 100.0 for x, y in points for v, scale in ((x, width), (y, height))]
        return Instance(ids["annotation_id"], label, polygons=[flat])
    if _TYPES[kind] == "rectangle":
        if not all(is_number(value.get(key)) for key in ("x", "y", "width", "height")):
            log.skip("bad rectangles", "rectangle needs numbers x, y, width, height (percent); skipped", **ids)
            return None
        x, y = value["x"] * width / 100.0, value["y"] * height / 100.0
        w, h = value["width"] * width / 100.0, value["height"] * height / 100.0
        if w <= 0 or h <= 0:
            log.skip("bad rectangles", f"rectangle has zero or negative size {w:g}x{h:g}; skipped", **ids)
            return None
        angle = math.radians(float(value.get("rotation") or 0.0) if is_number(value.get("rotation") or 0) else 0.0)
        cos, sin = math.cos(angle), math.sin(angle)
        corners = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)]
        # Rotation about the top-left corner, y pointing down (clockwise on screen for a positive angle).
        flat = [v for dx, dy in corners for v in (x + dx * cos - dy * sin, y + dx * sin + dy * cos)]
        return Instance(ids["annotation_id"], label, polygons=[flat])
    rle = value.get("rle")
    if value.get("format", "rle") != "rle" or not isinstance(rle, list):
        log.skip("bad brushes", "brush needs format 'rle' and an 'rle' list of bytes; skipped", **ids)
        return None
    try:
        pixels = decode_brush_rle(rle)
    except ValueError as error:
        log.skip("bad brushes", f"brush RLE cannot be decoded ({error}); skipped", **ids)
        return None
    if pixels.size != height * width * 4:
        log.skip("bad brushes", f"brush RLE holds {pixels.size} values, not 4 * {width} * {height} (RGBA); "
                 f"skipped", **ids)
        return None
    mask = pixels.reshape(height, width, 4)[:, :, 3] > 0  # (H, W): the alpha channel is the brush
    return Instance(ids["annotation_id"], label, rle=mask_to_rle(mask))


def decode_brush_rle(data) -> np.ndarray:
    """Label Studio's brush RLE (thi.ng rle-pack) -> the flat values it encodes, (num,) uint8 or wider.

    The bit stream, most significant bit first: 32 bits `num` (values encoded), 5 bits word size - 1, four
    4-bit run-length field sizes - 1; then chunks until `num` values: 1 bit (1 = one value repeated, 0 = literal
    values), 2 bits choosing a run-length field size, that many bits `n` - 1, then one word (repeated n times)
    or n words. Label Studio encodes an RGBA image of the mask, 4 values per pixel.
    """
    if not all(isinstance(v, int) and 0 <= v <= 255 for v in data):
        raise ValueError("the rle list must hold bytes 0..255")
    bits = np.unpackbits(np.asarray(data, dtype=np.uint8))
    position = 0

    def read(count: int) -> int:
        nonlocal position
        if position + count > len(bits):
            raise ValueError("the bit stream ends early")
        value = 0
        for bit in bits[position:position + count]:
            value = (value << 1) | int(bit)
        position += count
        return value

    num = read(32)
    word_size = read(5) + 1
    run_sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(num, dtype=np.uint8 if word_size <= 8 else np.int64)
    index = 0
    while index < num:
        repeated = read(1)
        end = index + 1 + read(run_sizes[read(2)])
        if end > num:
            raise ValueError(f"a run reaches value {end}, past the {num} announced")
        if repeated:
            out[index:end] = read(word_size)
        else:
            for i in range(index, end):
                out[i] = read(word_size)
        index = end
    return out
