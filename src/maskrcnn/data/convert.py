"""Any readable data set as one COCO instances file (`maskrcnn convert-data`).

File names are relative to the data set's image folder (pass that folder as coco:FILE.json:IMAGE_DIR), categories
keep the source's names and ids (YOLO's class c is category c + 1, since COCO ids start at 1), segmentations are
polygons where the source had polygons (COCO, VIA, LabelMe, CVAT, Label Studio, YOLO) and RLE where it had
masks (brushes, mask shapes, mask images, a user's `load_mask`). Crowd regions keep `iscrowd: 1`.

Shape letters: H, W: an image's height and width.
"""
from __future__ import annotations

import json
import os

import numpy as np
from pycocotools import mask as mask_utils

from ..errors import DataError
from .coco import CocoDataset, segmentation_to_rle
from .images import image_size
from .instances import AnnotatedDataset
from .via import ViaDataset


def to_coco(dataset) -> dict:
    """{"images", "annotations", "categories"} of `dataset`, ready for json.dump and pycocotools."""
    categories = _categories(dataset)
    image_dir = _image_dir(dataset)
    images, annotations = [], []
    ids = [info["id"] for info in dataset.image_info]
    keep_ids = all(isinstance(i, int) and not isinstance(i, bool) for i in ids) and len(set(ids)) == len(ids)
    for index, info in enumerate(dataset.image_info):
        image_id = info["id"] if keep_ids else index + 1
        height, width = _size(dataset, index)
        if not info.get("path"):
            raise DataError(f"image {info['id']!r} has no file; convert-data writes file names, so it needs a data "
                            f"set of image files")
        file_name = os.path.relpath(info["path"], image_dir).replace(os.sep, "/")
        image = {"id": image_id, "file_name": file_name, "width": width, "height": height}
        if not keep_ids:
            image["source_id"] = info["id"]
        images.append(image)
        for segmentation, class_id, source_annotation in _instances(dataset, index, height, width):
            rle = segmentation_to_rle(segmentation, height, width)
            annotation = {"id": len(annotations) + 1, "image_id": image_id,
                          "category_id": categories[abs(int(class_id))]["id"], "segmentation": segmentation,
                          "area": float(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                          "iscrowd": int(class_id < 0)}
            if source_annotation is not None:
                annotation["source_id"] = source_annotation
            annotations.append(annotation)
    return {"images": images, "annotations": annotations, "categories": list(categories.values())}


def write_coco(dataset, out) -> dict:
    """Write `to_coco(dataset)` as JSON to `out`; returns the counts written."""
    data = to_coco(dataset)
    out = os.fspath(out)
    if os.path.dirname(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as file:
        json.dump(data, file)
    return {key: len(data[key]) for key in ("images", "annotations", "categories")}


# ---------------------------------------------------------------------------------------------- helpers
def _categories(dataset) -> dict:
    """Internal class id -> COCO category {"id", "name"}: the source's ids where they are unique."""
    infos = dataset.class_info[1:]
    source_ids = [info["id"] for info in infos]
    usable = (all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in source_ids)
              and len(set(source_ids)) == len(source_ids))
    return {internal: {"id": info["id"] if usable else internal, "name": info["name"]}
            for internal, info in enumerate(infos, start=1)}


def _image_dir(dataset) -> str:
    folder = getattr(dataset, "image_dir", None)
    if folder:
        return folder
    paths = [info["path"] for info in dataset.image_info if info.get("path")]
    return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths]) if paths else "."


def _size(dataset, index: int) -> tuple[int, int]:
    info = dataset.image_info[index]
    if isinstance(info.get("height"), int) and isinstance(info.get("width"), int):
        return info["height"], info["width"]
    if info.get("path") and os.path.isfile(info["path"]):
        return image_size(info["path"])
    return dataset.load_image(index).shape[:2]


def _instances(dataset, index: int, height: int, width: int):
    """(COCO segmentation, internal class id (negative: crowd), source annotation id or None) of one image."""
    info = dataset.image_info[index]
    if isinstance(dataset, AnnotatedDataset):
        return [(instance.segmentation(height, width), instance.class_id, instance.id) for instance in info["instances"]]
    if isinstance(dataset, CocoDataset):
        return [(_json_segmentation(record["segmentation"], height, width), record["class_id"], record["id"])
                for record in info["annotations"]]
    if isinstance(dataset, ViaDataset) and all(r["shape"]["name"] in ("polygon", "polyline") for r in info["regions"]):
        return [([[float(v) for xy in zip(r["shape"]["all_points_x"], r["shape"]["all_points_y"]) for v in xy]],
                 r["class_id"], f"region {r['id']}") for r in info["regions"]]
    masks, class_ids = dataset.load_mask(index)  # (N, H, W) bool, (N,) int64
    found = []
    for number, (mask, class_id) in enumerate(zip(masks, class_ids)):
        if mask.any() and class_id != 0:
            found.append((_json_segmentation(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))), height,
                                             width), int(class_id), None))
    return found


def _json_segmentation(segmentation, height: int, width: int):
    """Polygons as they are; an RLE compressed with its counts as text (JSON has no bytes)."""
    if isinstance(segmentation, list):
        return segmentation
    rle = segmentation_to_rle(segmentation, height, width)
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
