"""COCO-format instance annotations, decoded by pycocotools.

The whole file is checked when the data set is built, so a broken file fails before training starts, with a
message naming the file and the image or annotation id:
- structure (does not parse, a missing top-level list or field, duplicate ids, unknown image or category,
  an RLE of another size than its image, an image name that is absolute or leaves the image folder): DataError;
- single bad instances (a box of zero size or entirely outside its image, no usable polygon, no
  segmentation): skipped with a DataWarning; polygons with < 3 points or an odd coordinate count are dropped
  and boxes partly outside are clipped, keeping the instance. A summary warning gives the counts, and more than
  `max_skip_fraction` of the instances skipped is a DataError.

Category ids may have gaps (COCO's 1..90 hold 80 classes); they map to contiguous internal ids 1..K in
ascending order, and `get_source_class_id(internal_id, "coco")` maps back. Crowd regions come back from
`load_mask` with a negative class id. Images without annotations are kept as negatives.

Shape letters: N: instances of one image; H, W: the image's height and width.
"""
from __future__ import annotations

import contextlib
import difflib
import io
import os
import warnings

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from .jsonfile import is_number, read_json_file
from ..errors import DataError, DataWarning
from .dataset import Dataset
from .paths import join_inside
from .problems import SkipLog


class CocoDataset(Dataset):
    """Images and instances of one COCO annotation file.

    `.coco` is a pycocotools COCO object of the file's images, categories and the annotations that were kept
    (with missing `area` / `iscrowd` filled in), ready for COCOeval.
    allow_empty: accept a file with no usable (non-crowd) instance at all, e.g. unlabelled images to evaluate on.
    """

    def __init__(self, annotation_file, image_dir=None, *, max_skip_fraction: float = 0.05, allow_empty: bool = False,
                 collect_errors: bool = False):
        super().__init__()
        self.annotation_file = os.fspath(annotation_file)
        self.image_dir = os.fspath(image_dir) if image_dir is not None else os.path.dirname(self.annotation_file)
        data = _read_json(self.annotation_file)
        self._where = self.annotation_file
        # A problem that makes an image, category or annotation unusable is recorded and the reading goes on,
        # so that one error names them all (and `maskrcnn validate` lists them all).
        log = SkipLog(self.annotation_file, collect_errors=collect_errors)
        self._refused_images = set()
        category_to_internal = self._add_categories(data["categories"], log)
        images = self._add_images(data["images"], log)
        kept = self._add_annotations(data["annotations"], images, category_to_internal, log)
        log.finish(len(data["annotations"]), max_skip_fraction)
        self.load_problems = list(log.problems)
        self.coco = _make_coco({**data, "annotations": kept})
        self.prepare()
        if not allow_empty and not collect_errors and not any(self.num_instances(i) for i in range(len(self))):
            raise DataError(
                f"{self.annotation_file}: no usable instance in the whole data set ({len(data['annotations'])} "
                f"annotations, {log.num_skipped} skipped, the rest crowd); training needs instances. "
                f"Pass allow_empty=True to build it for evaluation only."
            )

    # ------------------------------------------------------------------ parsing
    def _refuse(self, log: SkipLog, error: DataError, **ids) -> None:
        log.fatal(str(error).removeprefix(f"{self._where}: "), **ids)

    def _add_categories(self, categories: list, log: SkipLog) -> dict:
        ids = {}
        for index, category in enumerate(categories):
            where = f"{self._where}: categories[{index}]"
            try:
                category_id = _field(category, "id", where, int)
                name = _field(category, "name", where, str)
                if category_id in ids:
                    raise DataError(f"{self._where}: category id {category_id} appears twice in 'categories'")
                if category_id <= 0:
                    # 0 is background inside the library: a COCO category 0 could not be mapped back unambiguously.
                    raise DataError(f"{self._where}: category ids must be positive, got {category_id}")
            except DataError as error:
                self._refuse(log, error)
                continue
            ids[category_id] = name
        for category_id in sorted(ids):
            self.add_class("coco", category_id, ids[category_id])
        return {category_id: internal for internal, category_id in enumerate(sorted(ids), start=1)}

    def _add_images(self, images: list, log: SkipLog) -> dict:
        by_id = {}
        for index, image in enumerate(images):
            try:
                image_id, where = self._unique_id(image, "image", index, by_id)
                width = _field(image, "width", where, int)
                height = _field(image, "height", where, int)
                file_name = _field(image, "file_name", where, str)
                if width <= 0 or height <= 0:
                    raise DataError(f"{where}: width and height must be positive, got {width}x{height}")
                path = join_inside(self.image_dir, file_name, where=where)
            except DataError as error:
                self._refuse(log, error)
                if isinstance(image, dict):  # its annotations are not reported again
                    self._refused_images.add(image.get("id"))
                continue
            by_id[image_id] = len(self.image_info)
            self.add_image("coco", image_id, path, width=width, height=height, annotations=[])
        return by_id

    def _add_annotations(self, annotations: list, images: dict, category_to_internal: dict, log: SkipLog) -> list:
        """Check every annotation, attach the usable ones to their image; returns them for `.coco`."""
        self._check_key_spelling(annotations, "segmentation")
        seen, kept = set(), []
        for index, annotation in enumerate(annotations):
            try:
                annotation_id, where = self._unique_id(annotation, "annotation", index, seen)
                seen.add(annotation_id)
                image_id = _field(annotation, "image_id", where, (int, str))
                if image_id in self._refused_images:
                    continue
                category_id = _field(annotation, "category_id", where, int)
                bbox = _field(annotation, "bbox", where, list)
                if image_id not in images:
                    raise DataError(f"{where}: image_id {image_id!r} is not in 'images'")
                if category_id not in category_to_internal:
                    raise DataError(f"{where}: category_id {category_id} is not in 'categories' "
                                    f"(known: {sorted(category_to_internal)})")
                if len(bbox) != 4 or not all(is_number(v) for v in bbox):
                    raise DataError(f"{where}: bbox must be 4 numbers [x, y, width, height], got {bbox!r}")
                info = self.image_info[images[image_id]]
                ids = {"image_id": image_id, "annotation_id": annotation_id}
                box_xyxy = self._check_box(bbox, info, log, ids)
                if box_xyxy is None:
                    continue
                segmentation = self._check_segmentation(annotation.get("segmentation"), info, where, log, ids)
                if segmentation is None:
                    continue
            except DataError as error:
                self._refuse(log, error)
                continue
            area = _area(segmentation, info)
            if area == 0:
                log.skip("empty masks", f"its mask has no pixel inside the {info['width']}x{info['height']} image; "
                         f"skipped", **ids)
                continue
            crowd = bool(annotation.get("iscrowd", 0))
            internal = category_to_internal[category_id]
            info["annotations"].append({"id": annotation_id, "class_id": -internal if crowd else internal,
                                        "segmentation": segmentation, "box": box_xyxy})
            kept.append({**annotation, "segmentation": segmentation, "iscrowd": int(crowd),
                         "area": annotation.get("area", area)})
        return kept

    def _unique_id(self, record, kind: str, index: int, seen) -> tuple:
        """(record's "id", how messages name the record: "FILE: image 5"); DataError if the id is in `seen`."""
        identifier = _field(record, "id", f"{self._where}: {kind}s[{index}]", (int, str))
        if identifier in seen:
            raise DataError(f"{self._where}: {kind} id {identifier!r} appears twice in '{kind}s'")
        return identifier, f"{self._where}: {kind} {identifier!r}"

    def _check_key_spelling(self, annotations: list, key: str) -> None:
        """One DataError for annotations that lack `key` but hold a key spelled like it ("segmentaton"),
        instead of one skipped-instance warning per annotation."""
        misspelled = {}  # the key as written -> ids of the annotations that hold it
        for annotation in annotations:
            if isinstance(annotation, dict) and key not in annotation:
                for close in difflib.get_close_matches(key, [str(k) for k in annotation], n=1, cutoff=0.8):
                    misspelled.setdefault(close, []).append(annotation.get("id"))
        if misspelled:
            written, ids = next(iter(misspelled.items()))
            listed = ", ".join(map(repr, ids[:5])) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
            raise DataError(f"{self._where}: {len(ids)} annotation(s) ({listed}) have no {key!r} but the unknown "
                            f"key {written!r}; rename it to {key!r}")

    def _check_box(self, bbox: list, info: dict, log: SkipLog, ids: dict):
        """COCO (x, y, w, h) -> (x1, y1, x2, y2) clipped to the image, or None (skipped)."""
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            log.skip("zero-size boxes", f"box {bbox} has zero or negative width or height; skipped", **ids)
            return None
        x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, info["width"]), min(y + h, info["height"])
        if x1 >= x2 or y1 >= y2:
            log.skip("boxes outside their image",
                     f"box {bbox} lies entirely outside the {info['width']}x{info['height']} image; skipped", **ids)
            return None
        if (x1, y1, x2, y2) != (x, y, x + w, y + h):
            log.repair("boxes clipped", f"box {bbox} reaches outside the image; clipped", **ids)
        return (x1, y1, x2, y2)

    def _check_segmentation(self, segmentation, info: dict, where: str, log: SkipLog, ids: dict):
        """Polygons with bad ones dropped, or an RLE checked against the image size; None to skip."""
        height, width = info["height"], info["width"]
        if isinstance(segmentation, dict):
            if "size" not in segmentation or "counts" not in segmentation:
                raise DataError(f"{where}: RLE segmentation needs 'size' and 'counts'")
            if segmentation["size"] != [height, width]:
                raise DataError(f"{where}: RLE size {segmentation['size']} differs from its image "
                                f"{info['id']!r} ([height, width] = [{height}, {width}])")
            counts = segmentation["counts"]
            if isinstance(counts, list) and sum(counts) != height * width:
                raise DataError(f"{where}: uncompressed RLE counts sum to {sum(counts)}, not height*width = "
                                f"{height * width}")
            if not isinstance(counts, (list, str, bytes)):
                raise DataError(f"{where}: RLE counts must be a list or a string, got {type(counts).__name__}")
            return segmentation
        if not isinstance(segmentation, list) or not segmentation:
            log.skip("instances without segmentation", "has no segmentation; skipped", **ids)
            return None
        if all(is_number(v) for v in segmentation):
            segmentation = [segmentation]  # a single flat polygon, as some exporters write it
        polygons = []
        for number, polygon in enumerate(segmentation):
            valid = isinstance(polygon, list) and all(is_number(v) for v in polygon)
            if valid and len(polygon) >= 6 and len(polygon) % 2 == 0:
                polygons.append([float(v) for v in polygon])
            else:
                size = len(polygon) if isinstance(polygon, list) else "?"
                log.repair("polygons dropped", f"polygon {number} ({size} coordinates) is not a polygon of >= 3 "
                           f"points with an even number of numbers; dropped", **ids)
        if not polygons:
            log.skip("instances without a valid polygon", "no valid polygon left; instance skipped", **ids)
            return None
        return polygons

    # ------------------------------------------------------------------ loading
    def num_instances(self, image_index: int) -> int:
        return sum(1 for record in self.image_info[image_index]["annotations"] if record["class_id"] > 0)

    def load_mask(self, image_index: int) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W) bool masks and (N,) int64 internal class ids, negative for crowd regions."""
        info = self.image_info[image_index]
        height, width = info["height"], info["width"]
        masks, class_ids = [], []
        for record in info["annotations"]:
            mask = decode_segmentation(record["segmentation"], height, width)
            if not mask.any():
                # Possible only when the polygon lies outside the image while its box does not.
                warnings.warn(f"{self.annotation_file}: annotation {record['id']!r} (image {info['id']!r}): "
                              f"its mask has no pixel inside the image; left out", DataWarning, stacklevel=2)
                continue
            masks.append(mask)
            class_ids.append(record["class_id"])
        if not masks:
            return np.zeros((0, height, width), dtype=bool), np.zeros((0,), dtype=np.int64)
        return np.stack(masks), np.array(class_ids, dtype=np.int64)

    def image_reference(self, image_index: int) -> str:
        info = self.image_info[image_index]
        return f"{info['path']} (image {info['id']!r} of {self.annotation_file})"


def segmentation_to_rle(segmentation, height: int, width: int) -> dict:
    """One compressed RLE of COCO polygons (list of lists, merged), an uncompressed or a compressed RLE."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of COCO polygons (list of lists), an uncompressed or a compressed RLE."""
    return mask_utils.decode(segmentation_to_rle(segmentation, height, width)).astype(bool)


# ---------------------------------------------------------------------------------------------- helpers
def _read_json(path: str) -> dict:
    data = read_json_file(path, "annotation file")
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with 'images', 'annotations' and 'categories', "
                        f"got a {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(f"{path}: missing the top-level list {key!r} (a COCO file has 'images', "
                            f"'annotations' and 'categories')")
        if not isinstance(data[key], list):
            raise DataError(f"{path}: {key!r} must be a list, got a {type(data[key]).__name__}")
    return data


def _field(record, key: str, where: str, kind):
    """record[key], checked to be of `kind`, or a DataError naming where and what is missing."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if key not in record:
        raise DataError(f"{where}: missing {key!r}")
    value = record[key]
    # bool is an int in Python; true/false in a numeric field is a mistake.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataError(f"{where}: {key!r} has the wrong type ({type(value).__name__}: {value!r})")
    return value


def _area(segmentation, info: dict) -> float:
    """Pixel area of a segmentation, for annotation files that leave out COCOeval's `area`."""
    return float(mask_utils.area(segmentation_to_rle(segmentation, info["height"], info["width"])))


def _make_coco(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()
    return coco
