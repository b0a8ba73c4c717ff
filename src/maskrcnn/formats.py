"""Detections written as a labelling tool's files (`maskrcnn predict --format coco|labelme|cvat|yolo`), so a
model pre-labels images that a person then corrects in the tool, and the corrected files train the next model;
and as GeoJSON (`--format geojson`, geo.py: map coordinates of a GeoTIFF, else pixel coordinates).

Each format writes a self-contained folder: the annotation files and the images (hard links where the file
system allows, else copies) laid out as the tool exports them, so the folder opens in the tool and reads
back with the matching data set spec:

    coco     annotations.json, images/         coco:DIR/annotations.json       (score kept per annotation)
    labelme  NAME.json beside NAME.jpg          labelme:DIR                     (score in each shape's description)
    cvat     annotations.xml, images/           cvat:DIR/annotations.xml        (CVAT for images 1.1)
    yolo     data.yaml, images/, labels/        yolo:DIR/data.yaml              (Ultralytics segmentation)
    geojson  NAME.geojson (no images: a GIS opens them beside the originals)  (score in each feature's properties)

Masks become polygons (polygons.py: outer boundaries along the pixel edges, simplified to `tolerance` pixels,
traced over each mask's box, so the compact masks of tiled prediction are never expanded to the whole image).
Holes are not kept (polygons in these tools have none). An object in several pieces is several polygons: one
COCO annotation, LabelMe shapes sharing a group_id, a CVAT <mask> (exact run lengths), and in YOLO (one polygon
a line) its largest piece. Tracing needs scikit-image (the `formats` extra: pip install maskrcnn[formats]).

Category ids are the model's (categories.py): COCO keeps them; LabelMe and CVAT name classes; YOLO's class c is
the model's class c + 1 (YOLO numbers classes from 0, in the model's order).

Shape letters: H, W: an image's height and width; h, w: a mask crop's; K: a polygon's points.
"""
from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

from . import categories, geo
from .errors import ConfigError
from .polygons import TOLERANCE, check_tracing, mask_polygons, outlines  # noqa: F401 (mask_polygons: public here too)
from .structures import Detections

FORMATS = ("coco", "labelme", "cvat", "yolo", "geojson")


def _place_image(source: Path, target: Path) -> None:
    """The image at `target`: a hard link where the file system allows, else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


# ---------------------------------------------------------------------------------------------- writers
class CocoWriter:
    """annotations.json (COCO instances: polygons, the model's category ids, a `score` per annotation), images/."""

    def __init__(self, folder: Path, predictor, tolerance: float):
        self.folder, self.tolerance = folder, tolerance
        self.category_ids = categories.id_of_label(predictor)
        self.data = {"images": [], "annotations": [],
                     "categories": [{"id": c.id, "name": c.name} for c in categories.of_model(predictor)]}

    def add(self, path: Path, picture: str, size: tuple[int, int], detections: Detections) -> None:
        name = f"images/{picture}{path.suffix}"
        _place_image(path, self.folder / name)
        image_id = len(self.data["images"]) + 1
        self.data["images"].append({"id": image_id, "file_name": name, "height": int(size[0]), "width": int(size[1])})
        for k, outline in enumerate(outlines(detections, self.tolerance)):
            if not outline.polygons:
                continue
            x1, y1, x2, y2 = (float(v) for v in detections.boxes[k])
            self.data["annotations"].append({
                "id": len(self.data["annotations"]) + 1, "image_id": image_id,
                "category_id": self.category_ids[int(detections.labels[k])],
                "segmentation": [[round(float(v), 2) for v in polygon.ravel()] for polygon in outline.polygons],
                "area": float(outline.area), "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0,
                "score": round(float(detections.scores[k]), 4)})

    def close(self) -> Path:
        path = self.folder / "annotations.json"
        path.write_text(json.dumps(self.data), encoding="utf-8")
        return path


class LabelMeWriter:
    """NAME.json beside NAME.jpg: one polygon shape a piece, pieces of one object sharing a group_id."""

    def __init__(self, folder: Path, predictor, tolerance: float):
        self.folder, self.tolerance = folder, tolerance
        self.class_names = list(predictor.class_names)

    def add(self, path: Path, picture: str, size: tuple[int, int], detections: Detections) -> None:
        image_name = f"{picture}{path.suffix}"
        _place_image(path, self.folder / image_name)
        shapes = []
        for k, outline in enumerate(outlines(detections, self.tolerance)):
            polygons = outline.polygons
            for polygon in polygons:
                shapes.append({"label": self.class_names[int(detections.labels[k])],
                               "points": [[round(float(x), 2), round(float(y), 2)] for x, y in polygon],
                               "group_id": k + 1 if len(polygons) > 1 else None,
                               "description": f"score {float(detections.scores[k]):.3f}",
                               "shape_type": "polygon", "flags": {}})
        document = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": image_name, "imageData": None,
                    "imageHeight": int(size[0]), "imageWidth": int(size[1])}
        (self.folder / f"{picture}.json").write_text(json.dumps(document, indent=1), encoding="utf-8")

    def close(self) -> Path:
        return self.folder


