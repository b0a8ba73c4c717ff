"""Detections -> the JSON the server answers with: boxes x1 y1 x2 y2, class ids and names, scores, and masks as
COCO RLE (pycocotools' compressed string, through `evaluation.coco_results`) or as polygons.

Shape letters: N: detections of one image; H, W: the image's height and width.
"""
from __future__ import annotations

import contourpy
import numpy as np

from ..evaluation import coco_results
from ..structures import Detections

FORMATS = ("rle", "polygons")


def detections_json(detections: Detections, class_names, *, mask_format: str = "rle") -> dict:
    """{"width", "height", "detections": [{"box", "label", "class_name", "score", "mask"}]} for one image.

    mask: {"size": [H, W], "counts": str} (COCO compressed RLE, column-major) for "rle"; for "polygons"
    {"size": [H, W], "polygons": [[x1, y1, x2, y2, ...], ...]}, outlines in pixel coordinates (a pixel's centre is
    at +0.5), as COCO's polygon segmentations.
    """
    detections = detections.to("cpu")
    height, width = detections.image_size
    boxes = detections.boxes.tolist()  # (N, 4) x1 y1 x2 y2 pixels, as the model gives them
    if mask_format == "rle":
        rows = coco_results(detections, image_id=0)
        masks = [{"size": row["segmentation"]["size"], "counts": row["segmentation"]["counts"]} for row in rows]
    else:
        masks = [{"size": [height, width], "polygons": mask_polygons(mask)} for mask in detections.masks.numpy()]
    labels, scores = detections.labels.tolist(), detections.scores.tolist()
    return {
        "width": width,
        "height": height,
        "detections": [
            {"box": boxes[k], "label": int(labels[k]), "class_name": _class_name(class_names, labels[k]),
             "score": float(scores[k]), "mask": masks[k]}
            for k in range(len(labels))
        ],
    }


def mask_polygons(mask: np.ndarray) -> list[list[float]]:
    """(H, W) bool -> the outlines of its regions (and holes), each a flat [x1, y1, x2, y2, ...] closed polygon.

    The iso-line at 0.5 of the mask padded by one background pixel runs halfway between pixel centres, so every
    region's outline is closed; index i of the padded array is pixel i - 1, whose centre is at i - 0.5.
    """
    padded = np.pad(mask.astype(np.float64), 1)  # (H + 2, W + 2)
    lines = contourpy.contour_generator(z=padded, line_type=contourpy.LineType.Separate).lines(0.5)
    return [[round(float(v), 2) for v in _corners(line - 0.5).ravel()] for line in lines if len(line) >= 4]


def _corners(line: np.ndarray) -> np.ndarray:
    """(P, 2) closed outline (last point = first) -> its (Q, 2) corners: points where the direction changes."""
    points = line[:-1]  # (P - 1, 2) without the repeated first point
    incoming = points - np.roll(points, 1, axis=0)
    outgoing = np.roll(points, -1, axis=0) - points
    turn = incoming[:, 0] * outgoing[:, 1] - incoming[:, 1] * outgoing[:, 0]  # cross product: 0 on a straight line
    return points[np.abs(turn) > 1e-9]


def _class_name(class_names, label: int) -> str:
    return class_names[label] if 0 <= label < len(class_names) else str(label)
