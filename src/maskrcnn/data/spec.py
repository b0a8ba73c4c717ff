"""Data set specs for the command line: "FORMAT:PATHS" -> a Dataset.

    coco:ANNOTATIONS.json[:IMAGE_DIR]    image folder defaults to the JSON file's folder
    via:REGIONS.json[:IMAGE_DIR]         image folder defaults to the JSON file's folder
    masks:IMAGE_DIR:MASK_DIR             instance-id mask images, one class
    shapes:COUNT[:SIZE[:SEED]]           synthetic shapes; SIZE is one number or HEIGHTxWIDTH
    labelme:DIR                          LabelMe JSON files under DIR
    cvat:ANNOTATIONS.xml[:IMAGE_DIR]     CVAT for images 1.1; images default to the XML's folder (or its images/)
    labelstudio:EXPORT.json[:IMAGE_DIR]  Label Studio JSON export; images found by file name
    yolo:DATA.yaml[:SPLIT]               Ultralytics YOLO segmentation; SPLIT defaults to train
"""
from __future__ import annotations

import os
import re

from ..errors import DataError
from .coco import CocoDataset
from .cvat import CvatDataset
from .labelme import LabelMeDataset
from .labelstudio import LabelStudioDataset
from .mask_folder import MaskFolderDataset
from .shapes import ShapesDataset
from .via import ViaDataset
from .yolo import YoloDataset

ACCEPTED_FORMS = ("coco:ANNOTATIONS.json[:IMAGE_DIR]", "via:REGIONS.json[:IMAGE_DIR]",
                  "masks:IMAGE_DIR:MASK_DIR", "shapes:COUNT[:SIZE[:SEED]]", "labelme:DIR",
                  "cvat:ANNOTATIONS.xml[:IMAGE_DIR]", "labelstudio:EXPORT.json[:IMAGE_DIR]", "yolo:DATA.yaml[:SPLIT]")
# Formats whose readers record fatal problems and go on when asked (collect_errors=True), for validate.
COLLECTING_FORMATS = ("coco", "labelme", "cvat", "labelstudio", "yolo")


def load_dataset_spec(spec: str, **kwargs):
    """Build the Dataset a spec names; keyword arguments go to its constructor (e.g. allow_empty=True)."""
    kind, _, rest = str(spec).partition(":")
    parts = _split_paths(rest) if rest else []
    kind = kind.lower()
    if kind in ("masks", "shapes"):
        # These formats never refuse an empty data set nor skip annotations, so the settings callers pass for
        # COCO / VIA mean nothing here.
        kwargs.pop("allow_empty", None)
        kwargs.pop("max_skip_fraction", None)
    if kind not in COLLECTING_FORMATS:
        kwargs.pop("collect_errors", None)
    if kind == "coco" and len(parts) in (1, 2):
        return CocoDataset(parts[0], parts[1] if len(parts) == 2 else os.path.dirname(parts[0]), **kwargs)
    if kind == "via" and len(parts) in (1, 2):
        return ViaDataset(parts[0], parts[1] if len(parts) == 2 else None, **kwargs)
    if kind == "labelme" and len(parts) == 1:
        return LabelMeDataset(parts[0], **kwargs)
    if kind == "cvat" and len(parts) in (1, 2):
        return CvatDataset(parts[0], parts[1] if len(parts) == 2 else None, **kwargs)
    if kind == "labelstudio" and len(parts) in (1, 2):
        return LabelStudioDataset(parts[0], parts[1] if len(parts) == 2 else None, **kwargs)
    if kind == "yolo" and len(parts) in (1, 2):
        return YoloDataset(parts[0], parts[1] if len(parts) == 2 else "train", **kwargs)
    if kind == "masks" and len(parts) == 2:
        return MaskFolderDataset(parts[0], parts[1], **kwargs)
    if kind == "shapes" and 1 <= len(parts) <= 3:
        count = _integer(parts[0], spec, "COUNT")
        height = width = 128
        if len(parts) >= 2:
            match = re.fullmatch(r"(\d+)(?:x(\d+))?", parts[1])
            if not match:
                raise DataError(f"data set spec {spec!r}: SIZE must be a number or HEIGHTxWIDTH, got {parts[1]!r}")
            height = int(match.group(1))
            width = int(match.group(2) or height)
        seed = _integer(parts[2], spec, "SEED") if len(parts) == 3 else 0
        return ShapesDataset(count, height, width, seed, **kwargs)
    raise DataError(f"data set spec {spec!r} is not understood; accepted forms: {', '.join(ACCEPTED_FORMS)}")


def _split_paths(rest: str) -> list[str]:
    """Split on ':' but keep Windows drive letters ("C:\\data") with their path."""
    pieces = rest.split(":")
    parts = []
    for piece in pieces:
        if parts and len(parts[-1]) == 1 and parts[-1].isalpha() and piece[:1] in ("\\", "/"):
            parts[-1] += ":" + piece
        else:
            parts.append(piece)
    if any(not part for part in parts):
        return []  # an empty path ("coco::x") is as wrong as a missing one
    return parts


def _integer(text: str, spec: str, name: str) -> int:
    if not re.fullmatch(r"\d+", text):
        raise DataError(f"data set spec {spec!r}: {name} must be a whole number, got {text!r}")
    return int(text)