class CvatWriter:
    """annotations.xml (CVAT for images 1.1) and images/: a polygon per object in one piece, else a <mask>."""

    def __init__(self, folder: Path, predictor, tolerance: float):
        self.folder, self.tolerance = folder, tolerance
        self.class_names = list(predictor.class_names)
        self.root = ElementTree.Element("annotations")
        ElementTree.SubElement(self.root, "version").text = "1.1"
        labels = ElementTree.SubElement(ElementTree.SubElement(ElementTree.SubElement(self.root, "meta"), "task"), "labels")
        for name in dict.fromkeys(self.class_names[1:]):  # a name listed twice would be one CVAT label
            label = ElementTree.SubElement(labels, "label")
            ElementTree.SubElement(label, "name").text = name
            ElementTree.SubElement(label, "type").text = "any"

    def add(self, path: Path, picture: str, size: tuple[int, int], detections: Detections) -> None:
        name = f"{picture}{path.suffix}"
        _place_image(path, self.folder / "images" / name)
        image = ElementTree.SubElement(self.root, "image", id=str(len(self.root.findall("image"))), name=name,
                                       width=str(size[1]), height=str(size[0]))
        for k, outline in enumerate(outlines(detections, self.tolerance)):
            common = {"label": self.class_names[int(detections.labels[k])], "source": "auto", "occluded": "0",
                      "z_order": "0"}
            if len(outline.polygons) == 1:
                points = ";".join(f"{x:.2f},{y:.2f}" for x, y in outline.polygons[0])
                ElementTree.SubElement(image, "polygon", points=points, **common)
            elif outline.crop.any():
                ElementTree.SubElement(image, "mask", **common, **_cvat_rle(outline.crop, outline.x0, outline.y0))

    def close(self) -> Path:
        path = self.folder / "annotations.xml"
        ElementTree.indent(self.root)
        ElementTree.ElementTree(self.root).write(path, encoding="utf-8", xml_declaration=True)
        return path


def _cvat_rle(mask: np.ndarray, x0: int = 0, y0: int = 0) -> dict:
    """CVAT's mask attributes: run lengths over the mask's box, row by row, starting with a background run.
    mask: (h, w) bool, a crop whose top-left pixel is (x0, y0) in the image (the whole image: 0, 0)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    top, left = int(rows[0]), int(cols[0])  # in the crop
    part = mask[top:rows[-1] + 1, left:cols[-1] + 1].ravel()  # (h*w,) row-major
    edges = np.flatnonzero(np.diff(part.astype(np.int8))) + 1  # where a run ends
    runs = np.diff(np.concatenate([[0], edges, [part.size]]))
    if part[0]:
        runs = np.concatenate([[0], runs])  # the first run is background, here empty
    height, width = rows[-1] + 1 - top, cols[-1] + 1 - left
    return {"rle": ", ".join(str(int(r)) for r in runs), "left": str(left + x0), "top": str(top + y0),
            "width": str(width), "height": str(height)}


class YoloWriter:
    """data.yaml, images/ and labels/ (Ultralytics segmentation): `class x1 y1 x2 y2 ...` normalised, a line an
    object (its largest piece)."""

    def __init__(self, folder: Path, predictor, tolerance: float):
        self.folder, self.tolerance = folder, tolerance
        self.class_names = list(predictor.class_names)

    def add(self, path: Path, picture: str, size: tuple[int, int], detections: Detections) -> None:
        _place_image(path, self.folder / "images" / f"{picture}{path.suffix}")
        height, width = size
        lines = []
        for k, outline in enumerate(outlines(detections, self.tolerance)):
            if outline.polygons:
                normalised = outline.polygons[0] / np.array([width, height], dtype=np.float64)  # (K, 2) in [0, 1]
                lines.append(" ".join([str(int(detections.labels[k]) - 1)] + [f"{v:.6f}" for v in normalised.ravel()]))
        labels = self.folder / "labels" / f"{picture}.txt"
        labels.parent.mkdir(parents=True, exist_ok=True)
        labels.write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    def close(self) -> Path:
        import yaml

        path = self.folder / "data.yaml"
        data = {"path": ".", "train": "images", "val": "images", "names": self.class_names[1:]}
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path


WRITERS = {"coco": CocoWriter, "labelme": LabelMeWriter, "cvat": CvatWriter, "yolo": YoloWriter,
           "geojson": geo.GeoJsonWriter}


def make_writer(name: str, folder, predictor, *, tolerance: float = TOLERANCE, images=()):
    """The writer of format `name` into `folder`, for a predictor's classes: add(image path, picture name, (H, W),
    Detections) for each image (full or compact masks), then close() (the file or folder to open in the tool).
    images: the image files that will be added, checked now for what their format needs (a GeoTIFF: rasterio)."""
    if name not in WRITERS:
        raise ConfigError(f"--format {name!r}: choose one of {', '.join(FORMATS)}")
    check_tracing()  # a missing scikit-image is said now, not after the predictions
    if name == "geojson":
        geo.check_inputs(images)  # so is a missing rasterio for a GeoTIFF
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return WRITERS[name](folder, predictor, tolerance)
